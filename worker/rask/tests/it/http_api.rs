//! Dask's HTTP API served by a live scheduler, with work queued.

use std::time::Duration;

use rask::seed::{self, lit};
use serde_json::Value as Json;

use crate::{eventually, http, process_cluster};

#[tokio::test]
async fn endpoints_answer_with_dask_shapes_on_a_live_cluster() {
    let cluster = process_cluster(2).await;
    let dash = cluster.dashboard_address().unwrap();

    let (status, body) = http(dash, "GET", "/health", "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));

    let (_, body) = http(dash, "GET", "/api/v1/get_workers", "").await;
    let workers: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(workers["num_workers"], 2);
    let mut names: Vec<&str> = workers["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["local-0", "local-1"]);
    assert!(
        workers["workers"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:")
    );

    let (_, body) = http(dash, "GET", "/api/v1/check_idle", "").await;
    let idle: Json = serde_json::from_str(&body).unwrap();
    assert!(
        idle["idle_since"].is_f64(),
        "an idle scheduler says since when: {body}"
    );

    // Queue 200 one-second tasks on 2 threads: the target asks for more workers.
    let client = cluster.client().await.unwrap();
    let _queued = client.map(
        seed::SLEEP,
        (0..200).map(|_| seed::Sleep {
            seconds: 1.0,
            value: lit(()),
        }),
    );
    let handle = cluster.handle();
    assert!(
        eventually(Duration::from_secs(5), async || handle
            .snapshot()
            .await
            .map(|s| s.tasks.queued > 0)
            .unwrap_or(false))
        .await
    );
    let (_, body) = http(dash, "GET", "/api/v1/adaptive_target", "").await;
    let target: Json = serde_json::from_str(&body).unwrap();
    let n = target["workers"].as_u64().unwrap();
    assert!(
        n >= 10,
        "200 queued 0.5 s (unknown) tasks want many workers, got {n}"
    );

    let (_, body) = http(dash, "GET", "/api/v1/check_idle", "").await;
    assert_eq!(
        serde_json::from_str::<Json>(&body).unwrap(),
        serde_json::json!({"idle_since": null})
    );

    let (status, metrics) = http(dash, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let queued_line = metrics
        .lines()
        .find(|l| l.starts_with("dask_scheduler_tasks{state=\"queued\"}"))
        .expect("queued tasks metric");
    let queued: f64 = queued_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(queued > 0.0, "{queued_line}");
    assert!(
        metrics.contains(&format!("dask_scheduler_desired_workers {n}"))
            || metrics.contains("dask_scheduler_desired_workers ")
    );
    assert!(metrics.contains("dask_scheduler_clients 1"), "{metrics}");
    assert!(
        metrics.contains("dask_scheduler_workers{state=\"saturated\"} 2"),
        "{metrics}"
    );

    // Retire by count: the answer is keyed by address.
    drop(_queued);
    let (status, body) = http(dash, "POST", "/api/v1/retire_workers", r#"{"n": 1}"#).await;
    assert_eq!(status, 200, "{body}");
    let retired: Json = serde_json::from_str(&body).unwrap();
    let (addr, info) = retired
        .as_object()
        .unwrap()
        .iter()
        .next()
        .expect("one retired");
    assert!(addr.starts_with("tcp://"));
    assert_eq!(info["type"], "Worker");
    let (_, body) = http(dash, "GET", "/api/v1/get_workers", "").await;
    assert_eq!(
        serde_json::from_str::<Json>(&body).unwrap()["num_workers"],
        1
    );

    let (status, body) = http(dash, "POST", "/api/v1/retire_workers", "{not json").await;
    assert_eq!(status, 400, "{body}");
    cluster.shutdown().await;
}

/// The number of a one-sample family in a metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
}

#[tokio::test]
async fn a_worker_serves_dasks_worker_metrics_and_names_a_taken_dashboard_port() {
    use rask::scheduler::server::{Scheduler, SchedulerConfig};
    use rask::worker::{Worker, WorkerConfig, WorkerError};

    let scheduler = Scheduler::start(SchedulerConfig::default()).await.unwrap();
    let mut config = WorkerConfig::new(scheduler.address(), "w-dash");
    config.nthreads = 3;
    config.listen_host = Some("127.0.0.1".into());
    config.heartbeat = Duration::from_millis(100);
    config.dashboard = Some("127.0.0.1:0".parse().unwrap());
    let worker = Worker::start(config.clone(), rask::registry())
        .await
        .unwrap();
    let dash = worker
        .dashboard_address()
        .expect("a dashboard was asked for");

    let (status, body) = http(dash, "GET", "/health", "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, text) = http(dash, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&text, "dask_worker_threads"), 3.0);
    // The scheduler acknowledges heartbeats: the latency leaves Dask's initial 1 ms for a
    // measured round trip.
    assert!(
        eventually(Duration::from_secs(5), async || {
            let (_, text) = http(dash, "GET", "/metrics", "").await;
            sample(&text, "dask_worker_latency_seconds") != 0.001
        })
        .await,
        "no heartbeat round trip measured"
    );

    // A second worker asking for the same port is refused, naming it.
    let mut taken = config;
    taken.name = "w-taken".into();
    taken.dashboard = Some(dash);
    match Worker::start(taken, rask::registry()).await {
        Err(e @ WorkerError::Dashboard { .. }) => {
            assert!(e.to_string().contains(&dash.to_string()), "{e}")
        }
        Err(other) => panic!("expected a dashboard error, got {other}"),
        Ok(_) => panic!("a second worker served the same dashboard port"),
    }
    worker.close().await;
    scheduler.shutdown().await;
}

/// The samples of `name` in a metrics text, summed over their labels (`label` narrows them).
fn sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = rest.rsplit_once(' ')?;
            (labels.is_empty() || labels.starts_with('{'))
                .then_some(())
                .filter(|()| labels.contains(label))?;
            value.parse::<f64>().ok()
        })
        .sum()
}

#[tokio::test]
async fn an_input_fetched_from_a_peer_counts_in_both_workers_and_the_scheduler() {
    use rask::client::Client;
    use rask::scheduler::server::{Scheduler, SchedulerConfig};
    use rask::worker::{Worker, WorkerConfig};

    let scheduler = Scheduler::start(SchedulerConfig {
        dashboard: Some("127.0.0.1:0".parse().unwrap()),
        ..SchedulerConfig::default()
    })
    .await
    .unwrap();
    let mut workers = Vec::new();
    for name in ["wa", "wb"] {
        let mut config = WorkerConfig::new(scheduler.address(), name);
        config.listen_host = Some("127.0.0.1".into());
        config.dashboard = Some("127.0.0.1:0".parse().unwrap());
        workers.push(Worker::start(config, rask::registry()).await.unwrap());
    }
    let client = Client::connect(scheduler.address()).await.unwrap();
    // Two slow inputs on two one-thread workers (each is busy while the other is placed), then
    // a task that needs both: it runs where one is and fetches the other.
    let slow = |v: i64| seed::Sleep {
        seconds: 0.3,
        value: lit(v),
    };
    let a = client.submit(seed::SLEEP, slow(1));
    let b = client.submit(seed::SLEEP, slow(2));
    let both = client.submit_with(seed::ADD, |d| (d.input(&a).into(), d.input(&b).into()));
    tokio::time::timeout(Duration::from_secs(30), both.result())
        .await
        .expect("no hang")
        .unwrap();

    let mut texts = Vec::new();
    for w in &workers {
        let (status, text) = http(w.dashboard_address().unwrap(), "GET", "/metrics", "").await;
        assert_eq!(status, 200);
        texts.push(text);
    }
    let total = |name: &str| texts.iter().map(|t| sum(t, name, "")).sum::<f64>();
    assert_eq!(total("dask_worker_transfer_incoming_count_total"), 1.0);
    assert_eq!(total("dask_worker_transfer_outgoing_count_total"), 1.0);
    assert!(total("dask_worker_transfer_outgoing_bytes_total") > 0.0);
    assert_eq!(
        total("dask_worker_transfer_incoming_bytes"),
        0.0,
        "nothing in flight now"
    );
    // The worker that served the input read it from its store; the other stored it.
    assert!(total("dask_worker_spill_count_total") >= 1.0);

    let (_, text) = http(
        scheduler.dashboard_address().unwrap(),
        "GET",
        "/metrics",
        "",
    )
    .await;
    let transfer = sum(
        &text,
        "dask_scheduler_tasks_transfer_seconds_total",
        r#"task_prefix_name="add""#,
    );
    assert!(transfer > 0.0, "no transfer time for add in\n{text}");
    assert_eq!(
        sum(
            &text,
            "dask_scheduler_tasks_transfer_seconds_total",
            r#"task_prefix_name="sleep""#
        ),
        0.0,
        "the inputs needed nothing"
    );
    drop(client);
    for w in workers {
        w.close().await;
    }
    scheduler.shutdown().await;
}
