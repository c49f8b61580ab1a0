//! The worker's thread pool: runs task functions on OS threads, most urgent first, off the async
//! runtime.
//!
//! Jobs wait in one priority queue behind a mutex; a thread takes the job with the lowest
//! `priority` number (the oldest among equals), runs it, encodes its result and hands a [`Done`]
//! to the callback the worker gave, all on the same thread. Submitting costs one lock, plus a
//! condvar notify only when a thread is asleep waiting for work, so tiny tasks stay cheap.
//!
//! A job may also wait here for another one's result ([`Executor::submit_after`]): the thread
//! that finishes the first queues the second itself, with the result as its input, and goes on
//! to run it without sleeping. A chain of dependent tasks sent ahead to this worker then runs
//! link after link on one thread, with no hand-off through the worker's event loop (issue 18:
//! waking a thread on the other core was what a link cost).

use std::any::Any;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{self, AtomicBool, AtomicUsize};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustc_hash::{FxHashMap, FxHashSet};

use rask_core::function::Function;
use rask_core::{Encoded, FuncName, Inputs, KernelError, Key, SmallBytes};

/// A task ready to run: its function, payload and inputs.
pub struct Job {
    pub key: Key,
    pub func: Arc<dyn Function>,
    /// The function's name, for its errors.
    pub name: FuncName,
    pub payload: SmallBytes,
    pub inputs: Vec<Encoded>,
    /// Lower runs first (Dask's priority tuples, flattened by the scheduler).
    pub priority: u64,
    /// Whether jobs may be queued after it ([`Executor::submit_after`]): the executor keeps
    /// track of it until it finishes.
    pub watched: bool,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} {})", self.name, self.key)
    }
}

/// A finished job: its encoded result or error.
#[derive(Debug)]
pub struct Done {
    pub key: Key,
    /// The encoded value, or the task's error ([`KernelError::Panicked`] if it panicked).
    pub result: Result<Encoded, KernelError>,
    /// Time the thread spent on the job: running the function and encoding its result.
    pub duration: Duration,
}

/// Why an executor could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error("an executor needs at least one thread, got 0")]
    NoThreads,
    #[error("cannot start executor thread {name}: {source}")]
    Spawn { name: String, source: io::Error },
}

/// A pool of threads running [`Job`]s, most urgent first.
pub struct Executor {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the submitting side and the threads share.
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when a job arrives for a sleeping thread, and on shutdown.
    work: Condvar,
    /// Jobs taken from the queue whose [`Done`] is not built yet.
    executing: AtomicUsize,
    /// Whether jobs may be parked ([`Executor::submit_after`]): set by the submitting side when
    /// it parks one, cleared by [`Executor::cancel`] when none is; frees check it without the
    /// lock.
    any_parked: AtomicBool,
    on_done: Box<dyn Fn(Done) + Send + Sync>,
}

struct Queue {
    jobs: BinaryHeap<Queued>,
    /// Submission counter: keeps equal priorities first in, first out.
    next_seq: u64,
    /// Threads waiting on [`Shared::work`] that no notify has been sent for yet.
    sleeping: usize,
    /// While set, threads start no new job (the worker is over its memory's pause threshold).
    paused: bool,
    /// Notifies sent and not yet taken up by a waking thread. A thread that wakes takes one of
    /// these if there are any, else (a spurious wakeup) takes itself off `sleeping`, so the two
    /// always add up to the number of threads in the wait.
    wakeups: usize,
    stopping: bool,
    /// The watched jobs ([`Job::watched`]) queued, running or parked: jobs may be parked after
    /// these.
    watched: FxHashSet<Key>,
    /// Jobs waiting for a job's result, by that job's key ([`Executor::submit_after`]).
    parked: FxHashMap<Key, Vec<Parked>>,
    /// The key each parked job waits for.
    parked_on: FxHashMap<Key, Key>,
}

/// A job waiting for another's result: it goes into `job.inputs` at `slots`.
struct Parked {
    job: Box<Job>,
    slots: Vec<usize>,
}

/// A queued job. The job itself is boxed: a heap operation moves entries about log2(n) times,
/// and moving a 16-byte pointer instead of a ~130-byte [`Job`] was 5% of a worker's
/// instructions on `map` (callgrind, 10,000-task runs).
struct Queued {
    priority: u64,
    seq: u64,
    job: Box<Job>,
}

