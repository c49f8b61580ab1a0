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

use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::client::{Client, ClientError, Future};
use rask_core::Key;
use rask_core::protocol::{PrefixProgress, ProgressReport, ToScheduler};

/// Where a follow's tasks stand, as last reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProgressSnapshot {
    /// Per task prefix, in order of first appearance.
    pub prefixes: Vec<PrefixProgress>,
    /// Every followed task finished or failed (as of the last report).
    pub done: bool,
    /// Keys the scheduler did not know when they were followed (at most a few named); they are
    /// not counted.
    pub unknown: Vec<Key>,
    /// Reports received so far: 0 before the first.
    pub reports: u64,
    /// Why the connection to the scheduler was lost, if it was: no report will come.
    pub lost: Option<String>,
}

impl ProgressSnapshot {
    /// Tasks followed.
    pub fn total(&self) -> u64 {
        self.prefixes.iter().map(PrefixProgress::total).sum()
    }

    /// Tasks finished (in memory, or computed and since released).
    pub fn memory(&self) -> u64 {
        self.prefixes.iter().map(|p| p.memory).sum()
    }

    /// Tasks failed (or depending on one that failed).
    pub fn erred(&self) -> u64 {
        self.prefixes.iter().map(|p| p.erred).sum()
    }

    fn apply(&mut self, report: ProgressReport) {
        self.prefixes = report.prefixes;
        self.done = report.done;
        self.unknown = report.unknown;
        self.reports += 1;
    }
}

/// The client's side of its follows.
#[derive(Default)]
pub(crate) struct Follows {
    next: AtomicU64,
    open: std::sync::Mutex<FxHashMap<u64, Follower>>,
}

struct Follower {
    tx: watch::Sender<ProgressSnapshot>,
    /// Follows every graph the client sends from now on ([`Client::follow_submissions`]).
    submissions: bool,
}

impl Follows {
    fn lock(&self) -> std::sync::MutexGuard<'_, FxHashMap<u64, Follower>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn open(&self, submissions: bool) -> (u64, watch::Receiver<ProgressSnapshot>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(ProgressSnapshot::default());
        self.lock().insert(id, Follower { tx, submissions });
        (id, rx)
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// The follows that take every graph sent.
    pub(crate) fn of_submissions(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|(_, f)| f.submissions)
            .map(|(id, _)| *id)
            .collect()
    }

    /// A report arrived.
    pub(crate) fn on_report(&self, report: ProgressReport) {
        if let Some(f) = self.lock().get(&report.id) {
            f.tx.send_modify(|s| s.apply(report));
        } else {
            tracing::debug!(
                follow = report.id,
                "progress report of a follow no longer open"
            );
        }
    }

    /// The connection is gone: every follow says why.
    pub(crate) fn on_lost(&self, reason: &str) {
        for f in self.lock().values() {
            f.tx.send_modify(|s| s.lost = Some(reason.to_owned()));
        }
    }
}

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
