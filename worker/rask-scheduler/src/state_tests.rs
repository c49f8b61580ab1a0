//! State machine tests: no sockets, a recording outbox and simulated workers.

use bytes::Bytes;
use rustc_hash::FxHashMap;

use super::*;
use crate::graph::Arg;
use crate::jobs::seed_delayed_graph;
use crate::value::Value;

#[derive(Default)]
struct Rec {
    to_workers: Vec<(WorkerId, FromScheduler)>,
    to_clients: Vec<(ClientId, FromScheduler, Vec<Bytes>)>,
    retired: Vec<(RequestId, Vec<RetiredWorker>)>,
}

impl Outbox for Rec {
    fn to_worker(&mut self, worker: WorkerId, msg: Envelope<FromScheduler>) {
        self.to_workers.push((worker, msg.msg));
    }
    fn to_client(&mut self, client: ClientId, msg: Envelope<FromScheduler>) {
        self.to_clients.push((client, msg.msg, msg.blobs));
    }
    fn retire_done(&mut self, request: RequestId, retired: Vec<RetiredWorker>) {
        self.retired.push((request, retired));
    }
}

const C: ClientId = 100;

/// A scheduler with simulated workers that run the registry's functions.
struct Sim {
    st: State,
    out: Rec,
    now: f64,
    /// Results each worker holds.
    held: FxHashMap<WorkerId, FxHashMap<Key, Value>>,
    log: Vec<(WorkerId, FromScheduler)>,
}

impl Sim {
    fn new(workers: &[(WorkerId, u32)]) -> Sim {
        let mut sim = Sim {
            st: State::new(Config::default(), "tcp://sched:1".into(), 1000.0),
            out: Rec::default(),
            now: 1000.0,
            held: FxHashMap::default(),
            log: Vec::new(),
        };
        for &(id, nthreads) in workers {
            sim.add_worker(id, nthreads);
        }
        sim.st.add_client(C);
        sim
    }

    fn add_worker(&mut self, id: WorkerId, nthreads: u32) {
        let info = WorkerInfo {
            name: format!("w{id}"),
            address: addr(id),
            nthreads,
            memory_limit: 1 << 30,
            pid: id as u32,
        };
        self.st
            .add_worker(id, info, self.now, &mut self.out)
            .unwrap();
        self.held.insert(id, FxHashMap::default());
    }

    fn submit(&mut self, tasks: Vec<TaskSpec>, wanted: &[&Key]) {
        let wanted = wanted.iter().map(|k| (*k).clone()).collect();
        self.st
            .update_graph(C, tasks, wanted, self.now, &mut self.out);
    }

    /// Compute messages sent so far, drained.
    /// Compute messages sent so far, drained; other worker messages move to `log`.
    fn computes(&mut self) -> Vec<(WorkerId, ComputeTask)> {
        let mut out = Vec::new();
        for (w, m) in std::mem::take(&mut self.out.to_workers) {
            match m {
                FromScheduler::Compute(ct) => out.push((w, ct)),
                other => self.log.push((w, other)),
            }
        }
        out
    }

    /// Every non-compute message sent to workers so far.
    fn worker_messages(&mut self) -> Vec<(WorkerId, FromScheduler)> {
        self.computes_peek();
        self.log.clone()
    }

    fn computes_peek(&mut self) {
        let (computes, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.out.to_workers)
            .into_iter()
            .partition(|(_, m)| matches!(m, FromScheduler::Compute(_)));
        self.log.extend(others);
        self.out.to_workers = computes;
    }

