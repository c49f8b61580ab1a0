//! `DaskJob`: a job-runner pod run against a cluster made for it.

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::DaskClusterSpec;
use super::common::SimpleObjectMeta;
use super::schema;

/// A job: a runner pod that uses a Dask cluster created for it and removed after it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "kubernetes.dask.org",
    version = "v1",
    kind = "DaskJob",
    namespaced,
    shortname = "djb",
    status = "DaskJobStatus",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.jobStatus"}"#,
    printcolumn = r#"{"name":"Failed","type":"integer","description":"Runner attempts that failed","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".spec.cluster.spec.worker.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 53").message("the name must be at most 53 characters: the cluster and pod names are derived from it")
)]
#[serde(rename_all = "camelCase")]
pub struct DaskJobSpec {
    pub job: JobPodSpec,
    pub cluster: JobClusterSpec,
    /// rask: how many times a failed runner pod is replaced before the job fails (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub backoff_limit: Option<i32>,
    /// rask: seconds from the job's creation after which it fails (its runner is stopped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// rask: delete the DaskJob this many seconds after it finished (default: keep it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i64>,
    /// rask: keep the cluster of a failed job for debugging (default false: it is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_cluster_on_failure: Option<bool>,
}

/// The job-runner pod.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    #[schemars(schema_with = "schema::pod_spec")]
    pub spec: PodSpec,
}

/// The cluster made for the job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobClusterSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<SimpleObjectMeta>,
    pub spec: DaskClusterSpec,
}

/// Dask's job states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum JobStatus {
    /// The DaskJob was seen; its cluster is being created.
    JobCreated,
    /// The cluster exists; the runner starts once its scheduler is ready.
    ClusterCreated,
    /// The runner pod runs.
    Running,
    /// The runner exited 0.
    Successful,
    /// The runner failed more than `backoffLimit` times, or the deadline passed.
    Failed,
}

impl JobStatus {
    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, JobStatus::Successful | JobStatus::Failed)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DaskJobStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status: Option<JobStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_runner_pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Time>,
    /// rask: runner attempts that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// rask: the exit code of the last failed runner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
