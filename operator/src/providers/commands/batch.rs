//! The commands on batch clusters (SLURM, SGE): `up`, `scale`, `status`, `logs`, `down`,
//! `sweep`, `keep` (what `up` leaves running in the background) and `job-script` (PBS too).
//!
//! Besides the saved config, `up` writes `NAME.state.json` beside it: where the scheduler is
//! (its address, and its process or job), the `rask` binary, the log directory and the keeper's
//! process, so the other commands and `keep` find the running cluster by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Options, ScalePlan, ScaleReport, find, save, saved_clusters, saved_path, scale_plan};
use crate::backend::{Backend, no_group, tail};
use crate::clock::now;
use crate::providers::ProviderError;
use crate::providers::batch::certs;
use crate::providers::batch::keeper::Keeper;
use crate::providers::batch::script::{self, SchedulerJob, WorkerJob};
use crate::providers::batch::{
    BatchBackend, BatchSystem, Job, JobRole, JobState, Queue, SchedulerEndpoint,
};
use crate::providers::config::batch::{BatchCluster, SchedulerLocation, System};
use crate::providers::config::{self, ClusterConfig, DEFAULT_GROUP};
use crate::scheduler_api::SchedulerApi;
use crate::tls::Role;

/// What `up` leaves for the other commands beside the saved config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub scheduler: SchedulerEndpoint,
    /// The scheduler's process on the machine `up` ran on.
    pub scheduler_pid: Option<u32>,
    /// The scheduler's job.
    pub scheduler_job: Option<String>,
    /// The `rask-operator keep` process.
    pub keeper_pid: Option<u32>,
    pub rask_bin: String,
    pub log_dir: PathBuf,
    /// The directory of the cluster's certificates, when it uses TLS.
    #[serde(default)]
    pub tls: Option<PathBuf>,
}

fn state_path(opts: &Options, name: &str) -> PathBuf {
    opts.state_dir.join(format!("{name}.state.json"))
}

fn scheduler_file(opts: &Options, name: &str) -> PathBuf {
    opts.state_dir.join(format!("{name}.scheduler.json"))
}

fn write_state(opts: &Options, name: &str, state: &State) -> Result<(), ProviderError> {
    let path = state_path(opts, name);
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| ProviderError::Other(format!("cannot write the cluster's state: {e}")))?;
    std::fs::write(&path, text).map_err(|e| ProviderError::Read {
        path: path.display().to_string(),
        reason: format!("cannot write it: {e}"),
    })
}

fn read_state(opts: &Options, name: &str) -> Result<State, ProviderError> {
    let path = state_path(opts, name);
    let text = std::fs::read_to_string(&path).map_err(|e| ProviderError::NoSuchCluster {
        name: name.to_owned(),
        reason: format!(
            "it is not up on this machine ({}: {e}); `rask-operator up FILE` starts it",
            path.display()
        ),
    })?;
    serde_json::from_str(&text).map_err(|e| ProviderError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The batch cluster named `name`, from `config` when given, else from the saved configs.
fn find_batch(
    opts: &Options,
    name: &str,
    config: Option<&Path>,
) -> Result<BatchCluster, ProviderError> {
    match find(opts, name, config)?.0 {
        ClusterConfig::Batch(c) => Ok(c),
        ClusterConfig::Vm(c) => Err(ProviderError::Other(format!(
            "cluster {name} runs on {} VMs, not on a batch queue",
            c.provider.name().as_str()
        ))),
    }
}

fn load_batch(path: &Path) -> Result<(BatchCluster, String), ProviderError> {
    match config::load(path)? {
        (ClusterConfig::Batch(c), text) => Ok((c, text)),
        (ClusterConfig::Vm(c), _) => Err(ProviderError::Other(format!(
            "{} describes a {} cluster, not a batch one",
            path.display(),
            c.provider.name().as_str()
        ))),
    }
}

/// The `rask` binary the cluster's processes run: `--rask-bin`, the config's `rask_bin`,
/// `$RASK_BIN`, beside this binary or on `PATH`.
fn rask_bin(opts: &Options, cluster: &BatchCluster) -> Result<String, ProviderError> {
    if let Some(p) = &opts.rask_bin {
        return Ok(p.display().to_string());
    }
    if let Some(p) = &cluster.rask_bin {
        return Ok(p.clone());
    }
    crate::local::find_rask(None)
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p).display().to_string())
        .map_err(|e| ProviderError::Other(e.to_string()))
}

fn log_dir(opts: &Options, cluster: &BatchCluster) -> PathBuf {
    cluster
        .log_directory
        .clone()
        .unwrap_or_else(|| opts.state_dir.join(format!("{}-logs", cluster.name)))
}

/// A client of the scheduler's HTTP API: with the operator's certificate when the cluster uses
/// TLS (`tls`, its certificates' directory).
fn scheduler_api(tls: Option<&Path>, timeout: Duration) -> Result<SchedulerApi, ProviderError> {
    match tls {
        Some(dir) => certs::api(dir, Role::Operator, timeout),
        None => Ok(SchedulerApi::new(timeout)),
    }
}

/// What `up` made.
#[derive(Clone, Debug)]
pub struct UpReport {
    pub name: String,
    pub system: System,
    pub scheduler: SchedulerEndpoint,
    /// `process 123 on this machine` or `job 45`.
    pub scheduler_runs_as: String,
    /// Worker names, each with its job id; all joined the scheduler.
    pub workers: Vec<(String, String)>,
    pub keeper_pid: u32,
    pub log_dir: PathBuf,
    /// With TLS: the directory of the cluster's CA and certificates (a client's: `ca.pem`,
    /// `client.pem`, `client-key.pem`).
    pub certificates: Option<PathBuf>,
}

