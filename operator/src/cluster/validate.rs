//! Stage 2: a DaskCluster's spec checked and settled into everything the builders need.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::crd::{DaskCluster, DaskClusterSpec, WorkerSpec};
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
    pub scheduler_labels: BTreeMap<String, String>,
    pub scheduler_annotations: BTreeMap<String, String>,
    pub scheduler_spec: PodSpec,
    pub service_spec: ServiceSpec,
    pub worker: WorkerSpec,
    pub idle_timeout: Option<Duration>,
    pub scheduler_address: String,
}

/// Why a spec cannot be reconciled; the list names every problem by field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid DaskCluster {name}: {}", problems.join("; "))]
pub struct Invalid {
    pub name: String,
    pub problems: Vec<String>,
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
    let idle_timeout = match c.spec.idle_timeout {
        Some(s) if s > 0 => Some(Duration::from_secs(s.unsigned_abs())),
        _ => None,
    };
    if !problems.is_empty() {
        return Err(Invalid { name, problems });
    }
    let meta = c.spec.scheduler.metadata.clone().unwrap_or_default();
    let Some(owner) = owner else {
        return Err(Invalid {
            name,
            problems: vec!["metadata.uid: missing".into()],
        });
    };
    Ok(ValidatedCluster {
        scheduler_address: names::scheduler_address(&name, &namespace),
        generation: c.metadata.generation.unwrap_or(0),
        labels: inherited_labels(c),
        annotations: inherited_annotations(c),
        scheduler_labels: meta.labels.unwrap_or_default(),
        scheduler_annotations: meta.annotations.unwrap_or_default(),
        scheduler_spec: c.spec.scheduler.spec.clone(),
        service_spec: c.spec.scheduler.service.clone(),
        worker: c.spec.worker.clone(),
        idle_timeout,
        owner,
        name,
        namespace,
    })
}
