//! `DaskAutoscaler`: keeps a worker group's size between bounds from the scheduler's load.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Scales a cluster's workers between `minimum` and `maximum` from the scheduler's adaptive target.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskAutoscaler",
    namespaced,
    status = "DaskAutoscalerStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Minimum","type":"integer","jsonPath":".spec.minimum"}"#,
    printcolumn = r#"{"name":"Maximum","type":"integer","jsonPath":".spec.maximum"}"#,
    printcolumn = r#"{"name":"Desired","type":"integer","jsonPath":".status.desired"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DaskAutoscalerSpec {
    /// Name of the DaskCluster to scale.
    pub cluster: String,
    /// Fewest workers.
    #[schemars(range(min = 0))]
    pub minimum: i32,
    /// Most workers.
    #[schemars(range(min = 0))]
    pub maximum: i32,
    /// Worker group to scale (default: the cluster's default group).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    /// Scale down only to the highest target seen over this many seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub scale_down_stabilization_seconds: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskAutoscalerStatus {
    /// Workers the autoscaler wants now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<i32>,
    /// Workers that exist now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i32>,
    /// The last decision and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
