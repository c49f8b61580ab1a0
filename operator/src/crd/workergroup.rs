//! `DaskWorkerGroup`: a set of identical workers of a cluster.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::WorkerSpec;

/// Workers of one kind for a cluster. Every DaskCluster has a `{cluster}-default` group; more can be added.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskWorkerGroup",
    namespaced,
    shortname = "daskworkers",
    status = "DaskWorkerGroupStatus",
    scale = r#"{"specReplicasPath":".spec.worker.replicas","statusReplicasPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","description":"Workers wanted","jsonPath":".spec.worker.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DaskWorkerGroupSpec {
    /// Name of the DaskCluster these workers join.
    pub cluster: String,
    pub worker: WorkerSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskWorkerGroupStatus {
    /// Worker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
