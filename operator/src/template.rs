//! Pod template helpers shared by the scheduler and worker builders: Dask's environment contract,
//! labels and owner references.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{Resource, ResourceExt};

/// Adds `name=value` to every container (and init container) that does not set `name` itself:
/// values the user wrote win, as in dask-kubernetes.
pub fn default_env(spec: &mut PodSpec, name: &str, value: &str) {
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for c in containers {
        let env = c.env.get_or_insert_with(Vec::new);
        if !env.iter().any(|e| e.name == name) {
            env.push(EnvVar {
                name: name.into(),
                value: Some(value.into()),
                value_from: None,
            });
        }
    }
}

/// The owner reference that makes `owner`'s deletion remove the child (garbage collection).
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    owner.controller_owner_ref(&())
}

/// Annotation prefixes of tools that keep their own bookkeeping in annotations (kubectl's
/// last-applied copy, kopf's progress): children do not inherit them, as in dask-kubernetes.
const TOOL_ANNOTATIONS: [&str; 2] = ["kubectl.kubernetes.io/", "kopf.zalando.org/"];

/// Labels a resource's children inherit from it: all of them (dask-kubernetes filters none).
pub fn inherited_labels<K: ResourceExt>(obj: &K) -> BTreeMap<String, String> {
    obj.labels().clone()
}

/// Annotations a resource's children inherit from it: the user's, without tools' bookkeeping.
pub fn inherited_annotations<K: ResourceExt>(obj: &K) -> BTreeMap<String, String> {
    obj.annotations()
        .iter()
        .filter(|(k, _)| !TOOL_ANNOTATIONS.iter().any(|p| k.starts_with(p)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Problems with a pod template, named by their field path.
pub fn check_pod_spec(path: &str, spec: &PodSpec, problems: &mut Vec<String>) {
    if spec.containers.is_empty() {
        problems.push(format!(
            "{path}.containers: at least one container is required"
        ));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        if c.name.is_empty() {
            problems.push(format!("{path}.containers[{i}].name: required"));
        }
        if c.image.as_deref().unwrap_or_default().is_empty() {
            problems.push(format!("{path}.containers[{i}].image: required"));
        }
    }
}
