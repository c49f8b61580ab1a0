//! The worker: executes tasks on a thread pool, keeps results in a store that spills to disk,
//! fetches inputs from peers, serves its results to peers and clients, and retires gracefully
//! (the scheduler has peers copy its results, then closes it).
//!
//! A worker runs the functions of the [`Registry`] it is started with: whoever builds it (the
//! `rask` binary, or a user's own program) registers the families it should carry, and the worker
//! tells the scheduler which they are.

pub mod executor;
pub mod memory;
mod metrics;
pub mod nanny;
mod state;
pub mod store;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use executor::{Done, Executor, Job};
use memory::{MemoryFractions, MemoryPolicy, MemorySample};
use metrics::{Transfers, WorkerMetrics};
use rask_core::function::describe_families;
use rask_core::net::{self, PeerPool};
use rask_core::process::{self, CpuMeter, process_rss};
use rask_core::protocol::{
    DEFAULT_MAX_FRAME, DataReply, DataRequest, Envelope, FrameError, FromScheduler, ToScheduler,
    WorkerInfo, WorkerLoad, heartbeat_wants_ack, read_frame, write_frame,
};
use rask_core::ticks::{TICK_INTERVAL, Ticks};
use rask_core::tls::TlsConfig;
use rask_core::{Encoded, KernelError, Key, Registry, Resources, TaskSpec};
use state::{Effects, FetchFrom, Holdings, INLINE_RESULT_MAX, Ready, WorkerState};
use store::{Store, StoreError};

/// Most events the worker's loop takes from its queue at once.
const EVENT_BATCH: usize = 256;

/// How often the worker samples its process's memory (Dask: 100 ms).
const MEMORY_SAMPLE: Duration = Duration::from_millis(100);

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `tcp://host:port` of the scheduler.
    pub scheduler: String,
    /// Unique name (the pod or VM name on clusters).
    pub name: String,
    pub nthreads: usize,
    /// Bytes of results to keep in memory before spilling to disk (0: no limit).
    pub memory_limit: u64,
    /// Where spill files go.
    pub local_directory: PathBuf,
    /// Interface to serve data on (default: all interfaces).
    pub listen_host: Option<String>,
    /// Port to serve data on (0: any free port).
    pub port: u16,
    /// Address peers should use (default: the IP this machine uses to reach the scheduler).
    pub advertise_host: Option<String>,
    pub heartbeat: Duration,
    /// How long to keep trying to reach the scheduler at start.
    pub connect_timeout: Duration,
    /// What it offers to tasks that need resources (Dask's `--resources "GPU=1"`).
    pub resources: Resources,
    /// Where it spills, pauses and is restarted, as fractions of `memory_limit`.
    pub memory: MemoryFractions,
    /// Where to serve `/health` and `/metrics` (Dask's `--dashboard-address`; port 0 picks a
    /// free port; `None`: no dashboard).
    pub dashboard: Option<SocketAddr>,
    /// What its data server accepts from peers and clients.
    pub data_limits: DataLimits,
    /// Mutual TLS to the scheduler (a `tls://` address), on its data server and to its peers;
    /// `None`: plain TCP (docs/security.md).
    pub tls: Option<TlsConfig>,
}

/// Limits on the worker's data server, which peers and clients connect to: each ends in a closed
/// connection with a log line naming the peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataLimits {
    /// Largest request frame; a peer announcing more is disconnected before it is read.
    pub max_frame: u64,
    /// Most connections open at once; more are closed as they arrive. Peers keep idle
    /// connections for reuse, so a worker among N others may hold about N.
    pub max_connections: usize,
    /// A connection must send its first request within this long (Dask's
    /// `distributed.comm.timeouts.connect`); between requests it may stay idle.
    pub handshake_timeout: Duration,
}

