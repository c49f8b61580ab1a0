//! The worker's logic without sockets, threads or disks: a recording of the effects it asks for.

use rask_core::protocol::{ComputeTask, HeldBy, ToScheduler};
use rask_core::{Data, Encoded, KernelError, Key, TaskSpec, Value};
use rustc_hash::FxHashMap;

use super::*;
use crate::memory::{MemoryFractions, MemoryPolicy, MemorySample};

/// What the worker's store holds, as key → bytes.
#[derive(Default)]
struct Held(FxHashMap<Key, u64>);

impl Holdings for Held {
    fn nbytes(&self, key: &Key) -> Option<u64> {
        self.0.get(key).copied()
    }
}

#[derive(Default, Debug)]
struct Rec {
    sent: Vec<ToScheduler>,
    blobs: Vec<Vec<bytes::Bytes>>,
    fetches: Vec<Vec<(Key, Vec<String>)>>,
    executed: Vec<Key>,
    /// Tasks handed over to run after another: (task, the task it follows).
    followed: Vec<(Key, Key)>,
    freed: Vec<Key>,
    paused: Vec<bool>,
    spill_to: Vec<u64>,
    with_data: Vec<Key>,
}

impl Effects for Rec {
    fn send(&mut self, msg: Envelope<ToScheduler>) {
        self.sent.push(msg.msg);
        self.blobs.push(msg.blobs);
    }
    fn fetch(&mut self, groups: Vec<FetchFrom>) {
        // Each key with its holders: what the tests compare.
        let keys = groups
            .into_iter()
            .flat_map(|g| {
                let holders = g.holders;
                g.keys.into_iter().map(move |(k, _)| (k, holders.clone()))
            })
            .collect();
        self.fetches.push(keys);
    }
    fn execute(&mut self, tasks: Vec<Ready>) {
        self.executed.extend(tasks.into_iter().map(|r| r.spec.key));
    }
    fn execute_after(&mut self, task: Ready, after: Key) {
        assert!(task.watched, "a task handed over after another is watched");
        self.followed.push((task.spec.key, after));
    }
    fn free(&mut self, keys: Vec<Key>) {
        self.freed.extend(keys);
    }
    fn pause(&mut self, paused: bool) {
        self.paused.push(paused);
    }
    fn spill_to(&mut self, bytes: u64) {
        self.spill_to.push(bytes);
    }
    fn finished_with_data(&mut self, key: Key, _nbytes: u64, _duration_us: u64) {
        self.with_data.push(key);
    }
}

const MB: u64 = 1 << 20;

fn state() -> WorkerState {
    WorkerState::new(MemoryPolicy::new(1000 * MB, MemoryFractions::default()))
}

fn k(s: &str) -> Key {
    Key::from(s)
}

/// Bytes the scheduler says each input of a test task has.
const INPUT_BYTES: u64 = 100;

/// A task reading `inputs`, each held by the listed peers.
fn task(key: &str, inputs: &[(&str, &[&str])], priority: u64, send_result: bool) -> ComputeTask {
    let spec = TaskSpec::new(
        k(key),
        "t.f".into(),
        bytes::Bytes::new(),
        inputs.iter().map(|(i, _)| k(i)).collect(),
    );
    ComputeTask {
        spec: Box::new(spec),
        priority,
        who_has: inputs
            .iter()
            .enumerate()
            .map(|(at, (_, holders))| HeldBy {
                holders: holders.iter().map(|h| h.to_string()).collect(),
                inputs: vec![(at as u32, INPUT_BYTES)],
            })
            .collect(),
        after: Box::default(),
        send_result,
    }
}

#[test]
fn a_who_has_position_past_the_inputs_fetches_nothing() {
    let mut st = state();
    let mut fx = Rec::default();
    let mut ct = task("t", &[("in", &["tcp://peer"])], 1, false);
    ct.who_has[0].inputs.push((7, INPUT_BYTES));
    st.compute(vec![ct], &Held::default(), &mut fx);
    // The real input is fetched; the position naming nothing is left out.
    assert_eq!(
        fx.fetches,
        vec![vec![(k("in"), vec!["tcp://peer".to_string()])]]
    );
    st.fetched(vec![(k("in"), 100)], Vec::new(), 10, &mut fx);
    assert_eq!(
        fx.executed,
        vec![k("t")],
        "it runs once its one input is here"
    );
}

