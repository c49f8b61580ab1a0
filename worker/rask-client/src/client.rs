//! The client: a connection to a scheduler, and the futures of the results it holds.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::Serialize;
use tokio::sync::Notify;

use crate::delayed::{
    AsInput, Delayed, Deps, InputSource, func_prefix, graph_of, new_key, payload_of,
};
use crate::follows::Follows;
use rask_core::net::{self, PeerPool};
use rask_core::protocol::{Envelope, FromScheduler, TaskFailure, ToScheduler};
use rask_core::tls::TlsConfig;
use rask_core::{Data, Encoded, FamilyInfo, Func, Key, TaskSpec};

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
    /// The client cancelled the task ([`Client::cancel`]) before its outcome was read.
    #[error("{0} was cancelled")]
    Cancelled(Key),
    /// A follow named keys the scheduler does not know (never submitted, or released).
    #[error("cannot follow keys the scheduler does not know: {}", join_keys(.0))]
    UnknownKeys(Vec<Key>),
}

fn join_keys(keys: &[Key]) -> String {
    keys.iter()
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ")
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
    /// The workers' function families when this client connected.
    families: Vec<FamilyInfo>,
    /// The progress this client follows.
    follows: Follows,
}

#[derive(Default)]
struct Results {
    slots: FxHashMap<Key, Slot>,
    /// Set once the scheduler connection is gone.
    lost: Option<String>,
}

/// What the client knows of one held key: kept small, a client may hold a million.
struct Slot {
    outcome: Option<Outcome>,
    /// Made when a caller waits for the outcome, dropped once it is known: most results arrive
    /// before anyone waits for them, or while one caller waits.
    notify: Option<Arc<Notify>>,
}

impl Slot {
    /// The notify to wait on (made if none yet).
    fn waiter(&mut self) -> Arc<Notify> {
        self.notify
            .get_or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }
}

enum Poll {
    Ready(Encoded),
    Fetch(Vec<String>),
    Wait(Arc<Notify>),
}

#[derive(Clone)]
enum Outcome {
    /// The encoded value, here.
    Value(Encoded),
    /// In memory on these workers; fetched on demand.
    Remote(Vec<String>),
    /// Boxed: failures are rare, and every slot is as large as its largest outcome.
    Failed(Box<TaskFailure>),
    /// Cancelled by this client: an outcome the scheduler sends later does not replace it.
    Cancelled,
}

impl Client {
    /// Connects and registers with the scheduler at `address` (`tcp://host:port`).
    pub async fn connect(address: &str) -> Result<Client, ClientError> {
        Self::connect_with(address, None).await
    }

