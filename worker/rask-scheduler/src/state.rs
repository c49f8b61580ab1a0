//! The scheduler's state machine. It does no I/O: every handler takes `&mut State`, the current
//! time and an [`Outbox`] that collects the messages to send, so it is tested without sockets.
//!
//! Task states: `Released` (known, not held, not needed now) → `Waiting` (needs results that are
//! not in memory yet) → `Queued` (ready, but no worker has room) or `NoWorker` (ready, but no
//! connected worker has its function or resources) → `Processing` (sent to a worker) → `Memory`
//! (held by one or more workers), or `Erred`. A task nobody wants and nothing depends on is
//! forgotten.
//!
//! Placement: a task runs only on a worker that registered its function (its family) and offers
//! the resources it needs, free at that moment. Ready tasks wait in one queue per *class* (function
//! and resources), so tasks waiting for a GPU never hold up tasks any worker can run.
//!
//! Recovery: when a worker is lost, the tasks it was running are rescheduled and the results only
//! it held are recomputed from their specs (lineage) if anything still needs them.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;
use std::ops::Bound;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::adaptive::{AdaptiveInput, WorkerLoad as AdaptiveLoad, adaptive_target};
use crate::dashboard::feed::{Bucket, ClusterRow, Cursor, Feed, PrefixId, Update, WorkerRow};
use crate::dashboard::graph::{GRAPH_LIMIT, NO_NODE};
use crate::follow::{self, FollowId, Follows};
use crate::small::{Holdings, Ids, Sent, TaskSet};
use crate::table::{Table, TaskId, hash_table_bytes, key_hash};
use crate::{
    PrefixSnapshot, RetireSelector, RetiredWorker, Snapshot, TaskCounts, TickSnapshot,
    WorkerSnapshot, WorkerStatus,
};
use rask_core::function::describe_families;
use rask_core::protocol::{
    ComputeTask, Envelope, FromScheduler, HeldBy, TaskError, TaskFailure, WorkerInfo, WorkerLoad,
};
use rask_core::{FuncName, Key, Resources, SmallBytes, TaskSpec};

pub type WorkerId = u64;
pub type ClientId = u64;
pub type RequestId = u64;

/// Where the state machine's messages go. The networking layer implements it over connections;
/// tests record what it is given.
pub trait Outbox {
    fn to_worker(&mut self, worker: WorkerId, msg: Envelope<FromScheduler>);
    fn to_client(&mut self, client: ClientId, msg: Envelope<FromScheduler>);
    /// A `retire_workers` request finished: these workers were retired.
    fn retire_done(&mut self, request: RequestId, retired: Vec<RetiredWorker>);
}

/// Tunables of the scheduler's policy.
#[derive(Clone, Debug)]
pub struct Config {
    /// Expected duration of a task whose prefix has never run (Dask: 0.5 s).
    pub unknown_task_duration_s: f64,
    /// Seconds of expected work a worker may have queued per thread beyond one running task; small
    /// tasks are pipelined this deep so the network round trip never idles a thread.
    pub pipeline_s: f64,
    /// A worker silent for this long is considered lost.
    pub worker_ttl_s: f64,
    /// A task whose worker died this many times while it ran is failed instead of retried.
    pub allowed_failures: u32,
    /// Seconds of work one worker should get, for `adaptive_target` (Dask: 5 s).
    pub target_duration_s: f64,
    /// A retiring worker still running tasks after this long is closed anyway; its tasks run
    /// elsewhere (its results have moved by then).
    pub retire_grace_s: f64,
    /// A task no connected worker can run (its function or resources are missing) fails after
    /// this long; `None` waits for such a worker for ever (Dask's
    /// `distributed.scheduler.no-workers-timeout`, unset by default).
    pub no_workers_timeout_s: Option<f64>,
    /// Most tasks one `update_graph` may add; a larger graph is refused whole, each wanted key
    /// failing with an error naming the limit (rask's own: Dask has no such limit).
    pub max_graph_tasks: usize,
}

/// The default of [`Config::max_graph_tasks`].
pub const DEFAULT_MAX_GRAPH_TASKS: usize = 4_000_000;

/// Workers with room from which a task without located inputs goes round robin rather than to
/// the least busy (Dask's threshold for its fast path).
const ROUND_ROBIN_FROM: usize = 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            unknown_task_duration_s: 0.5,
            pipeline_s: 0.005,
            worker_ttl_s: 30.0,
            allowed_failures: 3,
            target_duration_s: 5.0,
            retire_grace_s: 30.0,
            no_workers_timeout_s: None,
            max_graph_tasks: DEFAULT_MAX_GRAPH_TASKS,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskState {
    Released,
    Waiting,
    Queued,
    NoWorker,
    Processing,
    Memory,
    Erred,
}

impl TaskState {
    const COUNT: usize = TaskState::Erred as usize + 1;
    const ALL: [TaskState; TaskState::COUNT] = [
        TaskState::Released,
        TaskState::Waiting,
        TaskState::Queued,
        TaskState::NoWorker,
        TaskState::Processing,
        TaskState::Memory,
        TaskState::Erred,
    ];

    /// Dask's name of the state.
    pub fn dask_name(self) -> &'static str {
        match self {
            TaskState::Released => "released",
            TaskState::Waiting => "waiting",
            TaskState::Queued => "queued",
            TaskState::NoWorker => "no-worker",
            TaskState::Processing => "processing",
            TaskState::Memory => "memory",
            TaskState::Erred => "erred",
        }
    }

    /// Where the dashboard's progress panel counts a task in this state.
    fn bucket(self) -> Bucket {
        match self {
            TaskState::Released => Bucket::Released,
            TaskState::Waiting | TaskState::Queued | TaskState::NoWorker => Bucket::Waiting,
            TaskState::Processing => Bucket::Processing,
            TaskState::Memory => Bucket::Memory,
            TaskState::Erred => Bucket::Erred,
        }
    }
}

/// Where a client's follow counts a task in `now` (`None`: forgotten), given where it counted
/// it before: [`crate::follow::followed_bucket`] of the task's state.
pub(crate) fn followed_bucket(before: Option<Bucket>, now: Option<TaskState>) -> Option<Bucket> {
    follow::followed_bucket(before, follow_now(now))
}

/// A task's state as the follows see it.
fn follow_now(state: Option<TaskState>) -> follow::Now {
    match state {
        None => follow::Now::Forgotten,
        Some(TaskState::Released) => follow::Now::Released,
        Some(s) => follow::Now::In(s.bucket()),
    }
}

/// The most expected work one task charges to its worker's occupancy, in µs (71 minutes): a
/// task's charge is kept in 32 bits.
const MAX_CHARGED_US: u64 = u32::MAX as u64;

/// Levels of dependents a worker may be sent ahead of their inputs (speculative assignment): a
/// task whose inputs are all in memory on a worker or being computed there goes to that worker
/// at once, to run as soon as they finish there, with no round trip through the scheduler. A
/// chain of dependent tasks then runs on its worker while the scheduler stays this many links
/// ahead of it (issue 18: a round trip per link bound the chain's latency).
const SPECULATION_DEPTH: u8 = 8;

/// Tasks with more inputs than this are never sent ahead: where their inputs are would be looked
/// at again on each input's assignment (a sum of a million inputs would make that quadratic).
const SPECULATION_MAX_DEPS: usize = 8;

/// The worker a task was sent to, in 8 bytes where an `Option<WorkerId>` takes 16 (8 MB a
/// million tasks): the id plus one, 0 for none (ids count up from 1: `u64::MAX` is never one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct OnWorker(Option<NonZeroU64>);

impl OnWorker {
    const NONE: OnWorker = OnWorker(None);

    fn new(worker: WorkerId) -> Self {
        OnWorker(NonZeroU64::new(worker.wrapping_add(1)))
    }

    fn get(self) -> Option<WorkerId> {
        self.0.map(|n| n.get() - 1)
    }
}

/// Index of a [`Class`] in [`State::classes`].
type ClassId = u32;

/// Tasks that need the same function and resources: they wait in one queue and can run on the
/// same workers.
struct Class {
    func: FuncName,
    resources: Resources,
    /// Ready tasks of this class that no worker has taken yet, by priority (`Queued` or
    /// `NoWorker`).
    queue: BTreeMap<u64, TaskId>,
    /// Connected workers that have the function and offer the resources (in any amount).
    eligible: Vec<WorkerId>,
    /// Since when this class's waiting tasks have had no worker that can run them.
    unrunnable_since: Option<f64>,
}

impl Class {
    fn can_run(&self, w: &Worker) -> bool {
        w.functions.contains(&self.func) && w.info.resources.covers(&self.resources)
    }
}

/// A task as the scheduler keeps it: its key is the table's, its function and resources its
/// class's, so that a million of them stay small ([`State::task_bytes`]). Tasks refer to each
/// other (and workers, clients and queues to them) by [`TaskId`]: a key is looked up only when it
/// arrives in a message.
struct Task {
    /// The function's encoded arguments (inline when short, as most are).
    payload: SmallBytes,
    class: ClassId,
    /// Its key's prefix in the dashboard's progress counts.
    progress: PrefixId,
    /// Its node in the dashboard's graph panel ([`NO_NODE`] while no page watches).
    graph: u32,
    /// The results it reads, each once, in first-use order.
    deps: Box<[TaskId]>,
    dependents: TaskSet,
    state: TaskState,
    /// Dependencies not in memory yet (meaningful in `Waiting`).
    waiting_on: u32,
    who_has: Ids,
    nbytes: u64,
    processing_on: OnWorker,
    /// Expected duration charged to the worker's occupancy while processing, in µs (at most
    /// [`MAX_CHARGED_US`]).
    charged_us: u32,
    wanted_by: Ids,
    priority: u64,
    /// Boxed: most tasks never fail, and a smaller `Task` is cheaper to move in the map.
    failure: Option<Box<TaskFailure>>,
    suspicious: u32,
    /// Index of its key's prefix in [`State::prefixes`].
    prefix: u32,
    /// A client's follow counts it ([`State::follows`]).
    followed: bool,
    /// While processing: how many levels of its inputs are still being computed on its worker,
    /// where it was sent ahead of them ([`SPECULATION_DEPTH`]); 0 once its inputs are in memory.
    ahead: u8,
    /// Open graphs sent in parts that hold it ([`Parts`]): kept, though nobody wants it yet.
    /// A byte, in the struct's padding; at 255 it stays pinned for good: one result kept too
    /// long rather than let go while an open graph may still need it.
    pins: u8,
}

struct Worker {
    info: WorkerInfo,
    /// Every function of the families it registered.
    functions: FxHashSet<FuncName>,
    /// Resources held by the tasks it is running.
    used: Resources,
    status: WorkerStatus,
    processing: FxHashSet<TaskId>,
    /// The tasks sent to it, in order: where its reports are looked for first.
    sent: Sent,
    occupancy_us: u64,
    /// The results it holds (their tasks' `who_has` name it).
    has_what: Holdings,
    /// On [`State::compact_due`]: `has_what` is to be compacted at the next settle.
    compact_due: bool,
    nbytes: u64,
    last_seen: f64,
    load: WorkerLoad,
}

/// What the scheduler knows of one task prefix (the part of a key before its first `-`), kept
/// for as long as the scheduler runs, as Dask keeps its task prefixes. Plain numbers, updated
/// where tasks change state and read only when metrics are scraped.
struct PrefixStats {
    name: String,
    /// Exponentially weighted average duration, µs.
    avg_us: Option<f64>,
    /// Seconds its tasks ran, since start.
    compute_s: f64,
    /// Seconds workers spent fetching its tasks' inputs from peers, since start.
    transfer_s: f64,
    /// Bytes of its results in memory now, each result once however many workers hold it.
    nbytes_in_memory: u64,
    /// Transitions of its tasks into each state (`TaskState as usize`; the last slot counts
    /// tasks forgotten), since start.
    state_totals: [u64; TaskState::COUNT + 1],
    /// Times a worker died while running one of its tasks, since start.
    suspicious: u64,
}

impl PrefixStats {
    fn new(name: &str) -> Self {
        PrefixStats {
            name: name.to_owned(),
            avg_us: None,
            compute_s: 0.0,
            transfer_s: 0.0,
            nbytes_in_memory: 0,
            state_totals: [0; TaskState::COUNT + 1],
            suspicious: 0,
        }
    }
}

/// The slot of [`PrefixStats::state_totals`] that counts forgotten tasks.
const FORGOTTEN: usize = TaskState::COUNT;

/// A key's task group: the key without its last `-` part (`inc-3f2a-17` → `inc-3f2a`), which
/// for rask's keys (`prefix-token-counter`) is every task of one prefix made by one client
/// process, as Dask's groups gather a collection's chunks. A key without `-` is its own group.
pub(crate) fn group_of(key: &str) -> &str {
    match key.rfind('-') {
        Some(i) if i > 0 => &key[..i],
        _ => key,
    }
}

struct Retirement {
    request: RequestId,
    started: f64,
    workers: Vec<WorkerId>,
    retired: Vec<RetiredWorker>,
}