    /// Runs one assigned task on its worker: inputs must be local or fetchable from a listed
    /// holder that really has them.
    fn run(&mut self, w: WorkerId, ct: &ComputeTask) {
        for (dep, holders) in &ct.who_has {
            if self.held[&w].contains_key(dep) {
                continue;
            }
            let src = holders.iter().find_map(|h| {
                let id: WorkerId = h.trim_start_matches("tcp://w").parse().ok()?;
                self.held.get(&id)?.get(dep).cloned()
            });
            let v = src.unwrap_or_else(|| {
                panic!(
                    "{} needs {dep} but no listed holder {holders:?} has it",
                    ct.spec.key
                )
            });
            self.held.get_mut(&w).unwrap().insert(dep.clone(), v);
        }
        let args: Vec<Value> = ct.spec.args.iter().map(|a| self.resolve(w, a)).collect();
        let f = crate::registry::lookup(&ct.spec.func).unwrap();
        self.now += 0.001;
        match f(&args) {
            Ok(v) => {
                let data = ct.send_result.then(|| v.encode().0);
                self.held
                    .get_mut(&w)
                    .unwrap()
                    .insert(ct.spec.key.clone(), v);
                let done = Finished {
                    key: ct.spec.key.clone(),
                    nbytes: 8,
                    duration_us: 100,
                    data,
                };
                self.st.task_finished(w, done, self.now, &mut self.out);
                self.st.settle(self.now, &mut self.out);
            }
            Err(e) => self
                .st
                .task_erred(w, &ct.spec.key, e, 100, self.now, &mut self.out),
        }
    }

    fn resolve(&self, w: WorkerId, a: &Arg) -> Value {
        match a {
            Arg::Value(v) => v.clone(),
            Arg::Key(k) => self.held[&w][k].clone(),
            Arg::List(items) => Value::List(items.iter().map(|i| self.resolve(w, i)).collect()),
        }
    }

    /// Runs everything assigned until nothing is left to run.
    fn run_all(&mut self) {
        loop {
            let batch = self.computes();
            if batch.is_empty() {
                return;
            }
            for (w, ct) in batch {
                if self.st.workers.contains_key(&w) {
                    self.run(w, &ct);
                }
            }
        }
    }

    fn client_value(&self, key: &Key) -> Option<Value> {
        self.out
            .to_clients
            .iter()
            .rev()
            .find_map(|(c, m, blobs)| match m {
                FromScheduler::KeyInMemory { key: k, .. } if k == key && *c == C => blobs
                    .first()
                    .map(|b| crate::value::Encoded(b.clone()).decode().unwrap()),
                _ => None,
            })
    }

    fn client_error(&self, key: &Key) -> Option<TaskFailure> {
        self.out.to_clients.iter().find_map(|(_, m, _)| match m {
            FromScheduler::KeyErred { key: k, failure } if k == key => Some(failure.clone()),
            _ => None,
        })
    }

