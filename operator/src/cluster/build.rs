//! Stage 3: the objects a DaskCluster should have, as pure functions of the validated cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ObjectMeta;

use super::certs;
use super::validate::ValidatedCluster;
use crate::crd::{DaskWorkerGroup, DaskWorkerGroupSpec};
use crate::names::{
    self, ANNOTATION_CLUSTER_REPLICAS, ANNOTATION_TEMPLATE_HASH, LABEL_CLUSTER, LABEL_COMPONENT,
    LABEL_ISTIO_INJECT,
};
use crate::template::default_env;
use crate::tls::Role;

fn scheduler_labels(c: &ValidatedCluster) -> BTreeMap<String, String> {
    let mut labels = c.scheduler_labels.clone();
    labels.insert(LABEL_CLUSTER.into(), c.name.clone());
    labels.insert(LABEL_COMPONENT.into(), "scheduler".into());
    labels
}

/// The scheduler pod, with Dask's environment contract and its template hash.
pub fn scheduler_pod(c: &ValidatedCluster) -> Pod {
    let mut spec = c.scheduler_spec.clone();
    if c.pod_tls {
        certs::mount(
            &mut spec,
            &certs::secret_name(&c.name),
            Role::Scheduler,
            &names::scheduler_address(&c.name, &c.namespace),
        );
    }
    default_env(&mut spec, "DASK_SCHEDULER_ADDRESS", &c.scheduler_address);
    default_env(
        &mut spec,
        "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
        names::SCHEDULER_HTTP_ROUTES,
    );
    let mut labels = scheduler_labels(c);
    labels.insert(LABEL_ISTIO_INJECT.into(), "false".into());
    let mut annotations = c.scheduler_annotations.clone();
    let hash = names::stable_hash(&(&spec, &labels, &annotations));
    annotations.insert(ANNOTATION_TEMPLATE_HASH.into(), hash);
    Pod {
        metadata: ObjectMeta {
            name: Some(names::scheduler_name(&c.name)),
            namespace: Some(c.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![c.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The scheduler's service; without a selector it selects the scheduler pod.
pub fn scheduler_service(c: &ValidatedCluster) -> Service {
    let mut spec = c.service_spec.clone();
    if spec.selector.as_ref().is_none_or(BTreeMap::is_empty) {
        spec.selector = Some(BTreeMap::from([
            (LABEL_CLUSTER.to_owned(), c.name.clone()),
            (LABEL_COMPONENT.to_owned(), "scheduler".to_owned()),
        ]));
    }
    Service {
        metadata: ObjectMeta {
            name: Some(names::scheduler_name(&c.name)),
            namespace: Some(c.namespace.clone()),
            labels: Some(scheduler_labels(c)),
            annotations: Some(c.scheduler_annotations.clone()).filter(|a| !a.is_empty()),
            owner_references: Some(vec![c.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The size of the default worker group: the cluster's `spec.worker.replicas` when the group is
/// made, afterwards the group's own (`kubectl scale`, `KubeCluster.scale` and autoscalers set it
/// there), unless the cluster's `spec.worker.replicas` changed since it was last passed on.
/// `existing` is the group's (replicas, the cluster value last passed on, if recorded).
pub fn default_group_replicas(cluster: i32, existing: Option<(i32, Option<i32>)>) -> i32 {
    match existing {
        None => cluster,
        Some((_, Some(passed_on))) if passed_on != cluster => cluster,
        Some((own, _)) => own,
    }
}

/// The cluster's default worker group, `{cluster}-default`, of `replicas` workers.
pub fn default_worker_group(c: &ValidatedCluster, replicas: i32) -> DaskWorkerGroup {
    let mut labels = c.group_labels.clone();
    labels.insert(LABEL_CLUSTER.into(), c.name.clone());
    labels.insert(LABEL_COMPONENT.into(), "workergroup".into());
    let mut annotations = c.group_annotations.clone();
    annotations.insert(
        ANNOTATION_CLUSTER_REPLICAS.into(),
        c.worker.replicas.to_string(),
    );
    let mut worker = c.worker.clone();
    worker.replicas = replicas;
    let mut wg = DaskWorkerGroup::new(
        &names::default_worker_group(&c.name),
        DaskWorkerGroupSpec {
            cluster: c.name.clone(),
            worker,
        },
    );
    wg.metadata.namespace = Some(c.namespace.clone());
    wg.metadata.labels = Some(labels);
    wg.metadata.annotations = Some(annotations);
    wg.metadata.owner_references = Some(vec![c.owner.clone()]);
    wg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::validate::validate;
    use crate::crd::DaskCluster;

    pub(crate) fn fixture(file: &str) -> DaskCluster {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples")
            .join(file);
        let mut c: DaskCluster =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        c.metadata.namespace = Some("ns".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(3);
        c
    }

    fn env(pod: &Pod, container: usize) -> Vec<(String, String)> {
        pod.spec.as_ref().unwrap().containers[container]
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect()
    }

    #[test]
    fn scheduler_pod_follows_dasks_contract() {
        let v = validate(&fixture("daskcluster.yaml")).unwrap();
        let pod = scheduler_pod(&v);
        assert_eq!(pod.metadata.name.as_deref(), Some("foo-scheduler"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_CLUSTER], "foo");
        assert_eq!(labels[LABEL_COMPONENT], "scheduler");
        assert_eq!(labels[LABEL_ISTIO_INJECT], "false");
        let env = env(&pod, 0);
        assert!(env.contains(&(
            "DASK_SCHEDULER_ADDRESS".into(),
            "tcp://foo-scheduler.ns.svc.cluster.local:8786".into()
        )));
        let routes = env
            .iter()
            .find(|(k, _)| k == "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES")
            .unwrap();
        assert!(routes.1.contains("distributed.http.scheduler.api"));
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("DaskCluster", "foo", Some(true))
        );
        assert!(
            pod.metadata
                .annotations
                .unwrap()
                .contains_key(ANNOTATION_TEMPLATE_HASH)
        );
    }

    #[test]
    fn user_set_environment_wins() {
        let mut c = fixture("daskcluster.yaml");
        c.spec.scheduler.spec.containers[0].env = Some(vec![k8s_openapi::api::core::v1::EnvVar {
            name: "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES".into(),
            value: Some("[]".into()),
            value_from: None,
        }]);
        let pod = scheduler_pod(&validate(&c).unwrap());
        let env = env(&pod, 0);
        assert_eq!(
            env.iter()
                .filter(|(k, _)| k == "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES")
                .count(),
            1
        );
        assert!(env.contains(&(
            "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES".into(),
            "[]".into()
        )));
    }

    #[test]
    fn template_hash_changes_with_the_template_only() {
        let a = scheduler_pod(&validate(&fixture("daskcluster.yaml")).unwrap());
        let b = scheduler_pod(&validate(&fixture("daskcluster.yaml")).unwrap());
        let mut c = fixture("daskcluster.yaml");
        c.spec.scheduler.spec.containers[0].image = Some("ghcr.io/dask/dask:2026.8.0".into());
        let c = scheduler_pod(&validate(&c).unwrap());
        let hash =
            |p: &Pod| p.metadata.annotations.as_ref().unwrap()[ANNOTATION_TEMPLATE_HASH].clone();
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&c));
    }

    #[test]
    fn service_and_default_worker_group() {
        let v = validate(&fixture("daskcluster.yaml")).unwrap();
        let svc = scheduler_service(&v);
        assert_eq!(svc.metadata.name.as_deref(), Some("foo-scheduler"));
        assert_eq!(svc.spec.as_ref().unwrap().ports.as_ref().unwrap().len(), 2);
        let wg = default_worker_group(&v, 2);
        assert_eq!(wg.metadata.name.as_deref(), Some("foo-default"));
        assert_eq!(wg.spec.cluster, "foo");
        assert_eq!(wg.spec.worker.replicas, 2);
        assert_eq!(wg.metadata.labels.unwrap()[LABEL_COMPONENT], "workergroup");
    }

    #[test]
    fn metadata_reaches_children_as_in_dask_kubernetes() {
        let mut c = fixture("daskcluster.yaml");
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        c.metadata.labels = Some(map(&[("team", "a"), ("kubectl.kubernetes.io/keep", "yes")]));
        c.metadata.annotations = Some(map(&[
            ("owner", "me"),
            ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
            ("kopf.zalando.org/last-handled-configuration", "{}"),
        ]));
        c.spec.scheduler.metadata = Some(crate::crd::SimpleObjectMeta {
            labels: Some(map(&[("role", "scheduler")])),
            annotations: Some(map(&[(
                "service.beta.kubernetes.io/aws-load-balancer-type",
                "nlb",
            )])),
        });
        c.spec.worker.metadata = Some(crate::crd::SimpleObjectMeta {
            labels: Some(map(&[("role", "worker")])),
            annotations: Some(map(&[("cost", "spot")])),
        });
        let v = validate(&c).unwrap();
        let svc = scheduler_service(&v);
        let svc_annotations = svc.metadata.annotations.unwrap();
        assert_eq!(
            svc_annotations["service.beta.kubernetes.io/aws-load-balancer-type"],
            "nlb"
        );
        assert_eq!(svc_annotations["owner"], "me");
        let svc_labels = svc.metadata.labels.unwrap();
        assert_eq!(svc_labels["role"], "scheduler");
        assert!(
            !svc_labels.contains_key(LABEL_ISTIO_INJECT),
            "pods only, as dask-kubernetes"
        );
        let pod = scheduler_pod(&v);
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(
            labels["kubectl.kubernetes.io/keep"], "yes",
            "labels are kept"
        );
        assert_eq!(labels["team"], "a");
        let annotations = pod.metadata.annotations.unwrap();
        assert!(
            !annotations
                .keys()
                .any(|k| k.starts_with("kubectl.kubernetes.io/") || k.starts_with("kopf.")),
            "{annotations:?}"
        );
        let wg = default_worker_group(&v, 2);
        let labels = wg.metadata.labels.unwrap();
        assert_eq!(
            (labels["role"].as_str(), labels["team"].as_str()),
            ("worker", "a")
        );
        let annotations = wg.metadata.annotations.unwrap();
        assert_eq!(annotations["cost"], "spot");
        assert_eq!(annotations[ANNOTATION_CLUSTER_REPLICAS], "2");
    }

    #[test]
    fn the_default_group_owns_its_size_after_creation() {
        // (cluster replicas, existing group (replicas, last passed on)) → group replicas
        let table = [
            (2, None, 2),
            (2, Some((3, Some(2))), 3),
            (5, Some((3, Some(2))), 5),
            (2, Some((0, Some(2))), 0),
            (4, Some((3, None)), 3),
        ];
        for (cluster, existing, want) in table {
            assert_eq!(
                default_group_replicas(cluster, existing),
                want,
                "{cluster} {existing:?}"
            );
        }
    }

    #[test]
    fn a_service_without_selector_selects_the_scheduler() {
        let mut c = fixture("daskcluster.yaml");
        c.spec.scheduler.service.selector = None;
        let svc = scheduler_service(&validate(&c).unwrap());
        assert_eq!(
            svc.spec.unwrap().selector.unwrap()[LABEL_COMPONENT],
            "scheduler"
        );
    }

    #[test]
    fn cluster_tls_mounts_certificates_into_rask_schedulers_and_rolls_them() {
        let v = validate(&fixture("rask-cluster.yaml")).unwrap();
        let off = scheduler_pod(&v.clone().with_pod_tls(false));
        assert_eq!(off, scheduler_pod(&v), "off is the default");
        let tls = v.clone().with_pod_tls(true);
        assert_eq!(
            tls.scheduler_address, "tls://rask-scheduler.ns.svc.cluster.local:8786",
            "the status says where clients connect"
        );
        let on = scheduler_pod(&tls);
        let spec = on.spec.as_ref().unwrap();
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("rask-tls")
        );
        assert!(env(&on, 0).contains(&(
            "DASK_SCHEDULER_ADDRESS".into(),
            "tls://rask-scheduler.ns.svc.cluster.local:8786".into()
        )));
        let hash =
            |p: &Pod| p.metadata.annotations.as_ref().unwrap()[ANNOTATION_TEMPLATE_HASH].clone();
        assert_ne!(
            hash(&on),
            hash(&off),
            "turning TLS on replaces the scheduler"
        );
        // Opted out: nothing changes with the switch on.
        let mut c = fixture("rask-cluster.yaml");
        c.metadata.annotations = Some(BTreeMap::from([(
            crate::tls::ANNOTATION_TLS.to_owned(),
            "false".to_owned(),
        )]));
        let opted_out = validate(&c).unwrap();
        assert!(!opted_out.certificates);
        let pod = scheduler_pod(&opted_out.with_pod_tls(true));
        assert!(pod.spec.unwrap().volumes.is_none());
        // A Dask image keeps its tcp:// address and spec.
        let dask = validate(&fixture("daskcluster.yaml"))
            .unwrap()
            .with_pod_tls(true);
        assert!(dask.scheduler_address.starts_with("tcp://"));
        assert!(scheduler_pod(&dask).spec.unwrap().volumes.is_none());
    }

    #[test]
    fn an_unknown_tls_annotation_is_invalid() {
        let mut c = fixture("daskcluster.yaml");
        c.metadata.annotations = Some(BTreeMap::from([(
            crate::tls::ANNOTATION_TLS.to_owned(),
            "off".to_owned(),
        )]));
        let text = validate(&c).unwrap_err().to_string();
        assert!(
            text.contains(r#"metadata.annotations[kubernetes.dask.org/tls]: "off" is neither"#),
            "{text}"
        );
    }

    #[test]
    fn invalid_specs_name_every_problem() {
        let mut c = fixture("daskcluster.yaml");
        c.metadata.name = Some("x".repeat(54));
        c.spec.worker.spec.containers.clear();
        c.spec.worker.replicas = -1;
        let err = validate(&c).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("metadata.name: 54 characters"), "{text}");
        assert!(
            text.contains("spec.worker.spec.containers: at least one container"),
            "{text}"
        );
        assert!(
            text.contains("spec.worker.replicas: -1 is negative"),
            "{text}"
        );
    }
}
