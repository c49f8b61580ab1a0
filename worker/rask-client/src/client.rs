//! The client: a connection to a scheduler, and the futures of the results it holds.

use std::marker::PhantomData;
use std::mem::size_of;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::delayed::{AsInput, Delayed, Deps, InputSource, Walk, func_prefix, new_key, payload_of};
use crate::follows::Follows;
use rask_core::function::encode_payloads;
use rask_core::net::{self, PeerPool};
use rask_core::protocol::{Envelope, FromScheduler, TaskFailure, ToScheduler};
use rask_core::table::{SlotId, Table};
use rask_core::tls::TlsConfig;
use rask_core::{Data, Encoded, FamilyInfo, Func, Key, SmallBytes, TaskSpec};

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
    slots: Table<Slot>,
    /// Set once the scheduler connection is gone.
    lost: Option<String>,
    /// Where the next key is looked for first ([`Results::id`]), one cursor per use.
    cursors: Cursors,
}

/// Slots where the next key of each use is likely: a client gathers and drops its futures in
/// the order it made them, which is the order of their slots, and results come back in about
/// that order, in a few runs (one per worker, interleaved). A key found in the slot after the
/// last one of its use is found without the key index, whose control bytes and bucket miss the
/// cache at a million held keys.
#[derive(Default)]
struct Cursors {
    /// After the last key waited for ([`Client::gather`]'s order).
    wait: u32,
    /// After the last key released (the order futures are dropped in).
    release: u32,
    /// After the last keys of results, one per run; a miss replaces the oldest.
    results: [u32; RESULT_RUNS],
    oldest: usize,
}

/// Runs of results followed at once: the workers' interleaved streams, and a few more.
const RESULT_RUNS: usize = 4;

#[derive(Clone, Copy)]
enum Use {
    Wait,
    Release,
}

/// Which keys a graph sent as it is made ([`Client::send_made`]) wants held.
#[derive(Clone, Copy)]
enum Want<'k> {
    /// Every task's (a `map`'s), part by part.
    Each,
    /// These keys, with the last part (a delayed graph's roots).
    Keys(&'k [Key]),
}

/// A graph of more tasks than this goes to the scheduler in parts of this many, each in a frame
/// of its own: the scheduler adds a part, its tasks start, and the workers' results are taken
/// up before the next part (at a million tasks, encoding and adding the graph took a third of
/// the time, on one core, with the workers idle). Measured in alternating runs of `rask-bench
/// scale`: parts of 65,536 left the workers idle while the scheduler added each; 8,192 overlapped;
/// 2,048 (a few milliseconds of the scheduler's time each) gave `map` 3-10% more than 8,192 at a
/// million tasks with 10-15 fewer bytes a task held, and 10,000-task graphs a quarter more.
const GRAPH_PART: usize = 1 << 11;

/// Results of this many bytes or fewer that arrive in a frame are copied out of it: a short
/// slice would keep the whole frame (the other results' messages and keys) in memory.
const COPY_RESULTS_UP_TO: usize = 4096;

/// What the client knows of one held key: 24 bytes (and the key and 8 more in the [`Table`]),
/// a client may hold a million. The unusual outcomes are boxed, scalars' values inline.
enum Slot {
    /// No outcome yet. The notify a caller waits on, made when one waits before the outcome is
    /// known: most results arrive before anyone waits for them, or while one caller waits.
    Pending(Option<Arc<Notify>>),
    /// The encoded value, here.
    Value(SmallBytes),
    /// In memory on these workers; fetched on demand.
    Remote(Box<[String]>),
    Failed(Box<TaskFailure>),
    /// Cancelled by this client: an outcome the scheduler sends later does not replace it.
    Cancelled,
}

impl Slot {
    fn is_done(&self) -> bool {
        !matches!(self, Slot::Pending(_))
    }

