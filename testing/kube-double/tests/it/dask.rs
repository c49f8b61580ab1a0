//! A DaskCluster-shaped CRD whose schema embeds k8s-openapi's PodSpec and ServiceSpec (as the
//! operator's will), fed the manifest dask-kubernetes' `make_cluster_spec` produces.

use crate::support::*;
use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use kube_double::ApiServer;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskCluster",
    namespaced,
    status = "DaskClusterStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterSpec {
    pub worker: WorkerSpec,
    pub scheduler: SchedulerSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<i64>,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct WorkerSpec {
    #[schemars(range(min = 0))]
    pub replicas: i32,
    pub spec: PodSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema)]
pub struct SchedulerSpec {
    pub spec: PodSpec,
    pub service: ServiceSpec,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct DaskClusterStatus {
    #[serde(default)]
    pub phase: Option<String>,
}

const MANIFEST: &str = r#"
apiVersion: kubernetes.dask.org/v1
kind: DaskCluster
metadata: {name: foo}
spec:
  worker:
    replicas: 2
    spec:
      containers:
      - name: worker
        image: ghcr.io/dask/dask:latest
        args: [dask-worker, --name, $(DASK_WORKER_NAME), --dashboard, --dashboard-address, "8788"]
        env: null
        resources: {requests: {memory: 2Gi}, limits: {memory: 64Gi}}
        ports: [{name: http-dashboard, containerPort: 8788, protocol: TCP}]
  scheduler:
    spec:
      containers:
      - name: scheduler
        image: ghcr.io/dask/dask:latest
        args: [dask-scheduler, --host, 0.0.0.0]
        ports: [{name: tcp-comm, containerPort: 8786, protocol: TCP}, {name: http-dashboard, containerPort: 8787, protocol: TCP}]
        readinessProbe: {httpGet: {port: http-dashboard, path: /health}, initialDelaySeconds: 0, periodSeconds: 1}
    service:
      type: ClusterIP
      selector: {dask.org/cluster-name: foo, dask.org/component: scheduler}
      ports:
      - {name: tcp-comm, protocol: TCP, port: 8786, targetPort: tcp-comm}
      - {name: http-dashboard, protocol: TCP, port: 8787, targetPort: http-dashboard}
"#;

fn manifest() -> Value {
    serde_saphyr::from_str(MANIFEST).unwrap()
}

fn api(server: &ApiServer) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kubernetes.dask.org", "v1", "DaskCluster");
    Api::namespaced_with(server.client(), "default", &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn dask_kubernetes_manifests_are_accepted_and_read_back_typed() {
    let server = ApiServer::new();
    server.install_crd(DaskCluster::crd()).unwrap();
    let created = api(&server)
        .create(
            &PostParams::default(),
            &serde_json::from_value(manifest()).unwrap(),
        )
        .await
        .unwrap();
    let worker = &created.data["spec"]["worker"]["spec"]["containers"][0];
    assert!(
        worker.get("env").is_none(),
        "env: null is dropped (the schema's env is not nullable): {worker}"
    );
    let typed: Api<DaskCluster> = Api::namespaced(server.client(), "default");
    let dc = typed.get("foo").await.unwrap();
    assert_eq!(dc.spec.worker.replicas, 2);
    assert_eq!(dc.spec.scheduler.service.ports.as_ref().unwrap().len(), 2);
    // The first apply takes ownership (forcing, as the creator owns every field); applying the
    // same manifest again writes nothing.
    let pp = PatchParams::apply("rask-operator").force();
    let first = api(&server)
        .patch("foo", &pp, &Patch::Apply(manifest()))
        .await
        .unwrap();
    let second = api(&server)
        .patch("foo", &pp, &Patch::Apply(manifest()))
        .await
        .unwrap();
    assert_eq!(first.resource_version(), second.resource_version());
    assert!(rv(&first) > rv(&dc));
}

#[tokio::test]
async fn a_negative_replica_count_is_refused_naming_the_field() {
    let server = ApiServer::new();
    server.install_crd(DaskCluster::crd()).unwrap();
    let mut m = manifest();
    m["spec"]["worker"]["replicas"] = json!(-1);
    let err = api_error(
        api(&server)
            .create(&PostParams::default(), &serde_json::from_value(m).unwrap())
            .await,
    );
    assert_eq!(
        err.message,
        "DaskCluster.kubernetes.dask.org \"foo\" is invalid: spec.worker.replicas: Invalid value: -1: spec.worker.replicas in body should be greater than or equal to 0"
    );
    let mut m = manifest();
    m["spec"]["scheduler"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let err = api_error(
        api(&server)
            .create(&PostParams::default(), &serde_json::from_value(m).unwrap())
            .await,
    );
    assert!(
        err.message
            .contains("spec.scheduler.spec.containers[0].name: Required value"),
        "{}",
        err.message
    );
}
