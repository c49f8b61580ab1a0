//! The skeleton every controller shares, so the four read alike and cannot drift: the deletion
//! check and the timing around a reconcile, the one path for an invalid spec (an Event, a status
//! that says why, then waiting for a change), the status writer, and an `error_policy` whose
//! backoff depends on what failed.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::context::Context;
use crate::crd::{DaskAutoscaler, DaskCluster, DaskJob, DaskWorkerGroup};
use crate::error::{Error, Invalid, Retry, is_not_found};
use crate::names::FIELD_MANAGER;

/// A resource one of the operator's controllers reconciles.
pub trait Reconciled:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    type Status: Serialize + Clone + PartialEq + Default + Send + Sync;
    /// The controller's name in metrics and logs.
    const CONTROLLER: &'static str;
    fn current_status(&self) -> Option<&Self::Status>;
}

macro_rules! reconciled {
    ($kind:ty, $status:ty, $name:literal) => {
        impl Reconciled for $kind {
            type Status = $status;
            const CONTROLLER: &'static str = $name;
            fn current_status(&self) -> Option<&$status> {
                self.status.as_ref()
            }
        }
    };
}

reconciled!(DaskCluster, crate::crd::DaskClusterStatus, "daskcluster");
reconciled!(
    DaskWorkerGroup,
    crate::crd::DaskWorkerGroupStatus,
    "daskworkergroup"
);
reconciled!(DaskJob, crate::crd::DaskJobStatus, "daskjob");
reconciled!(
    DaskAutoscaler,
    crate::crd::DaskAutoscalerStatus,
    "daskautoscaler"
);

/// Runs one reconcile of `obj`, timed, unless `obj` is being deleted (its children carry owner
/// references: the garbage collector removes them). A success forgets earlier failures, so the
/// next failure backs off from the start.
pub async fn reconcile<K: Reconciled>(
    obj: &K,
    ctx: &Context,
    pipeline: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let result = ctx.metrics.timed(K::CONTROLLER, pipeline).await;
    match &result {
        Ok(_) => ctx.backoff.succeeded(K::CONTROLLER, &key(obj)),
        Err(e) => {
            if let Some(message) = e.forbidden() {
                report_forbidden(ctx, obj, message).await;
            }
        }
    }
    result
}

/// A request the API server refused as not allowed: the operator's RBAC lacks a permission.
/// Nothing but a change of its Role or ClusterRole helps, so it is said where users look: an
/// error in the log and a Warning Event on the object, both with the server's message (which
/// names the verb, resource, API group and namespace).
async fn report_forbidden<K: Reconciled>(ctx: &Context, obj: &K, message: &str) {
    let note = forbidden_note(message);
    tracing::error!(
        controller = K::CONTROLLER,
        name = %key(obj),
        "{note}"
    );
    ctx.event(obj, EventType::Warning, "Forbidden", "Reconcile", note)
        .await;
}

fn forbidden_note(message: &str) -> String {
    format!(
        "the operator's ServiceAccount lacks a permission: {message}; grant it in the \
         operator's Role or ClusterRole (the rask-operator chart's templates/rbac.yaml)"
    )
}

/// The one path for a spec that cannot be reconciled: an Event and `status` (which says why)
/// when either changed, then nothing until the spec changes.
pub async fn reject<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    invalid: &Invalid,
    status: K::Status,
) -> Result<Action, Error> {
    if obj.current_status() != Some(&status) {
        ctx.event(
            obj,
            EventType::Warning,
            "InvalidSpec",
            "Validate",
            invalid.problems.join("; "),
        )
        .await;
        write_status(ctx, obj, &status).await?;
    }
    tracing::warn!(error = %invalid, "waiting for a change");
    Ok(Action::await_change())
}