/// The whole scheduler state.
pub struct State {
    config: Config,
    tasks: Table<Task>,
    workers: BTreeMap<WorkerId, Worker>,
    /// The running workers that can take one more task ([`State::has_room`]), kept up to date
    /// wherever a worker's tasks or status change, so that placing a task looks at these rather
    /// than at every worker (issue 18: a scan of 1,000 workers per task bound the scheduler).
    room: BTreeSet<WorkerId>,
    /// The worker the last task without located inputs went to: the next such task goes to the
    /// next worker with room after it (Dask's round robin for large clusters).
    rr_cursor: WorkerId,
    /// The results a task reads in the order its function sees them, for the few tasks where
    /// that differs from its `deps` (an input repeats); kept here rather than in every task.
    repeated_inputs: FxHashMap<TaskId, Box<[Key]>>,
    /// The tasks each client holds (their tasks' `wanted_by` name it).
    clients: FxHashMap<ClientId, Holdings>,
    /// Workers whose lists of results are stale enough to compact: done once when the event
    /// that dropped them is settled, not at each halving while a release of a million results
    /// goes on (each compaction sorts and checks every entry).
    compact_due: Vec<WorkerId>,
    /// The graphs clients are sending in parts, until their last part arrives.
    parts: FxHashMap<ClientId, Parts>,
    /// Tasks by function and resources, each with its queue of ready tasks.
    classes: Vec<Class>,
    class_ids: FxHashMap<(FuncName, String), ClassId>,
    /// Every task prefix seen, in order of first appearance; tasks refer to theirs by index.
    prefixes: Vec<PrefixStats>,
    prefix_ids: FxHashMap<String, u32>,
    /// Tasks known per task group ([`group_of`]); a group leaves with its last task.
    groups: FxHashMap<Box<str>, u32>,
    /// Tasks per state, indexed by `TaskState as usize`.
    counts: [usize; TaskState::COUNT],
    retirements: Vec<Retirement>,
    /// Keys being copied off retiring workers, and the worker copying each.
    replicating: FxHashMap<TaskId, WorkerId>,
    next_priority: u64,
    idle_since: Option<f64>,
    /// Inputs of finished tasks that may no longer be needed, freed by [`State::settle`] once
    /// the answers to the current events are on their way: a finished reduction can leave
    /// thousands of inputs to free, and its client should not wait for that.
    releasable: Vec<TaskId>,
    /// The tasks a graph sent in parts pinned, let go of by [`State::settle`] once its last
    /// part is in: a million of them to look at, after the graph's first tasks are on their way
    /// (its root, waiting for the last of its inputs, among them).
    unpin_due: Vec<TaskId>,
    forgotten_total: u64,
    suspicious_total: u64,
    transfer_bytes_total: u64,
    computed_total: u64,
    /// Tasks sent to a worker ahead of their inputs (speculative assignment), since start.
    speculated_total: u64,
    /// Workers removed for silence (no message for their TTL), and how long they had been
    /// silent when removed, summed.
    timed_out_total: u64,
    timed_out_silence_s_total: f64,
    /// Client connections registered and closed, since start.
    clients_added_total: u64,
    clients_removed_total: u64,
    /// Workers registered and removed (lost, closed or retired), since start.
    workers_added_total: u64,
    workers_removed_total: u64,
    started_at: f64,
    address: String,
    /// What the dashboard shows: the task stream and per-prefix progress.
    feed: Feed,
    /// Clients' follows of keys, reported by [`State::send_progress`].
    follows: Follows,
}

/// A worker's report that a task finished.
#[derive(Clone, Debug)]
pub struct Finished {
    pub key: Key,
    pub nbytes: u64,
    pub duration_us: u64,
    /// Microseconds the worker spent fetching the task's inputs from peers before running it.
    pub transfer_us: u64,
    /// The encoded result, when the worker sent it along (a client waits for it).
    pub data: Option<Bytes>,
}

/// A graph a client is sending in parts ([`State::update_graph_part`]), between its first part
/// and its last. Its tasks run as their parts arrive, while the client encodes the next: the
/// tasks no part wants yet (a sum's million inputs, before the sum arrives) are pinned, kept
/// but announced to nobody, until the last part says which keys the client holds.
#[derive(Debug, Default)]
struct Parts {
    /// Tasks received so far, for [`Config::max_graph_tasks`] across the parts.
    tasks: u64,
    /// The tasks this graph pinned (each once).
    pinned: Vec<TaskId>,
    /// Why the graph was refused: its later parts are refused too, each wanted key failing.
    refused: Option<TaskError>,
}

/// Where a released task's inputs stand ([`State::look_at_inputs`]).
#[derive(Default)]
struct Inputs {
    /// Inputs not in memory yet.
    waiting_on: u32,
    /// The failure of an input that failed.
    failed: Option<TaskFailure>,
    /// Released inputs, to compute.
    to_compute: Vec<TaskId>,
}

/// The keys a client's graph ([`State::update_graph`]) wants held: those of its first `tasks`
/// tasks (a `map` wants all it sends), then `keys`.
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    pub tasks: usize,
    pub keys: Vec<Key>,
}

impl Wanted {
    pub fn new(tasks: usize, keys: Vec<Key>) -> Self {
        Wanted { tasks, keys }
    }

    /// Only `keys` (none of the graph's tasks by place).
    pub fn keys(keys: Vec<Key>) -> Self {
        Wanted { tasks: 0, keys }
    }

    /// Every wanted key, the tasks' first.
    fn all_keys(self, tasks: &[TaskSpec]) -> impl Iterator<Item = Key> {
        let by_place: Vec<Key> = tasks
            .iter()
            .take(self.tasks)
            .map(|t| t.key.clone())
            .collect();
        by_place.into_iter().chain(self.keys)
    }
}

/// Why a worker could not register.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegisterError {
    #[error("a worker named {0:?} is already connected")]
    DuplicateName(String),
}

