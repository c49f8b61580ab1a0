//! The worker memory model on real worker processes with a nanny: a task that allocates past
//! the limit, a worker that pauses, a worker restarted with its results recomputed.

use std::time::Duration;

use rask::Value;
use rask::client::ClientError;
use rask::client::delayed::delayed;
use rask::core::Resources;
use rask::core::protocol::TaskError;
use rask::local::{LocalCluster, LocalClusterConfig};
use rask::scheduler::WorkerStatus;
use rask::seed::{self, lit};
use tokio::process::{Child, Command};

use crate::{eventually, rask_bin};

const MB: u64 = 1 << 20;

/// A scheduler alone (its HTTP API on a free port), for workers started by hand.
async fn scheduler() -> LocalCluster {
    let mut config = LocalClusterConfig::new(0, 1);
    config.dashboard = Some("127.0.0.1:0".parse().unwrap());
    LocalCluster::start(config).await.unwrap()
}

/// `rask worker` under its nanny (the default), with a memory limit.
fn worker(
    cluster: &LocalCluster,
    name: &str,
    limit_mb: u64,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Child {
    let dir = std::env::temp_dir();
    Command::new(rask_bin())
        .arg("worker")
        .arg(cluster.scheduler_address())
        .args([
            "--name",
            name,
            "--nthreads",
            "2",
            "--listen-host",
            "127.0.0.1",
        ])
        .args(["--memory-limit", &format!("{}", limit_mb * MB)])
        .arg("--local-directory")
        .arg(dir)
        .args(extra)
        .envs(env.iter().copied())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("rask worker starts")
}

async fn wait_workers(cluster: &LocalCluster, n: usize) {
    let handle = cluster.handle();
    assert!(
        eventually(Duration::from_secs(30), async || {
            handle
                .snapshot()
                .await
                .map(|s| s.workers.len() == n)
                .unwrap_or(false)
        })
        .await,
        "{n} workers joined"
    );
}

#[tokio::test]
async fn a_task_allocating_twice_the_limit_fails_with_the_memory_reason_and_the_cluster_lives_on() {
    let cluster = scheduler().await;
    let _w = worker(&cluster, "hungry", 160, &[], &[]);
    wait_workers(&cluster, 1).await;
    let client = cluster.client().await.unwrap();
    let hog = client.submit(
        seed::ALLOCATE,
        seed::Allocate {
            bytes: 320 * MB,
            hold_seconds: 2.0,
        },
    );
    let err = tokio::time::timeout(Duration::from_secs(60), hog.result())
        .await
        .expect("no hang")
        .unwrap_err();
    let ClientError::Task(failure) = &err else {
        panic!("expected a task failure, got {err:?}");
    };
    match &failure.error {
        TaskError::KilledWorker {
            deaths,
            last_worker,
            reason: Some(reason),
        } => {
            assert_eq!(*deaths, 4, "the allowed retries, then the failure");
            assert_eq!(last_worker, "hungry");
            assert!(
                reason.contains("over 95% of its 160.0 MiB limit"),
                "{reason}"
            );
        }
        other => panic!("expected KilledWorker with a reason, got {other:?}"),
    }
    assert!(err.to_string().contains("the nanny restarted it"), "{err}");
    // The nanny restarted the worker each time: it is there, under its name, and works.
    wait_workers(&cluster, 1).await;
    assert_eq!(cluster.snapshot().await.unwrap().workers[0].name, "hungry");
    let ok = client.submit(seed::INC, lit(41));
    assert_eq!(ok.result().await.unwrap(), Value::Int(42));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_worker_over_its_pause_threshold_starts_no_task_until_back_under() {
    let cluster = scheduler().await;
    // Terminate off: this worker is meant to stay, paused, while a task holds its memory.
    let _w = worker(
        &cluster,
        "pausing",
        200,
        &[],
        &[("DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE", "false")],
    );
    wait_workers(&cluster, 1).await;
    let client = cluster.client().await.unwrap();
    let hold = client.submit(
        seed::ALLOCATE,
        seed::Allocate {
            bytes: 170 * MB,
            hold_seconds: 3.0,
        },
    );
    let handle = cluster.handle();
    let paused = eventually(Duration::from_secs(20), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.workers[0].status == WorkerStatus::Paused)
            .unwrap_or(false)
    })
    .await;
    assert!(
        paused,
        "the worker paused: {:?}",
        cluster.snapshot().await.unwrap().workers
    );
    let dashboard = cluster.dashboard_address().unwrap();
    let (_, metrics) = crate::http(dashboard, "GET", "/metrics", "").await;
    assert!(
        metrics.contains(r#"dask_scheduler_workers{state="paused"} 1"#),
        "{metrics}"
    );
    // It has a free thread, but takes no new task while paused.
    let small = client.submit(seed::INC, lit(1));
    let early = tokio::time::timeout(Duration::from_millis(700), small.result()).await;
    assert!(early.is_err(), "a task ran on a paused worker");
    // The big task ends, its memory is freed, the worker resumes and runs the small one.
    assert_eq!(hold.result().await.unwrap(), Value::Int((170 * MB) as i64));
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(20), small.result())
            .await
            .expect("resumed")
            .unwrap(),
        Value::Int(2)
    );
    assert_eq!(
        cluster.snapshot().await.unwrap().workers[0].status,
        WorkerStatus::Running
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn results_on_a_worker_the_nanny_restarts_are_recomputed_and_nothing_is_lost() {
    let cluster = scheduler().await;
    let _a = worker(&cluster, "big", 160, &["--resources", "BIG=1"], &[]);
    let _b = worker(&cluster, "small", 0, &[], &[]);
    wait_workers(&cluster, 2).await;
    let client = cluster.client().await.unwrap();
    let parts = client.map(seed::INC, (0..200i64).map(lit));
    client.gather(&parts).await.unwrap();
    let held_on_big = cluster
        .snapshot()
        .await
        .unwrap()
        .workers
        .iter()
        .find(|w| w.name == "big")
        .map(|w| w.keys)
        .unwrap();
    assert!(held_on_big > 0, "both workers hold results");
    // Only `big` has the resource: the hog kills it (and is retried there) until it fails.
    let hog = delayed(
        seed::ALLOCATE,
        seed::Allocate {
            bytes: 320 * MB,
            hold_seconds: 2.0,
        },
    )
    .with_resources(Resources::parse("BIG=1").unwrap());
    let hog = client.compute(&hog);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(60), hog.result()).await.expect("no hang"),
        Err(ClientError::Task(f)) if matches!(f.error, TaskError::KilledWorker { .. })
    ));
    // Every result is still there: those `big` held were recomputed from their tasks.
    let total = client.submit_with(seed::SUM, |d| {
        parts.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(total.result().await.unwrap(), Value::Int((1..=200).sum()));
    let snap = cluster.snapshot().await.unwrap();
    assert!(
        snap.tasks_computed_total >= 201 + held_on_big as u64,
        "lost results were recomputed ({} runs, {held_on_big} lost)",
        snap.tasks_computed_total
    );
    cluster.shutdown().await;
}
