//! What the batch-queue tests share: the real SLURM and Grid Engine that `scripts/hpc-peers`
//! starts on this machine (a test fails, saying so, when they do not answer), options pointing
//! the commands at the workspace's binaries, config files, and a guard that runs `down` when a
//! test ends, passed or not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rask_operator::providers::commands::Options;
use rask_operator::providers::commands::batch::UpReport;

use crate::local_backend::rask_bin;

/// Panics unless the batch system's commands answer: the peer must be running.
pub fn require(system: &str) {
    let (program, args): (&str, &[&str]) = match system {
        "slurm" => ("scontrol", &["ping"]),
        _ => ("qstat", &["-f"]),
    };
    let ok = Command::new(program).args(args).output().is_ok_and(|o| {
        o.status.success()
            && (system != "slurm" || String::from_utf8_lossy(&o.stdout).contains("UP"))
    });
    assert!(
        ok,
        "{system} does not answer here (`{program} {}` failed): scripts/test starts it with \
         scripts/hpc-peers; for a single test run `eval \"$(scripts/hpc-peers)\"` first",
        args.join(" ")
    );
}

/// The commands' options: state in `dir`, this workspace's `rask` and `rask-operator`, fast
/// polling.
pub fn options(dir: &Path) -> Options {
    let mut o = Options::from_env();
    o.state_dir = dir.join("state");
    o.poll = Duration::from_millis(200);
    o.rask_bin = Some(rask_bin());
    o.operator_bin = Some(PathBuf::from(env!("CARGO_BIN_EXE_rask-operator")));
    o.progress = Arc::new(|line| eprintln!("[batch] {line}"));
    o
}

/// A config file for `system` in `dir`: the scheduler on loopback, `workers` workers of one
/// thread, quick timeouts, and `extra` YAML appended at the top level (it may add keys to the
/// provider section, which comes last).
pub fn config(
    dir: &Path,
    system: &str,
    name: &str,
    workers: u32,
    extra_top: &str,
    extra_section: &str,
) -> PathBuf {
    let text = format!(
        "provider: {system}
name: {name}
scheduler_options:
  host: 127.0.0.1
worker:
  replicas: {workers}
  env: {{RUST_LOG: warn}}
timeouts:
  scheduler_seconds: 60
  workers_seconds: 90
  pending_seconds: 2
  delete_seconds: 60
{extra_top}
{system}:
  walltime: '00:10:00'
  cores: 1
  memory: 512MiB
  log_directory: {logs}
{extra_section}",
        logs = dir.join("logs").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `rask-operator down NAME` when dropped, so a failing test leaves no job behind.
pub struct Down {
    pub name: String,
    pub state_dir: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        if self.state_dir.join(format!("{}.yaml", self.name)).exists() {
            let _ = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
                .args(["down", &self.name])
                .env("RASK_STATE_DIR", &self.state_dir)
                .status();
        }
    }
}

pub fn down_guard(name: &str, opts: &Options) -> Down {
    Down {
        name: name.to_owned(),
        state_dir: opts.state_dir.clone(),
    }
}

/// The job names of the cluster in the queue right now, by state letter or word.
pub fn queued(system: &str, cluster: &str) -> Vec<(String, String)> {
    match system {
        "slurm" => {
            let out = Command::new("squeue")
                .args(["--me", "--noheader", "-o", "%j|%T|%k"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(&format!("rask:cluster={cluster},")))
                .filter_map(|l| {
                    let mut f = l.splitn(3, '|');
                    Some((f.next()?.to_owned(), f.next()?.to_owned()))
                })
                .collect()
        }
        _ => {
            let out = Command::new("qstat")
                .args(["-u", "*", "-r"])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut jobs = Vec::new();
            let mut state = String::new();
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() > 4 && f[0].chars().all(|c| c.is_ascii_digit()) {
                    state = f[4].to_owned();
                } else if let Some(full) = line.trim().strip_prefix("Full jobname:") {
                    let full = full.trim();
                    if full.starts_with(&format!("{cluster}-")) {
                        jobs.push((full.to_owned(), state.clone()));
                    }
                }
            }
            jobs
        }
    }
}

/// The TLS settings of a client with the users' certificate of the cluster `up` reported, or
/// none for a cluster on plain TCP.
pub fn client_tls(report: &UpReport) -> Option<rask::core::tls::TlsConfig> {
    report.certificates.as_ref().map(|dir| {
        rask::core::tls::TlsConfig::load(&rask::core::tls::TlsFiles {
            ca_file: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
        })
        .unwrap()
    })
}

/// A client of the cluster `up` reported, with the users' certificate when it uses TLS.
pub async fn connect(report: &UpReport) -> rask::client::Client {
    rask::client::Client::connect_with(&report.scheduler.address, client_tls(report))
        .await
        .unwrap()
}

/// Runs `rask run JOB --scheduler ADDRESS --json ARGS` against the cluster `up` reported (with
/// the users' certificate when it uses TLS) and returns its JSON line.
pub fn rask_run(job: &str, report: &UpReport, args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(rask_bin());
    command.args([
        "run",
        job,
        "--scheduler",
        &report.scheduler.address,
        "--json",
    ]);
    if let Some(dir) = &report.certificates {
        command
            .arg("--tls-ca-file")
            .arg(dir.join("ca.pem"))
            .arg("--tls-cert")
            .arg(dir.join("client.pem"))
            .arg("--tls-key")
            .arg(dir.join("client-key.pem"));
    }
    let out = command.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "rask run {job} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("rask run {job} printed no JSON line ({e}): {text}"))
}

/// The certificates' directory is the user's alone (0700) and every private key in it 0600.
pub fn assert_private(tls: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(tls), 0o700, "{}", tls.display());
    let mut keys = 0;
    for entry in std::fs::read_dir(tls).unwrap() {
        let path = entry.unwrap().path();
        if path.display().to_string().ends_with("-key.pem") {
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            keys += 1;
        }
    }
    assert_eq!(
        keys,
        4,
        "scheduler, worker, operator and client keys in {}",
        tls.display()
    );
}