    fn frees_to(&mut self, w: WorkerId) -> Vec<Key> {
        self.worker_messages()
            .iter()
            .filter_map(|(id, m)| match m {
                FromScheduler::FreeKeys { keys } if *id == w => Some(keys.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

fn addr(id: WorkerId) -> String {
    format!("tcp://w{id}")
}

fn task(key: &str, func: &str, args: Vec<Arg>) -> TaskSpec {
    TaskSpec::new(key, func, args)
}

fn k(s: &str) -> Key {
    Key::from(s)
}

#[test]
fn seed_delayed_graph_is_131() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    let g = seed_delayed_graph();
    let root = g.key().clone();
    sim.submit(g.graph(), &[&root]);
    sim.run_all();
    assert_eq!(sim.client_value(&root), Some(Value::Int(131)));
    // Only the wanted result is held; its inputs stay as specs (lineage) until it is released.
    assert_eq!(sim.st.count(TaskState::Memory), 1);
    assert_eq!(sim.st.count(TaskState::Released), 18);
    assert!(
        sim.held.values().map(|h| h.len()).sum::<usize>() >= 19,
        "the simulation keeps what it computed"
    );
    assert_eq!(
        sim.frees_to(1).len() + sim.frees_to(2).len(),
        18,
        "every input was freed on its worker"
    );
    sim.st.release_keys(C, &[root], sim.now, &mut sim.out);
    assert!(sim.st.tasks.is_empty());
    assert_eq!(sim.st.forgotten_total, 19);
}

#[test]
fn unknown_durations_fill_one_slot_per_thread_then_queue() {
    let mut sim = Sim::new(&[(1, 1), (2, 2)]);
    let tasks: Vec<TaskSpec> = (0..10)
        .map(|i| task(&format!("sleep-{i}"), "sleep", vec![0.0.into()]))
        .collect();
    let keys: Vec<Key> = tasks.iter().map(|t| t.key.clone()).collect();
    sim.submit(tasks, &keys.iter().collect::<Vec<_>>());
    let first = sim.computes();
    assert_eq!(
        first.len(),
        3,
        "one task per thread while durations are unknown"
    );
    assert_eq!(sim.st.count(TaskState::Queued), 7);
    let snap = sim.st.snapshot(sim.now);
    assert_eq!(snap.tasks.queued, 7);
    assert_eq!(snap.tasks.processing, 3);
    assert!(snap.adaptive_target >= 1);
    assert_eq!(snap.idle_since, None);
    // Highest priority first: the first three submitted run first.
    let mut started: Vec<String> = first
        .iter()
        .map(|(_, ct)| ct.spec.key.to_string())
        .collect();
    started.sort();
    assert_eq!(started, vec!["sleep-0", "sleep-1", "sleep-2"]);
    // Once one finishes fast, the measured duration lets workers take many more.
    let (w, ct) = first[0].clone();
    sim.run(w, &ct);
    assert_eq!(
        sim.st.count(TaskState::Queued),
        0,
        "fast tasks are pipelined, not queued"
    );
    sim.out.to_workers.extend(
        first[1..]
            .iter()
            .map(|(w, ct)| (*w, FromScheduler::Compute(ct.clone()))),
    );
    sim.run_all();
    for key in &keys {
        assert_eq!(sim.client_value(key), Some(Value::None));
    }
    assert!(sim.st.snapshot(sim.now).idle_since.is_some());
}

#[test]
fn placement_prefers_the_worker_holding_most_input_bytes() {
    let mut sim = Sim::new(&[(1, 4), (2, 4)]);
    sim.submit(
        vec![
            task("a", "inc", vec![1.into()]),
            task("b", "inc", vec![2.into()]),
        ],
        &[&k("a"), &k("b")],
    );
    let cs = sim.computes();
    assert_eq!(cs.len(), 2);
    // Finish a on worker 2 with many bytes, b on worker 1 with few.
    let done = |key: &str, nbytes| Finished {
        key: k(key),
        nbytes,
        duration_us: 10,
        data: None,
    };
    sim.st
        .task_finished(2, done("a", 1_000_000), sim.now, &mut sim.out);
    sim.st
        .task_finished(1, done("b", 10), sim.now, &mut sim.out);
    sim.submit(
        vec![task("c", "add", vec![Arg::Key(k("a")), Arg::Key(k("b"))])],
        &[&k("c")],
    );
    let cs = sim.computes();
    assert_eq!(cs.len(), 1);
    assert_eq!(cs[0].0, 2);
    assert_eq!(
        cs[0].1.who_has,
        vec![(k("a"), vec![addr(2)]), (k("b"), vec![addr(1)])]
    );
}

#[test]
fn a_lost_worker_s_results_are_recomputed_from_lineage() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.submit(vec![task("x", "inc", vec![1.into()])], &[&k("x")]);
    sim.run_all();
    let holder = sim.st.who_has(&k("x"))[0];
    // y needs x; before y runs, x's only holder dies.
    sim.submit(vec![task("y", "inc", vec![Arg::Key(k("x"))])], &[&k("y")]);
    let y_assignments = sim.computes();
    assert_eq!(y_assignments.len(), 1);
    sim.st.remove_worker(holder, sim.now, &mut sim.out);
    sim.held.remove(&holder);
    let other = if holder == 1 { 2 } else { 1 };
    let cs = sim.computes();
    let keys: Vec<String> = cs.iter().map(|(_, c)| c.spec.key.to_string()).collect();
    assert_eq!(keys, vec!["x"], "x is recomputed, y waits for it");
    assert_eq!(sim.st.task_state(&k("y")), Some(TaskState::Waiting));
    for (w, ct) in cs {
        assert_eq!(w, other);
        sim.run(w, &ct);
    }
    sim.run_all();
    assert_eq!(sim.client_value(&k("y")), Some(Value::Int(3)));
    assert_eq!(sim.client_value(&k("x")), Some(Value::Int(2)));
}

#[test]
fn a_task_on_a_dead_worker_is_retried_then_failed_after_repeated_deaths() {
    let mut sim = Sim::new(&[(1, 1)]);
    sim.submit(vec![task("boom", "inc", vec![1.into()])], &[&k("boom")]);
    for round in 0..=sim.st.config.allowed_failures {
        let cs = sim.computes();
        assert_eq!(cs.len(), 1, "round {round}");
        let w = cs[0].0;
        sim.st.remove_worker(w, sim.now, &mut sim.out);
        sim.add_worker(10 + u64::from(round), 1);
    }
    let f = sim
        .client_error(&k("boom"))
        .expect("failed after repeated worker deaths");
    assert_eq!(f.key, k("boom"));
    assert!(f.message.contains("died while running it"), "{}", f.message);
    assert_eq!(sim.st.snapshot(sim.now).tasks_suspicious_total, 4);
}

#[test]
fn an_error_reaches_the_client_with_the_failing_task_s_key() {
    let mut sim = Sim::new(&[(1, 1)]);
    sim.submit(
        vec![
            task("bad", "fail", vec!["kaputt".into()]),
            task("mid", "inc", vec![Arg::Key(k("bad"))]),
            task(
                "top",
                "sum",
                vec![Arg::List(vec![Arg::Key(k("mid")), 1.into()])],
            ),
        ],
        &[&k("top")],
    );
    sim.run_all();
    let f = sim.client_error(&k("top")).expect("client told");
    assert_eq!(
        f,
        TaskFailure {
            key: k("bad"),
            message: "kaputt".into()
        }
    );
    assert_eq!(sim.st.task_state(&k("mid")), Some(TaskState::Erred));
    // A later graph on top of the failed key fails at once.
    sim.submit(
        vec![task("later", "inc", vec![Arg::Key(k("top"))])],
        &[&k("later")],
    );
    assert_eq!(sim.client_error(&k("later")).map(|f| f.key), Some(k("bad")));
}

#[test]
fn unknown_dependencies_and_keys_are_errors() {
    let mut sim = Sim::new(&[(1, 1)]);
    sim.submit(
        vec![task("t", "inc", vec![Arg::Key(k("ghost"))])],
        &[&k("t"), &k("nothing")],
    );
    let f = sim.client_error(&k("t")).unwrap();
    assert!(f.message.contains("unknown key ghost"), "{}", f.message);
    assert!(
        sim.client_error(&k("nothing"))
            .unwrap()
            .message
            .contains("no such task")
    );
}

#[test]
fn released_results_are_freed_on_workers_and_forgotten() {
    let mut sim = Sim::new(&[(1, 1)]);
    sim.submit(
        vec![
            task("a", "inc", vec![1.into()]),
            task("b", "inc", vec![Arg::Key(k("a"))]),
        ],
        &[&k("b")],
    );
    sim.run_all();
    assert_eq!(
        sim.frees_to(1),
        vec![k("a")],
        "the input is freed once its only user is done"
    );
    sim.st.release_keys(C, &[k("b")], sim.now, &mut sim.out);
    assert_eq!(sim.frees_to(1), vec![k("a"), k("b")]);
    assert!(sim.st.tasks.is_empty());
    assert_eq!(sim.st.snapshot(sim.now).tasks_forgotten_total, 2);
    assert_eq!(sim.st.snapshot(sim.now).workers[0].nbytes, 0);
}

#[test]
fn releasing_pending_work_cancels_it() {
    let mut sim = Sim::new(&[(1, 1)]);
    let tasks: Vec<TaskSpec> = (0..5)
        .map(|i| task(&format!("sleep-{i}"), "sleep", vec![1.0.into()]))
        .collect();
    let keys: Vec<Key> = tasks.iter().map(|t| t.key.clone()).collect();
    sim.submit(tasks, &keys.iter().collect::<Vec<_>>());
    assert_eq!(sim.st.count(TaskState::Queued), 4);
    sim.st.remove_client(C, sim.now, &mut sim.out);
    assert!(sim.st.tasks.is_empty());
    assert_eq!(
        sim.frees_to(1),
        vec![k("sleep-0")],
        "the running task is freed on its worker"
    );
    let snap = sim.st.snapshot(sim.now);
    assert_eq!(snap.tasks, TaskCounts::default());
    assert!(snap.idle_since.is_some());
}

#[test]
fn retiring_a_worker_moves_its_unique_results_first() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.submit(vec![task("x", "inc", vec![1.into()])], &[&k("x")]);
    sim.run_all();
    let holder = sim.st.who_has(&k("x"))[0];
    let other = if holder == 1 { 2 } else { 1 };
    sim.st.retire_workers(
        7,
        &RetireSelector::Workers(vec![addr(holder)]),
        sim.now,
        &mut sim.out,
    );
    let acquire: Vec<_> = sim
        .out
        .to_workers
        .iter()
        .filter(|(_, m)| matches!(m, FromScheduler::AcquireReplicas { .. }))
        .cloned()
        .collect();
    assert_eq!(
        acquire,
        vec![(
            other,
            FromScheduler::AcquireReplicas {
                keys: vec![(k("x"), vec![addr(holder)])]
            }
        )]
    );
    assert!(
        sim.out.retired.is_empty(),
        "not retired before the data moved"
    );
    // Further events do not re-send the same request.
    sim.st.tick(sim.now, &mut sim.out);
    sim.st.add_keys(other, &[], sim.now, &mut sim.out);
    assert_eq!(
        sim.out
            .to_workers
            .iter()
            .filter(|(_, m)| matches!(m, FromScheduler::AcquireReplicas { .. }))
            .count(),
        1
    );
    sim.st
        .add_keys(other, &[(k("x"), 8)], sim.now, &mut sim.out);
    assert_eq!(sim.out.retired.len(), 1);
    assert_eq!(sim.out.retired[0].0, 7);
    assert_eq!(sim.out.retired[0].1[0].name, format!("w{holder}"));
    assert!(sim.out.to_workers.contains(&(
        holder,
        FromScheduler::Close {
            reason: "retired".into()
        }
    )));
    assert_eq!(sim.st.who_has(&k("x")), vec![other]);
    assert_eq!(
        sim.st.task_state(&k("x")),
        Some(TaskState::Memory),
        "nothing recomputed"
    );
    assert!(sim.computes().is_empty());
}

#[test]
fn retire_by_count_takes_the_least_loaded_and_keeps_the_last_data_holder() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.submit(vec![task("x", "inc", vec![1.into()])], &[&k("x")]);
    sim.run_all();
    let holder = sim.st.who_has(&k("x"))[0];
    sim.st
        .retire_workers(1, &RetireSelector::Count(1), sim.now, &mut sim.out);
    assert_eq!(sim.out.retired.len(), 1);
    assert_eq!(sim.out.retired[0].1.len(), 1);
    assert_ne!(
        sim.out.retired[0].1[0].address,
        addr(holder),
        "the worker without data goes"
    );
    // The last worker holds data nobody else can take: it is kept.
    sim.st
        .retire_workers(2, &RetireSelector::Count(1), sim.now, &mut sim.out);
    assert_eq!(sim.out.retired[1], (2, vec![]));
    assert_eq!(
        sim.st.snapshot(sim.now).workers[0].status,
        WorkerStatus::Running
    );
}

#[test]
fn duplicate_worker_names_are_refused() {
    let mut sim = Sim::new(&[(1, 1)]);
    let info = WorkerInfo {
        name: "w1".into(),
        address: addr(9),
        nthreads: 1,
        memory_limit: 0,
        pid: 9,
    };
    assert_eq!(
        sim.st.add_worker(9, info, sim.now, &mut sim.out),
        Err(RegisterError::DuplicateName("w1".into()))
    );
}

#[test]
fn missing_data_forgets_the_false_holder_and_recomputes() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.submit(vec![task("x", "inc", vec![1.into()])], &[&k("x")]);
    sim.run_all();
    let holder = sim.st.who_has(&k("x"))[0];
    let other = if holder == 1 { 2 } else { 1 };
    sim.submit(vec![task("y", "inc", vec![Arg::Key(k("x"))])], &[&k("y")]);
    // Occupy the holder so y must go to the other worker and fetch.
    let cs = sim.computes();
    assert_eq!(cs.len(), 1);
    let (w, _) = cs[0];
    // The worker reports it could not fetch x (the holder lost it without dying).
    sim.held.get_mut(&holder).unwrap().remove(&k("x"));
    sim.st
        .missing_data(w, &k("x"), &[addr(holder)], sim.now, &mut sim.out);
    assert_eq!(sim.st.task_state(&k("y")), Some(TaskState::Waiting));
    sim.run_all();
    assert_eq!(sim.client_value(&k("y")), Some(Value::Int(3)));
    let _ = other;
}