impl State {
    pub fn new(config: Config, address: String, now: f64) -> Self {
        State {
            config,
            tasks: Table::default(),
            repeated_inputs: FxHashMap::default(),
            workers: BTreeMap::new(),
            room: BTreeSet::new(),
            rr_cursor: WorkerId::default(),
            clients: FxHashMap::default(),
            compact_due: Vec::new(),
            parts: FxHashMap::default(),
            classes: Vec::new(),
            class_ids: FxHashMap::default(),
            prefixes: Vec::new(),
            prefix_ids: FxHashMap::default(),
            groups: FxHashMap::default(),
            counts: [0; TaskState::COUNT],
            retirements: Vec::new(),
            replicating: FxHashMap::default(),
            next_priority: 0,
            idle_since: Some(now),
            releasable: Vec::new(),
            unpin_due: Vec::new(),
            forgotten_total: 0,
            suspicious_total: 0,
            transfer_bytes_total: 0,
            computed_total: 0,
            speculated_total: 0,
            timed_out_total: 0,
            timed_out_silence_s_total: 0.0,
            clients_added_total: 0,
            clients_removed_total: 0,
            workers_added_total: 0,
            workers_removed_total: 0,
            started_at: now,
            address,
            feed: Feed::default(),
            follows: Follows::default(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The state of a task, or `None` when it is unknown or forgotten.
    pub fn task_state(&self, key: &Key) -> Option<TaskState> {
        self.state_of(self.tasks.id(key)?)
    }

    /// Workers holding `key`'s result, by id.
    pub fn who_has(&self, key: &Key) -> Vec<WorkerId> {
        self.tasks
            .id(key)
            .and_then(|id| self.tasks.get(id))
            .map(|t| t.who_has.to_vec())
            .unwrap_or_default()
    }

    pub fn worker_ids(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }

    pub fn count(&self, state: TaskState) -> usize {
        self.counts[state as usize]
    }

    // ----- clients -------------------------------------------------------------------------

    /// Whether `worker` is registered (not removed).
    pub fn has_worker(&self, worker: WorkerId) -> bool {
        self.workers.contains_key(&worker)
    }

    pub fn add_client(&mut self, client: ClientId) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.clients.entry(client) {
            e.insert(Holdings::default());
            self.clients_added_total += 1;
        }
    }

    pub fn remove_client(&mut self, client: ClientId, now: f64, out: &mut impl Outbox) {
        if !self.follows.is_empty() {
            let unfollowed = self.follows.remove_client(client);
            self.unmark_followed(unfollowed);
        }
        if let Some(open) = self.parts.remove(&client) {
            // Its graph's last part will not come.
            self.unpin(open.pinned, now, out);
        }
        if let Some(held) = self.clients.remove(&client) {
            self.clients_removed_total += 1;
            let tasks = &self.tasks;
            let held = held.ids(|s| wanted_at(tasks, s, client));
            self.unwant(client, held, now, out);
            self.check_retirements(now, out);
        }
    }

    /// A client adds tasks (in priority order) and says which keys it holds.
    pub fn update_graph(
        &mut self,
        client: ClientId,
        tasks: Vec<TaskSpec>,
        wanted: Wanted,
        now: f64,
        out: &mut impl Outbox,
    ) {
        self.update_graph_part(client, tasks, wanted, 0, now, out);
    }

    /// One part of a client's graph, with at least `more` of its tasks still to come in later
    /// parts (0: this is the last part, or the whole graph). A part's tasks (in priority order,
    /// after the parts before) are added and start at once; those it does not want are pinned
    /// ([`Parts`]) until the last part, and then dropped if nothing needs them.
    pub fn update_graph_part(
        &mut self,
        client: ClientId,
        tasks: Vec<TaskSpec>,
        wanted: Wanted,
        more: u64,
        now: f64,
        out: &mut impl Outbox,
    ) {
        let mut open = self.parts.remove(&client).unwrap_or_default();
        if let Some(error) = open.refused.take() {
            refuse_graph(client, wanted.all_keys(&tasks), &error, out);
            if more > 0 {
                open.refused = Some(error);
                self.parts.insert(client, open);
            }
            return;
        }
        let max = self.config.max_graph_tasks;
        let total = open
            .tasks
            .saturating_add(tasks.len() as u64)
            .saturating_add(more);
        let error = if total > max as u64 {
            // Refused before anything more is added: the client sees why on every key it
            // wanted, in this part and the parts after it.
            tracing::warn!(
                client,
                tasks = total,
                max,
                "refusing a graph with more tasks than the limit"
            );
            Some(TaskError::GraphTooLarge {
                tasks: total,
                max: max as u64,
            })
        } else if !self.tasks.has_room_for(tasks.len()) {
            // Ids number the table's slots in 32 bits: four billion tasks at once.
            Some(TaskError::GraphTooLarge {
                tasks: total,
                max: (u32::MAX as usize).saturating_sub(self.tasks.len()) as u64,
            })
        } else {
            None
        };
        if let Some(error) = error {
            refuse_graph(client, wanted.all_keys(&tasks), &error, out);
            self.unpin(std::mem::take(&mut open.pinned), now, out);
            if more > 0 {
                open.refused = Some(error);
                self.parts.insert(client, open);
            }
            return;
        }
        open.tasks = open.tasks.saturating_add(tasks.len() as u64);
        // Before the last part, what this part does not want is pinned.
        let pin_from = if more > 0 { wanted.tasks } else { usize::MAX };
        let mut pinned_now: Vec<TaskId> = Vec::new();
        let mut unknown_deps: Vec<(TaskId, Key)> = Vec::new();
        // Room for the rest of the graph as announced (within the limit checked above): at its
        // first part the table grows once for all of it, not once per doubling as parts arrive.
        let rest = (tasks.len() as u64).saturating_add(more);
        self.tasks
            .reserve(usize::try_from(rest).unwrap_or(tasks.len()));
        // Graphs come in runs of one prefix and one group: each is looked up once per run.
        let mut run_prefix: Option<(u32, PrefixId)> = None;
        let mut run_group: Option<(Key, u32)> = None;
        // And of one function: its class (of no resources) too.
        let mut run_class: Option<(FuncName, ClassId)> = None;
        self.feed.progress.begin_graph();
        // Nothing pending before these tasks: they start a new graph on the graph panel.
        let new_graph = self.idle_since.is_some();
        // Each spec's task (new or known), so that a wanted key that is the spec's at the same
        // place (all of them, for a `map`) needs no lookup.
        // Which are new, and later which the client wants afresh, are marked in the same list:
        // no lists of the new ids and the fresh ones beside it (at a million tasks they were
        // 8 MB each, all three held at once at the scheduler's peak, and freed into its heap).
        let mut spec_ids: Vec<Option<Placed>> = Vec::with_capacity(tasks.len());
        // The part's keys are looked up first, all together (see `Table::find_batch`).
        let found = self.tasks.find_batch(tasks.iter().map(|spec| &spec.key));
        for (spec, found) in tasks.into_iter().zip(found) {
            // One lookup for a new key: its hash and place are kept for the insert.
            let pin = spec_ids.len() >= pin_from;
            let found = found.or_else(|vacant| self.tasks.find_again(&spec.key, vacant));
            let vacant = match found {
                Ok(id) => {
                    if pin && let Some(t) = self.tasks.get_mut(id) {
                        // Kept for the later parts, whoever holds it now.
                        t.pins = t.pins.saturating_add(1);
                        pinned_now.push(id);
                    }
                    spec_ids.push(Some(Placed::known(id)));
                    continue;
                }
                Err(vacant) => vacant,
            };
            let (deps, unknown) = self.inputs_of(&spec.inputs);
            let key = spec.key.clone();
            self.next_priority += 1;
            let class = match &run_class {
                Some((func, class)) if spec.resources.is_empty() && *func == spec.func => *class,
                _ => {
                    let class = self.class_of(&spec, now);
                    run_class = spec
                        .resources
                        .is_empty()
                        .then(|| (spec.func.clone(), class));
                    class
                }
            };
            let (prefix, progress) = match run_prefix {
                Some(ids)
                    if self
                        .prefixes
                        .get(ids.0 as usize)
                        .is_some_and(|p| p.name == key.prefix()) =>
                {
                    ids
                }
                _ => (
                    self.prefix_id(key.prefix()),
                    self.feed.progress.intern(key.prefix()),
                ),
            };
            run_prefix = Some((prefix, progress));
            self.feed.progress.added(progress);
            match &mut run_group {
                Some((first, n)) if group_of(first.as_str()) == group_of(key.as_str()) => *n += 1,
                _ => {
                    if let Some((first, n)) = run_group.replace((key.clone(), 1)) {
                        self.join_group(first.as_str(), n);
                    }
                }
            }
            // `deps` removes repeats from the inputs: as long, they are the inputs.
            let inputs = (spec.inputs.len() != deps.len()).then(|| spec.inputs.into_boxed_slice());
            let task = Task {
                payload: spec.payload,
                class,
                progress,
                graph: NO_NODE,
                deps: deps.into_boxed_slice(),
                dependents: TaskSet::default(),
                state: TaskState::Released,
                waiting_on: 0,
                who_has: Ids::default(),
                nbytes: 0,
                processing_on: OnWorker::NONE,
                charged_us: 0,
                wanted_by: Ids::default(),
                priority: self.next_priority,
                failure: None,
                suspicious: 0,
                prefix,
                followed: false,
                ahead: 0,
                pins: u8::from(pin),
            };
            let Some(id) = self.tasks.insert_vacant(vacant, key, task) else {
                spec_ids.push(None);
                continue; // not reached: the room was checked above
            };
            spec_ids.push(Some(Placed::new(id)));
            if pin {
                pinned_now.push(id);
            }
            if let Some(inputs) = inputs {
                self.repeated_inputs.insert(id, inputs);
            }
            self.counts[TaskState::Released as usize] += 1;
            let deps = self.take_deps(id);
            for &d in deps.iter() {
                if let Some(dt) = self.tasks.get_mut(d) {
                    dt.dependents.insert(id);
                }
            }
            self.put_deps(id, deps);
            unknown_deps.extend(unknown.into_iter().map(|d| (id, d)));
        }
        if let Some((first, n)) = run_group {
            self.join_group(first.as_str(), n);
        }
        if self.feed.graph.active() {
            let new_ids: Vec<TaskId> = Placed::new_ids(&spec_ids).collect();
            self.graph_record(&new_ids, new_graph);
        }
        for (task, dep) in unknown_deps {
            let Some(key) = self.tasks.key(task).cloned() else {
                continue;
            };
            let failure = TaskFailure {
                key,
                error: TaskError::UnknownInput { input: dep },
            };
            self.fail_task(task, failure, out);
        }
        self.clients.entry(client).or_default();
        let mut fresh = Vec::new();
        // The graph's own wanted tasks need no lookup: their places are known.
        for placed in spec_ids.iter_mut().take(wanted.tasks).flatten() {
            placed.fresh = self.want(client, placed.id);
        }
        for key in wanted.keys {
            match self.tasks.id(&key) {
                Some(id) => {
                    if self.want(client, id) {
                        fresh.push(id);
                    }
                }
                None => {
                    let failure = TaskFailure {
                        key: key.clone(),
                        error: TaskError::UnknownKey,
                    };
                    out.to_client(
                        client,
                        FromScheduler::KeyErred {
                            key,
                            failure: Box::new(failure),
                        }
                        .into(),
                    );
                }
            }
        }
        let fresh_in_graph = spec_ids
            .iter()
            .take(wanted.tasks)
            .flatten()
            .filter(|p| p.fresh)
            .map(|p| p.id);
        for id in fresh_in_graph.chain(fresh) {
            let Some((key, t)) = self.tasks.entry(id) else {
                continue;
            };
            match t.state {
                TaskState::Memory => {
                    let msg = FromScheduler::KeyInMemory {
                        key: key.clone(),
                        nbytes: t.nbytes,
                        who_has: self.addresses(&t.who_has),
                    };
                    out.to_client(client, msg.into());
                }
                TaskState::Erred => {
                    let failure = t
                        .failure
                        .as_deref()
                        .cloned()
                        .unwrap_or_else(|| TaskFailure {
                            key: key.clone(),
                            error: TaskError::Kernel(rask_core::KernelError::failed("failed")),
                        });
                    let key = key.clone();
                    out.to_client(
                        client,
                        FromScheduler::KeyErred {
                            key,
                            failure: Box::new(failure),
                        }
                        .into(),
                    );
                }
                TaskState::Released => self.compute(id, now, out),
                _ => {}
            }
        }
        if more > 0 {
            // The pinned tasks run now, each after its inputs (earlier in this part or before).
            for &id in &pinned_now {
                self.compute(id, now, out);
            }
            open.pinned.extend(pinned_now);
            self.parts.insert(client, open);
            self.update_idle(now);
            return;
        }
        // Tasks sent along that nothing wants are dropped rather than kept forever; so are the
        // earlier parts' tasks that the graph turned out not to need.
        let mut frees = Frees::default();
        for id in Placed::new_ids(&spec_ids) {
            if self.state_of(id) == Some(TaskState::Released) {
                self.release_unneeded(id, &mut frees);
            }
        }
        frees.send(out);
        self.unpin_due.append(&mut open.pinned);
        self.update_idle(now);
    }

    /// A graph sent in parts lets go of the tasks it pinned; those nothing else needs are freed.
    fn unpin(&mut self, pinned: Vec<TaskId>, now: f64, out: &mut impl Outbox) {
        if pinned.is_empty() {
            return;
        }
        let mut frees = Frees::default();
        self.unpin_into(pinned, &mut frees);
        frees.send(out);
        self.update_idle(now);
    }

    fn unpin_into(&mut self, pinned: Vec<TaskId>, frees: &mut Frees) {
        for id in pinned {
            let Some(t) = self.tasks.get_mut(id) else {
                continue;
            };
            if t.pins == u8::MAX {
                continue;
            }
            t.pins = t.pins.saturating_sub(1);
            if t.pins == 0 {
                self.release_unneeded(id, frees);
            }
        }
    }

    /// The tasks `inputs` name, each once in first-use order, and the keys of those unknown
    /// (each once). A task's inputs are mostly the tasks made just before it in the order they
    /// were made (a sum's million), which took consecutive slots: each is looked for beside the
    /// last one found first ([`Table::id_near`]), and repeats are found among the ids, not by
    /// hashing the keys again.
    fn inputs_of(&self, inputs: &[Key]) -> (Vec<TaskId>, Vec<Key>) {
        let mut deps: Vec<TaskId> = Vec::with_capacity(inputs.len());
        let mut unknown: Vec<Key> = Vec::new();
        let mut near = 0;
        for k in inputs {
            match self.tasks.id_next(k, &mut near) {
                Some(id) => deps.push(id),
                None => unknown.push(k.clone()),
            }
        }
        (unique_in_order(deps), unique_in_order(unknown))
    }

    /// A client dropped its hold on keys.
    pub fn release_keys(
        &mut self,
        client: ClientId,
        keys: &[Key],
        now: f64,
        out: &mut impl Outbox,
    ) {
        // A client releases its futures in the order it made them (a `map`'s, a gather's), the
        // order their tasks took their slots: each key is looked for after the last one first.
        let mut near = 0;
        let ids: Vec<TaskId> = keys
            .iter()
            .filter_map(|k| self.tasks.id_next(k, &mut near))
            .collect();
        self.unwant(client, ids, now, out);
        self.check_retirements(now, out);
    }

    /// A client follows `keys` and the unfinished tasks they depend on, as its follow `id`
    /// (added to what that follow counts already). Its first report goes out with the next
    /// [`State::send_progress`], naming the keys the scheduler does not know.
    pub fn follow_keys(&mut self, client: ClientId, id: u64, keys: Vec<Key>) {
        let follow: FollowId = (client, id);
        self.follows.begin(follow);
        let mut stack: Vec<TaskId> = Vec::with_capacity(keys.len());
        for k in keys {
            match self.tasks.id(&k) {
                Some(id) => stack.push(id),
                None => self.follows.unknown(follow, k),
            }
        }
        // Depth first, from the first key given: prefixes appear in the order of the keys.
        stack.reverse();
        while let Some(id) = stack.pop() {
            let Some(k) = self.tasks.key(id) else {
                continue;
            };
            if self.follows.counts_key(follow, k) {
                continue;
            }
            let k = k.clone();
            let Some(t) = self.tasks.get_mut(id) else {
                continue;
            };
            let Some(bucket) = followed_bucket(None, Some(t.state)) else {
                continue;
            };
            t.followed = true;
            // The inputs of a finished task are no part of its progress.
            if !matches!(bucket, Bucket::Memory | Bucket::Erred) {
                stack.extend(t.deps.iter().rev().copied());
            }
            self.follows.add(follow, &k, bucket);
        }
    }

    /// A client stops following its follow `id`.
    pub fn unfollow(&mut self, client: ClientId, id: u64) {
        let unfollowed = self.follows.remove((client, id));
        self.unmark_followed(unfollowed);
    }

    fn unmark_followed(&mut self, keys: Vec<Key>) {
        for k in keys {
            if let Some(t) = self.tasks.id(&k).and_then(|id| self.tasks.get_mut(id)) {
                t.followed = false;
            }
        }
    }

    /// Sends the follows' reports that are due at `now` (see [`crate::follow`]): called after
    /// each batch of events and on a short timer, so a report waits at most for the interval.
    pub fn send_progress(&mut self, now: f64, out: &mut impl Outbox) {
        if self.follows.is_empty() {
            return;
        }
        for (client, report) in self.follows.due(now) {
            out.to_client(client, FromScheduler::Progress(report).into());
        }
    }

    /// Whether a client follows anything (the event loop then runs its progress timer).
    pub fn has_follows(&self) -> bool {
        !self.follows.is_empty()
    }

    fn unwant(
        &mut self,
        client: ClientId,
        ids: impl IntoIterator<Item = TaskId>,
        now: f64,
        out: &mut impl Outbox,
    ) {
        let mut frees = Frees::default();
        for id in ids {
            let Some(t) = self.tasks.get_mut(id) else {
                continue;
            };
            if t.wanted_by.contains(&client) {
                t.wanted_by.retain(|c| *c != client);
                if let Some(held) = self.clients.get_mut(&client) {
                    held.removed();
                }
            }
            self.release_unneeded(id, &mut frees);
        }
        // Compacted once, after the last: a client releasing a million futures would have its
        // list sorted and checked at every halving.
        if let Some(held) = self.clients.get_mut(&client)
            && held.stale_enough()
        {
            let tasks = &self.tasks;
            held.compact(|s| wanted_at(tasks, s, client));
        }
        frees.send(out);
        self.update_idle(now);
    }

    /// `client` holds `id` (added to its task's `wanted_by`); whether it did not before.
    fn want(&mut self, client: ClientId, id: TaskId) -> bool {
        let Some(t) = self.tasks.get_mut(id) else {
            return false;
        };
        if t.wanted_by.contains(&client) {
            return false;
        }
        t.wanted_by.insert(client);
        if let Some(held) = self.clients.get_mut(&client) {
            held.added(id);
        }
        true
    }

    // ----- workers -------------------------------------------------------------------------

    pub fn add_worker(
        &mut self,
        id: WorkerId,
        info: WorkerInfo,
        now: f64,
        out: &mut impl Outbox,
    ) -> Result<(), RegisterError> {
        if self.workers.values().any(|w| w.info.name == info.name) {
            return Err(RegisterError::DuplicateName(info.name));
        }
        tracing::info!(
            name = %info.name,
            address = %info.address,
            nthreads = info.nthreads,
            families = %describe_families(&info.families),
            resources = %info.resources,
            "worker registered"
        );
        let functions = info
            .families
            .iter()
            .flat_map(|f| f.functions.iter().map(|n| FuncName::new(n.as_str())))
            .collect();
        self.workers.insert(
            id,
            Worker {
                info,
                functions,
                used: Resources::none(),
                status: WorkerStatus::Running,
                processing: FxHashSet::default(),
                sent: Sent::default(),
                occupancy_us: 0,
                has_what: Holdings::default(),
                compact_due: false,
                nbytes: 0,
                last_seen: now,
                load: WorkerLoad::default(),
            },
        );
        self.refresh_room(id);
        self.workers_added_total += 1;
        // The welcome goes first: queued tasks may be sent to the new worker right below.
        out.to_worker(
            id,
            FromScheduler::Welcome {
                id,
                families: Vec::new(),
            }
            .into(),
        );
        self.workers_changed(now);
        self.drain_queue(now, out);
        Ok(())
    }

    pub fn heartbeat(&mut self, worker: WorkerId, load: WorkerLoad, now: f64) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
            w.load = load;
        }
    }

