//! `rask-operator up FILE` on the embedded default backend: the DaskCluster (or DaskJob) of a
//! manifest file as `rask` processes on this machine, scaled by the file's DaskAutoscalers with
//! the same policy as on Kubernetes. A DaskJob's runner runs to the end and the cluster goes with
//! it; a DaskCluster runs until Ctrl-C or its `idleTimeout`.

pub mod certs;
pub mod manifest;
pub mod plan;
pub mod progress;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::autoscaler::driver::{Autoscaler, Outcome, Step};
use crate::backend::local::{LocalBackend, LocalSpec, log_tail};
use crate::backend::{Backend, BackendError};
use crate::scheduler_api::SchedulerApi;
use manifest::ManifestError;
use plan::{Invalid, LocalPlan, RunnerPlan, expand};
pub use progress::ProgressMode;
use progress::Say;

#[derive(Clone, Debug)]
pub struct UpOptions {
    /// The `rask` binary (default: `$RASK_BIN`, then beside this executable, then `PATH`).
    pub rask: Option<PathBuf>,
    /// Logs and spill files (default: a new directory under the system's temporary directory).
    pub dir: Option<PathBuf>,
    /// How long the scheduler and the first workers may take to come up.
    pub start_timeout: Duration,
    /// How often each autoscaler asks the scheduler.
    pub poll: Duration,
    /// How to show progress on stderr (plain lines by default; `up` on a terminal: bars).
    pub progress: ProgressMode,
    /// The cluster's processes use its certificates (`tls://`): the default; `up --no-tls`
    /// turns it off. The certificates are made either way, unless the file opts out
    /// (`kubernetes.dask.org/tls: "false"`, which means plain TCP too).
    pub tls: bool,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            rask: None,
            dir: None,
            start_timeout: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            progress: ProgressMode::default(),
            tls: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Certificates(#[from] certs::LocalCertsError),
    #[error(
        "cannot find the rask binary ({0}); build it with `cargo build --release --bin rask`, or pass --rask-bin"
    )]
    NoRask(String),
    #[error(
        "worker {name} did not join the scheduler within {after:?}; its log ({log}) ends with:\n{tail}"
    )]
    NotJoined {
        name: String,
        after: Duration,
        log: String,
        tail: String,
    },
    #[error("cannot start the job runner {argv:?}: {reason}")]
    Runner { argv: Vec<String>, reason: String },
    #[error(
        "cannot find {program}, the command of {what}: not beside {} nor on PATH; build it, or give its path",
        rask.display()
    )]
    NoProgram {
        program: String,
        what: String,
        rask: PathBuf,
    },
}

/// A change of a group's size, as the autoscaler made it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleEvent {
    /// Seconds since `up` started.
    pub at: f64,
    pub group: String,
    pub from: usize,
    pub to: usize,
    pub reason: String,
}

/// How `up` ended.
#[derive(Clone, Debug, PartialEq)]
pub struct UpReport {
    pub cluster: String,
    /// The runner's exit code for a DaskJob (`None` when killed by a signal, or for a DaskCluster).
    pub exit_code: Option<i32>,
    pub succeeded: bool,
    /// How many times a DaskJob's runner ran (retries included).
    pub runner_runs: u32,
    pub scale_events: Vec<ScaleEvent>,
    pub dir: PathBuf,
    /// Where the cluster's certificates are (`{dir}/tls`), unless the file opted out.
    pub certificates: Option<PathBuf>,
}

/// Finds the `rask` binary the local backend starts.
pub fn find_rask(given: Option<&Path>) -> Result<PathBuf, UpError> {
    if let Some(p) = given {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(UpError::NoRask(format!("{} does not exist", p.display())))
        };
    }
    if let Ok(p) = std::env::var("RASK_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(UpError::NoRask(format!(
                "RASK_BIN={} does not exist",
                p.display()
            )))
        };
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("rask")));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("rask"));
    beside
        .into_iter()
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(|| UpError::NoRask("not beside rask-operator nor on PATH".into()))
}