#[test]
fn silent_workers_are_removed_after_the_ttl() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.st.heartbeat(2, WorkerLoad::default(), sim.now + 25.0);
    sim.st.tick(sim.now + 31.0, &mut sim.out);
    let ids: Vec<WorkerId> = sim.st.worker_ids().collect();
    assert_eq!(ids, vec![2]);
    assert!(
        sim.out
            .to_workers
            .iter()
            .any(|(w, m)| *w == 1 && matches!(m, FromScheduler::Close { .. }))
    );
}

#[test]
fn tasks_wait_for_a_worker_and_run_when_one_joins() {
    let mut sim = Sim::new(&[]);
    sim.submit(vec![task("a", "inc", vec![1.into()])], &[&k("a")]);
    assert_eq!(sim.st.count(TaskState::Queued), 1);
    assert_eq!(
        sim.st.snapshot(sim.now).adaptive_target,
        1,
        "work with no workers asks for one"
    );
    sim.add_worker(1, 1);
    sim.run_all();
    assert_eq!(sim.client_value(&k("a")), Some(Value::Int(2)));
}

#[test]
fn large_graphs_are_handled_in_linear_passes() {
    // 10,000 inputs to one sum, and a 10,000-long chain: no recursion, no quadratic scans.
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    let mut tasks: Vec<TaskSpec> = (0..10_000)
        .map(|i| task(&format!("inc-{i}"), "inc", vec![(i as i64).into()]))
        .collect();
    tasks.push(task(
        "sum-0",
        "sum",
        vec![Arg::List(
            (0..10_000)
                .map(|i| Arg::Key(k(&format!("inc-{i}"))))
                .collect(),
        )],
    ));
    sim.submit(tasks, &[&k("sum-0")]);
    sim.run_all();
    assert_eq!(
        sim.client_value(&k("sum-0")),
        Some(Value::Int((1..=10_000).sum()))
    );

    let mut chain = vec![task("c-0", "inc", vec![0.into()])];
    chain.extend((1..10_000).map(|i| {
        task(
            &format!("c-{i}"),
            "inc",
            vec![Arg::Key(k(&format!("c-{}", i - 1)))],
        )
    }));
    sim.submit(chain, &[&k("c-9999")]);
    sim.run_all();
    assert_eq!(sim.client_value(&k("c-9999")), Some(Value::Int(10_000)));
    assert_eq!(
        sim.st.count(TaskState::Memory),
        2,
        "only the two wanted results are held"
    );
}

