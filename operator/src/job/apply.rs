//! Stage 4: carry out the plan's steps with server-side apply and deletions; "not found" is done.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::events::EventType;

use super::build;
use super::plan::Step;
use super::validate::ValidatedJob;
use crate::apply::apply;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskJob};
use crate::error::{Error, is_not_found};

async fn delete<K>(api: &Api<K>, name: &str, dp: &DeleteParams) -> Result<bool, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, dp).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub async fn carry_out(
    ctx: &Context,
    job: &DaskJob,
    v: &ValidatedJob,
    steps: impl Iterator<Item = &Step>,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &v.namespace);
    for step in steps {
        match step {
            Step::CreateCluster => {
                apply(&clusters, &build::cluster(v)).await?;
            }
            Step::CreateRunner(attempt) => {
                let pod = build::runner_pod(v, *attempt);
                let name = pod.metadata.name.clone().unwrap_or_default();
                apply(&pods, &pod).await?;
                ctx.event(
                    job,
                    EventType::Normal,
                    "RunnerCreated",
                    "Reconcile",
                    format!(
                        "Created runner pod {name} (attempt {} of {})",
                        attempt + 1,
                        v.max_attempts
                    ),
                )
                .await;
            }
            Step::DeleteRunner(name) => {
                if delete(&pods, name, &DeleteParams::default()).await? {
                    ctx.event(
                        job,
                        EventType::Normal,
                        "RunnerStopped",
                        "Delete",
                        format!("Stopped runner pod {name}: the job has ended"),
                    )
                    .await;
                }
            }
            Step::DeleteCluster => {
                if delete(&clusters, &v.cluster_name, &DeleteParams::background()).await? {
                    ctx.event(
                        job,
                        EventType::Normal,
                        "ClusterDeleted",
                        "Delete",
                        format!("Deleted DaskCluster {}: the job has ended", v.cluster_name),
                    )
                    .await;
                }
            }
            Step::DeleteJob => {
                let jobs: Api<DaskJob> = Api::namespaced(ctx.client.clone(), &v.namespace);
                let dp = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(v.owner.uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::background()
                };
                tracing::info!(job = %v.name, "ttlSecondsAfterFinished passed; deleting the DaskJob");
                delete(&jobs, &v.name, &dp).await?;
            }
        }
    }
    Ok(())
}