    /// The notify to wait on while pending (made if none yet).
    fn waiter(&mut self) -> Option<Arc<Notify>> {
        match self {
            Slot::Pending(notify) => Some(waiter_of(notify)),
            _ => None,
        }
    }

    /// Sets the outcome (unless cancelled); the notify of those waiting, to wake.
    fn settle(&mut self, outcome: Slot) -> Option<Arc<Notify>> {
        if matches!(self, Slot::Cancelled) {
            return None;
        }
        match std::mem::replace(self, outcome) {
            Slot::Pending(notify) => notify,
            _ => None,
        }
    }
}

/// The notify of a pending slot (made if none yet).
fn waiter_of(notify: &mut Option<Arc<Notify>>) -> Arc<Notify> {
    notify
        .get_or_insert_with(|| Arc::new(Notify::new()))
        .clone()
}

impl Results {
    fn slot(&self, key: &Key) -> Option<&Slot> {
        self.slots.id(key).and_then(|id| self.slots.get(id))
    }

    fn slot_mut(&mut self, key: &Key) -> Option<&mut Slot> {
        let id = self.slots.id(key)?;
        self.slots.get_mut(id)
    }

    /// `key`'s id, looked for first after the last key of the same use ([`Cursors`]).
    fn id(&mut self, key: &Key, used: Use) -> Option<SlotId> {
        let cursor = match used {
            Use::Wait => &mut self.cursors.wait,
            Use::Release => &mut self.cursors.release,
        };
        self.slots.id_next(key, cursor)
    }

    /// The id of a result's key, looked for first after each run's last ([`Cursors`]).
    fn result_id(&mut self, key: &Key) -> Option<SlotId> {
        let c = &mut self.cursors;
        let (run, id) = match c
            .results
            .iter()
            .enumerate()
            .find_map(|(run, &near)| Some((run, self.slots.id_in(key, near)?)))
        {
            Some(found) => found,
            None => {
                let id = self.slots.id(key)?;
                let run = c.oldest;
                c.oldest = (run + 1) % RESULT_RUNS;
                (run, id)
            }
        };
        c.results[run] = id.slot().wrapping_add(1);
        Some(id)
    }
}

enum Poll {
    Ready(Encoded),
    Fetch(Vec<String>),
    Wait(Arc<Notify>),
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
        let payloads = match encode_payloads(items) {
            Ok(p) => p,
            Err(e) => panic!("arguments of {}: {e}", f.name()),
        };
        let keys: Vec<Key> = payloads.iter().map(|_| new_key(prefix)).collect();
        // Held first: the futures, kept, are made together before the parts, made and freed.
        let futures = self.hold(&keys);
        let func = f.func_name();
        let mut specs = keys
            .iter()
            .zip(payloads)
            .map(|(key, payload)| TaskSpec::new(key.clone(), func.clone(), payload, Vec::new()));
        if keys.len() <= GRAPH_PART || !self.inner.follows.of_submissions().is_empty() {
            self.send_held(specs.collect(), &keys);
        } else {
            let first = specs.by_ref().take(GRAPH_PART).collect();
            let next = specs.next();
            self.send_made(first, next, specs, ExactSizeIterator::len, Want::Each);
        }
        futures
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
    ///
    /// A graph of more than [`GRAPH_PART`] tasks is sent a part at a time as it is walked: the
    /// scheduler starts on the first part while the client walks the rest (at a million tasks
    /// the walk took a tenth of the time, with every other thread idle).
    pub fn compute_many<R>(&self, roots: &[Delayed<R>]) -> Vec<Future<R>> {
        let wanted: Vec<Key> = roots.iter().map(|d| d.key().clone()).collect();
        let futures = self.hold(&wanted);
        let mut walk = Walk::new(roots);
        let mut first: Vec<TaskSpec> = walk.by_ref().take(GRAPH_PART).collect();
        match walk.next() {
            Some(next) if self.inner.follows.of_submissions().is_empty() => {
                self.send_made(
                    first,
                    Some(next),
                    walk,
                    Walk::at_least_left,
                    Want::Keys(&wanted),
                );
            }
            next => {
                first.extend(next);
                first.extend(walk);
                self.send_held(first, &wanted);
            }
        }
        futures
    }

