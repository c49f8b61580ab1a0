//! What the dashboard page shows, as the state machine records it: no I/O, no clock of its own.
//!
//! - [`TaskStream`]: a bounded ring of finished and failed tasks (worker, task prefix, start and
//!   stop), overwritten oldest first. Recording one is a copy into a slot; nothing is encoded
//!   until a page asks.
//! - [`Progress`]: per task prefix, how many tasks of the current computation are waiting,
//!   processing, in memory, erred or released, kept up to date on every state change by index
//!   (a task carries its prefix's [`PrefixId`]).
//! - [`Update`]: what one page gets per refresh, built by the state machine on request from what
//!   changed since the page's [`Cursor`].

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::graph::{GraphCursor, GraphRecorder, GraphUpdate};
pub use super::task::{Bucket, PrefixId};

/// Finished and failed tasks Dask's task stream keeps (`TaskStreamPlugin`'s `maxlen`). The ring's
/// memory (40 bytes a slot, 4 MB when full) is reserved up front but only touched as it fills.
pub const STREAM_CAPACITY: usize = 100_000;

/// The most task-stream events one update carries (the newest): a page draws a few minutes of
/// bars, and an update stays small however fast tasks finish.
pub const MAX_EVENTS_PER_UPDATE: usize = 2_000;

/// How long a prefix whose tasks are all done stays on the progress panel, in seconds, so a page
/// sees it complete before it goes.
pub const PROGRESS_LINGER_S: f64 = 30.0;

/// One task run as the task stream shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskEvent {
    pub worker: u64,
    pub prefix: PrefixId,
    /// Seconds since the epoch, on the scheduler's clock: when its result arrived, less the
    /// duration the worker measured.
    pub start: f64,
    pub stop: f64,
    /// Microseconds the worker spent fetching the task's inputs from peers before it ran
    /// (saturated at about 71 minutes).
    pub transfer_us: u32,
    pub erred: bool,
}

/// A ring of the last [`STREAM_CAPACITY`] task events, each numbered in order of arrival.
pub struct TaskStream {
    ring: Vec<TaskEvent>,
    capacity: usize,
    /// Sequence number the next event gets (events recorded since start).
    next: u64,
}

impl TaskStream {
    pub fn new(capacity: usize) -> Self {
        TaskStream {
            ring: Vec::with_capacity(capacity),
            capacity: capacity.max(1),
            next: 0,
        }
    }

    pub fn record(&mut self, event: TaskEvent) {
        if self.ring.len() < self.capacity {
            self.ring.push(event);
        } else {
            let slot = (self.next % self.capacity as u64) as usize;
            self.ring[slot] = event;
        }
        self.next += 1;
    }

    /// Sequence number of the next event to be recorded.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The events numbered `since` and after that are still in the ring, at most `limit` of the
    /// newest, oldest first; and how many newer than `since` were skipped (overwritten or over
    /// the limit).
    pub fn since(&self, since: u64, limit: usize) -> (Vec<TaskEvent>, u64) {
        let oldest = self.next - self.ring.len() as u64;
        let from = since.clamp(oldest, self.next);
        let from_limited = from.max(self.next.saturating_sub(limit as u64));
        let events = (from_limited..self.next)
            .map(|seq| self.ring[(seq % self.capacity as u64) as usize])
            .collect();
        let skipped = from_limited - since.min(self.next);
        (events, skipped)
    }
}

/// Tasks of one prefix, by where they are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrefixCounts {
    pub waiting: u64,
    pub processing: u64,
    pub memory: u64,
    pub erred: u64,
    /// Released tasks still known, plus the tasks of this computation forgotten since.
    pub released: u64,
}

impl PrefixCounts {
    fn slot(&mut self, b: Bucket) -> &mut u64 {
        match b {
            Bucket::Released => &mut self.released,
            Bucket::Waiting => &mut self.waiting,
            Bucket::Processing => &mut self.processing,
            Bucket::Memory => &mut self.memory,
            Bucket::Erred => &mut self.erred,
        }
    }

