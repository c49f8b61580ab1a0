//! Stage 1 for DaskAutoscalers: the cluster and the worker group it scales.

use kube::api::Api;

use super::validate::ValidatedAutoscaler;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::error::Error;

pub struct Observed {
    pub cluster: Option<DaskCluster>,
    pub group: Option<DaskWorkerGroup>,
}

pub async fn observe(ctx: &Context, v: &ValidatedAutoscaler) -> Result<Observed, Error> {
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let groups: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), &v.namespace);
    Ok(Observed {
        cluster: clusters.get_opt(&v.cluster).await?,
        group: groups.get_opt(&v.group).await?,
    })
}
