//! Stage 2: a DaskCluster's spec checked and settled into everything the builders need.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::crd::{DaskCluster, DaskClusterSpec, WorkerSpec};
use crate::error::Invalid;
use crate::names;
use crate::template::{check_pod_spec, inherited_annotations, inherited_labels, owner_ref};

/// A DaskCluster whose names and defaults are settled; builders read only this.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedCluster {
    pub name: String,
    pub namespace: String,
    pub generation: i64,
    pub owner: OwnerReference,
    /// Labels and annotations children inherit.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The cluster's with `spec.scheduler.metadata`'s over them: the scheduler pod's and
    /// Service's (as dask-kubernetes, so a load balancer's annotations reach the Service).
    pub scheduler_labels: BTreeMap<String, String>,
    pub scheduler_annotations: BTreeMap<String, String>,
    /// The cluster's with `spec.worker.metadata`'s over them: the default worker group's.
    pub group_labels: BTreeMap<String, String>,
    pub group_annotations: BTreeMap<String, String>,
    pub scheduler_spec: PodSpec,
    pub service_spec: ServiceSpec,
    pub worker: WorkerSpec,
    pub idle_timeout: Option<Duration>,
    pub scheduler_address: String,
    /// Certificates made for the cluster (the Secret `{name}-tls`): unless its
    /// `kubernetes.dask.org/tls` annotation is `"false"`.
    pub certificates: bool,
    /// Its rask pods use them (mounted, `tls://` addresses): the operator's `--cluster-tls`, set
    /// by the reconcile ([`ValidatedCluster::with_pod_tls`]); only with `certificates`.
    pub pod_tls: bool,
}

impl ValidatedCluster {
    /// Turns TLS in the cluster's rask pods on or off. On only when the cluster has
    /// certificates and its scheduler runs rask's image (as [`super::reach::uses_tls`]): a
    /// Dask image's scheduler decides for itself, and its cluster is left as written.
    pub fn with_pod_tls(mut self, on: bool) -> Self {
        self.pod_tls = on
            && self.certificates
            && self
                .scheduler_spec
                .containers
                .first()
                .is_some_and(crate::local::plan::is_rask);
        if self.pod_tls {
            self.scheduler_address = crate::tls::tls_address(&self.scheduler_address);
        }
        self
    }
}

/// Problems with a cluster spec found at `path` (`spec` of a DaskCluster, `spec.cluster.spec` of
/// a DaskJob), named by field path.
pub fn check_spec(path: &str, spec: &DaskClusterSpec, problems: &mut Vec<String>) {
    check_pod_spec(
        &format!("{path}.scheduler.spec"),
        &spec.scheduler.spec,
        problems,
    );
    check_pod_spec(&format!("{path}.worker.spec"), &spec.worker.spec, problems);
    if spec.worker.replicas < 0 {
        problems.push(format!(
            "{path}.worker.replicas: {} is negative",
            spec.worker.replicas
        ));
    }
    if spec
        .scheduler
        .service
        .ports
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        problems.push(format!(
            "{path}.scheduler.service.ports: at least one port is required"
        ));
    }
    if let Some(s) = spec.idle_timeout.filter(|s| *s < 0) {
        problems.push(format!("{path}.idleTimeout: {s} is negative"));
    }
}

pub fn validate(c: &DaskCluster) -> Result<ValidatedCluster, Invalid> {
    let name = c.name_any();
    let mut problems = Vec::new();
    if name.len() > names::MAX_CLUSTER_NAME {
        problems.push(format!(
            "metadata.name: {} characters, at most {} allowed (the scheduler service is named {name}-scheduler)",
            name.len(),
            names::MAX_CLUSTER_NAME
        ));
    }
    let namespace = c.namespace().unwrap_or_else(|| "default".into());
    let owner = owner_ref(c);
    if owner.is_none() {
        problems.push("metadata.uid: missing (the object was not read from the API server)".into());
    }
    check_spec("spec", &c.spec, &mut problems);
    let certificates = crate::tls::wanted(c.annotations()).unwrap_or_else(|e| {
        problems.push(e);
        true
    });
    let idle_timeout = match c.spec.idle_timeout {
        Some(s) if s > 0 => Some(Duration::from_secs(s.unsigned_abs())),
        _ => None,
    };
    let (Some(owner), true) = (owner, problems.is_empty()) else {
        return Err(Invalid {
            kind: "DaskCluster",
            name,
            problems,
        });
    };
    let labels = inherited_labels(c);
    let annotations = inherited_annotations(c);
    let over = |base: &BTreeMap<String, String>, extra: Option<&BTreeMap<String, String>>| {
        let mut m = base.clone();
        m.extend(extra.cloned().unwrap_or_default());
        m
    };
    let scheduler_meta = c.spec.scheduler.metadata.clone().unwrap_or_default();
    let worker_meta = c.spec.worker.metadata.clone().unwrap_or_default();
    Ok(ValidatedCluster {
        scheduler_address: names::scheduler_address(&name, &namespace),
        generation: c.metadata.generation.unwrap_or(0),
        scheduler_labels: over(&labels, scheduler_meta.labels.as_ref()),
        scheduler_annotations: over(&annotations, scheduler_meta.annotations.as_ref()),
        group_labels: over(&labels, worker_meta.labels.as_ref()),
        group_annotations: over(&annotations, worker_meta.annotations.as_ref()),
        labels,
        annotations,
        scheduler_spec: c.spec.scheduler.spec.clone(),
        service_spec: c.spec.scheduler.service.clone(),
        worker: c.spec.worker.clone(),
        idle_timeout,
        certificates,
        pod_tls: false,
        owner,
        name,
        namespace,
    })
}