impl std::fmt::Display for UpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "cluster {} is up ({})",
            self.name,
            self.system.name().as_str()
        )?;
        writeln!(
            f,
            "scheduler: {} ({})",
            self.scheduler.address, self.scheduler_runs_as
        )?;
        writeln!(f, "dashboard: {}", self.scheduler.dashboard)?;
        let workers: Vec<String> = self
            .workers
            .iter()
            .map(|(w, id)| format!("{w} (job {id})"))
            .collect();
        writeln!(f, "workers:   {}", workers.join(", "))?;
        writeln!(f, "logs:      {}", self.log_dir.display())?;
        if let Some(dir) = &self.certificates {
            writeln!(
                f,
                "tls:       ca.pem, client.pem, client-key.pem in {}",
                dir.display()
            )?;
        }
        write!(
            f,
            "kept by rask-operator keep (process {}); `rask-operator down {}` ends it all",
            self.keeper_pid, self.name
        )
    }
}

/// A process of ours still running: its command line holds every one of `markers`. A process id
/// reused by another program is left alone.
fn process_alive(pid: u32, markers: &[&str]) -> bool {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    !process_ended(pid) && !cmdline.is_empty() && markers.iter().all(|m| cmdline.contains(m))
}

/// Whether a process we started has ended (gone, or a zombie not yet reaped).
fn process_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_none_or(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => true,
    }
}

/// Ends one of our processes: SIGTERM, then SIGKILL after `grace`. Whether it was running.
async fn stop_process(pid: u32, markers: &[&str], grace: Duration) -> bool {
    if !process_alive(pid, markers) {
        return false;
    }
    let signal = |sig: &str| {
        std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let _ = signal("-TERM");
    let start = Instant::now();
    while process_alive(pid, markers) && start.elapsed() < grace {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if process_alive(pid, markers) {
        let _ = signal("-KILL");
    }
    true
}

/// Starts a process that outlives this one: its own process group (a Ctrl-C at the terminal
/// does not reach it), no stdin, output to `log`.
fn spawn_detached(
    program: &str,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
) -> Result<u32, ProviderError> {
    use std::os::unix::process::CommandExt;
    let out = std::fs::File::create(log).map_err(|e| ProviderError::Read {
        path: log.display().to_string(),
        reason: format!("cannot create it: {e}"),
    })?;
    let err = out.try_clone().map_err(|e| ProviderError::Read {
        path: log.display().to_string(),
        reason: e.to_string(),
    })?;
    let child = std::process::Command::new(program)
        .args(args)
        .envs(envs.iter().cloned())
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .map_err(|e| ProviderError::Other(format!("cannot start {program}: {e}")))?;
    Ok(child.id())
}

/// The IPv4 address of a network interface on this machine.
fn interface_ip(interface: &str) -> Result<String, ProviderError> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", interface])
        .output()
        .map_err(|e| {
            ProviderError::Other(format!(
                "cannot run `ip` to find {interface}'s address: {e}"
            ))
        })?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_owned)
        .ok_or_else(|| ProviderError::Config {
            file: String::new(),
            key: "scheduler_options.interface".into(),
            message: format!("{interface} has no IPv4 address on this machine"),
        })
}

#[derive(Deserialize)]
struct SchedulerFile {
    address: String,
    dashboard: Option<String>,
}

/// The scheduler's endpoint from its scheduler file, once written. A dashboard on all
/// interfaces is reached at the scheduler's own host.
fn read_scheduler_file(path: &Path) -> Option<SchedulerEndpoint> {
    let f: SchedulerFile = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    let dashboard = f.dashboard?;
    let host = f
        .address
        .trim_start_matches("tcp://")
        .trim_start_matches("tls://")
        .rsplit_once(':')
        .map(|(h, _)| h.to_owned())?;
    let dashboard = dashboard.replace("//0.0.0.0:", &format!("//{host}:"));
    Some(SchedulerEndpoint {
        address: f.address,
        dashboard,
    })
}

