//! The worker's logic, without I/O: which tasks to run, which inputs to fetch and from whom, what
//! to tell the scheduler, when to pause. Every handler takes the worker's holdings (what its
//! store has) and an [`Effects`] that collects what to do; the tokio layer around it (`lib.rs`)
//! carries the effects out, and tests record them.

use bytes::Bytes;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use rask_core::protocol::{ComputeTask, Envelope, ToScheduler};
use rask_core::table::Table;
use rask_core::{Encoded, KernelError, Key, TaskSpec};

use crate::memory::{MemoryPolicy, MemorySample};

/// Results up to this size travel to the scheduler (and on to a waiting client) with the
/// completion message; larger ones are fetched from the worker.
pub(crate) const INLINE_RESULT_MAX: usize = 1 << 20;

/// What the worker's results store holds, as the logic needs to know it.
pub(crate) trait Holdings {
    /// Bytes of `key`'s result when the store has it.
    fn nbytes(&self, key: &Key) -> Option<u64>;
}

/// What the logic asks the worker's I/O layer to do.
pub(crate) trait Effects {
    /// Send a message to the scheduler.
    fn send(&mut self, msg: Envelope<ToScheduler>);
    /// Fetch these keys, each group's from its holders (tried in order), then report with
    /// [`WorkerState::fetched`].
    fn fetch(&mut self, groups: Vec<FetchFrom>);
    /// Run these tasks (their inputs are in the store), most urgent first; report each with
    /// [`WorkerState::done`].
    fn execute(&mut self, tasks: Vec<Ready>);
    /// Run `task` as soon as `after` (handed to the executor, watched) finishes here, with its
    /// result as the input of that name (the other inputs are in the store), and report it with
    /// [`WorkerState::done`] after `after`; if `after` fails or is freed, drop `task` unreported
    /// (this logic drops it too).
    fn execute_after(&mut self, task: Ready, after: Key);
    /// Drop these results from the store.
    fn free(&mut self, keys: Vec<Key>);
    /// Stop (`true`) or resume (`false`) starting new tasks on the executor.
    fn pause(&mut self, paused: bool);
    /// Spill stored results until at most this many bytes stay in memory.
    fn spill_to(&mut self, bytes: u64);
    /// Send the encoded result of `key` along with `TaskFinished` (the store reads it).
    fn finished_with_data(&mut self, key: Key, nbytes: u64, duration_us: u64);
}

/// The worker's tasks by what they wait for (Dask's worker task states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TaskCounts {
    /// Waiting for inputs to arrive from peers.
    pub waiting: usize,
    /// Handed to the executor: queued there (`ready`) or running (`executing`).
    pub handed_over: usize,
    /// Inputs being fetched from peers, and their bytes.
    pub flight: usize,
    pub flight_bytes: u64,
}

/// Keys to fetch from the same holders.
#[derive(Debug)]
pub(crate) struct FetchFrom {
    /// The peers' addresses, to try in order.
    pub holders: Vec<String>,
    /// Each key with its size as the scheduler knew it (0 for a replica, whose size it does
    /// not send).
    pub keys: Vec<(Key, u64)>,
}

/// An input being fetched.
struct Flight {
    /// Its size as the scheduler knew it (0 for a replica, whose size it does not send).
    nbytes: u64,
    /// The tasks waiting for it (none for a replica): most inputs have one.
    waiters: SmallVec<[Key; 1]>,
}

/// A task ready to run.
#[derive(Debug)]
pub(crate) struct Ready {
    pub spec: Box<TaskSpec>,
    pub priority: u64,
    /// Tasks may be handed over to run after it ([`Effects::execute_after`]).
    pub watched: bool,
}

/// A task assigned to this worker and not finished yet.
struct Pending {
    /// Taken (not copied) when the task is handed to the executor: `None` while it runs.
    spec: Option<Box<TaskSpec>>,
    priority: u64,
    /// Inputs not in the store yet: fetched, or computed here ([`WorkerState::local_waiters`]).
    missing: usize,
    send_result: bool,
    /// Sent ahead of its inputs, or handed over with tasks waiting for it: tasks may be
    /// handed over to run after it ([`Effects::execute_after`]).
    watched: bool,
    /// The longest fetch of its inputs from peers, µs (fetches of one batch run together).
    transfer_us: u64,
}

