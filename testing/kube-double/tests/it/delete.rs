//! Deletion: finalizers and deletionTimestamp, preconditions, and the DELETED event.

use crate::support::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent, WatchParams,
};
use serde_json::json;

#[tokio::test]
async fn finalizers_keep_an_object_until_the_last_is_removed() {
    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let mut w = widget("w", 1);
    w.metadata.finalizers = Some(vec!["test/cleanup".into(), "test/other".into()]);
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let from = server.resource_version().to_string();
    let deleting = widgets
        .delete("w", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        deleting.metadata.generation,
        Some(2),
        "setting deletionTimestamp bumps generation"
    );
    let still = widgets.get("w").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let add = json!({"metadata": {"finalizers": ["test/cleanup", "test/other", "test/new"]}});
    let err = api_error(
        widgets
            .patch("w", &PatchParams::default(), &Patch::Merge(add))
            .await,
    );
    assert_eq!(err.code, 422);
    let one = json!({"metadata": {"finalizers": ["test/other"]}});
    widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(one))
        .await
        .unwrap();
    assert!(widgets.get_opt("w").await.unwrap().is_some());
    let none = json!({"metadata": {"finalizers": null}});
    widgets
        .patch("w", &PatchParams::default(), &Patch::Merge(none))
        .await
        .unwrap();
    assert!(widgets.get_opt("w").await.unwrap().is_none());
    let kinds: Vec<String> = widgets
        .watch(&WatchParams::default().disable_bookmarks(), &from)
        .await
        .unwrap()
        .take(3)
        .map_ok(|e| match e {
            WatchEvent::Modified(_) => "MODIFIED".to_owned(),
            WatchEvent::Deleted(_) => "DELETED".to_owned(),
            other => format!("{other:?}"),
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(kinds, ["MODIFIED", "MODIFIED", "DELETED"]);
}

#[tokio::test]
async fn delete_without_finalizers_is_immediate() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let status = cms
        .delete("a", &DeleteParams::default())
        .await
        .unwrap()
        .right()
        .unwrap();
    assert_eq!(status.details.unwrap().name, "a");
    assert!(cms.get_opt("a").await.unwrap().is_none());
    let err = api_error(cms.delete("a", &DeleteParams::default()).await);
    assert_eq!(err.code, 404);
}

#[tokio::test]
async fn delete_preconditions_must_match() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let err = api_error(cms.delete("a", &wrong).await);
    assert_eq!(err.code, 409);
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: a.uid(),
            resource_version: a.resource_version(),
        }),
        ..DeleteParams::default()
    };
    cms.delete("a", &right).await.unwrap();
}

#[tokio::test]
async fn delete_collection_removes_what_the_selector_matches() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut cm = config_map(name, &[]);
        cm.metadata.labels = Some([("app".to_owned(), app.to_owned())].into());
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    cms.delete_collection(
        &DeleteParams::default(),
        &kube::api::ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    let left: Vec<_> = cms
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn kube_runtimes_finalizer_helper_adds_runs_cleanup_and_removes_its_finalizer() {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event as Finalizer, finalizer};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let server = server();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    let cleanups = Arc::new(AtomicUsize::new(0));
    let step = || {
        let widgets = widgets.clone();
        let cleanups = cleanups.clone();
        async move {
            let w = Arc::new(widgets.get("w").await.unwrap());
            finalizer(
                &widgets,
                "test.kube-double.dev/cleanup",
                w,
                |event| async move {
                    if let Finalizer::Cleanup(_) = event {
                        cleanups.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok::<_, kube::Error>(Action::await_change())
                },
            )
            .await
            .unwrap();
        }
    };
    step().await; // adds the finalizer (a JSON patch testing a missing list against null)
    assert_eq!(
        widgets.get("w").await.unwrap().finalizers(),
        ["test.kube-double.dev/cleanup"]
    );
    step().await; // reconciles
    widgets.delete("w", &DeleteParams::default()).await.unwrap();
    step().await; // cleans up, removes the finalizer: the object goes
    assert_eq!(cleanups.load(Ordering::SeqCst), 1);
    assert!(widgets.get_opt("w").await.unwrap().is_none());
}
