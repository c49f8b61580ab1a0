//! Stage 5 for worker groups: replicas, ready replicas and conditions.

use super::apply::Outcome;
use super::plan::PodView;
use super::validate::ValidatedGroup;
use crate::conditions::condition;
use crate::crd::{DaskWorkerGroup, DaskWorkerGroupStatus};
use crate::error::Invalid;

/// The status of a group whose spec cannot be reconciled.
pub fn invalid_status(
    previous: &DaskWorkerGroupStatus,
    g: &DaskWorkerGroup,
    invalid: &Invalid,
) -> DaskWorkerGroupStatus {
    let generation = g.metadata.generation.unwrap_or(0);
    let c = condition(
        &previous.conditions,
        "Valid",
        false,
        "InvalidSpec",
        invalid.problems.join("; "),
        generation,
    );
    DaskWorkerGroupStatus {
        conditions: vec![c],
        observed_generation: Some(generation),
        ..previous.clone()
    }
}

/// The status of a group whose DaskCluster does not exist (yet).
pub fn missing_cluster_status(
    previous: &DaskWorkerGroupStatus,
    v: &ValidatedGroup,
) -> DaskWorkerGroupStatus {
    let c = condition(
        &previous.conditions,
        "ClusterFound",
        false,
        "ClusterNotFound",
        format!("DaskCluster {} does not exist", v.cluster),
        v.generation,
    );
    DaskWorkerGroupStatus {
        conditions: vec![c],
        observed_generation: Some(v.generation),
        ..previous.clone()
    }
}

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
