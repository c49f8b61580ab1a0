//! Scaling and rolling, through the scheduler's retirement.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use rask_operator::crd::DaskWorkerGroup;
use serde_json::json;

use crate::env::{Env, wait_until};

const T: Duration = Duration::from_secs(30);

async fn scale(env: &Env, cluster: &str, replicas: i32) {
    let patch = json!({"spec": {"worker": {"replicas": replicas}}});
    env.clusters()
        .patch(cluster, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn scale_down_retires_exactly_the_workers_the_scheduler_named() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    scale(&env, "rask", 5).await;
    wait_until("5 workers registered with the scheduler", T, async || {
        env.worker_pods("rask").await.len() == 5 && env.scheduler_workers().await.len() == 5
    })
    .await;
    // Give every worker a result to hold, so retirement must move data.
    let client = env.connect().await;
    let futures = client.map(rask::seed::INC, (0..100i64).map(rask::seed::lit));
    client.gather(&futures).await.unwrap();

    scale(&env, "rask", 3).await;
    wait_until("3 worker pods", T, async || {
        env.worker_pods("rask").await.len() == 3
    })
    .await;
    wait_until("the scheduler has the same 3 workers", T, async || {
        env.scheduler_workers().await == env.worker_pods("rask").await
    })
    .await;
    // Nothing was lost: every result is still there, computed once.
    let total = client.submit_with(rask::seed::SUM, |d| {
        futures.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(
        total.result().await.unwrap(),
        rask::Value::Int((1..=100).sum())
    );
    assert_eq!(
        env.scheduler
            .handle()
            .snapshot()
            .await
            .unwrap()
            .tasks_computed_total,
        101
    );
    env.shutdown().await;
}

#[tokio::test]
async fn scaling_to_zero_keeps_the_worker_the_scheduler_would_not_retire() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    wait_until("3 workers registered", T, async || {
        env.scheduler_workers().await.len() == 3
    })
    .await;
    let client = env.connect().await;
    let held = client.submit(rask::seed::INC, rask::seed::lit(1));
    held.result().await.unwrap();
    scale(&env, "rask", 0).await;
    // Two go; the last one holds a result nobody else can take.
    wait_until("1 worker pod left", T, async || {
        env.worker_pods("rask").await.len() == 1
    })
    .await;
    let groups: kube::Api<DaskWorkerGroup> = kube::Api::namespaced(env.client.clone(), "default");
    wait_until("the group says why", T, async || {
        groups
            .get("rask-default")
            .await
            .unwrap()
            .status
            .is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "ScaleDownBlocked"
                        && c.status == "True"
                        && c.message.contains("did not retire")
                })
            })
    })
    .await;
    assert_eq!(held.result().await.unwrap(), rask::Value::Int(2));
    env.shutdown().await;
}

#[tokio::test]
async fn changing_the_worker_image_rolls_the_workers() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    wait_until("3 workers", T, async || {
        env.worker_pods("rask").await.len() == 3
    })
    .await;
    let before = env.worker_pods("rask").await;
    let patch = json!({"spec": {"worker": {"spec": {"containers": [{"name": "worker", "image": "ghcr.io/rask-dev/rask-worker:v2"}]}}}});
    env.clusters()
        .patch("rask", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_until("3 new workers on the new image", T, async || {
        let now = env.worker_pods("rask").await;
        if now.len() != 3 || now.iter().any(|n| before.contains(n)) {
            return false;
        }
        for n in &now {
            let pod = env.pods().get(n).await.unwrap();
            if pod.spec.unwrap().containers[0].image.as_deref()
                != Some("ghcr.io/rask-dev/rask-worker:v2")
            {
                return false;
            }
        }
        true
    })
    .await;
    env.shutdown().await;
}
