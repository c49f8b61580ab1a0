//! A cluster's life: created from Dask's manifest, pods lost and recreated, operator restarts,
//! deletion.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, ListParams};
use rask_operator::crd::{ClusterPhase, DaskWorkerGroup};

use crate::env::{Env, example, wait_until};

const T: Duration = Duration::from_secs(20);

fn env_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn daskcluster_manifest_becomes_scheduler_service_and_workers_with_dasks_env() {
    let env = Env::new().await;
    env.apply_example("daskcluster.yaml").await;
    wait_until("2 worker pods exist", T, async || {
        env.worker_pods("foo").await.len() == 2
    })
    .await;
    let scheduler = env.pods().get("foo-scheduler").await.unwrap();
    let senv = env_of(&scheduler);
    assert!(senv.contains(&(
        "DASK_SCHEDULER_ADDRESS".into(),
        "tcp://foo-scheduler.default.svc.cluster.local:8786".into()
    )));
    assert!(
        senv.iter()
            .any(|(k, v)| k == "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES"
                && v.contains("distributed.http.scheduler.api"))
    );
    let svc: Service = Api::namespaced(env.client.clone(), "default")
        .get("foo-scheduler")
        .await
        .unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap().len(), 2);
    for name in env.worker_pods("foo").await {
        let pod = env.pods().get(&name).await.unwrap();
        let wenv = env_of(&pod);
        assert!(
            wenv.contains(&("DASK_WORKER_NAME".into(), name.clone())),
            "{name}: {wenv:?}"
        );
        assert!(wenv.iter().any(|(k, _)| k == "DASK_SCHEDULER_ADDRESS"));
        let labels = pod.metadata.labels.unwrap();
        assert_eq!(labels["dask.org/workergroup-name"], "foo-default");
        assert_eq!(labels["dask.org/component"], "worker");
    }
    wait_until(
        "the cluster is Running with 2 ready workers",
        T,
        async || {
            let st = env
                .clusters()
                .get("foo")
                .await
                .unwrap()
                .status
                .unwrap_or_default();
            st.phase == Some(ClusterPhase::Running)
                && st.ready_workers == 2
                && st.observed_generation == Some(1)
        },
    )
    .await;
    let st = env.clusters().get("foo").await.unwrap().status.unwrap();
    let reasons: Vec<(&str, &str)> = st
        .conditions
        .iter()
        .map(|c| (c.type_.as_str(), c.status.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("Valid", "True"),
            ("SchedulerReady", "True"),
            ("WorkersReady", "True"),
            // Made for every cluster that does not opt out (docs/security.md).
            ("CertificatesReady", "True")
        ]
    );
    env.shutdown().await;
}

