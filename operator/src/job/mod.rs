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
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use crate::context::Context;
use crate::crd::DaskJob;
use crate::error::Error;

pub const CONTROLLER: &str = "daskjob";

pub async fn reconcile(job: Arc<DaskJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile_inner(&job, &ctx))
        .await
}

async fn reconcile_inner(job: &DaskJob, ctx: &Context) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some() {
        // The cluster and runner pods carry owner references: the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = job.namespace().unwrap_or_else(|| "default".into());
    let name = job.name_any();
    let previous = job.status.clone().unwrap_or_default();

    let v = match validate::validate(job) {
        Ok(v) => v,
        Err(invalid) => {
            let st = status::invalid_status(&previous, job, &invalid);
            if st != previous {
                ctx.event(
                    job,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    invalid.problems.join("; "),
                )
                .await;
                status::write(ctx, &namespace, &name, &st).await?;
            }
            tracing::warn!(%namespace, %name, error = %invalid, "invalid DaskJob; waiting for a change");
            return Ok(Action::await_change());
        }
    };
    let observed = status::observe(ctx, &v).await?;
    let plan = plan::plan(&v, &previous, &observed, Timestamp::now());
    // Creations first, then the status that records them, then deletions: a restart between
    // any two of these finds the same plan again.
    apply::carry_out(ctx, job, &v, plan.steps.iter().filter(|s| !s.is_deletion())).await?;
    if plan.status != previous {
        status::write(ctx, &namespace, &name, &plan.status).await?;
    }
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
    tracing::warn!(name = %job.name_any(), %error, "DaskJob reconcile failed; retrying");
    ctx.metrics
        .failed(CONTROLLER, error.kind(), error.to_string());
    Action::requeue(Duration::from_secs(2))
}
