//! Stage 5 for DaskAutoscalers: what the status says, as pure functions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::POLL;
use super::validate::ValidatedAutoscaler;
use crate::conditions::condition;
use crate::crd::{DaskAutoscaler, DaskAutoscalerStatus};
use crate::error::Invalid;

fn with(
    previous: &DaskAutoscalerStatus,
    generation: i64,
    conditions: Vec<Condition>,
) -> DaskAutoscalerStatus {
    DaskAutoscalerStatus {
        observed_generation: Some(generation),
        conditions,
        ..previous.clone()
    }
}

pub fn invalid_status(
    previous: &DaskAutoscalerStatus,
    a: &DaskAutoscaler,
    invalid: &Invalid,
) -> DaskAutoscalerStatus {
    let g = a.metadata.generation.unwrap_or(0);
    let message = invalid.problems.join("; ");
    let c = condition(
        &previous.conditions,
        "Valid",
        false,
        "InvalidSpec",
        message,
        g,
    );
    with(previous, g, vec![c])
}

/// Nothing to scale: the cluster or group does not exist, or the cluster is a later one of the
/// same name (`reason` says which).
pub fn waiting_status(
    previous: &DaskAutoscalerStatus,
    v: &ValidatedAutoscaler,
    reason: &str,
    message: String,
) -> DaskAutoscalerStatus {
    let g = v.generation;
    let c = condition(&previous.conditions, "Ready", false, reason, message, g);
    with(previous, g, vec![c])
}

/// The status after a poll: the sizes, the decision, and whether the scheduler answered.
pub fn status(
    previous: &DaskAutoscalerStatus,
    v: &ValidatedAutoscaler,
    current: usize,
    desired: usize,
    decision: &str,
    scheduler_error: Option<String>,
) -> DaskAutoscalerStatus {
    let g = v.generation;
    let prev = &previous.conditions;
    let ready = match scheduler_error {
        Some(e) => condition(prev, "Ready", false, "SchedulerUnreachable", e, g),
        None => condition(
            prev,
            "Ready",
            true,
            "Polling",
            format!("the scheduler is asked every {POLL:?}"),
            g,
        ),
    };
    let size = |n: usize| Some(i32::try_from(n).unwrap_or(i32::MAX));
    DaskAutoscalerStatus {
        desired: size(desired),
        current: size(current),
        last_decision: Some(decision.to_owned()),
        observed_generation: Some(g),
        conditions: vec![
            condition(prev, "Valid", true, "Valid", "the spec is valid".into(), g),
            ready,
        ],
    }
}
