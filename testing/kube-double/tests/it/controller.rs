//! A real kube-runtime `Controller` against the double: it server-side-applies an owned
//! ConfigMap for every parent ConfigMap and records an Event; deleting the child gets it back,
//! deleting the parent lets garbage collection remove the child.

use crate::support::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use kube_double::{ApiServer, Verb};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

struct Context {
    client: Client,
    recorder: Recorder,
}

async fn reconcile(parent: Arc<ConfigMap>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let ns = parent.namespace().unwrap_or_default();
    let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let name = format!("{}-child", parent.name_any());
    let child = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": [parent.controller_owner_ref(&()).unwrap()]},
        "data": {"parent": parent.name_any()},
    });
    cms.patch(
        &name,
        &PatchParams::apply("tiny-controller").force(),
        &Patch::Apply(&child),
    )
    .await?;
    let event = Event {
        type_: EventType::Normal,
        reason: "ChildApplied".into(),
        note: Some(format!("applied {name}")),
        action: "Apply".into(),
        secondary: None,
    };
    ctx.recorder
        .publish(&event, &parent.object_ref(&()))
        .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Context>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn a_controller_applies_an_owned_child_and_garbage_collection_removes_it() {
    let server = ApiServer::new();
    let client = server.client();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), Reporter::from("tiny-controller")),
    });
    let controller = Controller::new(
        cms.clone(),
        watcher::Config::default().labels("role=parent"),
    )
    .owns(cms.clone(), watcher::Config::default())
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {});
    let running = tokio::spawn(controller);

    // A transient API failure on the first apply is retried through error_policy.
    server.fail_next(
        kube_double::Fault::new(500)
            .verb(Verb::Patch)
            .resource("configmaps"),
    );
    let mut parent = config_map("parent", &[]);
    parent.metadata.labels = Some([("role".to_owned(), "parent".to_owned())].into());
    cms.create(&PostParams::default(), &parent).await.unwrap();
    let child = eventually("the child", || async {
        cms.get_opt("parent-child").await.unwrap()
    })
    .await;
    assert_eq!(child.owner_references()[0].name, "parent");
    assert_eq!(child.data.unwrap()["parent"], "parent");

    let events: Api<K8sEvent> = Api::namespaced(client.clone(), "default");
    let recorded = eventually("an event", || async {
        events
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .next()
    })
    .await;
    assert_eq!(recorded.reason.as_deref(), Some("ChildApplied"));
    assert_eq!(recorded.regarding.unwrap().name.as_deref(), Some("parent"));

    // The controller owns the child: deleting it triggers a reconcile that restores it.
    cms.delete("parent-child", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the child to come back", || async {
        cms.get_opt("parent-child").await.unwrap()
    })
    .await;

    // Deleting the owner: the garbage collector removes the child.
    cms.delete("parent", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the child to be collected", || async {
        cms.get_opt("parent-child")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    running.abort();
}
