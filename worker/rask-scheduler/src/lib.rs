//! The scheduler: an I/O-free state machine ([`state`]) inside a thin tokio layer ([`server`]),
//! plus Dask's HTTP API and Prometheus metrics ([`http`]).
//!
//! The HTTP side never touches the state directly: it sends a [`Request`] to the scheduler's event
//! loop through a [`SchedulerHandle`] and awaits the answer, so every answer is a consistent view.

pub mod adaptive;
pub mod dashboard;
mod follow;
pub mod http;
mod metrics;
pub mod server;
mod small;
pub mod state;
mod table;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use dashboard::feed::{Cursor, Update};

/// What the HTTP API asks of the scheduler's event loop.
#[derive(Debug)]
pub enum Request {
    Snapshot(oneshot::Sender<Snapshot>),
    /// A snapshot for a Prometheus scrape: as `Snapshot`, and the longest tick since the last
    /// scrape starts over (Dask resets it when scraped).
    Metrics(oneshot::Sender<Snapshot>),
    /// The dashboard page's next update, from what it was sent before; with the adaptive target
    /// if `with_target`.
    Dashboard {
        cursor: Cursor,
        with_target: bool,
        reply: oneshot::Sender<Update>,
    },
    /// Retire workers (move their data to others, then close them); answered once done.
    Retire {
        selector: RetireSelector,
        reply: oneshot::Sender<Vec<RetiredWorker>>,
    },
}

/// Which workers `retire_workers` should retire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RetireSelector {
    /// Any `n` workers, the ones holding least data first (Dask's `{"n": k}`).
    Count(usize),
    /// These workers, by address (`tcp://…`) or by name (Dask's `{"workers": [...]}`).
    Workers(Vec<String>),
}

/// The scheduler's event loop went away (it is shutting down).
#[derive(Debug, thiserror::Error)]
#[error("the scheduler is shutting down")]
pub struct SchedulerGone;

/// A cheap, cloneable way to ask the scheduler's event loop for things.
#[derive(Clone, Debug)]
pub struct SchedulerHandle {
    tx: mpsc::UnboundedSender<Request>,
}

impl SchedulerHandle {
    pub fn new(tx: mpsc::UnboundedSender<Request>) -> Self {
        SchedulerHandle { tx }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, SchedulerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Snapshot(reply))
            .map_err(|_| SchedulerGone)?;
        rx.await.map_err(|_| SchedulerGone)
    }

    /// A snapshot for `/metrics`; see [`Request::Metrics`].
    pub async fn metrics_snapshot(&self) -> Result<Snapshot, SchedulerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Metrics(reply))
            .map_err(|_| SchedulerGone)?;
        rx.await.map_err(|_| SchedulerGone)
    }

    pub async fn dashboard(
        &self,
        cursor: Cursor,
        with_target: bool,
    ) -> Result<Update, SchedulerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Dashboard {
                cursor,
                with_target,
                reply,
            })
            .map_err(|_| SchedulerGone)?;
        rx.await.map_err(|_| SchedulerGone)
    }

    pub async fn retire(
        &self,
        selector: RetireSelector,
    ) -> Result<Vec<RetiredWorker>, SchedulerGone> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Retire { selector, reply })
            .map_err(|_| SchedulerGone)?;
        rx.await.map_err(|_| SchedulerGone)
    }
}

