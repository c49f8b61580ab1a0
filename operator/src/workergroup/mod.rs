//! The DaskWorkerGroup controller: read the group's cluster and pods → validate → plan (pure) →
//! carry out (create, delete, retire through the scheduler) → status.

mod apply;
pub mod build;
pub mod plan;
mod status;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use serde_json::json;

use crate::cluster::status::is_ready;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::error::Error;
use crate::names::{
    self, ANNOTATION_TEMPLATE_HASH, FIELD_MANAGER, LABEL_CLUSTER, LABEL_WORKER_GROUP,
};
use plan::PodView;

pub const CONTROLLER: &str = "daskworkergroup";

pub async fn reconcile(group: Arc<DaskWorkerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .timed(CONTROLLER, reconcile_inner(&group, &ctx))
        .await
}

async fn reconcile_inner(group: &DaskWorkerGroup, ctx: &Context) -> Result<Action, Error> {
    if group.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = group.namespace().unwrap_or_else(|| "default".into());
    let name = group.name_any();
    let previous = group.status.clone().unwrap_or_default();
    let v = match validate::validate(group) {
        Ok(v) => v,
        Err(invalid) => {
            let g = group.metadata.generation.unwrap_or(0);
            let c = crate::conditions::condition(
                &previous.conditions,
                "Valid",
                false,
                "InvalidSpec",
                invalid.problems.join("; "),
                g,
            );
            let st = crate::crd::DaskWorkerGroupStatus {
                conditions: vec![c],
                observed_generation: Some(g),
                ..previous.clone()
            };
            if st != previous {
                ctx.event(
                    group,
                    EventType::Warning,
                    "InvalidSpec",
                    "Validate",
                    invalid.problems.join("; "),
                )
                .await;
                status::write(ctx, &namespace, &name, &st).await?;
            }
            return Ok(Action::await_change());
        }
    };

    // Stage 1: the cluster it belongs to, and its pods (read from the API server, not a cache,
    // so a pod created by the previous reconcile is never created twice).
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(cluster) = clusters.get_opt(&v.cluster).await? else {
        let g = v.generation;
        let c = crate::conditions::condition(
            &previous.conditions,
            "ClusterFound",
            false,
            "ClusterNotFound",
            format!("DaskCluster {} does not exist", v.cluster),
            g,
        );
        let st = crate::crd::DaskWorkerGroupStatus {
            conditions: vec![c],
            observed_generation: Some(g),
            ..previous.clone()
        };
        if st != previous {
            status::write(ctx, &namespace, &name, &st).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    adopt(ctx, group, &cluster).await?;
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LABEL_WORKER_GROUP}={name}")))
        .await?;
    let views: Vec<PodView> = listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| PodView {
            name: p.name_any(),
            ready: is_ready(p),
            terminal: matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            ),
            up_to_date: p.annotations().get(ANNOTATION_TEMPLATE_HASH) == Some(&v.template_hash),
            deletion_cost: p
                .annotations()
                .get(names::ANNOTATION_DELETION_COST)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            created: p
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0),
        })
        .collect();

    let plan = plan::plan(v.replicas, &views);
    let outcome = if plan.is_empty() {
        apply::Outcome::default()
    } else {
        apply::carry_out(ctx, group, &v, &plan).await?
    };
    let st = status::status(&previous, &v, &views, &outcome);
    if st != previous {
        status::write(ctx, &namespace, &name, &st).await?;
    }
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

/// Extra worker groups get the cluster as owner, so deleting the cluster removes them too.
async fn adopt(ctx: &Context, group: &DaskWorkerGroup, cluster: &DaskCluster) -> Result<(), Error> {
    let Some(owner) = crate::template::owner_ref(cluster) else {
        return Ok(());
    };
    let labelled = group.labels().get(LABEL_CLUSTER) == Some(&cluster.name_any());
    if labelled && group.owner_references().iter().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    let mut owner = owner;
    owner.controller = None; // the group stays under its own controller
    let api: Api<DaskWorkerGroup> =
        Api::namespaced(ctx.client.clone(), &group.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskWorkerGroup",
        "metadata": {
            "name": group.name_any(),
            "labels": {LABEL_CLUSTER: cluster.name_any()},
            "ownerReferences": [owner],
        },
    });
    api.patch(
        &group.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

pub fn error_policy(group: Arc<DaskWorkerGroup>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %group.name_any(), %error, "DaskWorkerGroup reconcile failed; retrying");
    ctx.metrics
        .failed(CONTROLLER, error.kind(), error.to_string());
    Action::requeue(Duration::from_secs(2))
}
