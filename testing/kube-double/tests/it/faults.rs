//! The test knobs: injected failures and the request log.

use crate::support::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_double::{Fault, Verb};

#[tokio::test]
async fn injected_faults_fail_matching_requests_then_stop() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    server.fail_next(
        Fault::new(500)
            .verb(Verb::Create)
            .resource("configmaps")
            .times(2),
    );
    server.fail_next(Fault::new(429).verb(Verb::Get).name("a"));
    for _ in 0..2 {
        let err = api_error(
            cms.create(&PostParams::default(), &config_map("a", &[]))
                .await,
        );
        assert_eq!((err.code, err.reason.as_str()), (500, "InternalError"));
    }
    assert!(
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "failed requests change nothing"
    );
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let err = api_error(cms.get("a").await);
    assert_eq!((err.code, err.reason.as_str()), (429, "TooManyRequests"));
    cms.get("a").await.unwrap();
}

#[tokio::test]
async fn the_request_log_shows_verbs_resources_and_answers() {
    let server = server();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    server.clear_requests();
    cms.get_opt("a").await.unwrap();
    cms.create(&PostParams::default(), &config_map("a", &[]))
        .await
        .unwrap();
    let log = server.requests();
    let summary: Vec<_> = log
        .iter()
        .map(|r| (r.verb, r.resource.clone().unwrap(), r.code))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(Verb::Get), "configmaps".to_owned(), 404),
            (Some(Verb::Create), "configmaps".to_owned(), 201)
        ]
    );
    assert_eq!(log[1].path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(
        log.iter()
            .filter(|r| r.verb.is_some_and(Verb::is_write))
            .count(),
        1
    );
}