    /// Counts one task more in `b`.
    pub fn add(&mut self, b: Bucket) {
        *self.slot(b) += 1;
    }

    /// Counts one task less in `b`.
    pub fn remove(&mut self, b: Bucket) {
        let n = self.slot(b);
        *n = n.saturating_sub(1);
    }

    /// A task counted in `from` is now in `to`.
    pub fn moved(&mut self, from: Bucket, to: Bucket) {
        if from != to {
            self.remove(from);
            self.add(to);
        }
    }

    pub fn total(&self) -> u64 {
        self.waiting + self.processing + self.memory + self.erred + self.released
    }

    /// Tasks waiting or processing.
    pub fn pending(&self) -> u64 {
        self.waiting + self.processing
    }
}

struct Prefix {
    name: String,
    counts: PrefixCounts,
    /// Of `counts.released`, the tasks forgotten (no longer known to the scheduler).
    forgotten: u64,
    /// The graph update that last added tasks of this prefix.
    graph: u64,
    /// When a task of this prefix last finished or failed (seconds since the epoch).
    last_done: f64,
}

/// Per-prefix task counts of the current computations.
#[derive(Default)]
pub struct Progress {
    prefixes: Vec<Prefix>,
    ids: FxHashMap<String, PrefixId>,
    /// The prefix interned last: a graph's tasks mostly come in runs of one prefix, and comparing
    /// a name is cheaper than hashing it.
    last: PrefixId,
    /// Graph updates seen (`update_graph` calls).
    graph: u64,
}

impl Progress {
    /// The id of prefix `name`, made on first use.
    pub fn intern(&mut self, name: &str) -> PrefixId {
        if self
            .prefixes
            .get(self.last as usize)
            .is_some_and(|p| p.name == name)
        {
            return self.last;
        }
        if let Some(&id) = self.ids.get(name) {
            self.last = id;
            return id;
        }
        let id = self.prefixes.len() as PrefixId;
        self.prefixes.push(Prefix {
            name: name.to_owned(),
            counts: PrefixCounts::default(),
            forgotten: 0,
            graph: 0,
            last_done: f64::NEG_INFINITY,
        });
        self.ids.insert(name.to_owned(), id);
        self.last = id;
        id
    }

    /// A client's graph update begins: the tasks it adds to a prefix with nothing pending start
    /// a new computation of that prefix.
    pub fn begin_graph(&mut self) {
        self.graph += 1;
    }

    /// A task of `prefix` was added (as released).
    pub fn added(&mut self, prefix: PrefixId) {
        let graph = self.graph;
        let Some(p) = self.prefixes.get_mut(prefix as usize) else {
            return;
        };
        if p.graph != graph && p.counts.pending() == 0 {
            // The previous computation of this prefix is over: its forgotten tasks leave the
            // bar; results still held stay.
            p.counts.released -= p.forgotten.min(p.counts.released);
            p.forgotten = 0;
        }
        p.graph = graph;
        p.counts.released += 1;
    }

    /// A task of `prefix` moved between buckets.
    pub fn moved(&mut self, prefix: PrefixId, from: Bucket, to: Bucket) {
        if from == to {
            return;
        }
        if let Some(p) = self.prefixes.get_mut(prefix as usize) {
            p.counts.moved(from, to);
        }
    }

    /// A task of `prefix` in bucket `from` was forgotten: it counts as released until the next
    /// computation of its prefix.
    pub fn forgotten(&mut self, prefix: PrefixId, from: Bucket) {
        self.moved(prefix, from, Bucket::Released);
        if let Some(p) = self.prefixes.get_mut(prefix as usize) {
            p.forgotten += 1;
        }
    }

    /// A task of `prefix` finished or failed at `now`.
    pub fn done(&mut self, prefix: PrefixId, now: f64) {
        if let Some(p) = self.prefixes.get_mut(prefix as usize) {
            p.last_done = now;
        }
    }