/// The worker's logic.
pub(crate) struct WorkerState {
    tasks: FxHashMap<Key, Pending>,
    /// Tasks assigned here, and the tasks sent ahead of them ([`ComputeTask::after`]) that wait
    /// for their results. A task leaving is taken off the lists of its inputs
    /// ([`WorkerState::forget`]), so each entry counts once in its `missing`.
    local_waiters: FxHashMap<Key, Vec<Key>>,
    /// Tasks handed over to run after an input still running here ([`Effects::execute_after`]),
    /// and that input; they stay on its [`Self::local_waiters`] list until it finishes.
    parked: FxHashMap<Key, Key>,
    /// Keys being fetched (for tasks or for the scheduler's `AcquireReplicas`), and the tasks
    /// waiting for each. A table: keys arrive in the order they were asked for, so each is found
    /// at the slot after the last ([`Table::id_next`]), with no lookup in its index.
    in_flight: Table<Flight>,
    /// The slot of `in_flight` looked at first.
    flight_near: u32,
    /// The sizes in `in_flight`, summed.
    in_flight_bytes: u64,
    /// Inputs fetched for tasks that then became ready: the scheduler learns of these copies
    /// after the next task here ends ([`Self::report_copies`]), so that a wide task's result is
    /// not queued at the scheduler behind the report of its half a million fetched inputs.
    unreported: Vec<(Key, u64)>,
    memory: MemoryPolicy,
    paused: bool,
    /// The last memory sample, for the heartbeat.
    last_sample: MemorySample,
}

impl WorkerState {
    pub fn new(memory: MemoryPolicy) -> Self {
        WorkerState {
            tasks: FxHashMap::default(),
            local_waiters: FxHashMap::default(),
            parked: FxHashMap::default(),
            in_flight: Table::default(),
            flight_near: 0,
            in_flight_bytes: 0,
            unreported: Vec::new(),
            memory,
            paused: false,
            last_sample: MemorySample::default(),
        }
    }

    #[cfg(test)]
    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Tasks assigned and not finished (waiting for inputs, queued or running).
    #[cfg(test)]
    pub fn assigned(&self) -> usize {
        self.tasks.len()
    }

    pub fn last_sample(&self) -> MemorySample {
        self.last_sample
    }

    /// Tasks assigned and not finished, by what they wait for.
    pub fn task_counts(&self) -> TaskCounts {
        let mut counts = TaskCounts {
            flight: self.in_flight.len(),
            flight_bytes: self.in_flight_bytes,
            ..TaskCounts::default()
        };
        for p in self.tasks.values() {
            if p.missing > 0 {
                counts.waiting += 1;
            } else if p.spec.is_none() {
                counts.handed_over += 1;
            }
        }
        counts
    }

    /// Notes that `waiter` (if any) waits for `key`; whether `key` is to be fetched (it was not
    /// in flight already).
    fn start_fetch(&mut self, key: &Key, nbytes: u64, waiter: Option<&Key>) -> bool {
        let waiters = waiter.into_iter().cloned().collect();
        match self.in_flight.find(key) {
            Ok(id) => {
                if let Some(flight) = self.in_flight.get_mut(id) {
                    flight.waiters.extend(waiters);
                }
                false
            }
            Err(vacant) => {
                let flight = Flight { nbytes, waiters };
                if self
                    .in_flight
                    .insert_vacant(vacant, key.clone(), flight)
                    .is_none()
                {
                    // 2³² keys in flight: past any worker's memory long before.
                    tracing::error!(%key, "too many inputs in flight to track another");
                }
                self.in_flight_bytes += nbytes;
                true
            }
        }
    }

    /// The fetch of `key` ended: the tasks that waited for it.
    fn end_fetch(&mut self, key: &Key) -> SmallVec<[Key; 1]> {
        let Some(id) = self.in_flight.id_next(key, &mut self.flight_near) else {
            return SmallVec::new();
        };
        match self.in_flight.remove(id) {
            Some((_, flight)) => {
                self.in_flight_bytes = self.in_flight_bytes.saturating_sub(flight.nbytes);
                flight.waiters
            }
            None => SmallVec::new(),
        }
    }