impl Ord for Queued {
    /// [`BinaryHeap`] pops the greatest: make that the lowest priority number, then the oldest.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Queued {}

impl Queue {
    fn push(&mut self, job: Job) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let priority = job.priority;
        self.jobs.push(Queued {
            priority,
            seq,
            job: Box::new(job),
        });
    }

    /// Queues the jobs parked after `key`, which finished with `result` (`None`: it failed or
    /// will not run); returns how many were queued. The jobs of a key that failed are dropped,
    /// and those parked after them in turn.
    fn release_parked(&mut self, key: &Key, result: Option<&Encoded>) -> usize {
        if self.parked.is_empty() {
            return 0;
        }
        let Some(list) = self.parked.remove(key) else {
            return 0;
        };
        let mut queued = 0;
        for Parked { mut job, slots } in list {
            self.parked_on.remove(&job.key);
            match result {
                Some(value) => {
                    for i in slots {
                        if let Some(slot) = job.inputs.get_mut(i) {
                            *slot = value.clone();
                        }
                    }
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.jobs.push(Queued {
                        priority: job.priority,
                        seq,
                        job,
                    });
                    queued += 1;
                }
                None => self.drop_parked(job.key),
            }
        }
        queued
    }

    /// Forgets `key` (a job that will not run or finish here) and drops the jobs parked after
    /// it, and after them in turn.
    fn drop_parked(&mut self, key: Key) {
        let mut stack = vec![key];
        while let Some(k) = stack.pop() {
            self.watched.remove(&k);
            for p in self.parked.remove(&k).unwrap_or_default() {
                self.parked_on.remove(&p.job.key);
                stack.push(p.job.key);
            }
        }
    }

    /// Claims up to `n` sleeping threads to be woken; returns how many notifies to send.
    fn claim_sleepers(&mut self, n: usize) -> usize {
        let claimed = n.min(self.sleeping);
        self.sleeping -= claimed;
        self.wakeups += claimed;
        claimed
    }
}

impl Shared {
    /// The queue is never left half-updated (no user code runs under the lock), so a poisoned
    /// lock is still usable.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self, threads: usize) {
        for _ in 0..threads {
            self.work.notify_one();
        }
    }

    /// Sets the stop flag, drops pending jobs and wakes every thread so it can exit.
    fn stop(&self) {
        let pending = {
            let mut queue = self.lock();
            queue.stopping = true;
            queue.watched.clear();
            queue.parked_on.clear();
            (
                std::mem::take(&mut queue.jobs),
                std::mem::take(&mut queue.parked),
            )
        };
        // Dropped outside the lock: arguments can be large.
        drop(pending);
        self.work.notify_all();
    }

    /// The next job, or `None` once the executor is stopping. `finished` is the watched job this
    /// thread has just finished (its key and its result, `None` if it failed): it is forgotten
    /// and the jobs parked after it are queued, under the same lock.
    fn next_job(&self, finished: Option<(Key, Option<Encoded>)>) -> Option<Job> {
        let mut queue = self.lock();
        if let Some((key, result)) = finished {
            queue.watched.remove(&key);
            let queued = queue.release_parked(&key, result.as_ref());
            // This thread runs one of them next; other threads only wake for the others.
            let wake = queue.claim_sleepers(queued.saturating_sub(1));
            self.notify(wake);
        }
        loop {
            if queue.stopping {
                return None;
            }
            if !queue.paused
                && let Some(Queued { job, .. }) = queue.jobs.pop()
            {
                // Counted under the lock, so a job is always in `queued` or `executing`.
                self.executing.fetch_add(1, atomic::Ordering::Relaxed);
                return Some(*job);
            }
            queue.sleeping += 1;
            queue = self
                .work
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            if queue.wakeups > 0 {
                queue.wakeups -= 1;
            } else {
                queue.sleeping -= 1;
            }
        }
    }

    fn run_thread(&self) {
        let mut finished = None;
        while let Some(job) = self.next_job(finished.take()) {
            let watched = job.watched;
            let done = run(job);
            if watched {
                finished = Some((done.key.clone(), done.result.as_ref().ok().cloned()));
            }
            // Before the callback, so whoever receives the `Done` sees the job as finished.
            self.executing.fetch_sub(1, atomic::Ordering::Relaxed);
            // Before the jobs parked after it are queued: the worker hears of this job first.
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| (self.on_done)(done))) {
                tracing::error!(
                    panic = panic_message(payload.as_ref()),
                    "executor's on_done callback panicked; the thread carries on"
                );
            }
        }
    }
}

