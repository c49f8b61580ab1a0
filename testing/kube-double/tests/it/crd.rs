//! Custom resources: schema validation with Kubernetes' messages, pruning, null dropping,
//! defaulting, CRDs created through the API, and cluster scope.

use crate::support::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube_double::ApiServer;
use serde_json::json;

fn dynamic(server: &ApiServer, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("test.kube-double.dev", "v1", "Widget");
    Api::namespaced_with(server.client(), ns, &ApiResource::from_gvk(&gvk))
}

fn raw(spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(
        json!({"apiVersion": "test.kube-double.dev/v1", "kind": "Widget",
                                  "metadata": {"name": "w"}, "spec": spec}),
    )
    .unwrap()
}

#[tokio::test]
async fn invalid_custom_resources_get_422_naming_each_field() {
    let server = server();
    let api = dynamic(&server, "default");
    let err = api_error(
        api.create(&PostParams::default(), &raw(json!({"replicas": -1})))
            .await,
    );
    assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        err.message,
        "Widget.test.kube-double.dev \"w\" is invalid: spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"
    );
    let causes = err.details.unwrap().causes;
    assert_eq!(
        (causes[0].field.as_str(), causes[0].reason.as_str()),
        ("spec.replicas", "FieldValueInvalid")
    );
    let err = api_error(
        api.create(
            &PostParams::default(),
            &raw(json!({"replicas": "two", "image": "UPPER", "mode": "Slow"})),
        )
        .await,
    );
    assert!(err.message.contains("spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""), "{}", err.message);
    assert!(
        err.message.contains("spec.image in body should match"),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(
            "spec.mode: Unsupported value: \"Slow\": supported values: \"Fast\", \"Safe\""
        ),
        "{}",
        err.message
    );
    let err = api_error(api.create(&PostParams::default(), &raw(json!({}))).await);
    assert!(
        err.message.ends_with("spec.replicas: Required value"),
        "{}",
        err.message
    );
    let err = api_error(
        api.create(
            &PostParams::default(),
            &raw(json!({"replicas": 1, "image": "x".repeat(21)})),
        )
        .await,
    );
    assert!(
        err.message
            .contains("spec.image: Too long: may not be more than 20 bytes"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_nulls_of_non_nullable_fields_dropped() {
    let server = server();
    let api = dynamic(&server, "default");
    let created = api
        .create(
            &PostParams::default(),
            &raw(json!({"replicas": 1, "env": null, "bogus": {"x": 1}, "labels": {"a": "b"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"],
        json!({"replicas": 1, "labels": {"a": "b"}})
    );
    let mut with_top_level_junk = raw(json!({"replicas": 1}));
    with_top_level_junk.metadata.name = Some("w2".into());
    with_top_level_junk.data["extra"] = json!("dropped");
    let created = api
        .create(&PostParams::default(), &with_top_level_junk)
        .await
        .unwrap();
    assert!(created.data.get("extra").is_none());
}

#[tokio::test]
async fn schema_defaults_are_applied() {
    let mut crd = Widget::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    let mode = spec.properties.as_mut().unwrap().get_mut("mode").unwrap();
    mode.default = Some(
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(json!("Safe")),
    );
    let server = ApiServer::new();
    server.install_crd(crd).unwrap();
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    let w = widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    assert_eq!(w.spec.mode, Some(Mode::Safe));
}

#[tokio::test]
async fn a_crd_applied_through_the_api_is_established_and_served() {
    let server = ApiServer::new();
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    let widgets: Api<Widget> = Api::namespaced(server.client(), "default");
    assert_eq!(api_error(widgets.list(&Default::default()).await).code, 404);
    crds.patch(
        "widgets.test.kube-double.dev",
        &PatchParams::apply("installer"),
        &Patch::Apply(Widget::crd()),
    )
    .await
    .unwrap();
    let established = kube::runtime::wait::await_condition(
        crds.clone(),
        "widgets.test.kube-double.dev",
        kube::runtime::wait::conditions::is_crd_established(),
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), established)
        .await
        .unwrap()
        .unwrap();
    widgets
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    crds.delete("widgets.test.kube-double.dev", &Default::default())
        .await
        .unwrap();
    assert_eq!(api_error(widgets.list(&Default::default()).await).code, 404);
}

#[derive(
    kube::CustomResource, serde::Deserialize, serde::Serialize, Clone, Debug, schemars::JsonSchema,
)]
#[kube(group = "test.kube-double.dev", version = "v1", kind = "Cluster")]
pub struct ClusterSpec {
    pub size: u32,
}

#[tokio::test]
async fn cluster_scoped_custom_resources_live_outside_namespaces() {
    let server = ApiServer::new();
    server.install_crd(Cluster::crd()).unwrap();
    let clusters: Api<Cluster> = Api::all(server.client());
    let c = clusters
        .create(
            &PostParams::default(),
            &Cluster::new("big", ClusterSpec { size: 3 }),
        )
        .await
        .unwrap();
    assert_eq!(c.metadata.namespace, None);
    assert_eq!(clusters.get("big").await.unwrap().spec.size, 3);
}
