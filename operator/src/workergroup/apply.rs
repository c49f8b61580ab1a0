//! Stage 4 for worker groups: carry out a plan. Ready pods are only deleted after the scheduler
//! retired them (moved their results to other workers); if it cannot be asked, they stay.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::events::EventType;
use serde_json::json;

use super::build::worker_pod;
use super::plan::Plan;
use super::validate::ValidatedGroup;
use crate::apply::apply;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::error::{Error, is_not_found};
use crate::names::{self, FIELD_MANAGER, LABEL_CLUSTER};

/// What carrying out a plan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    /// Why ready pods that should go were kept (scheduler unreachable, or it kept their data).
    pub blocked: Option<String>,
}

async fn delete_pod(pods: &Api<Pod>, name: &str) -> Result<(), Error> {
    match pods.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn carry_out(
    ctx: &Context,
    group: &DaskWorkerGroup,
    v: &ValidatedGroup,
    cluster: &DaskCluster,
    cluster_labels: &BTreeMap<String, String>,
    plan: &Plan,
) -> Result<Outcome, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let mut out = Outcome::default();
    for _ in 0..plan.create {
        let name = names::new_worker_pod_name(&v.name);
        apply(&pods, &worker_pod(v, cluster_labels, &name)).await?;
        out.created.push(name);
    }
    for name in &plan.delete {
        delete_pod(&pods, name).await?;
        out.deleted.push(name.clone());
    }
    if !plan.retire.is_empty() {
        match retire(ctx, cluster, &plan.retire).await {
            Ok((retired, kept)) => {
                for name in &retired {
                    delete_pod(&pods, name).await?;
                    out.deleted.push(name.clone());
                }
                if !kept.is_empty() {
                    out.blocked = Some(format!(
                        "the scheduler did not retire {} (their results have nowhere to go)",
                        kept.join(", ")
                    ));
                }
            }
            Err(e) => {
                out.blocked = Some(format!(
                    "not removing ready workers {}: {e}",
                    plan.retire.join(", ")
                ))
            }
        }
    }
    if !out.created.is_empty() {
        let note = format!("Created worker pods {}", out.created.join(", "));
        ctx.event(group, EventType::Normal, "WorkersCreated", "Scale", note)
            .await;
    }
    if !out.deleted.is_empty() {
        let note = format!("Deleted worker pods {}", out.deleted.join(", "));
        ctx.event(group, EventType::Normal, "WorkersDeleted", "Scale", note)
            .await;
    }
    if let Some(why) = &out.blocked {
        ctx.event(
            group,
            EventType::Warning,
            "ScaleDownBlocked",
            "Retire",
            why.clone(),
        )
        .await;
    }
    Ok(out)
}

/// Asks the scheduler to retire the named workers; returns (retired, kept).
async fn retire(
    ctx: &Context,
    cluster: &DaskCluster,
    names: &[String],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let (api, base) = crate::cluster::reach::scheduler(ctx, cluster).await?;
    Ok(api.retire_by_name(&base, names).await?)
}

/// Makes the cluster an owner of the group (not its controller: the group keeps its own), and
/// labels the group with the cluster's name, so deleting the cluster removes extra groups too.
pub async fn adopt(
    ctx: &Context,
    group: &DaskWorkerGroup,
    cluster: &DaskCluster,
) -> Result<(), Error> {
    let Some(mut owner) = crate::template::owner_ref(cluster) else {
        return Ok(());
    };
    let labelled = group.labels().get(LABEL_CLUSTER) == Some(&cluster.name_any());
    if labelled && group.owner_references().iter().any(|o| o.uid == owner.uid) {
        return Ok(());
    }
    owner.controller = None;
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
