//! `rask-operator run`: the controllers, and the HTTP server for health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use warp::Filter;

use crate::autoscaler;
use crate::cluster;
use crate::context::Context;
use crate::crd::{ClusterPhase, DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use crate::job;
use crate::metrics::Metrics;
use crate::names::{COMPONENT_JOB_RUNNER, LABEL_CLUSTER, LABEL_COMPONENT};
use crate::workergroup;

/// Where the controllers watch.
#[derive(Clone, Debug)]
pub enum Scope {
    AllNamespaces,
    Namespace(String),
}

fn api<K>(client: &kube::Client, scope: &Scope) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match scope {
        Scope::AllNamespaces => Api::all(client.clone()),
        Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
    }
}

/// Runs the DaskCluster, DaskWorkerGroup, DaskJob and DaskAutoscaler controllers until `shutdown`
/// resolves.
pub async fn controllers(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let shutdown_autoscalers = shutdown.clone();
    let shutdown_jobs = shutdown.clone();
    let ctx_jobs = ctx.clone();
    let ctx_autoscalers = ctx.clone();
    let cluster_pods = watcher::Config::default().labels(LABEL_CLUSTER);
    let worker_pods = watcher::Config::default().labels(&format!("{LABEL_COMPONENT}=worker"));
    // Children only trigger reconciles, which read what they need from the API server, so their
    // caches keep metadata only (the metadata API: hundreds of bytes per pod, not kilobytes).
    let cluster_controller = controller(api::<DaskCluster>(&client, &scope));
    let phases = tokio::spawn(count_phases(
        cluster_controller.store(),
        ctx.metrics.clone(),
    ));
    let cluster_store = cluster_controller.store();
    let clusters = cluster_controller
        .owns(
            api::<PartialObjectMeta<Service>>(&client, &scope),
            watcher::Config::default(),
        )
        .owns(
            api::<PartialObjectMeta<DaskWorkerGroup>>(&client, &scope),
            watcher::Config::default(),
        )
        // Its scheduler pod and every worker pod (the status counts ready workers, whose pods
        // belong to the worker groups) carry the cluster's label: one watch serves both.
        .watches(
            api::<PartialObjectMeta<Pod>>(&client, &scope),
            cluster_pods,
            |pod: PartialObjectMeta<Pod>| {
                let ns = pod.metadata.namespace.clone();
                pod.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_CLUSTER))
                    .map(|c| {
                        let r = ObjectRef::<DaskCluster>::new(c);
                        match ns {
                            Some(ns) => r.within(&ns),
                            None => r,
                        }
                    })
            },
        )
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown.clone())
        .run(cluster::reconcile, cluster::error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                controller_error("DaskCluster", &e);
            }
        });
    let group_controller = controller(api::<DaskWorkerGroup>(&client, &scope));
    let group_store = group_controller.store();
    let job_controller = controller(api::<DaskJob>(&client, &scope));
    let job_store = job_controller.store();
    let metrics = ctx.metrics.clone();
    let ready = tokio::spawn(async move {
        if cluster_store.wait_until_ready().await.is_ok()
            && group_store.wait_until_ready().await.is_ok()
            && job_store.wait_until_ready().await.is_ok()
        {
            tracing::info!("caches synced; ready");
            metrics.set_ready();
        }
    });
    let groups = group_controller
        .owns(api::<PartialObjectMeta<Pod>>(&client, &scope), worker_pods)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown)
        .run(workergroup::reconcile, workergroup::error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                controller_error("DaskWorkerGroup", &e);
            }
        });
    let autoscalers = controller(api::<DaskAutoscaler>(&client, &scope))
        .graceful_shutdown_on(shutdown_autoscalers)
        .run(
            autoscaler::kubernetes::reconcile,
            autoscaler::kubernetes::error_policy,
            ctx_autoscalers,
        )
        .for_each(|r| async move {
            if let Err(e) = r {
                controller_error("DaskAutoscaler", &e);
            }
        });
    // A job's cluster and runner pods are its children; metadata is all a trigger needs.
    let runner_pods =
        watcher::Config::default().labels(&format!("{LABEL_COMPONENT}={COMPONENT_JOB_RUNNER}"));
    let jobs = job_controller
        .owns(
            api::<PartialObjectMeta<DaskCluster>>(&client, &scope),
            watcher::Config::default(),
        )
        .owns(api::<PartialObjectMeta<Pod>>(&client, &scope), runner_pods)
        .with_config(controller_config())
        .graceful_shutdown_on(shutdown_jobs)
        .run(job::reconcile, job::error_policy, ctx_jobs)
        .for_each(|r| async move {
            if let Err(e) = r {
                controller_error("DaskJob", &e);
            }
        });
    futures::join!(clusters, groups, autoscalers, jobs);
    phases.abort();
    ready.abort();
}

/// Logs what a controller's stream reports. A failed reconcile is already logged and counted
/// by `error_policy`; a failed watch is not, and it leaves the controller blind (a `403` here
/// means the operator's Role or ClusterRole lacks `list` or `watch`), so it is a warning.
fn controller_error<R: std::fmt::Display>(
    controller: &str,
    e: &kube::runtime::controller::Error<R, watcher::Error>,
) {
    use kube::runtime::controller::Error as E;
    match e {
        E::QueueError(w) => {
            tracing::warn!(controller, error = %w, "watch failed; retrying");
        }
        _ => tracing::debug!(controller, error = %e, "controller event"),
    }
}

