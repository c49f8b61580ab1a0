//! What dask-kubernetes' users rely on, pinned against its operator's behaviour: a worker group
//! owns its size once made, an autoscaler belongs to its cluster, the phases a client waits on,
//! and status written where the installed CRDs have no status subresource.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube_double::KubeletConfig;
use rask_operator::crd::{
    ClusterPhase, DaskAutoscaler, DaskAutoscalerSpec, DaskCluster, DaskWorkerGroup,
};

use crate::env::{Env, example, wait_until};

const T: Duration = Duration::from_secs(20);

fn groups(env: &Env) -> Api<DaskWorkerGroup> {
    Api::namespaced(env.client.clone(), "default")
}

async fn group_replicas(env: &Env) -> i32 {
    groups(env)
        .get("rask-default")
        .await
        .map(|g| g.spec.worker.replicas)
        .unwrap_or(-1)
}

/// A JSON merge patch of the group's `spec.worker.replicas`, as kr8s' `scale()` (and so
/// `KubeCluster.scale`) sends it.
async fn scale_group_as_kr8s(env: &Env, n: i32) {
    let patch = serde_json::json!({"spec": {"worker": {"replicas": n}}});
    let pp = PatchParams {
        field_manager: Some("kr8s".into()),
        ..PatchParams::default()
    };
    groups(env)
        .patch("rask-default", &pp, &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Makes the cluster controller reconcile: a change of its spec that its workers' template does
/// not carry (a change of its metadata would roll the workers, which inherit it).
async fn touch_cluster(env: &Env, value: i64) {
    let patch = serde_json::json!({"spec": {"idleTimeout": 3600 + value}});
    env.clusters()
        .patch("rask", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_default_group_owns_its_size_and_only_the_clusters_own_changes_are_passed_on() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    wait_until("3 worker pods", T, async || {
        env.worker_pods("rask").await.len() == 3
    })
    .await;
    scale_group_as_kr8s(&env, 1).await;
    wait_until("the group scales to 1", T, async || {
        env.worker_pods("rask").await.len() == 1
    })
    .await;
    // The cluster is reconciled again (and again): the group keeps the size it was given.
    for i in 0..3 {
        touch_cluster(&env, i).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            group_replicas(&env).await,
            1,
            "reconcile {i} undid the scale"
        );
    }
    assert_eq!(env.worker_pods("rask").await.len(), 1);
    // `kubectl scale daskcluster rask --replicas 2`: a change of the cluster's own replicas.
    let pp = PatchParams::default();
    env.clusters()
        .patch_scale(
            "rask",
            &pp,
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 2}})),
        )
        .await
        .unwrap();
    wait_until("the cluster's change reaches the group", T, async || {
        group_replicas(&env).await == 2 && env.worker_pods("rask").await.len() == 2
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn a_cluster_goes_created_pending_running_as_clients_wait_for() {
    let env = Env::with_kubelet(KubeletConfig {
        start_delay: Duration::from_millis(300),
        ..KubeletConfig::default()
    })
    .await;
    let clusters = env.clusters();
    let phases = tokio::spawn(async move {
        let cfg = watcher::Config::default().fields("metadata.name=rask");
        let mut seen: Vec<ClusterPhase> = Vec::new();
        let mut stream = watcher(clusters, cfg).applied_objects().boxed();
        while let Some(Ok(c)) = stream.next().await {
            if let Some(p) = c.status.and_then(|s| s.phase)
                && seen.last() != Some(&p)
            {
                seen.push(p);
                if p == ClusterPhase::Running {
                    break;
                }
            }
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.apply_example("rask-cluster.yaml").await;
    let seen = tokio::time::timeout(T, phases).await.unwrap().unwrap();
    assert_eq!(
        seen,
        [
            ClusterPhase::Created,
            ClusterPhase::Pending,
            ClusterPhase::Running
        ]
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_autoscaler_is_adopted_by_its_cluster_and_deleted_with_it() {
    let env = Env::new().await;
    env.apply_example("rask-cluster.yaml").await;
    let autoscalers: Api<DaskAutoscaler> = Api::namespaced(env.client.clone(), "default");
    let mut a = DaskAutoscaler::new(
        "rask",
        DaskAutoscalerSpec {
            cluster: "rask".into(),
            minimum: 1,
            maximum: 3,
            worker_group: None,
            scale_down_stabilization_seconds: None,
        },
    );
    a.metadata.namespace = Some("default".into());
    autoscalers
        .create(&PostParams::default(), &a)
        .await
        .unwrap();
    let uid = env.clusters().get("rask").await.unwrap().metadata.uid;
    wait_until("the cluster adopts the autoscaler", T, async || {
        autoscalers.get("rask").await.is_ok_and(|a| {
            a.metadata
                .owner_references
                .unwrap_or_default()
                .iter()
                .any(|o| o.kind == "DaskCluster" && Some(&o.uid) == uid.as_ref())
        })
    })
    .await;
    env.clusters()
        .delete("rask", &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the autoscaler goes with its cluster", T, async || {
        autoscalers.get_opt("rask").await.unwrap().is_none()
    })
    .await;
    env.shutdown().await;
}

/// dask-kubernetes' CRDs have no status subresource on DaskCluster (nor DaskAutoscaler): rask's
/// CRDs without it stand in for them here (tests/kubernetes starts from its real CRD files).
#[tokio::test]
async fn status_is_written_where_the_crds_have_no_status_subresource() {
    let crds = rask_operator::crd::all()
        .into_iter()
        .map(|mut crd| {
            for v in &mut crd.spec.versions {
                if let Some(s) = &mut v.subresources {
                    s.status = None;
                }
            }
            crd
        })
        .collect();
    let env = Env::with(crds, KubeletConfig::default()).await;
    let c = env.apply_example("rask-cluster.yaml").await;
    wait_until("the cluster is Running", T, async || {
        env.clusters().get("rask").await.is_ok_and(|c| {
            c.status
                .is_some_and(|s| s.phase == Some(ClusterPhase::Running) && s.ready_workers == 3)
        })
    })
    .await;
    let group = groups(&env).get("rask-default").await.unwrap();
    assert_eq!(group.status.map(|s| s.ready_replicas), Some(3));
    // The spec is untouched by the status writes.
    let now = env.clusters().get("rask").await.unwrap();
    assert_eq!(now.spec, c.spec);
    let pods: Api<Pod> = env.pods();
    assert_eq!(
        pods.list(&ListParams::default().labels("dask.org/cluster-name=rask"))
            .await
            .unwrap()
            .items
            .len(),
        4
    );
    env.shutdown().await;
}

#[tokio::test]
async fn extra_groups_pods_carry_the_clusters_labels() {
    let env = Env::new().await;
    let mut c: DaskCluster = example("rask-cluster.yaml");
    c.metadata.labels = Some([("team".to_owned(), "data".to_owned())].into());
    c.spec.worker.replicas = 0;
    env.clusters()
        .create(&PostParams::default(), &c)
        .await
        .unwrap();
    let mut g: DaskWorkerGroup = example("daskworkergroup.yaml");
    g.spec.cluster = "rask".into();
    g.metadata.name = Some("rask-extra".into());
    g.spec.worker.replicas = 1;
    g.spec.worker.spec = c.spec.worker.spec.clone();
    groups(&env)
        .create(&PostParams::default(), &g)
        .await
        .unwrap();
    wait_until(
        "the extra group's pod has the cluster's label",
        T,
        async || {
            env.pods()
                .list(&ListParams::default().labels("dask.org/workergroup-name=rask-extra"))
                .await
                .unwrap()
                .items
                .iter()
                .any(|p| {
                    let l = p.metadata.labels.clone().unwrap_or_default();
                    l.get("team").map(String::as_str) == Some("data")
                        && l.get("sidecar.istio.io/inject").map(String::as_str) == Some("false")
                })
        },
    )
    .await;
    env.shutdown().await;
}