#[test]
fn a_busy_retiring_worker_is_closed_after_the_grace_period_and_its_task_runs_elsewhere() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    sim.submit(vec![task("long", "sleep", vec![0.0.into()])], &[&k("long")]);
    let cs = sim.computes();
    let (busy, _) = cs[0];
    sim.st.retire_workers(
        3,
        &RetireSelector::Workers(vec![format!("w{busy}")]),
        sim.now,
        &mut sim.out,
    );
    assert!(sim.out.retired.is_empty(), "waits while the task runs");
    sim.now += 31.0;
    for w in [1, 2] {
        sim.st.heartbeat(w, WorkerLoad::default(), sim.now);
    }
    sim.st.tick(sim.now, &mut sim.out);
    assert_eq!(sim.out.retired.len(), 1);
    let moved = sim.computes();
    assert_eq!(moved.len(), 1);
    assert_ne!(moved[0].0, busy);
    assert_eq!(sim.st.snapshot(sim.now).tasks_suspicious_total, 0);
    for (w, ct) in moved {
        sim.run(w, &ct);
    }
    assert_eq!(sim.client_value(&k("long")), Some(Value::None));
}

#[test]
fn a_worker_joining_while_tasks_queue_is_welcomed_before_it_gets_tasks() {
    let mut sim = Sim::new(&[]);
    sim.submit(vec![task("a", "inc", vec![1.into()])], &[&k("a")]);
    sim.add_worker(7, 1);
    let to_7: Vec<&FromScheduler> = sim
        .out
        .to_workers
        .iter()
        .filter(|(w, _)| *w == 7)
        .map(|(_, m)| m)
        .collect();
    assert!(
        matches!(to_7.first(), Some(FromScheduler::Welcome { id: 7 })),
        "{to_7:?}"
    );
    assert!(
        matches!(to_7.get(1), Some(FromScheduler::Compute(_))),
        "{to_7:?}"
    );
}

