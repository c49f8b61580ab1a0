//! Each DaskCluster's certificates: a Secret made once, owned by the cluster, mounted into its
//! rask pods (`--cluster-tls`, the default), never into a Dask image's; opted out by annotation,
//! or for every cluster by `--no-cluster-tls`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use rask_operator::crd::DaskCluster;
use rask_operator::tls::ClusterCerts;

use crate::env::{Env, example, wait_until};

const T: Duration = Duration::from_secs(20);

fn secrets(env: &Env) -> Api<Secret> {
    Api::namespaced(env.client.clone(), "default")
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn tls_volume(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "rask-tls")
        .and_then(|v| v.secret.as_ref()?.secret_name.clone())
}

fn has_tls_mount(pod: &Pod) -> bool {
    pod.spec.as_ref().unwrap().containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.name == "rask-tls" && m.mount_path == "/etc/rask/tls")
}

async fn certificates_condition(env: &Env, name: &str) -> Option<Condition> {
    env.clusters()
        .get(name)
        .await
        .unwrap()
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "CertificatesReady")
}

async fn create(env: &Env, c: &DaskCluster) -> DaskCluster {
    env.clusters()
        .create(&PostParams::default(), c)
        .await
        .unwrap()
}

fn now() -> i64 {
    rask_operator::clock::now() as i64
}

#[tokio::test]
async fn a_cluster_gets_its_certificates_once_and_its_rask_pods_mount_them() {
    let env = Env::with_cluster_tls().await;
    let cluster = create(&env, &example("rask-cluster.yaml")).await;
    wait_until("the Secret rask-tls exists", T, async || {
        secrets(&env).get_opt("rask-tls").await.unwrap().is_some()
    })
    .await;
    let secret = secrets(&env).get("rask-tls").await.unwrap();
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("DaskCluster", "rask", Some(true))
    );
    assert_eq!(Some(&owner.uid), cluster.metadata.uid.as_ref());
    let data = secret.data.clone().unwrap();
    let get = |f: &str| data.get(f).map(|b| String::from_utf8(b.0.clone()).unwrap());
    // The chain verifies with the cluster's CA and the scheduler's names cover its Service.
    for name in [
        "rask-scheduler.default.svc",
        "rask-scheduler.default.svc.cluster.local",
    ] {
        ClusterCerts::from_files(get, name, now()).unwrap();
    }
    assert!(get("ca-key.pem").is_none(), "the CA's key is not kept");

    wait_until("3 worker pods and the scheduler exist", T, async || {
        env.worker_pods("rask").await.len() == 3
            && env
                .pods()
                .get_opt("rask-scheduler")
                .await
                .unwrap()
                .is_some()
    })
    .await;
    let scheduler = env.pods().get("rask-scheduler").await.unwrap();
    assert_eq!(tls_volume(&scheduler).as_deref(), Some("rask-tls"));
    assert!(has_tls_mount(&scheduler));
    let senv = env_of(&scheduler);
    assert_eq!(
        senv["DASK_SCHEDULER_ADDRESS"],
        "tls://rask-scheduler.default.svc.cluster.local:8786"
    );
    assert_eq!(
        senv["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT"],
        "/etc/rask/tls/scheduler.pem"
    );
    for name in env.worker_pods("rask").await {
        let pod = env.pods().get(&name).await.unwrap();
        assert_eq!(tls_volume(&pod).as_deref(), Some("rask-tls"), "{name}");
        assert!(has_tls_mount(&pod), "{name}");
        let wenv = env_of(&pod);
        assert_eq!(
            wenv["DASK_SCHEDULER_ADDRESS"],
            "tls://rask-scheduler.default.svc.cluster.local:8786"
        );
        assert_eq!(
            wenv["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"],
            "/etc/rask/tls/worker-key.pem"
        );
    }
    wait_until(
        "the status says the certificates are ready",
        T,
        async || {
            certificates_condition(&env, "rask")
                .await
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;
    let status = env.clusters().get("rask").await.unwrap().status.unwrap();
    assert_eq!(
        status.scheduler_address.as_deref(),
        Some("tls://rask-scheduler.default.svc.cluster.local:8786")
    );

    // Later reconciles (here: the scheduler pod lost, after an operator restart) read the
    // Secret; they never make new certificates.
    let mut env = env;
    env.kill_operator().await;
    env.start_operator();
    let old_uid = scheduler.metadata.uid.clone();
    env.pods()
        .delete("rask-scheduler", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("a new scheduler pod exists", T, async || {
        env.pods()
            .get_opt("rask-scheduler")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.uid != old_uid)
    })
    .await;
    let again = secrets(&env).get("rask-tls").await.unwrap();
    assert_eq!(again.data, secret.data);
    assert_eq!(
        again.metadata.resource_version,
        secret.metadata.resource_version
    );
    env.shutdown().await;
}

#[tokio::test]
async fn opted_out_clusters_get_no_secret_and_dask_image_pods_are_unchanged() {
    let env = Env::with_cluster_tls().await;
    // Opted out: a rask cluster without certificates.
    let mut off: DaskCluster = example("rask-cluster.yaml");
    off.metadata.name = Some("plain".into());
    off.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.dask.org/tls".to_owned(),
        "false".to_owned(),
    )]));
    off.spec.worker.replicas = 0;
    create(&env, &off).await;
    // A Dask image: certificates made, its pods as written.
    create(&env, &example("daskcluster.yaml")).await;
    wait_until(
        "both scheduler pods exist and foo-tls is made",
        T,
        async || {
            env.pods()
                .get_opt("plain-scheduler")
                .await
                .unwrap()
                .is_some()
                && env.pods().get_opt("foo-scheduler").await.unwrap().is_some()
                && secrets(&env).get_opt("foo-tls").await.unwrap().is_some()
        },
    )
    .await;
    wait_until("plain's status is written", T, async || {
        env.clusters()
            .get("plain")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "SchedulerReady"))
    })
    .await;
    assert!(secrets(&env).get_opt("plain-tls").await.unwrap().is_none());
    assert!(certificates_condition(&env, "plain").await.is_none());
    let plain = env.pods().get("plain-scheduler").await.unwrap();
    assert_eq!(tls_volume(&plain), None);
    assert_eq!(
        env_of(&plain)["DASK_SCHEDULER_ADDRESS"],
        "tcp://plain-scheduler.default.svc.cluster.local:8786"
    );
    let foo = env.pods().get("foo-scheduler").await.unwrap();
    assert_eq!(tls_volume(&foo), None);
    let fenv = env_of(&foo);
    assert_eq!(
        fenv["DASK_SCHEDULER_ADDRESS"],
        "tcp://foo-scheduler.default.svc.cluster.local:8786"
    );
    assert!(
        !fenv
            .keys()
            .any(|k| k.starts_with("DASK_DISTRIBUTED__COMM__TLS"))
    );
    wait_until("foo's worker pods exist", T, async || {
        env.worker_pods("foo").await.len() == 2
    })
    .await;
    for name in env.worker_pods("foo").await {
        let pod = env.pods().get(&name).await.unwrap();
        assert_eq!(tls_volume(&pod), None, "{name}");
    }
    env.shutdown().await;
}

