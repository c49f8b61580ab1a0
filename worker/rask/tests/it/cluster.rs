//! Jobs on real clusters: results, failures, lost workers, retirement, spill.

use std::time::Duration;

use rask::client::ClientError;
use rask::client::delayed::{Delayed, delayed, delayed_with};
use rask::core::protocol::TaskError;
use rask::local::{LocalCluster, LocalClusterConfig};
use rask::seed::{self, lit};
use rask::{Func, KernelError, Value, jobs};

use crate::{eventually, process_cluster};

#[tokio::test]
async fn seed_delayed_graph_is_131_on_worker_processes() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    assert_eq!(jobs::seed_delayed(&client).await.unwrap(), 131);
    cluster.shutdown().await;
}

#[tokio::test]
async fn futures_pipeline_gives_every_pair() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let saves = jobs::futures_pipeline(&client, 20, 0.005);
    let values = client.gather(&saves).await.unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, jobs::futures_pipeline_expected(i));
    }
    cluster.shutdown().await;
}

/// 2,000 leaf tasks, 200 partial sums of 10, one total: intermediate results live only on workers.
fn two_level_sum(leaf_seconds: f64) -> Delayed<Value> {
    let leaves: Vec<Delayed<Value>> = (0..2000i64)
        .map(|i| {
            delayed(
                seed::SLEEP,
                seed::Sleep {
                    seconds: leaf_seconds,
                    value: lit(i),
                },
            )
        })
        .collect();
    let partials: Vec<Delayed<Value>> = leaves
        .chunks(10)
        .map(|c| delayed_with(seed::SUM, |d| c.iter().map(|l| d.input(l).into()).collect()))
        .collect();
    delayed_with(seed::SUM, |d| {
        partials.iter().map(|p| d.input(p).into()).collect()
    })
}

#[tokio::test]
async fn sigkill_of_a_worker_mid_job_still_gives_the_right_answer() {
    let mut cluster = process_cluster(3).await;
    let client = cluster.client().await.unwrap();
    let total = client.compute(&two_level_sum(0.001));
    // Kill a worker in the middle: once a third of the leaves are done.
    let handle = cluster.handle();
    let started = eventually(Duration::from_secs(30), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks_computed_total >= 700)
            .unwrap_or(false)
    })
    .await;
    assert!(started, "the job made progress");
    let victim = cluster.worker_names()[1].clone();
    let held_before = cluster
        .snapshot()
        .await
        .unwrap()
        .workers
        .iter()
        .find(|w| w.name == victim)
        .map(|w| w.keys)
        .unwrap_or(0);
    cluster.kill_worker(&victim).await.unwrap();
    let value = tokio::time::timeout(Duration::from_secs(60), total.result())
        .await
        .expect("finishes")
        .unwrap();
    assert_eq!(value, Value::Int((0..2000).sum()));
    let snap = cluster.snapshot().await.unwrap();
    assert_eq!(snap.workers.len(), 2);
    assert!(
        snap.tasks_computed_total > 2201 || held_before == 0,
        "lost results were recomputed ({} runs)",
        snap.tasks_computed_total
    );
    cluster.shutdown().await;
}

/// A chain of dependent futures goes to its worker ahead of each link's input (no scheduler
/// round trip per link); killing that worker mid-chain hands the chain to the other one, and
/// the answer is right.
#[tokio::test]
async fn a_chain_sent_ahead_survives_the_loss_of_its_worker() {
    const LINKS: i64 = 500;
    let mut cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let mut x = client.submit(seed::INC, lit(0));
    for _ in 1..LINKS {
        let s = client.submit_with(seed::SLEEP, |d| seed::Sleep {
            seconds: 0.003,
            value: d.input(&x).into(),
        });
        x = client.submit_with(seed::INC, |d| d.input(&s).into());
    }
    let handle = cluster.handle();
    let started = eventually(Duration::from_secs(30), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks_computed_total >= 200 && s.tasks_speculated_total >= 20)
            .unwrap_or(false)
    })
    .await;
    assert!(started, "the chain made progress, its links sent ahead");
    let snap = cluster.snapshot().await.unwrap();
    let victim = snap
        .workers
        .iter()
        .find(|w| w.processing > 0)
        .map(|w| w.name.clone())
        .expect("a worker runs the chain");
    cluster.kill_worker(&victim).await.unwrap();
    let value = tokio::time::timeout(Duration::from_secs(60), x.result())
        .await
        .expect("finishes")
        .unwrap();
    assert_eq!(value, Value::Int(LINKS));
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 1);
    cluster.shutdown().await;
}