#[tokio::test]
async fn every_example_reconciles() {
    let env = Env::new().await;
    env.apply_example("daskcluster.yaml").await;
    env.apply_example("rask-cluster.yaml").await;
    wait_until("both clusters run their workers", T, async || {
        env.worker_pods("foo").await.len() == 2 && env.worker_pods("rask").await.len() == 3
    })
    .await;
    // The extra worker group joins foo.
    let wg: DaskWorkerGroup = example("daskworkergroup.yaml");
    let groups: Api<DaskWorkerGroup> = Api::namespaced(env.client.clone(), "default");
    groups.create(&Default::default(), &wg).await.unwrap();
    wait_until("foo has 3 workers across two groups", T, async || {
        env.worker_pods("foo").await.len() == 3
    })
    .await;
    wait_until("foo's status counts both groups", T, async || {
        env.clusters()
            .get("foo")
            .await
            .unwrap()
            .status
            .is_some_and(|s| s.desired_workers == 3 && s.ready_workers == 3)
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn lost_scheduler_and_worker_pods_are_recreated() {
    let env = Env::new().await;
    env.apply_example("daskcluster.yaml").await;
    wait_until("2 workers", T, async || {
        env.worker_pods("foo").await.len() == 2
    })
    .await;
    let before = env.worker_pods("foo").await;
    env.pods()
        .delete(&before[0], &DeleteParams::default())
        .await
        .unwrap();
    wait_until("a replacement worker", T, async || {
        let now = env.worker_pods("foo").await;
        now.len() == 2 && !now.contains(&before[0])
    })
    .await;
    let old_uid = env.pods().get("foo-scheduler").await.unwrap().metadata.uid;
    env.pods()
        .delete("foo-scheduler", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("a new scheduler pod", T, async || {
        env.pods()
            .get_opt("foo-scheduler")
            .await
            .unwrap()
            .is_some_and(|p| p.metadata.uid != old_uid && p.metadata.deletion_timestamp.is_none())
    })
    .await;
    // A worker lost with its node (evicted: Failed whatever its restartPolicy) is replaced.
    let victim = env.worker_pods("foo").await[1].clone();
    env.kubelet.evict("default", &victim).await.unwrap();
    wait_until("the evicted worker is replaced", T, async || {
        let now = env.worker_pods("foo").await;
        now.len() == 2 && !now.contains(&victim)
    })
    .await;
    // So is an evicted scheduler.
    let old_uid = env.pods().get("foo-scheduler").await.unwrap().metadata.uid;
    env.kubelet.evict("default", "foo-scheduler").await.unwrap();
    wait_until("a new scheduler pod after the eviction", T, async || {
        env.pods()
            .get_opt("foo-scheduler")
            .await
            .unwrap()
            .is_some_and(|p| {
                p.metadata.uid != old_uid
                    && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
            })
    })
    .await;
    // A worker whose container is killed (OOM) is restarted in place by the kubelet, as its
    // restartPolicy (Always) says: the operator leaves the pod be.
    let workers = env.worker_pods("foo").await;
    env.kubelet.kill("default", &workers[0]).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let restarted = env.pods().get(&workers[0]).await.unwrap();
    assert!(restarted.metadata.deletion_timestamp.is_none());
    let cs = restarted.status.unwrap().container_statuses.unwrap();
    assert_eq!(cs[0].restart_count, 1);
    assert_eq!(env.worker_pods("foo").await, workers);
    env.shutdown().await;
}

#[tokio::test]
async fn an_operator_restarted_mid_reconcile_converges_without_duplicates() {
    let mut env = Env::new().await;
    env.kill_operator().await;
    env.apply_example("rask-cluster.yaml").await;
    // Start, let it get part of the way, kill it; several times.
    for wait_ms in [5u64, 15, 30] {
        env.start_operator();
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        env.kill_operator().await;
    }
    env.start_operator();
    wait_until("3 workers", T, async || {
        env.worker_pods("rask").await.len() == 3
    })
    .await;
    // Stays converged: no extra pods appear.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.worker_pods("rask").await.len(), 3);
    let all = env.pods().list(&ListParams::default()).await.unwrap().items;
    let schedulers = all
        .iter()
        .filter(|p| p.metadata.name.as_deref() == Some("rask-scheduler"))
        .count();
    assert_eq!(schedulers, 1);
    env.shutdown().await;
}

#[tokio::test]
async fn deleting_the_cluster_removes_everything_it_owned() {
    let env = Env::new().await;
    env.apply_example("daskcluster.yaml").await;
    let wg: DaskWorkerGroup = example("daskworkergroup.yaml");
    let groups: Api<DaskWorkerGroup> = Api::namespaced(env.client.clone(), "default");
    groups.create(&Default::default(), &wg).await.unwrap();
    wait_until("3 workers", T, async || {
        env.worker_pods("foo").await.len() == 3
    })
    .await;
    env.clusters()
        .delete("foo", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("everything is gone", T, async || {
        let pods = env
            .pods()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        let svcs = Api::<Service>::namespaced(env.client.clone(), "default")
            .list(&ListParams::default().labels("dask.org/cluster-name=foo"))
            .await
            .unwrap()
            .items
            .len();
        let groups = groups
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len();
        pods == 0 && svcs == 0 && groups == 0
    })
    .await;
    env.shutdown().await;
}
