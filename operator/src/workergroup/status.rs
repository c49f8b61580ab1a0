//! Stage 5 for worker groups: replicas, ready replicas and conditions.

use kube::api::Api;
use serde_json::json;

use super::apply::Outcome;
use super::plan::PodView;
use super::validate::ValidatedGroup;
use crate::apply::apply_status;
use crate::conditions::condition;
use crate::context::Context;
use crate::crd::{DaskWorkerGroup, DaskWorkerGroupStatus};
use crate::error::Error;

pub fn status(
    previous: &DaskWorkerGroupStatus,
    v: &ValidatedGroup,
    pods: &[PodView],
    outcome: &Outcome,
) -> DaskWorkerGroupStatus {
    let g = v.generation;
    let prev = &previous.conditions;
    let live: Vec<&PodView> = pods.iter().filter(|p| !p.terminal).collect();
    let ready = live.iter().filter(|p| p.ready && p.up_to_date).count();
    let outdated = live.iter().filter(|p| !p.up_to_date).count();
    let available = condition(
        prev,
        "Available",
        ready >= v.replicas,
        if ready >= v.replicas {
            "AllReady"
        } else {
            "WorkersNotReady"
        },
        format!("{ready} of {} workers ready", v.replicas),
        g,
    );
    let settled = live.len() == v.replicas
        && outdated == 0
        && outcome.created.is_empty()
        && outcome.deleted.is_empty();
    let progressing = condition(
        prev,
        "Progressing",
        !settled,
        if settled { "Settled" } else { "Scaling" },
        format!(
            "{} pods ({} outdated), {} wanted",
            live.len(),
            outdated,
            v.replicas
        ),
        g,
    );
    let mut conditions = vec![available, progressing];
    match &outcome.blocked {
        Some(why) => conditions.push(condition(
            prev,
            "ScaleDownBlocked",
            true,
            "RetirementFailed",
            why.clone(),
            g,
        )),
        None => conditions.push(condition(
            prev,
            "ScaleDownBlocked",
            false,
            "NotBlocked",
            "nothing blocked".into(),
            g,
        )),
    }
    DaskWorkerGroupStatus {
        replicas: i32::try_from(live.len()).unwrap_or(i32::MAX),
        ready_replicas: i32::try_from(ready).unwrap_or(i32::MAX),
        observed_generation: Some(g),
        conditions,
    }
}

pub async fn write(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: &DaskWorkerGroupStatus,
) -> Result<(), Error> {
    let api: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), namespace);
    let body = json!({"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskWorkerGroup", "status": status});
    apply_status(&api, name, body).await?;
    Ok(())
}