/// The program a container's `command` names, for a local run: a path as given; a bare name
/// beside the `rask` binary (where `cargo build` puts a workspace's binaries), beside this
/// executable, then on `PATH`; `rask` is the `rask` binary.
pub fn find_program(name: &str, rask: &Path, what: &str) -> Result<PathBuf, UpError> {
    if name == "rask" {
        return Ok(rask.to_owned());
    }
    let missing = || UpError::NoProgram {
        program: name.to_owned(),
        what: what.to_owned(),
        rask: rask.to_owned(),
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() { Ok(p) } else { Err(missing()) };
    }
    let beside_rask = rask.parent().map(|d| d.join(name));
    let beside_self = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name));
    beside_rask
        .into_iter()
        .chain(beside_self)
        .chain(on_path)
        .find(|p| p.is_file())
        .ok_or_else(missing)
}

/// Reads and checks a manifest file for a local run.
pub fn load(path: &Path) -> Result<LocalPlan, UpError> {
    let text = std::fs::read_to_string(path).map_err(|e| UpError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let resources = manifest::parse(&path.display().to_string(), &text)?;
    Ok(plan::plan(&resources)?)
}

/// Brings the plan's cluster up, runs its autoscalers and its job runner (if any), and tears it
/// all down when the runner ends, the cluster is idle for its `idleTimeout`, or `stop` resolves.
pub async fn up(
    plan: LocalPlan,
    opts: UpOptions,
    stop: impl std::future::Future<Output = ()>,
) -> Result<UpReport, UpError> {
    let say = Arc::new(Say::new(opts.progress));
    let rask = find_rask(opts.rask.as_deref())?;
    let runner_rask = rask.clone();
    let dir = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("rask-{}-{}", plan.cluster, std::process::id()))
    });
    let certificates = if plan.certificates {
        Some(certs::ensure(
            &dir,
            &plan.cluster,
            crate::clock::now() as i64,
        )?)
    } else {
        None
    };
    let scheduler_program = match &plan.scheduler_program {
        Some(p) => Some(find_program(p, &rask, "the scheduler")?),
        None => None,
    };
    let mut programs = std::collections::BTreeMap::new();
    for (name, g) in &plan.groups {
        if let Some(p) = &g.program {
            programs.insert(
                name.clone(),
                find_program(p, &rask, &format!("worker group {name}"))?,
            );
        }
    }
    let spec = LocalSpec {
        cluster: plan.cluster.clone(),
        rask,
        scheduler_program,
        programs,
        dir: dir.clone(),
        scheduler_env: plan.scheduler_env.clone(),
        groups: plan
            .groups
            .iter()
            .map(|(n, g)| (n.clone(), g.template.clone()))
            .collect(),
        start_timeout: opts.start_timeout,
        tls: certificates.clone().filter(|_| opts.tls),
    };
    say.step(format_args!(
        "cluster {}: starting the scheduler",
        plan.cluster
    ));
    let backend = match LocalBackend::start(spec).await {
        Ok(b) => Arc::new(b),
        Err(e) => {
            say.finish();
            return Err(e.into());
        }
    };
    say.step_done(format_args!(
        "cluster {}: scheduler started at {}, dashboard {} (logs in {})",
        plan.cluster,
        backend.scheduler_address(),
        backend.scheduler_url(),
        dir.display()
    ));
    if let Some(tls) = &certificates {
        say.line(format_args!(
            "certificates in {} (clients: ca.pem, client.pem, client-key.pem){}",
            tls.display(),
            if opts.tls {
                ""
            } else {
                "; not in use (up --no-tls)"
            }
        ));
    }
    let result = run(&plan, &opts, &backend, &say, &runner_rask, stop).await;
    say.finish();
    backend.delete_cluster().await?;
    say.line(format_args!("cluster {} deleted", plan.cluster));
    let (exit_code, succeeded, runner_runs, scale_events) = result?;
    Ok(UpReport {
        cluster: plan.cluster,
        exit_code,
        succeeded,
        runner_runs,
        scale_events,
        dir,
        certificates,
    })
}

type RunResult = Result<(Option<i32>, bool, u32, Vec<ScaleEvent>), UpError>;