/// A link that fails in a chain sent ahead (its followers wait on the worker's executor): the
/// error of that link reaches the client through every later link, and nothing is left behind.
#[tokio::test]
async fn a_failed_link_fails_the_rest_of_a_chain_sent_ahead() {
    let mut config = LocalClusterConfig::new(2, 1);
    config.policy.no_workers_timeout_s = Some(0.0);
    let cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut x = client.submit(seed::INC, lit(0));
    let mut bad = None;
    for i in 1..300 {
        x = if i == 150 {
            // `len` of an int fails.
            let b = client.submit_with(seed::LEN, |d| d.input(&x).into());
            bad = Some(b.key().clone());
            b
        } else {
            client.submit_with(seed::INC, |d| d.input(&x).into())
        };
    }
    let err = tokio::time::timeout(Duration::from_secs(30), x.result())
        .await
        .expect("no hang")
        .unwrap_err();
    match &err {
        ClientError::Task(f) => assert_eq!(Some(&f.key), bad.as_ref(), "{err}"),
        other => panic!("expected a task error, got {other:?}"),
    }
    drop(x);
    // The cluster goes on: a fresh chain is right.
    let mut y = client.submit(seed::INC, lit(0));
    for _ in 1..300 {
        y = client.submit_with(seed::INC, |d| d.input(&y).into());
    }
    let value = tokio::time::timeout(Duration::from_secs(30), y.result())
        .await
        .expect("no hang")
        .unwrap();
    assert_eq!(value, Value::Int(300));
    assert!(cluster.snapshot().await.unwrap().tasks_speculated_total > 100);
    drop(y);
    let handle = cluster.handle();
    let clean = eventually(Duration::from_secs(10), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.workers.iter().all(|w| w.keys == 0 && w.processing == 0))
            .unwrap_or(false)
    })
    .await;
    assert!(clean, "{:?}", cluster.snapshot().await.unwrap().workers);
    cluster.shutdown().await;
}

/// A chain dropped by its client while its links wait on a worker's executor: they are dropped
/// there, and no result is left on the workers.
#[tokio::test]
async fn a_chain_dropped_midway_leaves_nothing_on_the_workers() {
    let mut config = LocalClusterConfig::new(2, 1);
    config.policy.no_workers_timeout_s = Some(0.0);
    let cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut x = client.submit(seed::INC, lit(0));
    for _ in 1..400 {
        let s = client.submit_with(seed::SLEEP, |d| seed::Sleep {
            seconds: 0.002,
            value: d.input(&x).into(),
        });
        x = client.submit_with(seed::INC, |d| d.input(&s).into());
    }
    let handle = cluster.handle();
    let started = eventually(Duration::from_secs(30), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks_computed_total >= 50 && s.tasks_speculated_total >= 20)
            .unwrap_or(false)
    })
    .await;
    assert!(started, "the chain made progress, its links sent ahead");
    drop(x);
    let clean = eventually(Duration::from_secs(20), async || {
        handle
            .snapshot()
            .await
            .map(|s| {
                s.workers.iter().all(|w| w.keys == 0 && w.processing == 0)
                    && s.tasks.processing + s.tasks.memory + s.tasks.waiting == 0
            })
            .unwrap_or(false)
    })
    .await;
    assert!(clean, "{:?}", cluster.snapshot().await.unwrap());
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_task_error_reaches_the_client_with_its_key() {
    let mut config = LocalClusterConfig::new(2, 1);
    config.policy.no_workers_timeout_s = Some(0.0);
    let cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let bad = client.submit(seed::FAIL, "disk on fire".to_owned());
    let after = client.submit_with(seed::INC, |d| d.input(&bad).into());
    let err = tokio::time::timeout(Duration::from_secs(10), after.result())
        .await
        .expect("no hang")
        .unwrap_err();
    match &err {
        ClientError::Task(f) => {
            assert_eq!(&f.key, bad.key());
            assert_eq!(
                f.error,
                TaskError::Kernel(KernelError::failed("disk on fire"))
            );
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    assert!(err.to_string().contains(bad.key().as_str()), "{err}");
    // A function no worker has fails (here at once: no-workers-timeout 0) naming the function
    // and what the workers have, instead of hanging.
    const NOPE: Func<i64, Value> = Func::new("nobody.nope");
    let unknown = client.submit(NOPE, 1);
    let err = tokio::time::timeout(Duration::from_secs(10), unknown.result())
        .await
        .expect("no hang")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no worker can run nobody.nope: the workers have array "),
        "{err}"
    );
    assert!(err.contains(", frame ") && err.contains(", seed "), "{err}");
    // Wrong argument types name the function.
    let wrong = client.submit(seed::INC, lit("x"));
    assert!(
        wrong
            .result()
            .await
            .unwrap_err()
            .to_string()
            .contains("inc(): expected float")
    );
    cluster.shutdown().await;
}

/// The welcome tells a client the families of the workers connected, each name and version once
/// however many workers have it (a Python client checks the workers' Python against its own).
#[tokio::test]
async fn a_client_learns_the_workers_families_when_it_connects() {
    let cluster = LocalCluster::start(LocalClusterConfig::new(2, 1))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let names: Vec<&str> = client
        .worker_families()
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["array", "frame", "seed"]);
    assert!(
        client
            .worker_families()
            .iter()
            .all(|f| !f.version.is_empty() && !f.functions.is_empty())
    );
    cluster.shutdown().await;
}