#[tokio::test]
async fn without_cluster_tls_the_secret_is_made_but_pods_are_unchanged() {
    let env = Env::without_cluster_tls().await;
    create(&env, &example("rask-cluster.yaml")).await;
    wait_until("the scheduler pod and rask-tls exist", T, async || {
        env.pods()
            .get_opt("rask-scheduler")
            .await
            .unwrap()
            .is_some()
            && secrets(&env).get_opt("rask-tls").await.unwrap().is_some()
    })
    .await;
    let pod = env.pods().get("rask-scheduler").await.unwrap();
    assert_eq!(tls_volume(&pod), None);
    assert_eq!(
        env_of(&pod)["DASK_SCHEDULER_ADDRESS"],
        "tcp://rask-scheduler.default.svc.cluster.local:8786"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_malformed_secret_is_reported_and_kept() {
    let env = Env::with_cluster_tls().await;
    let broken = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("rask-tls".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([(
            "ca.pem".to_owned(),
            "not a certificate".to_owned(),
        )])),
        ..Default::default()
    };
    let before = secrets(&env)
        .create(&PostParams::default(), &broken)
        .await
        .unwrap();
    create(&env, &example("rask-cluster.yaml")).await;
    wait_until("the status says the Secret cannot be used", T, async || {
        certificates_condition(&env, "rask")
            .await
            .is_some_and(|c| c.status == "False" && c.reason == "Malformed")
    })
    .await;
    let condition = certificates_condition(&env, "rask").await.unwrap();
    assert!(
        condition.message.contains("scheduler.pem: missing")
            && condition
                .message
                .contains("delete it to have new certificates made"),
        "{}",
        condition.message
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    wait_until("a CertificatesInvalid event", T, async || {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("CertificatesInvalid")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("rask")
            })
    })
    .await;
    let after = secrets(&env).get("rask-tls").await.unwrap();
    assert_eq!(after.data, before.data, "never replaced while it exists");
    env.shutdown().await;
}

