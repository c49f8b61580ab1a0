//! Stage 3 for worker groups: a worker pod, as a pure function of the group and the pod's name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;

use super::validate::ValidatedGroup;
use crate::names::LABEL_ISTIO_INJECT;
use crate::template::default_env;

/// A worker pod named `name`: Dask's `DASK_WORKER_NAME` is the pod name, so the name a scheduler
/// reports for a worker names its pod. The group's labels win over its cluster's, which fill in
/// the rest (as dask-kubernetes labels its worker deployments).
pub fn worker_pod(
    g: &ValidatedGroup,
    cluster_labels: &BTreeMap<String, String>,
    name: &str,
) -> Pod {
    let mut spec = g.spec.clone();
    default_env(&mut spec, "DASK_WORKER_NAME", name);
    let mut labels = cluster_labels.clone();
    labels.extend(g.labels.clone());
    labels.insert(LABEL_ISTIO_INJECT.into(), "false".into());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(g.namespace.clone()),
            labels: Some(labels),
            annotations: Some(g.annotations.clone()),
            owner_references: Some(vec![g.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::DaskWorkerGroup;
    use crate::names::{
        ANNOTATION_TEMPLATE_HASH, LABEL_CLUSTER, LABEL_COMPONENT, LABEL_WORKER_GROUP,
    };
    use crate::workergroup::validate::validate;

    fn fixture() -> DaskWorkerGroup {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/daskworkergroup.yaml");
        let mut g: DaskWorkerGroup =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        g.metadata.namespace = Some("ns".into());
        g.metadata.uid = Some("uid-g".into());
        g
    }

    #[test]
    fn worker_pods_follow_dasks_contract() {
        let v = validate(&fixture()).unwrap();
        let cluster_labels = BTreeMap::from([
            ("team".to_owned(), "a".to_owned()),
            (LABEL_COMPONENT.to_owned(), "cluster".to_owned()),
        ]);
        let pod = worker_pod(&v, &cluster_labels, "foo-highmem-worker-0123456789");
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(
            labels["team"], "a",
            "the cluster's labels reach extra groups' pods"
        );
        assert_eq!(labels[LABEL_ISTIO_INJECT], "false");
        assert_eq!(labels[LABEL_CLUSTER], "foo");
        assert_eq!(labels[LABEL_WORKER_GROUP], "foo-highmem");
        assert_eq!(labels[LABEL_COMPONENT], "worker");
        let env: Vec<(String, String)> = pod.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert!(env.contains(&(
            "DASK_WORKER_NAME".into(),
            "foo-highmem-worker-0123456789".into()
        )));
        assert!(env.contains(&(
            "DASK_SCHEDULER_ADDRESS".into(),
            "tcp://foo-scheduler.ns.svc.cluster.local:8786".into()
        )));
        assert_eq!(
            pod.metadata.annotations.unwrap()[ANNOTATION_TEMPLATE_HASH],
            v.template_hash
        );
        assert_eq!(
            pod.metadata.owner_references.unwrap()[0].kind,
            "DaskWorkerGroup"
        );
    }

    #[test]
    fn with_tls_rask_workers_mount_their_certificate_and_roll() {
        let mut g = fixture();
        g.spec.worker.spec.containers[0].image = Some("ghcr.io/rask-dev/rask-worker:1".into());
        let plain = validate(&g).unwrap();
        let tls = plain.clone().with_tls("foo-tls");
        assert_ne!(plain.template_hash, tls.template_hash);
        assert_eq!(
            tls.annotations[ANNOTATION_TEMPLATE_HASH], tls.template_hash,
            "the pods carry the new hash"
        );
        let pod = worker_pod(&tls, &BTreeMap::new(), "foo-highmem-worker-0123456789");
        let spec = pod.spec.unwrap();
        let volume = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("foo-tls")
        );
        let env: BTreeMap<String, String> = spec.containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(
            env["DASK_SCHEDULER_ADDRESS"],
            "tls://foo-scheduler.ns.svc.cluster.local:8786"
        );
        assert_eq!(
            env["DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT"],
            "/etc/rask/tls/worker.pem"
        );
        // Settling again is stable, and a Dask image's template is unchanged.
        assert_eq!(tls.clone().with_tls("foo-tls"), tls);
        let dask = validate(&fixture()).unwrap();
        assert_eq!(dask.clone().with_tls("foo-tls").spec, dask.spec);
    }

    #[test]
    fn the_template_hash_ignores_the_pod_name_but_not_the_image() {
        let a = validate(&fixture()).unwrap();
        let mut g = fixture();
        g.spec.worker.spec.containers[0].image = Some("ghcr.io/dask/dask:2026.8.0".into());
        let b = validate(&g).unwrap();
        assert_ne!(a.template_hash, b.template_hash);
        let mut g = fixture();
        g.spec.worker.replicas = 7;
        g.metadata.annotations = Some(
            [(
                crate::names::ANNOTATION_CLUSTER_REPLICAS.to_owned(),
                "7".to_owned(),
            )]
            .into(),
        );
        assert_eq!(
            validate(&g).unwrap().template_hash,
            a.template_hash,
            "scaling (from the group or passed on from the cluster) does not roll workers"
        );
    }

    #[test]
    fn invalid_groups_name_the_problem() {
        let mut g = fixture();
        g.spec.cluster.clear();
        g.spec.worker.spec.containers[0].image = None;
        let text = validate(&g).unwrap_err().to_string();
        assert!(
            text.contains("spec.cluster: required")
                && text.contains("containers[0].image: required"),
            "{text}"
        );
    }
}
