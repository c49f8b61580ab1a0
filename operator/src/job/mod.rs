//! The DaskJob controller: read the job's cluster and runner pods → validate → plan (pure) →
//! create → status → delete. A job gets a DaskCluster named after it; once the cluster's
//! scheduler is ready, a runner pod; when the runner ends, the job's status says how, the
//! cluster is deleted, and after `ttlSecondsAfterFinished` the job too.

mod apply;
pub mod build;
pub mod plan;
pub mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::context::Context;
use crate::controller::{self, Reconciled};
use crate::crd::DaskJob;
use crate::error::Error;

pub const CONTROLLER: &str = <DaskJob as Reconciled>::CONTROLLER;

pub async fn reconcile(job: Arc<DaskJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    controller::reconcile(job.as_ref(), &ctx, reconcile_inner(&job, &ctx)).await
}

async fn reconcile_inner(job: &DaskJob, ctx: &Context) -> Result<Action, Error> {
    let previous = job.status.clone().unwrap_or_default();
    let v = match validate::validate(job) {
        Ok(v) => v,
        Err(invalid) => {
            let st = status::invalid_status(&previous, job, &invalid);
            return controller::reject(ctx, job, &invalid, st).await;
        }
    };
    let v = v.with_pod_tls(ctx.cluster_tls);
    let observed = status::observe(ctx, &v).await?;
    let plan = plan::plan(&v, &previous, &observed, Timestamp::now());
    // Creations first, then the status that records them, then deletions: a restart between
    // any two of these finds the same plan again.
    apply::carry_out(ctx, job, &v, plan.steps.iter().filter(|s| !s.is_deletion())).await?;
    controller::write_status(ctx, job, &plan.status).await?;
    for n in &plan.notes {
        let kind = if n.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(job, kind, n.reason, "Reconcile", n.message.clone())
            .await;
    }
    apply::carry_out(ctx, job, &v, plan.steps.iter().filter(|s| s.is_deletion())).await?;
    // Pod and cluster watches bring us back on changes; deadlines and TTLs need a timer.
    let safety = Duration::from_secs(300);
    Ok(Action::requeue(
        plan.requeue
            .map(|d| d.min(safety) + Duration::from_millis(50))
            .unwrap_or(safety),
    ))
}

pub fn error_policy(job: Arc<DaskJob>, error: &Error, ctx: Arc<Context>) -> Action {
    controller::error_policy(job, error, ctx)
}