#[test]
fn ready_tasks_run_in_priority_order_and_missing_inputs_are_fetched_once() {
    let mut st = state();
    let mut held = Held::default();
    held.0.insert(k("local"), 8);
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("c", &[("local", &[])], 3, false),
            task("a", &[], 1, false),
            task(
                "x",
                &[("remote", &["tcp://p1", "tcp://p2"]), ("local", &[])],
                2,
                false,
            ),
            task("y", &[("remote", &["tcp://p1", "tcp://p2"])], 4, false),
        ],
        &held,
        &mut fx,
    );
    assert_eq!(
        fx.executed,
        vec![k("a"), k("c")],
        "ready ones, most urgent first"
    );
    assert_eq!(
        fx.fetches,
        vec![vec![(
            k("remote"),
            vec!["tcp://p1".to_owned(), "tcp://p2".to_owned()]
        )]],
        "one fetch for an input two tasks need"
    );
    // The input arrives: both tasks run.
    let mut fx = Rec::default();
    st.fetched(vec![(k("remote"), 100)], Vec::new(), 300, &mut fx);
    assert_eq!(fx.executed, vec![k("x"), k("y")]);
    assert!(fx.sent.is_empty(), "{:?}", fx.sent);
    // The scheduler learns this worker has a copy after the first of them ends, behind its
    // result, and once.
    let result = Value::Int(1).encode();
    let mut fx = Rec::default();
    st.done(k("x"), Ok(&result), 5, &mut fx);
    st.done(k("y"), Ok(&result), 5, &mut fx);
    let finished = |m: &ToScheduler, name: &str| matches!(m, ToScheduler::TaskFinished { key, .. } if *key == k(name));
    assert_eq!(fx.sent.len(), 3, "{:?}", fx.sent);
    assert!(finished(&fx.sent[0], "x"), "{:?}", fx.sent);
    assert_eq!(
        fx.sent[1],
        ToScheduler::AddKeys {
            keys: vec![(k("remote"), 100)]
        }
    );
    assert!(finished(&fx.sent[2], "y"), "{:?}", fx.sent);
}

#[test]
fn a_copy_fetched_for_no_task_that_can_run_is_reported_at_once() {
    let mut st = state();
    let held = Held::default();
    let mut fx = Rec::default();
    st.compute(
        vec![task(
            "z",
            &[("p", &["tcp://p1"]), ("q", &["tcp://p2"])],
            1,
            false,
        )],
        &held,
        &mut fx,
    );
    // One of two inputs: the task still waits, so the copy is reported now.
    let mut fx = Rec::default();
    st.fetched(vec![(k("p"), 7)], Vec::new(), 10, &mut fx);
    assert!(fx.executed.is_empty());
    assert_eq!(
        fx.sent,
        vec![ToScheduler::AddKeys {
            keys: vec![(k("p"), 7)]
        }]
    );
}

#[test]
fn copies_held_back_are_reported_when_their_task_is_freed() {
    let mut st = state();
    let held = Held::default();
    let mut fx = Rec::default();
    st.compute(
        vec![task("w", &[("r", &["tcp://p1"])], 1, false)],
        &held,
        &mut fx,
    );
    st.fetched(vec![(k("r"), 3)], Vec::new(), 10, &mut fx);
    assert_eq!(fx.executed, vec![k("w")]);
    let mut fx = Rec::default();
    st.free_keys(vec![k("w")], &mut fx);
    assert_eq!(
        fx.sent,
        vec![ToScheduler::AddKeys {
            keys: vec![(k("r"), 3)]
        }]
    );
}

#[test]
fn results_are_reported_inline_when_a_client_waits_and_small() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("small", &[], 1, true),
            task("big", &[], 2, true),
            task("quiet", &[], 3, false),
        ],
        &Held::default(),
        &mut fx,
    );
    let small = Value::Int(7).encode();
    let big = Encoded::with_tag(9, &vec![0u8; INLINE_RESULT_MAX + 1]);
    let mut fx = Rec::default();
    st.done(k("small"), Ok(&small), 5, &mut fx);
    st.done(k("big"), Ok(&big), 5, &mut fx);
    st.done(k("quiet"), Ok(&small), 5, &mut fx);
    assert_eq!(fx.blobs[0], vec![small.bytes().clone()]);
    assert!(
        fx.blobs[1].is_empty(),
        "too big to inline: the client fetches it"
    );
    assert!(fx.blobs[2].is_empty(), "nobody waits for it");
    assert!(matches!(
        &fx.sent[1],
        ToScheduler::TaskFinished { key, nbytes, .. } if *key == k("big") && *nbytes == big.len() as u64
    ));
    // A failure is reported with its typed error; a result for a task freed meanwhile is not.
    st.compute(vec![task("bad", &[], 4, false)], &Held::default(), &mut fx);
    st.done(k("bad"), Err(KernelError::failed("boom")), 1, &mut fx);
    assert!(matches!(
        fx.sent.last(),
        Some(ToScheduler::TaskErred { error, .. }) if *error == KernelError::failed("boom")
    ));
    let before = fx.sent.len();
    st.done(k("never-assigned"), Ok(&small), 1, &mut fx);
    assert_eq!(fx.sent.len(), before);
    assert_eq!(st.assigned(), 0);
}

