//! Stage 5: what the cluster's status says, from what its pods and worker groups are doing.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use super::certs::Certificates;
use super::validate::ValidatedCluster;
use crate::conditions::condition;
use crate::context::Context;
use crate::crd::{ClusterPhase, DaskCluster, DaskClusterStatus, DaskWorkerGroup};
use crate::error::{Error, Invalid};
use crate::names::{self, LABEL_CLUSTER, LABEL_COMPONENT, LABEL_WORKER_GROUP};

/// The condition that says whether the cluster's certificates are usable.
pub const CERTIFICATES: &str = "CertificatesReady";

/// Whether a pod is running and passes its readiness checks.
pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// What was observed, for the pure status computation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub scheduler_exists: bool,
    pub scheduler_ready: bool,
    pub scheduler_phase: Option<String>,
    /// Worker pods of the default group that exist.
    pub default_group_pods: i32,
    pub ready_workers: i32,
    pub desired_workers: i32,
}

pub async fn observe(ctx: &Context, v: &ValidatedCluster) -> Result<Observed, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let groups: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let scheduler = pods.get_opt(&names::scheduler_name(&v.name)).await?;
    let workers = pods
        .list(&ListParams::default().labels(&format!(
            "{LABEL_CLUSTER}={},{LABEL_COMPONENT}=worker",
            v.name
        )))
        .await?;
    let default_group = names::default_worker_group(&v.name);
    let live = workers
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    let (mut default_group_pods, mut ready_workers) = (0, 0);
    for p in live {
        if p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_WORKER_GROUP))
            == Some(&default_group)
        {
            default_group_pods += 1;
        }
        if is_ready(p) {
            ready_workers += 1;
        }
    }
    // Extra groups get the cluster's label when adopted; `spec.cluster` is what joins them.
    let desired_workers = groups
        .list(&ListParams::default().labels(&format!("{LABEL_CLUSTER}={}", v.name)))
        .await?
        .items
        .iter()
        .filter(|g| g.spec.cluster == v.name)
        .map(|g| g.spec.worker.replicas.max(0))
        .sum();
    Ok(Observed {
        scheduler_exists: scheduler.is_some(),
        scheduler_ready: scheduler.as_ref().is_some_and(is_ready),
        scheduler_phase: scheduler.and_then(|p| p.status.and_then(|s| s.phase)),
        default_group_pods,
        ready_workers,
        desired_workers,
    })
}

/// The status of a valid cluster.
pub fn status(
    previous: &DaskClusterStatus,
    v: &ValidatedCluster,
    o: &Observed,
    certificates: &Certificates,
) -> DaskClusterStatus {
    let g = v.generation;
    let prev = &previous.conditions;
    let scheduler = match (o.scheduler_exists, o.scheduler_ready) {
        (_, true) => condition(
            prev,
            "SchedulerReady",
            true,
            "Ready",
            "the scheduler pod is ready".into(),
            g,
        ),
        (true, false) => {
            let phase = o
                .scheduler_phase
                .clone()
                .unwrap_or_else(|| "Pending".into());
            condition(
                prev,
                "SchedulerReady",
                false,
                "NotReady",
                format!("the scheduler pod is {phase}"),
                g,
            )
        }
        (false, _) => condition(
            prev,
            "SchedulerReady",
            false,
            "Creating",
            "the scheduler pod is being created".into(),
            g,
        ),
    };
    let workers_ok = o.ready_workers >= o.desired_workers;
    let workers = condition(
        prev,
        "WorkersReady",
        workers_ok,
        if workers_ok { "AllReady" } else { "Scaling" },
        format!("{} of {} workers ready", o.ready_workers, o.desired_workers),
        g,
    );
    let valid = condition(prev, "Valid", true, "Valid", "the spec is valid".into(), g);
    let mut conditions = vec![valid, scheduler, workers];
    let secret = super::certs::secret_name(&v.name);
    let certs = match certificates {
        Certificates::OptedOut => None,
        Certificates::Ready { .. } => Some((true, "Ready", format!("Secret {secret}"))),
        Certificates::Malformed(why) => Some((false, "Malformed", why.clone())),
    };
    if let Some((ok, reason, message)) = certs {
        conditions.push(condition(prev, CERTIFICATES, ok, reason, message, g));
    }
    DaskClusterStatus {
        phase: Some(if o.scheduler_ready {
            ClusterPhase::Running
        } else {
            ClusterPhase::Pending
        }),
        replicas: o.default_group_pods,
        ready_workers: o.ready_workers,
        desired_workers: o.desired_workers,
        scheduler_address: Some(v.scheduler_address.clone()),
        observed_generation: Some(g),
        conditions,
    }
}

/// The status of a cluster seen for the first time, before its objects are made: dask-kubernetes'
/// `Created`, then `Pending` once they exist, `Running` once the scheduler is ready.
pub fn created_status(c: &DaskCluster) -> DaskClusterStatus {
    DaskClusterStatus {
        phase: Some(ClusterPhase::Created),
        observed_generation: c.metadata.generation,
        ..DaskClusterStatus::default()
    }
}

/// The status of a cluster whose spec cannot be reconciled.
pub fn invalid_status(
    previous: &DaskClusterStatus,
    c: &DaskCluster,
    invalid: &Invalid,
) -> DaskClusterStatus {
    let g = c.metadata.generation.unwrap_or(0);
    DaskClusterStatus {
        phase: Some(ClusterPhase::Failed),
        observed_generation: Some(g),
        conditions: vec![condition(
            &previous.conditions,
            "Valid",
            false,
            "InvalidSpec",
            invalid.problems.join("; "),
            g,
        )],
        ..previous.clone()
    }
}