/// `done` answers at once; `wait` returns once the outcome is known (a value or an error) without
/// fetching it, as the Python client's `Future.done`, `wait` and `as_completed` need.
#[tokio::test]
async fn done_and_wait_follow_a_task_without_fetching_it() {
    let cluster = LocalCluster::start(LocalClusterConfig::new(1, 1))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let slow = client.submit(
        seed::SLEEP,
        seed::Sleep {
            seconds: 0.5,
            value: lit(7),
        },
    );
    assert!(!slow.done());
    tokio::time::timeout(Duration::from_secs(10), slow.wait())
        .await
        .expect("wait returns once the task is done");
    assert!(slow.done());
    assert_eq!(slow.result().await.unwrap(), Value::Int(7));
    let bad = client.submit(seed::FAIL, "no".to_owned());
    tokio::time::timeout(Duration::from_secs(10), bad.wait())
        .await
        .expect("wait returns once the task failed");
    assert!(bad.done());
    assert!(bad.result().await.is_err());
    // A pending future is done once the scheduler is gone: its result is the error saying so.
    let pending = client.submit(
        seed::SLEEP,
        seed::Sleep {
            seconds: 30.0,
            value: lit(1),
        },
    );
    assert!(!pending.done());
    cluster.shutdown().await;
    tokio::time::timeout(Duration::from_secs(10), pending.wait())
        .await
        .expect("wait returns once the connection is lost");
    assert!(pending.done());
    assert!(matches!(pending.result().await, Err(ClientError::Lost(_))));
}

