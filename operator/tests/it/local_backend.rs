//! The local backend with real `rask` processes: the autoscaler driving it under a burst, and
//! `up` running DaskJobs from manifest files.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rask::Value;
use rask::client::Client;
use rask::core::Resources;
use rask::seed::{self, lit};
use rask_operator::autoscaler::driver::{Autoscaler, Outcome, Step};
use rask_operator::autoscaler::policy::Settings;
use rask_operator::backend::Backend;
use rask_operator::backend::local::{LocalBackend, LocalSpec};
use rask_operator::local::{ProgressMode, UpError, UpOptions, load, up};
use rask_operator::spec::{ByteSize, MemoryLimit, WorkerTemplate};

use crate::env::wait_until;

/// The workspace's `rask` binary (`scripts/test` builds every binary before the tests).
pub fn rask_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RASK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("rask");
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --bin rask` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A `rask` whose workers fail at start (as on a node without a library they need) and whose
/// scheduler runs: a script in `dir` around the real binary.
pub fn failing_worker_rask(dir: &std::path::Path) -> PathBuf {
    let wrapper = dir.join("rask");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = worker ]; then echo 'libcuda.so.1: cannot open shared object file' >&2; exit 3; fi\nexec {} \"$@\"\n",
            rask_bin().display()
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&wrapper, perms).unwrap();
    wrapper
}

fn spec(dir: &tempfile::TempDir) -> LocalSpec {
    LocalSpec {
        cluster: "t".into(),
        rask: rask_bin(),
        scheduler_program: None,
        programs: Default::default(),
        dir: dir.path().to_owned(),
        scheduler_env: vec![("RUST_LOG".into(), "warn".into())],
        groups: [(
            "t-default".to_string(),
            WorkerTemplate {
                nthreads: Some(1),
                memory_limit: MemoryLimit::Bytes(ByteSize(1 << 30)),
                env: vec![("RUST_LOG".into(), "warn".into())],
                resources: None,
            },
        )]
        .into(),
        start_timeout: Duration::from_secs(20),
        tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_scales_from_one_to_the_maximum_and_back_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(LocalBackend::start(spec(&dir)).await.unwrap());
    backend.add_workers("t-default", 1).await.unwrap();
    let mut settings = Settings::new(1, 4);
    settings.down_window = Duration::from_secs(1);
    let mut scaler = Autoscaler::new("t-default", settings);
    scaler.interval = Duration::from_millis(200);
    let steps = Arc::new(Mutex::new(Vec::<Step>::new()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let loop_ = {
        let (backend, steps) = (backend.clone(), steps.clone());
        tokio::spawn(async move {
            scaler
                .run(backend.as_ref(), stop_rx, |s| {
                    steps.lock().unwrap().push(s.clone())
                })
                .await
        })
    };

    // 2,000 tasks of 10 ms whose results say which execution made them.
    let client = Client::connect(backend.scheduler_address()).await.unwrap();
    let futures = client.map(
        seed::STAMP,
        (0..2000i64).map(|i| seed::Stamp {
            x: lit(i),
            seconds: 0.01,
        }),
    );
    let first: Vec<Value> = client.gather(&futures).await.unwrap();
    for (i, v) in first.iter().enumerate() {
        assert_eq!(v.as_list().unwrap()[0], Value::Int(i as i64));
    }
    let peak = steps
        .lock()
        .unwrap()
        .iter()
        .map(|s| match &s.outcome {
            Ok(Outcome::Added(n)) => s.current + n.len(),
            _ => s.current,
        })
        .max()
        .unwrap_or(0);
    assert_eq!(peak, 4, "the burst should have scaled to the maximum");

    // The queue is empty: back to the minimum, the results moving off each retired worker. (A
    // step is recorded once its retired workers have exited, after they leave the backend's list.)
    let retired = || -> usize {
        steps
            .lock()
            .unwrap()
            .iter()
            .map(|s| match &s.outcome {
                Ok(Outcome::Retired(r)) => {
                    assert!(r.kept.is_empty(), "the scheduler kept {:?}", r.kept);
                    r.removed.len()
                }
                _ => 0,
            })
            .sum()
    };
    wait_until(
        "three workers retired",
        Duration::from_secs(60),
        async || retired() >= 3,
    )
    .await;
    assert_eq!(retired(), 3);
    assert_eq!(backend.list_workers("t-default").await.unwrap().len(), 1);
    // Every result is still the one first computed: none was lost and recomputed.
    let again = client.gather(&futures).await.unwrap();
    assert_eq!(again, first);

    stop_tx.send(true).unwrap();
    loop_.await.unwrap();
    backend.delete_cluster().await.unwrap();
}

fn job_file(dir: &tempfile::TempDir, runner_args: &str) -> PathBuf {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/burst-job.yaml"),
    )
    .unwrap();
    let start = text.find("args: [run, burst").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let text = format!("{}args: [{runner_args}]{}", &text[..start], &text[end..]);
    let path = dir.path().join("job.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn opts(dir: &tempfile::TempDir) -> UpOptions {
    UpOptions {
        rask: Some(rask_bin()),
        dir: Some(dir.path().join("run")),
        poll: Duration::from_millis(200),
        progress: ProgressMode::Off,
        ..UpOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_a_dask_job_to_success_and_deletes_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let plan = load(&job_file(&dir, "run, delayed")).unwrap();
    let report = up(plan, opts(&dir), std::future::pending()).await.unwrap();
    assert!(report.succeeded, "{report:?}");
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(report.cluster, "burst");
    // Over TLS, by default.
    let log = std::fs::read_to_string(dir.path().join("run/scheduler.log")).unwrap();
    assert!(log.contains("scheduler at tls://127.0.0.1:"), "{log}");
    // The cluster's certificates are in its directory, keys for their owner only.
    let tls = report.certificates.clone().unwrap();
    assert_eq!(tls, dir.path().join("run/tls"));
    for f in [
        "ca.pem",
        "scheduler.pem",
        "worker-key.pem",
        "client.pem",
        "client-key.pem",
    ] {
        assert!(tls.join(f).is_file(), "{f}");
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(tls.join("client-key.pem"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

/// `rask-operator up` with stderr to a pipe: a plain line per step, the runner's own progress
/// lines among them; `--no-progress` leaves only the runner's output. TLS by default; `--tls`
/// (the default, still accepted) and `--no-tls` (plain TCP) change the address it says.
#[test]
fn up_off_a_terminal_says_each_step_in_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = job_file(&dir, "run, delayed");
    let up = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rask-operator"))
            .arg("up")
            .arg(&path)
            .arg("--rask-bin")
            .arg(rask_bin())
            .arg("--dir")
            .arg(dir.path().join("run"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = up(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" = 131"), "the runner's result: {stdout}");
    // In order: the scheduler, each count of workers, the job, the cluster's end.
    let steps = [
        "] cluster burst: starting the scheduler",
        "] cluster burst: scheduler started at tls://",
        "] workers 0/1 registered",
        "] workers 1/1 registered",
        "] job burst: running rask run delayed (attempt 1 of 1)",
        "] job burst: Successful",
        "] cluster burst deleted",
    ];
    let mut at = 0;
    for step in steps {
        let found = stderr[at..].find(step);
        assert!(found.is_some(), "no {step:?} after byte {at} of:\n{stderr}");
        at += found.unwrap_or(0) + step.len();
    }
    // The runner, not on a terminal either, says its own progress in lines.
    assert!(
        stderr.contains("sum: 1/1 tasks in memory, 0 erred"),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal, no escape sequences: {stderr}"
    );

    let quiet = up(&["--no-progress", "--tls"]);
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{stderr}");
    assert!(!stderr.contains("registered"), "{stderr}");
    assert!(String::from_utf8_lossy(&quiet.stdout).contains(" = 131"));

    let plain = up(&["--no-tls"]);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(plain.status.success(), "{stderr}");
    assert!(
        stderr.contains("] cluster burst: scheduler started at tcp://"),
        "{stderr}"
    );
    assert!(stderr.contains("; not in use (up --no-tls)"), "{stderr}");
    assert!(String::from_utf8_lossy(&plain.stdout).contains(" = 131"));

    let both = up(&["--tls", "--no-tls"]);
    assert!(!both.status.success());
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(
        stderr.contains("cannot be used with") && stderr.contains("--no-tls"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_runner_reports_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // `rask run` of a job that does not exist: clap's usage error, exit code 2; retried once.
    let path = job_file(&dir, "run, no-such-job");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "spec:
  job:",
        "spec:
  backoffLimit: 1
  job:",
    );
    std::fs::write(&path, text).unwrap();
    let plan = load(&path).unwrap();
    let report = up(plan, opts(&dir), std::future::pending()).await.unwrap();
    assert!(!report.succeeded);
    assert_eq!(report.exit_code, Some(2));
    assert_eq!(report.runner_runs, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_past_its_deadline_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    // A futures pipeline of 100 s stopped by a 2 s activeDeadlineSeconds.
    let path = job_file(&dir, "run, futures, --pairs, \"50\", --step, \"2\"");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "spec:
  job:",
        "spec:
  activeDeadlineSeconds: 2
  job:",
    );
    std::fs::write(&path, text).unwrap();
    let t = std::time::Instant::now();
    let report = up(load(&path).unwrap(), opts(&dir), std::future::pending())
        .await
        .unwrap();
    assert!(!report.succeeded);
    assert_eq!(report.exit_code, None);
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_start_is_named_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = job_file(&dir, "run, delayed");
    let wrapper = failing_worker_rask(dir.path());
    let mut o = opts(&dir);
    o.rask = Some(wrapper);
    o.start_timeout = Duration::from_secs(3);
    let err = up(load(&path).unwrap(), o, std::future::pending())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, UpError::NotJoined { .. }), "{msg}");
    assert!(msg.contains("burst-burst-default-worker-1"), "{msg}");
    assert!(msg.contains("libcuda.so.1"), "{msg}");
}

#[test]
fn a_memory_limit_that_is_not_a_size_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = job_file(&dir, "run, delayed");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("--memory-limit, 1GiB", "--memory-limit, lots");
    std::fs::write(&path, text).unwrap();
    let err = load(&path).unwrap_err().to_string();
    assert!(
        err.contains("--memory-limit: \"lots\" is not a size"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_rask_binary_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(&dir);
    o.rask = Some(dir.path().join("nothing-here"));
    let err = up(
        load(&job_file(&dir, "run, delayed")).unwrap(),
        o,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("cannot find the rask binary"),
        "{err}"
    );
}

/// A program the workspace builds beside `rask` (scripts/test builds every binary).
fn workspace_bin(name: &str) -> PathBuf {
    let bin = rask_bin().with_file_name(name);
    assert!(
        bin.is_file(),
        "{} is missing: build it first with `cargo build --bins` (scripts/test does)",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_worker_example_runs_its_job_on_programs_named_by_the_manifest() {
    // The scheduler and workers run `custom-worker` (rask with the `words` family), the runner
    // `wordcount`, which checks the cluster's counts against its own.
    workspace_bin("custom-worker");
    workspace_bin("wordcount");
    let dir = tempfile::tempdir().unwrap();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/custom-worker/job.yaml");
    let plan = load(&path).unwrap();
    assert_eq!(plan.scheduler_program.as_deref(), Some("custom-worker"));
    let report = up(plan, opts(&dir), std::future::pending()).await.unwrap();
    assert!(report.succeeded, "{report:?}");
    assert_eq!(report.exit_code, Some(0));
}

#[tokio::test]
async fn a_program_that_does_not_exist_is_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let path = job_file(&dir, "run, delayed");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "args: [worker",
        "command: [no-such-worker]\n            args: [worker",
    );
    std::fs::write(&path, &text).unwrap();
    let err = up(load(&path).unwrap(), opts(&dir), std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot find no-such-worker, the command of worker group burst-default"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_group_offering_a_resource_gets_every_task_that_needs_it() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"
apiVersion: kubernetes.dask.org/v1
kind: DaskCluster
metadata: {name: res}
spec:
  worker:
    replicas: 2
    spec:
      containers:
      - {name: worker, image: ghcr.io/rask-dev/rask-worker:latest, args: [worker, --nthreads, "2"]}
  scheduler:
    spec:
      containers:
      - {name: scheduler, image: ghcr.io/rask-dev/rask-worker:latest, args: [scheduler]}
    service: {}
---
apiVersion: kubernetes.dask.org/v1
kind: DaskWorkerGroup
metadata: {name: res-gpu}
spec:
  cluster: res
  worker:
    replicas: 1
    spec:
      containers:
      - {name: worker, image: ghcr.io/rask-dev/rask-worker:latest, args: [worker, --nthreads, "1", --resources, "GPU=1"]}
"#;
    let path = dir.path().join("res.yaml");
    std::fs::write(&path, manifest).unwrap();
    let plan = load(&path).unwrap();
    assert_eq!(
        plan.groups["res-gpu"].template.resources.as_deref(),
        Some("GPU=1")
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let o = opts(&dir);
    let run_dir = o.dir.clone().unwrap();
    let running = tokio::spawn(up(plan, o, async {
        let _ = stop_rx.await;
    }));
    // The scheduler's address, from the file it writes once listening.
    let file = run_dir.join("scheduler.json");
    let mut address = None;
    wait_until("the scheduler is up", Duration::from_secs(30), async || {
        address = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["address"].as_str().map(str::to_owned));
        address.is_some()
    })
    .await;
    let client = Client::connect_with(
        address.as_deref().unwrap(),
        Some(client_tls(&run_dir.join("tls"), "client")),
    )
    .await
    .unwrap();
    let gpu = Resources::parse("GPU=1").unwrap();
    let var = || "DASK_WORKER_NAME".to_owned();
    let needs: Vec<_> = (0..12)
        .map(|_| {
            client.compute(&rask::client::delayed(seed::ENVIRON, var()).with_resources(gpu.clone()))
        })
        .collect();
    let any: Vec<_> = (0..12)
        .map(|_| client.submit(seed::ENVIRON, var()))
        .collect();
    for (i, v) in client.gather(&needs).await.unwrap().iter().enumerate() {
        let n = v.as_str().unwrap();
        assert!(
            n.starts_with("res-res-gpu-worker-"),
            "GPU task {i} ran on {n}"
        );
    }
    let others = client.gather(&any).await.unwrap();
    assert!(others.iter().all(|v| v.as_str().is_ok()));
    drop(client);
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// A client's TLS identity from a certificates directory (`up` writes `{dir}/tls`).
fn client_tls(tls: &std::path::Path, role: &str) -> rask::core::tls::TlsConfig {
    rask::core::tls::TlsConfig::load(&rask::core::tls::TlsFiles {
        ca_file: tls.join("ca.pem"),
        cert: tls.join(format!("{role}.pem")),
        key: tls.join(format!("{role}-key.pem")),
    })
    .unwrap()
}

/// `up --no-tls` with a DaskJob: plain TCP; the certificates are made all the same, for a
/// later `up` in the same directory. The file's annotation opts out of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_no_tls_and_the_annotation_run_a_dask_job_over_plain_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let plan = load(&job_file(&dir, "run, delayed")).unwrap();
    let o = UpOptions {
        tls: false,
        ..opts(&dir)
    };
    let report = up(plan, o, std::future::pending()).await.unwrap();
    assert!(report.succeeded, "{report:?}");
    assert_eq!(report.exit_code, Some(0));
    assert!(report.certificates.is_some());
    let log = std::fs::read_to_string(dir.path().join("run/scheduler.log")).unwrap();
    assert!(log.contains("scheduler at tcp://127.0.0.1:"), "{log}");

    let out = tempfile::tempdir().unwrap();
    let path = job_file(&out, "run, delayed");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text.replacen(
        "metadata:\n  name: burst\n",
        "metadata:\n  name: burst\n  annotations: {kubernetes.dask.org/tls: \"false\"}\n",
        1,
    );
    assert!(text.contains("kubernetes.dask.org/tls"), "{text}");
    std::fs::write(&path, text).unwrap();
    let report = up(load(&path).unwrap(), opts(&out), std::future::pending())
        .await
        .unwrap();
    assert!(report.succeeded, "{report:?}");
    assert_eq!(report.certificates, None);
    assert!(!out.path().join("run/tls").exists());
    let log = std::fs::read_to_string(out.path().join("run/scheduler.log")).unwrap();
    assert!(log.contains("scheduler at tcp://127.0.0.1:"), "{log}");
}

/// A local cluster (TLS by default): work over TLS from a client and from `rask run --scheduler
/// tls://...` with the users' certificate; the operator's own calls (retiring a worker) over
/// HTTPS with its certificate; and processes without a certificate of the cluster's CA refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_local_cluster_serves_its_certificate_holders_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        r#"
apiVersion: kubernetes.dask.org/v1
kind: DaskCluster
metadata: {name: sec}
spec:
  worker:
    replicas: 2
    spec:
      containers:
      - {name: worker, image: ghcr.io/rask-dev/rask-worker:latest, args: [worker, --nthreads, "1"]}
  scheduler:
    spec:
      containers:
      - {name: scheduler, image: ghcr.io/rask-dev/rask-worker:latest, args: [scheduler]}
    service: {}