    /// A worker paused (over its memory's pause threshold) or resumed.
    pub fn set_paused(&mut self, worker: WorkerId, paused: bool, now: f64, out: &mut impl Outbox) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.last_seen = now;
        match (w.status, paused) {
            (WorkerStatus::Running, true) => {
                tracing::warn!(worker = %w.info.name, "worker paused: its memory is over the pause threshold");
                w.status = WorkerStatus::Paused;
                self.refresh_room(worker);
            }
            (WorkerStatus::Paused, false) => {
                tracing::info!(worker = %w.info.name, "worker resumed");
                w.status = WorkerStatus::Running;
                self.refresh_room(worker);
                self.drain_queue(now, out);
            }
            // A retiring worker stays retiring.
            _ => {}
        }
    }

    /// Any message from a worker shows it is alive.
    pub fn touch(&mut self, worker: WorkerId, now: f64) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.last_seen = now;
        }
    }

    /// The longest wait between two runs of [`State::tick`]: every second, or a tenth of the
    /// worker TTL when that is shorter (retirements and unrunnable tasks are checked then).
    pub fn tick_interval(&self) -> Duration {
        Duration::from_secs_f64((self.config.worker_ttl_s / 10.0).clamp(0.1, 1.0))
    }

    /// How long after `now` [`State::tick`] should next run: at the end of [`State::tick_interval`],
    /// or earlier when a worker's TTL runs out before then, so a silent worker is removed when
    /// its TTL is up, not up to a check's interval later. A worker's deadline only moves later
    /// (each message it sends pushes it), so a wake-up planned from an earlier deadline is never
    /// late; at worst it finds nothing to do. At least a millisecond, so clocks that disagree by
    /// a hair cannot make the loop spin.
    pub fn next_tick_in(&self, now: f64) -> Duration {
        let ttl = self.config.worker_ttl_s;
        let interval = self.tick_interval();
        let first_deadline = self
            .workers
            .values()
            .map(|w| w.last_seen + ttl)
            .min_by(f64::total_cmp);
        match first_deadline {
            Some(at) if at - now < interval.as_secs_f64() => {
                Duration::from_secs_f64((at - now).max(0.001))
            }
            _ => interval,
        }
    }

    /// Periodic housekeeping: workers silent for the TTL or longer are removed.
    pub fn tick(&mut self, now: f64, out: &mut impl Outbox) {
        let ttl = self.config.worker_ttl_s;
        let silent: Vec<(WorkerId, f64)> = self
            .workers
            .iter()
            .filter(|(_, w)| now - w.last_seen >= ttl)
            .map(|(id, w)| (*id, now - w.last_seen))
            .collect();
        for (id, silence) in silent {
            tracing::warn!(
                worker = id,
                ttl,
                silent_s = silence,
                "worker missed its heartbeats; removing it"
            );
            self.timed_out_total += 1;
            self.timed_out_silence_s_total += silence;
            out.to_worker(
                id,
                FromScheduler::Close {
                    reason: format!("no heartbeat for {ttl} s"),
                }
                .into(),
            );
            self.remove_worker(id, now, out);
        }
        // Retirements also progress on their own (e.g. after work was cancelled).
        self.check_retirements(now, out);
        self.fail_unrunnable(now, out);
        if self.feed.graph.unwatched(now) {
            let keys = self.feed.graph.stop();
            self.unlink_graph(keys);
        }
    }

    /// Fails the tasks that have waited longer than `no_workers_timeout_s` for a worker that
    /// can run them.
    fn fail_unrunnable(&mut self, now: f64, out: &mut impl Outbox) {
        let Some(timeout) = self.config.no_workers_timeout_s else {
            return;
        };
        let families = self.worker_families();
        for c in 0..self.classes.len() {
            let class = &mut self.classes[c];
            let Some(since) = class.unrunnable_since else {
                continue;
            };
            if now - since < timeout || class.queue.is_empty() {
                continue;
            }
            let error = TaskError::NoWorker {
                func: class.func.to_string(),
                resources: class.resources.to_string(),
                families: families.clone(),
            };
            let ids: Vec<TaskId> = std::mem::take(&mut class.queue).into_values().collect();
            class.unrunnable_since = None;
            tracing::warn!(tasks = ids.len(), %error, "failing tasks no worker can run");
            for id in ids {
                self.set_state(id, TaskState::Released);
                let Some(key) = self.tasks.key(id).cloned() else {
                    continue;
                };
                let failure = TaskFailure {
                    key,
                    error: error.clone(),
                };
                self.fail_task(id, failure, out);
            }
        }
        self.update_idle(now);
    }

    /// The families of the connected workers, each name and version once, sorted.
    pub fn families(&self) -> Vec<rask_core::FamilyInfo> {
        let mut all: Vec<rask_core::FamilyInfo> = Vec::new();
        for w in self.workers.values() {
            for f in &w.info.families {
                if !all.contains(f) {
                    all.push(f.clone());
                }
            }
        }
        all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        all
    }

    /// `array 0.1, seed 0.1` over every connected worker (for error messages).
    fn worker_families(&self) -> String {
        if self.workers.is_empty() {
            return "no workers connected".to_owned();
        }
        describe_families(&self.families())
    }

    /// A worker's nanny is about to kill it (its memory is over the terminate threshold): it is
    /// removed now, and `reason` is what a task that killed too many workers fails with.
    pub fn worker_killed(&mut self, name: &str, reason: String, now: f64, out: &mut impl Outbox) {
        let Some(id) = self
            .workers
            .iter()
            .find(|(_, w)| w.info.name == name)
            .map(|(id, _)| *id)
        else {
            tracing::info!(worker = name, %reason, "a nanny reports a worker killed that is not connected");
            return;
        };
        tracing::warn!(worker = name, %reason, "worker killed by its nanny");
        self.remove_worker_because(id, Some(reason), now, out);
    }

    /// A worker is gone (connection lost, timed out, or closed). Its running tasks go elsewhere;
    /// results only it held are recomputed where still needed.
    pub fn remove_worker(&mut self, id: WorkerId, now: f64, out: &mut impl Outbox) {
        self.remove_worker_because(id, None, now, out);
    }

    fn remove_worker_because(
        &mut self,
        id: WorkerId,
        reason: Option<String>,
        now: f64,
        out: &mut impl Outbox,
    ) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.room.remove(&id);
        tracing::info!(name = %w.info.name, address = %w.info.address, "worker removed");
        self.workers_removed_total += 1;
        self.workers_changed(now);
        // Tasks sent ahead of inputs still being computed there never started: the worker's
        // death is not theirs to answer for.
        let ahead: FxHashSet<TaskId> = w
            .processing
            .iter()
            .copied()
            .filter(|&t| self.tasks.get(t).is_some_and(|t| t.ahead > 0))
            .collect();
        // Results only this worker held are lost first, while the tasks it was running still
        // count as needing their inputs.
        let mut lost: Vec<TaskId> = Vec::new();
        let held = w.has_what.ids(|s| held_at(&self.tasks, s, id));
        for tid in held {
            if let Some(t) = self.tasks.get_mut(tid) {
                t.who_has.retain(|x| *x != id);
                if t.who_has.is_empty() && t.state == TaskState::Memory {
                    lost.push(tid);
                }
            }
        }
        self.replicating.retain(|_, target| *target != id);
        lost.sort_by_key(|&t| self.priority_of(t));
        for &tid in &lost {
            self.result_lost(tid, now, out);
        }
        let mut processing: Vec<TaskId> = w.processing.into_iter().collect();
        processing.sort_by_key(|&t| self.priority_of(t));
        for tid in processing {
            let Some(t) = self.tasks.get_mut(tid) else {
                continue;
            };
            if t.state != TaskState::Processing || t.processing_on.get() != Some(id) {
                continue;
            }
            t.processing_on = OnWorker::NONE;
            t.charged_us = 0;
            t.ahead = 0;
            if !ahead.contains(&tid) {
                t.suspicious += 1;
                self.suspicious_total += 1;
                if let Some(p) = self.prefixes.get_mut(t.prefix as usize) {
                    p.suspicious += 1;
                }
            }
            let suspicious = t.suspicious;
            self.set_state(tid, TaskState::Released);
            if suspicious > self.config.allowed_failures {
                let error = TaskError::KilledWorker {
                    deaths: suspicious,
                    last_worker: w.info.name.clone(),
                    reason: reason.clone(),
                };
                let Some(key) = self.tasks.key(tid).cloned() else {
                    continue;
                };
                self.fail_task(tid, TaskFailure { key, error }, out);
            } else {
                self.make_ready_or_wait(tid, now, out);
            }
        }
        self.check_retirements(now, out);
        self.drain_queue(now, out);
        self.update_idle(now);
    }

    /// A result is no longer held anywhere: recompute it if anything needs it.
    fn result_lost(&mut self, id: TaskId, now: f64, out: &mut impl Outbox) {
        let Some(t) = self.tasks.get(id) else { return };
        if t.state != TaskState::Memory {
            return;
        }
        let needed = self.is_needed(id);
        let dependents: Vec<TaskId> = t.dependents.iter().collect();
        self.set_state(id, TaskState::Released);
        // Dependents waiting on it now wait one more; ready ones go back to waiting.
        let mut requeue = Vec::new();
        for &d in &dependents {
            match self.state_of(d) {
                Some(TaskState::Waiting) => {
                    if let Some(dt) = self.tasks.get_mut(d) {
                        dt.waiting_on += 1;
                    }
                }
                Some(TaskState::Queued | TaskState::NoWorker) => {
                    self.set_state(d, TaskState::Released);
                    requeue.push(d);
                }
                _ => {}
            }
        }
        if needed {
            if let Some(key) = self.tasks.key(id) {
                tracing::info!(%key, "recomputing a lost result");
            }
            self.compute(id, now, out);
        }
        for d in requeue {
            self.make_ready_or_wait(d, now, out);
        }
    }

    // ----- task results --------------------------------------------------------------------

    /// A worker finished a task.
    pub fn task_finished(
        &mut self,
        worker: WorkerId,
        done: Finished,
        now: f64,
        out: &mut impl Outbox,
    ) {
        let Finished {
            key,
            nbytes,
            duration_us,
            transfer_us,
            data,
        } = done;
        self.touch(worker, now);
        let Some(id) = self.reported(worker, &key) else {
            let prefix = self.prefix_id(key.prefix());
            self.record_prefix_duration(prefix, duration_us, transfer_us);
            out.to_worker(worker, FromScheduler::FreeKeys { keys: vec![key] }.into());
            return;
        };
        self.record_duration(id, duration_us, transfer_us);
        let Some(t) = self.tasks.get(id) else {
            return;
        };
        let state = t.state;
        let on = t.processing_on.get();
        self.feed
            .task_done(worker, t.progress, (duration_us, transfer_us), now, false);
        if let Some(w) = on {
            self.unassign(id, w);
        }
        match state {
            TaskState::Memory => {
                self.add_replica(id, worker, nbytes);
                return;
            }
            TaskState::Processing => {}
            // Released (nobody needs it any more), Erred, or a stale report.
            _ => {
                // The table's copy of the key: the message's is freed here.
                let key = self.tasks.key(id).cloned().unwrap_or(key);
                out.to_worker(worker, FromScheduler::FreeKeys { keys: vec![key] }.into());
                self.drain_queue(now, out);
                return;
            }
        }
        if !self.workers.contains_key(&worker) {
            // Finished on a worker already removed: the result is gone with it.
            self.set_state(id, TaskState::Released);
            self.make_ready_or_wait(id, now, out);
            return;
        }
        self.computed_total += 1;
        self.set_state(id, TaskState::Memory);
        self.add_replica(id, worker, nbytes);
        if let Some((key, t)) = self.tasks.entry(id)
            && !t.wanted_by.is_empty()
        {
            // A forwarded value needs no holder: a client reading it would decode and free
            // the address once per result.
            let who_has = match data {
                Some(_) => Vec::new(),
                None => vec![
                    self.workers
                        .get(&worker)
                        .map(|w| w.info.address.clone())
                        .unwrap_or_default(),
                ],
            };
            for &c in &t.wanted_by {
                let msg = FromScheduler::KeyInMemory {
                    key: key.clone(),
                    nbytes,
                    who_has: who_has.clone(),
                };
                let blobs = data.iter().cloned().collect();
                out.to_client(c, Envelope::with_blobs(msg, blobs));
            }
        }
        let dependents: Vec<TaskId> = match self.tasks.get(id) {
            Some(t) => t.dependents.iter().collect(),
            None => return,
        };
        let mut ready = Vec::new();
        // Dependents sent ahead of this task to this worker, and waiting ones that may now go
        // ahead: looked at here, in the one pass over the dependents.
        let mut nearer = Vec::new();
        for d in dependents {
            let Some(dt) = self.tasks.get_mut(d) else {
                continue;
            };
            match dt.state {
                TaskState::Waiting => {
                    dt.waiting_on = dt.waiting_on.saturating_sub(1);
                    if dt.waiting_on == 0 {
                        ready.push((dt.priority, d));
                    } else if dt.deps.len() <= SPECULATION_MAX_DEPS {
                        nearer.push(d);
                    }
                }
                TaskState::Processing if dt.processing_on.get() == Some(worker) && dt.ahead > 0 => {
                    nearer.push(d);
                }
                _ => {}
            }
        }
        ready.sort();
        for (_, d) in ready {
            // Its inputs are all in memory, as counted: it is scheduled without looking at each
            // again (a reduction's million).
            debug_assert!(
                self.inputs_in_memory(d),
                "a task counted ready has inputs not in memory"
            );
            self.set_state(d, TaskState::Released);
            self.schedule(d, out);
        }
        if !nearer.is_empty() {
            self.advance_speculation(nearer, worker, out);
        }
        // The inputs of this task may now be unneeded: `settle` frees them.
        if let Some(t) = self.tasks.get(id) {
            self.releasable.extend(t.deps.iter().copied());
        }
        self.release_if_unneeded(id, now, out);
        self.check_retirements(now, out);
        self.drain_queue(now, out);
        self.update_idle(now);
    }

    /// The task a report of `worker` names by `key`: looked for first among the tasks sent to
    /// it, in the order sent ([`Sent`]), then in the key index.
    fn reported(&mut self, worker: WorkerId, key: &Key) -> Option<TaskId> {
        let hash = key_hash(key);
        let tasks = &self.tasks;
        self.workers
            .get_mut(&worker)
            .and_then(|w| {
                w.sent.take(
                    hash,
                    |id| tasks.is_key_of(id, key),
                    |id| is_on(tasks, id, worker),
                )
            })
            .or_else(|| tasks.id_hashed(key, hash))
    }

    /// Ready tasks waiting for a worker, in the queues of the classes that have a worker that
    /// can run them (a queue no worker can take from does not shrink).
    pub fn ready_backlog(&self) -> usize {
        self.classes
            .iter()
            .filter(|c| !c.eligible.is_empty())
            .map(|c| c.queue.len())
            .sum()
    }

    /// Whether [`State::settle`] has work to do.
    pub fn has_deferred_work(&self) -> bool {
        !self.releasable.is_empty() || !self.unpin_due.is_empty() || !self.compact_due.is_empty()
    }

    /// Frees the inputs that finished tasks left unneeded and lets go of the tasks a finished
    /// graph pinned, then compacts the workers' lists of results that releases left stale.
    /// Callers run it after the messages of the events they handled are sent (the server) or
    /// after each event (tests); until then those results only stay on their workers a little
    /// longer.
    pub fn settle(&mut self, now: f64, out: &mut impl Outbox) {
        if !self.releasable.is_empty() || !self.unpin_due.is_empty() {
            let mut frees = Frees::default();
            for id in std::mem::take(&mut self.releasable) {
                self.release_unneeded(id, &mut frees);
            }
            let pinned = std::mem::take(&mut self.unpin_due);
            self.unpin_into(pinned, &mut frees);
            frees.send(out);
            self.update_idle(now);
            self.check_retirements(now, out);
        }
        self.compact_holdings();
    }

    /// A task raised: it and everything depending on it fail with its error.
    pub fn task_erred(
        &mut self,
        worker: WorkerId,
        key: &Key,
        error: rask_core::KernelError,
        duration_us: u64,
        now: f64,
        out: &mut impl Outbox,
    ) {
        self.touch(worker, now);
        let Some(id) = self.reported(worker, key) else {
            let prefix = self.prefix_id(key.prefix());
            self.record_prefix_duration(prefix, duration_us, 0);
            return;
        };
        self.record_duration(id, duration_us, 0);
        let Some((key, t)) = self.tasks.entry(id) else {
            return;
        };
        if t.state != TaskState::Processing || t.processing_on.get() != Some(worker) {
            // A stale report (the task went elsewhere): the tasks this worker was sent ahead of
            // it were dropped there with it, so they are placed again.
            for d in self.withdraw_ahead(id, worker, out) {
                self.make_ready_or_wait(d, now, out);
            }
            self.drain_queue(now, out);
            return;
        }
        let key = key.clone();
        self.feed
            .task_done(worker, t.progress, (duration_us, 0), now, true);
        self.unassign(id, worker);
        self.set_state(id, TaskState::Released);
        self.fail_task(
            id,
            TaskFailure {
                key,
                error: TaskError::Kernel(error),
            },
            out,
        );
        self.check_retirements(now, out);
        self.drain_queue(now, out);
        self.update_idle(now);
    }

    /// A worker copied keys from peers (retirement).
    pub fn add_keys(
        &mut self,
        worker: WorkerId,
        keys: &[(Key, u64)],
        now: f64,
        out: &mut impl Outbox,
    ) {
        self.touch(worker, now);
        // Copied in the order asked for, mostly the order of their slots (see `inputs_of`).
        let mut near = 0;
        for (k, nbytes) in keys {
            let id = self.tasks.id_next(k, &mut near);
            if let Some(id) = id {
                self.replicating.remove(&id);
            }
            match id.filter(|&id| self.state_of(id) == Some(TaskState::Memory)) {
                Some(id) => {
                    self.add_replica(id, worker, *nbytes);
                    self.transfer_bytes_total += nbytes;
                }
                None => out.to_worker(
                    worker,
                    FromScheduler::FreeKeys {
                        keys: vec![k.clone()],
                    }
                    .into(),
                ),
            }
        }
        self.check_retirements(now, out);
    }

    /// A worker could not fetch `key` from `holders`; it has abandoned every task it was assigned
    /// that needs `key`.
    pub fn missing_data(
        &mut self,
        worker: WorkerId,
        key: &Key,
        holders: &[String],
        now: f64,
        out: &mut impl Outbox,
    ) {
        self.touch(worker, now);
        let Some(id) = self.tasks.id(key) else {
            self.drain_queue(now, out);
            return;
        };
        self.replicating.remove(&id);
        let holder_ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| holders.contains(&w.info.address))
            .map(|(id, _)| *id)
            .collect();
        let nbytes = self.tasks.get(id).map(|t| t.nbytes).unwrap_or(0);
        for h in holder_ids {
            if let Some(t) = self.tasks.get_mut(id)
                && t.who_has.contains(&h)
            {
                t.who_has.retain(|x| *x != h);
                self.holding_dropped(h, nbytes);
            }
        }
        // Tasks on this worker that needed the key go back to the scheduler.
        let abandoned: Vec<TaskId> = match (self.workers.get(&worker), self.tasks.get(id)) {
            (Some(w), Some(t)) => t
                .dependents
                .iter()
                .filter(|d| w.processing.contains(d))
                .collect(),
            _ => Vec::new(),
        };
        for &d in &abandoned {
            self.unassign(d, worker);
            self.set_state(d, TaskState::Released);
        }
        // The worker also dropped the tasks it was sent ahead of those it abandoned.
        let dependents: Vec<TaskId> = self
            .tasks
            .get(id)
            .map(|t| t.dependents.iter().collect())
            .unwrap_or_default();
        let mut withdrawn = Vec::new();
        for d in dependents {
            withdrawn.extend(self.withdraw_ahead(d, worker, out));
        }
        if self
            .tasks
            .get(id)
            .is_some_and(|t| t.who_has.is_empty() && t.state == TaskState::Memory)
        {
            self.result_lost(id, now, out);
        }
        for d in abandoned {
            self.make_ready_or_wait(d, now, out);
        }
        withdrawn.sort_by_key(|&d| self.priority_of(d));
        for d in withdrawn {
            self.make_ready_or_wait(d, now, out);
        }
        self.drain_queue(now, out);
    }

    // ----- retirement ----------------------------------------------------------------------

    /// Starts retiring workers: they get no new tasks, their unique results are copied to other
    /// workers, then they are closed and the request is answered through [`Outbox::retire_done`].
    pub fn retire_workers(
        &mut self,
        request: RequestId,
        selector: &RetireSelector,
        now: f64,
        out: &mut impl Outbox,
    ) {
        let candidates: Vec<WorkerId> = match selector {
            RetireSelector::Workers(names) => self
                .workers
                .iter()
                .filter(|(_, w)| {
                    names
                        .iter()
                        .any(|n| *n == w.info.address || *n == w.info.name)
                })
                .map(|(id, _)| *id)
                .collect(),
            RetireSelector::Count(n) => {
                let mut running: Vec<(u64, WorkerId)> = self
                    .workers
                    .iter()
                    .filter(|(_, w)| w.status == WorkerStatus::Running)
                    .map(|(id, w)| (w.nbytes, *id))
                    .collect();
                running.sort();
                running.into_iter().take(*n).map(|(_, id)| id).collect()
            }
        };
        let mut chosen = Vec::new();
        for id in candidates {
            if self.retirements.iter().any(|r| r.workers.contains(&id)) {
                continue; // already being retired by another request
            }
            if let Some(w) = self.workers.get_mut(&id) {
                w.status = WorkerStatus::Retiring;
                chosen.push(id);
                self.room.remove(&id);
            }
        }
        tracing::info!(request, workers = chosen.len(), "retiring workers");
        self.retirements.push(Retirement {
            request,
            started: now,
            workers: chosen,
            retired: Vec::new(),
        });
        // Tasks queued for a retiring worker are not moved; new ones will not go there.
        self.check_retirements(now, out);
    }

    /// Moves retiring workers' unique data, closes the ones that are done, answers finished requests.
    fn check_retirements(&mut self, now: f64, out: &mut impl Outbox) {
        if self.retirements.is_empty() {
            return;
        }
        let recipients: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.status == WorkerStatus::Running)
            .map(|(id, _)| *id)
            .collect();
        let mut retirements = std::mem::take(&mut self.retirements);
        for r in &mut retirements {
            let mut still = Vec::new();
            for id in std::mem::take(&mut r.workers) {
                let Some(w) = self.workers.get(&id) else {
                    continue;
                };
                // Unique results that something still needs must move first.
                let unique: Vec<TaskId> = w
                    .has_what
                    .ids(|s| held_at(&self.tasks, s, id))
                    .into_iter()
                    .filter(|&t| {
                        self.tasks
                            .get(t)
                            .is_some_and(|t| t.who_has.iter().all(|h| !recipients.contains(h)))
                    })
                    .collect();
                let grace_over = now - r.started > self.config.retire_grace_s;
                if unique.is_empty() && (w.processing.is_empty() || grace_over) {
                    let retired = RetiredWorker {
                        name: w.info.name.clone(),
                        address: w.info.address.clone(),
                        nthreads: w.info.nthreads,
                        memory_limit: w.info.memory_limit,
                    };
                    out.to_worker(
                        id,
                        FromScheduler::Close {
                            reason: "retired".into(),
                        }
                        .into(),
                    );
                    r.retired.push(retired);
                    self.reschedule_processing(id, now, out);
                    self.remove_worker_quietly(id, now, out);
                    continue;
                }
                if recipients.is_empty() {
                    // Nowhere to move the data: keep this worker (Dask does the same).
                    tracing::warn!(worker = %w.info.name, "cannot retire: no other worker can take its data");
                    if let Some(w) = self.workers.get_mut(&id) {
                        w.status = WorkerStatus::Running;
                    }
                    self.refresh_room(id);
                    continue;
                }
                let mut plan: FxHashMap<WorkerId, Vec<(Key, Vec<String>)>> = FxHashMap::default();
                for tid in unique {
                    if self
                        .replicating
                        .get(&tid)
                        .is_some_and(|t| recipients.contains(t))
                    {
                        continue; // already on its way
                    }
                    let Some((key, t)) = self.tasks.entry(tid) else {
                        continue;
                    };
                    // least-loaded recipient by bytes held
                    let target = recipients
                        .iter()
                        .min_by_key(|r| self.workers.get(r).map(|w| w.nbytes).unwrap_or(u64::MAX))
                        .copied();
                    if let Some(target) = target {
                        self.replicating.insert(tid, target);
                        plan.entry(target)
                            .or_default()
                            .push((key.clone(), self.addresses(&t.who_has)));
                        if let Some(tw) = self.workers.get_mut(&target) {
                            // Count it now so the next key spreads to another recipient.
                            tw.nbytes += t.nbytes;
                        }
                    }
                }
                for (target, keys) in plan {
                    let planned: u64 = keys
                        .iter()
                        .filter_map(|(k, _)| self.tasks.id(k).and_then(|id| self.tasks.get(id)))
                        .map(|t| t.nbytes)
                        .sum();
                    if let Some(tw) = self.workers.get_mut(&target) {
                        tw.nbytes = tw.nbytes.saturating_sub(planned);
                    }
                    out.to_worker(target, FromScheduler::AcquireReplicas { keys }.into());
                }
                still.push(id);
            }
            r.workers = still;
        }
        retirements.retain(|r| {
            if r.workers.is_empty() {
                out.retire_done(r.request, r.retired.clone());
                false
            } else {
                true
            }
        });
        self.retirements.extend(retirements);
        self.drain_queue(now, out);
    }

    /// Sends the tasks a worker is running elsewhere (it is leaving on purpose, so they are not
    /// suspicious).
    fn reschedule_processing(&mut self, id: WorkerId, now: f64, out: &mut impl Outbox) {
        let Some(w) = self.workers.get(&id) else {
            return;
        };
        let mut tasks: Vec<TaskId> = w.processing.iter().copied().collect();
        tasks.sort_by_key(|&t| self.priority_of(t));
        if let Some(w) = self.workers.get_mut(&id) {
            w.status = WorkerStatus::Retiring;
        }
        self.room.remove(&id);
        for t in tasks {
            self.unassign(t, id);
            self.set_state(t, TaskState::Released);
            self.make_ready_or_wait(t, now, out);
        }
    }

    /// Removes a retired worker whose data all lives elsewhere.
    fn remove_worker_quietly(&mut self, id: WorkerId, now: f64, out: &mut impl Outbox) {
        let Some(w) = self.workers.remove(&id) else {
            return;
        };
        self.room.remove(&id);
        tracing::info!(name = %w.info.name, "worker retired");
        self.workers_removed_total += 1;
        for tid in w.has_what.ids(|s| held_at(&self.tasks, s, id)) {
            if let Some(t) = self.tasks.get_mut(tid) {
                t.who_has.retain(|x| *x != id);
                if t.who_has.is_empty() && t.state == TaskState::Memory {
                    self.result_lost(tid, now, out);
                }
            }
        }
    }

    // ----- the core transitions ------------------------------------------------------------

    fn state_of(&self, id: TaskId) -> Option<TaskState> {
        self.tasks.get(id).map(|t| t.state)
    }

    fn priority_of(&self, id: TaskId) -> Option<u64> {
        self.tasks.get(id).map(|t| t.priority)
    }

    /// `id`'s dependencies, taken out of its task so that the others can be changed while they
    /// are read; [`State::put_deps`] gives them back.
    fn take_deps(&mut self, id: TaskId) -> Box<[TaskId]> {
        self.tasks
            .get_mut(id)
            .map(|t| std::mem::take(&mut t.deps))
            .unwrap_or_default()
    }

    fn put_deps(&mut self, id: TaskId, deps: Box<[TaskId]>) {
        if let Some(t) = self.tasks.get_mut(id) {
            t.deps = deps;
        }
    }

    fn set_state(&mut self, id: TaskId, to: TaskState) {
        if let Some((key, t)) = self.tasks.entry_mut(id) {
            let from = t.state;
            if from == to {
                return;
            }
            if matches!(from, TaskState::Queued | TaskState::NoWorker)
                && let Some(c) = self.classes.get_mut(t.class as usize)
            {
                c.queue.remove(&t.priority);
            }
            t.state = to;
            let c = &mut self.counts[from as usize];
            *c = c.saturating_sub(1);
            self.counts[to as usize] += 1;
            if let Some(p) = self.prefixes.get_mut(t.prefix as usize) {
                p.state_totals[to as usize] += 1;
                // Bytes in memory follow the state; `add_replica` corrects them when the
                // result's size arrives after the state changed.
                if from == TaskState::Memory {
                    p.nbytes_in_memory = p.nbytes_in_memory.saturating_sub(t.nbytes);
                } else if to == TaskState::Memory {
                    p.nbytes_in_memory += t.nbytes;
                }
            }
            self.feed
                .progress
                .moved(t.progress, from.bucket(), to.bucket());
            if t.graph != NO_NODE {
                self.feed.graph.set(t.graph, to.bucket());
            }
            if t.followed {
                t.followed = self.follows.task_changed(key, follow_now(Some(to)));
            }
        }
    }

    /// Starts computing `id` (a `Released` task), first computing every released dependency it
    /// needs. Iterative, so a chain of any length works.
    fn compute(&mut self, id: TaskId, now: f64, out: &mut impl Outbox) {
        let released = |st: &State, t: TaskId| st.state_of(t) == Some(TaskState::Released);
        if !released(self, id) {
            return;
        }
        // A task whose inputs are all settled (a mapped task's, a reduction's once its inputs
        // run): nothing to order, and the one look at its inputs settles it.
        if self.settle_leaf(id, now, out) {
            self.update_idle(now);
            return;
        }
        // Post-order over released dependencies: inputs are settled before their dependents.
        let mut order: Vec<TaskId> = Vec::new();
        let mut seen: FxHashSet<TaskId> = FxHashSet::default();
        let mut stack: Vec<(TaskId, bool)> = vec![(id, false)];
        while let Some((t, expanded)) = stack.pop() {
            if expanded {
                order.push(t);
                continue;
            }
            if !seen.insert(t) {
                continue;
            }
            let Some(task) = self.tasks.get(t) else {
                continue;
            };
            if task.state != TaskState::Released {
                continue;
            }
            stack.push((t, true));
            for &d in task.deps.iter().rev() {
                if released(self, d) && !seen.contains(&d) {
                    stack.push((d, false));
                }
            }
        }
        for t in order {
            self.make_ready_or_wait(t, now, out);
        }
        self.update_idle(now);
    }

    /// For a `Released` task whose released inputs are already being computed: wait for inputs,
    /// fail if an input failed, or run it.
    fn make_ready_or_wait(&mut self, id: TaskId, now: f64, out: &mut impl Outbox) {
        if let Some(look) = self.look_at_inputs(id, false) {
            self.settle_inputs(id, look, now, out);
        }
    }

    /// [`State::make_ready_or_wait`] for a `Released` task none of whose inputs is released
    /// (whether it was).
    fn settle_leaf(&mut self, id: TaskId, now: f64, out: &mut impl Outbox) -> bool {
        match self.look_at_inputs(id, true) {
            Some(look) => {
                self.settle_inputs(id, look, now, out);
                true
            }
            None => false,
        }
    }

    /// Where the inputs of `Released` task `id` stand, in one look at each; `None` when it is
    /// not released, or (with `leaf`) at its first released input.
    fn look_at_inputs(&self, id: TaskId, leaf: bool) -> Option<Inputs> {
        let (key, t) = self.tasks.entry(id)?;
        if t.state != TaskState::Released {
            return None;
        }
        let mut look = Inputs::default();
        for &d in t.deps.iter() {
            match self.tasks.get(d) {
                Some(dt) => match dt.state {
                    TaskState::Memory => {}
                    TaskState::Erred => {
                        look.failed = dt.failure.as_deref().cloned();
                    }
                    TaskState::Released if leaf => return None,
                    TaskState::Released => {
                        look.waiting_on += 1;
                        look.to_compute.push(d);
                    }
                    _ => look.waiting_on += 1,
                },
                None => {
                    // Not reached while the table is consistent: a task with dependents is not
                    // forgotten, and an id outliving its task finds nothing (its key with it).
                    tracing::error!(task = %key, "an input of the task is no longer known");
                    look.failed = Some(TaskFailure {
                        key: key.clone(),
                        error: TaskError::InputForgotten {
                            input: Key::from("(forgotten)"),
                        },
                    });
                }
            }
        }
        Some(look)
    }

    /// Fails, waits or runs task `id` as its inputs stand.
    fn settle_inputs(&mut self, id: TaskId, look: Inputs, now: f64, out: &mut impl Outbox) {
        let Inputs {
            waiting_on,
            failed,
            to_compute,
        } = look;
        if let Some(f) = failed {
            self.fail_task(id, f, out);
            return;
        }
        if let Some(t) = self.tasks.get_mut(id) {
            t.waiting_on = waiting_on;
        }
        if waiting_on > 0 {
            self.set_state(id, TaskState::Waiting);
            for d in to_compute {
                self.compute(d, now, out);
            }
            if self.speculate(id, out) {
                self.speculate_dependents(id, out);
            }
        } else {
            self.schedule(id, out);
        }
        self.update_idle(now);
    }

    /// Whether every input of `id` is in memory (a check of the `waiting_on` count, in debug
    /// builds).
    fn inputs_in_memory(&self, id: TaskId) -> bool {
        self.tasks.get(id).is_some_and(|t| {
            t.deps
                .iter()
                .all(|&d| self.state_of(d) == Some(TaskState::Memory))
        })
    }

    /// Sends a ready task to the best worker with room, or queues it (as `NoWorker` when no
    /// connected worker can run it at all).
    fn schedule(&mut self, id: TaskId, out: &mut impl Outbox) {
        if let Some(w) = self.pick_worker(id) {
            self.assign(id, w, out);
            return;
        }
        let Some(t) = self.tasks.get(id) else { return };
        let (class, priority) = (t.class as usize, t.priority);
        let state = if self.runnable(class) {
            TaskState::Queued
        } else {
            TaskState::NoWorker
        };
        self.set_state(id, state);
        if let Some(c) = self.classes.get_mut(class) {
            c.queue.insert(priority, id);
        }
    }

    /// Whether some connected worker can run the class's tasks (with no worker at all, tasks
    /// simply queue for the first one).
    fn runnable(&self, class: usize) -> bool {
        self.workers.is_empty()
            || self
                .classes
                .get(class)
                .is_some_and(|c| !c.eligible.is_empty())
    }

    /// The class of a new task, made on first use.
    fn class_of(&mut self, spec: &TaskSpec, now: f64) -> ClassId {
        let resources = if spec.resources.is_empty() {
            String::new()
        } else {
            spec.resources.to_string()
        };
        let id_key = (spec.func.clone(), resources);
        if let Some(&id) = self.class_ids.get(&id_key) {
            return id;
        }
        let mut class = Class {
            func: spec.func.clone(),
            resources: spec.resources.clone(),
            queue: BTreeMap::new(),
            eligible: Vec::new(),
            unrunnable_since: None,
        };
        class.eligible = self
            .workers
            .iter()
            .filter(|(_, w)| class.can_run(w))
            .map(|(id, _)| *id)
            .collect();
        if class.eligible.is_empty() && !self.workers.is_empty() {
            class.unrunnable_since = Some(now);
        }
        let id = self.classes.len() as ClassId;
        self.classes.push(class);
        self.class_ids.insert(id_key, id);
        id
    }

    /// Recomputes which workers can run each class after a worker came or went, and moves the
    /// waiting tasks of classes that became runnable (or unrunnable) between `Queued` and
    /// `NoWorker`.
    fn workers_changed(&mut self, now: f64) {
        for c in 0..self.classes.len() {
            let class = &self.classes[c];
            let eligible: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| class.can_run(w))
                .map(|(id, _)| *id)
                .collect();
            let was = self.runnable(c);
            self.classes[c].eligible = eligible;
            let is = self.runnable(c);
            if is {
                self.classes[c].unrunnable_since = None;
            } else if self.classes[c].unrunnable_since.is_none() {
                self.classes[c].unrunnable_since = Some(now);
            }
            if was != is && !self.classes[c].queue.is_empty() {
                let (from, to) = if is {
                    (TaskState::NoWorker, TaskState::Queued)
                } else {
                    (TaskState::Queued, TaskState::NoWorker)
                };
                let ids: Vec<TaskId> = self.classes[c].queue.values().copied().collect();
                for id in ids {
                    if let Some(t) = self.tasks.get_mut(id)
                        && t.state == from
                    {
                        t.state = to;
                        self.counts[from as usize] = self.counts[from as usize].saturating_sub(1);
                        self.counts[to as usize] += 1;
                        if let Some(p) = self.prefixes.get_mut(t.prefix as usize) {
                            p.state_totals[to as usize] += 1;
                        }
                    }
                }
            }
        }
    }

    /// The expected duration of a task of `prefix`: its prefix's average so far.
    fn expected_us(&self, prefix: u32) -> u64 {
        let unknown = self.config.unknown_task_duration_s * 1e6;
        let avg = self
            .prefixes
            .get(prefix as usize)
            .and_then(|p| p.avg_us)
            .unwrap_or(unknown);
        avg.max(1.0) as u64
    }

    /// Whether `w` can take one more task (threads and expected work; resources apart).
    fn has_room(&self, w: &Worker) -> bool {
        let threads = u64::from(w.info.nthreads.max(1));
        w.status == WorkerStatus::Running
            && ((w.processing.len() as u64) < threads
                || w.occupancy_us < threads * (self.config.pipeline_s * 1e6) as u64)
    }

    /// Whether [`State::room`] holds exactly the workers with room (for the tests' checks).
    #[cfg(test)]
    pub(crate) fn room_is_consistent(&self) -> bool {
        let expected: BTreeSet<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| self.has_room(w))
            .map(|(id, _)| *id)
            .collect();
        expected == self.room
    }

    /// Puts `worker` in [`State::room`] or takes it out, as [`State::has_room`] says now.
    fn refresh_room(&mut self, worker: WorkerId) {
        if self.workers.get(&worker).is_some_and(|w| self.has_room(w)) {
            self.room.insert(worker);
        } else {
            self.room.remove(&worker);
        }
    }

    /// Among the workers that can run the task and have room (and its resources free), prefers
    /// the one holding most of the task's input bytes; among equals, the least busy. A task
    /// with no input held anywhere and no resources, with [`ROUND_ROBIN_FROM`] workers or more
    /// with room, goes to the next of them after the last such task's (as Dask places tasks
    /// without dependencies on large clusters): a look at every worker per task bound the
    /// scheduler at 1,000 workers.
    fn pick_worker(&self, id: TaskId) -> Option<WorkerId> {
        let t = self.tasks.get(id)?;
        let class = self.classes.get(t.class as usize)?;
        let mut local: FxHashMap<WorkerId, u64> = FxHashMap::default();
        for &d in t.deps.iter() {
            if let Some(dt) = self.tasks.get(d) {
                for h in &dt.who_has {
                    *local.entry(*h).or_default() += dt.nbytes.max(1);
                }
            }
        }
        let eligible = |wid: &WorkerId| class.eligible.binary_search(wid).is_ok();
        if local.is_empty() && class.resources.is_empty() && self.room.len() >= ROUND_ROBIN_FROM {
            let after = (Bound::Excluded(self.rr_cursor), Bound::Unbounded);
            return self
                .room
                .range(after)
                .chain(self.room.iter())
                .find(|w| eligible(w))
                .copied();
        }
        let mut best: Option<(u64, std::cmp::Reverse<u64>, WorkerId)> = None;
        for wid in self.room.iter().filter(|w| eligible(w)) {
            let Some(w) = self.workers.get(wid) else {
                continue;
            };
            if !self.has_room(w)
                || (!class.resources.is_empty()
                    && !w.info.resources.fits(&w.used, &class.resources))
            {
                continue;
            }
            let bytes = local.get(wid).copied().unwrap_or(0);
            let load = w.occupancy_us / u64::from(w.info.nthreads.max(1));
            let score = (bytes, std::cmp::Reverse(load), *wid);
            if best.is_none_or(|b| (score.0, score.1) > (b.0, b.1)) {
                best = Some(score);
            }
        }
        best.map(|b| b.2)
    }

    /// Sends ready task `id` to `worker`, then sends ahead the dependents that may follow it
    /// there ([`State::speculate`]).
    fn assign(&mut self, id: TaskId, worker: WorkerId, out: &mut impl Outbox) {
        self.send_compute(id, worker, 0, out);
        self.speculate_dependents(id, out);
    }

    /// Makes `id` processing on `worker` and sends it there; `ahead` is how many levels of its
    /// inputs are still being computed there ([`Task::ahead`]).
    fn send_compute(&mut self, id: TaskId, worker: WorkerId, ahead: u8, out: &mut impl Outbox) {
        let Some(prefix) = self.tasks.get(id).map(|t| t.prefix) else {
            return;
        };
        let expected = self.expected_us(prefix).min(MAX_CHARGED_US);
        self.set_state(id, TaskState::Processing);
        let Some(t) = self.tasks.get_mut(id) else {
            return;
        };
        t.processing_on = OnWorker::new(worker);
        t.charged_us = u32::try_from(expected).unwrap_or(u32::MAX);
        t.ahead = ahead;
        let Some((key, t)) = self.tasks.entry(id) else {
            return;
        };
        let send_result = !t.wanted_by.is_empty();
        let priority = t.priority;
        let Some(class) = self.classes.get(t.class as usize) else {
            return;
        };
        let resources = class.resources.clone();
        let repeated = self.repeated_inputs.get(&id);
        // Where each input is in the spec's list: in the order of the dependencies, or, for a
        // task naming an input more than once, where it first appears.
        let first_at: Option<FxHashMap<&Key, usize>> = repeated.map(|inputs| {
            let mut at = FxHashMap::default();
            for (i, k) in inputs.iter().enumerate() {
                at.entry(k).or_insert(i);
            }
            at
        });
        let mut in_order = Vec::with_capacity(if repeated.is_some() { 0 } else { t.deps.len() });
        // Inputs in memory, grouped by their holders.
        let mut who_has: Vec<HeldBy> = Vec::new();
        let mut group_of: FxHashMap<&[WorkerId], usize> = FxHashMap::default();
        let mut last: Option<(&[WorkerId], usize)> = None;
        // Inputs still processing are being computed on this worker: the task was sent ahead.
        let mut after = Vec::new();
        for &d in t.deps.iter() {
            let Some((dk, dt)) = self.tasks.entry(d) else {
                continue;
            };
            let at = match &first_at {
                Some(first_at) => first_at.get(dk).copied().unwrap_or(usize::MAX),
                None => {
                    in_order.push(dk.clone());
                    in_order.len() - 1
                }
            };
            if dt.state == TaskState::Processing {
                after.push(dk.clone());
                continue;
            }
            let ids: &[WorkerId] = &dt.who_has;
            // Runs of inputs from the same holders are the common case: no lookup for them.
            let group = match last {
                Some((last_ids, g)) if last_ids == ids => g,
                _ => *group_of.entry(ids).or_insert_with(|| {
                    who_has.push(HeldBy {
                        holders: self.addresses(ids),
                        inputs: Vec::new(),
                    });
                    who_has.len() - 1
                }),
            };
            last = Some((ids, group));
            if let Some(g) = who_has.get_mut(group) {
                g.inputs
                    .push((u32::try_from(at).unwrap_or(u32::MAX), dt.nbytes));
            }
        }
        let inputs = match repeated {
            Some(inputs) => inputs.to_vec(),
            None => in_order,
        };
        let spec = TaskSpec {
            key: key.clone(),
            func: class.func.clone(),
            inputs,
            payload: t.payload.clone(),
            resources: resources.clone(),
        };
        let hash = key_hash(key);
        if let Some(w) = self.workers.get_mut(&worker) {
            w.processing.insert(id);
            let tasks = &self.tasks;
            w.sent
                .push(id, hash, w.processing.len(), |id| is_on(tasks, id, worker));
            w.occupancy_us += expected;
            if !resources.is_empty() {
                w.used.add(&resources, 1.0);
            }
        }
        self.refresh_room(worker);
        self.rr_cursor = worker;
        let msg = ComputeTask {
            spec: Box::new(spec),
            priority,
            who_has,
            after: after.into_boxed_slice(),
            send_result,
        };
        out.to_worker(worker, FromScheduler::Compute(msg).into());
    }

    fn unassign(&mut self, id: TaskId, worker: WorkerId) {
        let (charged, resources) = match self.tasks.get_mut(id) {
            Some(t) if t.processing_on.get() == Some(worker) => {
                t.processing_on = OnWorker::NONE;
                t.ahead = 0;
                let class = self.classes.get(t.class as usize);
                (
                    u64::from(std::mem::take(&mut t.charged_us)),
                    class.map(|c| &c.resources),
                )
            }
            _ => (0, None),
        };
        if let Some(w) = self.workers.get_mut(&worker)
            && w.processing.remove(&id)
        {
            w.occupancy_us = w.occupancy_us.saturating_sub(charged);
            if let Some(r) = resources.filter(|r| !r.is_empty()) {
                w.used.add(r, -1.0);
            }
        }
        self.refresh_room(worker);
    }

    /// Sends waiting task `id` ahead of its inputs to the worker computing them (speculative
    /// assignment), when every input is in memory on that worker or processing there, the worker
    /// has room, nothing restricts the task to other workers (it needs no resources, and the
    /// worker has its function), and it would be at most [`SPECULATION_DEPTH`] levels ahead.
    /// Returns whether it did.
    fn speculate(&mut self, id: TaskId, out: &mut impl Outbox) -> bool {
        let Some(t) = self.tasks.get(id) else {
            return false;
        };
        if t.state != TaskState::Waiting || t.deps.len() > SPECULATION_MAX_DEPS {
            return false;
        }
        let mut on: Option<WorkerId> = None;
        let mut ahead = 0u8;
        for &d in t.deps.iter() {
            let Some(dt) = self.tasks.get(d) else {
                return false;
            };
            match (dt.state, dt.processing_on.get()) {
                (TaskState::Processing, Some(w)) if on.is_none_or(|o| o == w) => {
                    on = Some(w);
                    ahead = ahead.max(dt.ahead.saturating_add(1));
                }
                (TaskState::Memory, _) => {}
                _ => return false,
            }
        }
        let Some(w) = on else {
            return false;
        };
        if ahead > SPECULATION_DEPTH || !self.room.contains(&w) {
            return false;
        }
        let elsewhere = t.deps.iter().any(|&d| {
            self.tasks
                .get(d)
                .is_some_and(|dt| dt.state == TaskState::Memory && !dt.who_has.contains(&w))
        });
        let restricted = self
            .classes
            .get(t.class as usize)
            .is_none_or(|c| !c.resources.is_empty() || c.eligible.binary_search(&w).is_err());
        if elsewhere || restricted {
            return false;
        }
        self.speculated_total += 1;
        self.send_compute(id, w, ahead, out);
        true
    }

    /// Whether `id` could be sent ahead at all (a cheap first look, so that the dependents of
    /// most tasks are not collected for [`State::speculate`]).
    fn may_speculate(&self, id: TaskId) -> bool {
        self.tasks
            .get(id)
            .is_some_and(|t| t.state == TaskState::Waiting && t.deps.len() <= SPECULATION_MAX_DEPS)
    }

    /// Sends ahead the dependents of `id` that [`State::speculate`] allows, and theirs in turn.
    fn speculate_dependents(&mut self, id: TaskId, out: &mut impl Outbox) {
        let mut stack: Vec<TaskId> = match self.tasks.get(id) {
            Some(t) if !t.dependents.is_empty() => t
                .dependents
                .iter()
                .filter(|&d| self.may_speculate(d))
                .collect(),
            _ => return,
        };
        while let Some(d) = stack.pop() {
            if self.speculate(d, out)
                && let Some(t) = self.tasks.get(d)
            {
                stack.extend(t.dependents.iter());
            }
        }
    }

    /// A task finished on `worker`: the tasks sent there ahead of it (among `nearer`, its
    /// dependents) are a level nearer their inputs ([`Task::ahead`]), so the next waiting tasks
    /// may be sent ahead in turn, as may its waiting dependents in `nearer`.
    fn advance_speculation(
        &mut self,
        nearer: Vec<TaskId>,
        worker: WorkerId,
        out: &mut impl Outbox,
    ) {
        let mut stack = nearer;
        while let Some(d) = stack.pop() {
            let Some(t) = self.tasks.get(d) else {
                continue;
            };
            match t.state {
                TaskState::Processing if t.processing_on.get() == Some(worker) && t.ahead > 0 => {
                    let ahead = t
                        .deps
                        .iter()
                        .filter_map(|&x| self.tasks.get(x))
                        .filter(|x| x.state == TaskState::Processing)
                        .map(|x| x.ahead.saturating_add(1))
                        .max()
                        .unwrap_or(0);
                    if ahead != t.ahead {
                        stack.extend(t.dependents.iter());
                        if let Some(t) = self.tasks.get_mut(d) {
                            t.ahead = ahead;
                        }
                    }
                }
                TaskState::Waiting => {
                    if self.speculate(d, out)
                        && let Some(t) = self.tasks.get(d)
                    {
                        stack.extend(t.dependents.iter());
                    }
                }
                _ => {}
            }
        }
    }

    /// Takes back from `worker` the tasks sent there ahead of `id` (which will not finish there
    /// now), and those sent ahead of them: they are freed on the worker (which drops them by
    /// itself when it dropped `id`) and left `Released`, in priority order, for the caller to
    /// place again once `id` is placed.
    fn withdraw_ahead(
        &mut self,
        id: TaskId,
        worker: WorkerId,
        out: &mut impl Outbox,
    ) -> Vec<TaskId> {
        let mut taken = Vec::new();
        let mut stack: Vec<TaskId> = match self.tasks.get(id) {
            Some(t) => t.dependents.iter().collect(),
            None => return taken,
        };
        while let Some(d) = stack.pop() {
            let Some(t) = self.tasks.get(d) else {
                continue;
            };
            if t.state != TaskState::Processing
                || t.processing_on.get() != Some(worker)
                || t.ahead == 0
            {
                continue;
            }
            stack.extend(t.dependents.iter());
            self.unassign(d, worker);
            self.set_state(d, TaskState::Released);
            taken.push(d);
        }
        if !taken.is_empty() && self.workers.contains_key(&worker) {
            let keys = taken
                .iter()
                .filter_map(|&d| self.tasks.key(d).cloned())
                .collect();
            out.to_worker(worker, FromScheduler::FreeKeys { keys }.into());
        }
        taken.sort_by_key(|&d| self.priority_of(d));
        taken
    }

    /// Sends queued tasks, highest priority first across classes, while a worker that can run
    /// them has room. A class whose head finds no worker is passed over, so it never holds up
    /// the others.
    fn drain_queue(&mut self, _now: f64, out: &mut impl Outbox) {
        if self.room.is_empty() {
            return;
        }
        let mut open: Vec<usize> = (0..self.classes.len())
            .filter(|&c| !self.classes[c].queue.is_empty() && !self.classes[c].eligible.is_empty())
            .collect();
        while !open.is_empty() {
            // The class whose next task comes first.
            let Some((i, _)) = open
                .iter()
                .enumerate()
                .filter_map(|(i, &c)| self.classes[c].queue.keys().next().map(|p| (i, *p)))
                .min_by_key(|&(_, p)| p)
            else {
                break;
            };
            let c = open[i];
            let Some((&prio, &id)) = self.classes[c].queue.iter().next() else {
                open.swap_remove(i);
                continue;
            };
            match self.pick_worker(id) {
                Some(w) => {
                    self.classes[c].queue.remove(&prio);
                    self.assign(id, w, out);
                    if self.classes[c].queue.is_empty() {
                        open.swap_remove(i);
                    }
                }
                None => {
                    open.swap_remove(i);
                }
            }
        }
    }

    fn add_replica(&mut self, id: TaskId, worker: WorkerId, nbytes: u64) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        if let Some(t) = self.tasks.get_mut(id) {
            if t.state == TaskState::Memory
                && let Some(p) = self.prefixes.get_mut(t.prefix as usize)
            {
                p.nbytes_in_memory = (p.nbytes_in_memory + nbytes).saturating_sub(t.nbytes);
            }
            t.nbytes = nbytes;
            if !t.who_has.contains(&worker) {
                t.who_has.insert(worker);
                w.has_what.added(id);
                w.nbytes += nbytes;
            }
        }
    }

    /// `worker` no longer holds a result of `nbytes` (its task's `who_has` says so already).
    fn holding_dropped(&mut self, worker: WorkerId, nbytes: u64) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return;
        };
        w.nbytes = w.nbytes.saturating_sub(nbytes);
        if w.has_what.removed() && !w.compact_due {
            w.compact_due = true;
            self.compact_due.push(worker);
        }
    }

    /// Compacts the lists of results of the workers that dropped enough of them.
    fn compact_holdings(&mut self) {
        for worker in std::mem::take(&mut self.compact_due) {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.compact_due = false;
                if w.has_what.stale_enough() {
                    let tasks = &self.tasks;
                    w.has_what.compact(|s| held_at(tasks, s, worker));
                }
            }
        }
    }

    /// Records a task's run: `duration_us` computing, after `transfer_us` fetching its inputs.
    fn record_duration(&mut self, id: TaskId, duration_us: u64, transfer_us: u64) {
        if let Some(prefix) = self.tasks.get(id).map(|t| t.prefix) {
            self.record_prefix_duration(prefix, duration_us, transfer_us);
        }
    }

    /// Records a run of a task of the prefix `id` ([`State::record_duration`]).
    fn record_prefix_duration(&mut self, id: u32, duration_us: u64, transfer_us: u64) {
        let Some(p) = self.prefixes.get_mut(id as usize) else {
            return;
        };
        let d = duration_us as f64;
        p.avg_us = Some(match p.avg_us {
            Some(a) => 0.5 * a + 0.5 * d,
            None => d,
        });
        p.compute_s += d / 1e6;
        p.transfer_s += transfer_us as f64 / 1e6;
    }

    /// The index of `prefix` in [`State::prefixes`], added if new.
    fn prefix_id(&mut self, prefix: &str) -> u32 {
        if let Some(&id) = self.prefix_ids.get(prefix) {
            return id;
        }
        let id = u32::try_from(self.prefixes.len()).unwrap_or(u32::MAX);
        self.prefixes.push(PrefixStats::new(prefix));
        self.prefix_ids.insert(prefix.to_owned(), id);
        id
    }

    /// `n` tasks of `key`'s group were added.
    fn join_group(&mut self, key: &str, n: u32) {
        let group = group_of(key);
        match self.groups.get_mut(group) {
            Some(count) => *count += n,
            None => {
                self.groups.insert(group.into(), n);
            }
        }
    }

    fn leave_group(&mut self, key: &str) {
        let group = group_of(key);
        if let Some(n) = self.groups.get_mut(group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.groups.remove(group);
            }
        }
    }

    /// Fails `id` and everything that depends on it, telling the clients that want them.
    fn fail_task(&mut self, id: TaskId, failure: TaskFailure, out: &mut impl Outbox) {
        let mut stack = vec![id];
        while let Some(t) = stack.pop() {
            let Some(task) = self.tasks.get(t) else {
                continue;
            };
            if task.state == TaskState::Erred || task.state == TaskState::Memory {
                continue;
            }
            if let Some(w) = task.processing_on.get() {
                // A dependent cannot be running while its input failed, but stay safe.
                self.unassign(t, w);
            }
            self.set_state(t, TaskState::Erred);
            let Some((key, task)) = self.tasks.entry_mut(t) else {
                continue;
            };
            task.failure = Some(Box::new(failure.clone()));
            for c in &task.wanted_by {
                out.to_client(
                    *c,
                    FromScheduler::KeyErred {
                        key: key.clone(),
                        failure: Box::new(failure.clone()),
                    }
                    .into(),
                );
            }
            stack.extend(task.dependents.iter());
        }
    }

    /// Whether some client or some pending dependent still needs `id`'s result.
    fn is_needed(&self, id: TaskId) -> bool {
        let Some(t) = self.tasks.get(id) else {
            return false;
        };
        t.pins > 0
            || !t.wanted_by.is_empty()
            || t.dependents.iter().any(|d| {
                matches!(
                    self.state_of(d),
                    Some(
                        TaskState::Waiting
                            | TaskState::Queued
                            | TaskState::NoWorker
                            | TaskState::Processing
                    )
                )
            })
    }

    /// Frees `id` if nothing needs it, and forgets it if nothing refers to it; then the same for
    /// its inputs. Iterative.
    fn release_if_unneeded(&mut self, id: TaskId, now: f64, out: &mut impl Outbox) {
        let mut frees = Frees::default();
        self.release_unneeded(id, &mut frees);
        frees.send(out);
        self.update_idle(now);
    }

    /// [`State::release_if_unneeded`], collecting the results to free in `frees`.
    fn release_unneeded(&mut self, id: TaskId, frees: &mut Frees) {
        if self.is_needed(id) {
            return;
        }
        let mut stack = vec![id];
        while let Some(tid) = stack.pop() {
            if self.is_needed(tid) {
                continue;
            }
            let Some((key, t)) = self.tasks.entry(tid) else {
                continue;
            };
            let before = t.state;
            match before {
                TaskState::Memory => {
                    let nbytes = t.nbytes;
                    for h in &t.who_has {
                        frees.add(*h, key.clone());
                    }
                    let holders = match self.tasks.get_mut(tid) {
                        Some(t) => std::mem::take(&mut t.who_has),
                        None => Ids::default(),
                    };
                    for &h in &holders {
                        self.holding_dropped(h, nbytes);
                    }
                    self.set_state(tid, TaskState::Released);
                }
                TaskState::Processing => {
                    if let Some(w) = t.processing_on.get() {
                        frees.add(w, key.clone());
                        self.unassign(tid, w);
                    }
                    self.set_state(tid, TaskState::Released);
                }
                TaskState::Queued | TaskState::NoWorker | TaskState::Waiting => {
                    self.set_state(tid, TaskState::Released)
                }
                TaskState::Released | TaskState::Erred => {}
            }
            let Some(t) = self.tasks.get(tid) else {
                continue;
            };
            // Inputs can only become unneeded if this task changed; stopping otherwise keeps
            // releasing a long chain linear.
            let forgotten = t.dependents.is_empty();
            if forgotten || !matches!(before, TaskState::Released | TaskState::Erred) {
                stack.extend(t.deps.iter().copied());
            }
            if forgotten {
                self.forget(tid);
            }
        }
    }

    fn forget(&mut self, id: TaskId) {
        let Some((key, t)) = self.tasks.remove(id) else {
            return;
        };
        if self.repeated_inputs.remove(&id).is_some() && self.repeated_inputs.is_empty() {
            self.repeated_inputs = FxHashMap::default();
        }
        let c = &mut self.counts[t.state as usize];
        *c = c.saturating_sub(1);
        self.feed.progress.forgotten(t.progress, t.state.bucket());
        if t.graph != NO_NODE {
            self.feed.graph.set(t.graph, Bucket::Released);
        }
        if t.followed {
            self.follows.task_changed(&key, follow::Now::Forgotten);
        }
        if matches!(t.state, TaskState::Queued | TaskState::NoWorker)
            && let Some(c) = self.classes.get_mut(t.class as usize)
        {
            c.queue.remove(&t.priority);
        }
        self.forgotten_total += 1;
        if let Some(p) = self.prefixes.get_mut(t.prefix as usize) {
            p.state_totals[FORGOTTEN] += 1;
            if t.state == TaskState::Memory {
                p.nbytes_in_memory = p.nbytes_in_memory.saturating_sub(t.nbytes);
            }
        }
        self.leave_group(key.as_str());
        for &d in t.deps.iter() {
            if let Some(dt) = self.tasks.get_mut(d) {
                dt.dependents.remove(id);
            }
        }
    }

    /// Adds the tasks of `ids` (just added, in priority order) to the graph panel's graph, or a
    /// new graph when `new_graph`; only edges between tasks of the graph are drawn.
    fn graph_record(&mut self, ids: &[TaskId], new_graph: bool) {
        if ids.is_empty() {
            return;
        }
        if new_graph {
            let old = self.feed.graph.clear();
            self.unlink_graph(old);
        }
        if let Err(old) = self.feed.graph.make_room(ids.len()) {
            self.unlink_graph(old);
            return;
        }
        for &id in ids {
            if let Some((key, t)) = self.tasks.entry_mut(id) {
                t.graph = self
                    .feed
                    .graph
                    .add_node(key.clone(), t.progress, t.state.bucket());
            }
        }
        for &id in ids {
            let Some(t) = self.tasks.get(id) else {
                continue;
            };
            for &d in t.deps.iter() {
                if let Some(dt) = self.tasks.get(d)
                    && dt.graph != NO_NODE
                {
                    self.feed.graph.add_edge(dt.graph, t.graph);
                }
            }
        }
    }

    /// The tasks of `keys` no longer have a node in the graph panel's graph.
    fn unlink_graph(&mut self, keys: Vec<Key>) {
        for k in keys {
            if let Some(t) = self.tasks.id(&k).and_then(|id| self.tasks.get_mut(id)) {
                t.graph = NO_NODE;
            }
        }
    }

    fn addresses(&self, ids: &[WorkerId]) -> Vec<String> {
        ids.iter()
            .filter_map(|id| self.workers.get(id).map(|w| w.info.address.clone()))
            .collect()
    }

    fn update_idle(&mut self, now: f64) {
        let busy = self.count(TaskState::Waiting)
            + self.count(TaskState::Queued)
            + self.count(TaskState::NoWorker)
            + self.count(TaskState::Processing)
            > 0;
        if busy {
            self.idle_since = None;
        } else if self.idle_since.is_none() {
            self.idle_since = Some(now);
        }
    }

    // ----- observation ---------------------------------------------------------------------

    /// Bytes the tasks take by the state's own accounting: the task table's slots (key and
    /// [`Task`], at the table's capacity), each task's key text, payload and lists (inputs,
    /// dependencies, dependents, holders, clients), and the per-key entries of the clients'
    /// holdings, the workers' holdings and processing sets and the ready queues. An estimate
    /// from sizes and capacities (not what the allocator rounds up to), for the bench's RSS
    /// growth per task to be explained by and for tests to bound.
    pub fn task_bytes(&self) -> usize {
        use std::mem::size_of;
        let key_entry = size_of::<Key>();
        let id_entry = size_of::<TaskId>();
        let mut bytes = self.tasks.bytes();
        for (_, key, t) in self.tasks.iter() {
            bytes += key.heap_bytes()
                + t.payload.heap_bytes()
                + t.deps.len() * id_entry
                + t.dependents.heap_bytes()
                + t.who_has.heap_bytes()
                + t.wanted_by.heap_bytes()
                + t.failure.as_ref().map_or(0, |_| size_of::<TaskFailure>());
        }
        for inputs in self.repeated_inputs.values() {
            bytes += inputs.len() * key_entry;
        }
        bytes += hash_table_bytes(
            self.repeated_inputs.capacity(),
            id_entry + size_of::<Box<[Key]>>(),
        );
        for held in self.clients.values() {
            bytes += held.heap_bytes();
        }
        for w in self.workers.values() {
            bytes += w.has_what.heap_bytes()
                + hash_table_bytes(w.processing.capacity(), id_entry)
                + w.sent.heap_bytes();
        }
        for c in &self.classes {
            // A B-tree's nodes hold up to 11 entries and are about two thirds full.
            bytes += c.queue.len() * (size_of::<u64>() + id_entry) * 3 / 2;
        }
        bytes += (self.releasable.capacity() + self.unpin_due.capacity()) * id_entry
            + hash_table_bytes(
                self.replicating.capacity(),
                id_entry + size_of::<WorkerId>(),
            );
        bytes
    }

    /// Tasks the scheduler knows.
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    pub fn snapshot(&self, now: f64) -> Snapshot {
        let workers = self
            .workers
            .values()
            .map(|w| WorkerSnapshot {
                name: w.info.name.clone(),
                address: w.info.address.clone(),
                nthreads: w.info.nthreads,
                memory_limit: w.info.memory_limit,
                nbytes: w.nbytes,
                processing: w.processing.len(),
                keys: w.has_what.len(),
                spilled_bytes: w.load.spilled_bytes,
                rss: w.load.rss,
                status: w.status,
                pid: w.info.pid,
                last_seen_s: (now - w.last_seen).max(0.0),
            })
            .collect();
        let tasks = TaskCounts {
            released: self.count(TaskState::Released),
            waiting: self.count(TaskState::Waiting),
            queued: self.count(TaskState::Queued),
            no_worker: self.count(TaskState::NoWorker),
            processing: self.count(TaskState::Processing),
            memory: self.count(TaskState::Memory),
            erred: self.count(TaskState::Erred),
        };
        let mut prefixes: Vec<PrefixSnapshot> = self
            .prefixes
            .iter()
            .map(|p| {
                let states = TaskState::ALL
                    .iter()
                    .map(|s| (s.dask_name(), p.state_totals[*s as usize]))
                    .chain([("forgotten", p.state_totals[FORGOTTEN])]);
                PrefixSnapshot {
                    name: p.name.clone(),
                    compute_seconds: p.compute_s,
                    transfer_seconds: p.transfer_s,
                    nbytes_in_memory: p.nbytes_in_memory,
                    suspicious: p.suspicious,
                    state_totals: states.filter(|(_, n)| *n > 0).collect(),
                }
            })
            .collect();
        prefixes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            address: self.address.clone(),
            workers,
            tasks,
            clients: self.clients.len(),
            adaptive_target: adaptive_target(&self.adaptive_input()),
            idle_since: self.idle_since,
            tasks_forgotten_total: self.forgotten_total,
            tasks_suspicious_total: self.suspicious_total,
            transfer_bytes_total: self.transfer_bytes_total,
            tasks_computed_total: self.computed_total,
            tasks_speculated_total: self.speculated_total,
            workers_timed_out_total: self.timed_out_total,
            workers_timed_out_silence_seconds_total: self.timed_out_silence_s_total,
            started_at: self.started_at,
            client_connections_added_total: self.clients_added_total,
            client_connections_removed_total: self.clients_removed_total,
            workers_added_total: self.workers_added_total,
            workers_removed_total: self.workers_removed_total,
            task_groups: self.groups.len(),
            prefixes,
            ticks: TickSnapshot::default(),
            monotonic_s: 0.0,
        }
    }

    /// The dashboard page's next update: the workers table, the cluster's task counts (and its
    /// adaptive target, if `with_target`: that walks every queued task), the progress of the
    /// current computations, what the task stream recorded since `cursor`, and the graph panel's
    /// news. A page asking turns the graph's recording on (for [`GRAPH_WATCH_S`]), starting
    /// with the tasks the scheduler has.
    ///
    /// [`GRAPH_WATCH_S`]: crate::dashboard::graph::GRAPH_WATCH_S
    pub fn dashboard(&mut self, cursor: Cursor, with_target: bool, now: f64) -> Update {
        if self.feed.graph.watch(now) {
            if self.tasks.len() > GRAPH_LIMIT {
                // Too large to draw: only counted, without walking the tasks.
                let _ = self.feed.graph.make_room(self.tasks.len());
            } else {
                let mut ids: Vec<(u64, TaskId)> = self
                    .tasks
                    .iter()
                    .map(|(id, _, t)| (t.priority, id))
                    .collect();
                ids.sort_unstable_by_key(|(p, _)| *p);
                let ids: Vec<TaskId> = ids.into_iter().map(|(_, id)| id).collect();
                self.graph_record(&ids, true);
            }
        }
        let workers = self
            .workers
            .iter()
            .map(|(id, w)| WorkerRow {
                id: *id,
                name: w.info.name.clone(),
                address: w.info.address.clone(),
                nthreads: w.info.nthreads,
                memory_limit: w.info.memory_limit,
                managed: w.nbytes,
                spilled: w.load.spilled_bytes,
                rss: w.load.rss,
                cpu_percent: w.load.cpu_percent,
                processing: w.processing.len(),
                executing: w.load.executing,
                keys: w.has_what.len(),
                status: match w.status {
                    WorkerStatus::Running => "running",
                    WorkerStatus::Paused => "paused",
                    WorkerStatus::Retiring => "retiring",
                },
                resources: w.info.resources.to_string(),
            })
            .collect();
        let cluster = ClusterRow {
            adaptive_target: with_target.then(|| adaptive_target(&self.adaptive_input())),
            waiting: self.count(TaskState::Waiting),
            queued: self.count(TaskState::Queued) + self.count(TaskState::NoWorker),
            processing: self.count(TaskState::Processing),
            memory: self.count(TaskState::Memory),
        };
        self.feed
            .update(cursor, workers, cluster, now, self.started_at)
    }

    fn adaptive_input(&self) -> AdaptiveInput {
        // Expected work: queued tasks at their prefix's average, processing at what was charged.
        let queued_seconds: f64 = self
            .classes
            .iter()
            .flat_map(|c| c.queue.values())
            .filter_map(|&id| self.tasks.get(id))
            .map(|t| self.expected_us(t.prefix) as f64 / 1e6)
            .sum();
        let processing_seconds: f64 = self
            .workers
            .values()
            .map(|w| w.occupancy_us as f64 / 1e6)
            .sum();
        AdaptiveInput {
            queued: self.classes.iter().map(|c| c.queue.len()).sum(),
            queued_seconds,
            processing_seconds,
            workers: self
                .workers
                .values()
                .map(|w| AdaptiveLoad {
                    nthreads: w.info.nthreads,
                    processing: w.processing.len(),
                    nbytes: w.nbytes,
                    memory_limit: w.info.memory_limit,
                })
                .collect(),
            target_duration: Duration::from_secs_f64(self.config.target_duration_s.max(0.0)),
        }
    }
}