    /// [`Client::connect`] with this process's TLS identity, needed for a `tls://` address;
    /// results held by workers are then fetched over TLS too.
    pub async fn connect_with(
        address: &str,
        tls: Option<TlsConfig>,
    ) -> Result<Client, ClientError> {
        let connect_err = |reason: String| ClientError::Connect {
            address: address.to_owned(),
            reason,
        };
        let stream = net::connect(address, tls.as_ref(), Duration::from_secs(10))
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        let (sched, mut rx) = net::split::<ToScheduler>(stream, address.to_owned());
        sched.send(ToScheduler::RegisterClient {
            name: format!("client-{}", crate::delayed::process_token()),
        });
        let families = match rx.recv::<FromScheduler>().await {
            Ok(Some(batch)) => match batch.into_iter().next().map(|e| e.msg) {
                Some(FromScheduler::Welcome { families, .. }) => families,
                // The scheduler says why (e.g. it has as many connections as its limit).
                Some(FromScheduler::Refused { reason, .. }) => {
                    return Err(connect_err(format!("refused: {reason}")));
                }
                other => return Err(connect_err(format!("unexpected reply {other:?}"))),
            },
            Ok(None) => return Err(connect_err("closed during registration".into())),
            Err(e) => return Err(connect_err(e.to_string())),
        };
        let release_wake = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            sched,
            results: Mutex::new(Results::default()),
            pool: Arc::new(PeerPool::new(tls)),
            releases: Mutex::new(Vec::new()),
            release_wake: release_wake.clone(),
            families,
            follows: Follows::default(),
        });
        tokio::spawn(release_loop(Arc::downgrade(&inner), release_wake));
        let weak = Arc::downgrade(&inner);
        let peer = address.to_owned();
        tokio::spawn(async move {
            let reason = loop {
                let batch = match rx.recv::<FromScheduler>().await {
                    Ok(Some(b)) => b,
                    Ok(None) => break "the scheduler closed the connection".to_owned(),
                    // Too large (a frame over the maximum is refused before it is read),
                    // truncated or undecodable: the connection is given up.
                    Err(e) => {
                        tracing::error!(scheduler = %peer, error = %e, "closing the connection: bad frame from the scheduler");
                        break format!("bad frame from the scheduler at {peer}: {e}");
                    }
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

    /// The function families of the workers connected when this client did (each name and
    /// version once): a client can check that they run its tasks (a Python client: the workers'
    /// Python and cloudpickle versions). Workers that join later are not listed.
    pub fn worker_families(&self) -> &[FamilyInfo] {
        &self.inner.families
    }

    /// Runs `f(args)` on the cluster (arguments without inputs).
    pub fn submit<A: Serialize, R>(&self, f: Func<A, R>, args: A) -> Future<R> {
        self.submit_with(f, |_| args)
    }

    /// Runs `f` on arguments that read other results: `build` registers them with the [`Deps`].
    pub fn submit_with<A: Serialize, R>(
        &self,
        f: Func<A, R>,
        build: impl FnOnce(&mut Deps) -> A,
    ) -> Future<R> {
        let mut deps = Deps::new();
        let args = build(&mut deps);
        let spec = TaskSpec::new(
            new_key(func_prefix(f.name())),
            f.func_name(),
            payload_of(f.name(), &args),
            deps.keys(),
        );
        self.submit_spec(spec).cast()
    }

    /// Runs `f` on each item's arguments, as one submission.
    pub fn map<A: Serialize, R>(
        &self,
        f: Func<A, R>,
        items: impl IntoIterator<Item = A>,
    ) -> Vec<Future<R>> {
        let prefix = func_prefix(f.name());
        let specs = items
            .into_iter()
            .map(|args| {
                TaskSpec::new(
                    new_key(prefix),
                    f.func_name(),
                    payload_of(f.name(), &args),
                    Vec::new(),
                )
            })
            .collect();
        self.send_graph(specs)
    }

    /// Runs one task built elsewhere (a kernel, a Python call) and holds its result.
    pub fn submit_spec(&self, spec: TaskSpec) -> Future<Encoded> {
        self.send_graph(vec![spec])
            .pop()
            .unwrap_or_else(|| unreachable!("send_graph returns one future per wanted task"))
    }

    /// Sends a delayed value's whole graph in one message; the future resolves to its value.
    pub fn compute<R>(&self, d: &Delayed<R>) -> Future<R> {
        let mut fs = self.compute_many(std::slice::from_ref(d));
        fs.pop()
            .unwrap_or_else(|| unreachable!("one root gives one future"))
    }

    /// Computes several delayed values together (shared inputs run once).
    pub fn compute_many<R>(&self, roots: &[Delayed<R>]) -> Vec<Future<R>> {
        let tasks = graph_of(roots);
        let wanted: Vec<Key> = roots.iter().map(|d| d.key().clone()).collect();
        self.send(tasks, wanted)
    }

    /// Sends tasks that are all wanted (futures for each).
    fn send_graph<R>(&self, tasks: Vec<TaskSpec>) -> Vec<Future<R>> {
        let wanted = tasks.iter().map(|t| t.key.clone()).collect();
        self.send(tasks, wanted)
    }

    /// Sends tasks and holds the `wanted` keys.
    pub fn send<R>(&self, tasks: Vec<TaskSpec>, wanted: Vec<Key>) -> Vec<Future<R>> {
        {
            let mut r = self.inner.lock();
            for k in &wanted {
                r.slots.entry(k.clone()).or_insert_with(|| Slot {
                    outcome: None,
                    notify: None,
                });
            }
        }
        let futures = wanted
            .iter()
            .map(|k| Future {
                inner: Arc::new(FutureRef {
                    key: k.clone(),
                    client: self.clone(),
                }),
                _result: PhantomData,
            })
            .collect();
        // Releases of dropped futures go first: a key dropped just before and wanted again here
        // (a delayed value computed twice, a scattered value) is still held at the scheduler
        // until its release arrives, which would otherwise unwant it after this graph, and the
        // scheduler announces a held key's result only when it is wanted afresh.
        // The lock is held until the graph is sent: releases the release loop took meanwhile
        // were sent under it, before.
        let mut pending = self
            .inner
            .releases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Inner::send_releases(&self.inner.sched, &mut pending);
        let follows = self.inner.follows.of_submissions();
        if follows.is_empty() {
            self.inner
                .sched
                .send(ToScheduler::UpdateGraph { tasks, wanted });
        } else {
            // In the graph's frame, right after it: the scheduler takes up the follow before
            // any of the graph's tasks can finish, so it counts them all.
            let mut batch: Vec<Envelope<ToScheduler>> = follows
                .into_iter()
                .map(|id| {
                    ToScheduler::FollowKeys {
                        id,
                        keys: wanted.clone(),
                    }
                    .into()
                })
                .collect();
            batch.insert(0, ToScheduler::UpdateGraph { tasks, wanted }.into());
            self.inner.sched.send_many(batch);
        }
        drop(pending);
        futures
    }

    pub(crate) fn follows(&self) -> &Follows {
        &self.inner.follows
    }

    pub(crate) fn to_scheduler(&self, msg: ToScheduler) {
        self.inner.sched.send(msg);
    }

    /// Waits for every future and returns their values in order; the first failure is returned
    /// as the error (naming the task that raised).
    pub async fn gather<R: Data>(&self, futures: &[Future<R>]) -> Result<Vec<R>, ClientError> {
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(f.result().await?);
        }
        Ok(out)
    }

    async fn result_of(&self, key: &Key) -> Result<Encoded, ClientError> {
        loop {
            let notify = match self.poll(key)? {
                Poll::Ready(v) => return Ok(v),
                Poll::Fetch(holders) => {
                    let v = self.fetch(key, holders).await?;
                    if let Some(slot) = self.inner.lock().slots.get_mut(key)
                        && !matches!(slot.outcome, Some(Outcome::Cancelled))
                    {
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

    /// Whether `key`'s outcome is known (a value, a failure, or the connection's loss).
    fn is_done(&self, key: &Key) -> bool {
        let r = self.inner.lock();
        r.lost.is_some() || r.slots.get(key).is_none_or(|s| s.outcome.is_some())
    }

    /// Waits until `key`'s outcome is known, without fetching its value.
    async fn wait_done(&self, key: &Key) {
        loop {
            let notify = {
                let mut r = self.inner.lock();
                let lost = r.lost.is_some();
                match r.slots.get_mut(key) {
                    Some(slot) if slot.outcome.is_none() && !lost => slot.waiter(),
                    _ => return,
                }
            };
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so an outcome that arrived in between is not missed.
            if !self.is_done(key) {
                notified.await;
            }
        }
    }

    fn poll(&self, key: &Key) -> Result<Poll, ClientError> {
        let mut r = self.inner.lock();
        let lost = r.lost.clone();
        let Some(slot) = r.slots.get_mut(key) else {
            return Err(ClientError::Lost(format!(
                "{key} is not held by this client"
            )));
        };
        match &slot.outcome {
            Some(Outcome::Value(v)) => Ok(Poll::Ready(v.clone())),
            Some(Outcome::Failed(f)) => Err(ClientError::Task((**f).clone())),
            Some(Outcome::Cancelled) => Err(ClientError::Cancelled(key.clone())),
            Some(Outcome::Remote(holders)) => Ok(Poll::Fetch(holders.clone())),
            None => match lost {
                Some(reason) => Err(ClientError::Lost(reason)),
                None => Ok(Poll::Wait(slot.waiter())),
            },
        }
    }

    async fn fetch(&self, key: &Key, holders: Vec<String>) -> Result<Encoded, ClientError> {
        let mut last = String::from("no holder");
        for h in &holders {
            match self.inner.pool.get_data(h, vec![key.clone()]).await {
                Ok((mut found, _)) => {
                    if let Some((_, data)) = found.pop() {
                        return Ok(Encoded::from_bytes(data));
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

    /// Cancels the tasks of these keys (Dask's `Client.cancel`): this client stops wanting them,
    /// so the scheduler drops those no other client or task needs, and their futures fail at
    /// once with [`ClientError::Cancelled`], whatever the scheduler reports later. The keys'
    /// futures still hold their slots until dropped.
    pub fn cancel(&self, keys: &[Key]) {
        let mut wake = Vec::new();
        let mut cancelled = Vec::new();
        {
            let mut r = self.inner.lock();
            for k in keys {
                if let Some(slot) = r.slots.get_mut(k) {
                    slot.outcome = Some(Outcome::Cancelled);
                    wake.extend(slot.notify.take());
                    cancelled.push(k.clone());
                }
            }
        }
        for n in wake {
            n.notify_waiters();
        }
        if !cancelled.is_empty() {
            self.inner
                .sched
                .send(ToScheduler::ReleaseKeys { keys: cancelled });
        }
    }

    /// Whether `key` was cancelled by [`Client::cancel`].
    fn is_cancelled(&self, key: &Key) -> bool {
        let r = self.inner.lock();
        r.slots
            .get(key)
            .is_some_and(|s| matches!(s.outcome, Some(Outcome::Cancelled)))
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

    fn on_batch(&self, batch: Vec<Envelope<FromScheduler>>) {
        let mut wake = Vec::new();
        let mut r = self.lock();
        for env in batch {
            let (key, outcome) = match env.msg {
                FromScheduler::KeyInMemory { key, who_has, .. } => {
                    match env.blobs.into_iter().next() {
                        Some(data) => (key, Outcome::Value(Encoded::from_bytes(data))),
                        None => (key, Outcome::Remote(who_has)),
                    }
                }
                FromScheduler::KeyErred { key, failure } => {
                    (key, Outcome::Failed(Box::new(failure)))
                }
                FromScheduler::Progress(report) => {
                    self.follows.on_report(report);
                    continue;
                }
                other => {
                    tracing::debug!(message = ?other, "client ignoring message");
                    continue;
                }
            };
            if let Some(slot) = r.slots.get_mut(&key)
                && !matches!(slot.outcome, Some(Outcome::Cancelled))
            {
                slot.outcome = Some(outcome);
                wake.extend(slot.notify.take());
            }
        }
        drop(r);
        for n in wake {
            n.notify_waiters();
        }
    }

    fn on_lost(&self, reason: String) {
        self.follows.on_lost(&reason);
        let mut r = self.lock();
        r.lost = Some(reason);
        let all: Vec<Arc<Notify>> = r
            .slots
            .values_mut()
            .filter_map(|s| s.notify.take())
            .collect();
        drop(r);
        for n in all {
            n.notify_waiters();
        }
    }

    fn release(&self, key: &Key) {
        {
            let mut r = self.lock();
            r.slots.remove(key);
            if r.slots.is_empty() {
                // A map that held a million slots keeps its buckets: give them back.
                r.slots = FxHashMap::default();
            }
        }
        let mut pending = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        pending.push(key.clone());
        if pending.len() == 1 {
            self.release_wake.notify_one();
        }
    }

    fn flush_releases(&self) {
        let mut pending = self.releases.lock().unwrap_or_else(|p| p.into_inner());
        Self::send_releases(&self.sched, &mut pending);
    }

    /// Sends the pending releases. Called with the lock held, so that releases taken by one
    /// thread are on the connection before another thread's graph (see [`Client::send`]).
    fn send_releases(sched: &net::Sender<ToScheduler>, pending: &mut Vec<Key>) {
        let keys = std::mem::take(pending);
        if !keys.is_empty() {
            sched.send(ToScheduler::ReleaseKeys { keys });
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

/// A task's result that is or will be on the cluster, whose value is an `R`. Clones share one
/// hold on the result; when the last is dropped the scheduler may free it.
pub struct Future<R = Encoded> {
    inner: Arc<FutureRef>,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for Future<R> {
    fn clone(&self) -> Self {
        Future {
            inner: self.inner.clone(),
            _result: PhantomData,
        }
    }
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

impl<R> Future<R> {
    pub fn key(&self) -> &Key {
        &self.inner.key
    }

    /// The same result, read as another type.
    pub fn cast<S>(self) -> Future<S> {
        Future {
            inner: self.inner,
            _result: PhantomData,
        }
    }

    /// Whether the task has finished (its value or its error is known), without waiting.
    pub fn done(&self) -> bool {
        self.inner.client.is_done(&self.inner.key)
    }

    /// Whether the task was cancelled ([`Client::cancel`]).
    pub fn cancelled(&self) -> bool {
        self.inner.client.is_cancelled(&self.inner.key)
    }

    /// Waits until the task has finished, without fetching its value: then [`Future::done`]
    /// holds, and the result (or the error) is one [`Future::encoded`] away.
    pub async fn wait(&self) {
        self.inner.client.wait_done(&self.inner.key).await
    }

    /// Waits for the result and returns it undecoded.
    pub async fn encoded(&self) -> Result<Encoded, ClientError> {
        self.inner.client.result_of(&self.inner.key).await
    }
}

impl<T> AsInput<T> for Future<T> {
    fn input_source(&self) -> InputSource {
        InputSource::key(self.key().clone())
    }
}

impl<R: Data> Future<R> {
    /// Waits for the value.
    pub async fn result(&self) -> Result<R, ClientError> {
        let e = self.encoded().await?;
        R::decode(&e).map_err(|err| ClientError::Decode {
            key: self.key().clone(),
            reason: err.to_string(),
        })
    }
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Future({})", self.inner.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_core::protocol::{DEFAULT_MAX_FRAME, Envelope, write_frame};
    use tokio::io::AsyncWriteExt;

    /// A fake scheduler that welcomes the client, then sends what `after` writes.
    async fn fake_scheduler(after: Vec<u8>, welcome: FromScheduler) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tcp://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            write_frame(&mut s, &[Envelope::new(welcome)], DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            s.write_all(&after).await.unwrap();
            // Keep the connection open: only the frame can end it.
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        addr
    }

    #[tokio::test]
    async fn a_frame_over_the_maximum_from_the_scheduler_is_an_error_naming_it_and_the_size() {
        let welcome = FromScheduler::Welcome {
            id: 1,
            families: Vec::new(),
        };
        let huge = (DEFAULT_MAX_FRAME + 1).to_le_bytes().to_vec();
        let addr = fake_scheduler(huge, welcome).await;
        let client = Client::connect(&addr).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let lost = loop {
            if let Some(reason) = client.inner.lock().lost.clone() {
                break reason;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the client kept the connection"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(lost.contains(&addr), "{lost}");
        assert!(
            lost.contains(&format!("frame of {} bytes exceeds", DEFAULT_MAX_FRAME + 1)),
            "{lost}"
        );
    }

    #[tokio::test]
    async fn a_refusal_at_connect_says_why() {
        let refused = FromScheduler::Refused {
            reason: "the scheduler has 2 connections open".into(),
            retry: true,
        };
        let addr = fake_scheduler(Vec::new(), refused).await;
        let err = Client::connect(&addr).await.err().unwrap().to_string();
        assert!(
            err.contains("refused: the scheduler has 2 connections open"),
            "{err}"
        );
    }
}