/// Runs one job and encodes its result, turning a panic into an error.
fn run(job: Job) -> Done {
    let Job {
        key,
        func,
        name,
        payload,
        inputs,
        ..
    } = job;
    let start = Instant::now();
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        func.call(&payload, &Inputs::new(name.as_str(), &inputs))
    }))
    .unwrap_or_else(|p| Err(KernelError::Panicked(panic_message(p.as_ref()).to_owned())));
    let duration = start.elapsed();
    Done {
        key,
        result,
        duration,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(panic payload is not a string)"
    }
}

impl Executor {
    /// Starts `nthreads` threads named `rask-exec-0`, `rask-exec-1`, …. `on_done` is called on the
    /// executing thread after each job (the worker passes a closure that sends into a channel);
    /// a panic in it is logged and the thread carries on.
    pub fn new(
        nthreads: usize,
        on_done: impl Fn(Done) + Send + Sync + 'static,
    ) -> Result<Executor, ExecutorError> {
        if nthreads == 0 {
            return Err(ExecutorError::NoThreads);
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: BinaryHeap::new(),
                next_seq: 0,
                sleeping: 0,
                wakeups: 0,
                stopping: false,
                paused: false,
                watched: FxHashSet::default(),
                parked: FxHashMap::default(),
                parked_on: FxHashMap::default(),
            }),
            work: Condvar::new(),
            executing: AtomicUsize::new(0),
            any_parked: AtomicBool::new(false),
            on_done: Box::new(on_done),
        });
        // Built as it goes, so that if a spawn fails, dropping it stops the threads already started.
        let mut executor = Executor {
            shared,
            threads: Vec::with_capacity(nthreads),
        };
        for i in 0..nthreads {
            let name = format!("rask-exec-{i}");
            let shared = Arc::clone(&executor.shared);
            let handle = thread::Builder::new()
                .name(name.clone())
                .spawn(move || shared.run_thread())
                .map_err(|source| ExecutorError::Spawn { name, source })?;
            executor.threads.push(handle);
        }
        Ok(executor)
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) {
        let wake = {
            let mut queue = self.shared.lock();
            if job.watched {
                queue.watched.insert(job.key.clone());
            }
            queue.push(job);
            queue.claim_sleepers(1)
        };
        self.shared.notify(wake);
    }

    /// Queues many jobs under one lock acquisition.
    pub fn submit_many(&self, jobs: impl IntoIterator<Item = Job>) {
        // Built before locking: the caller's iterator may do real work (or panic), and threads
        // finishing jobs should not wait for it.
        let jobs: Vec<Job> = jobs.into_iter().collect();
        let wake = {
            let mut queue = self.shared.lock();
            let added = jobs.len();
            queue.jobs.reserve(added);
            for job in jobs {
                if job.watched {
                    queue.watched.insert(job.key.clone());
                }
                queue.push(job);
            }
            queue.claim_sleepers(added)
        };
        self.shared.notify(wake);
    }

    /// Parks `job` until the watched job `after` finishes here: then the thread that ran
    /// `after` queues `job` with `after`'s result at `slots` of its inputs, and the worker hears
    /// of `after` before `job` starts. If `after` fails, `job` is dropped (and the jobs parked
    /// after it). `Err(job)` when `after` is not queued, running or parked here (it finished
    /// already, or was not watched): the caller runs `job` itself once it knows the outcome.
    pub fn submit_after(
        &self,
        job: Box<Job>,
        after: &Key,
        slots: Vec<usize>,
    ) -> Result<(), Box<Job>> {
        let mut queue = self.shared.lock();
        if !queue.watched.contains(after) {
            return Err(job);
        }
        if job.watched {
            queue.watched.insert(job.key.clone());
        }
        queue.parked_on.insert(job.key.clone(), after.clone());
        queue
            .parked
            .entry(after.clone())
            .or_default()
            .push(Parked { job, slots });
        self.shared
            .any_parked
            .store(true, atomic::Ordering::Relaxed);
        Ok(())
    }

    /// The worker dropped these tasks: the jobs of theirs still parked are dropped, as are the
    /// jobs parked after them (a queued or running one still runs and reports).
    pub fn cancel(&self, keys: &[Key]) {
        if !self.shared.any_parked.load(atomic::Ordering::Relaxed) {
            return;
        }
        let mut queue = self.shared.lock();
        for k in keys {
            if let Some(after) = queue.parked_on.remove(k)
                && let Some(list) = queue.parked.get_mut(&after)
            {
                list.retain(|p| p.job.key != *k);
                if list.is_empty() {
                    queue.parked.remove(&after);
                }
            }
            if queue.parked.is_empty() {
                break;
            }
            queue.drop_parked(k.clone());
        }
        self.shared
            .any_parked
            .store(!queue.parked.is_empty(), atomic::Ordering::Relaxed);
    }

    /// Jobs parked after another's result.
    pub fn parked(&self) -> usize {
        self.shared.lock().parked_on.len()
    }

    /// Stops (`true`) or resumes (`false`) starting queued jobs; running ones go on.
    pub fn pause(&self, paused: bool) {
        let wake = {
            let mut queue = self.shared.lock();
            queue.paused = paused;
            if paused {
                0
            } else {
                let n = queue.jobs.len();
                queue.claim_sleepers(n)
            }
        };
        self.shared.notify(wake);
    }

    /// Jobs running right now.
    pub fn executing(&self) -> usize {
        self.shared.executing.load(atomic::Ordering::Relaxed)
    }

    /// Jobs waiting for a thread.
    pub fn queued(&self) -> usize {
        self.shared.lock().jobs.len()
    }

    /// Drops the pending jobs and waits for the running ones to finish (their [`Done`] is
    /// delivered) and for every thread to exit.
    pub fn shutdown(mut self) {
        self.shared.stop();
        let me = thread::current().id();
        for handle in self.threads.drain(..) {
            // Called from `on_done` on one of our own threads: that one exits after returning.
            if handle.thread().id() == me {
                continue;
            }
            let name = handle.thread().name().unwrap_or("rask-exec").to_owned();
            if handle.join().is_err() {
                // Threads catch every panic of tasks and callbacks; this would be a bug here.
                tracing::error!(thread = name, "executor thread panicked");
            }
        }
    }
}

