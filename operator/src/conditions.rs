//! Status conditions that keep their transition time while they hold.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition `type_` with status True/False, reason and message; `lastTransitionTime` is kept
/// from `previous` when the status did not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: i64,
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_is_kept_while_the_status_holds() {
        let first = condition(&[], "Ready", false, "Starting", "x".into(), 1);
        let same = condition(
            std::slice::from_ref(&first),
            "Ready",
            false,
            "Starting",
            "y".into(),
            2,
        );
        assert_eq!(same.last_transition_time, first.last_transition_time);
        assert_eq!(same.message, "y");
        let flipped = condition(
            std::slice::from_ref(&first),
            "Ready",
            true,
            "Ready",
            "z".into(),
            2,
        );
        assert!(flipped.last_transition_time.0 >= first.last_transition_time.0);
        assert_eq!(flipped.status, "True");
    }
}
