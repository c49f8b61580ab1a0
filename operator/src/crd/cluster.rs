//! `DaskCluster`: a scheduler and a default worker group.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SchedulerSpec, WorkerSpec};

/// A Dask cluster: a scheduler pod and service, and a default worker group.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskCluster",
    namespaced,
    shortname = "daskcluster",
    shortname = "dsk",
    status = "DaskClusterStatus",
    scale = r#"{"specReplicasPath":".spec.worker.replicas","statusReplicasPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"integer","description":"Workers ready","jsonPath":".status.readyWorkers"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","description":"Workers wanted","jsonPath":".spec.worker.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 53").message("the name must be at most 53 characters: pod and service names are derived from it")
)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterSpec {
    pub scheduler: SchedulerSpec,
    pub worker: WorkerSpec,
    /// Delete the cluster once its scheduler has been idle this many seconds (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub idle_timeout: Option<i64>,
}

/// Where a cluster is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClusterPhase {
    /// Seen by the operator; its objects are being made.
    Created,
    /// Its objects exist; the scheduler is not ready yet.
    Pending,
    /// The scheduler is ready.
    Running,
    /// The spec cannot be reconciled (see the conditions).
    Failed,
}

/// What rask's operator reports about a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClusterPhase>,
    /// Worker pods of the default group that exist (the scale subresource's replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Worker pods (all groups of the cluster) that are ready.
    #[serde(default)]
    pub ready_workers: i32,
    /// Worker pods wanted across the cluster's groups.
    #[serde(default)]
    pub desired_workers: i32,
    /// `tcp://...` address of the scheduler inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_address: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
