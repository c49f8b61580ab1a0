//! A simulated worker for `many-workers`: one tokio task per worker instead of a process, so a
//! thousand fit in one process beside the client.
//!
//! It speaks the real worker protocol over TCP (`rask_core`'s `protocol` messages through its
//! `net` connections, the framing a `rask worker` uses): it registers with the families of a
//! [`Registry`] (`rask::registry()`, as `rask worker` does), heartbeats at the worker's default
//! interval, runs each task it is given inline with the registered function (`seed.inc`), keeps
//! the results, serves them to peers (`GetData`), fetches missing inputs from their holders, and
//! copies replicas when a retirement asks (`AcquireReplicas` → `AddKeys`). What makes a real
//! worker a process of its own (a thread pool, the memory model, spilling, a nanny) is left out.
//!
//! For the lost-worker measurements it can be told to go silent (no heartbeat, nothing sent, the
//! connection held open; it still reads, only to note when the scheduler's `Close` arrives, which
//! the scheduler cannot tell from a hung worker's) or to close its connection abruptly.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use rask::KernelError;
use rask::core::function::Inputs;
use rask::core::net::{self, PeerPool};
use rask::core::protocol::{
    ComputeTask, DEFAULT_MAX_FRAME, DataReply, DataRequest, Envelope, FrameError, FromScheduler,
    ToScheduler, WorkerInfo, WorkerLoad, heartbeat_wants_ack, read_frame, write_frame,
};
use rask::core::{Encoded, Key, Registry, Resources};

/// Results up to this size go to the scheduler with `TaskFinished` when it asks for them (as a
/// real worker sends them: the scheduler forwards results of at most 1 MiB to the client).
const INLINE_RESULT_MAX: usize = 1 << 20;

/// How to start one simulated worker.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    /// `tcp://host:port` of the scheduler.
    pub(crate) scheduler: String,
    pub(crate) name: String,
    /// Interval between heartbeats (a `rask worker`'s default is 1 s).
    pub(crate) heartbeat: Duration,
    /// Delay before the first heartbeat, so a thousand workers started together do not all
    /// beat in the same millisecond (real workers start at different times).
    pub(crate) first_heartbeat: Duration,
}

/// Why a simulated worker could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SimError {
    #[error("simulated worker {name}: {what}: {source}")]
    Io {
        name: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("simulated worker {name}: registration failed: {reason}")]
    Register { name: String, reason: String },
}

/// What the bench can tell a running simulated worker.
#[derive(Debug)]
enum Control {
    /// Stop heartbeating and answering, keep the connection open (a hung worker).
    Silence,
    /// Close the connection at once, without a goodbye (a killed worker).
    Disconnect,
}

/// Counters a simulated worker keeps, read by the bench.
#[derive(Debug, Default)]
pub(crate) struct SimStats {
    /// Tasks run to a result.
    pub(crate) executed: AtomicU64,
    /// Heartbeats sent.
    pub(crate) heartbeats: AtomicU64,
    /// Results copied from peers on the scheduler's request (a retiring worker's).
    pub(crate) replicas: AtomicU64,
    /// When the last message (a heartbeat, a result, anything) was sent: each one tells the
    /// scheduler the worker is alive, so its TTL counts from there.
    last_message: Mutex<Option<Instant>>,
    /// When a silenced worker read the scheduler's `Close` (or saw the connection end).
    closed_while_silent: Mutex<Option<Instant>>,
}

impl SimStats {
    pub(crate) fn last_message(&self) -> Option<Instant> {
        *lock(&self.last_message)
    }

    pub(crate) fn closed_while_silent(&self) -> Option<Instant> {
        *lock(&self.closed_while_silent)
    }

    fn sent(&self) {
        *lock(&self.last_message) = Some(Instant::now());
    }
}

/// A running simulated worker; its tasks end when it is dropped.
pub(crate) struct SimWorker {
    name: String,
    held: Held,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<SimStats>,
    main: JoinHandle<Result<(), String>>,
    server: JoinHandle<()>,
}

impl Drop for SimWorker {
    fn drop(&mut self) {
        self.main.abort();
        self.server.abort();
    }
}