/// A consistent view of the scheduler, for the HTTP API and metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// `tcp://host:port` of the scheduler.
    pub address: String,
    pub workers: Vec<WorkerSnapshot>,
    pub tasks: TaskCounts,
    pub clients: usize,
    /// Workers the scheduler would like (Dask's `adaptive_target`).
    pub adaptive_target: usize,
    /// Seconds since the epoch since when the scheduler has had no work, or `None` while busy.
    pub idle_since: Option<f64>,
    /// Tasks forgotten (released by every client and freed) since start.
    pub tasks_forgotten_total: u64,
    /// Tasks whose worker died while they ran, since start.
    pub tasks_suspicious_total: u64,
    /// Bytes of results transferred between workers, since start.
    pub transfer_bytes_total: u64,
    /// Task executions that produced a result, since start (recomputations count again).
    pub tasks_computed_total: u64,
    /// Tasks sent to a worker ahead of their inputs, to run there as soon as those finish there
    /// (speculative assignment), since start.
    pub tasks_speculated_total: u64,
    /// Workers removed because nothing came from them for their TTL, since start.
    pub workers_timed_out_total: u64,
    /// How long those workers had been silent when removed, summed (the TTL plus how late the
    /// scheduler noticed), since start.
    pub workers_timed_out_silence_seconds_total: f64,
    /// Seconds since the epoch when the scheduler started.
    pub started_at: f64,
    /// Client connections registered and closed, since start.
    pub client_connections_added_total: u64,
    pub client_connections_removed_total: u64,
    /// Workers registered and removed (lost, closed or retired), since start.
    pub workers_added_total: u64,
    pub workers_removed_total: u64,
    /// Task groups with tasks the scheduler knows (see `state::group_of`).
    pub task_groups: usize,
    /// Every task prefix seen since start, by name.
    pub prefixes: Vec<PrefixSnapshot>,
    /// Measurements of the event loop's responsiveness (filled in by the event loop).
    pub ticks: TickSnapshot,
    /// The scheduler's monotonic clock when the snapshot was taken: seconds since it started
    /// (filled in by the event loop; Dask's `dask_scheduler_last_time`).
    pub monotonic_s: f64,
}

/// What the scheduler knows of one task prefix.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PrefixSnapshot {
    pub name: String,
    /// Seconds its tasks ran, since start.
    pub compute_seconds: f64,
    /// Seconds workers spent fetching its tasks' inputs from peers, since start.
    pub transfer_seconds: f64,
    /// Bytes of its results in memory now (each result once).
    pub nbytes_in_memory: u64,
    /// Times a worker died while running one of its tasks, since start.
    pub suspicious: u64,
    /// Transitions of its tasks into each state, by Dask's state name (`released`, `waiting`,
    /// `no-worker`, `queued`, `processing`, `memory`, `erred`, `forgotten`), since start; states
    /// never entered are left out, as Dask does.
    pub state_totals: Vec<(&'static str, u64)>,
}

/// The event loop's ticks (see [`rask_core::ticks`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TickSnapshot {
    /// Ticks since the scheduler started.
    pub count: u64,
    /// The longest time between two ticks (or since the last one) since the metrics were last
    /// scraped, in seconds.
    pub max_duration_s: f64,
}

/// Tasks the scheduler knows, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TaskCounts {
    pub released: usize,
    pub waiting: usize,
    pub queued: usize,
    /// Ready, but no connected worker has their function or resources (Dask's `no-worker`).
    pub no_worker: usize,
    pub processing: usize,
    pub memory: usize,
    pub erred: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerSnapshot {
    pub name: String,
    pub address: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    /// Bytes of results this worker holds.
    pub nbytes: u64,
    /// Tasks assigned to it and not yet finished.
    pub processing: usize,
    /// Results this worker holds.
    pub keys: usize,
    /// Bytes of results it has spilled to disk (from its last heartbeat).
    pub spilled_bytes: u64,
    /// Its process's resident set, from its last heartbeat (0 when it has no memory limit).
    pub rss: u64,
    pub status: WorkerStatus,
    pub pid: u32,
    /// Seconds since its last message.
    pub last_seen_s: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    Running,
    /// Over its memory's pause threshold: it gets no new tasks until it resumes.
    Paused,
    /// Being retired: its data is moving to other workers.
    Retiring,
}

/// A worker that `retire_workers` retired, as Dask describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetiredWorker {
    pub name: String,
    pub address: String,
    pub nthreads: u32,
    pub memory_limit: u64,
}