#[test]
fn a_task_already_held_is_reported_without_running_it() {
    let mut st = state();
    let mut held = Held::default();
    held.0.insert(k("done"), 16);
    let mut fx = Rec::default();
    st.compute(vec![task("done", &[], 1, true)], &held, &mut fx);
    assert!(fx.executed.is_empty());
    assert_eq!(fx.with_data, vec![k("done")]);
    st.compute(vec![task("done", &[], 1, false)], &held, &mut fx);
    assert!(matches!(
        fx.sent.last(),
        Some(ToScheduler::TaskFinished { nbytes: 16, .. })
    ));
}

#[test]
fn an_input_no_peer_can_give_drops_its_tasks_and_tells_the_scheduler() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("x", &[("gone", &["tcp://dead"])], 1, false),
            task(
                "y",
                &[("gone", &["tcp://dead"]), ("ok", &["tcp://p"])],
                2,
                false,
            ),
        ],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(st.assigned(), 2);
    let mut fx = Rec::default();
    st.fetched(
        vec![(k("ok"), 4)],
        vec![(k("gone"), vec!["tcp://dead".into()])],
        40,
        &mut fx,
    );
    assert!(fx.executed.is_empty(), "y still lacks `gone`");
    assert_eq!(
        fx.sent.last(),
        Some(&ToScheduler::MissingData {
            key: k("gone"),
            holders: vec!["tcp://dead".into()]
        })
    );
    assert_eq!(st.assigned(), 0, "the scheduler assigns them again");
    // A later assignment fetches `gone` again (it is no longer in flight).
    let mut fx = Rec::default();
    st.compute(
        vec![task("x", &[("gone", &["tcp://p2"])], 1, false)],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(fx.fetches.len(), 1);
}

#[test]
fn freed_keys_are_dropped_and_unstarted_tasks_forgotten() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![task("w", &[("in", &["tcp://p"])], 1, false)],
        &Held::default(),
        &mut fx,
    );
    st.free_keys(vec![k("w"), k("old")], &mut fx);
    assert_eq!(fx.freed, vec![k("w"), k("old")]);
    assert_eq!(st.assigned(), 0);
    // Its input arriving later runs nothing.
    let mut fx = Rec::default();
    st.fetched(vec![(k("in"), 1)], Vec::new(), 10, &mut fx);
    assert!(fx.executed.is_empty());
}

#[test]
fn retirement_copies_what_is_missing_and_reports_what_is_here() {
    let mut st = state();
    let mut held = Held::default();
    held.0.insert(k("mine"), 10);
    let mut fx = Rec::default();
    st.acquire_replicas(
        vec![
            (k("mine"), vec!["tcp://retiring".into()]),
            (k("theirs"), vec!["tcp://retiring".into()]),
        ],
        &held,
        &mut fx,
    );
    assert_eq!(
        fx.sent,
        vec![ToScheduler::AddKeys {
            keys: vec![(k("mine"), 10)]
        }]
    );
    assert_eq!(
        fx.fetches,
        vec![vec![(k("theirs"), vec!["tcp://retiring".to_owned()])]]
    );
    // Asked again while the copy is under way: not fetched twice.
    st.acquire_replicas(
        vec![(k("theirs"), vec!["tcp://retiring".into()])],
        &held,
        &mut fx,
    );
    assert_eq!(fx.fetches.len(), 1);
}

