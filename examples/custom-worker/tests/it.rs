//! The example end to end: worker processes of the `custom-worker` binary run the `words`
//! family; plain `rask` workers do not have it, and the scheduler knows.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use rask::client::ClientError;
use rask::core::protocol::TaskError;
use rask::local::{LocalCluster, LocalClusterConfig, Mode};
use rask::worker::{Worker, WorkerConfig};
use rask_custom_worker::{count_words, family, sample_text, tokenize};

fn chunks(lines: usize) -> (Vec<String>, String) {
    let text = sample_text(lines, 3);
    let chunks = text.chunks(100).map(|c| c.join("\n")).collect();
    (chunks, text.join("\n"))
}

#[tokio::test]
async fn custom_worker_processes_count_the_words() {
    let config = LocalClusterConfig::new(2, 1).processes(env!("CARGO_BIN_EXE_custom-worker"));
    let cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let (chunks, text) = chunks(2_000);
    let counts = count_words(&client, chunks, 1).await.unwrap();
    assert_eq!(counts, tokenize(&text, 1).unwrap());
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_wordcount_client_runs_against_a_custom_worker_scheduler() {
    // `custom-worker scheduler` and `custom-worker worker` as processes, `wordcount` as the job.
    let config = LocalClusterConfig::new(1, 2).processes(env!("CARGO_BIN_EXE_custom-worker"));
    let cluster = LocalCluster::start(config).await.unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wordcount"))
        .args([
            "--scheduler",
            cluster.scheduler_address(),
            "--lines",
            "5000",
        ])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: the counts match"), "{stdout}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn tasks_go_only_to_workers_with_the_family_and_fail_clearly_without_one() {
    // A scheduler whose only worker is a plain rask worker, failing unrunnable tasks after 1 s.
    let mut config = LocalClusterConfig::new(1, 1);
    config.mode = Mode::InProcess(rask::registry());
    config.policy.no_workers_timeout_s = Some(1.0);
    let mut cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let (few, _) = chunks(200);
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        count_words(&client, few.clone(), 1),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    let ClientError::Task(f) = &err else {
        panic!("{err:?}")
    };
    let TaskError::NoWorker { func, families, .. } = &f.error else {
        panic!("{f}")
    };
    assert_eq!(func, "words.tokenize");
    assert!(
        families.contains("seed ") && families.contains("array ") && !families.contains("words"),
        "{families}"
    );
    assert!(
        err.to_string().contains("no worker can run words.tokenize"),
        "{err}"
    );

    // A worker with the family joins: the same graph runs, on it alone.
    let mut registry = rask::registry();
    registry.register(family()).unwrap();
    let w = Worker::start(
        WorkerConfig::new(cluster.scheduler_address(), "words-worker"),
        registry,
    )
    .await
    .unwrap();
    let (chunks, text) = chunks(1_000);
    let counts = count_words(&client, chunks, 1).await.unwrap();
    assert_eq!(counts, tokenize(&text, 1).unwrap());
    let snap = cluster.snapshot().await.unwrap();
    let plain = snap
        .workers
        .iter()
        .find(|w| w.name != "words-worker")
        .unwrap();
    assert_eq!(plain.keys, 0, "no words task ran on the plain worker");
    w.close().await;
    cluster.add_worker().await.unwrap();
}
