//! The status subresource, generation, and the scale subresource.

use crate::support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn status_writes_ignore_spec_and_main_writes_ignore_status() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus {
        replicas: 3,
        ..WidgetStatus::default()
    });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        created.status, None,
        "create drops status when status is a subresource"
    );
    let pp = PatchParams::default();
    let after_status = widgets
        .patch_status(
            "w",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 50}, "status": {"replicas": 2}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            after_status.spec.replicas,
            after_status.status.as_ref().unwrap().replicas
        ),
        (1, 2)
    );
    let after_main = widgets
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"spec": {"replicas": 4}, "status": {"replicas": 99}})),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            after_main.spec.replicas,
            after_main.status.as_ref().unwrap().replicas
        ),
        (4, 2)
    );
    let mut replaced = after_main.clone();
    replaced.status.as_mut().unwrap().phase = Some("Ready".into());
    replaced.spec.replicas = 5;
    let got = widgets
        .replace_status("w", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(
        (got.spec.replicas, got.status.unwrap().phase.as_deref()),
        (4, Some("Ready"))
    );
    // Pods have a status subresource too.
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("p", "img"))
        .await
        .unwrap();
    let p = pods
        .patch(
            "p",
            &pp,
            &Patch::Merge(json!({"status": {"phase": "Running"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
}

#[tokio::test]
async fn generation_moves_only_when_the_spec_changes() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let pp = PatchParams::default();
    let g = |w: &Widget| w.meta().generation.unwrap();
    let labelled = widgets
        .patch(
            "w",
            &pp,
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(g(&labelled), 1);
    let status = widgets
        .patch_status("w", &pp, &Patch::Merge(json!({"status": {"replicas": 1}})))
        .await
        .unwrap();
    assert_eq!(g(&status), 1);
    let spec = widgets
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    assert_eq!(g(&spec), 2);
    let same = widgets
        .patch("w", &pp, &Patch::Merge(json!({"spec": {"replicas": 2}})))
        .await
        .unwrap();
    assert_eq!(
        (g(&same), same.metadata.resource_version.clone()),
        (2, spec.metadata.resource_version.clone())
    );
}

#[tokio::test]
async fn the_scale_subresource_reads_and_writes_replicas() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    widgets
        .create(&PostParams::default(), &widget("w", 3))
        .await
        .unwrap();
    widgets
        .patch_status(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"replicas": 2}})),
        )
        .await
        .unwrap();
    let scale = widgets.get_scale("w").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().replicas, 2);
    widgets
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await
        .unwrap();
    assert_eq!(widgets.get("w").await.unwrap().spec.replicas, 6);
}