#[tokio::test]
async fn retire_workers_moves_data_so_nothing_is_recomputed() {
    let cluster = process_cluster(3).await;
    let client = cluster.client().await.unwrap();
    let futures = client.map(seed::INC, (0..300i64).map(lit));
    client.gather(&futures).await.unwrap();
    let before = cluster.snapshot().await.unwrap();
    assert_eq!(before.tasks_computed_total, 300);
    let victim = before
        .workers
        .iter()
        .max_by_key(|w| w.keys)
        .unwrap()
        .clone();
    assert!(victim.keys > 0);
    let dashboard = cluster.dashboard_address().unwrap();
    let body = format!(r#"{{"workers": ["{}"]}}"#, victim.address);
    let (status, answer) = crate::http(dashboard, "POST", "/api/v1/retire_workers", &body).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer[&victim.address]["name"], victim.name);
    let after = cluster.snapshot().await.unwrap();
    assert_eq!(after.workers.len(), 2);
    assert_eq!(after.tasks.memory, 300, "every result still held");
    // Using every result needs the moved data: only the sum itself runs.
    let total = client.submit_with(seed::SUM, |d| {
        futures.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(total.result().await.unwrap(), Value::Int((1..=300).sum()));
    assert_eq!(
        cluster.snapshot().await.unwrap().tasks_computed_total,
        301,
        "nothing was recomputed"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn results_over_the_memory_limit_spill_and_read_back_intact() {
    let mut config = LocalClusterConfig::new(1, 1);
    config.memory_limit = 1 << 20;
    let spill_dir = tempfile::tempdir().unwrap();
    config.local_directory = spill_dir.path().to_owned();
    let cluster = LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    // 40 results of 100 kB: 4 MB against a 1 MiB limit.
    let blobs = client.map(
        seed::BYTES,
        (0..40u8).map(|i| seed::MakeBytes {
            n: 100_000,
            fill: i,
        }),
    );
    client.gather(&blobs).await.unwrap();
    let handle = cluster.handle();
    let spilled = eventually(Duration::from_secs(5), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.workers[0].spilled_bytes >= 2_000_000)
            .unwrap_or(false)
    })
    .await;
    assert!(spilled, "most results went to disk");
    // Read every result back through the worker (from disk for the spilled ones).
    let copies: Vec<_> = blobs
        .iter()
        .map(|b| client.submit_with(seed::IDENTITY, |d| d.input(b).into()))
        .collect();
    for (i, v) in client
        .gather(&copies)
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        match v {
            Value::Bytes(b) => {
                assert_eq!(b.len(), 100_000);
                assert!(b.iter().all(|&x| x == i as u8), "result {i} intact");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn large_results_are_fetched_from_the_worker() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    // Over the inline limit, so the client fetches it from the worker's data server.
    let big = client.submit(
        seed::BYTES,
        seed::MakeBytes {
            n: 3_000_000,
            fill: 7,
        },
    );
    match big.result().await.unwrap() {
        Value::Bytes(b) => assert!(b.len() == 3_000_000 && b.iter().all(|&x| x == 7)),
        other => panic!("unexpected {other:?}"),
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_scheduler_that_goes_away_fails_pending_results_instead_of_hanging() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let slow = client.submit(
        seed::SLEEP,
        seed::Sleep {
            seconds: 30.0,
            value: lit(()),
        },
    );
    cluster.shutdown().await;
    let err = tokio::time::timeout(Duration::from_secs(10), slow.result())
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, ClientError::Lost(_)), "{err:?}");
}

/// Waits (up to `within`) for the scheduler to hold no result and every worker no key.
async fn assert_all_freed(cluster: &LocalCluster, within: Duration) {
    let handle = cluster.handle();
    let freed = eventually(within, async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks.memory == 0 && s.workers.iter().all(|w| w.keys == 0))
            .unwrap_or(false)
    })
    .await;
    assert!(freed, "{:?}", cluster.snapshot().await.unwrap());
}

#[tokio::test]
async fn released_futures_are_freed_on_the_workers() {
    let cluster = LocalCluster::new(2, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let futures = client.map(seed::INC, (0..100i64).map(lit));
    client.gather(&futures).await.unwrap();
    assert_eq!(cluster.snapshot().await.unwrap().tasks.memory, 100);
    drop(futures);
    assert_all_freed(&cluster, Duration::from_secs(5)).await;
    assert_eq!(cluster.snapshot().await.unwrap().tasks_forgotten_total, 100);
    cluster.shutdown().await;
}

#[tokio::test]
async fn graphs_sent_in_parts_give_their_values_and_leave_nothing_behind() {
    // Larger than a part (2,048 tasks): the client sends them in ten, the workers start on
    // the first while the rest arrives, and only the wanted keys are held.
    let n = 20_000i64;
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let incs: Vec<Delayed<Value>> = (0..n).map(|i| delayed(seed::INC, lit(i))).collect();
    let total = delayed_with(seed::SUM, |d| {
        incs.iter().map(|p| d.input(p).into()).collect()
    });
    let sum = client.compute(&total);
    assert_eq!(sum.result().await.unwrap(), Value::Int((1..=n).sum()));
    let mapped = client.map(seed::INC, (0..n).map(lit));
    let values = client.gather(&mapped).await.unwrap();
    assert!(values.iter().zip(1..).all(|(v, i)| *v == Value::Int(i)));
    // The sum and the map's results: the sum's inputs were let go.
    let handle = cluster.handle();
    let held = eventually(Duration::from_secs(10), async || {
        handle
            .snapshot()
            .await
            .map(|s| s.tasks.memory == n as usize + 1)
            .unwrap_or(false)
    })
    .await;
    assert!(held, "{:?}", cluster.snapshot().await.unwrap().tasks);
    drop((sum, mapped));
    assert_all_freed(&cluster, Duration::from_secs(10)).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_graph_computed_again_after_its_release_gives_its_values() {
    // The same keys wanted again right after their futures are dropped: the release and the
    // new graph reach a worker in one batch, which must compute the results again rather than
    // report the copies it is about to free as held.
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let graph: Vec<Delayed<Value>> = (0..8i64).map(|i| delayed(seed::INC, lit(i))).collect();
    for round in 0..20 {
        let futures = client.compute_many(&graph);
        let values = client.gather(&futures).await.unwrap_or_else(|e| {
            panic!("round {round}: {e}");
        });
        assert_eq!(values, (1..9i64).map(Value::Int).collect::<Vec<_>>());
    }
    cluster.shutdown().await;
}