impl Default for DataLimits {
    fn default() -> Self {
        DataLimits {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

impl WorkerConfig {
    pub fn new(scheduler: impl Into<String>, name: impl Into<String>) -> Self {
        WorkerConfig {
            scheduler: scheduler.into(),
            name: name.into(),
            nthreads: 1,
            memory_limit: 0,
            local_directory: std::env::temp_dir(),
            listen_host: None,
            port: 0,
            advertise_host: None,
            heartbeat: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(30),
            resources: Resources::none(),
            memory: MemoryFractions::default(),
            dashboard: None,
            data_limits: DataLimits::default(),
            tls: None,
        }
    }
}

/// Why a worker could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the scheduler at {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot listen for peers on {address}: {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error("cannot serve the worker's dashboard (/health, /metrics) on {address}: {source}")]
    Dashboard {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("the scheduler refused worker {name:?}: {reason}")]
    Refused { name: String, reason: String },
    #[error("lost the connection to the scheduler: {0}")]
    SchedulerLost(String),
    #[error("cannot create the spill directory: {0}")]
    Store(#[from] StoreError),
    #[error("cannot start the task threads: {0}")]
    Executor(#[from] executor::ExecutorError),
}

/// A running worker.
pub struct Worker {
    name: String,
    address: String,
    dashboard: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    core: JoinHandle<Result<(), WorkerError>>,
}

impl Worker {
    /// Connects to the scheduler, registers with the families of `registry`, and starts working.
    pub async fn start(config: WorkerConfig, registry: Registry) -> Result<Worker, WorkerError> {
        let stream = net::connect(
            &config.scheduler,
            config.tls.as_ref(),
            config.connect_timeout,
        )
        .await
        .map_err(|source| WorkerError::Connect {
            address: config.scheduler.clone(),
            source,
        })?;
        let reach_ip = stream
            .local_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into());
        let bind_host = config
            .listen_host
            .clone()
            .unwrap_or_else(|| "0.0.0.0".into());
        let bind = format!("{bind_host}:{}", config.port);
        let listener = TcpListener::bind(&bind)
            .await
            .map_err(|source| WorkerError::Listen {
                address: bind.clone(),
                source,
            })?;
        let port =
            listener
                .local_addr()
                .map(|a| a.port())
                .map_err(|source| WorkerError::Listen {
                    address: bind.clone(),
                    source,
                })?;
        let host = match (&config.advertise_host, &config.listen_host) {
            (Some(h), _) => h.clone(),
            (None, Some(h)) if h != "0.0.0.0" && h != "::" => h.clone(),
            _ => reach_ip,
        };
        let address = format!(
            "{}{host}:{port}",
            net::Scheme::of(config.tls.as_ref()).prefix()
        );
        let dashboard = match config.dashboard {
            Some(addr) => {
                let listener =
                    metrics::bind(addr)
                        .await
                        .map_err(|source| WorkerError::Dashboard {
                            address: addr,
                            source,
                        })?;
                let bound = listener
                    .local_addr()
                    .map_err(|source| WorkerError::Dashboard {
                        address: addr,
                        source,
                    })?;
                Some((listener, bound))
            }
            None => None,
        };

        let policy = MemoryPolicy::new(config.memory_limit, config.memory);
        let store = Arc::new(Mutex::new(Store::with_target(
            policy.target_bytes(),
            &config.local_directory,
        )?));
        let info = WorkerInfo {
            name: config.name.clone(),
            address: address.clone(),
            nthreads: config.nthreads as u32,
            memory_limit: config.memory_limit,
            pid: std::process::id(),
            families: registry.families().to_vec(),
            resources: config.resources.clone(),
        };
        // A worker of the same name may still be connected (a nanny restarting this one before
        // the scheduler saw the old connection close): try again until the connect timeout.
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        let mut stream = Some(stream);
        let (sched, mut from_sched, mut pending) = loop {
            let s = match stream.take() {
                Some(s) => s,
                None => net::connect(
                    &config.scheduler,
                    config.tls.as_ref(),
                    config.connect_timeout,
                )
                .await
                .map_err(|source| WorkerError::Connect {
                    address: config.scheduler.clone(),
                    source,
                })?,
            };
            match register(s, &config.scheduler, info.clone()).await {
                Ok(registered) => break registered,
                Err(Refusal::Retry(reason)) if tokio::time::Instant::now() < deadline => {
                    tracing::info!(name = %config.name, %reason, "registration refused for now; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(Refusal::Retry(reason)) => {
                    return Err(WorkerError::Refused {
                        name: config.name,
                        reason,
                    });
                }
                Err(Refusal::Fatal(e)) => return Err(e),
            }
        };
        tracing::info!(
            name = %config.name,
            %address,
            scheduler = %config.scheduler,
            families = %describe_families(registry.families()),
            resources = %config.resources,
            "worker registered"
        );

        let transfers = Arc::new(Transfers::default());
        tokio::spawn(serve_data(
            listener,
            store.clone(),
            transfers.clone(),
            config.data_limits,
            config.tls.clone(),
        ));
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let dashboard = dashboard.map(|(listener, bound)| {
            // Served until the event loop ends and drops its receiver.
            let open = events_tx.clone();
            let events = events_tx.clone();
            let ask = move || {
                let (reply, answer) = oneshot::channel();
                events.send(Event::Metrics(reply)).ok().map(|()| answer)
            };
            metrics::serve(listener, ask, async move { open.closed().await });
            tracing::info!(name = %config.name, address = %bound, "worker dashboard (/health, /metrics) listening");
            bound
        });
        let done_tx = events_tx.clone();
        let executor = Executor::new(config.nthreads.max(1), move |d| {
            let _ = done_tx.send(Event::Done(d));
        })?;
        // Scheduler messages feed the same event queue.
        let sched_tx = events_tx.clone();
        tokio::spawn(async move {
            if !pending.is_empty() {
                let _ = sched_tx.send(Event::Scheduler(std::mem::take(&mut pending)));
            }
            let reason = loop {
                match from_sched.recv::<FromScheduler>().await {
                    Ok(Some(batch)) => {
                        if sched_tx.send(Event::Scheduler(batch)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the scheduler closed the connection".to_owned(),
                    Err(e) => break format!("malformed message from the scheduler: {e}"),
                }
            };
            let _ = sched_tx.send(Event::SchedulerLost(reason));
        });
        let (stop_tx, stop_rx) = oneshot::channel();
        let core = Core {
            name: config.name.clone(),
            state: WorkerState::new(policy),
            nthreads: config.nthreads.max(1),
            ticks: Ticks::new("worker", Instant::now()),
            latency: Latency::default(),
            heartbeats: 0,
            io: Io {
                store,
                executor,
                sched,
                events: events_tx,
                pool: Arc::new(PeerPool::new(config.tls.clone())),
                transfers,
                registry,
                // Sampling the process's memory only serves the spill and pause thresholds.
                sample_memory: config.memory_limit > 0
                    && (config.memory.spill.is_some() || config.memory.pause.is_some()),
                deferred: FxHashMap::default(),
                arriving: 0,
            },
            fx: Actions::default(),
            cpu: CpuMeter::default(),
        };
        let heartbeat = config.heartbeat;
        let handle = tokio::spawn(core.run(events_rx, stop_rx, heartbeat));
        Ok(Worker {
            name: config.name,
            address,
            dashboard,
            stop: Some(stop_tx),
            core: handle,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `tcp://host:port` where this worker serves data.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where it serves `/health` and `/metrics`, if it does.
    pub fn dashboard_address(&self) -> Option<SocketAddr> {
        self.dashboard
    }

    /// Runs until the scheduler closes this worker (`Ok`) or the connection is lost (`Err`).
    pub async fn wait(mut self) -> Result<(), WorkerError> {
        match (&mut self.core).await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::SchedulerLost(format!(
                "worker task failed: {e}"
            ))),
        }
    }

    /// Runs until closed by the scheduler, or until `signal` resolves, then leaves cleanly (the
    /// scheduler is told, so it reschedules this worker's work at once).
    pub async fn run_until(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        tokio::select! {
            r = &mut self.core => return r.unwrap_or_else(|e| Err(WorkerError::SchedulerLost(format!("worker task failed: {e}")))),
            () = signal => {}
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.core).await {
            Ok(r) => r,
            Err(e) => Err(WorkerError::SchedulerLost(format!(
                "worker task failed: {e}"
            ))),
        }
    }

    /// Leaves on its own: tells the scheduler (which reschedules its work), then stops.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.core).await;
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

enum Event {
    Scheduler(Vec<Envelope<FromScheduler>>),
    SchedulerLost(String),
    Done(Done),
    Fetched(FetchOutcome),
    /// The dashboard asks for the figures of a `/metrics` scrape.
    Metrics(oneshot::Sender<WorkerMetrics>),
}

/// Why a registration did not go through.
enum Refusal {
    /// The scheduler may accept the same registration shortly.
    Retry(String),
    Fatal(WorkerError),
}

type Registered = (
    net::Sender<ToScheduler>,
    net::Receiver,
    Vec<Envelope<FromScheduler>>,
);

/// Registers over a fresh connection: the connection's two halves and any messages that came
/// with the welcome.
async fn register(
    stream: net::Stream,
    scheduler: &str,
    info: WorkerInfo,
) -> Result<Registered, Refusal> {
    let name = info.name.clone();
    let (sched, mut from_sched) = net::split::<ToScheduler>(stream, scheduler.to_owned());
    sched.send(ToScheduler::RegisterWorker(Box::new(info)));
    let lost = |m: String| Refusal::Fatal(WorkerError::SchedulerLost(m));
    let first = from_sched
        .recv::<FromScheduler>()
        .await
        .map_err(|e| lost(e.to_string()))?;
    match first {
        Some(mut batch) if !batch.is_empty() => match batch.remove(0).msg {
            FromScheduler::Welcome { .. } => Ok((sched, from_sched, batch)),
            FromScheduler::Refused {
                reason,
                retry: true,
            } => Err(Refusal::Retry(reason)),
            FromScheduler::Refused { reason, .. } => {
                Err(Refusal::Fatal(WorkerError::Refused { name, reason }))
            }
            other => Err(lost(format!("unexpected first message {other:?}"))),
        },
        _ => Err(lost("closed during registration".into())),
    }
}

/// The worker's event loop: its logic ([`WorkerState`], no I/O) and the I/O that carries out
/// what the logic asks for.
struct Core {
    name: String,
    state: WorkerState,
    nthreads: usize,
    ticks: Ticks,
    latency: Latency,
    /// Heartbeats sent so far (some ask for an acknowledgement: [`heartbeat_wants_ack`]).
    heartbeats: u64,
    io: Io,
    /// The handlers' effects, kept between events so their buffers are reused: most events
    /// (a task done, one to compute) ask for one message and would otherwise allocate for it.
    fx: Actions,
    /// The process's CPU time at the previous heartbeat.
    cpu: CpuMeter,
}

/// The worker's I/O: its store, threads, connections.
struct Io {
    store: Arc<Mutex<Store>>,
    executor: Executor,
    sched: net::Sender<ToScheduler>,
    events: mpsc::UnboundedSender<Event>,
    pool: Arc<PeerPool>,
    transfers: Arc<Transfers>,
    registry: Registry,
    /// Whether to sample the process's memory (only with a memory limit).
    sample_memory: bool,
    /// Jobs handed over to run after a task the executor had finished already, by that task's
    /// key: they start when the worker's loop records it ([`Core::on_done`]).
    deferred: FxHashMap<Key, Vec<AfterJob>>,
    /// Results on their way from peers that the store has not made room for yet: it makes room
    /// for all of them when the first arrive (a wide task's half a million inputs would grow
    /// it once per doubling), not when the fetch starts, so that the fetch is not held up
    /// behind the store growing.
    arriving: usize,
}

/// A job to run after another task, with that task's result at `slots` of its inputs.
struct AfterJob {
    job: Job,
    slots: Vec<usize>,
}

fn lock(store: &Mutex<Store>) -> MutexGuard<'_, Store> {
    // A panic while holding the lock cannot leave the store half-updated in a way that matters
    // more than stopping the worker would; keep serving.
    store.lock().unwrap_or_else(|p| p.into_inner())
}

impl Holdings for Store {
    fn nbytes(&self, key: &Key) -> Option<u64> {
        Store::nbytes(self, key)
    }
}

/// The keys a batch of scheduler messages has freed so far (`Actions::free` from where it
/// stood at the batch's start), as a set made when first read and brought up to date at each
/// read.
struct FreedInBatch {
    set: FxHashSet<Key>,
    /// How much of `Actions::free` is in the set.
    upto: usize,
}

impl FreedInBatch {
    fn new(fx: &Actions) -> Self {
        FreedInBatch {
            set: FxHashSet::default(),
            upto: fx.free.len(),
        }
    }

    fn up_to_date(&mut self, fx: &Actions) -> &FxHashSet<Key> {
        if let Some(new) = fx.free.get(self.upto..) {
            self.set.extend(new.iter().cloned());
            self.upto = fx.free.len();
        }
        &self.set
    }
}

/// The store as a batch of scheduler messages sees it: without the keys freed in the batch so
/// far, whose removal is applied after it.
struct AfterFrees<'a> {
    store: &'a Store,
    freed: &'a FxHashSet<Key>,
}

impl Holdings for AfterFrees<'_> {
    fn nbytes(&self, key: &Key) -> Option<u64> {
        if self.freed.contains(key) {
            None
        } else {
            self.store.nbytes(key)
        }
    }
}

/// What a handler of [`WorkerState`] asked for, carried out once it returns (the store stays
/// locked while the handler reads it).
#[derive(Default)]
struct Actions {
    send: Vec<Envelope<ToScheduler>>,
    fetch: Vec<FetchFrom>,
    execute: Vec<Ready>,
    execute_after: Vec<(Ready, Key)>,
    free: Vec<Key>,
    pause: Option<bool>,
    spill_to: Option<u64>,
    finished_with_data: Vec<(Key, u64, u64)>,
}

impl Effects for Actions {
    fn send(&mut self, msg: Envelope<ToScheduler>) {
        self.send.push(msg);
    }
    fn fetch(&mut self, groups: Vec<FetchFrom>) {
        self.fetch.extend(groups);
    }
    fn execute(&mut self, tasks: Vec<Ready>) {
        self.execute.extend(tasks);
    }
    fn execute_after(&mut self, task: Ready, after: Key) {
        self.execute_after.push((task, after));
    }
    fn free(&mut self, keys: Vec<Key>) {
        self.free.extend(keys);
    }
    fn pause(&mut self, paused: bool) {
        self.pause = Some(paused);
    }
    fn spill_to(&mut self, bytes: u64) {
        self.spill_to = Some(bytes);
    }
    fn finished_with_data(&mut self, key: Key, nbytes: u64, duration_us: u64) {
        self.finished_with_data.push((key, nbytes, duration_us));
    }
}

impl Core {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut stop: oneshot::Receiver<()>,
        heartbeat: Duration,
    ) -> Result<(), WorkerError> {
        let mut beat = tokio::time::interval(heartbeat);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sample = tokio::time::interval(MEMORY_SAMPLE);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut measure = tokio::time::interval(TICK_INTERVAL);
        measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Events waiting together are handled together: the tasks finished meanwhile are
        // reported in one batch, with one wake-up of the connection's writer.
        let mut ready = Vec::with_capacity(EVENT_BATCH);
        let result = 'run: loop {
            tokio::select! {
                n = events.recv_many(&mut ready, EVENT_BATCH) => {
                    if n == 0 {
                        // Not reached: `Io` holds a sender.
                        break Ok(());
                    }
                    for ev in ready.drain(..) {
                        if !matches!(ev, Event::Done(_)) {
                            self.apply_pending();
                        }
                        match ev {
                            Event::Scheduler(batch) => {
                                if let Some(reason) = self.on_scheduler(batch) {
                                    tracing::info!(worker = %self.name, %reason, "closing on the scheduler's request");
                                    break 'run Ok(());
                                }
                            }
                            Event::SchedulerLost(reason) => {
                                break 'run Err(WorkerError::SchedulerLost(reason))
                            }
                            Event::Done(d) => self.on_done(d),
                            Event::Fetched(f) => self.on_fetched(f),
                            Event::Metrics(reply) => {
                                let _ = reply.send(self.metrics());
                                self.ticks.scraped();
                            }
                        }
                    }
                    self.apply_pending();
                },
                _ = beat.tick() => self.heartbeat(),
                _ = measure.tick() => self.ticks.tick(Instant::now()),
                _ = sample.tick(), if self.io.sample_memory => self.sample_memory(),
                _ = &mut stop => {
                    self.io.sched.send(ToScheduler::WorkerClosing { reason: "worker stopped".into() });
                    break Ok(());
                }
            }
        };
        // Give the writer a moment to flush the last messages.
        tokio::time::sleep(Duration::from_millis(10)).await;
        self.io.executor.shutdown();
        result
    }

    fn heartbeat(&mut self) {
        let cpu_percent = self
            .cpu
            .sample(Instant::now(), process::process_cpu_seconds());
        let load = {
            let s = lock(&self.io.store);
            WorkerLoad {
                memory_bytes: s.memory_bytes(),
                spilled_bytes: s.spilled_bytes(),
                executing: self.io.executor.executing() as u32,
                rss: self.state.last_sample().rss,
                cpu_percent,
                ack: heartbeat_wants_ack(self.heartbeats),
            }
        };
        self.heartbeats += 1;
        if load.ack {
            self.latency.sent(Instant::now());
        }
        self.io.sched.send(ToScheduler::Heartbeat(load));
    }

    /// The figures of a `/metrics` scrape.
    fn metrics(&self) -> WorkerMetrics {
        let counts = self.state.task_counts();
        let executing = self.io.executor.executing();
        let (in_memory, on_disk, managed_bytes, spilled_bytes, spill) = {
            let s = lock(&self.io.store);
            (
                s.memory_count(),
                s.spilled_count(),
                s.memory_bytes(),
                s.spilled_bytes(),
                s.activity(),
            )
        };
        WorkerMetrics {
            tasks: vec![
                ("waiting", counts.waiting),
                ("ready", counts.handed_over.saturating_sub(executing)),
                ("executing", executing),
                ("flight", counts.flight),
                ("memory", in_memory),
                ("disk", on_disk),
            ],
            nthreads: self.nthreads,
            latency_s: self.latency.seconds(),
            rss: process_rss(None),
            managed_bytes,
            spilled_bytes,
            incoming_bytes: counts.flight_bytes,
            spill,
            tick_count: self.ticks.count(),
            tick_max_s: self.ticks.longest(Instant::now()).as_secs_f64(),
            ..WorkerMetrics::default()
        }
        .with_transfers(&self.io.transfers)
    }

    fn sample_memory(&mut self) {
        let Some(rss) = process_rss(None) else {
            return;
        };
        let managed = lock(&self.io.store).memory_bytes();
        let mut fx = std::mem::take(&mut self.fx);
        self.state.memory(MemorySample { rss, managed }, &mut fx);
        self.io.apply(&mut fx);
        self.fx = fx;
    }

    /// Handles a batch from the scheduler; returns the reason when told to close.
    fn on_scheduler(&mut self, batch: Vec<Envelope<FromScheduler>>) -> Option<String> {
        let mut fx = std::mem::take(&mut self.fx);
        let mut computes = Vec::new();
        let mut close = None;
        {
            let store = lock(&self.io.store);
            // Keys the batch frees leave the store only once `fx` is applied, after the batch:
            // until then the handlers must not count them as held. (A client that releases a
            // result and wants it again sends both together; counting the freed copy as held
            // answered "already computed" for a result about to be dropped.) The set of them is
            // made only for a handler that reads the store after a free: a batch of frees alone
            // (a released collection's million keys) needs none.
            let mut freed = FreedInBatch::new(&fx);
            for env in batch {
                match env.msg {
                    FromScheduler::Compute(ct) => computes.push(ct),
                    FromScheduler::FreeKeys { keys } => self.state.free_keys(keys, &mut fx),
                    FromScheduler::AcquireReplicas { keys } => {
                        let held = AfterFrees {
                            store: &store,
                            freed: freed.up_to_date(&fx),
                        };
                        self.state.acquire_replicas(keys, &held, &mut fx)
                    }
                    FromScheduler::Close { reason } => {
                        close = Some(reason);
                        break;
                    }
                    FromScheduler::HeartbeatAck => self.latency.acked(Instant::now()),
                    other => {
                        tracing::warn!(message = ?other, "ignoring an unexpected message from the scheduler")
                    }
                }
            }
            if !computes.is_empty() {
                let held = AfterFrees {
                    store: &store,
                    freed: freed.up_to_date(&fx),
                };
                self.state.compute(computes, &held, &mut fx);
            }
        }
        self.io.apply(&mut fx);
        self.fx = fx;
        close
    }

    /// Carries out what the handlers of finished tasks asked for so far.
    fn apply_pending(&mut self) {
        self.io.apply(&mut self.fx);
    }

    /// Records a finished task; what it asks for waits in `self.fx` for [`Core::apply_pending`]
    /// (after the other tasks finished meanwhile, or before the next other event).
    fn on_done(&mut self, d: Done) {
        let duration_us = d.duration.as_micros() as u64;
        if !self.io.deferred.is_empty() {
            self.io.run_deferred(&d.key, d.result.as_ref().ok());
        }
        // Stored before the effects of `done` are applied (they may run tasks reading it). A
        // task freed while it ran (or handed over after one) is not kept: nobody would free its
        // result again.
        let key = d.key.clone();
        let assigned = self.state.done(
            d.key,
            d.result.as_ref().map_err(Clone::clone),
            duration_us,
            &mut self.fx,
        );
        if assigned
            && let Ok(encoded) = d.result
            && let Err(e) = lock(&self.io.store).put(key.clone(), encoded)
        {
            // The result is stored; only spilling other results failed.
            tracing::error!(%key, error = %e, "spilling to disk failed; results stay in memory");
        }
    }

    fn on_fetched(&mut self, outcome: FetchOutcome) {
        let mut found = Vec::with_capacity(outcome.found.len());
        {
            let mut store = lock(&self.io.store);
            // Room for the rest of what is on its way, made while the peers send the next parts.
            let arriving = std::mem::take(&mut self.io.arriving);
            if arriving > outcome.found.len() {
                store.reserve(arriving);
            }
            for (key, data) in outcome.found {
                let nbytes = data.len() as u64;
                if let Err(e) = store.put(key.clone(), Encoded::from_bytes(data)) {
                    tracing::error!(%key, error = %e, "spilling to disk failed; results stay in memory");
                }
                found.push((key, nbytes));
            }
        }
        for (key, holders) in &outcome.missing {
            tracing::warn!(%key, ?holders, "could not fetch an input from any holder");
        }
        let took_us = u64::try_from(outcome.took.as_micros()).unwrap_or(u64::MAX);
        let mut fx = std::mem::take(&mut self.fx);
        self.state.fetched(found, outcome.missing, took_us, &mut fx);
        self.io.apply(&mut fx);
        self.fx = fx;
    }
}

impl Io {
    /// Carries out what a handler asked for.
    fn apply(&mut self, fx: &mut Actions) {
        let free = &mut fx.free;
        let spill_to = fx.spill_to.take();
        let finished_with_data = &mut fx.finished_with_data;
        if !free.is_empty() || spill_to.is_some() || !finished_with_data.is_empty() {
            let mut store = lock(&self.store);
            if !free.is_empty() {
                self.executor.cancel(free);
                if !self.deferred.is_empty() {
                    drop_deferred(&mut self.deferred, free);
                }
            }
            for k in free.drain(..) {
                store.remove(&k);
            }
            if let Some(bytes) = spill_to
                && let Err(e) = store.spill_to(bytes)
            {
                tracing::error!(error = %e, "spilling to disk failed; results stay in memory");
            }
            for (key, nbytes, duration_us) in finished_with_data.drain(..) {
                let mut blobs = Vec::new();
                if nbytes as usize <= INLINE_RESULT_MAX {
                    match store.get(&key) {
                        Ok(Some(e)) => blobs.push(e.into_bytes()),
                        Ok(None) => {}
                        Err(e) => tracing::error!(%key, error = %e, "cannot read a stored result"),
                    }
                }
                let msg = ToScheduler::TaskFinished {
                    key,
                    nbytes,
                    duration_us,
                    // Only results already held are reported this way: nothing was fetched.
                    transfer_us: 0,
                };
                self.sched.send(Envelope::with_blobs(msg, blobs));
            }
        }
        let pause = fx.pause.take();
        if let Some(p) = pause {
            self.executor.pause(p);
        }
        self.submit(&mut fx.execute);
        if !fx.execute_after.is_empty() {
            self.submit_after(&mut fx.execute_after);
        }
        match fx.send.len() {
            0 => {}
            1 => {
                if let Some(msg) = fx.send.pop() {
                    self.sched.send(msg);
                }
            }
            _ => {
                self.sched.send_many(std::mem::take(&mut fx.send));
            }
        }
        let fetches = std::mem::take(&mut fx.fetch);
        if !fetches.is_empty() {
            let pool = self.pool.clone();
            let events = self.events.clone();
            let transfers = self.transfers.clone();
            let arriving = fetches.iter().map(|g| g.keys.len()).sum();
            let deliver = Arc::new(move |outcome| {
                let _ = events.send(Event::Fetched(outcome));
            });
            tokio::spawn(async move { fetch(pool, &transfers, fetches, deliver).await });
            self.arriving = self.arriving.saturating_add(arriving);
        }
    }

    /// Hands tasks to the thread pool to run after a task it runs (the task's result is their
    /// input of that name; the others are read from the store now). One whose task finished
    /// already waits in [`Io::deferred`] for the loop to record it.
    fn submit_after(&mut self, tasks: &mut Vec<(Ready, Key)>) {
        let mut now = Vec::new();
        let mut failures = Vec::new();
        {
            let mut store = lock(&self.store);
            for (ready, after) in tasks.drain(..) {
                let key = ready.spec.key.clone();
                let job = match self.job(ready, Some(&after), &mut store) {
                    Ok(job) => job,
                    Err(e) => {
                        failures.push((key, e));
                        continue;
                    }
                };
                let slots: Vec<usize> = job_slots(&job.0, &after);
                let job = match self
                    .executor
                    .submit_after(Box::new(job.1), &after, slots.clone())
                {
                    Ok(()) => continue,
                    Err(job) => *job,
                };
                match store.get(&after) {
                    // Recorded by the loop already: its result is in the store.
                    Ok(Some(value)) => {
                        let mut job = job;
                        for &i in &slots {
                            if let Some(slot) = job.inputs.get_mut(i) {
                                *slot = value.clone();
                            }
                        }
                        now.push(job);
                    }
                    _ => self
                        .deferred
                        .entry(after)
                        .or_default()
                        .push(AfterJob { job, slots }),
                }
            }
        }
        if !now.is_empty() {
            self.executor.submit_many(now);
        }
        self.report_failures(failures);
    }

    /// Starts the jobs deferred until task `key` finished (`result`: its result, `None` if it
    /// failed); those of a failed task are dropped, and those deferred after them.
    fn run_deferred(&mut self, key: &Key, result: Option<&Encoded>) {
        let Some(list) = self.deferred.remove(key) else {
            return;
        };
        match result {
            Some(value) => {
                let jobs: Vec<Job> = list
                    .into_iter()
                    .map(|AfterJob { mut job, slots }| {
                        for i in slots {
                            if let Some(slot) = job.inputs.get_mut(i) {
                                *slot = value.clone();
                            }
                        }
                        job
                    })
                    .collect();
                self.executor.submit_many(jobs);
            }
            None => {
                let keys: Vec<Key> = list.into_iter().map(|a| a.job.key).collect();
                drop_deferred(&mut self.deferred, &keys);
            }
        }
    }

    /// Reports tasks that could not start as the executor would, so the logic forgets them.
    fn report_failures(&self, failures: Vec<(Key, KernelError)>) {
        for (key, error) in failures {
            let _ = self.events.send(Event::Done(Done {
                key,
                result: Err(error),
                duration: Duration::ZERO,
            }));
        }
    }

    /// The executor's job for a task: its function and its inputs from the store, but for
    /// `after`'s (not finished yet), left empty; with the names of its inputs.
    fn job(
        &self,
        ready: Ready,
        after: Option<&Key>,
        store: &mut Store,
    ) -> Result<(Vec<Key>, Job), KernelError> {
        let Ready {
            spec,
            priority,
            watched,
        } = ready;
        let Some(func) = self.registry.get_name(&spec.func) else {
            // The scheduler places tasks by the families workers register, so this is a
            // scheduler that did not check (an older one?) or a name it mistook.
            return Err(KernelError::failed(format!(
                "unknown function {:?}; this worker has {}",
                spec.func.as_str(),
                describe_families(self.registry.families())
            )));
        };
        let inputs: Vec<Encoded> = spec
            .inputs
            .iter()
            .enumerate()
            .map(|(i, k)| match after {
                Some(a) if a == k => Ok(Encoded::from_bytes(Bytes::new())),
                _ => input(&spec, i, k, store),
            })
            .collect::<Result<_, _>>()?;
        let spec = *spec;
        let job = Job {
            key: spec.key,
            func: func.clone(),
            name: spec.func,
            payload: spec.payload,
            inputs,
            priority,
            watched,
        };
        Ok((spec.inputs, job))
    }

    /// Reads ready tasks' inputs from the store and hands them to the thread pool.
    fn submit(&mut self, ready: &mut Vec<Ready>) {
        if ready.is_empty() {
            return;
        }
        let mut jobs = Vec::with_capacity(ready.len());
        let mut failures = Vec::new();
        {
            let mut store = lock(&self.store);
            for ready in ready.drain(..) {
                let key = ready.spec.key.clone();
                match self.job(ready, None, &mut store) {
                    Ok((_, job)) => jobs.push(job),
                    Err(e) => failures.push((key, e)),
                }
            }
        }
        self.executor.submit_many(jobs);
        self.report_failures(failures);
    }
}

/// Where `after` is among a job's inputs (`names`, in order).
fn job_slots(names: &[Key], after: &Key) -> Vec<usize> {
    names
        .iter()
        .enumerate()
        .filter(|(_, k)| *k == after)
        .map(|(i, _)| i)
        .collect()
}

/// Drops the deferred jobs of `keys` (freed or failed) and those deferred after them.
fn drop_deferred(deferred: &mut FxHashMap<Key, Vec<AfterJob>>, keys: &[Key]) {
    let mut stack: Vec<Key> = keys.to_vec();
    while let Some(k) = stack.pop() {
        for list in deferred.values_mut() {
            list.retain(|a| a.job.key != k);
        }
        deferred.retain(|_, list| !list.is_empty());
        if let Some(list) = deferred.remove(&k) {
            stack.extend(list.into_iter().map(|a| a.job.key));
        }
    }
}

/// One of a task's inputs, from the store.
fn input(
    spec: &TaskSpec,
    index: usize,
    key: &Key,
    store: &mut Store,
) -> Result<Encoded, KernelError> {
    let fail = |reason: String| KernelError::Input {
        func: spec.func.to_string(),
        index,
        reason,
    };
    match store.get(key) {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(fail(format!("{key} is not on this worker"))),
        Err(err) => Err(fail(format!("{key} cannot be read: {err}"))),
    }
}

/// The round trip of heartbeats to the scheduler (Dask's worker `latency`): the first sets it,
/// each later one moves it 5% of the way, as Dask's does.
#[derive(Debug, Default)]
struct Latency {
    /// When the heartbeats not yet acknowledged were sent, oldest first (one connection keeps
    /// their order).
    sent: VecDeque<Instant>,
    seconds: Option<f64>,
}

/// Heartbeats remembered while waiting for their acknowledgements: a scheduler that stops
/// acknowledging does not make the worker remember every heartbeat.
const UNACKED_HEARTBEATS: usize = 64;

/// Dask's worker latency before any heartbeat came back.
const INITIAL_LATENCY_S: f64 = 0.001;

impl Latency {
    fn sent(&mut self, at: Instant) {
        if self.sent.len() == UNACKED_HEARTBEATS {
            self.sent.pop_front();
        }
        self.sent.push_back(at);
    }

    fn acked(&mut self, at: Instant) {
        let Some(sent) = self.sent.pop_front() else {
            return;
        };
        let rtt = at.saturating_duration_since(sent).as_secs_f64();
        self.seconds = Some(match self.seconds {
            Some(s) => rtt * 0.05 + s * 0.95,
            None => rtt,
        });
    }

    fn seconds(&self) -> f64 {
        self.seconds.unwrap_or(INITIAL_LATENCY_S)
    }
}

// ----- peer data: serving and fetching ---------------------------------------------------------

/// Serves `GetData` requests from peers and clients.
async fn serve_data(
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    transfers: Arc<Transfers>,
    limits: DataLimits,
    tls: Option<TlsConfig>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "data listener accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                %peer,
                max = limits.max_connections,
                "refusing a data connection: as many are open as the limit"
            );
            drop(stream);
            continue;
        };
        let store = store.clone();
        let transfers = transfers.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // The TLS handshake counts against the handshake timeout too.
            let handshake = net::accept(stream, peer, tls.as_ref());
            let stream = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "refusing a data connection");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, "closing a data connection: no TLS handshake within the handshake timeout");
                    return;
                }
            };
            match serve_data_conn(stream, store, &transfers, limits).await {
                Ok(()) => {}
                // A peer or client that went away mid-exchange is routine.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!(%peer, error = %e, "data connection reset");
                }
                Err(e) => tracing::warn!(%peer, error = %e, "closing data connection"),
            }
        });
    }
}

