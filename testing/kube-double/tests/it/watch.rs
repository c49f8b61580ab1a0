//! Watches through kube's `Api::watch` and kube-runtime's `watcher`/`reflector`: history replay,
//! live events, selector transitions, bookmarks, timeouts, 410 Gone and re-listing.

use crate::support::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event, watcher};
use kube::runtime::{WatchStreamExt, reflector};
use kube_double::{ApiServer, Options, Verb};
use serde_json::json;
use std::time::Duration;

fn kind_and_name(e: &WatchEvent<ConfigMap>) -> (String, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), s.code.to_string()),
    }
}

#[tokio::test]
async fn watch_replays_history_after_a_version_then_streams_live_events() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let pp = PatchParams::default();
    cms.patch("a", &pp, &Patch::Merge(json!({"data": {"k": "v"}})))
        .await
        .unwrap();
    let mut events = cms
        .watch(
            &WatchParams::default().disable_bookmarks(),
            &a.resource_version().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    let first = events.try_next().await.unwrap().unwrap();
    assert_eq!(
        kind_and_name(&first),
        ("MODIFIED".into(), "a".into()),
        "history after the version"
    );
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let next: Vec<_> = events
        .by_ref()
        .take(2)
        .map(|e| kind_and_name(&e.unwrap()))
        .collect()
        .await;
    assert_eq!(
        next,
        [("ADDED".into(), "b".into()), ("DELETED".into(), "a".into())]
    );
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_a_410_expired_error_event() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    server.compact_history();
    let mut events = cms
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    match events.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(
        events.try_next().await.unwrap().is_none(),
        "the watch ends after the error"
    );
}

#[tokio::test]
async fn bounded_history_expires_old_versions() {
    let server = ApiServer::with_options(Options {
        history_limit: 3,
        ..Options::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    for i in 0..3 {
        cms.create(&PostParams::default(), &config_map(&format!("x{i}"), &[]))
            .await
            .unwrap();
    }
    // The three changes after `a` are still retained...
    let mut events = cms
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(events.try_next().await.unwrap(), Some(WatchEvent::Added(o)) if o.name_any() == "x0")
    );
    // ...one more pushes the first of them out.
    cms.create(&PostParams::default(), &config_map("x3", &[]))
        .await
        .unwrap();
    let mut events = cms
        .watch(&WatchParams::default(), &a.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(events.try_next().await.unwrap(), Some(WatchEvent::Error(s)) if s.code == 410)
    );
}

#[tokio::test]
async fn watcher_relists_after_410_and_its_reflector_converges() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let (reader, writer) = reflector::store();
    let mut stream = reflector(writer, watcher(cms.clone(), watcher::Config::default())).boxed();
    loop {
        if let Event::InitDone = stream.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    assert_eq!(reader.state().len(), 1);
    // While the watcher is not polled (so it has not opened its watch yet), the history it would
    // need is compacted away.
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &config_map("c", &[]))
        .await
        .unwrap();
    server.compact_history();
    let mut saw_gone = false;
    loop {
        match stream.next().await.unwrap() {
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_gone = true,
            Ok(Event::InitDone) if saw_gone => break,
            _ => {}
        }
    }
    let mut names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    let lists = server
        .requests()
        .iter()
        .filter(|r| r.verb == Some(Verb::List) && r.resource.as_deref() == Some("configmaps"))
        .count();
    assert_eq!(lists, 2, "the watcher re-listed after 410");
    let initial_list = server
        .requests()
        .into_iter()
        .find(|r| r.verb == Some(Verb::List))
        .unwrap();
    assert!(
        initial_list.query.contains("limit=500"),
        "{}",
        initial_list.query
    );
}