    /// The scheduler assigned tasks: run the ready ones, fetch the inputs of the others.
    pub fn compute(
        &mut self,
        batch: Vec<ComputeTask>,
        held: &impl Holdings,
        fx: &mut impl Effects,
    ) {
        let mut fetches = Vec::new();
        let mut ready = Vec::new();
        for ct in batch {
            let key = ct.spec.key.clone();
            if self.tasks.contains_key(&key) {
                continue;
            }
            if let Some(nbytes) = held.nbytes(&key) {
                // Already computed here (a recompute after a lost peer, or a duplicate).
                self.report_held(key, nbytes, ct.send_result, fx);
                continue;
            }
            let mut missing = 0;
            let mut after = Vec::new();
            let mut lost = None;
            for dep in ct.after {
                if held.nbytes(&dep).is_some() {
                    continue;
                }
                if !self.tasks.contains_key(&dep) {
                    // It failed or was dropped here before this task arrived: the scheduler
                    // learns that from its report and decides this task's fate.
                    lost = Some(dep);
                    break;
                }
                after.push(dep);
            }
            if let Some(dep) = lost {
                tracing::debug!(task = %key, input = %dep, "dropping a task sent ahead of an input no longer computed here");
                continue;
            }
            let sent_ahead = !after.is_empty();
            // With no other input missing, it may run right after that one ([`Self::hand_after`]).
            let follows = match after.as_slice() {
                [dep] => Some(dep.clone()),
                _ => None,
            };
            for dep in after {
                missing += 1;
                self.local_waiters.entry(dep).or_default().push(key.clone());
            }
            for group in ct.who_has {
                let n = group.inputs.len();
                let mut keys = Vec::new();
                let mut reserved = false;
                for (i, (at, nbytes)) in group.inputs.into_iter().enumerate() {
                    let Some(dep) = ct.spec.inputs.get(at as usize) else {
                        // Not one of its inputs: nothing to fetch for it (the task reads only
                        // the inputs its spec names, and fails naming one not here).
                        tracing::warn!(task = %key, position = at, "who_has names an input position the task does not have");
                        continue;
                    };
                    if held.nbytes(dep).is_some() {
                        continue;
                    }
                    if !reserved {
                        // One growth for a wide task's inputs, not one per doubling, at the
                        // group's first input absent here (a group held here has none).
                        self.in_flight.reserve(n - i);
                        keys.reserve(n - i);
                        reserved = true;
                    }
                    missing += 1;
                    if self.start_fetch(dep, nbytes, Some(&key)) {
                        keys.push((dep.clone(), nbytes));
                    }
                }
                if !keys.is_empty() {
                    fetches.push(FetchFrom {
                        holders: group.holders,
                        keys,
                    });
                }
            }
            self.tasks.insert(
                key.clone(),
                Pending {
                    spec: Some(ct.spec),
                    priority: ct.priority,
                    missing,
                    send_result: ct.send_result,
                    watched: sent_ahead,
                    transfer_us: 0,
                },
            );
            if missing == 0 {
                ready.push(key);
            } else if let Some(dep) = follows
                && self.hand_after(&key, &dep, fx)
            {
                self.follow(key, fx);
            }
        }
        self.run(ready, fx);
        if !fetches.is_empty() {
            fx.fetch(fetches);
        }
    }

    /// The scheduler released results: drop them, and forget tasks not started.
    pub fn free_keys(&mut self, keys: Vec<Key>, fx: &mut impl Effects) {
        for k in &keys {
            self.forget(k);
        }
        fx.free(keys);
        self.report_copies(fx);
    }

    /// Tells the scheduler of the inputs fetched for tasks that have ended since (or were
    /// dropped): after their results, which the scheduler then takes up first.
    fn report_copies(&mut self, fx: &mut impl Effects) {
        if !self.unreported.is_empty() {
            let keys = std::mem::take(&mut self.unreported);
            fx.send(ToScheduler::AddKeys { keys }.into());
        }
    }

    /// Drops task `key` (not run), and what was sent ahead of it ([`Self::drop_waiting_on`]).
    fn forget(&mut self, key: &Key) {
        if self.take(key) {
            self.drop_waiting_on(key);
        }
    }

    /// Removes task `key`, taking it off the lists of the inputs it waits for here, so that a
    /// copy sent again counts their finish once. Whether it was there.
    fn take(&mut self, key: &Key) -> bool {
        let Some(p) = self.tasks.remove(key) else {
            return false;
        };
        let after = match self.parked.is_empty() {
            true => None,
            false => self.parked.remove(key),
        };
        if p.missing > 0 && !self.local_waiters.is_empty() {
            match (&p.spec, after) {
                (Some(spec), _) => {
                    for input in &spec.inputs {
                        self.unwait(input, key);
                    }
                }
                (None, Some(input)) => self.unwait(&input, key),
                (None, None) => {}
            }
        }
        true
    }

    /// Takes `task` off the list of the tasks waiting for `input` here.
    fn unwait(&mut self, input: &Key, task: &Key) {
        if let Some(list) = self.local_waiters.get_mut(input) {
            list.retain(|t| t != task);
            if list.is_empty() {
                self.local_waiters.remove(input);
            }
        }
    }