async fn serve_data_conn(
    mut stream: net::Stream,
    store: Arc<Mutex<Store>>,
    transfers: &Transfers,
    limits: DataLimits,
) -> Result<(), FrameError> {
    let first = tokio::time::timeout(
        limits.handshake_timeout,
        read_frame::<DataRequest, _>(&mut stream, limits.max_frame),
    )
    .await
    .map_err(|_| {
        FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no request within the handshake timeout of {:?}",
                limits.handshake_timeout
            ),
        ))
    })?;
    let mut next = first?;
    while let Some(batch) = next {
        let mut replies = Vec::with_capacity(batch.len());
        for env in batch {
            let DataRequest::GetData { keys } = env.msg;
            let (mut found, mut missing, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
            {
                let mut s = lock(&store);
                for k in keys {
                    match s.get(&k) {
                        Ok(Some(e)) => {
                            found.push(k);
                            blobs.push(e.into_bytes());
                        }
                        Ok(None) => missing.push(k),
                        Err(e) => {
                            tracing::error!(key = %k, error = %e, "cannot read a stored result for a peer");
                            missing.push(k);
                        }
                    }
                }
            }
            replies.push(Envelope::with_blobs(
                DataReply::Data { found, missing },
                blobs,
            ));
        }
        let nbytes = replies
            .iter()
            .flat_map(|r| r.blobs.iter())
            .map(|b| b.len() as u64)
            .sum();
        let _sending = transfers.outgoing(nbytes);
        write_frame(&mut stream, &replies, DEFAULT_MAX_FRAME).await?;
        next = read_frame::<DataRequest, _>(&mut stream, limits.max_frame).await?;
    }
    Ok(())
}

