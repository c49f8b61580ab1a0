//! Stage 2: a DaskJob's spec checked and settled into everything the builders and the plan need.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::cluster::validate::check_spec;
use crate::crd::{DaskClusterSpec, DaskJob};
use crate::error::Invalid;
use crate::names;
use crate::template::{check_pod_spec, inherited_annotations, inherited_labels, owner_ref};

/// A DaskJob whose names and defaults are settled; the builders and the plan read only this.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedJob {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    /// The job as controller of its cluster and runner pods.
    pub owner: OwnerReference,
    /// Labels and annotations children inherit.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The cluster made for the job: named as the job, as dask-kubernetes names it.
    pub cluster_name: String,
    pub cluster_spec: DaskClusterSpec,
    pub cluster_labels: BTreeMap<String, String>,
    pub cluster_annotations: BTreeMap<String, String>,
    /// The runner pod's spec, `restartPolicy` settled: `Never` (the default: a failed runner is
    /// replaced by a new pod) or `OnFailure` (the kubelet restarts it in place).
    pub runner_spec: PodSpec,
    pub runner_labels: BTreeMap<String, String>,
    pub runner_annotations: BTreeMap<String, String>,
    pub scheduler_address: String,
    /// Failed runs the job may have before it fails: `backoffLimit` + 1 (runner pods that
    /// failed with `Never`, restarts of the runner's container with `OnFailure`).
    pub max_attempts: u32,
    /// From the job's creation.
    pub deadline: Option<Duration>,
    pub ttl_after_finished: Option<Duration>,
    pub keep_cluster_on_failure: bool,
    /// `metadata.creationTimestamp`; the deadline counts from it.
    pub created: Option<Timestamp>,
    /// The job's cluster has certificates (see [`crate::tls::wanted`]; its annotations are the
    /// job's and `spec.cluster.metadata`'s).
    pub certificates: bool,
    /// The runner's rask containers use the users' certificate: the operator's `--cluster-tls`,
    /// set by the reconcile ([`ValidatedJob::with_pod_tls`]).
    pub pod_tls: bool,
}

impl ValidatedJob {
    /// Turns TLS in the runner's rask containers on or off: on only when the job's cluster has
    /// certificates and its scheduler runs rask's image (as for the cluster itself, see
    /// [`crate::cluster::reach::uses_tls`]).
    pub fn with_pod_tls(mut self, on: bool) -> Self {
        self.pod_tls = on
            && self.certificates
            && self
                .cluster_spec
                .scheduler
                .spec
                .containers
                .first()
                .is_some_and(crate::local::plan::is_rask);
        self
    }
}

pub fn validate(j: &DaskJob) -> Result<ValidatedJob, Invalid> {
    let name = j.name_any();
    let mut problems = Vec::new();
    if name.len() > names::MAX_CLUSTER_NAME {
        problems.push(format!(
            "metadata.name: {} characters, at most {} allowed (the job's cluster is named after it)",
            name.len(),
            names::MAX_CLUSTER_NAME
        ));
    }
    check_pod_spec("spec.job.spec", &j.spec.job.spec, &mut problems);
    match j.spec.job.spec.restart_policy.as_deref() {
        None | Some("Never" | "OnFailure") => {}
        Some(other) => problems.push(format!(
            "spec.job.spec.restartPolicy: {other:?} is not supported: \"Never\" (a failed runner is replaced by a new pod) or \"OnFailure\" (it is restarted in place), each up to spec.backoffLimit times; a runner restarted after it succeeded would never end"
        )),
    }
    check_spec("spec.cluster.spec", &j.spec.cluster.spec, &mut problems);
    let backoff_limit = j.spec.backoff_limit.unwrap_or(0);
    if backoff_limit < 0 {
        problems.push(format!("spec.backoffLimit: {backoff_limit} is negative"));
    }
    let deadline = match j.spec.active_deadline_seconds {
        Some(s) if s <= 0 => {
            problems.push(format!("spec.activeDeadlineSeconds: {s} is not positive"));
            None
        }
        s => s.map(|s| Duration::from_secs(s.unsigned_abs())),
    };
    let ttl_after_finished = match j.spec.ttl_seconds_after_finished {
        Some(s) if s < 0 => {
            problems.push(format!("spec.ttlSecondsAfterFinished: {s} is negative"));
            None
        }
        s => s.map(|s| Duration::from_secs(s.unsigned_abs())),
    };
    let owner = owner_ref(j);
    if owner.is_none() {
        problems.push("metadata.uid: missing (the object was not read from the API server)".into());
    }
    let mut made_annotations = inherited_annotations(j);
    if let Some(a) = j
        .spec
        .cluster
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.as_ref())
    {
        made_annotations.extend(a.clone());
    }
    let certificates = crate::tls::wanted(&made_annotations).unwrap_or_else(|e| {
        problems.push(e);
        true
    });
    let (Some(owner), true) = (owner, problems.is_empty()) else {
        return Err(Invalid {
            kind: "DaskJob",
            name,
            problems,
        });
    };
    let namespace = j.namespace().unwrap_or_else(|| "default".into());
    let cluster_meta = j.spec.cluster.metadata.clone().unwrap_or_default();
    let runner_meta = j.spec.job.metadata.clone().unwrap_or_default();
    let mut runner_spec = j.spec.job.spec.clone();
    runner_spec
        .restart_policy
        .get_or_insert_with(|| "Never".into());
    Ok(ValidatedJob {
        generation: j.metadata.generation.unwrap_or(0),
        labels: inherited_labels(j),
        annotations: inherited_annotations(j),
        cluster_name: name.clone(),
        cluster_spec: j.spec.cluster.spec.clone(),
        cluster_labels: cluster_meta.labels.unwrap_or_default(),
        cluster_annotations: cluster_meta.annotations.unwrap_or_default(),
        runner_spec,
        runner_labels: runner_meta.labels.unwrap_or_default(),
        runner_annotations: runner_meta.annotations.unwrap_or_default(),
        scheduler_address: names::scheduler_address(&name, &namespace),
        max_attempts: backoff_limit.unsigned_abs().saturating_add(1),
        deadline,
        ttl_after_finished,
        keep_cluster_on_failure: j.spec.keep_cluster_on_failure.unwrap_or(false),
        created: j.metadata.creation_timestamp.as_ref().map(|t| t.0),
        certificates,
        pod_tls: false,
        owner,
        name,
        namespace,
    })
}