#[tokio::test]
async fn a_reflector_store_tracks_creates_updates_and_deletes() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let (reader, writer) = reflector::store();
    let driver = tokio::spawn(
        reflector(writer, watcher(cms.clone(), watcher::Config::default()))
            .applied_objects()
            .for_each(|_| async {}),
    );
    for i in 0..20 {
        cms.create(&PostParams::default(), &config_map(&format!("cm-{i}"), &[]))
            .await
            .unwrap();
    }
    for i in 0..10 {
        cms.delete(&format!("cm-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
    cms.patch(
        "cm-15",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    eventually("the reflector to converge", || {
        let reader = reader.clone();
        async move {
            let state = reader.state();
            let updated = state
                .iter()
                .any(|c| c.name_any() == "cm-15" && c.data.is_some());
            (state.len() == 10 && updated).then_some(())
        }
    })
    .await;
    driver.abort();
}

#[tokio::test]
async fn label_selector_watches_see_objects_leave_and_enter_the_selection() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let mut cm = config_map("a", &[]);
    cm.metadata.labels = Some([("app".to_owned(), "web".to_owned())].into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let from = server.resource_version().to_string();
    let wp = WatchParams::default().labels("app=web").disable_bookmarks();
    let mut events = cms.watch(&wp, &from).await.unwrap().boxed();
    let pp = PatchParams::default();
    cms.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "db"}}})),
    )
    .await
    .unwrap();
    cms.patch("a", &pp, &Patch::Merge(json!({"data": {"ignored": "yes"}})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    let seen: Vec<_> = events
        .by_ref()
        .take(2)
        .map(|e| kind_and_name(&e.unwrap()))
        .collect()
        .await;
    assert_eq!(
        seen,
        [("DELETED".into(), "a".into()), ("ADDED".into(), "a".into())]
    );
}

#[tokio::test]
async fn watches_send_bookmarks_and_end_at_timeout_seconds() {
    let server = ApiServer::with_options(Options {
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    });
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let events: Vec<_> = cms
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .map(|e| kind_and_name(&e.unwrap()).0)
        .collect()
        .await;
    assert!(
        started.elapsed() >= Duration::from_millis(900)
            && started.elapsed() < Duration::from_secs(3)
    );
    assert_eq!(
        events[0], "ADDED",
        "resourceVersion 0 starts with the current state"
    );
    assert!(
        events.iter().skip(1).all(|e| e == "BOOKMARK") && events.len() > 3,
        "{events:?}"
    );
}

#[tokio::test]
async fn streaming_list_watchers_get_initial_events_and_the_end_bookmark() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for name in ["a", "b"] {
        cms.create(&PostParams::default(), &config_map(name, &[]))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store();
    let mut stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().streaming_lists()),
    )
    .boxed();
    loop {
        if let Event::InitDone = stream.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    assert_eq!(reader.state().len(), 2);
    let watch = server
        .requests()
        .into_iter()
        .find(|r| r.verb == Some(Verb::Watch))
        .unwrap();
    assert!(
        watch.query.contains("sendInitialEvents=true"),
        "{}",
        watch.query
    );
    assert!(!server.requests().iter().any(|r| r.verb == Some(Verb::List)));
}

#[tokio::test]
async fn metadata_only_requests_and_watchers_get_partial_object_metadata() {
    let server = ApiServer::new();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(
        &PostParams::default(),
        &config_map("a", &[("big", "payload")]),
    )
    .await
    .unwrap();
    let meta = cms.get_metadata("a").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("a"));
    assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
    let list = cms.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let (reader, writer) = reflector::store();
    let mut stream = reflector(
        writer,
        watcher(
            Api::<PartialObjectMeta<ConfigMap>>::namespaced(server.client(), "default"),
            watcher::Config::default(),
        ),
    )
    .boxed();
    loop {
        if let Event::InitDone = stream.try_next().await.unwrap().unwrap() {
            break;
        }
    }
    cms.create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    loop {
        if let Event::Apply(o) = stream.try_next().await.unwrap().unwrap() {
            assert_eq!(o.metadata.name.as_deref(), Some("b"));
            break;
        }
    }
    assert_eq!(reader.state().len(), 2);
}