struct FetchOutcome {
    found: Vec<(Key, Bytes)>,
    /// Keys no holder could give, with the holders tried.
    missing: Vec<(Key, Vec<String>)>,
    /// How long the fetch had taken when these arrived.
    took: Duration,
}

/// A request to one peer asks for at most this many keys: a wide task's inputs arrive in
/// parts, and the worker stores one part (and the peer reads the next from its store) while the
/// next is on its way. At a million inputs one request of half a million keys had the peer
/// read, encode and send them all before the worker could store the first.
const FETCH_KEYS: usize = 1 << 14;

/// And at most about this many bytes by the scheduler's sizes (Dask's
/// `distributed.worker.transfer.message-bytes-limit` is 50 MB): a reply must fit in a frame
/// (1 GiB), and one large reply holds the peer's memory and the wire for its whole length.
const FETCH_BYTES: u64 = 64 << 20;

/// Fetches `wanted` from their holders: the groups for the same holder in one series of
/// requests (of [`FETCH_KEYS`] and [`FETCH_BYTES`] at most), the holders at once. What arrives
/// is handed to `deliver` as each reply is read; what a holder lacks (or all it was to give,
/// if it cannot be reached) is asked of the group's next holder, and what no holder gives is
/// delivered as missing at the end.
async fn fetch(
    pool: Arc<PeerPool>,
    transfers: &Arc<Transfers>,
    wanted: Vec<FetchFrom>,
    deliver: Arc<dyn Fn(FetchOutcome) + Send + Sync>,
) {
    let started = Instant::now();
    let mut missing = Vec::new();
    // Each group with the index of the holder to ask next.
    let mut todo: Vec<(FetchFrom, usize)> = wanted.into_iter().map(|g| (g, 0)).collect();
    while !todo.is_empty() {
        let mut by_holder: FxHashMap<String, Vec<(FetchFrom, usize)>> = FxHashMap::default();
        for (group, i) in todo.drain(..) {
            match group.holders.get(i) {
                Some(h) => by_holder.entry(h.clone()).or_default().push((group, i)),
                None => {
                    let FetchFrom { holders, keys } = group;
                    missing.extend(keys.into_iter().map(|(k, _)| (k, holders.clone())));
                }
            }
        }
        let requests = by_holder.into_iter().map(|(holder, groups)| {
            let pool = pool.clone();
            let transfers = transfers.clone();
            let deliver = deliver.clone();
            async move { fetch_from(&pool, &transfers, &holder, groups, started, &*deliver).await }
        });
        for retry in futures_join_all(requests).await {
            todo.extend(retry);
        }
    }
    if !missing.is_empty() {
        deliver(FetchOutcome {
            found: Vec::new(),
            missing,
            took: started.elapsed(),
        });
    }
}

