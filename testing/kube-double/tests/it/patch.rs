//! Merge, JSON and strategic merge patches.

use crate::support::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn merge_and_json_patches_edit_objects() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("a", &[("x", "1"), ("y", "2")]),
    )
    .await
    .unwrap();
    let pp = PatchParams::default();
    let merged = cms
        .patch(
            "a",
            &pp,
            &Patch::Merge(json!({"data": {"x": null, "z": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.data.unwrap(),
        [
            ("y".to_owned(), "2".to_owned()),
            ("z".to_owned(), "3".to_owned())
        ]
        .into()
    );
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/y", "value": "2"},
        {"op": "replace", "path": "/data/y", "value": "20"}
    ]))
    .unwrap();
    let patched = cms.patch("a", &pp, &Patch::<()>::Json(ops)).await.unwrap();
    assert_eq!(patched.data.unwrap()["y"], "20");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/y", "value": "nope"}]))
            .unwrap();
    let err = api_error(cms.patch("a", &pp, &Patch::<()>::Json(failing)).await);
    assert_eq!(err.code, 422);
    let err = api_error(cms.patch("missing", &pp, &Patch::Merge(json!({}))).await);
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn a_merge_patch_with_a_stale_resource_version_conflicts() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "v"}})),
    )
    .await
    .unwrap();
    let stale =
        json!({"metadata": {"resourceVersion": a.metadata.resource_version}, "data": {"k": "w"}});
    let err = api_error(
        cms.patch("a", &PatchParams::default(), &Patch::Merge(stale))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
}

#[tokio::test]
async fn strategic_merge_merges_containers_and_env_by_name() {
    let server = server();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut p = pod("p", "img:1");
    p.spec.as_mut().unwrap().containers[0].env = Some(vec![
        serde_json::from_value(json!({"name": "A", "value": "1"})).unwrap(),
    ]);
    pods.create(&PostParams::default(), &p).await.unwrap();
    let patch = json!({"spec": {"containers": [{"name": "main", "image": "img:2"}]}});
    let got = pods
        .patch("p", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let c = &got.spec.unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("img:2"));
    assert_eq!(
        c.env.as_ref().unwrap().len(),
        1,
        "the rest of the container survives"
    );
}

#[tokio::test]
async fn strategic_merge_is_unsupported_for_custom_resources() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let err = api_error(
        widgets
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"replicas": 2}})),
            )
            .await,
    );
    assert_eq!(
        (err.code, err.reason.as_str()),
        (415, "UnsupportedMediaType")
    );
}
