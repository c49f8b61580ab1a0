//! The DaskAutoscaler controller, one file per stage: validate → observe (the cluster and the
//! group) → plan (ownership, the policy's decision) → apply (adopt, scale) → status. Every second
//! it asks the cluster's scheduler what it wants, runs the policy, and sets the worker group's
//! size through its scale subresource. The worker-group controller then adds pods, or retires
//! pods through the scheduler before deleting them, so scaling down never loses a result.

mod apply;
mod observe;
pub mod plan;
mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::driver;
use super::policy::Policy;
use crate::backend::kubernetes::KubernetesBackend;
use crate::context::Context;
use crate::controller::{self, Reconciled};
use crate::crd::DaskAutoscaler;
use crate::error::Error;
use plan::Ownership;

pub const CONTROLLER: &str = <DaskAutoscaler as Reconciled>::CONTROLLER;
/// How often the scheduler is asked.
pub const POLL: Duration = Duration::from_secs(1);

pub async fn reconcile(a: Arc<DaskAutoscaler>, ctx: Arc<Context>) -> Result<Action, Error> {
    controller::reconcile(a.as_ref(), &ctx, reconcile_inner(&a, &ctx)).await
}

async fn reconcile_inner(a: &DaskAutoscaler, ctx: &Context) -> Result<Action, Error> {
    let previous = a.status.clone().unwrap_or_default();
    let v = match validate::validate(a) {
        Ok(v) => v,
        Err(invalid) => {
            let st = status::invalid_status(&previous, a, &invalid);
            return controller::reject(ctx, a, &invalid, st).await;
        }
    };
    let observed = observe::observe(ctx, &v).await?;
    let (Some(cluster), Some(group)) = (&observed.cluster, &observed.group) else {
        let message = format!(
            "DaskCluster {} or its worker group {} does not exist",
            v.cluster, v.group
        );
        let st = status::waiting_status(&previous, &v, "ClusterNotFound", message);
        controller::write_status(ctx, a, &st).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    match plan::ownership(
        a.owner_references(),
        &v.cluster,
        &cluster.uid().unwrap_or_default(),
    ) {
        Ownership::Owned => {}
        Ownership::Adopt => apply::adopt(ctx, a, cluster).await?,
        Ownership::Stale => {
            let message = format!(
                "owned by an earlier DaskCluster {}, since deleted: this one is not scaled",
                v.cluster
            );
            let st = status::waiting_status(&previous, &v, "ClusterReplaced", message);
            controller::write_status(ctx, a, &st).await?;
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    }
    let current = usize::try_from(group.spec.worker.replicas).unwrap_or(0);

    // Observe the group's pods and the scheduler, decide, carry the decision out.
    let (api, scheduler_url) = crate::cluster::reach::scheduler(ctx, cluster).await?;
    let backend = KubernetesBackend {
        client: ctx.client.clone(),
        namespace: v.namespace.clone(),
        cluster: v.cluster.clone(),
        scheduler_url,
    };
    let seen = driver::observe(&backend, &api, &v.group).await?;
    let decision = {
        let mut policies = ctx.policies.lock().unwrap_or_else(|p| p.into_inner());
        let policy = policies
            .entry(v.key.clone())
            .or_insert_with(|| Policy::new(v.settings.clone()));
        if *policy.settings() != v.settings {
            *policy = Policy::new(v.settings.clone());
        }
        policy.decide(&seen.observation)
    };
    let desired = plan::desired(current, &decision);
    apply::carry_out(ctx, a, &v, &backend, &seen, &decision, (current, desired)).await?;
    let st = status::status(
        &previous,
        &v,
        current,
        desired,
        decision.reason(),
        seen.scheduler_error.clone(),
    );
    controller::write_status(ctx, a, &st).await?;
    Ok(Action::requeue(POLL))
}

pub fn error_policy(a: Arc<DaskAutoscaler>, error: &Error, ctx: Arc<Context>) -> Action {
    controller::error_policy(a, error, ctx)
}