/// Asks `holder` for the keys of `groups` in requests of at most [`FETCH_KEYS`] keys and about
/// [`FETCH_BYTES`] bytes, one after the other, delivering each reply as it is read. Returns the
/// groups left to ask of their next holders: the keys `holder` did not have, and every key not
/// received once a request to it failed (it is not asked again).
async fn fetch_from(
    pool: &PeerPool,
    transfers: &Transfers,
    holder: &str,
    groups: Vec<(FetchFrom, usize)>,
    started: Instant,
    deliver: &(dyn Fn(FetchOutcome) + Send + Sync),
) -> Vec<(FetchFrom, usize)> {
    // Every key, in order, with its group; each group emptied, to hold what is left for its
    // next holder.
    let mut all: Vec<(usize, Key, u64)> = Vec::new();
    let mut left: Vec<(FetchFrom, usize)> = Vec::with_capacity(groups.len());
    for (g, (group, i)) in groups.into_iter().enumerate() {
        let FetchFrom { holders, keys } = group;
        all.extend(keys.into_iter().map(|(k, nbytes)| (g, k, nbytes)));
        let keys = Vec::new();
        left.push((FetchFrom { holders, keys }, i + 1));
    }
    let mut keep_left = |part: &[(usize, Key, u64)], only: &dyn Fn(&Key) -> bool| {
        for (g, k, nbytes) in part.iter().filter(|(_, k, _)| only(k)) {
            if let Some((group, _)) = left.get_mut(*g) {
                group.keys.push((k.clone(), *nbytes));
            }
        }
    };
    let mut rest = all.as_slice();
    while !rest.is_empty() {
        let (part, after) = rest.split_at(request_len(rest));
        rest = after;
        let keys: Vec<Key> = part.iter().map(|(_, k, _)| k.clone()).collect();
        let open = transfers.incoming();
        let result = pool.get_data(holder, keys).await;
        drop(open);
        match result {
            Ok((found, lacking)) => {
                if !lacking.is_empty() {
                    let lacking: FxHashSet<&Key> = lacking.iter().collect();
                    keep_left(part, &|k| lacking.contains(k));
                }
                if !found.is_empty() {
                    deliver(FetchOutcome {
                        found,
                        missing: Vec::new(),
                        took: started.elapsed(),
                    });
                }
            }
            Err(e) => {
                tracing::warn!(%holder, error = %e, "fetch from peer failed");
                keep_left(part, &|_| true);
                keep_left(rest, &|_| true);
                break;
            }
        }
    }
    left.retain(|(group, _)| !group.keys.is_empty());
    left
}