#[tokio::test]
async fn an_unknown_tls_annotation_value_is_an_invalid_spec() {
    let env = Env::new().await;
    let mut c: DaskCluster = example("daskcluster.yaml");
    c.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.dask.org/tls".to_owned(),
        "off".to_owned(),
    )]));
    create(&env, &c).await;
    wait_until("the status names the annotation", T, async || {
        env.clusters()
            .get("foo")
            .await
            .unwrap()
            .status
            .is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Valid"
                        && c.status == "False"
                        && c.message.contains("kubernetes.dask.org/tls")
                        && c.message.contains("\"off\"")
                })
            })
    })
    .await;
    assert!(secrets(&env).get_opt("foo-tls").await.unwrap().is_none());
    env.shutdown().await;
}

/// The whole Kubernetes flow over TLS: the scheduler and worker stand-ins hold the cluster's
/// certificates (the test writes the Secret first, so they can start with it; the operator reads
/// it back and keeps it), and scaling down retires workers through the scheduler's HTTPS API with
/// the operator's certificate from that Secret, losing no result.
#[tokio::test]
async fn scale_down_retires_workers_through_a_tls_schedulers_https_api() {
    use kube::api::{Patch, PatchParams};
    use rask_operator::tls::{ClusterCerts, kubernetes_scheduler_names};

    let certs = ClusterCerts::generate(
        "rask",
        &kubernetes_scheduler_names("rask", "default"),
        now(),
    )
    .unwrap();
    let env = Env::with_tls_scheduler(&certs).await;
    assert!(env.scheduler.address().starts_with("tls://"));
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("rask-tls".into()),
            ..Default::default()
        },
        data: Some(
            certs
                .files()
                .into_iter()
                .map(|(n, t)| (n, k8s_openapi::ByteString(t.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    };
    secrets(&env)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    create(&env, &example("rask-cluster.yaml")).await;
    let scale = async |replicas: i32| {
        let patch = serde_json::json!({"spec": {"worker": {"replicas": replicas}}});
        env.clusters()
            .patch("rask", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    };
    scale(4).await;
    wait_until("4 workers registered over TLS", T, async || {
        env.worker_pods("rask").await.len() == 4 && env.scheduler_workers().await.len() == 4
    })
    .await;
    let cond = certificates_condition(&env, "rask").await.unwrap();
    assert_eq!(cond.status, "True", "{cond:?}");
    let client_tls = rask::core::tls::TlsConfig::from_pem_named(
        &rask::core::tls::TlsFiles {
            ca_file: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client-key.pem".into(),
        },
        certs.ca_pem.as_bytes(),
        certs.client.cert_pem.as_bytes(),
        certs.client.key_pem.as_bytes(),
    )
    .unwrap();
    let client = rask::client::Client::connect_with(env.scheduler.address(), Some(client_tls))
        .await
        .unwrap();
    let futures = client.map(rask::seed::INC, (0..60i64).map(rask::seed::lit));
    client.gather(&futures).await.unwrap();

    scale(2).await;
    wait_until("2 worker pods", T, async || {
        env.worker_pods("rask").await.len() == 2
    })
    .await;
    wait_until("the scheduler has the same 2 workers", T, async || {
        env.scheduler_workers().await == env.worker_pods("rask").await
    })
    .await;
    let total = client.submit_with(rask::seed::SUM, |d| {
        futures.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(
        total.result().await.unwrap(),
        rask::Value::Int((1..=60).sum())
    );
    // Retired by the scheduler (data moved), not lost and recomputed.
    assert_eq!(
        env.scheduler
            .handle()
            .snapshot()
            .await
            .unwrap()
            .tasks_computed_total,
        61
    );
    // No warning about blocked retirements: every one went through.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let blocked: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("ScaleDownBlocked"))
        .filter_map(|e| e.note)
        .collect();
    assert!(blocked.is_empty(), "{blocked:?}");
    env.shutdown().await;
}
