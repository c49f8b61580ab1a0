//! `rask-operator run`: the controllers, and the HTTP server for health and metrics.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use warp::Filter;

use crate::cluster;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::metrics::Metrics;
use crate::names::{LABEL_CLUSTER, LABEL_COMPONENT};
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

/// Runs the DaskCluster and DaskWorkerGroup controllers until `shutdown` resolves.
pub async fn controllers(
    ctx: Arc<Context>,
    scope: Scope,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let shutdown = futures::future::FutureExt::shared(Box::pin(shutdown));
    let worker_pods = watcher::Config::default().labels(&format!("{LABEL_COMPONENT}=worker"));
    let clusters = Controller::new(
        api::<DaskCluster>(&client, &scope),
        watcher::Config::default(),
    )
    .owns(api::<Pod>(&client, &scope), watcher::Config::default())
    .owns(api::<Service>(&client, &scope), watcher::Config::default())
    .owns(
        api::<DaskWorkerGroup>(&client, &scope),
        watcher::Config::default(),
    )
    // The cluster's status counts ready workers, whose pods belong to its worker groups.
    .watches(api::<Pod>(&client, &scope), worker_pods, |pod: Pod| {
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
    })
    .graceful_shutdown_on(shutdown.clone())
    .run(cluster::reconcile, cluster::error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "DaskCluster controller event");
        }
    });
    let groups = Controller::new(
        api::<DaskWorkerGroup>(&client, &scope),
        watcher::Config::default(),
    )
    .owns(api::<Pod>(&client, &scope), watcher::Config::default())
    .graceful_shutdown_on(shutdown)
    .run(workergroup::reconcile, workergroup::error_policy, ctx)
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "DaskWorkerGroup controller event");
        }
    });
    futures::join!(clusters, groups);
}

/// Serves `/health`, `/metrics` and `/` (diagnostics as JSON) until `shutdown` resolves.
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
    let diag = warp::path::end().map(move || warp::reply::json(&metrics.diagnostics()));
    let routes = warp::get().and(health.or(prom).or(diag));
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
