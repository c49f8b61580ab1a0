//! The DaskAutoscaler controller: every second, asks the cluster's scheduler what it wants, runs
//! the policy, and sets the worker group's size through its scale subresource. The worker-group
//! controller then adds pods, or retires pods through the scheduler before deleting them, so
//! scaling down never loses a result.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use super::driver;
use super::policy::{Decision, Policy};
use crate::apply::apply_status;
use crate::backend::kubernetes::KubernetesBackend;
use crate::conditions::condition;
use crate::context::Context;
use crate::crd::{DaskAutoscaler, DaskAutoscalerStatus, DaskCluster, DaskWorkerGroup};
use crate::error::Error;
use crate::names;
use crate::spec::autoscaler::{AutoscalerSpec, Keys};

pub const CONTROLLER: &str = "daskautoscaler";
/// How often the scheduler is asked.
pub const POLL: Duration = Duration::from_secs(1);

pub async fn reconcile(a: Arc<DaskAutoscaler>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile_inner(&a, &ctx))
        .await
}

async fn write_status(
    ctx: &Context,
    a: &DaskAutoscaler,
    st: &DaskAutoscalerStatus,
) -> Result<(), Error> {
    if a.status.as_ref() == Some(st) {
        return Ok(());
    }
    let api: Api<DaskAutoscaler> =
        Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    let body =
        json!({"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskAutoscaler", "status": st});
    apply_status(&api, &a.name_any(), body).await?;
    Ok(())
}

async fn reconcile_inner(a: &DaskAutoscaler, ctx: &Context) -> Result<Action, Error> {
    if a.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = a.namespace().unwrap_or_else(|| "default".into());
    let g = a.metadata.generation.unwrap_or(0);
    let previous = a.status.clone().unwrap_or_default();
    let prev = &previous.conditions;

    // Validate.
    let group_name = a
        .spec
        .worker_group
        .clone()
        .unwrap_or_else(|| names::default_worker_group(&a.spec.cluster));
    let spec = match AutoscalerSpec::validate(
        group_name,
        i64::from(a.spec.minimum),
        i64::from(a.spec.maximum),
        a.spec.scale_down_stabilization_seconds,
        Keys::RESOURCE,
    ) {
        Ok(spec) => spec,
        Err(invalid) => {
            let msg = invalid.message;
            let st = DaskAutoscalerStatus {
                observed_generation: Some(g),
                conditions: vec![condition(
                    prev,
                    "Valid",
                    false,
                    "InvalidSpec",
                    msg.clone(),
                    g,
                )],
                ..previous.clone()
            };
            if a.status.as_ref() != Some(&st) {
                ctx.event(a, EventType::Warning, "InvalidSpec", "Validate", msg)
                    .await;
            }
            write_status(ctx, a, &st).await?;
            return Ok(Action::await_change());
        }
    };

    // Read the cluster and the group it scales.
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let groups: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let group_name = spec.group.clone();
    let (Some(_cluster), Some(group)) = (
        clusters.get_opt(&a.spec.cluster).await?,
        groups.get_opt(&group_name).await?,
    ) else {
        let msg = format!(
            "DaskCluster {} or its worker group {group_name} does not exist",
            a.spec.cluster
        );
        let st = DaskAutoscalerStatus {
            observed_generation: Some(g),
            conditions: vec![condition(prev, "Ready", false, "ClusterNotFound", msg, g)],
            ..previous.clone()
        };
        write_status(ctx, a, &st).await?;
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let current = usize::try_from(group.spec.worker.replicas).unwrap_or(0);

    // Observe the group's pods and the scheduler, decide, apply (through the scale subresource;
    // the worker-group controller then adds pods, or retires the chosen ones first).
    let backend = KubernetesBackend {
        client: ctx.client.clone(),
        namespace: ns.clone(),
        cluster: a.spec.cluster.clone(),
        scheduler_url: (ctx.scheduler_url)(&a.spec.cluster, &ns),
    };
    let observed = driver::observe(&backend, &ctx.scheduler_api, &group_name).await?;
    let key = a.uid().unwrap_or_else(|| format!("{ns}/{}", a.name_any()));
    let settings = spec.settings;
    let decision = {
        let mut policies = ctx.policies.lock().unwrap_or_else(|p| p.into_inner());
        let policy = policies
            .entry(key)
            .or_insert_with(|| Policy::new(settings.clone()));
        if *policy.settings() != settings {
            *policy = Policy::new(settings);
        }
        policy.decide(&observed.observation)
    };
    driver::apply(&backend, &group_name, &decision, &observed).await?;
    let desired = match &decision {
        Decision::ScaleUp { by, .. } => current + by,
        Decision::Retire {
            workers, unstarted, ..
        } => current.saturating_sub(workers.len() + unstarted),
        Decision::Hold { .. } => current,
    };
    if desired != current {
        let note = format!(
            "{group_name}: {current} → {desired} workers ({})",
            decision.reason()
        );
        tracing::info!(autoscaler = %a.name_any(), %note, "scaling");
        ctx.event(a, EventType::Normal, "Scaled", "Scale", note)
            .await;
    }
    let api_error = observed.scheduler_error;

    // Status.
    let ready = match &api_error {
        Some(e) => condition(prev, "Ready", false, "SchedulerUnreachable", e.clone(), g),
        None => condition(
            prev,
            "Ready",
            true,
            "Polling",
            format!("the scheduler is asked every {POLL:?}"),
            g,
        ),
    };
    let st = DaskAutoscalerStatus {
        desired: Some(desired as i32),
        current: Some(current as i32),
        last_decision: Some(decision.reason().to_owned()),
        observed_generation: Some(g),
        conditions: vec![
            condition(prev, "Valid", true, "Valid", "the spec is valid".into(), g),
            ready,
        ],
    };
    write_status(ctx, a, &st).await?;
    Ok(Action::requeue(POLL))
}

pub fn error_policy(a: Arc<DaskAutoscaler>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %a.name_any(), %error, "DaskAutoscaler reconcile failed; retrying");
    ctx.metrics
        .failed(CONTROLLER, error.kind(), error.to_string());
    Action::requeue(Duration::from_secs(2))
}