    /// Sends tasks that are all wanted (futures for each).
    fn send_graph<R>(&self, tasks: Vec<TaskSpec>) -> Vec<Future<R>> {
        let wanted = tasks.iter().map(|t| t.key.clone()).collect();
        self.send(tasks, wanted)
    }

    /// Sends a graph as it is made, a part of [`GRAPH_PART`] at a time: `first` (made), then
    /// `next` and the `rest`, each part made and sent before the next is made. The scheduler
    /// starts on the first part while the rest are made, and no graph's worth of specs is made,
    /// copied into parts and freed (at a million tasks, 260 MB of fresh memory: a quarter of the
    /// client's time went to its page faults). `left` says how many tasks at least the `rest`
    /// still has: the scheduler counts its task limit with it. The wanted keys are held already
    /// ([`Client::hold`]). Only for a graph without follows (see [`Client::send_held`]).
    fn send_made<I: Iterator<Item = TaskSpec>>(
        &self,
        first: Vec<TaskSpec>,
        mut next: Option<TaskSpec>,
        mut rest: I,
        left: impl Fn(&I) -> usize,
        want: Want<'_>,
    ) {
        let pending = self.releases_first();
        let mut part = first;
        loop {
            // The part after which nothing comes is the last, whatever a count said: the
            // scheduler closes the graph at the part that says none are to come.
            let last = next.is_none();
            // The task taken to look ahead is to come, and what the rest has left.
            let more = if last { 0 } else { left(&rest) + 1 };
            let (wanted_tasks, wanted) = match want {
                Want::Each => (part.len(), Vec::new()),
                Want::Keys(keys) if last => (0, keys.to_vec()),
                Want::Keys(_) => (0, Vec::new()),
            };
            let graph = ToScheduler::UpdateGraph {
                wanted_tasks: wanted_tasks as u64,
                tasks: part,
                wanted,
                more: more as u64,
            };
            self.inner.sched.send_apart(vec![Envelope::new(graph)]);
            if last {
                break;
            }
            part = next
                .take()
                .into_iter()
                .chain(rest.by_ref().take(GRAPH_PART - 1))
                .collect();
            next = rest.next();
        }
        drop(pending);
    }

    /// Holds `keys` (a slot for each not held yet) and returns a future for each.
    fn hold<R>(&self, keys: &[Key]) -> Vec<Future<R>> {
        {
            let mut r = self.inner.lock();
            r.slots.reserve(keys.len());
            for k in keys {
                if let Err(vacant) = r.slots.find(k) {
                    // `None` only past 2³² held keys: their futures then say they are not held.
                    let _ = r
                        .slots
                        .insert_vacant(vacant, k.clone(), Slot::Pending(None));
                }
            }
        }
        keys.iter()
            .map(|k| Future {
                inner: Arc::new(FutureRef {
                    key: k.clone(),
                    client: self.clone(),
                }),
                _result: PhantomData,
            })
            .collect()
    }