/// A TLS cluster's scheduler refuses a plain TCP client at its address and plain HTTP (or
/// HTTPS without the cluster's certificate) at its API.
pub async fn assert_plain_refused(report: &UpReport) {
    let plain = report.scheduler.address.replacen("tls://", "tcp://", 1);
    let computed = tokio::time::timeout(Duration::from_secs(10), async {
        let c = rask::client::Client::connect(&plain).await.ok()?;
        c.submit(rask::seed::INC, rask::seed::lit(1i64))
            .result()
            .await
            .ok()
    })
    .await;
    assert!(
        !matches!(computed, Ok(Some(_))),
        "plain TCP computed on the TLS scheduler at {plain}"
    );
    let api = rask_operator::scheduler_api::SchedulerApi::new(Duration::from_secs(5));
    let http = report
        .scheduler
        .dashboard
        .replacen("https://", "http://", 1);
    assert!(
        api.get_workers(&http).await.is_err(),
        "plain HTTP answered at {http}"
    );
    assert!(
        api.get_workers(&report.scheduler.dashboard).await.is_err(),
        "HTTPS without a certificate of the cluster answered"
    );
}

/// One state directory for every batch test: `sweep` then sees the others' clusters as live.
pub fn state_root() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("batch-tests");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A test's directory and options for `system`, after checking the system answers and taking
/// down a cluster of the same name an interrupted earlier run left.
pub fn setup(system: &str, name: &str) -> (tempfile::TempDir, Options) {
    require(system);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.state_dir = state_root();
    let _ = Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .args(["down", name])
        .env("RASK_STATE_DIR", &opts.state_dir)
        .output();
    (dir, opts)
}
