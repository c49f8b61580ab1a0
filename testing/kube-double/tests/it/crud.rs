//! Create, read, update and list: identity metadata, conflicts, names, selectors, paging, and the
//! built-in types' defaulting and update rules.

use crate::support::*;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use kube::api::{Api, ListParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

#[tokio::test]
async fn create_assigns_identity_and_versions_from_one_counter() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let a = cms
        .create(&PostParams::default(), &config_map("a", &[("k", "v")]))
        .await
        .unwrap();
    let b = cms
        .create(&PostParams::default(), &config_map("b", &[]))
        .await
        .unwrap();
    assert_eq!(a.namespace().as_deref(), Some("default"));
    assert!(a.uid().is_some() && a.uid() != b.uid());
    assert!(a.creation_timestamp().is_some());
    assert!(rv(&b) > rv(&a));
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    assert!(rv(&w) > rv(&b), "one counter across types");
    assert_eq!(w.meta().generation, Some(1));
    let got = cms.get("a").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
}

#[tokio::test]
async fn create_of_an_existing_name_is_409_already_exists() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let err = api_error(
        cms.create(&PostParams::default(), &config_map("a", &[]))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(err.message, "configmaps \"a\" already exists");
}

#[tokio::test]
async fn generate_name_gets_a_random_suffix() {
    let server = server();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut p = pod("", "busybox");
    p.metadata.name = None;
    p.metadata.generate_name = Some("worker-".into());
    let a = pods.create(&PostParams::default(), &p).await.unwrap();
    let b = pods.create(&PostParams::default(), &p).await.unwrap();
    assert!(a.name_any().starts_with("worker-") && a.name_any().len() == "worker-".len() + 5);
    assert_ne!(a.name_any(), b.name_any());
}

#[tokio::test]
async fn update_with_a_stale_resource_version_is_409_conflict() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let first = cms
        .create(&PostParams::default(), &config_map("a", &[("k", "1")]))
        .await
        .unwrap();
    let mut second = first.clone();
    second.data = Some([("k".to_owned(), "2".to_owned())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &second)
        .await
        .unwrap();
    assert!(rv(&updated) > rv(&first));
    let mut stale = first.clone();
    stale.data = Some([("k".to_owned(), "3".to_owned())].into());
    let err = api_error(cms.replace("a", &PostParams::default(), &stale).await);
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );
    assert_eq!(cms.get("a").await.unwrap().data.unwrap()["k"], "2");
}

