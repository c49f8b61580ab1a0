//! Batch jobs as a [`Backend`]: one generic implementation over a [`BatchSystem`] (SLURM in
//! [`slurm`], SGE in [`sge`]) that only submits a job script, lists the user's jobs and cancels
//! jobs. Every job is named for its cluster and group and carries a tag (SLURM's comment, SGE's
//! context) that says so, which `sweep` finds after a crash; its script is rendered by
//! [`script`], a pure function of the validated cluster. Each worker job runs `processes`
//! `rask worker`s named after the job (`{job}` alone, or `{job}-{i}` with several), so a
//! retired worker's name names the job to cancel.

pub mod certs;
pub mod keeper;
pub mod script;
pub mod sge;
pub mod slurm;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{
    Backend, BackendError, InstanceState, Retirement, WorkerInstance, no_group, retire_then_remove,
};
use crate::providers::config::batch::{BatchCluster, System};
use crate::providers::{ProviderError, suffix};
use crate::scheduler_api::SchedulerApi;

/// What a job is to its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum JobRole {
    Scheduler,
    Worker,
}

impl JobRole {
    pub fn as_str(self) -> &'static str {
        match self {
            JobRole::Scheduler => "scheduler",
            JobRole::Worker => "worker",
        }
    }
}

/// A job's cluster, role and group, as its tag says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tag {
    pub cluster: String,
    pub role: JobRole,
    pub group: Option<String>,
}

impl Tag {
    /// `rask:cluster=NAME,role=worker,group=GROUP` (SLURM's `--comment`).
    pub fn comment(&self) -> String {
        let mut s = format!("rask:cluster={},role={}", self.cluster, self.role.as_str());
        if let Some(g) = &self.group {
            s.push_str(&format!(",group={g}"));
        }
        s
    }