    /// The id of prefix `name`, if it was ever seen.
    pub fn id_of(&self, name: &str) -> Option<PrefixId> {
        self.ids.get(name).copied()
    }

    pub fn name(&self, prefix: PrefixId) -> Option<&str> {
        self.prefixes.get(prefix as usize).map(|p| p.name.as_str())
    }

    pub fn counts(&self, name: &str) -> Option<PrefixCounts> {
        let id = self.id_of(name)?;
        self.prefixes.get(id as usize).map(|p| p.counts)
    }

    /// The prefixes a page shows at `now`: those with tasks pending, results held or errors,
    /// and those that finished within [`PROGRESS_LINGER_S`], in order of first appearance.
    pub fn rows(&self, now: f64) -> Vec<PrefixRow> {
        self.prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let c = &p.counts;
                c.pending() > 0
                    || c.memory > 0
                    || c.erred > 0
                    || (now - p.last_done < PROGRESS_LINGER_S && c.total() > 0)
            })
            .map(|(id, p)| PrefixRow {
                id: id as PrefixId,
                counts: p.counts,
            })
            .collect()
    }
}

/// One prefix on the progress panel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixRow {
    pub id: PrefixId,
    #[serde(flatten)]
    pub counts: PrefixCounts,
}

/// One worker in the workers table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerRow {
    pub id: u64,
    pub name: String,
    pub address: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    /// Bytes of results the scheduler knows it holds (up to date with every task).
    pub managed: u64,
    /// Bytes spilled to disk, from its last heartbeat.
    pub spilled: u64,
    /// Its process's resident set, from its last heartbeat (0: not measured).
    pub rss: u64,
    /// Percent of one core its process used between its last two heartbeats (`None`: not
    /// reported yet).
    pub cpu_percent: Option<f64>,
    pub processing: usize,
    pub executing: u32,
    pub keys: usize,
    /// `running`, `paused` or `retiring`.
    pub status: &'static str,
    /// `GPU=1,MEM=8e9`, empty when it offers none.
    pub resources: String,
}

/// The cluster as a whole, for the page's charts over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterRow {
    /// Workers the scheduler would like (Dask's `adaptive_target`); only in the updates that
    /// asked for it, as it walks every queued task.
    pub adaptive_target: Option<usize>,
    /// Tasks waiting for their inputs.
    pub waiting: usize,
    /// Tasks ready and waiting for a worker (queued, or no worker can run them).
    pub queued: usize,
    pub processing: usize,
    pub memory: usize,
}

/// The scheduler process itself, for the cluster panel: measured by the event loop every second
/// (the state machine has no clock and does no I/O).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SchedulerRow {
    /// Percent of one core the scheduler process used over the last second (`None`: not
    /// measured yet, or no `/proc`).
    pub cpu_percent: Option<f64>,
    /// Its resident set, bytes (`None`: not measured).
    pub rss: Option<u64>,
}

/// What a page has already been sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The sequence number of the first task event not sent yet.
    pub events: u64,
    /// The graph structure and state changes it has.
    pub graph: GraphCursor,
}

/// One refresh of a page.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Update {
    /// Seconds since the epoch, on the scheduler's clock, when this update was made.
    pub now: f64,
    /// When the scheduler started: a page that sees it change knows it talks to a new scheduler.
    pub started_at: f64,
    pub workers: Vec<WorkerRow>,
    pub cluster: ClusterRow,
    /// The scheduler's own CPU and memory (filled in by the event loop).
    pub scheduler: SchedulerRow,
    pub progress: Vec<PrefixRow>,
    /// Names of the prefixes this update refers to: `[id, name]` (a few per update, however
    /// many prefixes the scheduler has seen).
    pub prefixes: Vec<(PrefixId, String)>,
    /// New task-stream events: `[worker id, prefix id, start, stop, erred (0/1), transfer]`,
    /// start and stop in milliseconds before `now`, transfer the milliseconds spent fetching
    /// inputs before the start.
    pub stream: Vec<(u64, PrefixId, f64, f64, u8, f64)>,
    /// New events not sent (overwritten in the ring, or beyond an update's limit).
    pub stream_skipped: u64,
    /// The graph panel's news: the whole graph when its structure changed, else the state
    /// changes; absent when nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphUpdate>,
    /// The cursor for the next update.
    #[serde(skip)]
    pub cursor: Cursor,
}

