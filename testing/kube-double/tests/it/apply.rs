//! Server-side apply: create-if-missing, idempotence, field ownership, removal of fields a
//! manager stops applying, conflicts and force, and list merging by key.

use crate::support::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

fn apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

#[tokio::test]
async fn apply_creates_then_reapplying_the_same_config_writes_nothing() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}});
    let created = cms
        .patch("a", &apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(created.data.unwrap()["k"], "v");
    let managed = created.metadata.managed_fields.unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(
        (
            managed[0].manager.as_deref(),
            managed[0].operation.as_deref()
        ),
        (Some("op"), Some("Apply"))
    );
    let again = cms
        .patch("a", &apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    assert_eq!(
        again.resource_version(),
        created.metadata.resource_version,
        "a no-op apply changes nothing"
    );
}

#[tokio::test]
async fn reapplying_without_a_field_removes_it_unless_another_manager_owns_it() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let cfg = |data: serde_json::Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": data});
    cms.patch(
        "a",
        &apply("op"),
        &Patch::Apply(cfg(json!({"a": "1", "b": "2", "c": "3"}))),
    )
    .await
    .unwrap();
    cms.patch("a", &apply("other"), &Patch::Apply(cfg(json!({"b": "2"}))))
        .await
        .unwrap();
    let got = cms
        .patch("a", &apply("op"), &Patch::Apply(cfg(json!({"a": "1"}))))
        .await
        .unwrap();
    let keys: Vec<_> = got.data.unwrap().into_keys().collect();
    assert_eq!(
        keys,
        ["a", "b"],
        "c went; b stays because `other` owns it too"
    );
}

#[tokio::test]
async fn a_field_owned_by_another_manager_conflicts_unless_forced() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cfg = |replicas: i32| json!({"apiVersion": "test.kube-double.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"replicas": replicas}});
    widgets
        .patch("w", &apply("operator"), &Patch::Apply(cfg(2)))
        .await
        .unwrap();
    let err = api_error(
        widgets
            .patch("w", &apply("kubectl"), &Patch::Apply(cfg(5)))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"operator\" using test.kube-double.dev/v1: .spec.replicas"
    );
    // Same value: shared ownership, no conflict.
    widgets
        .patch("w", &apply("kubectl"), &Patch::Apply(cfg(2)))
        .await
        .unwrap();
    let forced = widgets
        .patch("w", &apply("kubectl").force(), &Patch::Apply(cfg(5)))
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, 5);
    // A merge patch (an update) takes ownership without conflict; the applier then conflicts.
    widgets
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 7}})),
        )
        .await
        .unwrap();
    let err = api_error(
        widgets
            .patch("w", &apply("kubectl"), &Patch::Apply(cfg(5)))
            .await,
    );
    assert!(
        err.message.contains("conflict with \"unknown\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn apply_merges_pod_containers_by_name_and_respects_pod_immutability() {
    let server = server();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let operator = |env: serde_json::Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "1"}},
        "spec": {"containers": [{"name": "main", "image": "img:1", "env": env, "ports": [{"containerPort": 8786}]}]}})
    };
    pods.patch(
        "p",
        &apply("operator"),
        &Patch::Apply(operator(json!([{"name": "A", "value": "1"}]))),
    )
    .await
    .unwrap();
    let updater = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"b": "2"}},
        "spec": {"containers": [{"name": "main", "image": "img:2"}]}});
    let err = api_error(
        pods.patch("p", &apply("updater"), &Patch::Apply(&updater))
            .await,
    );
    assert!(
        err.message
            .contains(".spec.containers[name=\"main\"].image"),
        "{}",
        err.message
    );
    let got = pods
        .patch("p", &apply("updater").force(), &Patch::Apply(&updater))
        .await
        .unwrap();
    let c = &got.spec.as_ref().unwrap().containers;
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].image.as_deref(), Some("img:2"));
    assert_eq!(
        c[0].env.as_ref().unwrap().len(),
        1,
        "the operator's env survives: containers merge by name"
    );
    assert_eq!(c[0].ports.as_ref().unwrap().len(), 1);
    assert_eq!(got.labels().len(), 2);
    // Pod specs are immutable beyond images: a changed env is refused, as by a real API server.
    let err = api_error(
        pods.patch(
            "p",
            &apply("operator").force(),
            &Patch::Apply(operator(json!([{"name": "A", "value": "2"}]))),
        )
        .await,
    );
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn apply_merges_custom_resource_lists_by_their_declared_keys() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cfg = |env: serde_json::Value, args: serde_json::Value| {
        json!({"apiVersion": "test.kube-double.dev/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"replicas": 1, "env": env, "args": args}})
    };
    widgets
        .patch(
            "w",
            &apply("a"),
            &Patch::Apply(cfg(json!([{"name": "X", "value": "1"}]), json!(["one"]))),
        )
        .await
        .unwrap();
    let got = widgets
        .patch(
            "w",
            &apply("b").force(),
            &Patch::Apply(cfg(json!([{"name": "Y", "value": "2"}]), json!(["two"]))),
        )
        .await
        .unwrap();
    let env: Vec<_> = got.spec.env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["X", "Y"], "env is a map list keyed by name");
    assert_eq!(got.spec.args, ["two"], "args are atomic");
}

#[tokio::test]
async fn apply_needs_a_field_manager_and_status_apply_touches_only_status() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cfg = json!({"apiVersion": "test.kube-double.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"replicas": 1}});
    let no_manager = PatchParams {
        field_manager: None,
        ..PatchParams::apply("x")
    };
    let err = api_error(widgets.patch("w", &no_manager, &Patch::Apply(&cfg)).await);
    assert_eq!(err.code, 422);
    assert!(
        err.message.contains("fieldManager: Required value"),
        "{}",
        err.message
    );
    widgets
        .patch("w", &apply("op"), &Patch::Apply(&cfg))
        .await
        .unwrap();
    let status = json!({"apiVersion": "test.kube-double.dev/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"replicas": 9}, "status": {"replicas": 1, "phase": "Running"}});
    let got = widgets
        .patch_status("w", &apply("op"), &Patch::Apply(&status))
        .await
        .unwrap();
    assert_eq!(got.spec.replicas, 1);
    assert_eq!(got.status.unwrap().phase.as_deref(), Some("Running"));
}