    /// Hands `task` over to run right after `input` (its only missing input), when `input` has
    /// been handed to the executor watched; whether it did.
    fn hand_after(&mut self, task: &Key, input: &Key, fx: &mut impl Effects) -> bool {
        if !self
            .tasks
            .get(input)
            .is_some_and(|p| p.spec.is_none() && p.watched)
        {
            return false;
        }
        let Some(p) = self.tasks.get_mut(task) else {
            return false;
        };
        if p.missing != 1 {
            return false;
        }
        let Some(spec) = p.spec.take() else {
            return false;
        };
        p.watched = true;
        let ready = Ready {
            spec,
            priority: p.priority,
            watched: true,
        };
        self.parked.insert(task.clone(), input.clone());
        fx.execute_after(ready, input.clone());
        true
    }

    /// `key` was handed over: the tasks waiting here for it alone follow it, and theirs in turn.
    fn follow(&mut self, key: Key, fx: &mut impl Effects) {
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            let Some(list) = self.local_waiters.get(&k) else {
                continue;
            };
            let next: Vec<Key> = list
                .iter()
                .filter(|t| {
                    self.tasks
                        .get(*t)
                        .is_some_and(|p| p.missing == 1 && p.spec.is_some())
                })
                .cloned()
                .collect();
            for t in next {
                if self.hand_after(&t, &k, fx) {
                    stack.push(t);
                }
            }
        }
    }

    /// `key` will not be computed here (it failed or was dropped): the tasks sent ahead of it
    /// are dropped, and those sent ahead of them.
    fn drop_waiting_on(&mut self, key: &Key) {
        if self.local_waiters.is_empty() {
            return;
        }
        let mut stack = vec![key.clone()];
        while let Some(k) = stack.pop() {
            for t in self.local_waiters.remove(&k).unwrap_or_default() {
                if self.take(&t) {
                    stack.push(t);
                }
            }
        }
    }

    /// `key` finished here: the tasks sent ahead of it that waited only for it are ready.
    fn finished_here(&mut self, key: &Key, ready: &mut Vec<Key>) {
        if self.local_waiters.is_empty() {
            return;
        }
        let Some(waiting) = self.local_waiters.remove(key) else {
            return;
        };
        for t in waiting {
            if let Some(p) = self.tasks.get_mut(&t) {
                p.missing = p.missing.saturating_sub(1);
                if p.missing == 0 {
                    if p.spec.is_none() {
                        // Handed over after `key`: the executor has started it.
                        self.parked.remove(&t);
                    } else {
                        ready.push(t);
                    }
                }
            }
        }
    }

    /// The scheduler asked for copies of a retiring peer's results.
    pub fn acquire_replicas(
        &mut self,
        keys: Vec<(Key, Vec<String>)>,
        held: &impl Holdings,
        fx: &mut impl Effects,
    ) {
        let mut fetches = Vec::new();
        let mut have = Vec::new();
        for (k, holders) in keys {
            match held.nbytes(&k) {
                Some(nbytes) => have.push((k, nbytes)),
                None if self.start_fetch(&k, 0, None) => fetches.push(FetchFrom {
                    holders,
                    keys: vec![(k, 0)],
                }),
                None => {}
            }
        }
        if !have.is_empty() {
            fx.send(ToScheduler::AddKeys { keys: have }.into());
        }
        if !fetches.is_empty() {
            fx.fetch(fetches);
        }
    }

    /// A task ran: its result (`Ok`, for the store), or it failed. Whether the task was still
    /// assigned here (one freed while it ran is not: its result is not kept).
    pub fn done(
        &mut self,
        key: Key,
        result: Result<&Encoded, KernelError>,
        duration_us: u64,
        fx: &mut impl Effects,
    ) -> bool {
        if !self.parked.is_empty()
            && let Some(input) = self.parked.remove(&key)
        {
            // Failed before the input it was handed over after (an input of its own could not
            // be read): no longer waiting for it.
            self.unwait(&input, &key);
        }
        let Some(p) = self.tasks.remove(&key) else {
            self.report_copies(fx);
            return false; // freed while it ran
        };
        match result {
            Ok(encoded) => {
                let mut ready = Vec::new();
                self.finished_here(&key, &mut ready);
                let nbytes = encoded.len() as u64;
                let blobs: Vec<Bytes> = (p.send_result && encoded.len() <= INLINE_RESULT_MAX)
                    .then(|| encoded.bytes().clone())
                    .into_iter()
                    .collect();
                let msg = ToScheduler::TaskFinished {
                    key,
                    nbytes,
                    duration_us,
                    transfer_us: p.transfer_us,
                };
                fx.send(Envelope::with_blobs(msg, blobs));
                self.report_copies(fx);
                // The tasks sent ahead of it run now, with no round trip to the scheduler.
                self.run(ready, fx);
                true
            }
            Err(error) => {
                // Whatever was sent ahead of it must not run: the scheduler fails it.
                self.drop_waiting_on(&key);
                fx.send(
                    ToScheduler::TaskErred {
                        key,
                        error,
                        duration_us,
                    }
                    .into(),
                );
                self.report_copies(fx);
                true
            }
        }
    }

    /// A fetch ended after `took_us`: `found` keys are in the store now (with their sizes); no
    /// holder could give the `missing` ones.
    pub fn fetched(
        &mut self,
        found: Vec<(Key, u64)>,
        missing: Vec<(Key, Vec<String>)>,
        took_us: u64,
        fx: &mut impl Effects,
    ) {
        let mut ready = Vec::new();
        for (key, _) in &found {
            for t in self.end_fetch(key) {
                if let Some(p) = self.tasks.get_mut(&t) {
                    p.transfer_us = p.transfer_us.max(took_us);
                    p.missing = p.missing.saturating_sub(1);
                    if p.missing == 0 {
                        ready.push(t);
                    }
                }
            }
        }
        if !ready.is_empty() {
            self.unreported.extend(found);
        } else if !found.is_empty() {
            fx.send(ToScheduler::AddKeys { keys: found }.into());
        }
        for (key, holders) in missing {
            // The tasks that need it are dropped; the scheduler recomputes the input (or finds
            // another holder) and assigns them again.
            for t in self.end_fetch(&key) {
                self.forget(&t);
            }
            fx.send(ToScheduler::MissingData { key, holders }.into());
        }
        self.run(ready, fx);
    }

    /// A memory sample: spill when the process is over the spill threshold, pause over the pause
    /// threshold, resume below it.
    pub fn memory(&mut self, sample: MemorySample, fx: &mut impl Effects) {
        self.last_sample = sample;
        let d = self.memory.decide(sample, self.paused);
        if let Some(bytes) = d.spill_to {
            fx.spill_to(bytes);
        }
        if d.paused != self.paused {
            self.paused = d.paused;
            if d.paused {
                tracing::warn!(
                    rss = sample.rss,
                    limit = self.memory.limit,
                    "worker paused: process memory is over the pause threshold; no new task starts"
                );
            } else {
                tracing::info!(
                    rss = sample.rss,
                    "worker resumed: process memory is back under the pause threshold"
                );
            }
            fx.pause(d.paused);
            fx.send(ToScheduler::Paused { paused: d.paused }.into());
        }
    }

    /// Hands ready tasks to the executor, most urgent first.
    fn run(&mut self, mut ready: Vec<Key>, fx: &mut impl Effects) {
        if ready.is_empty() {
            return;
        }
        ready.sort_by_key(|k| self.tasks.get(k).map(|p| p.priority));
        let mut batch = Vec::with_capacity(ready.len());
        let mut followed = Vec::new();
        for k in ready {
            let waited_for = !self.local_waiters.is_empty() && self.local_waiters.contains_key(&k);
            if let Some(p) = self.tasks.get_mut(&k)
                && let Some(spec) = p.spec.take()
            {
                p.watched |= waited_for;
                batch.push(Ready {
                    spec,
                    priority: p.priority,
                    watched: p.watched,
                });
                if waited_for {
                    followed.push(k);
                }
            }
        }
        fx.execute(batch);
        // The tasks sent ahead of these follow them on the executor.
        for k in followed {
            self.follow(k, fx);
        }
    }

    /// Whether task `key` is assigned here and not finished.
    #[cfg(test)]
    pub fn has_task(&self, key: &Key) -> bool {
        self.tasks.contains_key(key)
    }

    fn report_held(&mut self, key: Key, nbytes: u64, send_result: bool, fx: &mut impl Effects) {
        if send_result && nbytes as usize <= INLINE_RESULT_MAX {
            fx.finished_with_data(key, nbytes, 0);
        } else {
            let msg = ToScheduler::TaskFinished {
                key,
                nbytes,
                duration_us: 0,
                transfer_us: 0,
            };
            fx.send(msg.into());
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