/// Results a worker holds, by key, shared with its data server.
type Held = Arc<Mutex<HashMap<Key, Bytes>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing holding these locks can leave them half-updated: carry on after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SimWorker {
    /// Listens for peers, connects and registers with the scheduler, and starts working.
    /// `peers` fetches inputs and replicas from other workers (shared by all of a process's
    /// simulated workers, as one worker's pool is shared by its fetches).
    pub(crate) async fn start(
        config: SimConfig,
        registry: Arc<Registry>,
        peers: Arc<PeerPool>,
    ) -> Result<SimWorker, SimError> {
        let name = config.name.clone();
        let io = |what: &'static str| {
            let name = name.clone();
            move |source| SimError::Io { name, what, source }
        };
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io("listening for peers"))?;
        let port = listener
            .local_addr()
            .map_err(io("reading the data port"))?
            .port();
        let address = format!("tcp://127.0.0.1:{port}");
        let stream = net::connect(&config.scheduler, None, Duration::from_secs(30))
            .await
            .map_err(io("connecting to the scheduler"))?;
        let (sched, mut from_sched) = net::split::<ToScheduler>(stream, config.scheduler.clone());
        sched.send(ToScheduler::RegisterWorker(Box::new(WorkerInfo {
            name: name.clone(),
            address: address.clone(),
            nthreads: 1,
            memory_limit: 0,
            pid: std::process::id(),
            families: registry.families().to_vec(),
            resources: Resources::none(),
        })));
        let refused = |reason: String| SimError::Register {
            name: name.clone(),
            reason,
        };
        let mut batch = match from_sched.recv::<FromScheduler>().await {
            Ok(Some(b)) if !b.is_empty() => b,
            Ok(_) => return Err(refused("the scheduler closed the connection".into())),
            Err(e) => return Err(refused(e.to_string())),
        };
        match batch.remove(0).msg {
            FromScheduler::Welcome { .. } => {}
            FromScheduler::Refused { reason, .. } => return Err(refused(reason)),
            other => return Err(refused(format!("unexpected first message {other:?}"))),
        }
        let held: Held = Arc::default();
        let server = tokio::spawn(serve_data(listener, held.clone(), name.clone()));
        let stats = Arc::new(SimStats::default());
        let (control, control_rx) = mpsc::unbounded_channel();
        let core = Core {
            name: name.clone(),
            sched,
            held: held.clone(),
            held_bytes: 0,
            registry,
            peers,
            stats: stats.clone(),
            out: Vec::new(),
        };
        let main = tokio::spawn(core.run(from_sched, batch, control_rx, config));
        Ok(SimWorker {
            name,
            held,
            control,
            stats,
            main,
            server,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// How many results it holds.
    pub(crate) fn holds(&self) -> usize {
        lock(&self.held).len()
    }

    pub(crate) fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Stops heartbeating and reading but keeps the connection open.
    pub(crate) fn silence(&self) {
        let _ = self.control.send(Control::Silence);
    }

    /// Closes the connection to the scheduler without a goodbye.
    pub(crate) fn disconnect(&self) {
        let _ = self.control.send(Control::Disconnect);
    }

    /// Whether its main task has ended (closed by the scheduler, lost, or told to disconnect).
    pub(crate) fn finished(&self) -> bool {
        self.main.is_finished()
    }
}

/// One worker's logic and connection.
struct Core {
    name: String,
    sched: net::Sender<ToScheduler>,
    held: Held,
    /// Bytes of `held`, for the heartbeat.
    held_bytes: u64,
    registry: Arc<Registry>,
    peers: Arc<PeerPool>,
    stats: Arc<SimStats>,
    /// Messages decided while handling a batch, sent together at its end (as a real worker
    /// batches its sends).
    out: Vec<Envelope<ToScheduler>>,
}

impl Core {
    async fn run(
        mut self,
        mut from_sched: net::Receiver,
        first: Vec<Envelope<FromScheduler>>,
        mut control: mpsc::UnboundedReceiver<Control>,
        config: SimConfig,
    ) -> Result<(), String> {
        let start = tokio::time::Instant::now() + config.first_heartbeat;
        let mut heartbeat =
            tokio::time::interval_at(start, config.heartbeat.max(Duration::from_millis(1)));
        // A heartbeat missed while the process ran other workers' tasks is skipped, and the next
        // keeps this worker's phase: with `Delay`, every worker's next heartbeat counted from the
        // end of the busy `map`, and the thousand arrived together each second after it (queued
        // behind each other for tens of milliseconds), where separate processes would have
        // kept their own phases.
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        if self.on_batch(first).await.is_some() {
            return Ok(());
        }
        loop {
            tokio::select! {
                r = from_sched.recv::<FromScheduler>() => match r {
                    Ok(Some(batch)) => {
                        if self.on_batch(batch).await.is_some() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Err(format!("{}: the scheduler closed the connection", self.name)),
                    Err(e) => return Err(format!("{}: lost the scheduler: {e}", self.name)),
                },
                _ = heartbeat.tick() => self.heartbeat(),
                c = control.recv() => match c {
                    Some(Control::Silence) => {
                        // Hold the sending half open without a word; read only to note when
                        // the scheduler gives up on this worker.
                        let _held = self.sched;
                        loop {
                            let closed = match from_sched.recv::<FromScheduler>().await {
                                Ok(Some(batch)) => batch
                                    .iter()
                                    .any(|e| matches!(e.msg, FromScheduler::Close { .. })),
                                Ok(None) | Err(_) => true,
                            };
                            if closed {
                                *lock(&self.stats.closed_while_silent) = Some(Instant::now());
                                std::future::pending::<()>().await;
                            }
                        }
                    }
                    Some(Control::Disconnect) => {
                        self.sched.close("simulated worker disconnected");
                        return Ok(());
                    }
                    // The worker handle was dropped.
                    None => return Ok(()),
                },
            }
        }
    }

    fn heartbeat(&mut self) {
        let n = self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
        self.sched.send(ToScheduler::Heartbeat(WorkerLoad {
            memory_bytes: self.held_bytes,
            // Acknowledgements asked for as a `rask worker` asks for them.
            ack: heartbeat_wants_ack(n),
            ..WorkerLoad::default()
        }));
        self.stats.sent();
    }

    /// Handles one batch from the scheduler; returns the reason when told to close.
    async fn on_batch(&mut self, batch: Vec<Envelope<FromScheduler>>) -> Option<String> {
        let mut close = None;
        for env in batch {
            match env.msg {
                FromScheduler::Compute(task) => self.compute(task).await,
                FromScheduler::FreeKeys { keys } => {
                    let mut held = lock(&self.held);
                    for k in keys {
                        if let Some(b) = held.remove(&k) {
                            self.held_bytes = self.held_bytes.saturating_sub(b.len() as u64);
                        }
                    }
                }
                FromScheduler::AcquireReplicas { keys } => self.acquire_replicas(keys).await,
                FromScheduler::Close { reason } => {
                    close = Some(reason);
                    break;
                }
                FromScheduler::HeartbeatAck => {}
                other => tracing::debug!(worker = %self.name, message = ?other, "ignored"),
            }
        }
        let out = std::mem::take(&mut self.out);
        if !out.is_empty() {
            self.sched.send_many(out);
            self.stats.sent();
        }
        close
    }

    fn hold(&mut self, key: Key, data: Bytes) {
        self.held_bytes += data.len() as u64;
        if let Some(old) = lock(&self.held).insert(key, data) {
            self.held_bytes = self.held_bytes.saturating_sub(old.len() as u64);
        }
    }

    fn held(&self, key: &Key) -> Option<Bytes> {
        lock(&self.held).get(key).cloned()
    }

    /// Fetches `key` from the first of `holders` that has it; `None` when none could give it.
    async fn fetch(&mut self, key: &Key, holders: &[String]) -> Option<Bytes> {
        for addr in holders {
            match self.peers.get_data(addr, vec![key.clone()]).await {
                Ok((found, _)) => {
                    if let Some((_, data)) = found.into_iter().find(|(k, _)| k == key) {
                        return Some(data);
                    }
                }
                Err(e) => {
                    tracing::debug!(worker = %self.name, %key, holder = %addr, error = %e, "fetch failed")
                }
            }
        }
        None
    }

    /// Runs one task inline: its inputs from this worker or their holders, then its function.
    async fn compute(&mut self, task: ComputeTask) {
        let who_has: Vec<(Key, Vec<String>)> = task
            .held_inputs()
            .map(|(key, _, holders)| (key.clone(), holders.to_vec()))
            .collect();
        let ComputeTask {
            spec,
            after,
            send_result,
            ..
        } = task;
        // Tasks run in the order they arrive, so an input computed here is held by now unless
        // it failed: the scheduler then fails this task too.
        if after.iter().any(|k| !lock(&self.held).contains_key(k)) {
            return;
        }
        let fetch_start = Instant::now();
        let mut fetched = false;
        for (key, holders) in &who_has {
            if lock(&self.held).contains_key(key) {
                continue;
            }
            fetched = true;
            match self.fetch(key, holders).await {
                Some(data) => self.hold(key.clone(), data),
                None => {
                    // The scheduler recomputes the input and sends the task again.
                    self.out.push(
                        ToScheduler::MissingData {
                            key: key.clone(),
                            holders: holders.clone(),
                        }
                        .into(),
                    );
                    return;
                }
            }
        }
        let transfer_us = if fetched {
            fetch_start.elapsed().as_micros() as u64
        } else {
            0
        };
        let start = Instant::now();
        let inputs: Result<Vec<Encoded>, KernelError> = spec
            .inputs
            .iter()
            .enumerate()
            .map(|(index, k)| {
                self.held(k)
                    .map(Encoded::from_bytes)
                    .ok_or_else(|| KernelError::Input {
                        func: spec.func.to_string(),
                        index,
                        reason: format!("{k} is not on this worker"),
                    })
            })
            .collect();
        let result = inputs.and_then(|inputs| match self.registry.get_name(&spec.func) {
            Some(f) => f.call(&spec.payload, &Inputs::new(spec.func.as_str(), &inputs)),
            None => Err(KernelError::failed(format!(
                "unknown function {:?}",
                spec.func.as_str()
            ))),
        });
        let duration_us = start.elapsed().as_micros() as u64;
        let key = spec.key;
        match result {
            Ok(encoded) => {
                let data = encoded.into_bytes();
                let nbytes = data.len() as u64;
                let blobs = if send_result && data.len() <= INLINE_RESULT_MAX {
                    vec![data.clone()]
                } else {
                    Vec::new()
                };
                self.hold(key.clone(), data);
                self.stats.executed.fetch_add(1, Ordering::Relaxed);
                self.out.push(Envelope::with_blobs(
                    ToScheduler::TaskFinished {
                        key,
                        nbytes,
                        duration_us,
                        transfer_us,
                    },
                    blobs,
                ));
            }
            Err(error) => self.out.push(
                ToScheduler::TaskErred {
                    key,
                    error,
                    duration_us,
                }
                .into(),
            ),
        }
    }

    /// Copies keys from their holders (a retiring peer's), then says which it now holds.
    async fn acquire_replicas(&mut self, keys: Vec<(Key, Vec<String>)>) {
        let mut added = Vec::new();
        for (key, holders) in keys {
            match self.fetch(&key, &holders).await {
                Some(data) => {
                    self.stats.replicas.fetch_add(1, Ordering::Relaxed);
                    added.push((key.clone(), data.len() as u64));
                    self.hold(key, data);
                }
                None => self
                    .out
                    .push(ToScheduler::MissingData { key, holders }.into()),
            }
        }
        if !added.is_empty() {
            self.out.push(ToScheduler::AddKeys { keys: added }.into());
        }
    }
}

/// Serves `GetData` requests from peers and clients, from what the worker holds.
async fn serve_data(listener: TcpListener, held: Held, name: String) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "data listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let held = held.clone();
        let name = name.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_data_conn(stream, held).await {
                tracing::debug!(worker = %name, %peer, error = %e, "closing a data connection");
            }
        });
    }
}

async fn serve_data_conn(mut stream: TcpStream, held: Held) -> Result<(), FrameError> {
    while let Some(batch) = read_frame::<DataRequest, _>(&mut stream, DEFAULT_MAX_FRAME).await? {
        let replies: Vec<Envelope<DataReply>> = batch
            .into_iter()
            .map(|env| {
                let DataRequest::GetData { keys } = env.msg;
                let held = lock(&held);
                let (mut found, mut missing, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
                for k in keys {
                    match held.get(&k) {
                        Some(b) => {
                            blobs.push(b.clone());
                            found.push(k);
                        }
                        None => missing.push(k),
                    }
                }
                Envelope::with_blobs(DataReply::Data { found, missing }, blobs)
            })
            .collect();
        write_frame(&mut stream, &replies, DEFAULT_MAX_FRAME).await?;
    }
    Ok(())
}