/// A controller for `K` whose cache holds the objects without their bookkeeping: the managed
/// fields (after the first status write, more than half of a cached DaskCluster's memory) and
/// kubectl's last-applied copy of the spec. Reconciles read neither: they apply objects built
/// afresh, and children do not inherit `kubectl.kubernetes.io/` annotations.
fn controller<K>(api: Api<K>) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = watcher(api, watcher::Config::default())
        .modify(strip_bookkeeping)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(objects, reader)
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn strip_bookkeeping<K: ResourceExt>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    obj.annotations_mut().remove(LAST_APPLIED);
}

/// Reconciles run at most this many at once per controller: a burst of new clusters is worked
/// through in order instead of all at once, which keeps memory flat (each reconcile holds its
/// API responses) without slowing one cluster's own progress.
const CONCURRENCY: u16 = 8;

fn controller_config() -> kube::runtime::controller::Config {
    kube::runtime::controller::Config::default().concurrency(CONCURRENCY)
}

/// Keeps the `rask_operator_clusters{phase}` gauge up to date from the controller's cache.
async fn count_phases(store: kube::runtime::reflector::Store<DaskCluster>, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let mut counts = [
            ("Created", 0i64),
            ("Pending", 0),
            ("Running", 0),
            ("Failed", 0),
            ("Unknown", 0),
        ];
        for c in store.state() {
            let i = match c.status.as_ref().and_then(|s| s.phase) {
                Some(ClusterPhase::Created) => 0,
                Some(ClusterPhase::Pending) => 1,
                Some(ClusterPhase::Running) => 2,
                Some(ClusterPhase::Failed) => 3,
                None => 4,
            };
            counts[i].1 += 1;
        }
        metrics.set_clusters_by_phase(&counts);
    }
}

/// Serves `/health` (alive), `/ready` (caches synced), `/metrics` and `/` (diagnostics as JSON)
/// until `shutdown` resolves.
pub async fn serve_http(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let health = warp::path("health").and(warp::path::end()).map(|| "ok");
    let m = metrics.clone();
    let prom = warp::path("metrics")
        .and(warp::path::end())
        .map(move || match m.encode() {
            Ok(text) => warp::reply::with_header(
                text,
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .into_response(),
            Err(_) => warp::reply::with_status(
                "cannot encode metrics",
                warp::http::StatusCode::INTERNAL_SERVER_ERROR,
            )
            .into_response(),
        });
    let r = metrics.clone();
    let ready = warp::path("ready").and(warp::path::end()).map(move || {
        if r.is_ready() {
            warp::reply::with_status("ready", warp::http::StatusCode::OK)
        } else {
            warp::reply::with_status(
                "starting: the watches have not synced yet",
                warp::http::StatusCode::SERVICE_UNAVAILABLE,
            )
        }
    });
    let diag = warp::path::end().map(move || warp::reply::json(&metrics.diagnostics()));
    let routes = warp::get().and(health.or(ready).or(prom).or(diag));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let server = warp::serve(routes)
        .incoming(listener)
        .graceful(shutdown)
        .run();
    Ok((bound, tokio::spawn(server)))
}

use warp::Reply;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[test]
    fn cached_objects_lose_managed_fields_and_last_applied_only() {
        let mut c: DaskCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubernetes.dask.org/v1",
            "kind": "DaskCluster",
            "metadata": {
                "name": "c",
                "annotations": {LAST_APPLIED: "{}", "team": "a"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {}}],
            },
            "spec": {
                "worker": {"replicas": 1, "spec": {"containers": []}},
                "scheduler": {"spec": {"containers": []}, "service": {}},
            },
            "status": {"phase": "Running"},
        }))
        .unwrap();
        let spec = serde_json::to_value(&c.spec).unwrap();
        strip_bookkeeping(&mut c);
        assert!(c.managed_fields().is_empty());
        assert_eq!(c.annotations().len(), 1);
        assert_eq!(c.annotations()["team"], "a");
        assert_eq!(serde_json::to_value(&c.spec).unwrap(), spec);
        assert_eq!(c.status.and_then(|s| s.phase), Some(ClusterPhase::Running));
    }

    #[tokio::test]
    async fn health_metrics_and_diagnostics_are_served() {
        let metrics = Arc::new(Metrics::default());
        metrics.reconciled("daskcluster", std::time::Duration::from_millis(3));
        metrics.failed("daskcluster", "conflict", "409 on pods".into());
        metrics.set_clusters_by_phase(&[("Running", 2), ("Failed", 1)]);
        let (addr, server) = serve_http(
            "127.0.0.1:0".parse().unwrap(),
            metrics,
            std::future::pending(),
        )
        .await
        .unwrap();
        assert!(get(addr, "/health").await.ends_with("ok"));
        let text = get(addr, "/metrics").await;
        assert!(
            text.contains("rask_operator_reconciles_total{controller=\"daskcluster\"} 1"),
            "{text}"
        );
        assert!(text.contains("rask_operator_reconcile_errors_total{controller=\"daskcluster\",error=\"conflict\"} 1"), "{text}");
        assert!(
            text.contains("rask_operator_clusters{phase=\"Running\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rask_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
        let diag = get(addr, "/").await;
        assert!(diag.contains("\"last_error\":\"409 on pods\""), "{diag}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