    /// Reads [`Tag::comment`] back; anything else is not rask's.
    pub fn parse_comment(text: &str) -> Option<Tag> {
        let fields = text.trim().strip_prefix("rask:")?;
        let mut cluster = None;
        let mut role = None;
        let mut group = None;
        for kv in fields.split(',') {
            match kv.split_once('=')? {
                ("cluster", v) => cluster = Some(v.to_owned()),
                ("role", "scheduler") => role = Some(JobRole::Scheduler),
                ("role", "worker") => role = Some(JobRole::Worker),
                ("group", v) => group = Some(v.to_owned()),
                _ => return None,
            }
        }
        Some(Tag {
            cluster: cluster.filter(|c| !c.is_empty())?,
            role: role?,
            group,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Waiting in the queue, with the batch system's reason (`Resources`, `Priority`,
    /// `JobHeldUser`, `BeginTime`, ...).
    Pending {
        reason: String,
    },
    Running,
    /// Being cancelled, completing, or in an error state; not capacity any more.
    Ending {
        state: String,
    },
}

/// One of rask's jobs, as the batch system lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub tag: Tag,
    pub state: JobState,
    /// Seconds since the epoch.
    pub submitted: Option<f64>,
    pub started: Option<f64>,
}

/// One batch system's commands. Implementations bound every command with a timeout and report
/// a failed command with its exit code and the first lines it wrote on stderr.
pub trait BatchSystem: Send + Sync + 'static {
    fn system(&self) -> System;

    /// Submits a job script; returns the job's id.
    fn submit(&self, script: &str) -> impl Future<Output = Result<String, ProviderError>> + Send;

    /// The user's jobs tagged by rask (of `cluster`, or of every cluster) that have not ended.
    fn jobs(
        &self,
        cluster: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Job>, ProviderError>> + Send;

    /// Cancels jobs; jobs already gone are not an error.
    fn cancel(&self, ids: &[String]) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// How a job that left the queue ended (`FAILED (NonZeroExitCode), exit code 3:0`), from the
    /// batch system's accounting or its memory of recent jobs; `None` when it no longer knows.
    fn ended(&self, id: &str) -> impl Future<Output = Option<String>> + Send;

    /// The files a job writes its output to.
    fn output_files(&self, job: &Job, log_dir: &std::path::Path) -> Vec<PathBuf>;
}

/// Runs a batch command (`sbatch`, `squeue`, `qsub`, ...) with `input` on stdin, bounded by
/// `timeout`; its stdout, or an error with its exit code and stderr's first lines. Its full
/// stderr goes to the debug log.
pub async fn run(
    system: &'static str,
    program: &str,
    args: &[&str],
    envs: &[(&str, &str)],
    input: Option<&str>,
    timeout: Duration,
) -> Result<String, ProviderError> {
    use tokio::io::AsyncWriteExt;
    let command = format!("{program} {}", args.join(" "));
    let failed = |code: Option<i32>, message: String| ProviderError::Command {
        system,
        command: command.clone(),
        code,
        message,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .envs(envs.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                format!("{program} is not on PATH: is this a {system} login node?")
            } else {
                e.to_string()
            };
            failed(None, hint)
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .await
            .map_err(|e| failed(None, format!("cannot write its input: {e}")))?;
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| failed(None, format!("no answer within {timeout:?}")))?
        .map_err(|e| failed(None, e.to_string()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        tracing::debug!(%command, stderr = %stderr, "batch command failed");
        let first: Vec<&str> = stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(3)
            .collect();
        let message = if first.is_empty() {
            "it printed nothing on stderr".to_owned()
        } else {
            first.join(" / ")
        };
        return Err(failed(out.status.code(), message));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How long one batch command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a cluster's scheduler is: its TCP address (for workers and clients) and its HTTP API.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerEndpoint {
    pub address: String,
    pub dashboard: String,
}

/// A running cluster on a batch queue.
pub struct BatchBackend<S: BatchSystem> {
    pub system: Arc<S>,
    pub cluster: Arc<BatchCluster>,
    pub scheduler: SchedulerEndpoint,
    /// The `rask` binary the jobs run.
    pub rask_bin: String,
    /// Where the jobs write their output.
    pub log_dir: PathBuf,
    /// The directory of the cluster's certificates, when it uses TLS.
    pub tls: Option<PathBuf>,
    /// The scheduler's HTTP API, presenting the operator's certificate with TLS.
    pub api: SchedulerApi,
}

impl<S: BatchSystem> BatchBackend<S> {
    fn processes(&self, group: &str) -> u32 {
        self.cluster.groups.get(group).map_or(1, |g| g.processes)
    }

    /// The workers a job runs: its name alone, or `{name}-{i}` with several processes.
    pub fn worker_names(job_name: &str, processes: u32) -> Vec<String> {
        if processes <= 1 {
            vec![job_name.to_owned()]
        } else {
            (0..processes).map(|i| format!("{job_name}-{i}")).collect()
        }
    }

    /// The cluster's worker jobs that have not ended.
    pub async fn worker_jobs(&self) -> Result<Vec<Job>, ProviderError> {
        Ok(self
            .system
            .jobs(Some(&self.cluster.name))
            .await?
            .into_iter()
            .filter(|j| j.tag.role == JobRole::Worker)
            .collect())
    }

    /// Submits jobs for `n` more workers of `group` (whole jobs: `processes` workers each);
    /// returns the new workers' names. Jobs submitted before a failure are cancelled again.
    pub async fn submit_workers(
        &self,
        group: &str,
        n: usize,
    ) -> Result<Vec<(Job, Vec<String>)>, ProviderError> {
        let g = self.cluster.groups.get(group).ok_or_else(|| {
            ProviderError::Other(no_group(
                &self.cluster.name,
                group,
                self.cluster.groups.keys(),
            ))
        })?;
        let jobs = n.div_ceil(g.processes.max(1) as usize);
        let mut out: Vec<(Job, Vec<String>)> = Vec::with_capacity(jobs);
        let tls = self.tls.as_ref().map(|t| t.display().to_string());
        for _ in 0..jobs {
            let name = format!("{}-{group}-{}", self.cluster.name, suffix());
            let text = script::worker(&script::WorkerJob {
                cluster: &self.cluster,
                group,
                name: &name,
                scheduler: &self.scheduler.address,
                rask_bin: &self.rask_bin,
                log_dir: &self.log_dir.display().to_string(),
                tls: tls.as_deref(),
            });
            match self.system.submit(&text).await {
                Ok(id) => {
                    let workers = Self::worker_names(&name, g.processes);
                    out.push((
                        Job {
                            id,
                            name,
                            tag: Tag {
                                cluster: self.cluster.name.clone(),
                                role: JobRole::Worker,
                                group: Some(group.to_owned()),
                            },
                            state: JobState::Pending {
                                reason: "submitted".into(),
                            },
                            submitted: Some(crate::clock::now()),
                            started: None,
                        },
                        workers,
                    ));
                }
                Err(e) => {
                    let ids: Vec<String> = out.iter().map(|(j, _)| j.id.clone()).collect();
                    if !ids.is_empty() {
                        let _ = self.system.cancel(&ids).await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(out)
    }

    /// Cancels the jobs that run the named workers (every worker of each job).
    pub async fn cancel_workers(&self, names: &[String]) -> Result<Vec<Job>, ProviderError> {
        let doomed: Vec<Job> = self
            .worker_jobs()
            .await?
            .into_iter()
            .filter(|j| {
                let g = j.tag.group.as_deref().unwrap_or_default();
                Self::worker_names(&j.name, self.processes(g))
                    .iter()
                    .any(|w| names.contains(w))
            })
            .collect();
        let ids: Vec<String> = doomed.iter().map(|j| j.id.clone()).collect();
        if !ids.is_empty() {
            self.system.cancel(&ids).await?;
        }
        Ok(doomed)
    }

    /// Every worker name of the jobs that run any of `names`: a job's workers leave together.
    async fn whole_jobs(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Vec<String>, ProviderError> {
        let p = self.processes(group);
        let mut out = BTreeSet::new();
        for j in self.worker_jobs().await? {
            if j.tag.group.as_deref() != Some(group) {
                continue;
            }
            let workers = Self::worker_names(&j.name, p);
            if workers.iter().any(|w| names.contains(w)) {
                out.extend(workers);
            }
        }
        Ok(out.into_iter().collect())
    }
}

fn failed(e: ProviderError) -> BackendError {
    BackendError::Failed {
        backend: "batch",
        action: "manage worker jobs".into(),
        reason: e.to_string(),
    }
}

impl<S: BatchSystem> Backend for BatchBackend<S> {
    fn scheduler_url(&self) -> String {
        self.scheduler.dashboard.clone()
    }

    async fn list_workers(&self, group: &str) -> Result<Vec<WorkerInstance>, BackendError> {
        let p = self.processes(group);
        let mut out = Vec::new();
        for j in self.worker_jobs().await.map_err(failed)? {
            if j.tag.group.as_deref() != Some(group) {
                continue;
            }
            let state = match &j.state {
                JobState::Pending { .. } => InstanceState::Starting,
                JobState::Running => InstanceState::Running,
                JobState::Ending { state } => InstanceState::Failed {
                    reason: format!("job {} is {state}", j.id),
                },
            };
            for name in Self::worker_names(&j.name, p) {
                out.push(WorkerInstance {
                    name,
                    created: j.submitted.unwrap_or(0.0),
                    state: state.clone(),
                });
            }
        }
        Ok(out)
    }

    async fn add_workers(&self, group: &str, n: usize) -> Result<Vec<String>, BackendError> {
        Ok(self
            .submit_workers(group, n)
            .await
            .map_err(failed)?
            .into_iter()
            .flat_map(|(_, w)| w)
            .collect())
    }

    async fn retire_workers(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Retirement, BackendError> {
        let ours = self.whole_jobs(group, names).await.map_err(failed)?;
        retire_then_remove(
            &self.api,
            &self.scheduler.dashboard,
            &ours,
            |retired| async move {
                // Only jobs all of whose workers the scheduler retired are cancelled.
                let retired: BTreeSet<String> = retired.into_iter().collect();
                let p = self.processes(group);
                let mut by_job: BTreeMap<String, bool> = BTreeMap::new();
                for j in self.worker_jobs().await.map_err(failed)? {
                    let workers = Self::worker_names(&j.name, p);
                    if workers.iter().any(|w| retired.contains(w)) {
                        by_job.insert(j.name.clone(), workers.iter().all(|w| retired.contains(w)));
                    }
                }
                let done: Vec<String> = by_job
                    .into_iter()
                    .filter(|(_, all)| *all)
                    .flat_map(|(job, _)| Self::worker_names(&job, p))
                    .collect();
                self.cancel_workers(&done).await.map_err(failed)?;
                Ok(())
            },
        )
        .await
    }

    async fn delete_cluster(&self) -> Result<(), BackendError> {
        let ids: Vec<String> = self
            .system
            .jobs(Some(&self.cluster.name))
            .await
            .map_err(failed)?
            .into_iter()
            .map(|j| j.id)
            .collect();
        if !ids.is_empty() {
            self.system.cancel(&ids).await.map_err(failed)?;
        }
        Ok(())
    }
}

/// Connects to the batch system a cluster names: its commands must be on `PATH`.
pub enum Queue {
    Slurm(slurm::Slurm),
    Sge(sge::Sge),
}

impl Queue {
    pub fn for_system(system: System) -> Result<Queue, ProviderError> {
        match system {
            System::Slurm => Ok(Queue::Slurm(slurm::Slurm)),
            System::Sge => Ok(Queue::Sge(sge::Sge)),
            System::Pbs => Err(ProviderError::Other(
                "provider pbs makes job scripts only (`rask-operator job-script FILE`): rask is \
                 not tested against a PBS server, so it does not submit to one"
                    .into(),
            )),
        }
    }
}

impl BatchSystem for Queue {
    fn system(&self) -> System {
        match self {
            Queue::Slurm(s) => s.system(),
            Queue::Sge(s) => s.system(),
        }
    }
    async fn submit(&self, script: &str) -> Result<String, ProviderError> {
        match self {
            Queue::Slurm(s) => s.submit(script).await,
            Queue::Sge(s) => s.submit(script).await,
        }
    }
    async fn jobs(&self, cluster: Option<&str>) -> Result<Vec<Job>, ProviderError> {
        match self {
            Queue::Slurm(s) => s.jobs(cluster).await,
            Queue::Sge(s) => s.jobs(cluster).await,
        }
    }
    async fn cancel(&self, ids: &[String]) -> Result<(), ProviderError> {
        match self {
            Queue::Slurm(s) => s.cancel(ids).await,
            Queue::Sge(s) => s.cancel(ids).await,
        }
    }
    async fn ended(&self, id: &str) -> Option<String> {
        match self {
            Queue::Slurm(s) => s.ended(id).await,
            Queue::Sge(s) => s.ended(id).await,
        }
    }
    fn output_files(&self, job: &Job, log_dir: &std::path::Path) -> Vec<PathBuf> {
        match self {
            Queue::Slurm(s) => s.output_files(job, log_dir),
            Queue::Sge(s) => s.output_files(job, log_dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_read_back_and_foreign_comments_are_not_ours() {
        let t = Tag {
            cluster: "hpc".into(),
            role: JobRole::Worker,
            group: Some("big".into()),
        };
        assert_eq!(t.comment(), "rask:cluster=hpc,role=worker,group=big");
        assert_eq!(Tag::parse_comment(&t.comment()), Some(t));
        let s = Tag {
            cluster: "hpc".into(),
            role: JobRole::Scheduler,
            group: None,
        };
        assert_eq!(Tag::parse_comment(&s.comment()), Some(s));
        for foreign in [
            "(null)",
            "",
            "my analysis",
            "rask:cluster=,role=worker",
            "rask:role=x",
        ] {
            assert_eq!(Tag::parse_comment(foreign), None, "{foreign}");
        }
    }
}
