//! The DaskCluster controller: read → validate → build → apply → status.

mod apply;
pub mod build;
pub mod certs;
pub mod reach;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::context::Context;
use crate::controller::{self, Reconciled};
use crate::crd::DaskCluster;
use crate::error::Error;
use apply::{Desired, apply_cluster, ensure_certificates};
use certs::Certificates;

pub const CONTROLLER: &str = <DaskCluster as Reconciled>::CONTROLLER;

pub async fn reconcile(cluster: Arc<DaskCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    controller::reconcile(cluster.as_ref(), &ctx, reconcile_inner(&cluster, &ctx)).await
}

async fn reconcile_inner(cluster: &DaskCluster, ctx: &Arc<Context>) -> Result<Action, Error> {
    let previous = cluster.status.clone().unwrap_or_default();
    let v = match validate::validate(cluster) {
        Ok(v) => v,
        Err(invalid) => {
            let st = status::invalid_status(&previous, cluster, &invalid);
            return controller::reject(ctx, cluster, &invalid, st).await;
        }
    };
    if previous.phase.is_none() {
        controller::write_status(ctx, cluster, &status::created_status(cluster)).await?;
    }
    let certificates = ensure_certificates(ctx, cluster, &v).await?;
    if let Certificates::Malformed(why) = &certificates {
        let reported = previous
            .conditions
            .iter()
            .any(|c| c.type_ == status::CERTIFICATES && c.message == *why);
        if !reported {
            tracing::warn!(cluster = %v.name, %why, "unusable certificates");
            ctx.event(
                cluster,
                EventType::Warning,
                "CertificatesInvalid",
                "Reconcile",
                why.clone(),
            )
            .await;
        }
    }
    let v = v.with_pod_tls(ctx.cluster_tls);
    let desired = Desired {
        scheduler: build::scheduler_pod(&v),
        service: build::scheduler_service(&v),
    };
    apply_cluster(ctx, cluster, &v, &desired).await?;

    let observed = status::observe(ctx, &v).await?;
    let st = status::status(&previous, &v, &observed, &certificates);
    controller::write_status(ctx, cluster, &st).await?;
    if let Some(timeout) = v.idle_timeout {
        // Asked off the reconcile path: an unreachable scheduler must not hold up other clusters.
        let (ctx, cluster, v) = (ctx.clone(), cluster.clone(), v.clone());
        tokio::spawn(async move {
            if let Err(e) = idle_check(&ctx, &cluster, &v, timeout).await {
                tracing::warn!(cluster = %v.name, error = %e, "idle check failed");
            }
        });
        return Ok(Action::requeue(timeout.min(Duration::from_secs(5))));
    }
    // Pod and worker-group watches bring us back on changes; the requeue is a safety net.
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// `spec.idleTimeout`: deletes the cluster once its scheduler has been idle that long (Dask's
/// `/api/v1/check_idle`). An unreachable scheduler is not idle.
async fn idle_check(
    ctx: &Context,
    cluster: &DaskCluster,
    v: &validate::ValidatedCluster,
    timeout: Duration,
) -> Result<(), Error> {
    let (api, base) = reach::scheduler(ctx, cluster).await?;
    let now = crate::clock::now();
    // A quick question: a scheduler that cannot answer within 2 s is not idle, and a slow answer
    // must not hold up the other clusters' reconciles.
    let asked = tokio::time::timeout(Duration::from_secs(2), api.idle_since(&base)).await;
    let answer = asked.unwrap_or_else(|_| {
        Err(crate::scheduler_api::SchedulerApiError::Unreachable {
            url: base.clone(),
            reason: "no answer within 2 s".into(),
        })
    });
    match answer {
        Ok(Some(since)) if now - since >= timeout.as_secs_f64() => {
            let note = format!(
                "the scheduler has been idle for {:.0} s (idleTimeout {} s); deleting the cluster",
                now - since,
                timeout.as_secs()
            );
            tracing::info!(cluster = %v.name, %note);
            ctx.event(cluster, EventType::Normal, "IdleTimeout", "Delete", note)
                .await;
            let api: kube::Api<DaskCluster> =
                kube::Api::namespaced(ctx.client.clone(), &v.namespace);
            match api.delete(&v.name, &Default::default()).await {
                Ok(_) => {}
                Err(e) if crate::error::is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::debug!(cluster = %v.name, error = %e, "idle check: scheduler not reachable");
            Ok(())
        }
    }
}

pub fn error_policy(cluster: Arc<DaskCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    controller::error_policy(cluster, error, ctx)
}
