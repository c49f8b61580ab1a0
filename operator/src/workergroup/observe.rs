//! Stage 1 for worker groups: the cluster the group belongs to and the group's pods, read from
//! the API server (not a cache, so a pod the previous reconcile created is never created twice).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::plan::PodView;
use super::validate::ValidatedGroup;
use crate::cluster::status::is_ready;
use crate::context::Context;
use crate::crd::DaskCluster;
use crate::error::Error;
use crate::names::{self, ANNOTATION_TEMPLATE_HASH, LABEL_WORKER_GROUP};

/// What a group's reconcile reads.
pub struct Observed {
    /// The DaskCluster named by `spec.cluster`, if it exists.
    pub cluster: Option<DaskCluster>,
    /// The group's pods that are not being deleted.
    pub pods: Vec<PodView>,
}

impl Observed {
    /// The cluster's labels, which every worker pod carries (as dask-kubernetes labels them).
    pub fn cluster_labels(&self) -> BTreeMap<String, String> {
        self.cluster
            .as_ref()
            .map(|c| c.labels().clone())
            .unwrap_or_default()
    }
}

/// The DaskCluster named by the group's `spec.cluster`, if it exists.
pub async fn cluster(ctx: &Context, v: &ValidatedGroup) -> Result<Option<DaskCluster>, Error> {
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &v.namespace);
    Ok(clusters.get_opt(&v.cluster).await?)
}

/// The group's pods, beside its cluster read with [`cluster`].
pub async fn observe(
    ctx: &Context,
    v: &ValidatedGroup,
    cluster: Option<DaskCluster>,
) -> Result<Observed, Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("{LABEL_WORKER_GROUP}={}", v.name)))
        .await?;
    let pods = listed
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| pod_view(p, &v.template_hash))
        .collect();
    Ok(Observed { cluster, pods })
}

/// A pod as the plan sees it.
pub fn pod_view(p: &Pod, template_hash: &str) -> PodView {
    PodView {
        name: p.name_any(),
        ready: is_ready(p),
        terminal: matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed" | "Succeeded")
        ),
        up_to_date: p
            .annotations()
            .get(ANNOTATION_TEMPLATE_HASH)
            .is_some_and(|h| h == template_hash),
        deletion_cost: p
            .annotations()
            .get(names::ANNOTATION_DELETION_COST)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        created: p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0),
    }
}
