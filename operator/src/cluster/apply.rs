//! Stage 4: make the cluster's objects what the builders say, with server-side apply.

use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::events::EventType;

use super::build;
use super::certs::{self, Certificates};
use super::validate::ValidatedCluster;
use crate::apply::apply;
use crate::context::Context;
use crate::crd::{DaskCluster, DaskWorkerGroup};
use crate::error::{Error, is_not_found};
use crate::names::{self, ANNOTATION_CLUSTER_REPLICAS, ANNOTATION_TEMPLATE_HASH, FIELD_MANAGER};
use crate::tls::{CertError, ClusterCerts, kubernetes_scheduler_names};

/// Makes the cluster's certificates once: the Secret `{cluster}-tls` is created when missing
/// and read (never regenerated) when it exists. A malformed one is reported, not replaced:
/// deleting it has a new one made.
pub async fn ensure_certificates(
    ctx: &Context,
    cluster: &DaskCluster,
    v: &ValidatedCluster,
) -> Result<Certificates, Error> {
    if !v.certificates {
        return Ok(Certificates::OptedOut);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = certs::secret_name(&v.name);
    let now = crate::clock::now() as i64;
    let existing = match secrets.get_opt(&name).await? {
        Some(s) => s,
        None => {
            let made = ClusterCerts::generate(
                &v.name,
                &kubernetes_scheduler_names(&v.name, &v.namespace),
                now,
            )
            .map_err(|e| Error::Other(e.to_string()))?;
            let pp = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PostParams::default()
            };
            match secrets.create(&pp, &certs::secret(v, &made)).await {
                Ok(_) => {
                    ctx.event(
                        cluster,
                        EventType::Normal,
                        "CertificatesCreated",
                        "Reconcile",
                        format!("Created Secret {name} with the cluster's CA and certificates"),
                    )
                    .await;
                    return Ok(Certificates::Ready { created: true });
                }
                // Made meanwhile (another reconcile): read what is there.
                Err(kube::Error::Api(s)) if s.code == 409 => secrets.get(&name).await?,
                Err(e) => return Err(e.into()),
            }
        }
    };
    match certs::read_secret(&existing, v, now) {
        Ok(_) => Ok(Certificates::Ready { created: false }),
        Err(CertError::Malformed { problems }) => {
            let why = format!(
                "Secret {name} cannot be used: {}; delete it to have new certificates made",
                problems.join("; ")
            );
            Ok(Certificates::Malformed(why))
        }
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// The objects a cluster should have (its default worker group is built against the group that
/// exists: see [`apply_default_group`]).
pub struct Desired {
    pub scheduler: Pod,
    pub service: Service,
}

fn hash(pod: &Pod) -> Option<&String> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_TEMPLATE_HASH))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

pub async fn apply_cluster(
    ctx: &Context,
    cluster: &DaskCluster,
    v: &ValidatedCluster,
    desired: &Desired,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &v.namespace);
    apply(&services, &desired.service).await?;
    apply_default_group(ctx, v).await?;

    // Pods are immutable in most fields: a changed template or a dead scheduler is replaced.
    let name = desired.scheduler.metadata.name.clone().unwrap_or_default();
    match pods.get_opt(&name).await? {
        Some(existing) if existing.metadata.deletion_timestamp.is_some() => {
            // On its way out; the pod watch brings us back once it is gone.
        }
        Some(existing)
            if hash(&existing) != hash(&desired.scheduler)
                || matches!(phase(&existing), "Failed" | "Succeeded") =>
        {
            let why = if hash(&existing) != hash(&desired.scheduler) {
                "its template changed".to_owned()
            } else {
                format!("it is {}", phase(&existing))
            };
            tracing::info!(cluster = %v.name, %why, "replacing the scheduler pod");
            match pods.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
            }
            ctx.event(
                cluster,
                EventType::Normal,
                "SchedulerReplaced",
                "Reconcile",
                format!("Replacing scheduler pod {name}: {why}"),
            )
            .await;
        }
        Some(_) => {}
        None => {
            apply(&pods, &desired.scheduler).await?;
            ctx.event(
                cluster,
                EventType::Normal,
                "SchedulerCreated",
                "Reconcile",
                format!("Created scheduler pod {name}"),
            )
            .await;
        }
    }
    Ok(())
}

/// Applies the default worker group: its template and metadata from the cluster, its size as
/// [`build::default_group_replicas`] says. The apply names the version it was built from, so a
/// scale that lands in between makes it a conflict, never undone: it is built again from what
/// is there then (status writes also move the version: a few tries are normal).
async fn apply_default_group(ctx: &Context, v: &ValidatedCluster) -> Result<(), Error> {
    let groups: Api<DaskWorkerGroup> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let name = names::default_worker_group(&v.name);
    let mut tries = 0;
    loop {
        let existing = groups.get_opt(&name).await?;
        if existing
            .as_ref()
            .is_some_and(|g| g.metadata.deletion_timestamp.is_some())
        {
            return Ok(());
        }
        let seen = existing.as_ref().map(|g| {
            let passed_on = g
                .annotations()
                .get(ANNOTATION_CLUSTER_REPLICAS)
                .and_then(|r| r.parse().ok());
            (g.spec.worker.replicas, passed_on)
        });
        let replicas = build::default_group_replicas(v.worker.replicas, seen);
        let mut group = build::default_worker_group(v, replicas);
        group.metadata.resource_version = existing.and_then(|g| g.metadata.resource_version);
        match apply(&groups, &group).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 && tries < 3 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}
