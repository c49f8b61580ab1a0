//! DaskAutoscaler on Kubernetes: a burst of work scales a group up to its maximum and, once the
//! queue drains, back to its minimum, through retirement, with every result correct.

use std::time::Duration;

use kube::api::{Api, PostParams};
use rask::seed::{self, lit};
use rask_operator::crd::{DaskAutoscaler, DaskAutoscalerSpec, DaskCluster, DaskWorkerGroup};

use crate::env::{Env, example, wait_until};

fn autoscaler(min: i32, max: i32, down_s: i64) -> DaskAutoscaler {
    let mut a = DaskAutoscaler::new(
        "rask",
        DaskAutoscalerSpec {
            cluster: "rask".into(),
            minimum: min,
            maximum: max,
            worker_group: None,
            scale_down_stabilization_seconds: Some(down_s),
        },
    );
    a.metadata.namespace = Some("default".into());
    a
}

/// The default group's size: the autoscaler sizes the group, as dask-kubernetes' does (the
/// cluster's `spec.worker.replicas` stays as the user wrote it).
async fn replicas(env: &Env) -> i32 {
    let groups: Api<DaskWorkerGroup> = Api::namespaced(env.client.clone(), "default");
    groups
        .get("rask-default")
        .await
        .map(|g| g.spec.worker.replicas)
        .unwrap_or(-1)
}

#[tokio::test]
async fn a_burst_scales_to_the_maximum_and_back_to_the_minimum_losing_nothing() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    let api: Api<DaskAutoscaler> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &autoscaler(1, 4, 2))
        .await
        .unwrap();
    wait_until(
        "the autoscaler brings the cluster to its minimum",
        Duration::from_secs(30),
        async || replicas(&env).await == 1 && env.scheduler_workers().await.len() == 1,
    )
    .await;

    // 2,000 tasks of 20 ms (40 s of work for one thread): the queue builds.
    let client = env.connect().await;
    let futures = client.map(
        seed::SLEEP,
        (0..2000i64).map(|i| seed::Sleep {
            seconds: 0.02,
            value: lit(i),
        }),
    );
    wait_until(
        "scaled up to the maximum",
        Duration::from_secs(30),
        async || replicas(&env).await == 4,
    )
    .await;
    wait_until("4 workers joined", Duration::from_secs(30), async || {
        env.scheduler_workers().await.len() == 4
    })
    .await;
    let values = client.gather(&futures).await.unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, rask::Value::Int(i as i64), "result {i}");
    }
    let status = api.get("rask").await.unwrap().status.unwrap();
    assert!(status.last_decision.is_some());
    // Keep some results while scaling down: they must survive retirement.
    let kept: Vec<_> = futures[..10].to_vec();
    drop(futures);
    wait_until("back to the minimum", Duration::from_secs(60), async || {
        replicas(&env).await == 1
            && env.worker_pods("rask").await.len() == 1
            && env.scheduler_workers().await.len() == 1
    })
    .await;
    let total = client.submit_with(seed::SUM, |d| {
        kept.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(
        total.result().await.unwrap(),
        rask::Value::Int((0..10).sum())
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_invalid_autoscaler_says_why() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    let api: Api<DaskAutoscaler> = Api::namespaced(env.client.clone(), "default");
    api.create(&PostParams::default(), &autoscaler(5, 2, 30))
        .await
        .unwrap();
    wait_until("the status says why", Duration::from_secs(10), async || {
        api.get("rask").await.unwrap().status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "Valid"
                    && c.status == "False"
                    && c.message.contains("at most spec.maximum")
            })
        })
    })
    .await;
    assert_eq!(replicas(&env).await, 3, "nothing was scaled");
    env.shutdown().await;
}

#[tokio::test]
async fn an_idle_cluster_is_deleted_after_its_idle_timeout() {
    let env = Env::new().await;
    let mut c: DaskCluster = example("rask-cluster.yaml");
    c.spec.idle_timeout = Some(1);
    env.clusters()
        .create(&PostParams::default(), &c)
        .await
        .unwrap();
    wait_until(
        "the idle cluster is deleted",
        Duration::from_secs(30),
        async || env.clusters().get_opt("rask").await.unwrap().is_none(),
    )
    .await;
    env.shutdown().await;
}
