//! Names, labels and addresses the operator derives, following dask-kubernetes' conventions so
//! that tools written for it (dask-kubernetes' `KubeCluster`, dashboards) find everything.

use std::hash::{BuildHasher, Hasher};

pub const LABEL_CLUSTER: &str = "dask.org/cluster-name";
pub const LABEL_COMPONENT: &str = "dask.org/component";
pub const LABEL_WORKER_GROUP: &str = "dask.org/workergroup-name";
/// Hash of the pod template a pod was made from; a different hash means the pod is outdated.
pub const ANNOTATION_TEMPLATE_HASH: &str = "kubernetes.dask.org/template-hash";
/// Set to "false" on every pod the operator makes, as dask-kubernetes does: an Istio sidecar
/// would sit between Dask's processes, and a job runner's would keep its pod from completing.
pub const LABEL_ISTIO_INJECT: &str = "sidecar.istio.io/inject";
/// On a cluster's default worker group: the cluster's `spec.worker.replicas` last passed on to it.
/// After creation the group owns its size (`kubectl scale`, `KubeCluster.scale`, autoscalers);
/// only a change of the cluster's own `spec.worker.replicas` is passed on.
pub const ANNOTATION_CLUSTER_REPLICAS: &str = "kubernetes.dask.org/cluster-worker-replicas";
/// Which attempt of a DaskJob's runner a pod is (0, 1, ...).
pub const ANNOTATION_RUNNER_ATTEMPT: &str = "kubernetes.dask.org/runner-attempt";
/// `dask.org/component` of a DaskJob's runner pod, as dask-kubernetes labels it.
pub const COMPONENT_JOB_RUNNER: &str = "job-runner";
/// The one field manager for every object and status the operator writes.
/// Kubernetes' own hint of which pods of a set to remove first (lower first).
pub const ANNOTATION_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub const FIELD_MANAGER: &str = "rask-operator";

/// rask's images as published: `ghcr.io/rask-dev/` and the `org.opencontainers.image.title` of
/// images/worker/Dockerfile (the `rask` binary: scheduler, workers, jobs) and
/// images/operator/Dockerfile. A test holds these to the Dockerfiles.
pub const WORKER_IMAGE: &str = "ghcr.io/rask-dev/rask-worker";
pub const OPERATOR_IMAGE: &str = "ghcr.io/rask-dev/rask-operator";

pub const SCHEDULER_PORT: u16 = 8786;
pub const DASHBOARD_PORT: u16 = 8787;

/// Dask's default scheduler HTTP routes plus the API the autoscaler needs (off by default in Dask).
pub const SCHEDULER_HTTP_ROUTES: &str = r#"["distributed.http.scheduler.prometheus", "distributed.http.scheduler.info", "distributed.http.scheduler.json", "distributed.http.health", "distributed.http.proxy", "distributed.http.statics", "distributed.http.scheduler.api"]"#;

/// Longest DaskCluster name: `{name}-scheduler` must be a valid Service name (63 characters).
pub const MAX_CLUSTER_NAME: usize = 53;

pub fn scheduler_name(cluster: &str) -> String {
    format!("{cluster}-scheduler")
}

pub fn default_worker_group(cluster: &str) -> String {
    format!("{cluster}-default")
}

/// `tcp://{cluster}-scheduler.{ns}.svc.cluster.local:8786`, Dask's `DASK_SCHEDULER_ADDRESS`.
pub fn scheduler_address(cluster: &str, namespace: &str) -> String {
    format!(
        "tcp://{}.{namespace}.svc.cluster.local:{SCHEDULER_PORT}",
        scheduler_name(cluster)
    )
}

/// `rask-operator run --scheduler-url`'s default: the scheduler Service's in-cluster name.
pub const SCHEDULER_URL_TEMPLATE: &str =
    "http://{cluster}-scheduler.{namespace}.svc.cluster.local:8787";

/// A scheduler's HTTP API from a `--scheduler-url` template.
pub fn scheduler_url(template: &str, cluster: &str, namespace: &str) -> String {
    template
        .replace("{cluster}", cluster)
        .replace("{namespace}", namespace)
        .trim_end_matches('/')
        .to_owned()
}

/// The scheduler's HTTP API inside the cluster.
pub fn scheduler_http(cluster: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc.cluster.local:{DASHBOARD_PORT}",
        scheduler_name(cluster)
    )
}