/// A line about a job for an error message: its state and, when it ended, how (from the batch
/// system's accounting) and how its output ends.
async fn job_line(
    queue: &Queue,
    job: Option<&Job>,
    id: &str,
    name: &str,
    log_dir: &Path,
) -> String {
    match job {
        Some(j) => match &j.state {
            JobState::Pending { reason } => {
                let waited = j.submitted.map(|s| now() - s).unwrap_or(0.0);
                format!("  job {id} ({name}): pending for {waited:.0} s: {reason}")
            }
            JobState::Running => {
                format!("  job {id} ({name}): running, its worker not (yet) known to the scheduler")
            }
            JobState::Ending { state } => format!("  job {id} ({name}): {state}"),
        },
        None => {
            let how = queue
                .ended(id)
                .await
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            let probe = Job {
                id: id.to_owned(),
                name: name.to_owned(),
                tag: crate::providers::batch::Tag {
                    cluster: String::new(),
                    role: JobRole::Worker,
                    group: None,
                },
                state: JobState::Running,
                submitted: None,
                started: None,
            };
            let outputs: Vec<String> = queue
                .output_files(&probe, log_dir)
                .iter()
                .filter_map(|p| {
                    let text = std::fs::read_to_string(p).ok()?;
                    (!text.trim().is_empty())
                        .then(|| format!("  {} ends:\n{}", p.display(), indent(&tail(&text, 10))))
                })
                .collect();
            let outputs = if outputs.is_empty() {
                "  (it wrote no output)".to_owned()
            } else {
                outputs.join("\n")
            };
            format!("  job {id} ({name}) ended{how} before its worker joined\n{outputs}")
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the scheduler lists every worker of `submitted`, saying which jobs are still
/// pending (and why) once they waited `pending` long. A job that ends first fails the wait at
/// once, with its output's end.
async fn wait_joined(
    b: &BatchBackend<Queue>,
    submitted: &[(Job, Vec<String>)],
    timeout: Duration,
    opts: &Options,
) -> Result<(), ProviderError> {
    let start = Instant::now();
    let pending_after = b.cluster.timeouts.pending;
    let mut said: BTreeMap<String, String> = BTreeMap::new();
    // Workers seen once have joined, even if the scheduler retired them since.
    let mut known: BTreeSet<String> = BTreeSet::new();
    loop {
        known.extend(
            b.api
                .get_workers(&b.scheduler.dashboard)
                .await
                .map(|ws| ws.into_iter().map(|w| w.name).collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        let missing: Vec<&(Job, Vec<String>)> = submitted
            .iter()
            .filter(|(_, ws)| ws.iter().any(|w| !known.contains(w)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let listed = b.worker_jobs().await?;
        let by_id: BTreeMap<&str, &Job> = listed.iter().map(|j| (j.id.as_str(), j)).collect();
        let gone: Vec<&(Job, Vec<String>)> = missing
            .iter()
            .copied()
            .filter(|(j, _)| !by_id.contains_key(j.id.as_str()))
            .collect();
        let timed_out = start.elapsed() > timeout;
        if !gone.is_empty() || timed_out {
            let at_fault = if gone.is_empty() { &missing } else { &gone };
            return Err(ProviderError::Jobs {
                what: if gone.is_empty() {
                    "worker jobs did not join the scheduler".into()
                } else {
                    "worker jobs ended before joining the scheduler".into()
                },
                after: start.elapsed(),
                jobs: {
                    let mut lines = Vec::new();
                    for (j, _) in at_fault.iter() {
                        let listed = by_id.get(j.id.as_str()).copied();
                        lines.push(job_line(&b.system, listed, &j.id, &j.name, &b.log_dir).await);
                    }
                    lines
                },
            });
        }
        for (j, _) in &missing {
            if let Some(l) = by_id.get(j.id.as_str())
                && let JobState::Pending { reason } = &l.state
                && l.submitted
                    .is_some_and(|s| now() - s >= pending_after.as_secs_f64())
                && said.get(&j.id) != Some(reason)
            {
                (opts.progress)(&format!(
                    "{}: job {} ({}) is still pending: {reason}",
                    b.cluster.name, j.id, j.name
                ));
                said.insert(j.id.clone(), reason.clone());
            }
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// Where the scheduler runs, once started.
struct Started {
    endpoint: SchedulerEndpoint,
    pid: Option<u32>,
    job: Option<String>,
}

/// Starts the scheduler (a process here, or a job) and waits until its API answers.
async fn start_scheduler(
    queue: &Queue,
    cluster: &BatchCluster,
    opts: &Options,
    rask: &str,
    logs: &Path,
    tls: Option<&Path>,
    made: &mut Made,
) -> Result<Started, ProviderError> {
    let file = scheduler_file(opts, &cluster.name);
    let _ = std::fs::remove_file(&file);
    let s = &cluster.scheduler;
    let (pid, job, log) = match s.location {
        SchedulerLocation::Local => {
            let host = match (&s.host, &s.interface) {
                (Some(h), _) => h.clone(),
                (None, Some(i)) => interface_ip(i)?,
                (None, None) => "0.0.0.0".into(),
            };
            let dashboard = s
                .dashboard_address
                .clone()
                .unwrap_or_else(|| format!("{host}:0"));
            let mut env: Vec<(String, String)> = vec![
                ("DASK_CLUSTER_NAME".into(), cluster.name.clone()),
                (
                    "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES".into(),
                    "['distributed.http.scheduler.api','distributed.http.health','distributed.http.scheduler.prometheus']".into(),
                ),
            ];
            env.extend(s.env.iter().cloned());
            let log = logs.join(format!("{}-scheduler.log", cluster.name));
            let mut args: Vec<String> = vec![
                "scheduler".into(),
                "--host".into(),
                host,
                "--port".into(),
                s.port.unwrap_or(0).to_string(),
                "--dashboard-address".into(),
                dashboard,
                "--scheduler-file".into(),
                file.display().to_string(),
            ];
            if let Some(tls) = tls {
                args.extend(
                    crate::local::certs::tls_args(tls, Role::Scheduler)
                        .into_iter()
                        .map(|a| a.to_string_lossy().into_owned()),
                );
            }
            let pid = spawn_detached(rask, &args, &env, &log)?;
            made.scheduler_pid = Some(pid);
            (Some(pid), None, log)
        }
        SchedulerLocation::Job => {
            let text = script::scheduler(&SchedulerJob {
                cluster,
                rask_bin: rask,
                log_dir: &logs.display().to_string(),
                scheduler_file: &file.display().to_string(),
                tls: tls.map(|t| t.display().to_string()).as_deref(),
            });
            let id = queue.submit(&text).await?;
            made.jobs
                .push((id.clone(), format!("{}-scheduler", cluster.name)));
            let probe_name = format!("{}-scheduler", cluster.name);
            let log = logs.join(format!("{probe_name}-{id}.out"));
            (None, Some(id), log)
        }
    };
    (opts.progress)(&format!(
        "{}: starting the scheduler ({})",
        cluster.name,
        match (&pid, &job) {
            (Some(p), _) => format!("process {p} on this machine"),
            (_, Some(j)) => format!("job {j}"),
            _ => String::new(),
        }
    ));
    let api = scheduler_api(tls, Duration::from_secs(10))?;
    let timeout = cluster.timeouts.scheduler;
    let start = Instant::now();
    let mut said = String::new();
    loop {
        if let Some(endpoint) = read_scheduler_file(&file)
            && api.get_workers(&endpoint.dashboard).await.is_ok()
        {
            return Ok(Started { endpoint, pid, job });
        }
        let mut ended = None;
        if let Some(p) = pid
            && process_ended(p)
        {
            ended = Some(format!("the scheduler process {p} exited"));
        }
        if let Some(id) = &job {
            let jobs = queue.jobs(Some(&cluster.name)).await?;
            match jobs.iter().find(|j| &j.id == id) {
                None => ended = Some(format!("the scheduler's job {id} ended")),
                Some(Job {
                    state: JobState::Pending { reason },
                    submitted,
                    ..
                }) if submitted
                    .is_some_and(|s| now() - s >= cluster.timeouts.pending.as_secs_f64())
                    && *reason != said =>
                {
                    (opts.progress)(&format!(
                        "{}: the scheduler's job {id} is still pending: {reason}",
                        cluster.name
                    ));
                    said = reason.clone();
                }
                Some(_) => {}
            }
        }
        if ended.is_some() || start.elapsed() > timeout {
            let output = std::fs::read_to_string(&log).unwrap_or_default();
            let what = ended.unwrap_or_else(|| {
                format!("the scheduler did not write {} and answer", file.display())
            });
            return Err(ProviderError::Jobs {
                what,
                after: start.elapsed(),
                jobs: vec![if output.trim().is_empty() {
                    format!("  {} is empty", log.display())
                } else {
                    format!("  {} ends:\n{}", log.display(), indent(&tail(&output, 15)))
                }],
            });
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// What `up` made so far, to undo on failure.
#[derive(Default)]
struct Made {
    scheduler_pid: Option<u32>,
    /// (id, name).
    jobs: Vec<(String, String)>,
}

async fn roll_back(queue: &Queue, made: Made, cause: ProviderError) -> ProviderError {
    let mut deleted = Vec::new();
    let ids: Vec<String> = made.jobs.iter().map(|(id, _)| id.clone()).collect();
    if let Err(e) = queue.cancel(&ids).await {
        let left = made
            .jobs
            .iter()
            .map(|(id, name)| format!("job {id} ({name})"))
            .collect();
        return ProviderError::RollbackFailed {
            cause: Box::new(cause),
            error: Box::new(e),
            left,
        };
    }
    deleted.extend(
        made.jobs
            .iter()
            .map(|(id, name)| format!("job {id} ({name})")),
    );
    if let Some(pid) = made.scheduler_pid
        // Our own child, not yet reaped: its id cannot have been reused, and it may not
        // have reached its exec yet, so no marker is asked of its command line.
        && stop_process(pid, &[], Duration::from_secs(5)).await
    {
        deleted.push(format!("scheduler process {pid}"));
    }
    if deleted.is_empty() {
        cause
    } else {
        ProviderError::RolledBack {
            cause: Box::new(cause),
            deleted,
        }
    }
}

/// `up CONFIG` on a batch queue: the scheduler (here or as a job), the workers' jobs, each
/// worker verified in the scheduler, then `rask-operator keep NAME` in the background. On
/// failure everything submitted or started is cancelled again and the saved config removed.
pub async fn up(path: &Path, opts: &Options) -> Result<UpReport, ProviderError> {
    let (cluster, text) = load_batch(path)?;
    let queue = Queue::for_system(cluster.system)?;
    let existing = queue.jobs(Some(&cluster.name)).await?;
    if !existing.is_empty() {
        return Err(ProviderError::Other(format!(
            "cluster {} already has jobs ({}): `rask-operator down {0}` first, or pick another name",
            cluster.name,
            existing
                .iter()
                .map(|j| format!("job {} ({})", j.id, j.name))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let rask = rask_bin(opts, &cluster)?;
    let logs = log_dir(opts, &cluster);
    save(opts, &cluster.name, &text)?;
    std::fs::create_dir_all(&logs).map_err(|e| ProviderError::Read {
        path: logs.display().to_string(),
        reason: format!("cannot create it: {e}"),
    })?;
    let tls = if cluster.tls {
        (opts.progress)(&format!(
            "{}: making the cluster's certificates in {}",
            cluster.name,
            certs::dir(&opts.state_dir, &cluster.name).display()
        ));
        let names = certs::scheduler_names(
            cluster.scheduler.host.as_deref(),
            certs::hostname().as_deref(),
        );
        match certs::make(&opts.state_dir, &cluster.name, &names, now() as i64) {
            Ok(dir) => Some(dir),
            Err(e) => {
                let _ = std::fs::remove_file(saved_path(opts, &cluster.name));
                return Err(e);
            }
        }
    } else {
        None
    };
    let mut made = Made::default();
    match up_stages(&queue, cluster.clone(), opts, &rask, &logs, tls, &mut made).await {
        Ok(r) => Ok(r),
        Err(cause) => {
            let e = roll_back(&queue, made, cause).await;
            if !matches!(e, ProviderError::RollbackFailed { .. }) {
                let _ = std::fs::remove_file(saved_path(opts, &cluster.name));
                let _ = std::fs::remove_file(state_path(opts, &cluster.name));
                let _ = certs::remove(&certs::dir(&opts.state_dir, &cluster.name));
            }
            let _ = std::fs::remove_file(scheduler_file(opts, &cluster.name));
            Err(e)
        }
    }
}

async fn up_stages(
    queue: &Queue,
    cluster: BatchCluster,
    opts: &Options,
    rask: &str,
    logs: &Path,
    tls: Option<PathBuf>,
    made: &mut Made,
) -> Result<UpReport, ProviderError> {
    let started = start_scheduler(queue, &cluster, opts, rask, logs, tls.as_deref(), made).await?;
    let name = cluster.name.clone();
    let system = cluster.system;
    let backend = BatchBackend {
        system: Arc::new(Queue::for_system(system)?),
        cluster: Arc::new(cluster),
        scheduler: started.endpoint.clone(),
        rask_bin: rask.to_owned(),
        log_dir: logs.to_owned(),
        api: scheduler_api(tls.as_deref(), Duration::from_secs(60))?,
        tls: tls.clone(),
    };
    let mut submitted = Vec::new();
    for (group, g) in &backend.cluster.groups {
        if g.replicas == 0 {
            continue;
        }
        (opts.progress)(&format!(
            "{name}: submitting {} {group} worker jobs",
            g.replicas
        ));
        let jobs = backend
            .submit_workers(group, (g.replicas * g.processes) as usize)
            .await?;
        made.jobs
            .extend(jobs.iter().map(|(j, _)| (j.id.clone(), j.name.clone())));
        submitted.extend(jobs);
    }
    wait_joined(&backend, &submitted, backend.cluster.timeouts.workers, opts).await?;
    let mut state = State {
        scheduler: started.endpoint.clone(),
        scheduler_pid: started.pid,
        scheduler_job: started.job.clone(),
        keeper_pid: None,
        rask_bin: rask.to_owned(),
        log_dir: logs.to_owned(),
        tls: tls.clone(),
    };
    write_state(opts, &name, &state)?;
    let operator = match &opts.operator_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| ProviderError::Other(format!("cannot find rask-operator itself: {e}")))?,
    };
    let keeper = spawn_detached(
        &operator.display().to_string(),
        &[
            "keep".into(),
            name.clone(),
            "--interval".into(),
            format!("{}", opts.poll.as_secs_f64()),
        ],
        &[
            (
                "RASK_STATE_DIR".into(),
                opts.state_dir.display().to_string(),
            ),
            (
                "RUST_LOG".into(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ],
        &logs.join(format!("{name}-keeper.log")),
    )?;
    state.keeper_pid = Some(keeper);
    write_state(opts, &name, &state)?;
    Ok(UpReport {
        name,
        system,
        scheduler: started.endpoint,
        scheduler_runs_as: match (started.pid, started.job) {
            (Some(p), _) => format!("process {p} on this machine"),
            (_, Some(j)) => format!("job {j}"),
            _ => String::new(),
        },
        workers: submitted
            .iter()
            .flat_map(|(j, ws)| ws.iter().map(|w| (w.clone(), j.id.clone())))
            .collect(),
        keeper_pid: keeper,
        log_dir: logs.to_owned(),
        certificates: tls,
    })
}

/// The running batch cluster named `name` as a [`Backend`].
pub async fn attach(
    opts: &Options,
    name: &str,
    config: Option<&Path>,
) -> Result<BatchBackend<Queue>, ProviderError> {
    let cluster = find_batch(opts, name, config)?;
    let state = read_state(opts, name)?;
    Ok(BatchBackend {
        system: Arc::new(Queue::for_system(cluster.system)?),
        cluster: Arc::new(cluster),
        scheduler: state.scheduler,
        rask_bin: state.rask_bin,
        log_dir: state.log_dir,
        api: scheduler_api(state.tls.as_deref(), Duration::from_secs(60))?,
        tls: state.tls,
    })
}

/// `scale NAME N`: submits worker jobs and waits until their workers joined (cancelling them if
/// they do not in time), or retires the newest workers (or `workers`) through the scheduler and
/// then cancels their jobs.
pub async fn scale(
    name: &str,
    n: usize,
    group: Option<&str>,
    workers: &[String],
    config: Option<&Path>,
    opts: &Options,
) -> Result<ScaleReport, ProviderError> {
    let b = attach(opts, name, config).await?;
    let group = group.unwrap_or(DEFAULT_GROUP);
    if !b.cluster.groups.contains_key(group) {
        return Err(ProviderError::Other(no_group(
            name,
            group,
            b.cluster.groups.keys(),
        )));
    }
    if let Some(a) = b.cluster.autoscaling.as_ref().filter(|a| a.group == group) {
        return Err(ProviderError::Other(format!(
            "{name}/{group} is autoscaled between {} and {} workers: its size follows the \
             scheduler's load; change `autoscaling:` in the config (and `down`/`up`), or scale \
             another group",
            a.settings.minimum, a.settings.maximum
        )));
    }
    let mut current = b
        .list_workers(group)
        .await
        .map_err(|e| ProviderError::Other(e.to_string()))?;
    current.retain(|w| !matches!(w.state, crate::backend::InstanceState::Failed { .. }));
    current.sort_by(|a, b| b.created.total_cmp(&a.created).then(b.name.cmp(&a.name)));
    let names: Vec<String> = current.into_iter().map(|w| w.name).collect();
    let mut report = ScaleReport::default();
    match scale_plan(name, group, &names, n, workers)? {
        ScalePlan::Add(k) => {
            let submitted = b.submit_workers(group, k).await?;
            if let Err(cause) = wait_joined(&b, &submitted, b.cluster.timeouts.workers, opts).await
            {
                let made = Made {
                    scheduler_pid: None,
                    jobs: submitted
                        .iter()
                        .map(|(j, _)| (j.id.clone(), j.name.clone()))
                        .collect(),
                };
                return Err(roll_back(&b.system, made, cause).await);
            }
            report.added = submitted.into_iter().flat_map(|(_, w)| w).collect();
        }
        ScalePlan::Retire(names) => {
            report.retired = b
                .retire_workers(group, &names)
                .await
                .map_err(|e| ProviderError::Other(e.to_string()))?;
        }
        ScalePlan::Nothing => {}
    }
    Ok(report)
}

/// One job in `status`.
#[derive(Clone, Debug)]
pub struct JobStatus {
    pub job: Job,
    /// Its workers the scheduler lists.
    pub joined: Vec<String>,
    pub workers: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub name: String,
    pub system: System,
    pub scheduler: SchedulerEndpoint,
    pub scheduler_runs_as: String,
    /// Why the scheduler could not be asked, if it could not.
    pub scheduler_error: Option<String>,
    pub keeper: String,
    pub jobs: Vec<JobStatus>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cluster {} ({})", self.name, self.system.name().as_str())?;
        writeln!(
            f,
            "scheduler: {} ({}), dashboard {}",
            self.scheduler.address, self.scheduler_runs_as, self.scheduler.dashboard
        )?;
        if let Some(e) = &self.scheduler_error {
            writeln!(f, "scheduler: {e}")?;
        }
        writeln!(f, "keeper:    {}", self.keeper)?;
        writeln!(
            f,
            "{:<10} {:<32} {:<10} {:<28} JOINED",
            "JOB", "NAME", "ROLE", "STATE"
        )?;
        for s in &self.jobs {
            let j = &s.job;
            let state = match &j.state {
                JobState::Pending { reason } => format!("pending ({reason})"),
                JobState::Running => "running".into(),
                JobState::Ending { state } => state.clone(),
            };
            let role = j
                .tag
                .group
                .clone()
                .unwrap_or_else(|| j.tag.role.as_str().to_owned());
            let joined = if j.tag.role == JobRole::Worker {
                format!("{}/{}", s.joined.len(), s.workers.len())
            } else {
                "-".into()
            };
            writeln!(
                f,
                "{:<10} {:<32} {:<10} {:<28} {joined}",
                j.id, j.name, role, state
            )?;
        }
        Ok(())
    }
}

/// `status NAME`: the scheduler, the keeper, and every job of the cluster with its state (the
/// batch system's reason for a pending one) and how many of its workers joined.
pub async fn status(
    name: &str,
    config: Option<&Path>,
    opts: &Options,
) -> Result<Status, ProviderError> {
    let b = attach(opts, name, config).await?;
    let state = read_state(opts, name)?;
    let (known, scheduler_error) = match b.api.get_workers(&b.scheduler.dashboard).await {
        Ok(ws) => (
            ws.into_iter().map(|w| w.name).collect::<BTreeSet<_>>(),
            None,
        ),
        Err(e) => (BTreeSet::new(), Some(e.to_string())),
    };
    let mut jobs = b.system.jobs(Some(name)).await?;
    jobs.sort_by(|a, b| (a.tag.role, &a.name).cmp(&(b.tag.role, &b.name)));
    let keeper = match state.keeper_pid {
        Some(p) if process_alive(p, &["keep", name]) => format!("process {p}"),
        Some(p) => {
            format!("process {p} is not running: start it again with `rask-operator keep {name} &`")
        }
        None => "none".into(),
    };
    Ok(Status {
        name: name.to_owned(),
        system: b.cluster.system,
        scheduler_runs_as: match (&state.scheduler_pid, &state.scheduler_job) {
            (Some(p), _)
                if process_alive(*p, &[&scheduler_file(opts, name).display().to_string()]) =>
            {
                format!("process {p} on this machine")
            }
            (Some(p), _) => format!("process {p}, which is not running"),
            (_, Some(j)) => format!("job {j}"),
            _ => "unknown".into(),
        },
        scheduler: b.scheduler.clone(),
        scheduler_error,
        keeper,
        jobs: jobs
            .into_iter()
            .map(|job| {
                let p = job
                    .tag
                    .group
                    .as_deref()
                    .and_then(|g| b.cluster.groups.get(g))
                    .map_or(1, |g| g.processes);
                let workers = if job.tag.role == JobRole::Worker {
                    BatchBackend::<Queue>::worker_names(&job.name, p)
                } else {
                    Vec::new()
                };
                JobStatus {
                    joined: workers
                        .iter()
                        .filter(|w| known.contains(*w))
                        .cloned()
                        .collect(),
                    workers,
                    job,
                }
            })
            .collect(),
    })
}

/// `logs NAME [WHAT]`: the scheduler's log (default), the keeper's (`keeper`), or a job's output
/// files (a job id, job name or worker name).
pub async fn logs(
    name: &str,
    what: Option<&str>,
    config: Option<&Path>,
    opts: &Options,
) -> Result<String, ProviderError> {
    let b = attach(opts, name, config).await?;
    let state = read_state(opts, name)?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| ProviderError::Read {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    match what {
        Some("keeper") => read(&state.log_dir.join(format!("{name}-keeper.log"))),
        None | Some("scheduler") => match &state.scheduler_job {
            Some(id) => {
                let probe = Job {
                    id: id.clone(),
                    name: format!("{name}-scheduler"),
                    tag: crate::providers::batch::Tag {
                        cluster: name.to_owned(),
                        role: JobRole::Scheduler,
                        group: None,
                    },
                    state: JobState::Running,
                    submitted: None,
                    started: None,
                };
                read_outputs(&b.system, &probe, &state.log_dir)
            }
            None => read(&state.log_dir.join(format!("{name}-scheduler.log"))),
        },
        Some(want) => {
            let jobs = b.system.jobs(Some(name)).await?;
            let p = |j: &Job| {
                j.tag
                    .group
                    .as_deref()
                    .and_then(|g| b.cluster.groups.get(g))
                    .map_or(1, |g| g.processes)
            };
            let found = jobs.iter().find(|j| {
                j.id == want
                    || j.name == want
                    || BatchBackend::<Queue>::worker_names(&j.name, p(j))
                        .iter()
                        .any(|w| w == want)
            });
            match found {
                Some(j) => read_outputs(&b.system, j, &state.log_dir),
                None => {
                    // A job that ended: find its output files by name or id in the log directory.
                    let files: Vec<PathBuf> = std::fs::read_dir(&state.log_dir)
                        .map(|d| {
                            d.flatten()
                                .map(|e| e.path())
                                .filter(|p| {
                                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                                        n.starts_with(&format!("{want}-"))
                                            || n.starts_with(&format!("{want}.o"))
                                            || n.contains(&format!("-{want}."))
                                            || n.ends_with(&format!(".o{want}"))
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    if files.is_empty() {
                        return Err(ProviderError::Other(format!(
                            "cluster {name} has no job or worker {want} (its jobs: {}; logs in {})",
                            jobs.iter()
                                .map(|j| format!("{} ({})", j.id, j.name))
                                .collect::<Vec<_>>()
                                .join(", "),
                            state.log_dir.display()
                        )));
                    }
                    let mut out = String::new();
                    for f in files {
                        out.push_str(&format!("==> {} <==\n{}", f.display(), read(&f)?));
                    }
                    Ok(out)
                }
            }
        }
    }
}

fn read_outputs(queue: &Queue, job: &Job, log_dir: &Path) -> Result<String, ProviderError> {
    let mut out = String::new();
    for f in queue.output_files(job, log_dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_else(|e| format!("({e})\n"));
        out.push_str(&format!("==> {} <==\n{text}", f.display()));
    }
    Ok(out)
}

/// `down NAME`: stops the keeper, cancels every job of the cluster and waits until they are
/// gone, stops a scheduler process, then removes the saved config and state.
pub async fn down(
    name: &str,
    config: Option<&Path>,
    opts: &Options,
) -> Result<Vec<String>, ProviderError> {
    let cluster = find_batch(opts, name, config)?;
    let queue = Queue::for_system(cluster.system)?;
    let state = read_state(opts, name).ok();
    let mut deleted = Vec::new();
    if let Some(pid) = state.as_ref().and_then(|s| s.keeper_pid)
        && stop_process(pid, &["keep", name], Duration::from_secs(10)).await
    {
        deleted.push(format!("keeper process {pid}"));
    }
    let jobs = queue.jobs(Some(name)).await?;
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    queue.cancel(&ids).await?;
    let start = Instant::now();
    loop {
        let left = queue.jobs(Some(name)).await?;
        if left.is_empty() {
            break;
        }
        if start.elapsed() > cluster.timeouts.delete {
            return Err(ProviderError::Jobs {
                what: format!("cancelled jobs of {name} did not end"),
                after: start.elapsed(),
                jobs: left
                    .iter()
                    .map(|j| format!("  job {} ({}): {:?}", j.id, j.name, j.state))
                    .collect(),
            });
        }
        tokio::time::sleep(opts.poll).await;
    }
    deleted.extend(jobs.iter().map(|j| format!("job {} ({})", j.id, j.name)));
    if let Some(pid) = state.as_ref().and_then(|s| s.scheduler_pid)
        && stop_process(
            pid,
            &[&scheduler_file(opts, name).display().to_string()],
            Duration::from_secs(10),
        )
        .await
    {
        deleted.push(format!("scheduler process {pid}"));
    }
    let tls = state
        .and_then(|s| s.tls)
        .unwrap_or_else(|| certs::dir(&opts.state_dir, name));
    if tls.exists() {
        certs::remove(&tls)?;
        deleted.push(format!("certificates and keys in {}", tls.display()));
    }
    let _ = std::fs::remove_file(scheduler_file(opts, name));
    let _ = std::fs::remove_file(state_path(opts, name));
    let _ = std::fs::remove_file(saved_path(opts, name));
    Ok(deleted)
}

/// What `sweep` found for one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    pub cluster: String,
    pub deleted: bool,
    /// `job ID (NAME)`.
    pub jobs: Vec<String>,
    pub why: String,
}

/// `sweep`: on the batch systems of `config` or of the saved clusters, cancels the jobs of
/// clusters that are not live — no scheduler answering at a saved state's address, no running
/// scheduler job — and whose newest job is older than `grace`.
pub async fn sweep(
    config: Option<&Path>,
    grace: Duration,
    opts: &Options,
) -> Result<Vec<Swept>, ProviderError> {
    let mut systems: Vec<System> = Vec::new();
    let mut add = |s: System| {
        if s != System::Pbs && !systems.contains(&s) {
            systems.push(s);
        }
    };
    match config {
        Some(path) => add(load_batch(path)?.0.system),
        None => {
            for c in saved_clusters(opts)? {
                if let ClusterConfig::Batch(c) = c {
                    add(c.system);
                }
            }
        }
    }
    let api = SchedulerApi::new(Duration::from_secs(5));
    let mut out = Vec::new();
    for system in systems {
        let queue = Queue::for_system(system)?;
        let mut by_cluster: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for j in queue.jobs(None).await? {
            by_cluster.entry(j.tag.cluster.clone()).or_default().push(j);
        }
        for (cluster, jobs) in by_cluster {
            // The state `up` leaves, or the scheduler file (an `up` still waiting for its
            // workers has not written the state yet).
            let state = read_state(opts, &cluster).ok();
            let endpoint = state
                .as_ref()
                .map(|s| s.scheduler.clone())
                .or_else(|| read_scheduler_file(&scheduler_file(opts, &cluster)));
            // A TLS scheduler answers only the operator's certificate.
            let tls = state
                .and_then(|s| s.tls)
                .or_else(|| Some(certs::dir(&opts.state_dir, &cluster)).filter(|d| d.exists()));
            let api = match tls {
                Some(dir) => certs::api(&dir, Role::Operator, api.timeout()).unwrap_or(api.clone()),
                None => api.clone(),
            };
            let answering = match endpoint {
                Some(e) => api.get_workers(&e.dashboard).await.is_ok(),
                None => false,
            };
            let scheduler_job = jobs
                .iter()
                .any(|j| j.tag.role == JobRole::Scheduler && j.state == JobState::Running);
            let newest = jobs
                .iter()
                .filter_map(|j| j.submitted.or(j.started))
                .fold(0.0f64, f64::max);
            let young = now() - newest < grace.as_secs_f64();
            let names: Vec<String> = jobs
                .iter()
                .map(|j| format!("job {} ({})", j.id, j.name))
                .collect();
            let (deleted, why) = if answering {
                (false, "its scheduler answers".to_owned())
            } else if scheduler_job {
                (false, "its scheduler's job is running".to_owned())
            } else if young {
                (
                    false,
                    format!(
                        "not live, but submitted less than {grace:?} ago (an `up` may be running)"
                    ),
                )
            } else {
                let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
                queue.cancel(&ids).await?;
                (true, "no scheduler answers for it".to_owned())
            };
            out.push(Swept {
                cluster,
                deleted,
                jobs: names,
                why,
            });
        }
    }
    Ok(out)
}

/// `keep NAME`: the keeper loop (see [`crate::providers::batch::keeper`]) until `stop`.
pub async fn keep(
    name: &str,
    interval: Duration,
    opts: &Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProviderError> {
    let backend = Arc::new(attach(opts, name, None).await?);
    tracing::info!(
        cluster = %name,
        scheduler = %backend.scheduler.dashboard,
        "keeping the cluster: lifetimes, pending jobs{}",
        if backend.cluster.autoscaling.is_some() { ", autoscaling" } else { "" }
    );
    Keeper::new(backend, interval).run(stop).await
}

/// `job-script FILE`: the job script of a worker of `group` (or of the scheduler's job), as `up`
/// would submit it; the scheduler's address is the running cluster's when it is up, else
/// `scheduler_options.host:port` (default this machine's name, port 8786), unless given.
pub fn job_script(
    path: &Path,
    group: Option<&str>,
    role: JobRole,
    job_name: Option<&str>,
    scheduler: Option<&str>,
    opts: &Options,
) -> Result<String, ProviderError> {
    let (cluster, _) = load_batch(path)?;
    let group = group.unwrap_or(DEFAULT_GROUP);
    if !cluster.groups.contains_key(group) {
        return Err(ProviderError::Other(format!(
            "{}: {}",
            path.display(),
            no_group(&cluster.name, group, cluster.groups.keys())
        )));
    }
    let rask = rask_bin(opts, &cluster).unwrap_or_else(|_| "rask".into());
    let logs = log_dir(opts, &cluster).display().to_string();
    let tls = cluster.tls.then(|| {
        certs::dir(&opts.state_dir, &cluster.name)
            .display()
            .to_string()
    });
    if role == JobRole::Scheduler {
        return Ok(script::scheduler(&SchedulerJob {
            cluster: &cluster,
            rask_bin: &rask,
            log_dir: &logs,
            scheduler_file: &scheduler_file(opts, &cluster.name).display().to_string(),
            tls: tls.as_deref(),
        }));
    }
    let address = match scheduler {
        Some(a) => a.to_owned(),
        None => match read_state(opts, &cluster.name) {
            Ok(s) => s.scheduler.address,
            Err(_) => {
                let host = cluster.scheduler.host.clone().unwrap_or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .map(|h| h.trim().to_owned())
                        .ok()
                        .filter(|h| !h.is_empty())
                        .unwrap_or_else(|| "localhost".into())
                });
                let scheme = if cluster.tls { "tls" } else { "tcp" };
                format!(
                    "{scheme}://{host}:{}",
                    cluster.scheduler.port.unwrap_or(8786)
                )
            }
        },
    };
    let name = job_name
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{}-{group}-{}", cluster.name, crate::providers::suffix()));
    Ok(script::worker(&WorkerJob {
        cluster: &cluster,
        group,
        name: &name,
        scheduler: &address,
        rask_bin: &rask,
        log_dir: &logs,
        tls: tls.as_deref(),
    }))
}
