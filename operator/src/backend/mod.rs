//! Where workers live. One trait — add workers, retire named workers, list them, delete the
//! cluster — implemented here for local processes and Kubernetes pods, and for cloud VMs and
//! batch jobs in [`crate::providers`]. The autoscaler ([`crate::autoscaler::driver`]) drives any
//! of them the same way.

use std::future::Future;

use crate::scheduler_api::{SchedulerApi, SchedulerApiError};

pub mod kubernetes;
pub mod local;

/// One worker as its backend sees it: a process, a pod or a VM.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInstance {
    /// The worker's name; the scheduler knows the worker by the same name (`DASK_WORKER_NAME`).
    pub name: String,
    /// Seconds since the epoch when it was created, to retire the newest first.
    pub created: f64,
    pub state: InstanceState,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Created, not yet known to be running (booting VM, pending pod, process starting).
    Starting,
    Running,
    /// Gone or failing; the backend will not count it as capacity.
    Failed {
        reason: String,
    },
}

/// What a retirement did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retirement {
    /// Workers retired (their results moved elsewhere) and being removed.
    pub removed: Vec<String>,
    /// Workers the scheduler would not retire (their results had nowhere to go); still running.
    pub kept: Vec<String>,
}

/// Why a backend could not do what was asked. Messages name the cluster, worker or resource.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Scheduler(#[from] SchedulerApiError),
    #[error("{backend}: cannot {action}: {reason}")]
    Failed {
        backend: &'static str,
        action: String,
        reason: String,
    },
    #[error("{backend}: {what} did not happen within {after:?}")]
    Timeout {
        backend: &'static str,
        what: String,
        after: std::time::Duration,
    },
}

/// A place that runs one cluster's scheduler and workers.
///
/// Implementations never remove a worker that may hold results without the scheduler having
/// retired it first: [`retire_then_remove`] is the shared way to do that.
pub trait Backend: Send + Sync {
    /// The scheduler's HTTP API base URL (`http://host:8787`).
    fn scheduler_url(&self) -> String;

    /// Workers of `group` that exist, including ones starting.
    fn list_workers(
        &self,
        group: &str,
    ) -> impl Future<Output = Result<Vec<WorkerInstance>, BackendError>> + Send;

    /// Starts `n` more workers in `group`; returns their names.
    fn add_workers(
        &self,
        group: &str,
        n: usize,
    ) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;

    /// Retires the named workers of `group` through the scheduler, then removes those it retired.
    fn retire_workers(
        &self,
        group: &str,
        names: &[String],
    ) -> impl Future<Output = Result<Retirement, BackendError>> + Send;

    /// Removes the scheduler, every worker and everything else the cluster owns. Idempotent.
    fn delete_cluster(&self) -> impl Future<Output = Result<(), BackendError>> + Send;
}

/// Asks the scheduler at `base` to retire `names`, then removes exactly the retired ones with
/// `remove`. Workers the scheduler does not know hold nothing and are removed too.
pub async fn retire_then_remove<F, Fut>(
    api: &SchedulerApi,
    base: &str,
    names: &[String],
    remove: F,
) -> Result<Retirement, BackendError>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<(), BackendError>>,
{
    if names.is_empty() {
        return Ok(Retirement::default());
    }
    let (retired, kept) = api.retire_by_name(base, names).await?;
    if !retired.is_empty() {
        remove(retired.clone()).await?;
    }
    Ok(Retirement {
        removed: retired,
        kept,
    })
}

/// The last `lines` lines of a text (a log's end, for an error message).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `cluster C has no worker group G (it has: a, b)`.
pub fn no_group<'a>(
    cluster: &str,
    group: &str,
    groups: impl Iterator<Item = &'a String>,
) -> String {
    format!(
        "cluster {cluster} has no worker group {group} (it has: {})",
        groups.cloned().collect::<Vec<_>>().join(", ")
    )
}
