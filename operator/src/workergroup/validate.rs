//! Stage 2 for worker groups: the spec checked and its names and template settled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;

use crate::cluster::certs::mount;
use crate::crd::DaskWorkerGroup;
use crate::error::Invalid;
use crate::names::{
    self, ANNOTATION_CLUSTER_REPLICAS, ANNOTATION_TEMPLATE_HASH, LABEL_CLUSTER, LABEL_COMPONENT,
    LABEL_WORKER_GROUP,
};
use crate::template::{
    check_pod_spec, default_env, inherited_annotations, inherited_labels, owner_ref,
};
use crate::tls::Role;

/// A worker group whose names, labels and pod template are settled.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedGroup {
    pub name: String,
    pub namespace: String,
    pub cluster: String,
    pub generation: i64,
    pub replicas: usize,
    pub owner: OwnerReference,
    pub labels: BTreeMap<String, String>,
    /// Includes the template hash.
    pub annotations: BTreeMap<String, String>,
    /// The worker pod spec with the scheduler address set (the pod name is set per pod).
    pub spec: PodSpec,
    /// The group's pod template as written.
    pub template: PodSpec,
    pub template_hash: String,
}

impl ValidatedGroup {
    /// The group's rask workers use their cluster's certificates, from the Secret `secret`
    /// (see [`crate::cluster::certs::mount`]): part of the template, so turning it on or off
    /// replaces the workers.
    pub fn with_tls(mut self, secret: &str) -> Self {
        let mut annotations = self.annotations.clone();
        annotations.remove(ANNOTATION_TEMPLATE_HASH);
        let (spec, hash) = settle(
            &self.template,
            &self.cluster,
            &self.namespace,
            &self.labels,
            &annotations,
            Some(secret),
        );
        annotations.insert(ANNOTATION_TEMPLATE_HASH.into(), hash.clone());
        self.spec = spec;
        self.template_hash = hash;
        self.annotations = annotations;
        self
    }
}

/// The worker pod spec from the group's template: the scheduler's address set (and, with a
/// certificates Secret, TLS in rask containers), and its hash with the pods' metadata.
fn settle(
    template: &PodSpec,
    cluster: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    tls: Option<&str>,
) -> (PodSpec, String) {
    let mut spec = template.clone();
    let address = names::scheduler_address(cluster, namespace);
    if let Some(secret) = tls {
        mount(&mut spec, secret, Role::Worker, &address);
    }
    default_env(&mut spec, "DASK_SCHEDULER_ADDRESS", &address);
    let hash = names::stable_hash(&(&spec, labels, annotations));
    (spec, hash)
}

pub fn validate(g: &DaskWorkerGroup) -> Result<ValidatedGroup, Invalid> {
    let name = g.name_any();
    let mut problems = Vec::new();
    if g.spec.cluster.is_empty() {
        problems.push("spec.cluster: required".into());
    }
    if g.spec.worker.replicas < 0 {
        problems.push(format!(
            "spec.worker.replicas: {} is negative",
            g.spec.worker.replicas
        ));
    }
    // Pod names are `{group}-worker-{10 hex}`: at most 63 characters.
    if name.len() + "-worker-".len() + 10 > 63 {
        problems.push(format!("metadata.name: {} characters, at most 45 allowed (worker pods are named {name}-worker-<id>)", name.len()));
    }
    check_pod_spec("spec.worker.spec", &g.spec.worker.spec, &mut problems);
    let owner = owner_ref(g);
    if owner.is_none() {
        problems.push("metadata.uid: missing (the object was not read from the API server)".into());
    }
    let (Some(owner), true) = (owner, problems.is_empty()) else {
        return Err(Invalid {
            kind: "DaskWorkerGroup",
            name,
            problems,
        });
    };
    let namespace = g.namespace().unwrap_or_else(|| "default".into());
    let cluster = g.spec.cluster.clone();
    let meta = g.spec.worker.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = inherited_labels(g)
        .into_iter()
        .filter(|(k, _)| k != LABEL_COMPONENT)
        .collect();
    labels.extend(meta.labels.unwrap_or_default());
    labels.insert(LABEL_CLUSTER.into(), cluster.clone());
    labels.insert(LABEL_WORKER_GROUP.into(), name.clone());
    labels.insert(LABEL_COMPONENT.into(), "worker".into());
    // The cluster's bookkeeping on its default group is not the workers' (a scale passed on
    // from the cluster must not roll them).
    let mut annotations: BTreeMap<String, String> = inherited_annotations(g)
        .into_iter()
        .filter(|(k, _)| k != ANNOTATION_CLUSTER_REPLICAS)
        .collect();
    annotations.extend(meta.annotations.unwrap_or_default());
    let template = g.spec.worker.spec.clone();
    let (spec, template_hash) =
        settle(&template, &cluster, &namespace, &labels, &annotations, None);
    annotations.insert(ANNOTATION_TEMPLATE_HASH.into(), template_hash.clone());
    Ok(ValidatedGroup {
        generation: g.metadata.generation.unwrap_or(0),
        replicas: usize::try_from(g.spec.worker.replicas).unwrap_or(0),
        owner,
        labels,
        annotations,
        spec,
        template,
        template_hash,
        name,
        namespace,
        cluster,
    })
}
