//! Stage 4 for DaskAutoscalers: the cluster adopts the autoscaler, and a decision is carried out
//! through the group's scale subresource (the worker-group controller then adds pods, or retires
//! the chosen ones through the scheduler first).

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::validate::ValidatedAutoscaler;
use crate::autoscaler::driver;
use crate::autoscaler::policy::Decision;
use crate::backend::kubernetes::KubernetesBackend;
use crate::context::Context;
use crate::crd::{DaskAutoscaler, DaskCluster};
use crate::error::Error;
use crate::names::{FIELD_MANAGER, LABEL_CLUSTER};

/// Makes `cluster` an owner of the autoscaler (not its controller) and labels it with the
/// cluster's name: deleting the cluster deletes its autoscaler, as in dask-kubernetes.
pub async fn adopt(ctx: &Context, a: &DaskAutoscaler, cluster: &DaskCluster) -> Result<(), Error> {
    let Some(mut owner) = crate::template::owner_ref(cluster) else {
        return Ok(());
    };
    owner.controller = None;
    let api: Api<DaskAutoscaler> =
        Api::namespaced(ctx.client.clone(), &a.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": {
            "name": a.name_any(),
            "labels": {LABEL_CLUSTER: cluster.name_any()},
            "ownerReferences": [owner],
        },
    });
    api.patch(
        &a.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    ctx.event(
        a,
        EventType::Normal,
        "Adopted",
        "Adopt",
        format!("Adopted by DaskCluster {}", cluster.name_any()),
    )
    .await;
    Ok(())
}

/// Carries `decision` out and says so in an Event when the size changes.
pub async fn carry_out(
    ctx: &Context,
    a: &DaskAutoscaler,
    v: &ValidatedAutoscaler,
    backend: &KubernetesBackend,
    observed: &driver::Observed,
    decision: &Decision,
    (current, desired): (usize, usize),
) -> Result<(), Error> {
    driver::apply(backend, &v.group, decision, observed).await?;
    if desired != current {
        let note = format!(
            "{}: {current} → {desired} workers ({})",
            v.group,
            decision.reason()
        );
        tracing::info!(autoscaler = %v.name, %note, "scaling");
        ctx.event(a, EventType::Normal, "Scaled", "Scale", note)
            .await;
    }
    Ok(())
}
