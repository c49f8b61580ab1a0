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

/// A rask scheduler with TLS (certificates the operator made for a cluster) and one worker `w0`:
/// the operator's client reaches its HTTPS API with the operator's certificate; without it, or
/// with another cluster's, nothing is answered, and a scheduler of another CA is not trusted.
#[tokio::test]
async fn over_https_the_operator_needs_its_certificate_of_the_clusters_ca() {
    use rask::core::tls::{TlsConfig, TlsFiles};
    use rask_operator::tls::{ClusterCerts, Role, local_names};

    let now = rask_operator::clock::now() as i64;
    let certs = ClusterCerts::generate("t", &local_names(), now).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in certs.files() {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let load = |role: Role| {
        TlsConfig::load(&TlsFiles {
            ca_file: dir.path().join("ca.pem"),
            cert: dir.path().join(role.cert_file()),
            key: dir.path().join(role.key_file()),
        })
        .unwrap()
    };
    let config = SchedulerConfig {
        dashboard: Some("127.0.0.1:0".parse().unwrap()),
        tls: Some(load(Role::Scheduler)),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::start(config).await.unwrap();
    let mut wc = WorkerConfig::new(scheduler.address(), "w0");
    wc.listen_host = Some("127.0.0.1".into());
    wc.tls = Some(load(Role::Worker));
    let _worker = Worker::start(wc, rask::registry()).await.unwrap();
    let base = format!("https://{}", scheduler.dashboard_address().unwrap());
    let t = Duration::from_secs(30);
    let api = SchedulerApi::with_tls(
        &certs.ca_pem,
        &certs.operator.cert_pem,
        &certs.operator.key_pem,
        t,
    )
    .unwrap();
    wait_until("w0 registered", Duration::from_secs(60), async || {
        api.get_workers(&base)
            .await
            .map(|w| w.len() == 1)
            .unwrap_or(false)
    })
    .await;

    // With a certificate of another cluster's CA: retirement is refused, and the worker stays.
    let other = ClusterCerts::generate("u", &local_names(), now).unwrap();
    let anonymous = SchedulerApi::with_tls(
        &certs.ca_pem,
        &other.operator.cert_pem,
        &other.operator.key_pem,
        t,
    )
    .unwrap();
    let refused = anonymous
        .retire_workers(&base, &["tls://127.0.0.1:1".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains(&base), "{refused}");
    let workers = api.get_workers(&base).await.unwrap();
    assert!(workers[0].address.starts_with("tls://"), "{workers:?}");
    // The plain client trusts no CA: the scheduler's certificate is refused.
    let plain = SchedulerApi::default()
        .get_workers(&base)
        .await
        .unwrap_err()
        .to_string();
    assert!(plain.contains("unreachable"), "{plain}");
    // A client trusting another cluster's CA does not take this scheduler for its own.
    let foreign = SchedulerApi::with_tls(
        &other.ca_pem,
        &other.operator.cert_pem,
        &other.operator.key_pem,
        t,
    )
    .unwrap()
    .get_workers(&base)
    .await
    .unwrap_err()
    .to_string();
    assert!(foreign.contains("unreachable"), "{foreign}");
    // http:// to the HTTPS port gets no answer it can use.
    let http = base.replacen("https://", "http://", 1);
    assert!(api.get_workers(&http).await.is_err());

    // With it: every call the operator makes.
    assert!(api.adaptive_target(&base).await.unwrap() >= 0);
    assert!(api.idle_since(&base).await.unwrap().is_some());
    let (retired, kept) = api.retire_by_name(&base, &["w0".into()]).await.unwrap();
    assert_eq!(
        (retired, kept),
        (vec!["w0".to_string()], Vec::<String>::new())
    );
    wait_until("w0 gone", Duration::from_secs(30), async || {
        api.get_workers(&base)
            .await
            .map(|w| w.is_empty())
            .unwrap_or(false)
    })
    .await;
    scheduler.shutdown().await;
}