impl Drop for Executor {
    /// Drops the pending jobs and tells the threads to exit, without waiting: a running task may
    /// take arbitrarily long. Each thread exits after its current job, whose [`Done`] is still
    /// delivered. Use [`Executor::shutdown`] to wait for them.
    fn drop(&mut self) {
        self.shared.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use rask_core::function::encode_payload;
    use rask_core::{Data, Value};

    use super::*;

    /// A test function: the payload is one i64, given to `f`.
    struct F(fn(i64) -> Result<Value, KernelError>);

    impl Function for F {
        fn call(&self, payload: &[u8], _: &Inputs<'_>) -> Result<Encoded, KernelError> {
            let x: i64 = rask_core::function::decode_payload("t", payload)?;
            (self.0)(x).map(|v| v.encode())
        }
    }

    fn inc(x: i64) -> Result<Value, KernelError> {
        Ok(Value::Int(x + 1))
    }

    fn fail(_: i64) -> Result<Value, KernelError> {
        Err(KernelError::failed("boom"))
    }

    fn make(key: &str, f: fn(i64) -> Result<Value, KernelError>, x: i64, priority: u64) -> Job {
        Job {
            key: Key::from(key),
            func: Arc::new(F(f)),
            name: FuncName::from("t.f"),
            payload: encode_payload(&x).unwrap().into(),
            inputs: Vec::new(),
            priority,
            watched: false,
        }
    }

    /// Adds its input to the value of its one input (an int), as `inc` of a chain link.
    struct AddInput;

    impl Function for AddInput {
        fn call(&self, payload: &[u8], inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
            let x: i64 = rask_core::function::decode_payload("t", payload)?;
            let input: Value = inputs
                .encoded(0)?
                .decode()
                .map_err(|e| inputs.input_error(0, e))?;
            let y = input
                .as_int()
                .map_err(|e| KernelError::failed(e.to_string()))?;
            if x < 0 {
                return Err(KernelError::failed("negative"));
            }
            Ok(Value::Int(x + y).encode())
        }
    }

    /// A watched job adding `x` to its one input, which another job gives it.
    fn link(key: &str, x: i64, priority: u64) -> Job {
        Job {
            key: Key::from(key),
            func: Arc::new(AddInput),
            name: FuncName::from("t.add"),
            payload: encode_payload(&x).unwrap().into(),
            inputs: vec![Encoded::from_bytes(bytes::Bytes::new())],
            priority,
            watched: true,
        }
    }

    const TIMEOUT: Duration = Duration::from_secs(60);

    fn executor(nthreads: usize) -> (Executor, mpsc::Receiver<Done>) {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(nthreads, move |done| {
            let _ = tx.send(done);
        })
        .unwrap();
        (ex, rx)
    }

    fn job(key: &str, x: i64, priority: u64) -> Job {
        make(key, inc, x, priority)
    }

    fn collect(rx: &mpsc::Receiver<Done>, n: usize) -> Vec<Done> {
        (0..n)
            .map(|i| {
                rx.recv_timeout(TIMEOUT)
                    .unwrap_or_else(|e| panic!("job {i}: {e}"))
            })
            .collect()
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Gates that `gated` jobs block on until a test opens them; each test uses its own number.
    static OPEN_GATES: Mutex<Vec<i64>> = Mutex::new(Vec::new());
    static GATE_OPENED: Condvar = Condvar::new();

    fn gated(gate: i64) -> Result<Value, KernelError> {
        let mut open = OPEN_GATES.lock().unwrap();
        while !open.contains(&gate) {
            open = GATE_OPENED.wait(open).unwrap();
        }
        Ok(Value::Int(gate))
    }

    fn open_gate(gate: i64) {
        OPEN_GATES.lock().unwrap().push(gate);
        GATE_OPENED.notify_all();
    }

    fn gate_job(key: &str, gate: i64, priority: u64) -> Job {
        make(key, gated, gate, priority)
    }

    fn panics_with_str(_: i64) -> Result<Value, KernelError> {
        panic!("kaboom")
    }

    fn panics_with_string(x: i64) -> Result<Value, KernelError> {
        panic!("bad input {x}")
    }

    fn value(done: &Done) -> Value {
        done.result.as_ref().unwrap().decode().unwrap()
    }

    #[test]
    fn jobs_run_and_report_encoded_results() {
        let (ex, rx) = executor(2);
        ex.submit(job("inc-1", 1, 0));
        ex.submit(job("add-1", 4, 0));
        let mut done = collect(&rx, 2);
        done.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(done[0].key, Key::from("add-1"));
        assert_eq!(value(&done[0]), Value::Int(5));
        assert_eq!(done[1].key, Key::from("inc-1"));
        assert_eq!(value(&done[1]), Value::Int(2));
        ex.shutdown();
    }

    #[test]
    fn lowest_priority_number_runs_first_and_equals_in_order() {
        let (ex, rx) = executor(1);
        ex.submit(gate_job("gate", 1, 0));
        wait_until("the gate job runs", || ex.executing() == 1);
        let batch = [
            ("e1", 5),
            ("a1", 1),
            ("e2", 5),
            ("c1", 3),
            ("a2", 1),
            ("e3", 5),
        ];
        ex.submit_many(batch.iter().map(|&(k, p)| job(k, 0, p)));
        ex.submit(job("a3", 0, 1));
        assert_eq!(ex.queued(), 7);
        open_gate(1);
        let order: Vec<String> = collect(&rx, 8).iter().map(|d| d.key.to_string()).collect();
        assert_eq!(order, ["gate", "a1", "a2", "a3", "c1", "e1", "e2", "e3"]);
    }

    #[test]
    fn errors_and_panics_are_reported_and_the_thread_survives() {
        let (ex, rx) = executor(1);
        ex.submit(make("fail-1", fail, 0, 0));
        ex.submit(make("p-1", panics_with_str, 0, 1));
        ex.submit(make("p-2", panics_with_string, 1, 2));
        ex.submit(job("inc-1", 41, 3));
        let done = collect(&rx, 4);
        assert_eq!(done[0].result, Err(KernelError::failed("boom")));
        assert_eq!(
            done[1].result,
            Err(KernelError::Panicked("kaboom".to_owned()))
        );
        assert_eq!(
            done[2].result.as_ref().unwrap_err().to_string(),
            "task panicked: bad input 1"
        );
        assert_eq!(value(&done[3]), Value::Int(42));
    }

    #[test]
    fn executing_and_queued_counts() {
        let (ex, rx) = executor(2);
        assert_eq!((ex.executing(), ex.queued()), (0, 0));
        let mut jobs = vec![gate_job("g-1", 2, 0), gate_job("g-2", 2, 0)];
        jobs.extend((0..3).map(|i| job(&format!("inc-{i}"), i, 1)));
        ex.submit_many(jobs);
        wait_until("both gate jobs run", || ex.executing() == 2);
        assert_eq!(ex.queued(), 3);
        open_gate(2);
        collect(&rx, 5);
        assert_eq!((ex.executing(), ex.queued()), (0, 0));
    }

    #[test]
    fn drop_returns_at_once_and_drops_pending_jobs() {
        let (ex, rx) = executor(1);
        ex.submit(gate_job("gate", 3, 0));
        wait_until("the gate job runs", || ex.executing() == 1);
        ex.submit_many((0..10).map(|i| job(&format!("inc-{i}"), i, 0)));
        drop(ex);
        open_gate(3);
        // The running job still reports; then the thread exits, dropping the sender.
        let mut keys = Vec::new();
        loop {
            match rx.recv_timeout(TIMEOUT) {
                Ok(done) => keys.push(done.key.to_string()),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("executor thread did not exit"),
            }
        }
        assert_eq!(keys, ["gate"]);
    }

    #[test]
    fn shutdown_waits_for_running_jobs() {
        let (idle, _rx) = executor(3);
        idle.shutdown();

        let (ex, rx) = executor(2);
        ex.submit(gate_job("gate", 4, 0));
        wait_until("the gate job runs", || ex.executing() == 1);
        let opener = thread::spawn(|| {
            thread::sleep(Duration::from_millis(20));
            open_gate(4);
        });
        ex.shutdown();
        assert_eq!(rx.try_recv().unwrap().key, Key::from("gate"));
        opener.join().unwrap();
    }

    #[test]
    fn a_paused_executor_starts_no_job_until_resumed() {
        let (ex, rx) = executor(2);
        ex.pause(true);
        ex.submit_many((0..5).map(|i| job(&format!("inc-{i}"), i, 0)));
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "a job ran while paused");
        assert_eq!((ex.executing(), ex.queued()), (0, 5));
        ex.pause(false);
        let done = collect(&rx, 5);
        assert_eq!(done.len(), 5);
        ex.shutdown();
    }

    #[test]
    fn a_job_parked_after_another_runs_with_its_result_on_the_same_thread() {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(2, move |done: Done| {
            let _ = tx.send((done, thread::current().id()));
        })
        .unwrap();
        let mut first = gate_job("a", 10, 0);
        first.watched = true;
        ex.submit(first);
        wait_until("the first job runs", || ex.executing() == 1);
        // A chain parked behind it: b after a, c after b.
        assert!(
            ex.submit_after(Box::new(link("b", 1, 1)), &Key::from("a"), vec![0])
                .is_ok()
        );
        assert!(
            ex.submit_after(Box::new(link("c", 100, 2)), &Key::from("b"), vec![0])
                .is_ok()
        );
        assert_eq!((ex.parked(), ex.queued()), (2, 0));
        open_gate(10);
        let done: Vec<(Done, thread::ThreadId)> =
            (0..3).map(|_| rx.recv_timeout(TIMEOUT).unwrap()).collect();
        let keys: Vec<String> = done.iter().map(|(d, _)| d.key.to_string()).collect();
        assert_eq!(
            keys,
            ["a", "b", "c"],
            "each reported before its follower starts"
        );
        assert_eq!(value(&done[2].0), Value::Int(111));
        assert!(
            done.iter().all(|(_, t)| *t == done[0].1),
            "the chain ran on the thread that ran a"
        );
        assert_eq!(ex.parked(), 0);
        // b is no longer tracked: a job parked after it now is refused.
        assert!(
            ex.submit_after(Box::new(link("d", 1, 3)), &Key::from("b"), vec![0])
                .is_err()
        );
        ex.shutdown();
    }

    #[test]
    fn jobs_parked_after_a_failed_or_cancelled_job_are_dropped() {
        let (ex, rx) = executor(1);
        let mut first = gate_job("a", 11, 0);
        first.watched = true;
        ex.submit(first);
        wait_until("the first job runs", || ex.executing() == 1);
        // f fails (negative): g after it never runs, nor h after g.
        let mut f = link("f", -1, 1);
        f.inputs = vec![Value::Int(0).encode()];
        ex.submit(f);
        assert!(
            ex.submit_after(Box::new(link("g", 1, 2)), &Key::from("f"), vec![0])
                .is_ok()
        );
        assert!(
            ex.submit_after(Box::new(link("h", 1, 3)), &Key::from("g"), vec![0])
                .is_ok()
        );
        // x after a is cancelled with y after it; z after a stays.
        assert!(
            ex.submit_after(Box::new(link("x", 1, 4)), &Key::from("a"), vec![0])
                .is_ok()
        );
        assert!(
            ex.submit_after(Box::new(link("y", 1, 5)), &Key::from("x"), vec![0])
                .is_ok()
        );
        assert!(
            ex.submit_after(Box::new(link("z", 5, 6)), &Key::from("a"), vec![0])
                .is_ok()
        );
        ex.cancel(&[Key::from("x")]);
        assert_eq!(ex.parked(), 3, "g, h and z");
        open_gate(11);
        let keys: Vec<String> = collect(&rx, 3).iter().map(|d| d.key.to_string()).collect();
        assert_eq!(keys, ["a", "f", "z"]);
        thread::sleep(Duration::from_millis(20));
        assert!(rx.try_recv().is_err(), "nothing else runs");
        assert_eq!(ex.parked(), 0);
        ex.shutdown();
    }

    #[test]
    fn a_job_cannot_park_after_one_not_watched_or_finished() {
        let (ex, rx) = executor(1);
        ex.submit(job("plain", 1, 0));
        assert!(
            ex.submit_after(Box::new(link("b", 1, 1)), &Key::from("plain"), vec![0])
                .is_err()
        );
        collect(&rx, 1);
        let mut w = job("w", 1, 0);
        w.watched = true;
        ex.submit(w);
        collect(&rx, 1);
        wait_until("w is forgotten", || {
            ex.submit_after(Box::new(link("b", 1, 1)), &Key::from("w"), vec![0])
                .is_err()
        });
        ex.shutdown();
    }

    #[test]
    fn zero_threads_is_an_error() {
        let err = Executor::new(0, |_| {}).err().unwrap();
        assert!(matches!(err, ExecutorError::NoThreads));
    }

    #[test]
    fn threads_are_named() {
        let (tx, rx) = mpsc::channel();
        let ex = Executor::new(2, move |_| {
            let _ = tx.send(thread::current().name().map(str::to_owned));
        })
        .unwrap();
        ex.submit(job("inc-1", 1, 0));
        let name = rx.recv_timeout(TIMEOUT).unwrap().unwrap();
        assert!(name == "rask-exec-0" || name == "rask-exec-1", "{name}");
    }

    #[test]
    fn hundred_thousand_tiny_jobs_complete() {
        const N: i64 = 100_000;
        let (ex, rx) = executor(2);
        for chunk in 0..N / 1000 {
            ex.submit_many(
                (chunk * 1000..(chunk + 1) * 1000).map(|i| job(&format!("inc-{i}"), i, i as u64)),
            );
        }
        let total: i64 = collect(&rx, N as usize)
            .iter()
            .map(|d| value(d).as_int().unwrap())
            .sum();
        assert_eq!(total, N * (N + 1) / 2);
        ex.shutdown();
    }
}
