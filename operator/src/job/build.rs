//! Stage 3: the objects a DaskJob should have, as pure functions of the validated job.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ObjectMeta;

use super::validate::ValidatedJob;
use crate::cluster::certs;
use crate::crd::DaskCluster;
use crate::names::{
    self, ANNOTATION_RUNNER_ATTEMPT, COMPONENT_JOB_RUNNER, LABEL_CLUSTER, LABEL_COMPONENT,
    LABEL_ISTIO_INJECT,
};
use crate::template::default_env;
use crate::tls::Role;

/// The job's DaskCluster, named as the job and owned by it, labelled with its name as
/// dask-kubernetes labels it.
pub fn cluster(v: &ValidatedJob) -> DaskCluster {
    let mut labels = v.labels.clone();
    labels.extend(v.cluster_labels.clone());
    labels.insert(LABEL_CLUSTER.into(), v.cluster_name.clone());
    let mut annotations = v.annotations.clone();
    annotations.extend(v.cluster_annotations.clone());
    let mut c = DaskCluster::new(&v.cluster_name, v.cluster_spec.clone());
    c.metadata.namespace = Some(v.namespace.clone());
    c.metadata.labels = Some(labels);
    c.metadata.annotations = Some(annotations).filter(|a| !a.is_empty());
    c.metadata.owner_references = Some(vec![v.owner.clone()]);
    c
}

