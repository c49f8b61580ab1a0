//! Pieces shared by several resources: the scheduler and worker templates.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::schema;

/// Labels and annotations for the pods a template creates (Dask's `SimpleObjectMeta`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimpleObjectMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A worker group's template: how many workers, and their pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerSpec {
    /// Number of workers to run.
    #[serde(default = "one")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// Pod template of every worker.
    #[schemars(schema_with = "schema::pod_spec")]
    pub spec: PodSpec,
}

fn one() -> i32 {
    1
}

/// The scheduler's pod and service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SchedulerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    /// Pod template of the scheduler.
    #[schemars(schema_with = "schema::pod_spec")]
    pub spec: PodSpec,
    /// Service in front of the scheduler (comm port 8786, dashboard/HTTP API 8787).
    #[schemars(schema_with = "schema::service_spec")]
    pub service: ServiceSpec,
}
