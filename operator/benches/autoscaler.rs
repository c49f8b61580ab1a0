//! Autoscaler benchmark on the local backend (release `rask` processes). Prints one JSON line per
//! scenario:
//!
//! - `autoscale_reaction`: a queue spike (2,000 tasks of 10 ms) on a 1-worker cluster → the first
//!   scale-up decision, with the production poll interval of 1 s (goal ≤ 2 s; dask-kubernetes'
//!   autoscaler polls every 5 s and waits 15 s between changes).
//! - `autoscale_oscillation`: load switching on and off every few seconds for ~40 s with a 10 s
//!   scale-down window → direction changes of the worker count while the load oscillates (goal:
//!   one, the first scale-up) and after it stops (one, the scale-down).
//! - `scale_down_trials`: 100 retirements of named workers while tasks run, each followed by a
//!   check that every held result is still the one first computed (goal: 0 lost).
//!
//! `cargo bench -p rask-operator --bench autoscaler` (builds the release `rask` first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run should stop loudly

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rask::Value;
use rask::client::{Client, Future};
use rask::seed::{self, lit};
use rask_operator::autoscaler::driver::{Autoscaler, Outcome, Step};
use rask_operator::autoscaler::policy::Settings;
use rask_operator::backend::Backend;
use rask_operator::backend::local::{LocalBackend, LocalSpec};
use rask_operator::clock::now;
use rask_operator::scheduler_api::SchedulerApi;
use rask_operator::spec::{ByteSize, MemoryLimit, WorkerTemplate};
use serde_json::json;

const GROUP: &str = "bench-default";

async fn cluster(rask: &Path, dir: &tempfile::TempDir, workers: usize) -> Arc<LocalBackend> {
    let spec = LocalSpec {
        cluster: "bench".into(),
        rask: rask.to_owned(),
        scheduler_program: None,
        programs: Default::default(),
        dir: dir.path().to_owned(),
        scheduler_env: vec![("RUST_LOG".into(), "error".into())],
        groups: [(
            GROUP.to_string(),
            WorkerTemplate {
                nthreads: Some(1),
                memory_limit: MemoryLimit::Bytes(ByteSize(1 << 30)),
                env: vec![("RUST_LOG".into(), "error".into())],
                resources: None,
            },
        )]
        .into(),
        start_timeout: Duration::from_secs(20),
        tls: None,
    };
    let b = Arc::new(LocalBackend::start(spec).await.unwrap());
    b.add_workers(GROUP, workers).await.unwrap();
    b
}

fn stamps(client: &Client, n: usize, secs: f64) -> Vec<Future<Value>> {
    client.map(
        seed::STAMP,
        (0..n as i64).map(|i| seed::Stamp {
            x: lit(i),
            seconds: secs,
        }),
    )
}

type Steps = Arc<Mutex<Vec<Step>>>;

fn start_autoscaler(
    backend: &Arc<LocalBackend>,
    settings: Settings,
) -> (
    Steps,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let steps: Steps = Arc::default();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let scaler = Autoscaler::new(GROUP, settings);
    let (b, s) = (backend.clone(), steps.clone());
    let handle = tokio::spawn(async move {
        scaler
            .run(b.as_ref(), rx, |st| s.lock().unwrap().push(st.clone()))
            .await
    });
    (steps, tx, handle)
}

/// The worker count before the first step, then after each step.
fn sizes(steps: &[Step]) -> Vec<usize> {
    let first = steps.first().map(|s| s.current);
    first
        .into_iter()
        .chain(steps.iter().map(|s| match &s.outcome {
            Ok(Outcome::Added(n)) => s.current + n.len(),
            Ok(Outcome::Retired(r)) => s.current - r.removed.len(),
            _ => s.current,
        }))
        .collect()
}

fn direction_changes(sizes: &[usize]) -> usize {
    let mut changes = 0;
    let mut last = sizes.first().copied().unwrap_or(0);
    for &n in sizes {
        if n != last {
            changes += 1;
            last = n;
        }
    }
    changes
}