/// A spec's task in [`State::update_graph`]: whether the graph made it, and whether its client
/// wants it afresh (marked once the graph's tasks are in).
#[derive(Clone, Copy)]
struct Placed {
    id: TaskId,
    new: bool,
    fresh: bool,
}

impl Placed {
    fn known(id: TaskId) -> Placed {
        Placed {
            id,
            new: false,
            fresh: false,
        }
    }

    fn new(id: TaskId) -> Placed {
        Placed {
            id,
            new: true,
            fresh: false,
        }
    }

    /// The tasks the graph made, in the order made.
    fn new_ids(placed: &[Option<Placed>]) -> impl Iterator<Item = TaskId> + '_ {
        placed.iter().flatten().filter(|p| p.new).map(|p| p.id)
    }
}

/// Results to free, sent as one `FreeKeys` per worker once a release is done: finishing a
/// reduction over a million inputs frees a million results, which should not be a million
/// messages.
#[derive(Default)]
struct Frees(BTreeMap<WorkerId, Vec<Key>>);

impl Frees {
    fn add(&mut self, worker: WorkerId, key: Key) {
        self.0.entry(worker).or_default().push(key);
    }

    fn send(self, out: &mut impl Outbox) {
        for (worker, keys) in self.0 {
            out.to_worker(worker, FromScheduler::FreeKeys { keys }.into());
        }
    }
}

