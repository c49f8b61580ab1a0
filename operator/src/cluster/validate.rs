//! Stage 2: a DaskCluster's spec checked and settled into everything the builders need.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::crd::{DaskCluster, WorkerSpec};
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
    check_pod_spec("spec.scheduler.spec", &c.spec.scheduler.spec, &mut problems);
    check_pod_spec("spec.worker.spec", &c.spec.worker.spec, &mut problems);
    if c.spec.worker.replicas < 0 {
        problems.push(format!(
            "spec.worker.replicas: {} is negative",
            c.spec.worker.replicas
        ));
    }
    if c.spec
        .scheduler
        .service
        .ports
        .as_ref()
        .is_none_or(Vec::is_empty)
    {
        problems.push("spec.scheduler.service.ports: at least one port is required".into());
    }
    let idle_timeout = match c.spec.idle_timeout {
        Some(s) if s < 0 => {
            problems.push(format!("spec.idleTimeout: {s} is negative"));
            None
        }
        Some(0) | None => None,
        Some(s) => Some(Duration::from_secs(s.unsigned_abs())),
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