/// The runner pod of attempt `attempt` (0 first): Dask's `DASK_SCHEDULER_ADDRESS` points at the
/// job's cluster, as on the cluster's own pods.
pub fn runner_pod(v: &ValidatedJob, attempt: u32) -> Pod {
    let mut spec = v.runner_spec.clone();
    if v.pod_tls {
        certs::mount(
            &mut spec,
            &certs::secret_name(&v.cluster_name),
            Role::Client,
            &v.scheduler_address,
        );
    }
    default_env(&mut spec, "DASK_SCHEDULER_ADDRESS", &v.scheduler_address);
    let mut labels = v.labels.clone();
    labels.extend(v.runner_labels.clone());
    labels.insert(LABEL_CLUSTER.into(), v.cluster_name.clone());
    labels.insert(LABEL_COMPONENT.into(), COMPONENT_JOB_RUNNER.into());
    labels.insert(LABEL_ISTIO_INJECT.into(), "false".into());
    let mut annotations = v.annotations.clone();
    annotations.extend(v.runner_annotations.clone());
    annotations.insert(ANNOTATION_RUNNER_ATTEMPT.into(), attempt.to_string());
    Pod {
        metadata: ObjectMeta {
            name: Some(names::job_runner_name(&v.name, attempt)),
            namespace: Some(v.namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![v.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::DaskJob;
    use crate::job::validate::validate;

    pub(crate) fn fixture() -> DaskJob {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/daskjob.yaml");
        let mut j: DaskJob = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        j.metadata.namespace = Some("ns".into());
        j.metadata.uid = Some("uid-j".into());
        j.metadata.generation = Some(1);
        j
    }

    #[test]
    fn the_cluster_is_named_as_the_job_and_owned_by_it() {
        let mut j = fixture();
        j.metadata.labels = Some([("team".to_owned(), "a".to_owned())].into());
        let c = cluster(&validate(&j).unwrap());
        assert_eq!(c.metadata.name.as_deref(), Some("simple-job"));
        assert_eq!(c.metadata.namespace.as_deref(), Some("ns"));
        let owner = &c.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("DaskJob", "simple-job", Some(true))
        );
        let labels = c.metadata.labels.unwrap();
        assert_eq!(labels["team"], "a");
        assert_eq!(labels[LABEL_CLUSTER], "simple-job");
        assert_eq!(c.spec.worker.replicas, 2);
    }

    #[test]
    fn the_runner_follows_dasks_contract() {
        let v = validate(&fixture()).unwrap();
        let pod = runner_pod(&v, 0);
        assert_eq!(pod.metadata.name.as_deref(), Some("simple-job-runner"));
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_CLUSTER], "simple-job");
        assert_eq!(labels[LABEL_COMPONENT], "job-runner");
        assert_eq!(labels[LABEL_ISTIO_INJECT], "false");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let mut on_failure = fixture();
        on_failure.spec.job.spec.restart_policy = Some("OnFailure".into());
        let restarted = runner_pod(&validate(&on_failure).unwrap(), 0);
        assert_eq!(
            restarted.spec.unwrap().restart_policy.as_deref(),
            Some("OnFailure"),
            "dask-kubernetes' default template's policy is accepted and kept"
        );
        let env = spec.containers[0].env.clone().unwrap();
        assert!(env.iter().any(|e| e.name == "DASK_SCHEDULER_ADDRESS"
            && e.value.as_deref() == Some("tcp://simple-job-scheduler.ns.svc.cluster.local:8786")));
        let retry = runner_pod(&v, 2);
        assert_eq!(retry.metadata.name.as_deref(), Some("simple-job-runner-2"));
        assert_eq!(
            retry.metadata.annotations.unwrap()[ANNOTATION_RUNNER_ATTEMPT],
            "2"
        );
    }

    #[test]
    fn a_rask_runner_gets_the_users_certificate_with_cluster_tls() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rask-job.yaml");
        let mut j: DaskJob = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        j.metadata.namespace = Some("ns".into());
        j.metadata.uid = Some("uid-j".into());
        let v = validate(&j).unwrap();
        let env = |p: &Pod| -> std::collections::BTreeMap<String, String> {
            p.spec.as_ref().unwrap().containers[0]
                .env
                .iter()
                .flatten()
                .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
                .collect()
        };
        let off = runner_pod(&v.clone(), 0);
        assert!(env(&off)["DASK_SCHEDULER_ADDRESS"].starts_with("tcp://"));
        assert!(off.spec.as_ref().unwrap().volumes.is_none());
        let on = runner_pod(&v.clone().with_pod_tls(true), 0);
        let e = env(&on);
        let name = j.metadata.name.clone().unwrap();
        assert_eq!(
            e["DASK_SCHEDULER_ADDRESS"],
            format!("tls://{name}-scheduler.ns.svc.cluster.local:8786")
        );
        assert_eq!(
            e["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"],
            "/etc/rask/tls/client.pem"
        );
        let volume = &on.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name,
            Some(format!("{name}-tls"))
        );
        // Opted out (on the job, passed to its cluster): no certificates, whatever the switch.
        j.metadata.annotations =
            Some([(crate::tls::ANNOTATION_TLS.to_owned(), "false".to_owned())].into());
        let opted_out = validate(&j).unwrap().with_pod_tls(true);
        assert!(runner_pod(&opted_out, 0).spec.unwrap().volumes.is_none());
        // A job whose cluster runs Dask's scheduler: the runner is left as written.
        let mut dask = j.clone();
        dask.metadata.annotations = None;
        dask.spec.cluster.spec.scheduler.spec.containers[0].image =
            Some("ghcr.io/dask/dask:latest".into());
        let dask = validate(&dask).unwrap().with_pod_tls(true);
        assert!(runner_pod(&dask, 0).spec.unwrap().volumes.is_none());
        j.metadata.annotations =
            Some([(crate::tls::ANNOTATION_TLS.to_owned(), "yes".to_owned())].into());
        let text = validate(&j).unwrap_err().to_string();
        assert!(text.contains("kubernetes.dask.org/tls"), "{text}");
    }

    #[test]
    fn invalid_jobs_name_every_problem() {
        let mut j = fixture();
        j.spec.job.spec.containers.clear();
        j.spec.job.spec.restart_policy = Some("Always".into());
        j.spec.cluster.spec.worker.replicas = -1;
        j.spec.backoff_limit = Some(-2);
        j.spec.active_deadline_seconds = Some(0);
        j.spec.ttl_seconds_after_finished = Some(-1);
        let text = validate(&j).unwrap_err().to_string();
        for want in [
            "spec.job.spec.containers: at least one container",
            "spec.job.spec.restartPolicy: \"Always\" is not supported",
            "spec.cluster.spec.worker.replicas: -1 is negative",
            "spec.backoffLimit: -2 is negative",
            "spec.activeDeadlineSeconds: 0 is not positive",
            "spec.ttlSecondsAfterFinished: -1 is negative",
        ] {
            assert!(text.contains(want), "{want} missing from: {text}");
        }
    }
}