#[test]
fn memory_over_the_thresholds_spills_pauses_and_resumes() {
    let mut st = state();
    let mut fx = Rec::default();
    let sample = |rss: u64, managed: u64| MemorySample {
        rss: rss * MB,
        managed: managed * MB,
    };
    st.memory(sample(500, 300), &mut fx);
    assert!(fx.spill_to.is_empty() && fx.paused.is_empty() && fx.sent.is_empty());
    // Over spill (70%): back towards the target (60%).
    st.memory(sample(750, 300), &mut fx);
    assert_eq!(fx.spill_to, vec![150 * MB]);
    assert!(!st.paused());
    // Over pause (80%): the executor stops taking jobs, the scheduler stops sending them.
    st.memory(sample(850, 0), &mut fx);
    assert_eq!(fx.paused, vec![true]);
    assert_eq!(fx.sent, vec![ToScheduler::Paused { paused: true }]);
    assert!(st.paused());
    // Still paused just under the threshold; resumed clearly under it.
    st.memory(sample(790, 0), &mut fx);
    assert_eq!(fx.paused, vec![true]);
    st.memory(sample(700, 0), &mut fx);
    assert_eq!(fx.paused, vec![true, false]);
    assert_eq!(fx.sent.last(), Some(&ToScheduler::Paused { paused: false }));
}

#[test]
fn task_counts_follow_fetches_and_runs_and_finished_tasks_report_their_transfer_time() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            task("x", &[("r1", &["tcp://p"]), ("r2", &["tcp://p"])], 2, false),
            task("y", &[("r2", &["tcp://p"])], 3, false),
        ],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(
        st.task_counts(),
        TaskCounts {
            waiting: 2,
            handed_over: 1,
            flight: 2,
            flight_bytes: 2 * INPUT_BYTES,
        }
    );
    // r1 arrives alone after 300 µs, then r2 after 500 µs: x waited 500 µs at most, y 500.
    let mut fx = Rec::default();
    st.fetched(vec![(k("r1"), 100)], Vec::new(), 300, &mut fx);
    assert_eq!(st.task_counts().flight, 1);
    assert_eq!(st.task_counts().flight_bytes, INPUT_BYTES);
    st.fetched(vec![(k("r2"), 100)], Vec::new(), 500, &mut fx);
    assert_eq!(
        st.task_counts(),
        TaskCounts {
            waiting: 0,
            handed_over: 3,
            flight: 0,
            flight_bytes: 0,
        }
    );
    let mut fx = Rec::default();
    let out = Encoded::from_bytes(bytes::Bytes::from_static(b"12345678"));
    st.done(k("x"), Ok(&out), 7, &mut fx);
    st.done(k("a"), Ok(&out), 7, &mut fx);
    assert_eq!(
        fx.sent,
        vec![
            ToScheduler::TaskFinished {
                key: k("x"),
                nbytes: 8,
                duration_us: 7,
                transfer_us: 500,
            },
            // The copy that made x and y ready, reported behind x's result.
            ToScheduler::AddKeys {
                keys: vec![(k("r2"), 100)]
            },
            ToScheduler::TaskFinished {
                key: k("a"),
                nbytes: 8,
                duration_us: 7,
                transfer_us: 0,
            },
        ]
    );
    assert_eq!(st.task_counts().handed_over, 1);
}

#[test]
fn replicas_in_flight_count_without_bytes() {
    let mut st = state();
    let mut fx = Rec::default();
    st.acquire_replicas(
        vec![(k("theirs"), vec!["tcp://retiring".into()])],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(st.task_counts().flight, 1);
    assert_eq!(st.task_counts().flight_bytes, 0);
    st.fetched(vec![(k("theirs"), 9)], Vec::new(), 5, &mut fx);
    assert_eq!(st.task_counts(), TaskCounts::default());
}

/// A task sent ahead of `after`, inputs this worker computes itself.
fn ahead(key: &str, after: &[&str], priority: u64) -> ComputeTask {
    let mut t = task(key, &[], priority, false);
    t.spec.inputs = after.iter().map(|a| k(a)).collect();
    t.after = after.iter().map(|a| k(a)).collect();
    t
}

fn pair(task: &str, after: &str) -> (Key, Key) {
    (k(task), k(after))
}

#[test]
fn a_task_sent_ahead_runs_after_its_input_on_the_executor_without_the_scheduler() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            ahead("b", &["a"], 2),
            ahead("c", &["b"], 3),
        ],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(fx.executed, vec![k("a")]);
    assert_eq!(
        fx.followed,
        vec![pair("b", "a"), pair("c", "b")],
        "b follows a on the executor, c follows b"
    );
    assert!(
        fx.fetches.is_empty(),
        "inputs computed here are not fetched"
    );
    assert_eq!(st.task_counts().waiting, 2);
    let v = Value::Int(1).encode();
    let mut fx = Rec::default();
    st.done(k("a"), Ok(&v), 1, &mut fx);
    assert!(fx.executed.is_empty(), "b was started by the executor");
    assert!(matches!(&fx.sent[..], [ToScheduler::TaskFinished { key, .. }] if *key == k("a")));
    assert_eq!(st.task_counts().waiting, 1, "c still waits for b");
    let mut fx = Rec::default();
    st.done(k("b"), Ok(&v), 1, &mut fx);
    st.done(k("c"), Ok(&v), 1, &mut fx);
    assert!(fx.executed.is_empty());
    assert_eq!(fx.sent.len(), 2, "b and c are reported");
    assert_eq!(st.assigned(), 0);
    assert!(st.local_waiters.is_empty());
    assert!(st.parked.is_empty());
}

