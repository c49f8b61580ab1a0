//! The client: connects to a scheduler, submits tasks and delayed graphs, and gathers results.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rask::client::ClientError> {
//! use rask::client::Client;
//! let client = Client::connect("tcp://127.0.0.1:8786").await?;
//! let futures = client.map("inc", 0..10);
//! let total = client.submit("sum", vec![futures.iter().collect::<Vec<_>>().into()]);
//! assert_eq!(total.result().await?.as_int().ok(), Some(55));
//! # Ok(()) }
//! ```

pub mod delayed;
pub mod visualize;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;
use tokio::sync::Notify;

use crate::graph::{Arg, Key, TaskSpec};
use crate::net;
use crate::protocol::{FromScheduler, TaskFailure, ToScheduler};
use crate::value::{Encoded, Value};
use crate::worker::PeerPool;
use delayed::{Delayed, graph_of, new_key};

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the scheduler at {address}: {reason}")]
    Connect { address: String, reason: String },
    /// A task raised (or depends on one that did): the failing task's key and message.
    #[error("{0}")]
    Task(TaskFailure),
    #[error("lost the connection to the scheduler: {0}")]
    Lost(String),
    #[error("result of {key} cannot be decoded: {reason}")]
    Decode { key: Key, reason: String },
    #[error("result of {key} could not be fetched from {holders:?}: {reason}")]
    Fetch {
        key: Key,
        holders: Vec<String>,
        reason: String,
    },
}

/// A connection to a scheduler; cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    sched: net::Sender<ToScheduler>,
    results: Mutex<Results>,
    pool: Arc<PeerPool>,
    /// Keys whose last future was dropped, sent to the scheduler in batches.
    releases: Mutex<Vec<Key>>,
    release_wake: Arc<Notify>,
}

#[derive(Default)]
struct Results {
    slots: FxHashMap<Key, Slot>,
    /// Set once the scheduler connection is gone.
    lost: Option<String>,
}

struct Slot {
    outcome: Option<Outcome>,
    notify: Arc<Notify>,
}

enum Poll {
    Ready(Value),
    Fetch(Vec<String>),
    Wait(Arc<Notify>),
}

#[derive(Clone)]
enum Outcome {
    Value(Value),
    /// In memory on these workers; fetched on demand.
    Remote(Vec<String>),
    Failed(TaskFailure),
}