async fn wait_workers(backend: &LocalBackend, n: usize, timeout: Duration) {
    let t = Instant::now();
    while backend.list_workers(GROUP).await.unwrap().len() != n {
        assert!(t.elapsed() < timeout, "cluster did not reach {n} workers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the scheduler knows `n` workers.
async fn wait_joined(api: &SchedulerApi, backend: &LocalBackend, n: usize) {
    let t = Instant::now();
    while api
        .get_workers(&backend.scheduler_url())
        .await
        .map(|w| w.len())
        .unwrap_or(0)
        != n
    {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{n} workers did not join"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn reaction(rask: &Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let backend = cluster(rask, &dir, 1).await;
    let client = Client::connect(backend.scheduler_address()).await.unwrap();
    let mut settings = Settings::new(1, 4);
    settings.down_window = Duration::from_secs(2);
    let (steps, stop, handle) = start_autoscaler(&backend, settings);
    let mut latencies = Vec::new();
    for _ in 0..5 {
        wait_workers(&backend, 1, Duration::from_secs(60)).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        steps.lock().unwrap().clear();
        let t0 = now();
        let fs = stamps(&client, 2000, 0.01);
        let decided = loop {
            if let Some(s) = steps
                .lock()
                .unwrap()
                .iter()
                .find(|s| matches!(&s.outcome, Ok(Outcome::Added(n)) if !n.is_empty()))
            {
                break s.at;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        latencies.push(decided - t0);
        client.gather(&fs).await.unwrap();
    }
    let _ = stop.send(true);
    handle.await.unwrap();
    backend.delete_cluster().await.unwrap();
    latencies.sort_by(f64::total_cmp);
    json!({
        "bench": "autoscale_reaction",
        "backend": "local",
        "poll_s": 1.0,
        "trials": latencies.len(),
        "median_s": latencies[latencies.len() / 2],
        "max_s": latencies[latencies.len() - 1],
        "goal_s": 2.0,
        "dask_kubernetes_s": "5 s poll + 15 s cooldown (documented defaults; not runnable here)",
    })
}

async fn oscillation(rask: &Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let backend = cluster(rask, &dir, 1).await;
    let client = Client::connect(backend.scheduler_address()).await.unwrap();
    let mut settings = Settings::new(1, 4);
    settings.down_window = Duration::from_secs(10);
    let (steps, stop, handle) = start_autoscaler(&backend, settings);
    // 8 cycles: a burst (~2 s of work at 4 workers), then 3 s of nothing.
    for _ in 0..8 {
        let fs = stamps(&client, 400, 0.02);
        client.gather(&fs).await.unwrap();
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let during = sizes(&steps.lock().unwrap());
    wait_workers(&backend, 1, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let all = sizes(&steps.lock().unwrap());
    let _ = stop.send(true);
    handle.await.unwrap();
    backend.delete_cluster().await.unwrap();
    json!({
        "bench": "autoscale_oscillation",
        "backend": "local",
        "cycles": 8,
        "down_window_s": 10,
        "direction_changes_during_load": direction_changes(&during),
        "direction_changes_total": direction_changes(&all),
        "max_workers": all.iter().max(),
        "goal": "1 during load (the first scale-up), 2 in total",
    })
}

async fn scale_down_trials(rask: &Path) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let backend = cluster(rask, &dir, 4).await;
    let api = SchedulerApi::new(Duration::from_secs(10));
    wait_joined(&api, &backend, 4).await;
    let client = Client::connect(backend.scheduler_address()).await.unwrap();
    let (mut lost, mut retired, mut kept) = (0usize, 0usize, 0usize);
    let t = Instant::now();
    for trial in 0..100usize {
        // Results to keep, then load that is still running during the retirement.
        let held = stamps(&client, 200, 0.0);
        let first: Vec<Value> = client.gather(&held).await.unwrap();
        let load = stamps(&client, 100, 0.005);
        let mut names: Vec<String> = backend
            .list_workers(GROUP)
            .await
            .unwrap()
            .into_iter()
            .map(|w| w.name)
            .collect();
        names.sort();
        // 1 to 3 workers, a different set each time (old and new ones alike).
        let k = 1 + trial % 3;
        let chosen: Vec<String> = names
            .iter()
            .cycle()
            .skip(trial % names.len())
            .take(k)
            .cloned()
            .collect();
        let r = backend.retire_workers(GROUP, &chosen).await.unwrap();
        retired += r.removed.len();
        kept += r.kept.len();
        client.gather(&load).await.unwrap();
        let again = client.gather(&held).await.unwrap();
        lost += first.iter().zip(&again).filter(|(a, b)| a != b).count();
        let have = backend.list_workers(GROUP).await.unwrap().len();
        backend.add_workers(GROUP, 4 - have).await.unwrap();
        wait_joined(&api, &backend, 4).await;
        if (trial + 1) % 10 == 0 {
            eprintln!(
                "scale_down_trials: {} done, {lost} results lost, {:.0} s",
                trial + 1,
                t.elapsed().as_secs_f64()
            );
        }
    }
    backend.delete_cluster().await.unwrap();
    json!({
        "bench": "scale_down_trials",
        "backend": "local",
        "trials": 100,
        "workers_retired": retired,
        "retirements_declined": kept,
        "held_results_per_trial": 200,
        "results_lost": lost,
        "goal": 0,
        "wall_s": t.elapsed().as_secs_f64(),
    })
}

fn main() {
    let rask = common::built_binary("rask", "release");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| only.is_empty() || only.iter().any(|o| name.contains(o.as_str()));
    rt.block_on(async {
        if wants("reaction") {
            println!("{}", reaction(&rask).await);
        }
        if wants("oscillation") {
            println!("{}", oscillation(&rask).await);
        }
        if wants("trials") {
            println!("{}", scale_down_trials(&rask).await);
        }
    });
}