#[tokio::test]
async fn update_and_get_of_a_missing_object_are_404() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(
        cms.replace("nope", &PostParams::default(), &config_map("nope", &[]))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (404, "NotFound"));
    let err = api_error(cms.get("nope").await);
    assert_eq!(err.message, "configmaps \"nope\" not found");
    assert!(cms.get_opt("nope").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_names_are_rejected_with_422() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let err = api_error(
        cms.create(&PostParams::default(), &config_map("Bad_Name", &[]))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert!(err.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", err.message);
    let long = "a".repeat(254);
    let err = api_error(
        cms.create(&PostParams::default(), &config_map(&long, &[]))
            .await,
    );
    assert!(
        err.message.contains("must be no more than 253 characters"),
        "{}",
        err.message
    );
    let svcs: Api<Service> = Api::namespaced(server.client(), "default");
    let svc: Service =
        serde_json::from_value(json!({"metadata": {"name": "a.b"}, "spec": {}})).unwrap();
    let err = api_error(svcs.create(&PostParams::default(), &svc).await);
    assert!(err.message.contains("DNS-1035 label"), "{}", err.message);
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
    ] {
        let mut cm = config_map(name, &[]);
        cm.metadata.labels = Some(
            [
                ("app".to_owned(), app.to_owned()),
                ("tier".to_owned(), tier.to_owned()),
            ]
            .into(),
        );
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let names = |l: kube::api::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(cms.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(cms.list(&q("app!=web")).await.unwrap()), ["c"]);
    assert_eq!(
        names(cms.list(&q("tier in (front),app")).await.unwrap()),
        ["a"]
    );
    assert_eq!(names(cms.list(&q("app notin (web)")).await.unwrap()), ["c"]);
    assert_eq!(
        names(cms.list(&q("!app")).await.unwrap()),
        Vec::<String>::new()
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    let err = api_error(cms.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(err.code, 400);
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );
}

#[tokio::test]
async fn lists_paginate_with_limit_and_continue() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    for i in 0..7 {
        cms.create(&PostParams::default(), &config_map(&format!("cm-{i}"), &[]))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    let mut first_rv = None;
    loop {
        let page = cms.list(&lp).await.unwrap();
        pages += 1;
        first_rv.get_or_insert(page.metadata.resource_version.clone());
        assert_eq!(
            page.metadata.resource_version,
            *first_rv.as_ref().unwrap(),
            "pages keep the first page's version"
        );
        seen.extend(page.items.iter().map(|c| c.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn all_namespaces_and_cluster_scoped_paths() {
    let server = server();
    for ns in ["one", "two"] {
        let nss: Api<Namespace> = Api::all(server.client());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(server.client(), ns);
        cms.create(&PostParams::default(), &config_map("x", &[]))
            .await
            .unwrap();
    }
    let all: Api<ConfigMap> = Api::all(server.client());
    let list = all.list(&ListParams::default()).await.unwrap();
    let places: Vec<_> = list
        .items
        .iter()
        .map(|c| (c.namespace().unwrap(), c.name_any()))
        .collect();
    assert_eq!(
        places,
        [
            ("one".to_owned(), "x".to_owned()),
            ("two".to_owned(), "x".to_owned())
        ]
    );
    let namespaced = all
        .list(&ListParams::default().fields("metadata.namespace=two"))
        .await
        .unwrap();
    assert_eq!(namespaced.items.len(), 1);
    let nss: Api<Namespace> = Api::all(server.client());
    let ns = nss.get("one").await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    assert!(
        nss.get("default").await.is_ok(),
        "a fresh cluster has the default namespace"
    );
}

#[tokio::test]
async fn secrets_string_data_is_stored_as_base64_data() {
    let server = server();
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "stringData": {"token": "hi"}}))
            .unwrap();
    let got = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(got.string_data.is_none());
    assert_eq!(got.data.unwrap()["token"].0, b"hi");
    assert_eq!(got.type_.as_deref(), Some("Opaque"));
}

#[tokio::test]
async fn pods_are_defaulted_and_their_spec_is_immutable_but_for_images() {
    let server = server();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let created = pods
        .create(
            &PostParams::default(),
            &pod("p", "ghcr.io/dask/dask:latest"),
        )
        .await
        .unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(
        created.status.clone().unwrap().phase.as_deref(),
        Some("Pending")
    );
    let mut new_image = created.clone();
    new_image.spec.as_mut().unwrap().containers[0].image = Some("ghcr.io/dask/dask:2026.8".into());
    pods.replace("p", &PostParams::default(), &new_image)
        .await
        .unwrap();
    let mut new_env = pods.get("p").await.unwrap();
    new_env.spec.as_mut().unwrap().containers[0].args = Some(vec!["x".into()]);
    let err = api_error(pods.replace("p", &PostParams::default(), &new_env).await);
    assert_eq!(err.code, 422);
    assert!(
        err.message
            .contains("pod updates may not change fields other than"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn services_get_a_cluster_ip_that_survives_updates() {
    let server = server();
    let svcs: Api<Service> = Api::namespaced(server.client(), "default");
    let svc: Service = serde_json::from_value(json!({"metadata": {"name": "sched"},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "tcp", "port": 8786}]}}))
    .unwrap();
    let created = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let ip = created.spec.as_ref().unwrap().cluster_ip.clone().unwrap();
    assert!(ip.starts_with("10.96."));
    let mut without_ip = created.clone();
    without_ip.spec.as_mut().unwrap().cluster_ip = None;
    without_ip.spec.as_mut().unwrap().cluster_ips = None;
    let updated = svcs
        .replace("sched", &PostParams::default(), &without_ip)
        .await
        .unwrap();
    assert_eq!(updated.spec.unwrap().cluster_ip, Some(ip));
}

#[tokio::test]
async fn dry_run_writes_validate_but_store_nothing() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let before = server.resource_version();
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = cms.create(&dry, &config_map("a", &[])).await.unwrap();
    assert_eq!(answered.name_any(), "a");
    assert!(cms.get_opt("a").await.unwrap().is_none());
    assert_eq!(server.resource_version(), before);
    let err = api_error(cms.create(&dry, &config_map("Bad", &[])).await);
    assert_eq!(err.code, 422);
}

#[tokio::test]
async fn deleting_a_namespace_deletes_what_it_holds() {
    let server = server();
    let nss: Api<Namespace> = Api::all(server.client());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap(),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "scratch");
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    nss.delete("scratch", &Default::default()).await.unwrap();
    assert!(
        cms.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(nss.get_opt("scratch").await.unwrap().is_none());
}

#[tokio::test]
async fn leases_support_optimistic_leader_election() {
    use k8s_openapi::api::coordination::v1::Lease;
    let server = server();
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "rask-operator"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))
    .unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut by_b = held.clone();
    by_b.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("rask-operator", &PostParams::default(), &by_b)
        .await
        .unwrap();
    let mut by_c = held;
    by_c.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let err = api_error(
        leases
            .replace("rask-operator", &PostParams::default(), &by_c)
            .await,
    );
    assert_eq!(err.code, 409, "a stale holder cannot take the lease");
}