#[test]
fn a_task_sent_ahead_of_a_running_link_follows_it_at_once() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![task("a", &[], 1, false), ahead("b", &["a"], 2)],
        &Held::default(),
        &mut fx,
    );
    // c arrives while b is handed over (watched: it was sent ahead), then d ahead of c.
    let mut fx = Rec::default();
    st.compute(
        vec![ahead("c", &["b"], 3), ahead("d", &["c"], 4)],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(fx.followed, vec![pair("c", "b"), pair("d", "c")]);
    assert!(fx.executed.is_empty());
}

#[test]
fn a_task_sent_ahead_of_an_unwatched_running_task_waits_for_its_report() {
    let mut st = state();
    let mut fx = Rec::default();
    // a was handed over alone (sent ready, nothing waiting for it): the executor does not
    // track it, so b cannot follow it there.
    st.compute(vec![task("a", &[], 1, false)], &Held::default(), &mut fx);
    st.compute(vec![ahead("b", &["a"], 2)], &Held::default(), &mut fx);
    assert!(fx.followed.is_empty());
    let mut fx = Rec::default();
    st.done(k("a"), Ok(&Value::Int(1).encode()), 1, &mut fx);
    assert_eq!(fx.executed, vec![k("b")]);
}

#[test]
fn a_task_with_two_inputs_computed_here_does_not_follow_either() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            task("b", &[], 2, false),
            ahead("c", &["a", "b"], 3),
        ],
        &Held::default(),
        &mut fx,
    );
    assert!(fx.followed.is_empty(), "c waits for two");
    let v = Value::Int(1).encode();
    let mut fx = Rec::default();
    st.done(k("a"), Ok(&v), 1, &mut fx);
    assert!(
        fx.followed.is_empty(),
        "b was handed over before a finished"
    );
    st.done(k("b"), Ok(&v), 1, &mut fx);
    assert_eq!(fx.executed, vec![k("c")]);
}

#[test]
fn freeing_a_task_handed_over_after_another_drops_it_and_its_followers() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            ahead("b", &["a"], 2),
            ahead("c", &["b"], 3),
        ],
        &Held::default(),
        &mut fx,
    );
    assert_eq!(fx.followed.len(), 2);
    let mut fx = Rec::default();
    st.free_keys(vec![k("b")], &mut fx);
    assert_eq!(
        fx.freed,
        vec![k("b")],
        "the executor is told (it drops c too)"
    );
    assert_eq!(st.assigned(), 1, "only a is left");
    assert!(st.parked.is_empty());
    assert!(st.local_waiters.is_empty());
    st.done(k("a"), Ok(&Value::Int(1).encode()), 1, &mut fx);
    assert!(fx.executed.is_empty());
    assert_eq!(st.assigned(), 0);
    // A late report of b (the executor had started it) is ignored.
    let mut fx = Rec::default();
    st.done(k("b"), Ok(&Value::Int(2).encode()), 1, &mut fx);
    assert!(fx.sent.is_empty());
    assert!(!st.has_task(&k("b")));
}

#[test]
fn a_follower_that_fails_before_its_input_is_forgotten_cleanly() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![task("a", &[], 1, false), ahead("b", &["a"], 2)],
        &Held::default(),
        &mut fx,
    );
    // The I/O layer could not read b's other inputs: b is reported failed before a finishes.
    let mut fx = Rec::default();
    st.done(k("b"), Err(KernelError::failed("no input")), 0, &mut fx);
    assert!(matches!(&fx.sent[..], [ToScheduler::TaskErred { key, .. }] if *key == k("b")));
    assert!(st.parked.is_empty());
    assert!(st.local_waiters.is_empty());
    st.done(k("a"), Ok(&Value::Int(1).encode()), 1, &mut fx);
    assert_eq!(st.assigned(), 0);
}

