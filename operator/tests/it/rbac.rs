//! The operator under the chart's RBAC, in both of the chart's modes: what it needs is granted
//! (a cluster comes up and no request of the operator is refused), what it does not need is not
//! (a namespaced operator cannot reach other namespaces), and a permission missing from the
//! chart is a `403` that the operator reports where a user looks.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube_double::{KubeletConfig, RequestRecord};
use rask_operator::crd::{ClusterPhase, DaskCluster};

use crate::chart::{ChartScope, Rendered, render};
use crate::env::{Env, wait_until};

const T: Duration = Duration::from_secs(20);

async fn env_with(chart: Rendered) -> Env {
    Env::with_chart(rask_operator::crd::all(), KubeletConfig::default(), chart).await
}

fn operator_requests(env: &Env) -> Vec<RequestRecord> {
    let user = format!(
        "system:serviceaccount:{}:{}",
        env.chart.namespace, env.chart.account
    );
    env.api
        .requests()
        .into_iter()
        .filter(|r| r.user.as_deref() == Some(user.as_str()))
        .collect()
}

/// A cluster from Dask's manifest reaches Running with its workers, and the API server refused
/// none of the operator's requests.
async fn cluster_runs_with_only_the_charts_permissions(scope: ChartScope) {
    let env = env_with(render(scope, &[])).await;
    env.apply_example("daskcluster.yaml").await;
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
            st.phase == Some(ClusterPhase::Running) && st.ready_workers == 2
        },
    )
    .await;
    // Scale down through the group: the operator deletes a pod and patches status.
    let mut cluster = env.clusters().get("foo").await.unwrap();
    cluster.spec.worker.replicas = 1;
    env.clusters()
        .replace("foo", &Default::default(), &cluster)
        .await
        .unwrap();
    wait_until("1 worker pod is left", T, async || {
        env.worker_pods("foo").await.len() == 1
    })
    .await;
    let requests = operator_requests(&env);
    assert!(
        requests.len() > 10,
        "the operator made {} requests as its ServiceAccount",
        requests.len()
    );
    let refused: Vec<String> = requests
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        refused.is_empty(),
        "the chart's {scope:?} RBAC refused: {refused:?}"
    );
    // Every verb the operator needs was exercised under the chart's rules.
    for (verb, resource) in [
        (kube_double::Verb::Watch, "daskclusters"),
        (kube_double::Verb::Patch, "pods"),
        (kube_double::Verb::Patch, "services"),
        (kube_double::Verb::Patch, "daskworkergroups"),
        (kube_double::Verb::Delete, "pods"),
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.verb == Some(verb) && r.resource.as_deref() == Some(resource)),
            "no {verb:?} of {resource} by the operator"
        );
    }
    env.shutdown().await;
}

#[tokio::test]
async fn a_cluster_runs_with_the_cluster_wide_charts_permissions() {
    cluster_runs_with_only_the_charts_permissions(ChartScope::Cluster).await;
}

#[tokio::test]
async fn a_cluster_runs_with_the_namespaced_charts_permissions() {
    cluster_runs_with_only_the_charts_permissions(ChartScope::Namespace).await;
}

#[tokio::test]
async fn a_namespaced_operator_can_reach_nothing_outside_its_namespace() {
    let env = env_with(render(ChartScope::Namespace, &[])).await;
    let own: Api<Pod> = Api::namespaced(env.operator_client.clone(), "default");
    own.list(&ListParams::default()).await.unwrap();
    let user = format!("system:serviceaccount:default:{}", env.chart.account);
    let other: Api<Pod> = Api::namespaced(env.operator_client.clone(), "kube-system");
    match other.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert_eq!(
                s.message,
                format!(
                    "pods is forbidden: User \"{user}\" cannot list resource \"pods\" in API \
                     group \"\" in the namespace \"kube-system\""
                )
            );
        }
        other => panic!("listing pods in kube-system: {other:?}"),
    }
    let everywhere: Api<DaskCluster> = Api::all(env.operator_client.clone());
    match everywhere.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert!(
            s.code == 403 && s.message.ends_with("at the cluster scope"),
            "{s:?}"
        ),
        other => panic!("listing DaskClusters in every namespace: {other:?}"),
    }
    // Nor may it read what the chart does not grant, in its own namespace: Secrets it may make
    // and read by name (each cluster's certificates), never list.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.operator_client.clone(), "default");
    assert!(matches!(
        secrets.list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));
    env.shutdown().await;
}

#[tokio::test]
async fn a_permission_missing_from_the_chart_is_a_403_the_operator_reports() {
    let chart = render(ChartScope::from_env(), &[]).without("services", "patch");
    let env = env_with(chart).await;
    env.apply_example("daskcluster.yaml").await;
    let user = format!(
        "system:serviceaccount:{}:{}",
        env.chart.namespace, env.chart.account
    );
    let expected = format!(
        "services \"foo-scheduler\" is forbidden: User \"{user}\" cannot patch resource \
         \"services\" in API group \"\" in the namespace \"default\""
    );
    // The server refused the operator's apply of the scheduler Service...
    wait_until("the Service apply is refused", T, async || {
        operator_requests(&env).iter().any(|r| {
            r.code == 403
                && r.verb == Some(kube_double::Verb::Patch)
                && r.resource.as_deref() == Some("services")
        })
    })
    .await;
    // ... and the operator says so on the DaskCluster, with the server's message.
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    wait_until("a Forbidden Event on the DaskCluster", T, async || {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.reason.as_deref() == Some("Forbidden")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("foo")
                    && e.note.as_deref().is_some_and(|n| n.contains(&expected))
            })
    })
    .await;
    let metrics = env.metrics.encode().unwrap();
    assert!(
        metrics.contains(
            "rask_operator_reconcile_errors_total{controller=\"daskcluster\",error=\"forbidden\"}"
        ),
        "{metrics}"
    );
    assert!(
        env.metrics
            .diagnostics()
            .last_error
            .is_some_and(|e| e.contains(&expected)),
        "the diagnostics' last error names the missing permission"
    );
    // Nothing was made without the permission.
    let services: Api<Service> = Api::namespaced(env.client.clone(), "default");
    assert!(services.get_opt("foo-scheduler").await.unwrap().is_none());
    env.shutdown().await;
}
