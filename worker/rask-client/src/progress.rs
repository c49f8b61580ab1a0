//! Following the progress of tasks: the scheduler counts a follow's tasks per task prefix
//! (waiting, processing, in memory, erred) and reports them as they change, a few times a second
//! at most. A [`Progress`] holds the latest report; terminals' bars and Python's `progress()`
//! draw from it.
//!
//! ```no_run
//! # async fn demo(client: rask_client::Client, futures: Vec<rask_client::Future>) -> Result<(), rask_client::ClientError> {
//! let mut progress = client.follow_futures(&futures).await?;
//! while !progress.snapshot().done {
//!     let now = progress.changed().await?;
//!     eprintln!("{}/{} tasks in memory", now.memory(), now.total());
//! }
//! # Ok(()) }
//! ```

use tokio::sync::watch;

use crate::client::{Client, ClientError, Future};
pub use crate::follows::ProgressSnapshot;
use rask_core::Key;
use rask_core::protocol::ToScheduler;

/// A follow of tasks: the scheduler's latest report on them, and news of the next. Dropping it
/// tells the scheduler to stop reporting.
pub struct Progress {
    id: u64,
    client: Client,
    rx: watch::Receiver<ProgressSnapshot>,
}

impl Client {
    /// Follows `keys` (results this client holds) and every unfinished task they depend on.
    /// Waits for the scheduler's first report; keys it does not know are an error naming them.
    pub async fn follow(&self, keys: Vec<Key>) -> Result<Progress, ClientError> {
        let (id, rx) = self.follows().open(false);
        let mut progress = Progress {
            id,
            client: self.clone(),
            rx,
        };
        self.to_scheduler(ToScheduler::FollowKeys { id, keys });
        let first = progress.changed().await?;
        if !first.unknown.is_empty() {
            return Err(ClientError::UnknownKeys(first.unknown));
        }
        Ok(progress)
    }

    /// Follows the tasks of these futures and the unfinished tasks they depend on (Dask's
    /// `progress(futures)`).
    pub async fn follow_futures<R>(&self, futures: &[Future<R>]) -> Result<Progress, ClientError> {
        self.follow(futures.iter().map(|f| f.key().clone()).collect())
            .await
    }

    /// Follows every graph this client sends from now on (the tasks of each submission and of
    /// each computation, with what they depend on): a command's progress while it runs code
    /// that submits as it goes. Nothing is reported before the first submission.
    pub fn follow_submissions(&self) -> Progress {
        let (id, rx) = self.follows().open(true);
        Progress {
            id,
            client: self.clone(),
            rx,
        }
    }
}

impl Progress {
    /// The number the scheduler knows this follow by.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The latest report.
    pub fn snapshot(&self) -> ProgressSnapshot {
        self.rx.borrow().clone()
    }

    /// Waits for the next report and returns it; an error once the connection is lost.
    pub async fn changed(&mut self) -> Result<ProgressSnapshot, ClientError> {
        if !self.rx.has_changed().unwrap_or(false) {
            if let Some(reason) = &self.rx.borrow().lost {
                return Err(ClientError::Lost(reason.clone()));
            }
            // The sender lives as long as the client, which this follow holds.
            if self.rx.changed().await.is_err() {
                return Err(ClientError::Lost("the client was closed".into()));
            }
        }
        let now = self.rx.borrow_and_update().clone();
        match now.lost {
            Some(reason) => Err(ClientError::Lost(reason)),
            None => Ok(now),
        }
    }

    /// Waits until every followed task has finished or failed, and returns the last report.
    pub async fn wait(&mut self) -> Result<ProgressSnapshot, ClientError> {
        loop {
            let now = self.rx.borrow_and_update().clone();
            if let Some(reason) = now.lost {
                return Err(ClientError::Lost(reason));
            }
            if now.reports > 0 && now.done {
                return Ok(now);
            }
            self.changed().await?;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.client.follows().close(self.id);
        self.client
            .to_scheduler(ToScheduler::Unfollow { id: self.id });
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("id", &self.id)
            .field("snapshot", &*self.rx.borrow())
            .finish()
    }
}