/// Tells `client` that each of `keys` erred with `error`: a graph refused whole.
/// The task in `slot`, if `worker` holds its result ([`Holdings::ids`]).
/// `items` without repeats, each where it first appears.
fn unique_in_order<T: Clone + Eq + std::hash::Hash + Ord>(mut items: Vec<T>) -> Vec<T> {
    if items.len() <= 16 {
        // Few (the common case): a quadratic pass is cheaper than a hash set.
        let mut unique: Vec<T> = Vec::with_capacity(items.len());
        for x in items {
            if !unique.contains(&x) {
                unique.push(x);
            }
        }
        return unique;
    }
    if items.is_sorted_by(|a, b| a < b) {
        // Strictly increasing (a wide reduction's inputs, in slot order): no repeats.
        return items;
    }
    let mut seen: FxHashSet<T> = FxHashSet::default();
    items.retain(|x| seen.insert(x.clone()));
    items
}

/// Whether task `id` is processing on `worker`.
fn is_on(tasks: &Table<Task>, id: TaskId, worker: WorkerId) -> bool {
    tasks
        .get(id)
        .is_some_and(|t| t.processing_on.get() == Some(worker))
}

fn held_at(tasks: &Table<Task>, slot: u32, worker: WorkerId) -> Option<TaskId> {
    let id = tasks.id_at(slot)?;
    tasks
        .get(id)
        .is_some_and(|t| t.who_has.contains(&worker))
        .then_some(id)
}

/// The task in `slot`, if `client` holds it ([`Holdings::ids`]).
fn wanted_at(tasks: &Table<Task>, slot: u32, client: ClientId) -> Option<TaskId> {
    let id = tasks.id_at(slot)?;
    tasks
        .get(id)
        .is_some_and(|t| t.wanted_by.contains(&client))
        .then_some(id)
}

fn refuse_graph(
    client: ClientId,
    keys: impl IntoIterator<Item = Key>,
    error: &TaskError,
    out: &mut impl Outbox,
) {
    for key in keys {
        let failure = TaskFailure {
            key: key.clone(),
            error: error.clone(),
        };
        out.to_client(
            client,
            FromScheduler::KeyErred {
                key,
                failure: Box::new(failure),
            }
            .into(),
        );
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