/// Writes `status` unless the object already has it: server-side apply of the status
/// subresource with the operator's field manager. CRDs without a status subresource (as
/// dask-kubernetes installs DaskCluster and DaskAutoscaler) answer 404 there: their status is
/// then merge-patched on the object itself.
pub async fn write_status<K: Reconciled>(
    ctx: &Context,
    obj: &K,
    status: &K::Status,
) -> Result<(), Error> {
    if obj.current_status() == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_else(|| "default".into()),
    );
    let name = obj.name_any();
    let new = serde_json::to_value(status).map_err(|e| {
        Error::Other(format!(
            "cannot serialize the status of {} {name}: {e}",
            K::kind(&())
        ))
    })?;
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": new});
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&name, &apply, &Patch::Apply(body)).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let old = obj
                .current_status()
                .and_then(|s| serde_json::to_value(s).ok());
            let patch = json!({"status": status_merge_patch(old.as_ref(), new)});
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            api.patch(&name, &params, &Patch::Merge(patch)).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A JSON merge patch from the `old` status to `new`: `new` itself, with a `null` for each
/// top-level field `old` had and `new` drops (a merge patch keeps what it does not mention).
fn status_merge_patch(old: Option<&Value>, mut new: Value) -> Value {
    if let (Some(Value::Object(old)), Value::Object(n)) = (old, &mut new) {
        for k in old.keys() {
            if !n.contains_key(k) {
                n.insert(k.clone(), Value::Null);
            }
        }
    }
    new
}

fn key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// What every controller does when a reconcile fails: log, count, and try again after a wait
/// that depends on the error (see [`retry_after`]) and grows with the object's failures in a row.
pub fn error_policy<K: Reconciled>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = ctx.backoff.failed(K::CONTROLLER, &key(obj.as_ref()));
    let wait = retry_after(error.retry(), attempt);
    tracing::warn!(
        controller = K::CONTROLLER,
        name = %key(obj.as_ref()),
        %error,
        attempt,
        retry_in = ?wait,
        "reconcile failed"
    );
    ctx.metrics
        .failed(K::CONTROLLER, error.kind(), error.to_string());
    Action::requeue(wait)
}

/// How long to wait before the `attempt`-th retry (1 first) after an error of class `retry`:
/// a conflict is retried at once (someone else wrote first: read again), a transient failure
/// (API server or scheduler unavailable, throttling) with exponential backoff from 1 s to 5
/// minutes, and a refusal (the API server rejected what was sent: invalid, forbidden) from 30 s to
/// 10 minutes, since only a change by someone else can fix it.
pub fn retry_after(retry: Retry, attempt: u32) -> Duration {
    let (first, cap) = match retry {
        Retry::Conflict => (Duration::from_millis(200), Duration::from_secs(5)),
        Retry::Transient => (Duration::from_secs(1), Duration::from_secs(300)),
        Retry::Refused => (Duration::from_secs(30), Duration::from_secs(600)),
    };
    let doublings = attempt.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_depends_on_the_error() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let table = [
            (Retry::Conflict, 1, ms(200)),
            (Retry::Conflict, 2, ms(400)),
            (Retry::Conflict, 10, s(5)),
            (Retry::Transient, 1, s(1)),
            (Retry::Transient, 2, s(2)),
            (Retry::Transient, 5, s(16)),
            (Retry::Transient, 9, s(256)),
            (Retry::Transient, 10, s(300)),
            (Retry::Transient, u32::MAX, s(300)),
            (Retry::Refused, 1, s(30)),
            (Retry::Refused, 3, s(120)),
            (Retry::Refused, 6, s(600)),
        ];
        for (retry, attempt, want) in table {
            assert_eq!(retry_after(retry, attempt), want, "{retry:?} #{attempt}");
        }
    }

    #[test]
    fn a_forbidden_request_is_reported_with_the_servers_message() {
        let m = "pods \"p\" is forbidden: User \"system:serviceaccount:a:b\" cannot delete \
                 resource \"pods\" in API group \"\" in the namespace \"default\"";
        let note = forbidden_note(m);
        assert!(note.contains(m), "{note}");
        assert!(note.contains("templates/rbac.yaml"), "{note}");
    }

    #[test]
    fn a_status_merge_patch_removes_what_the_new_status_drops() {
        let old = json!({"phase": "Running", "schedulerAddress": "tcp://x", "replicas": 2});
        let new = json!({"phase": "Failed", "replicas": 2});
        assert_eq!(
            status_merge_patch(Some(&old), new),
            json!({"phase": "Failed", "replicas": 2, "schedulerAddress": null})
        );
        assert_eq!(status_merge_patch(None, json!({"a": 1})), json!({"a": 1}));
    }
}
