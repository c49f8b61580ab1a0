//! Invalid manifests: rejected by the schema where it can, otherwise a Failed status and an Event.

use std::time::Duration;

use kube::api::PostParams;
use rask_operator::crd::{ClusterPhase, DaskCluster};

use crate::env::{self, Env, wait_until};

fn example() -> DaskCluster {
    env::example("daskcluster.yaml")
}

#[tokio::test]
async fn the_schema_rejects_negative_replicas_and_missing_containers() {
    let env = Env::new().await;
    let mut c = example();
    c.spec.worker.replicas = -1;
    let err = env
        .clusters()
        .create(&PostParams::default(), &c)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("spec.worker.replicas"), "{text}");

    let mut value = serde_json::to_value(example()).unwrap();
    value["spec"]["scheduler"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("containers");
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        "default",
        &kube::api::ApiResource::erase::<DaskCluster>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
    let err = api
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("containers"), "{err}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_name_too_long_for_its_pods_gets_a_failed_status_with_the_reason() {
    let env = Env::new().await;
    let mut c = example();
    c.metadata.name = Some("a".repeat(54));
    env.clusters()
        .create(&PostParams::default(), &c)
        .await
        .unwrap();
    let name = "a".repeat(54);
    wait_until("the status says why", Duration::from_secs(10), async || {
        env.clusters()
            .get(&name)
            .await
            .unwrap()
            .status
            .is_some_and(|s| {
                s.phase == Some(ClusterPhase::Failed)
                    && s.conditions.iter().any(|c| {
                        c.type_ == "Valid"
                            && c.status == "False"
                            && c.message.contains("at most 53")
                    })
            })
    })
    .await;
    assert!(env.worker_pods(&name).await.is_empty());
    env.shutdown().await;
}

#[tokio::test]
async fn dasks_env_null_is_accepted() {
    let env = Env::new().await;
    let mut value = serde_json::to_value(example()).unwrap();
    value["spec"]["worker"]["spec"]["containers"][0]["env"] = serde_json::Value::Null;
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        env.client.clone(),
        "default",
        &kube::api::ApiResource::erase::<DaskCluster>(&()),
    );
    let obj: kube::api::DynamicObject = serde_json::from_value(value).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    wait_until("workers run", Duration::from_secs(20), async || {
        env.worker_pods("foo").await.len() == 2
    })
    .await;
    env.shutdown().await;
}