/// How many of `keys` (at least one) the next request asks for: [`FETCH_KEYS`] at most, and
/// no more than [`FETCH_BYTES`] by their sizes unless the first alone is larger.
fn request_len(keys: &[(usize, Key, u64)]) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for (_, _, nbytes) in keys.iter().take(FETCH_KEYS) {
        bytes = bytes.saturating_add(*nbytes);
        if n > 0 && bytes > FETCH_BYTES {
            break;
        }
        n += 1;
    }
    n.max(1).min(keys.len())
}

/// Runs futures concurrently and collects their outputs (in completion order).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futs {
        set.spawn(f);
    }
    let mut outs = Vec::new();
    while let Some(r) = set.join_next().await {
        if let Ok(v) = r {
            outs.push(v);
        }
    }
    outs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data server holding these results, with these limits; its address.
    async fn data_server_of(items: &[(&str, &'static [u8])], limits: DataLimits) -> SocketAddr {
        // The store spills (never, here) into a directory of its own under this one.
        let mut store = Store::new(0, &std::env::temp_dir()).unwrap();
        for (k, v) in items {
            store
                .put(Key::from(*k), Encoded::from_bytes(Bytes::from_static(v)))
                .unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_data(
            listener,
            Arc::new(Mutex::new(store)),
            Arc::new(Transfers::default()),
            limits,
            None,
        ));
        addr
    }

    /// A data server holding these results; its `tcp://` address.
    async fn serving(items: &[(&str, &'static [u8])]) -> String {
        let addr = data_server_of(items, DataLimits::default()).await;
        format!("tcp://{addr}")
    }

    #[test]
    fn the_keys_freed_in_a_batch_are_those_freed_since_it_began_as_of_each_read() {
        let mut fx = Actions::default();
        fx.free(vec![Key::from("before")]);
        let mut freed = FreedInBatch::new(&fx);
        fx.free(vec![Key::from("a"), Key::from("b")]);
        let set = freed.up_to_date(&fx);
        assert!(set.contains(&Key::from("a")) && set.contains(&Key::from("b")));
        assert!(
            !set.contains(&Key::from("before")),
            "freed before the batch"
        );
        fx.free(vec![Key::from("c")]);
        assert_eq!(
            freed.up_to_date(&fx).len(),
            3,
            "a later free is seen at the next read"
        );
    }

    /// Runs a fetch to its end: every outcome delivered, in order.
    async fn fetch_all(wanted: Vec<FetchFrom>) -> Vec<FetchOutcome> {
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = got.clone();
        let deliver = Arc::new(move |o| into.lock().unwrap().push(o));
        let pool = Arc::new(PeerPool::new(None));
        fetch(pool, &Arc::new(Transfers::default()), wanted, deliver).await;
        std::mem::take(&mut *got.lock().unwrap())
    }

    fn sized(keys: &[&str], nbytes: u64) -> Vec<(Key, u64)> {
        keys.iter().map(|k| (Key::from(*k), nbytes)).collect()
    }

    #[tokio::test]
    async fn a_group_asks_its_next_holder_for_what_the_first_lacks() {
        let a = serving(&[("x", b"xa")]).await;
        let b = serving(&[("x", b"xb"), ("y", b"yb")]).await;
        // Nothing listens there: connecting fails at once.
        let gone = "tcp://127.0.0.1:1".to_string();
        let wanted = vec![
            FetchFrom {
                holders: vec![a.clone(), b.clone()],
                keys: sized(&["x", "y"], 2),
            },
            FetchFrom {
                holders: vec![gone.clone(), a.clone()],
                keys: sized(&["x2", "z"], 2),
            },
        ];
        let outcomes = fetch_all(wanted).await;
        let mut found: Vec<_> = outcomes.iter().flat_map(|o| o.found.clone()).collect();
        found.sort_by(|p, q| p.0.cmp(&q.0));
        assert_eq!(
            found,
            vec![
                (Key::from("x"), Bytes::from_static(b"xa")),
                (Key::from("y"), Bytes::from_static(b"yb")),
            ],
            "x from the first holder, y from the second"
        );
        let mut missing: Vec<_> = outcomes.iter().flat_map(|o| o.missing.clone()).collect();
        missing.sort_by(|p, q| p.0.cmp(&q.0));
        assert_eq!(
            missing,
            vec![
                (Key::from("x2"), vec![gone.clone(), a.clone()]),
                (Key::from("z"), vec![gone, a]),
            ],
            "no holder had them: reported with every holder tried"
        );
        assert!(
            outcomes.last().is_some_and(|o| !o.missing.is_empty()),
            "the missing keys at the end"
        );
    }

    #[tokio::test]
    async fn many_inputs_arrive_in_parts_of_the_key_and_byte_limits() {
        let n = 2 * FETCH_KEYS + 3;
        let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let items: Vec<(&str, &'static [u8])> =
            names.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
        let holder = serving(&items).await;
        let keys: Vec<&str> = names.iter().map(String::as_str).collect();
        let outcomes = fetch_all(vec![FetchFrom {
            holders: vec![holder.clone()],
            keys: sized(&keys, 1),
        }])
        .await;
        let parts: Vec<usize> = outcomes.iter().map(|o| o.found.len()).collect();
        assert_eq!(parts, [FETCH_KEYS, FETCH_KEYS, 3], "by count");
        let got: Vec<&Key> = outcomes
            .iter()
            .flat_map(|o| &o.found)
            .map(|f| &f.0)
            .collect();
        assert_eq!(got.len(), n);
        assert!(
            got.iter().zip(&names).all(|(k, name)| k.as_str() == name),
            "in order"
        );
        // Sizes as the scheduler knew them: two keys of 40 MB do not go in one request of 64 MB,
        // and one larger than the limit still goes (alone).
        let big = |k: &str, nbytes: u64| (Key::from(k), nbytes);
        let outcomes = fetch_all(vec![FetchFrom {
            holders: vec![holder],
            keys: vec![
                big("k0", 40 << 20),
                big("k1", 40 << 20),
                big("k2", 100 << 20),
                big("k3", 1),
                big("k4", 1),
            ],
        }])
        .await;
        let parts: Vec<usize> = outcomes.iter().map(|o| o.found.len()).collect();
        assert_eq!(parts, [1, 1, 1, 2], "by bytes");
    }

    mod data_limits {
        use super::*;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;

        /// A data server holding `x` = b"xx", with these limits; its address.
        async fn data_server(limits: DataLimits) -> SocketAddr {
            data_server_of(&[("x", b"xx")], limits).await
        }

        async fn get_x(s: &mut TcpStream) {
            let req = [Envelope::new(DataRequest::GetData {
                keys: vec![Key::from("x")],
            })];
            write_frame(s, &req, DEFAULT_MAX_FRAME).await.unwrap();
            let reply = read_frame::<DataReply, _>(s, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(reply[0].blobs, vec![Bytes::from_static(b"xx")]);
        }

        async fn expect_closed(s: &mut TcpStream) {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            assert!(read.is_ok(), "the data server did not close the connection");
        }

        #[tokio::test]
        async fn an_oversized_request_frame_closes_the_connection() {
            let addr = data_server(DataLimits {
                max_frame: 1024,
                ..DataLimits::default()
            })
            .await;
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&(1u64 << 40).to_le_bytes()).await.unwrap();
            expect_closed(&mut s).await;
            let mut ok = TcpStream::connect(addr).await.unwrap();
            get_x(&mut ok).await;
        }

        #[tokio::test]
        async fn a_silent_connection_is_closed_but_an_idle_pooled_one_is_kept() {
            let addr = data_server(DataLimits {
                handshake_timeout: Duration::from_secs(1),
                ..DataLimits::default()
            })
            .await;
            let mut silent = TcpStream::connect(addr).await.unwrap();
            let mut partial = TcpStream::connect(addr).await.unwrap();
            partial.write_all(&[1, 2, 3]).await.unwrap();
            let mut pooled = TcpStream::connect(addr).await.unwrap();
            get_x(&mut pooled).await;
            expect_closed(&mut silent).await;
            expect_closed(&mut partial).await;
            // Idle between requests for longer than the timeout, as in a peer's pool.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            get_x(&mut pooled).await;
        }

        #[tokio::test]
        async fn connections_over_the_limit_are_closed_and_open_ones_served() {
            let addr = data_server(DataLimits {
                max_connections: 1,
                ..DataLimits::default()
            })
            .await;
            let mut first = TcpStream::connect(addr).await.unwrap();
            get_x(&mut first).await;
            let mut second = TcpStream::connect(addr).await.unwrap();
            expect_closed(&mut second).await;
            get_x(&mut first).await;
            drop(first);
            // Its slot is free again once the server sees it close.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut again = TcpStream::connect(addr).await.unwrap();
                let req = [Envelope::new(DataRequest::GetData {
                    keys: vec![Key::from("x")],
                })];
                let answered = write_frame(&mut again, &req, DEFAULT_MAX_FRAME)
                    .await
                    .is_ok()
                    && matches!(
                        read_frame::<DataReply, _>(&mut again, DEFAULT_MAX_FRAME).await,
                        Ok(Some(_))
                    );
                if answered {
                    break;
                }
                assert!(Instant::now() < deadline, "the freed slot was never reused");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[test]
    fn latency_is_the_first_round_trip_then_moves_five_percent_per_heartbeat() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut l = Latency::default();
        assert_eq!(l.seconds(), INITIAL_LATENCY_S);
        // An acknowledgement of nothing sent changes nothing.
        l.acked(t0);
        assert_eq!(l.seconds(), INITIAL_LATENCY_S);
        l.sent(t0);
        l.sent(t0 + ms(1000));
        l.acked(t0 + ms(100));
        assert!((l.seconds() - 0.1).abs() < 1e-9, "{}", l.seconds());
        l.acked(t0 + ms(1300));
        assert!(
            (l.seconds() - (0.3 * 0.05 + 0.1 * 0.95)).abs() < 1e-9,
            "{}",
            l.seconds()
        );
    }

    #[test]
    fn unacknowledged_heartbeats_are_remembered_up_to_a_limit() {
        let t0 = Instant::now();
        let mut l = Latency::default();
        for i in 0..(UNACKED_HEARTBEATS as u64 + 10) {
            l.sent(t0 + Duration::from_secs(i));
        }
        assert_eq!(l.sent.len(), UNACKED_HEARTBEATS);
        // The oldest were dropped: the first acknowledgement matches heartbeat 10.
        l.acked(t0 + Duration::from_secs(10) + Duration::from_millis(5));
        assert!((l.seconds() - 0.005).abs() < 1e-9, "{}", l.seconds());
    }
}