/// A DaskJob's runner pod: `{job}-runner` as dask-kubernetes names it, `{job}-runner-{n}` for
/// the n-th retry.
pub fn job_runner_name(job: &str, attempt: u32) -> String {
    if attempt == 0 {
        format!("{job}-runner")
    } else {
        format!("{job}-runner-{attempt}")
    }
}

/// A new worker pod name, `{group}-worker-{10 hex}` as dask-kubernetes names them.
pub fn new_worker_pod_name(group: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    format!("{group}-worker-{:010x}", h.finish() & 0xff_ffff_ffff)
}

/// A short stable hash of a serializable value (pod templates), for change detection.
pub fn stable_hash(value: &impl serde::Serialize) -> String {
    // FNV-1a over the canonical JSON: stable across processes and releases, unlike std's hasher.
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The `org.opencontainers.image.title` label of a Dockerfile.
    fn image_title(dockerfile: &str) -> String {
        let text = repo_file(dockerfile);
        let (_, after) = text
            .split_once("org.opencontainers.image.title=\"")
            .unwrap_or_else(|| panic!("{dockerfile} has no image title label"));
        after.split('"').next().unwrap_or_default().to_owned()
    }

    #[test]
    fn image_names_are_those_images_builds() {
        for (name, dockerfile) in [
            (WORKER_IMAGE, "images/worker/Dockerfile"),
            (OPERATOR_IMAGE, "images/operator/Dockerfile"),
        ] {
            assert_eq!(
                name,
                format!("ghcr.io/rask-dev/{}", image_title(dockerfile)),
                "{dockerfile}"
            );
        }
        // The local backend recognises the worker image by this part of its name.
        assert!(WORKER_IMAGE.ends_with(crate::local::plan::RASK_IMAGE));
        // The chart deploys the operator image.
        let values: serde_yaml::Value =
            serde_yaml::from_str(&repo_file("charts/rask-operator/values.yaml")).unwrap();
        assert_eq!(values["image"]["repository"].as_str(), Some(OPERATOR_IMAGE));
        // docs/cloud.md and the cloud examples name the same images.
        let docs = repo_file("docs/cloud.md");
        for name in [WORKER_IMAGE, OPERATOR_IMAGE] {
            assert!(
                docs.contains(&format!("`{name}:VERSION`")),
                "docs/cloud.md lacks {name}"
            );
        }
        for example in ["examples/cloud-aws.yaml", "examples/cloud-azure.yaml"] {
            let config: serde_yaml::Value = serde_yaml::from_str(&repo_file(example)).unwrap();
            let software = &config["software"];
            for (key, name) in [("image", WORKER_IMAGE), ("operator_image", OPERATOR_IMAGE)] {
                if let Some(image) = software[key].as_str() {
                    assert_eq!(
                        image.rsplit_once(':').map(|(r, _)| r),
                        Some(name),
                        "{example}"
                    );
                }
            }
            assert!(software["image"].is_string(), "{example} names no image");
        }
    }

    #[test]
    fn names_follow_dask_kubernetes() {
        assert_eq!(
            scheduler_address("foo", "ns"),
            "tcp://foo-scheduler.ns.svc.cluster.local:8786"
        );
        assert_eq!(default_worker_group("foo"), "foo-default");
        assert_eq!(job_runner_name("j", 0), "j-runner");
        assert_eq!(job_runner_name("j", 2), "j-runner-2");
        let p = new_worker_pod_name("foo-default");
        assert!(
            p.starts_with("foo-default-worker-") && p.len() == "foo-default-worker-".len() + 10,
            "{p}"
        );
        assert_ne!(new_worker_pod_name("g"), new_worker_pod_name("g"));
        assert_eq!(
            scheduler_url(SCHEDULER_URL_TEMPLATE, "foo", "ns"),
            scheduler_http("foo", "ns")
        );
        assert_eq!(
            scheduler_url(
                "http://127.0.0.1:8001/api/v1/namespaces/{namespace}/services/{cluster}-scheduler:8787/proxy/",
                "foo",
                "ns"
            ),
            "http://127.0.0.1:8001/api/v1/namespaces/ns/services/foo-scheduler:8787/proxy"
        );
    }

    #[test]
    fn hashes_are_stable() {
        assert_eq!(
            stable_hash(&serde_json::json!({"a": 1})),
            stable_hash(&serde_json::json!({"a": 1}))
        );
        assert_ne!(
            stable_hash(&serde_json::json!({"a": 1})),
            stable_hash(&serde_json::json!({"a": 2}))
        );
    }
}
