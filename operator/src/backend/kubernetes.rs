//! Workers as pods of a DaskWorkerGroup. The group's size goes through the scale subresource (as
//! `kubectl scale` would); the worker-group controller creates pods, and retires pods through the
//! scheduler before deleting them. To retire *named* workers, this backend marks their pods with
//! Kubernetes' `pod-deletion-cost` so the group controller picks exactly those.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use super::{Backend, BackendError, InstanceState, Retirement, WorkerInstance};
use crate::clock::now;
use crate::cluster::status::is_ready;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::names::{ANNOTATION_DELETION_COST, LABEL_WORKER_GROUP};

const BACKEND: &str = "kubernetes";
/// The deletion cost of a pod chosen for retirement: below any a user would set.
pub const RETIRE_COST: i32 = i32::MIN;

pub struct KubernetesBackend {
    pub client: kube::Client,
    pub namespace: String,
    pub cluster: String,
    /// The scheduler's HTTP API, as the operator reaches it.
    pub scheduler_url: String,
}

fn failed(action: impl Into<String>, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed {
        backend: BACKEND,
        action: action.into(),
        reason: e.to_string(),
    }
}

impl KubernetesBackend {
    async fn replicas(&self, group: &str) -> Result<usize, BackendError> {
        let groups: Api<DaskWorkerGroup> = Api::namespaced(self.client.clone(), &self.namespace);
        let g = groups
            .get_opt(group)
            .await
            .map_err(|e| failed(format!("read DaskWorkerGroup {group}"), e))?
            .ok_or_else(|| {
                failed(
                    format!("read DaskWorkerGroup {group}"),
                    format!("it does not exist in namespace {}", self.namespace),
                )
            })?;
        Ok(usize::try_from(g.spec.worker.replicas).unwrap_or(0))
    }

    /// Sets the group's size through its scale subresource, as `kubectl scale` does; the group
    /// owns its size (a cluster's default group too: the cluster only passes on changes of its
    /// own `spec.worker.replicas`).
    async fn scale(&self, group: &str, replicas: usize) -> Result<(), BackendError> {
        let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
        let api: Api<DaskWorkerGroup> = Api::namespaced(self.client.clone(), &self.namespace);
        api.patch_scale(group, &PatchParams::default(), &patch)
            .await
            .map_err(|e| failed(format!("scale {group} to {replicas}"), e))?;
        Ok(())
    }

    async fn pods(&self, group: &str) -> Result<Vec<Pod>, BackendError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        Ok(pods
            .list(&ListParams::default().labels(&format!("{LABEL_WORKER_GROUP}={group}")))
            .await
            .map_err(|e| failed(format!("list the pods of {group}"), e))?
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect())
    }
}

fn marked(p: &Pod) -> bool {
    p.annotations().get(ANNOTATION_DELETION_COST) == Some(&RETIRE_COST.to_string())
}

fn instance(p: &Pod) -> WorkerInstance {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    let state = match phase {
        Some(ph @ ("Failed" | "Succeeded")) => InstanceState::Failed {
            reason: format!("pod {ph}"),
        },
        _ if is_ready(p) => InstanceState::Running,
        _ => InstanceState::Starting,
    };
    WorkerInstance {
        name: p.name_any(),
        created: p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second() as f64)
            .unwrap_or(0.0),
        state,
    }
}

impl Backend for KubernetesBackend {
    fn scheduler_url(&self) -> String {
        self.scheduler_url.clone()
    }

    /// The group as it is being made: exactly `replicas` workers — its pods not chosen for
    /// retirement, oldest kept when there are more than wanted (the group controller removes the
    /// newest), and a starting placeholder per pod not created yet. Placeholder names contain a
    /// `/`, which no pod name can.
    async fn list_workers(&self, group: &str) -> Result<Vec<WorkerInstance>, BackendError> {
        let replicas = self.replicas(group).await?;
        let mut live: Vec<WorkerInstance> = self
            .pods(group)
            .await?
            .iter()
            .filter(|p| !marked(p))
            .map(instance)
            .collect();
        live.sort_by(|a, b| a.created.total_cmp(&b.created).then(a.name.cmp(&b.name)));
        live.truncate(replicas);
        let missing = replicas - live.len();
        live.extend((0..missing).map(|i| WorkerInstance {
            name: format!("{group}/pending-{i}"),
            created: now(),
            state: InstanceState::Starting,
        }));
        Ok(live)
    }

    async fn add_workers(&self, group: &str, n: usize) -> Result<Vec<String>, BackendError> {
        let replicas = self.replicas(group).await?;
        self.scale(group, replicas + n).await?;
        Ok((0..n).map(|i| format!("{group}/pending-{i}")).collect())
    }

    /// Marks the named pods cheapest to delete, then lowers the group's size by as many; the
    /// group controller retires exactly those through the scheduler and deletes the ones it
    /// retired. Placeholders (pods not created yet) only lower the size.
    async fn retire_workers(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Retirement, BackendError> {
        if names.is_empty() {
            return Ok(Retirement::default());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing: Vec<String> = self
            .pods(group)
            .await?
            .iter()
            .map(|p| p.name_any())
            .filter(|n| names.contains(n))
            .collect();
        let mark = Patch::Merge(json!({
            "metadata": {"annotations": {ANNOTATION_DELETION_COST: RETIRE_COST.to_string()}}
        }));
        for name in &existing {
            pods.patch(name, &PatchParams::default(), &mark)
                .await
                .map_err(|e| failed(format!("mark pod {name} for retirement"), e))?;
        }
        let replicas = self.replicas(group).await?;
        self.scale(group, replicas.saturating_sub(names.len()))
            .await?;
        Ok(Retirement {
            removed: names.to_vec(),
            kept: Vec::new(),
        })
    }

    /// Deletes the DaskCluster; its pods, services and groups follow by garbage collection.
    async fn delete_cluster(&self) -> Result<(), BackendError> {
        let api: Api<DaskCluster> = Api::namespaced(self.client.clone(), &self.namespace);
        match api.delete(&self.cluster, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(failed(format!("delete DaskCluster {}", self.cluster), e)),
        }
    }
}
