//! The operator's scheduler-API client against rask's scheduler and a real Dask scheduler.
//!
//! The Dask side needs `dask` from the test venv: `scripts/test` sets `RASK_DASK_BIN` (else the
//! repository's `.venv/bin/dask`); without either the test fails.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rask::scheduler::server::{Scheduler, SchedulerConfig};
use rask::worker::{Worker, WorkerConfig};
use rask_operator::scheduler_api::SchedulerApi;

use crate::env::wait_until;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Every call the operator makes, against one scheduler with one worker named `w0`.
async fn exercise(api: &SchedulerApi, base: &str) {
    wait_until("w0 registered", Duration::from_secs(60), async || {
        api.get_workers(base)
            .await
            .map(|w| w.len() == 1)
            .unwrap_or(false)
    })
    .await;
    let workers = api.get_workers(base).await.unwrap();
    assert_eq!(workers[0].name, "w0");
    assert!(
        workers[0].address.starts_with("tcp://127.0.0.1:"),
        "{workers:?}"
    );
    assert!(api.adaptive_target(base).await.unwrap() >= 0);
    let idle = api.idle_since(base).await.unwrap();
    assert!(idle.is_some_and(|t| t > 1.0e9), "{idle:?}");
    let retired = api
        .retire_workers(base, &[workers[0].address.clone()])
        .await
        .unwrap();
    assert_eq!(retired, vec!["w0".to_string()]);
    wait_until("w0 gone", Duration::from_secs(30), async || {
        api.get_workers(base)
            .await
            .map(|w| w.is_empty())
            .unwrap_or(false)
    })
    .await;
    // Nothing matched: nothing retired.
    assert!(
        api.retire_workers(base, &["tcp://127.0.0.1:1".into()])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_client_works_against_rasks_scheduler() {
    let config = SchedulerConfig {
        dashboard: Some("127.0.0.1:0".parse().unwrap()),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::start(config).await.unwrap();
    let mut wc = WorkerConfig::new(scheduler.address(), "w0");
    wc.listen_host = Some("127.0.0.1".into());
    let _worker = Worker::start(wc, rask::registry()).await.unwrap();
    let base = format!("http://{}", scheduler.dashboard_address().unwrap());
    exercise(&SchedulerApi::default(), &base).await;
    scheduler.shutdown().await;
}

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test]
async fn the_client_works_against_a_real_dask_scheduler() {
    let dask = std::env::var("RASK_DASK_BIN").unwrap_or_else(|_| {
        let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/dask");
        assert!(
            venv.exists(),
            "RASK_DASK_BIN is not set and there is no .venv/bin/dask: this test needs Dask's real \
             scheduler (scripts/test installs it from tests/requirements.txt and sets the variable)"
        );
        venv.display().to_string()
    });
    let (port, dash) = (free_port(), free_port());
    let routes = r#"["distributed.http.scheduler.prometheus", "distributed.http.health", "distributed.http.scheduler.api"]"#;
    let scheduler = Command::new(&dask)
        .args([
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--dashboard-address",
            &format!("127.0.0.1:{dash}"),
        ])
        .env("DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES", routes)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {dask}: {e}"));
    let worker = Command::new(&dask)
        .args([
            "worker",
            &format!("tcp://127.0.0.1:{port}"),
            "--name",
            "w0",
            "--nthreads",
            "1",
            "--no-nanny",
            "--no-dashboard",
        ])
        .args(["--host", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _procs = Killed(vec![worker, scheduler]);
    exercise(
        &SchedulerApi::default(),
        &format!("http://127.0.0.1:{dash}"),
    )
    .await;
}

#[tokio::test]
async fn an_unreachable_scheduler_is_a_clear_error() {
    let api = SchedulerApi::new(Duration::from_secs(2));
    let err = api
        .get_workers(&format!("http://127.0.0.1:{}", free_port()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unreachable"), "{err}");
}
