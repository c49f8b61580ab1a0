//! The DaskWorkerGroup controller, one file per stage: validate → observe (the group's cluster
//! and pods) → plan (pure) → apply (create, delete, retire through the scheduler) → status.

mod apply;
pub mod build;
mod observe;
pub mod plan;
mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::Action;

use crate::context::Context;
use crate::controller::{self, Reconciled};
use crate::crd::DaskWorkerGroup;
use crate::error::Error;

pub const CONTROLLER: &str = <DaskWorkerGroup as Reconciled>::CONTROLLER;

pub async fn reconcile(group: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    controller::reconcile(group.as_ref(), &ctx, reconcile_inner(&group, &ctx)).await
}

async fn reconcile_inner(group: &DaskWorkerGroup, ctx: &Context) -> Result<Action, Error> {
    let previous = group.status.clone().unwrap_or_default();
    let v = match validate::validate(group) {
        Ok(v) => v,
        Err(invalid) => {
            let st = status::invalid_status(&previous, group, &invalid);
            return controller::reject(ctx, group, &invalid, st).await;
        }
    };
    let cluster = observe::cluster(ctx, &v).await?;
    // The cluster's rask workers use its certificates when the operator has TLS on.
    let v = match &cluster {
        Some(c) if crate::cluster::reach::uses_tls(ctx.cluster_tls, c) => {
            let secret = crate::cluster::certs::secret_name(&v.cluster);
            v.with_tls(&secret)
        }
        _ => v,
    };
    let observed = observe::observe(ctx, &v, cluster).await?;
    let Some(cluster) = &observed.cluster else {
        let st = status::missing_cluster_status(&previous, &v);
        controller::write_status(ctx, group, &st).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    apply::adopt(ctx, group, cluster).await?;
    let plan = plan::plan(v.replicas, &observed.pods);
    let outcome = if plan.is_empty() {
        apply::Outcome::default()
    } else {
        apply::carry_out(ctx, group, &v, cluster, &observed.cluster_labels(), &plan).await?
    };
    let st = status::status(&previous, &v, &observed.pods, &outcome);
    controller::write_status(ctx, group, &st).await?;
    if outcome.blocked.is_some() {
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    // Pod watches bring us back as pods change; the requeue is a safety net.
    Ok(Action::requeue(Duration::from_secs(if plan.is_empty() {
        300
    } else {
        5
    })))
}

pub fn error_policy(group: Arc<DaskWorkerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    controller::error_policy(group, error, ctx)
}