#[test]
fn a_finished_reduction_answers_first_and_frees_its_inputs_on_settle() {
    let mut sim = Sim::new(&[(1, 1), (2, 1)]);
    let mut tasks: Vec<TaskSpec> = (0..200)
        .map(|i| task(&format!("inc-r-{i}"), "inc", vec![Arg::from(i as i64)]))
        .collect();
    let inputs: Vec<Arg> = tasks.iter().map(|t| Arg::Key(t.key.clone())).collect();
    tasks.push(task("sum-r", "sum", vec![Arg::List(inputs)]));
    sim.submit(tasks, &[&k("sum-r")]);
    let mut sum_on = None;
    loop {
        let batch = sim.computes();
        if batch.is_empty() {
            break;
        }
        for (w, ct) in batch {
            if ct.spec.key == k("sum-r") {
                sum_on = Some((w, ct));
            } else {
                sim.run(w, &ct);
            }
        }
    }
    let (w, ct) = sum_on.expect("the sum is assigned once its inputs are in memory");
    sim.log.clear();
    let done = Finished {
        key: ct.spec.key.clone(),
        nbytes: 8,
        duration_us: 10,
        data: Some(Value::Int((1..=200).sum()).encode().0),
    };
    sim.st.task_finished(w, done, sim.now, &mut sim.out);
    assert_eq!(sim.client_value(&k("sum-r")), Some(Value::Int(20_100)));
    assert!(sim.st.has_deferred_work());
    assert!(sim.frees_to(1).is_empty() && sim.frees_to(2).is_empty());
    sim.st.settle(sim.now, &mut sim.out);
    assert!(!sim.st.has_deferred_work());
    let mut freed: Vec<Key> = [sim.frees_to(1), sim.frees_to(2)].concat();
    freed.sort();
    freed.dedup();
    assert_eq!(freed.len(), 200, "every input freed on its holder");
    assert_eq!(sim.st.task_state(&k("inc-r-0")), Some(TaskState::Released));
    assert_eq!(sim.st.task_state(&k("sum-r")), Some(TaskState::Memory));
}