"#,
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let o = opts(&dir);
    let run_dir = o.dir.clone().unwrap();
    let running = tokio::spawn(up(load(&path).unwrap(), o, async {
        let _ = stop_rx.await;
    }));
    let file = run_dir.join("scheduler.json");
    let mut found = None;
    wait_until("the scheduler is up", Duration::from_secs(30), async || {
        found = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        found.is_some()
    })
    .await;
    let found = found.unwrap();
    let address = found["address"].as_str().unwrap().to_owned();
    assert!(address.starts_with("tls://127.0.0.1:"), "{address}");
    let tls = run_dir.join("tls");

    // The users' certificate: a client computes, and so does `rask run`.
    let client = Client::connect_with(&address, Some(client_tls(&tls, "client")))
        .await
        .unwrap();
    let futures = client.map(seed::INC, (0..50i64).map(lit));
    let values = client.gather(&futures).await.unwrap();
    assert_eq!(values, (1..=50).map(Value::Int).collect::<Vec<_>>());
    drop(client);
    let run = async |extra: &[std::ffi::OsString]| {
        let child = tokio::process::Command::new(rask_bin())
            .args(["run", "delayed", "--no-progress", "--scheduler", &address])
            .args(extra)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map(Result::unwrap)
    };
    let arg = |s: &str| std::ffi::OsString::from(s);
    let files = |dir: &std::path::Path| {
        vec![
            arg("--tls-ca-file"),
            dir.join("ca.pem").into_os_string(),
            arg("--tls-cert"),
            dir.join("client.pem").into_os_string(),
            arg("--tls-key"),
            dir.join("client-key.pem").into_os_string(),
        ]
    };
    let out = run(&files(&tls)).await.expect("rask run over TLS ends");
    assert!(
        out.status.success(),
        "rask run over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Another cluster's certificates (a CA of its own that trusts ours): refused by the
    // scheduler at the handshake; so is a plain TCP client at the TLS port.
    let other = tempfile::tempdir().unwrap();
    let other_tls = rask_operator::local::certs::ensure(
        other.path(),
        "other",
        rask_operator::clock::now() as i64,
    )
    .unwrap();
    std::fs::copy(tls.join("ca.pem"), other_tls.join("ca.pem")).unwrap();
    // (A run that hangs instead of failing is not admitted either: it computed nothing.)
    if let Ok(out) = run(&files(&other_tls)).await {
        assert!(!out.status.success(), "a foreign certificate was admitted");
    }
    let refused = tokio::time::timeout(
        Duration::from_secs(10),
        Client::connect_with(&address, Some(client_tls(&other_tls, "client"))),
    )
    .await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client of another CA connected"
    );
    let plain = address.replacen("tls://", "tcp://", 1);
    let plain = tokio::time::timeout(Duration::from_secs(10), async {
        let c = Client::connect(&plain).await.ok()?;
        c.submit(seed::INC, lit(1i64)).result().await.ok()
    })
    .await;
    assert!(
        !matches!(plain, Ok(Some(_))),
        "plain TCP computed on a TLS scheduler"
    );
    // Its HTTP API over HTTPS: only with a certificate of the cluster's CA.
    let dashboard = found["dashboard"].as_str().unwrap().to_owned();
    assert!(dashboard.starts_with("https://"), "{dashboard}");
    let read = |d: &std::path::Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    let operator = rask_operator::scheduler_api::SchedulerApi::with_tls(
        &read(&tls, "ca.pem"),
        &read(&tls, "operator.pem"),
        &read(&tls, "operator-key.pem"),
        Duration::from_secs(30),
    )
    .unwrap();
    // (Both workers, waited for: on a loaded machine one may have been replaced meanwhile.)
    let mut workers = Vec::new();
    wait_until(
        "2 workers over HTTPS",
        Duration::from_secs(30),
        async || {
            workers = operator.get_workers(&dashboard).await.unwrap();
            workers.len() == 2
        },
    )
    .await;
    let intruder = rask_operator::scheduler_api::SchedulerApi::with_tls(
        &read(&tls, "ca.pem"),
        &read(&other_tls, "operator.pem"),
        &read(&other_tls, "operator-key.pem"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert!(
        intruder
            .retire_workers(&dashboard, &[workers[0].address.clone()])
            .await
            .is_err()
    );
    let after = operator.get_workers(&dashboard).await.unwrap();
    assert!(
        after.iter().any(|w| w.name == workers[0].name),
        "the intruder retired {}: {after:?}",
        workers[0].name
    );
    let _ = stop_tx.send(());
    running.await.unwrap().unwrap();
}

/// The local backend's own retirement (what its autoscaler does) goes over HTTPS with the
/// operator's certificate when the cluster uses TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_backend_retires_workers_of_a_tls_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let tls =
        rask_operator::local::certs::ensure(dir.path(), "t", rask_operator::clock::now() as i64)
            .unwrap();
    let backend = LocalBackend::start(LocalSpec {
        tls: Some(tls),
        ..spec(&dir)
    })
    .await
    .unwrap();
    assert!(backend.scheduler_address().starts_with("tls://"));
    assert!(backend.scheduler_url().starts_with("https://"));
    let names = backend.add_workers("t-default", 2).await.unwrap();
    wait_until("2 workers joined", Duration::from_secs(30), async || {
        backend
            .api()
            .get_workers(&backend.scheduler_url())
            .await
            .map(|w| w.len() == 2)
            .unwrap_or(false)
    })
    .await;
    let retired = backend
        .retire_workers("t-default", &names[..1])
        .await
        .unwrap();
    assert_eq!(retired.removed, names[..1].to_vec(), "{retired:?}");
    backend.delete_cluster().await.unwrap();
}

/// `up --tls` and `up --no-tls` are for local clusters: a cloud config (a top-level
/// `provider:`) with either is refused, naming the file, before anything starts.
#[test]
fn up_tls_or_no_tls_with_a_cloud_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cloud.yaml");
    std::fs::write(&path, "provider: aws\n").unwrap();
    for flag in ["--tls", "--no-tls"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rask-operator"))
            .arg("up")
            .arg(&path)
            .arg(flag)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{flag} is for local clusters (a file of Dask resources); {} is a cluster config",
                path.display()
            )),
            "{err}"
        );
    }
}