#[test]
fn a_task_sent_ahead_of_an_input_already_finished_here_runs_at_once() {
    let mut st = state();
    let mut held = Held::default();
    held.0.insert(k("a"), 8);
    let mut fx = Rec::default();
    st.compute(vec![ahead("b", &["a"], 2)], &held, &mut fx);
    assert_eq!(fx.executed, vec![k("b")]);
}

#[test]
fn a_failed_input_drops_every_task_sent_ahead_of_it() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            ahead("b", &["a"], 2),
            ahead("c", &["b"], 3),
            task("other", &[("remote", &["tcp://p1"])], 4, false),
        ],
        &Held::default(),
        &mut fx,
    );
    let mut fx = Rec::default();
    st.done(k("a"), Err(KernelError::failed("boom")), 1, &mut fx);
    assert!(fx.executed.is_empty(), "b and c never run");
    assert_eq!(fx.sent.len(), 1, "only a's failure is reported");
    assert_eq!(st.assigned(), 1, "only the unrelated task is left");
    // A task sent ahead of an input this worker no longer computes is dropped on arrival.
    st.compute(vec![ahead("d", &["a"], 5)], &Held::default(), &mut fx);
    assert!(fx.executed.is_empty());
    assert_eq!(st.assigned(), 1);
}

#[test]
fn a_dropped_or_freed_input_drops_the_tasks_sent_ahead_of_it() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("x", &[("remote", &["tcp://p1"])], 1, false),
            ahead("y", &["x"], 2),
            task("f", &[("remote2", &["tcp://p1"])], 3, false),
            ahead("g", &["f"], 4),
        ],
        &Held::default(),
        &mut fx,
    );
    // No peer has x's input: x is dropped, and y with it.
    st.fetched(
        Vec::new(),
        vec![(k("remote"), vec!["tcp://p1".into()])],
        10,
        &mut fx,
    );
    assert_eq!(st.assigned(), 2);
    // The scheduler frees f (released): g goes too.
    st.free_keys(vec![k("f")], &mut fx);
    assert_eq!(st.assigned(), 0);
    assert!(st.local_waiters.is_empty());
}

#[test]
fn a_task_freed_and_sent_again_ahead_waits_for_its_input_once() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[("r", &["tcp://p1"])], 1, false),
            ahead("b", &["a"], 2),
        ],
        &Held::default(),
        &mut fx,
    );
    // The scheduler takes b back and sends it again: a's finish counts for it once.
    st.free_keys(vec![k("b")], &mut fx);
    st.compute(vec![ahead("b", &["a"], 2)], &Held::default(), &mut fx);
    st.fetched(vec![(k("r"), 8)], Vec::new(), 10, &mut fx);
    assert_eq!(fx.executed, vec![k("a")]);
    assert_eq!(fx.followed, vec![pair("b", "a")], "once");
    let mut fx = Rec::default();
    st.done(k("a"), Ok(&Value::Int(1).encode()), 1, &mut fx);
    assert!(
        fx.executed.is_empty(),
        "b was started after a by the executor"
    );
    assert_eq!(st.task_counts().waiting, 0);
    assert!(st.parked.is_empty());
}

#[test]
fn a_task_dropped_with_one_input_and_sent_again_waits_for_the_other_once() {
    let mut st = state();
    let mut fx = Rec::default();
    st.compute(
        vec![
            task("a", &[], 1, false),
            task("b", &[("r", &["tcp://p1"])], 2, false),
            ahead("c", &["a", "b"], 3),
        ],
        &Held::default(),
        &mut fx,
    );
    // a fails: c is dropped, and taken off b's list too.
    st.done(k("a"), Err(KernelError::failed("boom")), 1, &mut fx);
    assert_eq!(st.assigned(), 1);
    // c comes again, ahead of b only (a recomputed and held by now).
    let mut held = Held::default();
    held.0.insert(k("a"), 8);
    st.compute(vec![ahead("c", &["a", "b"], 3)], &held, &mut fx);
    assert_eq!(st.task_counts().waiting, 2, "b for its fetch, c for b");
    let mut fx = Rec::default();
    st.fetched(vec![(k("r"), 8)], Vec::new(), 10, &mut fx);
    assert_eq!(fx.executed, vec![k("b")]);
    assert_eq!(
        fx.followed,
        vec![pair("c", "b")],
        "c runs after b, not before"
    );
    let mut fx = Rec::default();
    st.done(k("b"), Ok(&Value::Int(1).encode()), 1, &mut fx);
    assert!(fx.executed.is_empty());
    assert!(st.local_waiters.is_empty());
}