async fn run(
    plan: &LocalPlan,
    opts: &UpOptions,
    backend: &Arc<LocalBackend>,
    say: &Arc<Say>,
    rask: &Path,
    stop: impl std::future::Future<Output = ()>,
) -> RunResult {
    let api = backend.api().clone();
    let mut started = Vec::new();
    for (group, g) in &plan.groups {
        started.extend(backend.add_workers(group, g.replicas).await?);
    }
    say.workers(0, started.len());
    wait_joined(backend, &api, &started, opts.start_timeout, say).await?;
    say.workers_done(started.len());

    let events = Arc::new(Mutex::new(Vec::<ScaleEvent>::new()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = Vec::new();
    for a in &plan.autoscalers {
        let mut scaler = Autoscaler::new(a.spec.group.clone(), a.spec.settings.clone());
        scaler.interval = opts.poll;
        say.line(format_args!(
            "autoscaler {}: {} between {} and {} workers",
            a.name, a.spec.group, a.spec.settings.minimum, a.spec.settings.maximum
        ));
        let (backend, events, say, rx) = (
            backend.clone(),
            events.clone(),
            say.clone(),
            stop_rx.clone(),
        );
        loops.push(tokio::spawn(async move {
            let group = scaler.group.clone();
            scaler
                .run(backend.as_ref(), rx, |s: &Step| {
                    if let Some(e) = scale_event(&group, s, say.t0.elapsed().as_secs_f64()) {
                        say.line(format_args!(
                            "{}: {} → {} workers ({})",
                            e.group, e.from, e.to, e.reason
                        ));
                        events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                    } else if let Err(why) = &s.outcome {
                        say.line(format_args!("{group}: {why}"));
                    }
                })
                .await;
        }));
    }

    let ended = async {
        match &plan.runner {
            Some(r) => run_runner(r, backend, say, rask).await,
            None => {
                idle(plan, backend, &api, say).await;
                Ok((None, true, 0))
            }
        }
    };
    let outcome = tokio::select! {
        r = ended => r,
        () = stop => {
            say.step_done("stopping");
            Ok((None, false, 0))
        }
    };
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    let events = std::mem::take(&mut *events.lock().unwrap_or_else(|p| p.into_inner()));
    outcome.map(|(code, ok, runs)| (code, ok, runs, events))
}

fn scale_event(group: &str, s: &Step, at: f64) -> Option<ScaleEvent> {
    let to = match &s.outcome {
        Ok(Outcome::Added(names)) if !names.is_empty() => s.current + names.len(),
        Ok(Outcome::Retired(r)) if !r.removed.is_empty() => {
            s.current.saturating_sub(r.removed.len())
        }
        _ => return None,
    };
    Some(ScaleEvent {
        at,
        group: group.to_owned(),
        from: s.current,
        to,
        reason: s.decision.reason().to_owned(),
    })
}

/// Waits until the scheduler lists every one of `names`, saying how many it lists.
async fn wait_joined(
    backend: &LocalBackend,
    api: &SchedulerApi,
    names: &[String],
    timeout: Duration,
    say: &Say,
) -> Result<(), UpError> {
    let deadline = Instant::now() + timeout;
    loop {
        let known: Vec<String> = api
            .get_workers(&backend.scheduler_url())
            .await
            .map(|ws| ws.into_iter().map(|w| w.name).collect())
            .unwrap_or_default();
        say.workers(
            names.iter().filter(|n| known.contains(n)).count(),
            names.len(),
        );
        let Some(missing) = names.iter().find(|n| !known.contains(n)) else {
            return Ok(());
        };
        if Instant::now() > deadline {
            let log = backend.log_path(missing);
            return Err(UpError::NotJoined {
                name: missing.clone(),
                after: timeout,
                tail: log_tail(&log, 20),
                log: log.display().to_string(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a DaskJob's runner with the scheduler's address, its output passed through; a failed run
/// is retried up to the job's `backoffLimit`, all within its `activeDeadlineSeconds`. A failed job
/// with `keepClusterOnFailure` keeps the cluster until Ctrl-C.
async fn run_runner(
    r: &RunnerPlan,
    backend: &LocalBackend,
    say: &Arc<Say>,
    rask: &Path,
) -> Result<(Option<i32>, bool, u32), UpError> {
    let mut vars = r.env.clone();
    vars.push((
        "DASK_SCHEDULER_ADDRESS".into(),
        backend.scheduler_address().into(),
    ));
    // The runner is a client: the users' certificate, where the cluster uses TLS (values the
    // job's spec gives win).
    if let Some(tls) = backend.tls() {
        for (k, v) in certs::client_env(tls) {
            if !vars.iter().any(|(n, _)| *n == k) {
                vars.push((k, v));
            }
        }
    }
    let argv: Vec<String> = r.argv.iter().map(|a| expand(a, &vars)).collect();
    let program = find_program(&argv[0], rask, &format!("job {}", r.job))?;
    let deadline = r.deadline.map(|d| say.t0 + d);
    let mut outcome = (None, false);
    let mut runs = 0;
    for attempt in 0..=r.backoff_limit {
        runs += 1;
        say.step(format_args!(
            "job {}: running {} (attempt {} of {})",
            r.job,
            argv.join(" "),
            attempt + 1,
            r.backoff_limit + 1
        ));
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&argv[1..])
            .envs(vars.iter().cloned())
            .kill_on_drop(true);
        if say.bars() {
            // Its output goes above the spinner rather than through it.
            command
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
        }
        let mut child = command.spawn().map_err(|e| UpError::Runner {
            argv: argv.clone(),
            reason: e.to_string(),
        })?;
        let relays = relay_output(&mut child, say);
        let waited = match deadline {
            Some(d) => tokio::time::timeout_at(d.into(), child.wait()).await,
            None => Ok(child.wait().await),
        };
        if waited.is_err() {
            let _ = child.kill().await;
        }
        for relay in relays {
            // A process the runner left behind may hold its pipes open: not waited for long.
            let _ = tokio::time::timeout(Duration::from_secs(2), relay).await;
        }
        let status = match waited {
            Ok(s) => s.map_err(|e| UpError::Runner {
                argv: argv.clone(),
                reason: e.to_string(),
            })?,
            Err(_) => {
                say.step_done(format_args!(
                    "job {}: Failed (activeDeadlineSeconds {} s exceeded)",
                    r.job,
                    r.deadline.map(|d| d.as_secs()).unwrap_or(0)
                ));
                outcome = (None, false);
                break;
            }
        };
        outcome = (status.code(), status.success());
        say.step_done(format_args!(
            "job {}: {} ({status})",
            r.job,
            if status.success() {
                "Successful"
            } else {
                "Failed"
            }
        ));
        if status.success() {
            break;
        }
    }
    if !outcome.1 && r.keep_cluster_on_failure {
        say.line(format_args!(
            "job {}: keeping the cluster for debugging (keepClusterOnFailure); Ctrl-C deletes it",
            r.job
        ));
        std::future::pending::<()>().await;
    }
    Ok((outcome.0, outcome.1, runs))
}

/// Passes a runner's piped stdout and stderr on, line by line, both at once (a full pipe would
/// stop the runner); nothing when its output was not piped.
fn relay_output(
    child: &mut tokio::process::Child,
    say: &Arc<Say>,
) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut relays = Vec::new();
    if let Some(out) = child.stdout.take() {
        let say = say.clone();
        relays.push(tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                say.passthrough(&l, true);
            }
        }));
    }
    if let Some(err) = child.stderr.take() {
        let say = say.clone();
        relays.push(tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                say.passthrough(&l, false);
            }
        }));
    }
    relays
}

/// Returns once the scheduler has been idle for the cluster's `idleTimeout`; never without one.
async fn idle(plan: &LocalPlan, backend: &LocalBackend, api: &SchedulerApi, say: &Say) {
    let Some(limit) = plan.idle_timeout else {
        say.step("cluster running until Ctrl-C");
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Ok(Some(since)) = api.idle_since(&backend.scheduler_url()).await {
            let idle_for = crate::clock::now() - since;
            if idle_for >= limit.as_secs_f64() {
                say.line(format_args!(
                    "idle for {idle_for:.0} s (idleTimeout {} s)",
                    limit.as_secs()
                ));
                return;
            }
        }
    }
}
