//! ownerReference garbage collection: background cascades, surviving co-owned dependents, orphan
//! and foreground propagation, and dependents of owners that do not exist.

use crate::support::*;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

async fn child(cms: &Api<ConfigMap>, name: &str, owners: Vec<OwnerReference>) -> ConfigMap {
    let mut cm = config_map(name, &[]);
    cm.metadata.owner_references = Some(owners);
    cms.create(&PostParams::default(), &cm).await.unwrap()
}

async fn names(cms: &Api<ConfigMap>) -> Vec<String> {
    cms.list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect()
}

#[tokio::test]
async fn deleting_an_owner_collects_its_dependents_in_cascade() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let a = child(&cms, "a", vec![owned_by(&w)]).await;
    child(&cms, "a-child", vec![owned_by(&a)]).await;
    child(&cms, "unrelated", vec![]).await;
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    assert_eq!(names(&cms).await, ["unrelated"]);
}

#[tokio::test]
async fn a_dependent_with_another_live_owner_survives_and_loses_the_dangling_reference() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let w1 = widgets
        .create(&PostParams::default(), &widget("w1", 1))
        .await
        .unwrap();
    let w2 = widgets
        .create(&PostParams::default(), &widget("w2", 1))
        .await
        .unwrap();
    let mut second = owned_by(&w2);
    second.controller = None;
    child(&cms, "shared", vec![owned_by(&w1), second]).await;
    widgets
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap();
    let shared = cms.get("shared").await.unwrap();
    let owners: Vec<_> = shared
        .owner_references()
        .iter()
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(owners, ["w2"]);
}

#[tokio::test]
async fn orphan_propagation_keeps_dependents_without_the_reference() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    child(&cms, "a", vec![owned_by(&w)]).await;
    widgets.delete("w", &DeleteParams::orphan()).await.unwrap();
    assert!(widgets.get_opt("w").await.unwrap().is_none());
    assert!(cms.get("a").await.unwrap().owner_references().is_empty());
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let mut blocker = config_map("blocker", &[]);
    blocker.metadata.owner_references = Some(vec![owned_by(&w)]);
    blocker.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&PostParams::default(), &blocker).await.unwrap();
    let owner = widgets
        .delete("w", &DeleteParams::foreground())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(
        owner
            .finalizers()
            .contains(&"foregroundDeletion".to_owned())
    );
    // The dependent is being deleted but held by its own finalizer, so the owner waits.
    assert!(
        cms.get("blocker")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    assert!(widgets.get_opt("w").await.unwrap().is_some());
    cms.patch(
        "blocker",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("blocker").await.unwrap().is_none());
    assert!(
        widgets.get_opt("w").await.unwrap().is_none(),
        "the owner goes once its dependents are gone"
    );
    // A dependent that does not block (kube's `controller_owner_ref` sets no
    // blockOwnerDeletion) lets a foreground owner go at once; the dependent is still collected.
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let mut loose = config_map("loose", &[]);
    loose.metadata.owner_references =
        Some(vec![kube::Resource::controller_owner_ref(&w, &()).unwrap()]);
    loose.metadata.finalizers = Some(vec!["test/hold".into()]);
    cms.create(&PostParams::default(), &loose).await.unwrap();
    widgets
        .delete("w", &DeleteParams::foreground())
        .await
        .unwrap();
    assert!(widgets.get_opt("w").await.unwrap().is_none());
    assert!(
        cms.get("loose")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
}

#[tokio::test]
async fn a_dependent_whose_owner_does_not_exist_is_collected() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let mut stale = owned_by(&w);
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    stale.uid = "00000000-0000-4000-8000-000000000000".into();
    child(&cms, "late", vec![stale]).await;
    assert!(cms.get_opt("late").await.unwrap().is_none());
}