    /// Sends the releases of dropped futures, and keeps the lock on them until the graph that
    /// follows is sent (the guard's drop).
    ///
    /// Releases go first: a key dropped just before and wanted again by the graph (a delayed
    /// value computed twice, a scattered value) is still held at the scheduler until its
    /// release arrives, which would otherwise unwant it after the graph, and the scheduler
    /// announces a held key's result only when it is wanted afresh. Releases the release loop
    /// takes meanwhile are sent under the lock, before.
    fn releases_first(&self) -> MutexGuard<'_, Vec<Key>> {
        let mut pending = self
            .inner
            .releases
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Inner::send_releases(&self.inner.sched, &mut pending);
        pending
    }

    /// Sends tasks and holds the `wanted` keys.
    pub fn send<R>(&self, tasks: Vec<TaskSpec>, wanted: Vec<Key>) -> Vec<Future<R>> {
        let futures = self.hold(&wanted);
        self.send_held(tasks, &wanted);
        futures
    }

    /// Sends tasks, the `wanted` keys held already ([`Client::hold`]).
    fn send_held(&self, tasks: Vec<TaskSpec>, wanted: &[Key]) {
        let pending = self.releases_first();
        let follows = self.inner.follows.of_submissions();
        // The wanted keys that are the graph's tasks at the same places (all of a `map`'s) go
        // by count: the scheduler need not read, allocate and free a second copy of each.
        let by_place = wanted
            .iter()
            .zip(&tasks)
            .take_while(|(k, t)| **k == t.key)
            .count();
        // A graph with follows goes whole, the follows in its frame right after it: the
        // scheduler takes them up before any of the graph's tasks can finish (so they count
        // them all), and they name keys a graph in parts would add only with its last part.
        let part = if follows.is_empty() {
            GRAPH_PART
        } else {
            usize::MAX
        };
        let mut parts = graph_parts(tasks, wanted, by_place, part);
        if parts.len() > 1 {
            self.inner
                .sched
                .send_apart(parts.into_iter().map(Envelope::new).collect());
        } else if follows.is_empty() {
            if let Some(graph) = parts.pop() {
                self.inner.sched.send(graph);
            }
        } else {
            let follow = |id| ToScheduler::FollowKeys {
                id,
                keys: wanted.to_vec(),
            };
            let batch = parts
                .into_iter()
                .chain(follows.into_iter().map(follow))
                .map(Envelope::new)
                .collect();
            self.inner.sched.send_many(batch);
        }
        drop(pending);
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
                    if let Some(slot) = self.inner.lock().slot_mut(key)
                        && !matches!(slot, Slot::Cancelled)
                    {
                        *slot = Slot::Value(SmallBytes::unshared(
                            v.bytes().clone(),
                            COPY_RESULTS_UP_TO,
                        ));
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
                let mut r = self.inner.lock();
                r.lost.is_some()
                    || r.id(key, Use::Wait)
                        .and_then(|id| r.slots.get(id))
                        .is_some_and(Slot::is_done)
            };
            if !ready {
                notified.await;
            }
        }
    }

    /// Whether `key`'s outcome is known (a value, a failure, or the connection's loss).
    fn is_done(&self, key: &Key) -> bool {
        let r = self.inner.lock();
        r.lost.is_some() || r.slot(key).is_none_or(Slot::is_done)
    }

    /// Waits until `key`'s outcome is known, without fetching its value.
    async fn wait_done(&self, key: &Key) {
        loop {
            let notify = {
                let mut r = self.inner.lock();
                if r.lost.is_some() {
                    return;
                }
                match r.slot_mut(key).and_then(Slot::waiter) {
                    Some(notify) => notify,
                    None => return,
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
        let Some(slot) = r.id(key, Use::Wait).and_then(|id| r.slots.get_mut(id)) else {
            return Err(ClientError::Lost(format!(
                "{key} is not held by this client"
            )));
        };
        match slot {
            Slot::Value(v) => Ok(Poll::Ready(Encoded::from_bytes(v.to_bytes()))),
            Slot::Failed(f) => Err(ClientError::Task((**f).clone())),
            Slot::Cancelled => Err(ClientError::Cancelled(key.clone())),
            Slot::Remote(holders) => Ok(Poll::Fetch(holders.to_vec())),
            Slot::Pending(notify) => match lost {
                Some(reason) => Err(ClientError::Lost(reason)),
                None => Ok(Poll::Wait(waiter_of(notify))),
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
                if let Some(slot) = r.slot_mut(k) {
                    if let Slot::Pending(notify) = std::mem::replace(slot, Slot::Cancelled) {
                        wake.extend(notify);
                    }
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
        r.slot(key).is_some_and(|s| matches!(s, Slot::Cancelled))
    }

    /// Bytes this client keeps for the keys it holds, by its own accounting: its table of
    /// slots (index and slots), each key's text, what a slot owns (a value over 22 bytes, a
    /// failure, holders' addresses) and the part one key's futures share (their clones are a
    /// pointer each, kept by the caller). Results the client fetches and decodes are the
    /// caller's too.
    pub fn held_bytes(&self) -> usize {
        let r = self.inner.lock();
        let per_key = |key: &Key, slot: &Slot| {
            let owned = match slot {
                Slot::Pending(notify) => notify.as_ref().map_or(0, |_| size_of::<Notify>()),
                Slot::Value(v) => v.heap_bytes(),
                Slot::Remote(holders) => holders
                    .iter()
                    .map(|h| size_of::<String>() + h.len())
                    .sum::<usize>(),
                Slot::Failed(_) => size_of::<TaskFailure>(),
                Slot::Cancelled => 0,
            };
            key.heap_bytes() + owned + FUTURE_BYTES
        };
        r.slots.bytes() + r.slots.iter().map(|(_, k, s)| per_key(k, s)).sum::<usize>()
    }

    /// Closes the connection; futures still held fail with [`ClientError::Lost`].
    pub fn close(self) {
        drop(self);
    }
}

/// A graph's updates in parts of `part` tasks, in order ([`ToScheduler::UpdateGraph`]'s
/// `more`). Each part wants those of its tasks that are wanted by place (the first `by_place` of
/// the graph); the other wanted keys go with the last part, after which the scheduler drops
/// what nothing wants.
fn graph_parts(
    tasks: Vec<TaskSpec>,
    wanted: &[Key],
    by_place: usize,
    part: usize,
) -> Vec<ToScheduler> {
    let part = part.max(1);
    let total = tasks.len();
    if total <= part {
        // One part, the vector as it came.
        return vec![ToScheduler::UpdateGraph {
            wanted_tasks: by_place as u64,
            tasks,
            wanted: wanted.get(by_place..).unwrap_or_default().to_vec(),
            more: 0,
        }];
    }
    let mut parts = Vec::with_capacity(total.div_ceil(part));
    let mut rest = tasks.into_iter();
    let mut start = 0;
    loop {
        let tasks: Vec<TaskSpec> = rest.by_ref().take(part).collect();
        let end = start + tasks.len();
        let last = end == total;
        parts.push(ToScheduler::UpdateGraph {
            wanted_tasks: by_place.saturating_sub(start).min(tasks.len()) as u64,
            tasks,
            wanted: if last {
                wanted.get(by_place..).unwrap_or_default().to_vec()
            } else {
                Vec::new()
            },
            more: (total - end) as u64,
        });
        if last {
            return parts;
        }
        start = end;
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
                        Some(data) => (
                            key,
                            Slot::Value(SmallBytes::unshared(data, COPY_RESULTS_UP_TO)),
                        ),
                        None => (key, Slot::Remote(who_has.into_boxed_slice())),
                    }
                }
                FromScheduler::KeyErred { key, failure } => (key, Slot::Failed(failure)),
                FromScheduler::Progress(report) => {
                    self.follows.on_report(report);
                    continue;
                }
                other => {
                    tracing::debug!(message = ?other, "client ignoring message");
                    continue;
                }
            };
            if let Some(slot) = r.result_id(&key).and_then(|id| r.slots.get_mut(id)) {
                wake.extend(slot.settle(outcome));
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
            .filter_map(|s| match s {
                Slot::Pending(notify) => notify.take(),
                _ => None,
            })
            .collect();
        drop(r);
        for n in all {
            n.notify_waiters();
        }
    }

    fn release(&self, key: &Key) {
        {
            // An emptied table gives its memory back.
            let mut r = self.lock();
            if let Some(id) = r.id(key, Use::Release) {
                r.slots.remove(id);
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

/// Heap bytes of the part a key's futures share: the allocation's two counters and a
/// [`FutureRef`].
const FUTURE_BYTES: usize = 16 + size_of::<FutureRef>();

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

    /// A fake scheduler that welcomes the client and passes on every frame it reads from it.
    async fn recording_scheduler() -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<Vec<ToScheduler>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tcp://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let welcome = FromScheduler::Welcome {
                id: 1,
                families: Vec::new(),
            };
            write_frame(&mut s, &[Envelope::new(welcome)], DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            while let Ok(Some(batch)) =
                rask_core::protocol::read_frame::<ToScheduler, _>(&mut s, DEFAULT_MAX_FRAME).await
            {
                let msgs = batch.into_iter().map(|e| e.msg).collect();
                if tx.send(msgs).is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn a_large_map_goes_in_parts_made_as_it_goes_each_in_a_frame_after_the_releases() {
        const INC: Func<i64, i64> = Func::new("t.inc");
        let (addr, mut frames) = recording_scheduler().await;
        let client = Client::connect(&addr).await.unwrap();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), frames.recv())
                .await
                .expect("a frame within 10 s")
                .expect("the connection open")
        };
        let mut first = client.map(INC, [-1]);
        let is_graph = |m: &ToScheduler| matches!(m, ToScheduler::UpdateGraph { .. });
        while !next().await.iter().any(is_graph) {}
        // Dropped before the map: its release goes before the map's first part.
        let dropped = first.pop().unwrap().key().clone();
        let n = 2 * GRAPH_PART + 5;
        let futures = client.map(INC, 0..n as i64);
        let mut releases = Vec::new();
        let mut parts = Vec::new();
        while parts.len() < 3 {
            let frame = next().await;
            if frame.iter().any(is_graph) {
                // Each part in a frame of its own.
                assert_eq!(frame.len(), 1, "{frame:?}");
                assert_eq!(
                    releases,
                    std::slice::from_ref(&dropped),
                    "the release before the parts"
                );
            }
            for msg in frame {
                match msg {
                    ToScheduler::ReleaseKeys { keys } => releases.extend(keys),
                    m if is_graph(&m) => parts.push(m),
                    _ => {}
                }
            }
        }
        assert_eq!(
            shape(&parts),
            [
                (
                    GRAPH_PART,
                    GRAPH_PART as u64,
                    vec![],
                    (GRAPH_PART + 5) as u64
                ),
                (GRAPH_PART, GRAPH_PART as u64, vec![], 5),
                (5, 5, vec![], 0),
            ]
        );
        // Every task once, in the futures' order, each with its argument.
        let tasks = part_tasks(&parts);
        assert_eq!(tasks.len(), n);
        for (i, (t, f)) in tasks.iter().zip(&futures).enumerate() {
            assert_eq!(&t.key, f.key());
            let arg: i64 =
                rask_core::function::decode_payload("t.inc", t.payload.as_slice()).unwrap();
            assert_eq!(arg, i as i64);
        }
        assert_eq!(client.inner.lock().slots.len(), n, "every key held");
    }

    #[tokio::test]
    async fn a_large_delayed_graph_goes_in_parts_as_it_is_walked_its_roots_wanted_with_the_last() {
        use crate::delayed::{delayed, delayed_with};
        const INC: Func<i64, i64> = Func::new("t.inc");
        const INC2: Func<rask_core::Input<i64>, i64> = Func::new("t.inc");
        const SUM: Func<Vec<rask_core::Input<i64>>, i64> = Func::new("t.sum");
        let (addr, mut frames) = recording_scheduler().await;
        let client = Client::connect(&addr).await.unwrap();
        // inc(inc(i)) for each i, and their sum: 4,103 tasks.
        let pairs = GRAPH_PART + 3;
        let inner: Vec<Delayed<i64>> = (0..pairs as i64).map(|i| delayed(INC, i)).collect();
        let outer: Vec<Delayed<i64>> = inner
            .iter()
            .map(|x| delayed_with(INC2, |d| d.input(x)))
            .collect();
        let total = delayed_with(SUM, |d| outer.iter().map(|x| d.input(x)).collect());
        let future = client.compute(&total);
        let mut parts = Vec::new();
        while parts.len() < 3 {
            let frame = tokio::time::timeout(Duration::from_secs(10), frames.recv())
                .await
                .expect("a frame within 10 s")
                .expect("the connection open");
            if frame
                .iter()
                .any(|m| matches!(m, ToScheduler::UpdateGraph { .. }))
            {
                assert_eq!(frame.len(), 1, "each part in a frame of its own: {frame:?}");
                parts.extend(frame);
            }
        }
        // `more` counts the tasks still to come that the walk has met (a lower bound): the sum,
        // the outer incs not made yet, and the inner inc taken to look ahead; not the inner
        // incs it has yet to meet (the whole graph has 2,055 and 7 left). Only the last part
        // wants a key: the root's.
        assert_eq!(
            shape(&parts),
            [
                (GRAPH_PART, 0, vec![], (pairs - 1022) as u64),
                (GRAPH_PART, 0, vec![], 5),
                (7, 0, vec![future.key().clone()], 0),
            ]
        );
        let tasks = part_tasks(&parts);
        // Post-order: each pair inner first, then the sum reading every outer inc.
        let keys: Vec<&Key> = tasks.iter().map(|t| &t.key).collect();
        let expected: Vec<&Key> = inner
            .iter()
            .zip(&outer)
            .flat_map(|(a, b)| [a.key(), b.key()])
            .chain([total.key()])
            .collect();
        assert_eq!(keys, expected);
        assert_eq!(tasks[2 * pairs].inputs.len(), pairs);
        assert_eq!(client.inner.lock().slots.len(), 1, "the root held");
    }

    fn spec(key: &str) -> TaskSpec {
        TaskSpec::new(key.into(), "t.inc".into(), bytes::Bytes::new(), Vec::new())
    }

    /// The parts' tasks, in order.
    fn part_tasks(parts: &[ToScheduler]) -> Vec<&TaskSpec> {
        parts
            .iter()
            .flat_map(|p| match p {
                ToScheduler::UpdateGraph { tasks, .. } => tasks.iter(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    /// (tasks, wanted_tasks, wanted, more) of each part.
    fn shape(parts: &[ToScheduler]) -> Vec<(usize, u64, Vec<Key>, u64)> {
        parts
            .iter()
            .map(|p| match p {
                ToScheduler::UpdateGraph {
                    tasks,
                    wanted_tasks,
                    wanted,
                    more,
                } => (tasks.len(), *wanted_tasks, wanted.clone(), *more),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_graph_goes_in_parts_each_wanting_its_tasks_wanted_by_place_and_the_last_the_rest() {
        let tasks: Vec<TaskSpec> = (0..7).map(|i| spec(&format!("t-{i}"))).collect();
        // The first four are wanted by place (a map's would all be), then one more key.
        let mut wanted: Vec<Key> = tasks[..4].iter().map(|t| t.key.clone()).collect();
        wanted.push(Key::from("held-before"));
        let parts = graph_parts(tasks, &wanted, 4, 3);
        assert_eq!(
            shape(&parts),
            [
                (3, 3, vec![], 4),
                (3, 1, vec![], 1),
                (1, 0, vec![Key::from("held-before")], 0),
            ]
        );
        // Every task once, in order.
        let keys: Vec<Key> = parts
            .iter()
            .flat_map(|p| match p {
                ToScheduler::UpdateGraph { tasks, .. } => tasks.iter().map(|t| t.key.clone()),
                _ => unreachable!(),
            })
            .collect();
        let expected: Vec<Key> = (0..7).map(|i| Key::from(format!("t-{i}"))).collect();
        assert_eq!(keys, expected);
        // A graph of a whole number of parts ends with a full one; an empty one is one part.
        let parts = graph_parts((0..4).map(|i| spec(&format!("u-{i}"))).collect(), &[], 0, 2);
        assert_eq!(shape(&parts), [(2, 0, vec![], 2), (2, 0, vec![], 0)]);
        let parts = graph_parts(Vec::new(), &[Key::from("k")], 0, 2);
        assert_eq!(shape(&parts), [(0, 0, vec![Key::from("k")], 0)]);
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

    /// A client that sent `n` tasks to a scheduler that never answers: `n` pending futures.
    async fn pending_futures(n: usize) -> (Client, Vec<Future>) {
        let welcome = FromScheduler::Welcome {
            id: 1,
            families: Vec::new(),
        };
        let addr = fake_scheduler(Vec::new(), welcome).await;
        let client = Client::connect(&addr).await.unwrap();
        let specs: Vec<TaskSpec> = (0..n)
            .map(|i| {
                TaskSpec::new(
                    new_key("inc"),
                    rask_core::FuncName::new("inc"),
                    bytes::Bytes::from((i as u64).to_le_bytes().to_vec()),
                    Vec::new(),
                )
            })
            .collect();
        let wanted = specs.iter().map(|s| s.key.clone()).collect();
        let futures = client.send(specs, wanted);
        (client, futures)
    }

    #[tokio::test]
    async fn a_pending_future_costs_the_client_at_most_120_bytes() {
        let n = 20_000;
        let (client, futures) = pending_futures(n).await;
        assert_eq!(client.inner.lock().slots.len(), n);
        assert_eq!(size_of::<Slot>(), 24);
        let per_future = client.held_bytes() / n;
        // Keys of about 20 bytes, kept inline: an index bucket (4 bytes and a control byte, up
        // to 2 per key), the slot (key, generation, state: 56) and the futures' shared part
        // (48): 112. With the key's text in an allocation of its own 135; a map of keys to
        // slots with the value in the slot took 160 and more.
        assert!(per_future <= 120, "{per_future} bytes per pending future");
        drop(futures);
        assert_eq!(client.held_bytes(), 0, "released futures leave nothing");
    }

    #[tokio::test]
    async fn results_in_a_frame_are_copied_out_of_it_and_scalars_kept_inline() {
        let (client, futures) = pending_futures(3).await;
        let frame = bytes::Bytes::from(vec![9u8; 10_000]);
        let parts = [frame.slice(..8), frame.slice(8..108), frame.slice(108..)];
        let batch = futures
            .iter()
            .zip(parts.clone())
            .map(|(f, data)| {
                let msg = FromScheduler::KeyInMemory {
                    key: f.key().clone(),
                    nbytes: data.len() as u64,
                    who_has: Vec::new(),
                };
                Envelope::with_blobs(msg, vec![data])
            })
            .collect();
        client.inner.on_batch(batch);
        for (f, data) in futures.iter().zip(&parts) {
            let got = f.encoded().await.unwrap();
            assert_eq!(got.bytes(), data);
        }
        let r = client.inner.lock();
        let slots: Vec<&Slot> = r.slots.values().collect();
        assert!(matches!(slots[0], Slot::Value(SmallBytes::Inline { .. })));
        let Slot::Value(mid) = slots[1] else {
            panic!("a value")
        };
        assert!(
            !frame.as_ptr_range().contains(&mid.as_slice().as_ptr()),
            "copied"
        );
        let Slot::Value(long) = slots[2] else {
            panic!("a value")
        };
        assert_eq!(
            long.as_slice().as_ptr(),
            parts[2].as_ptr(),
            "kept in the frame"
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