/// The dashboard's data in the state machine.
pub struct Feed {
    pub stream: TaskStream,
    pub progress: Progress,
    pub graph: GraphRecorder,
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            stream: TaskStream::new(STREAM_CAPACITY),
            progress: Progress::default(),
            graph: GraphRecorder::default(),
        }
    }
}

impl Feed {
    /// A task ran on `worker` for `duration_us`, after `transfer_us` fetching its inputs, and
    /// its report arrived at `now`.
    pub fn task_done(
        &mut self,
        worker: u64,
        prefix: PrefixId,
        (duration_us, transfer_us): (u64, u64),
        now: f64,
        erred: bool,
    ) {
        self.stream.record(TaskEvent {
            worker,
            prefix,
            start: now - duration_us as f64 / 1e6,
            stop: now,
            transfer_us: u32::try_from(transfer_us).unwrap_or(u32::MAX),
            erred,
        });
        self.progress.done(prefix, now);
    }

    /// The update for a page at `cursor`, with the workers table the state machine made.
    pub fn update(
        &self,
        cursor: Cursor,
        workers: Vec<WorkerRow>,
        cluster: ClusterRow,
        now: f64,
        started_at: f64,
    ) -> Update {
        let (events, stream_skipped) = self.stream.since(cursor.events, MAX_EVENTS_PER_UPDATE);
        let ms_ago = |t: f64| ((now - t) * 1e6).round() / 1e3;
        let stream = events
            .iter()
            .map(|e| {
                (
                    e.worker,
                    e.prefix,
                    ms_ago(e.start),
                    ms_ago(e.stop),
                    u8::from(e.erred),
                    f64::from(e.transfer_us) / 1e3,
                )
            })
            .collect();
        let progress = self.progress.rows(now);
        let (graph, graph_cursor) = self.graph.update(cursor.graph);
        let mut ids: Vec<PrefixId> = progress
            .iter()
            .map(|r| r.id)
            .chain(events.iter().map(|e| e.prefix))
            .chain(self.graph.prefixes_to_send(cursor.graph).iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let prefixes = ids
            .into_iter()
            .filter_map(|id| self.progress.name(id).map(|n| (id, n.to_owned())))
            .collect();
        Update {
            now,
            started_at,
            workers,
            cluster,
            scheduler: SchedulerRow::default(),
            progress,
            prefixes,
            stream,
            stream_skipped,
            graph,
            cursor: Cursor {
                events: self.stream.next_seq(),
                graph: graph_cursor,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u64) -> TaskEvent {
        TaskEvent {
            worker: i,
            prefix: 0,
            start: i as f64,
            stop: i as f64 + 0.5,
            transfer_us: 0,
            erred: false,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_and_says_what_it_skipped() {
        let mut s = TaskStream::new(4);
        let (none, skipped) = s.since(0, 10);
        assert!(none.is_empty());
        assert_eq!(skipped, 0);
        for i in 0..3 {
            s.record(ev(i));
        }
        let (got, skipped) = s.since(1, 10);
        assert_eq!(got.iter().map(|e| e.worker).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(skipped, 0);
        for i in 3..10 {
            s.record(ev(i));
        }
        assert_eq!(s.next_seq(), 10);
        // 0..6 were overwritten: asking from 2 gets 6..10 and four skipped.
        let (got, skipped) = s.since(2, 10);
        assert_eq!(
            got.iter().map(|e| e.worker).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        assert_eq!(skipped, 4);
        // A limit keeps the newest.
        let (got, skipped) = s.since(6, 2);
        assert_eq!(got.iter().map(|e| e.worker).collect::<Vec<_>>(), [8, 9]);
        assert_eq!(skipped, 2);
        // A cursor from the future (a page of an earlier scheduler) gets nothing and no error.
        let (got, skipped) = s.since(50, 10);
        assert!(got.is_empty());
        assert_eq!(skipped, 0);
    }

    #[test]
    fn a_zero_capacity_ring_still_keeps_one_event() {
        let mut s = TaskStream::new(0);
        s.record(ev(1));
        s.record(ev(2));
        let (got, _) = s.since(0, 10);
        assert_eq!(got.iter().map(|e| e.worker).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_new_computation_of_a_prefix_drops_the_forgotten_tasks_of_the_last() {
        let mut p = Progress::default();
        p.begin_graph();
        let a = p.intern("a");
        for _ in 0..3 {
            p.added(a);
        }
        assert_eq!(p.intern("a"), a);
        for _ in 0..3 {
            p.moved(a, Bucket::Released, Bucket::Processing);
        }
        p.moved(a, Bucket::Processing, Bucket::Memory);
        p.moved(a, Bucket::Processing, Bucket::Memory);
        p.moved(a, Bucket::Processing, Bucket::Erred);
        p.moved(a, Bucket::Memory, Bucket::Released);
        p.forgotten(a, Bucket::Released);
        let c = p.counts("a").unwrap();
        assert_eq!((c.memory, c.erred, c.released, c.total()), (1, 1, 1, 3));
        // Nothing pending: the next graph's tasks of `a` start afresh, keeping what is held.
        p.begin_graph();
        p.added(a);
        p.added(a);
        let c = p.counts("a").unwrap();
        assert_eq!((c.memory, c.erred, c.released, c.total()), (1, 1, 2, 4));
    }

    #[test]
    fn finished_prefixes_linger_then_leave_the_panel() {
        let mut p = Progress::default();
        p.begin_graph();
        let a = p.intern("a");
        p.added(a);
        p.moved(a, Bucket::Released, Bucket::Processing);
        assert_eq!(p.rows(0.0).len(), 1);
        p.moved(a, Bucket::Processing, Bucket::Memory);
        p.done(a, 100.0);
        p.moved(a, Bucket::Memory, Bucket::Released);
        p.forgotten(a, Bucket::Released);
        assert_eq!(p.rows(100.0 + PROGRESS_LINGER_S - 1.0).len(), 1);
        assert!(p.rows(100.0 + PROGRESS_LINGER_S + 1.0).is_empty());
    }

    #[test]
    fn an_update_sends_new_events_once_and_names_the_prefixes_it_refers_to() {
        let mut f = Feed::default();
        let a = f.progress.intern("a");
        let b = f.progress.intern("b");
        assert_eq!((f.progress.intern("a"), f.progress.intern("b")), (a, b));
        f.task_done(7, a, (500_000, 250_000), 10.0, false);
        let u = f.update(
            Cursor::default(),
            Vec::new(),
            ClusterRow::default(),
            11.0,
            1.0,
        );
        assert_eq!(u.prefixes, [(a, "a".to_owned())]);
        assert_eq!(u.stream, [(7, a, 1500.0, 1000.0, 0, 250.0)]);
        f.task_done(8, b, (0, u64::MAX), 11.5, true);
        let u2 = f.update(u.cursor, Vec::new(), ClusterRow::default(), 12.0, 1.0);
        assert_eq!(u2.prefixes, [(b, "b".to_owned())]);
        // A transfer too long for the ring's slot is kept at its longest.
        assert_eq!(
            u2.stream,
            [(8, b, 500.0, 500.0, 1, f64::from(u32::MAX) / 1e3)]
        );
        let json = serde_json::to_value(&u2).unwrap();
        assert!(json.get("cursor").is_none());
        assert_eq!(
            json["stream"][0],
            serde_json::json!([8, 1, 500.0, 500.0, 1, f64::from(u32::MAX) / 1e3])
        );
    }
}