impl Client {
    /// Connects and registers with the scheduler at `address` (`tcp://host:port`).
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            address: address.to_owned(),
            reason,
        };
        let stream = net::connect(address, Duration::from_secs(10))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (sched, mut rx) = net::split::<ToScheduler>(stream, address.to_owned());
        sched.send(ToScheduler::RegisterClient {
            name: format!("client-{}", delayed::process_token()),
        });
        match rx.recv::<FromScheduler>().await {
            Ok(Some(batch))
                if matches!(
                    batch.first().map(|e| &e.msg),
                    Some(FromScheduler::Welcome { .. })
                ) => {}
            Ok(Some(batch)) => {
                return Err(connect_err(format!(
                    "unexpected reply {:?}",
                    batch.first().map(|e| &e.msg)
                )));
            }
            Ok(None) => return Err(connect_err("closed during registration".into())),
            Err(e) => return Err(connect_err(e.to_string())),
        }
        let release_wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            sched,
            results: Mutex::new(Results::default()),
            pool: Arc::new(PeerPool::default()),
            releases: Mutex::new(Vec::new()),
            release_wake: release_wake.clone(),
        });
        tokio::spawn(release_loop(Arc::downgrade(&inner), release_wake));
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let reason = loop {
                let batch = match rx.recv::<FromScheduler>().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break "the scheduler closed the connection".to_owned(),
                    Err(e) => break format!("malformed message from the scheduler: {e}"),
                };
                let Some(inner) = weak.upgrade() else { return };
                inner.on_batch(batch);
            };
            if let Some(inner) = weak.upgrade() {
                inner.on_lost(reason);
            }
        });
        Ok(Client { inner })
    }

    /// Runs `func(args...)` on the cluster.
    pub fn submit(&self, func: &str, args: Vec<Arg>) -> TaskFuture {
        let spec = TaskSpec {
            key: new_key(func),
            func: func.into(),
            args,
        };
        self.send_graph(vec![spec])
            .pop()
            .unwrap_or_else(|| unreachable!("send_graph returns one future per wanted task"))
    }

    /// Runs `func(item)` for every item, as one submission.
    pub fn map<T: Into<Arg>>(
        &self,
        func: &str,
        items: impl IntoIterator<Item = T>,
    ) -> Vec<TaskFuture> {
        let specs = items
            .into_iter()
            .map(|i| TaskSpec {
                key: new_key(func),
                func: func.into(),
                args: vec![i.into()],
            })
            .collect();
        self.send_graph(specs)
    }

    /// Like [`Client::map`] for functions of several arguments.
    pub fn map_args(
        &self,
        func: &str,
        items: impl IntoIterator<Item = Vec<Arg>>,
    ) -> Vec<TaskFuture> {
        let specs = items
            .into_iter()
            .map(|args| TaskSpec {
                key: new_key(func),
                func: func.into(),
                args,
            })
            .collect();
        self.send_graph(specs)
    }

    /// Sends a delayed value's whole graph in one message; the future resolves to its value.
    pub fn compute(&self, d: &Delayed) -> TaskFuture {
        let mut fs = self.compute_many(std::slice::from_ref(d));
        fs.pop()
            .unwrap_or_else(|| unreachable!("one root gives one future"))
    }

    /// Computes several delayed values together (shared inputs run once).
    pub fn compute_many(&self, roots: &[Delayed]) -> Vec<TaskFuture> {
        let tasks = graph_of(roots);
        let wanted: Vec<Key> = roots.iter().map(|d| d.key().clone()).collect();
        self.send(tasks, wanted)
    }

    /// Sends tasks that are all wanted (futures for each).
    fn send_graph(&self, tasks: Vec<TaskSpec>) -> Vec<TaskFuture> {
        let wanted = tasks.iter().map(|t| t.key.clone()).collect();
        self.send(tasks, wanted)
    }

    fn send(&self, tasks: Vec<TaskSpec>, wanted: Vec<Key>) -> Vec<TaskFuture> {
        {
            let mut r = self.inner.lock();
            for k in &wanted {
                r.slots.entry(k.clone()).or_insert_with(|| Slot {
                    outcome: None,
                    notify: Arc::new(Notify::new()),
                });
            }
        }
        let futures = wanted
            .iter()
            .map(|k| TaskFuture {
                inner: Arc::new(FutureRef {
                    key: k.clone(),
                    client: self.clone(),
                }),
            })
            .collect();
        self.inner
            .sched
            .send(ToScheduler::UpdateGraph { tasks, wanted });
        futures
    }

    /// Waits for every future and returns their values in order; the first failure is returned
    /// as the error (naming the task that raised).
    pub async fn gather(&self, futures: &[TaskFuture]) -> Result<Vec<Value>, ClientError> {
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(self.result_of(f.key()).await?);
        }
        Ok(out)
    }

    async fn result_of(&self, key: &Key) -> Result<Value, ClientError> {
        loop {
            let notify = match self.poll(key)? {
                Poll::Ready(v) => return Ok(v),
                Poll::Fetch(holders) => {
                    let v = self.fetch(key, holders).await?;
                    if let Some(slot) = self.inner.lock().slots.get_mut(key) {
                        slot.outcome = Some(Outcome::Value(v.clone()));
                    }
                    return Ok(v);
                }
                Poll::Wait(notify) => notify,
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a result that arrived in between is not missed.
            let ready = {
                let r = self.inner.lock();
                r.lost.is_some() || r.slots.get(key).is_some_and(|s| s.outcome.is_some())
            };
            if !ready {
                notified.await;
            }
        }
    }

    fn poll(&self, key: &Key) -> Result<Poll, ClientError> {
        let r = self.inner.lock();
        let Some(slot) = r.slots.get(key) else {
            return Err(ClientError::Lost(format!(
                "{key} is not held by this client"
            )));
        };
        match &slot.outcome {
            Some(Outcome::Value(v)) => Ok(Poll::Ready(v.clone())),
            Some(Outcome::Failed(f)) => Err(ClientError::Task(f.clone())),
            Some(Outcome::Remote(holders)) => Ok(Poll::Fetch(holders.clone())),
            None => match &r.lost {
                Some(reason) => Err(ClientError::Lost(reason.clone())),
                None => Ok(Poll::Wait(slot.notify.clone())),
            },
        }
    }

    async fn fetch(&self, key: &Key, holders: Vec<String>) -> Result<Value, ClientError> {
        let mut last = String::from("no holder");
        for h in &holders {
            match self.inner.pool.get_data(h, vec![key.clone()]).await {
                Ok((mut found, _)) => {
                    if let Some((_, data)) = found.pop() {
                        return Encoded(data).decode().map_err(|e| ClientError::Decode {
                            key: key.clone(),
                            reason: e.to_string(),
                        });
                    }
                    last = format!("{h} does not hold it");
                }
                Err(e) => last = e,
            }
        }
        Err(ClientError::Fetch {
            key: key.clone(),
            holders,
            reason: last,
        })
    }

    /// Closes the connection; futures still held fail with [`ClientError::Lost`].
    pub fn close(self) {
        drop(self);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Results> {
        self.results.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn on_batch(&self, batch: Vec<crate::protocol::Envelope<FromScheduler>>) {
        let mut wake = Vec::new();
        let mut r = self.lock();
        for env in batch {
            let (key, outcome) = match env.msg {
                FromScheduler::KeyInMemory { key, who_has, .. } => {
                    match env.blobs.into_iter().next() {
                        Some(data) => match Encoded(data).decode() {
                            Ok(v) => (key, Outcome::Value(v)),
                            Err(e) => {
                                let failure = TaskFailure {
                                    key: key.clone(),
                                    message: format!("undecodable result: {e}"),
                                };
                                (key, Outcome::Failed(failure))
                            }
                        },
                        None => (key, Outcome::Remote(who_has)),
                    }
                }
                FromScheduler::KeyErred { key, failure } => (key, Outcome::Failed(failure)),
                other => {
                    tracing::debug!(message = ?other, "client ignoring message");
                    continue;
                }
            };
            if let Some(slot) = r.slots.get_mut(&key) {
                slot.outcome = Some(outcome);
                wake.push(slot.notify.clone());
            }
        }
        drop(r);
        for n in wake {
            n.notify_waiters();
        }
    }

    fn on_lost(&self, reason: String) {
        let mut r = self.lock();
        r.lost = Some(reason);
        let all: Vec<Arc<Notify>> = r.slots.values().map(|s| s.notify.clone()).collect();
        drop(r);
        for n in all {
            n.notify_waiters();
        }
    }

    fn release(&self, key: &Key) {
        self.lock().slots.remove(key);
        let mut pending = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(key.clone());
        if pending.len() == 1 {
            self.release_wake.notify_one();
        }
    }

    fn flush_releases(&self) {
        let keys = std::mem::take(&mut *self.releases.lock().unwrap_or_else(|p| p.into_inner()));
        if !keys.is_empty() {
            self.sched.send(ToScheduler::ReleaseKeys { keys });
        }
    }
}

/// Sends dropped futures' keys in batches: dropping 10,000 futures is one message, not 10,000.
async fn release_loop(inner: std::sync::Weak<Inner>, wake: Arc<Notify>) {
    loop {
        if inner.strong_count() == 0 {
            return;
        }
        wake.notified().await;
        // Let the rest of a drop burst arrive.
        tokio::task::yield_now().await;
        match inner.upgrade() {
            Some(strong) => strong.flush_releases(),
            None => return,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.flush_releases();
        // Ends the release loop.
        self.release_wake.notify_one();
    }
}

/// A task's result that is or will be on the cluster. Clones share one hold on the result; when
/// the last is dropped the scheduler may free it.
#[derive(Clone)]
pub struct TaskFuture {
    inner: Arc<FutureRef>,
}

struct FutureRef {
    key: Key,
    client: Client,
}

impl Drop for FutureRef {
    fn drop(&mut self) {
        self.client.inner.release(&self.key);
    }
}

impl TaskFuture {
    pub fn key(&self) -> &Key {
        &self.inner.key
    }

    /// Waits for the value.
    pub async fn result(&self) -> Result<Value, ClientError> {
        self.inner.client.result_of(&self.inner.key).await
    }
}

impl std::fmt::Debug for TaskFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskFuture({})", self.inner.key)
    }
}

impl From<&TaskFuture> for Arg {
    fn from(f: &TaskFuture) -> Self {
        Arg::Key(f.key().clone())
    }
}

impl From<Vec<&TaskFuture>> for Arg {
    fn from(fs: Vec<&TaskFuture>) -> Self {
        Arg::List(fs.into_iter().map(Arg::from).collect())
    }
}
