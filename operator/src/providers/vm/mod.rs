//! Cloud VMs as a [`Backend`]: one generic implementation over a [`Provider`] (EC2 in
//! [`aws`], Azure in [`azure`]) that knows only how to create, describe and delete
//! tagged resources. Provisioning is a staged pipeline that records every resource it creates in a
//! [`Ledger`], so a failure rolls back exactly those; every wait has a timeout; new workers count
//! only once they appear in the scheduler's `get_workers`.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, BackendError, InstanceState, Retirement, WorkerInstance, no_group, retire_then_remove,
    tail,
};
use crate::clock::now;
use crate::providers::config::vm::CloudCluster;
use crate::providers::{ProviderError, suffix};
use crate::scheduler_api::SchedulerApi;
use crate::tls::ClusterCerts;
use userdata::Body;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
mod aws_sdk;
#[cfg(feature = "azure")]
pub mod azure;
pub mod secrets;
#[cfg(feature = "aws")]
pub mod ssm;
pub mod userdata;

/// Tag keys every resource carries.
pub const TAG_CLUSTER: &str = "rask:cluster";
pub const TAG_ROLE: &str = "rask:role";
pub const TAG_GROUP: &str = "rask:group";
/// Seconds since the epoch when the resource was created (sweep spares young clusters).
pub const TAG_CREATED: &str = "rask:created";
/// Set on the scheduler VM once `up` finished: the cluster is live.
pub const TAG_READY: &str = "rask:ready";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Scheduler,
    Worker,
    /// Security group, network security group.
    Network,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Scheduler => "scheduler",
            Role::Worker => "worker",
            Role::Network => "network",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "scheduler" => Some(Role::Scheduler),
            "worker" => Some(Role::Worker),
            "network" => Some(Role::Network),
            _ => None,
        }
    }
}

/// A VM to create.
#[derive(Clone, Debug)]
pub struct VmRequest {
    /// Chosen before creation: the VM's name tag and, for a worker, its name at the scheduler.
    pub name: String,
    pub role: Role,
    pub group: Option<String>,
    pub size: String,
    pub user_data: String,
    /// Only ever true for the scheduler.
    pub public_ip: bool,
    pub spot: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmState {
    Pending,
    Running,
    /// Stopping, stopped, deallocated, being deleted.
    Stopping,
    Failed(String),
}

/// A VM as the provider describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    /// The provider's id (EC2 instance id, Azure VM name).
    pub id: String,
    pub name: String,
    pub cluster: String,
    pub role: Role,
    pub group: Option<String>,
    pub state: VmState,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub created: f64,
    pub ready: bool,
}

/// A resource a cluster owns, as created or as found by its tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Resource {
    /// `instance`, `security-group`, `virtual-machine`, `network-interface`, `public-ip`, ...
    pub kind: &'static str,
    pub id: String,
    pub cluster: String,
    pub created: Option<u64>,
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}

/// Every resource created so far, in order, so a failure deletes exactly these (newest first).
#[derive(Debug, Default)]
pub struct Ledger {
    pub created: Vec<Resource>,
}

impl Ledger {
    pub fn record(&mut self, r: Resource) {
        self.created.push(r);
    }
}

/// One cloud's resource API. Implementations tag everything with [`TAG_CLUSTER`] and
/// [`TAG_ROLE`], record each resource in the ledger the moment the API accepted it, treat "not
/// found" as done when deleting, and bound each wait with the given timeout.
pub trait Provider: Send + Sync + 'static {
    /// `aws`, `azure`.
    fn name(&self) -> &'static str;

    /// Creates the cluster's network pieces (security group / network security group) unless the
    /// config names existing ones.
    fn prepare(
        &self,
        cluster: &CloudCluster,
        ledger: &mut Ledger,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Creates one VM (and its NIC, IP, disk...), recording each in the ledger.
    fn create_vm(
        &self,
        cluster: &CloudCluster,
        req: &VmRequest,
        ledger: &mut Ledger,
    ) -> impl Future<Output = Result<Vm, ProviderError>> + Send;

    /// The cluster's VMs that are not deleted.
    fn list_vms(
        &self,
        cluster: &str,
    ) -> impl Future<Output = Result<Vec<Vm>, ProviderError>> + Send;

    /// Every resource carrying a cluster tag (of `cluster`, or of any cluster).
    fn tagged(
        &self,
        cluster: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Resource>, ProviderError>> + Send;

    /// Deletes the resources (VMs before the network pieces they use) and waits until they are
    /// gone, up to `timeout`.
    fn delete(
        &self,
        resources: &[Resource],
        timeout: Duration,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The VM's boot (serial console) output so far.
    fn boot_log(&self, vm: &Vm) -> impl Future<Output = Result<String, ProviderError>> + Send;

    /// Puts the cluster's TLS files (name, PEM) in the provider's secret store, private keys
    /// encrypted, each tagged with the cluster and recorded in the ledger once stored.
    fn store_tls(
        &self,
        cluster: &CloudCluster,
        files: &[(String, String)],
        ledger: &mut Ledger,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Marks the scheduler VM as belonging to a live cluster ([`TAG_READY`]).
    fn mark_ready(&self, vm: &Vm) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// The resource a VM is, for [`Provider::delete`].
    fn vm_resource(&self, vm: &Vm) -> Resource;
}

/// How the scheduler's HTTP API is reached from where the command runs: by default its public IP
/// (or private IP with `use_private_ip`), port 8787. Tests point it at a local scheduler.
pub type ResolveUrl = Arc<dyn Fn(&Vm) -> Option<String> + Send + Sync>;

/// Knobs that are not part of the cluster's config.
#[derive(Clone)]
pub struct Runtime {
    pub resolve_url: ResolveUrl,
    /// Between looks at the provider or the scheduler while waiting.
    pub poll: Duration,
    /// Progress lines for the user.
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
    pub api: SchedulerApi,
}

impl Runtime {
    pub fn new(resolve_url: ResolveUrl) -> Self {
        Runtime {
            resolve_url,
            poll: Duration::from_secs(2),
            progress: Arc::new(|line| eprintln!("{line}")),
            api: SchedulerApi::new(Duration::from_secs(60)),
        }
    }
}

/// The default way to reach the scheduler: its public IP unless `private`, else its private one;
/// over HTTPS when the cluster has TLS.
pub fn scheduler_url_by_ip(private: bool, tls: bool) -> ResolveUrl {
    let scheme = if tls { "https" } else { "http" };
    Arc::new(move |vm: &Vm| {
        let ip = if private {
            vm.private_ip.clone()
        } else {
            vm.public_ip.clone().or_else(|| vm.private_ip.clone())
        };
        ip.map(|ip| format!("{scheme}://{ip}:8787"))
    })
}

/// A cluster on cloud VMs.
pub struct CloudBackend<P: Provider> {
    pub provider: Arc<P>,
    pub cluster: Arc<CloudCluster>,
    pub scheduler: Vm,
    /// The scheduler's HTTP API as reached from here.
    pub url: String,
    /// `tcp://PRIVATE_IP:8786` (`tls://` with TLS), what workers connect to.
    pub address: String,
    pub rt: Runtime,
    /// The certificates `up` made (none after `attach`, or without TLS).
    pub certs: Option<ClusterCerts>,
}

/// The scheduler VM's private address: `tls://` when the cluster has TLS.
fn private_address(vm: &Vm, tls: bool) -> Result<String, ProviderError> {
    let scheme = if tls { "tls" } else { "tcp" };
    vm.private_ip
        .as_ref()
        .map(|ip| format!("{scheme}://{ip}:8786"))
        .ok_or_else(|| ProviderError::Other(format!("scheduler VM {} has no private IP", vm.id)))
}

/// The names the scheduler's certificate is valid for: its VM's addresses and loopback (the
/// autoscaler on the scheduler VM reaches it at 127.0.0.1).
fn scheduler_names(vm: &Vm) -> Vec<String> {
    let mut names: Vec<String> = vm
        .private_ip
        .iter()
        .chain(vm.public_ip.iter())
        .cloned()
        .collect();
    for n in crate::tls::local_names() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Deletes what the ledger holds, newest first, and wraps `cause` with what happened.
pub async fn rollback<P: Provider>(
    provider: &P,
    ledger: Ledger,
    timeout: Duration,
    cause: ProviderError,
) -> ProviderError {
    if ledger.created.is_empty() {
        return cause;
    }
    let mut items = ledger.created;
    items.reverse();
    let names: Vec<String> = items.iter().map(|r| r.to_string()).collect();
    match provider.delete(&items, timeout).await {
        Ok(()) => ProviderError::RolledBack {
            cause: Box::new(cause),
            deleted: names,
        },
        Err(e) => ProviderError::RollbackFailed {
            cause: Box::new(cause),
            error: Box::new(e),
            left: names,
        },
    }
}

/// Polls the provider until every VM named is running, up to `timeout`. A VM that failed ends the
/// wait at once with its reason and boot log.
async fn wait_running<P: Provider>(
    provider: &P,
    cluster: &str,
    names: &BTreeSet<String>,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<Vm>, ProviderError> {
    let start = Instant::now();
    loop {
        let vms: Vec<Vm> = provider
            .list_vms(cluster)
            .await?
            .into_iter()
            .filter(|v| names.contains(&v.name))
            .collect();
        let failed = vms.iter().find_map(|v| match &v.state {
            VmState::Failed(reason) => Some((v, reason)),
            _ => None,
        });
        if let Some((vm, reason)) = failed {
            let log = provider.boot_log(vm).await.ok().map(|l| tail(&l, 30));
            return Err(ProviderError::VmFailed {
                name: vm.name.clone(),
                id: vm.id.clone(),
                reason: reason.clone(),
                boot_log: log,
            });
        }
        let running = vms.iter().filter(|v| v.state == VmState::Running).count();
        if running == names.len() {
            return Ok(vms);
        }
        if start.elapsed() > timeout {
            let missing: Vec<String> = names
                .iter()
                .filter(|n| {
                    !vms.iter()
                        .any(|v| &v.name == *n && v.state == VmState::Running)
                })
                .cloned()
                .collect();
            let first = vms.iter().find(|v| missing.contains(&v.name));
            let log = match first {
                Some(vm) => provider.boot_log(vm).await.ok().map(|l| tail(&l, 30)),
                None => None,
            };
            return Err(ProviderError::Timeout {
                what: format!("VMs {} running", missing.join(", ")),
                after: timeout,
                boot_log: log,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

impl<P: Provider> CloudBackend<P> {
    /// `up`: network, scheduler VM, its `/health`, workers (verified in `get_workers`), then the
    /// ready tag. Any failure deletes everything this call created.
    pub async fn provision(
        provider: Arc<P>,
        cluster: Arc<CloudCluster>,
        config_text: &str,
        rt: Runtime,
    ) -> Result<CloudBackend<P>, ProviderError> {
        let mut ledger = Ledger::default();
        match Self::provision_stages(&provider, &cluster, config_text, &rt, &mut ledger).await {
            Ok(b) => Ok(b),
            Err(cause) => {
                if !ledger.created.is_empty() {
                    (rt.progress)(&format!(
                        "up failed; deleting the {} resources it created",
                        ledger.created.len()
                    ));
                }
                Err(rollback(&*provider, ledger, cluster.timeouts.delete, cause).await)
            }
        }
    }

    async fn provision_stages(
        provider: &Arc<P>,
        cluster: &Arc<CloudCluster>,
        config_text: &str,
        rt: &Runtime,
        ledger: &mut Ledger,
    ) -> Result<CloudBackend<P>, ProviderError> {
        let mut rt = rt.clone();
        let existing = provider.tagged(Some(&cluster.name)).await?;
        if !existing.is_empty() {
            return Err(ProviderError::Other(format!(
                "cluster {} already has resources ({}): `rask-operator down {}` first, or pick another name",
                cluster.name,
                existing
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                cluster.name
            )));
        }
        (rt.progress)(&format!("{}: creating the network pieces", cluster.name));
        provider.prepare(cluster, ledger).await?;
        let with_config = cluster.autoscaling.as_ref().map(|_| config_text);
        let public_ip = match &cluster.provider {
            crate::providers::config::vm::ProviderSettings::Aws(e) => !e.use_private_ip,
            crate::providers::config::vm::ProviderSettings::Azure(a) => a.public_ingress,
        };
        let req = VmRequest {
            name: format!("{}-scheduler", cluster.name),
            role: Role::Scheduler,
            group: None,
            size: cluster.scheduler.size.clone(),
            user_data: userdata::render(
                cluster,
                &Body::Scheduler {
                    config_text: with_config,
                },
            ),
            public_ip,
            spot: false,
        };
        (rt.progress)(&format!(
            "{}: creating the scheduler VM {}",
            cluster.name, req.name
        ));
        provider.create_vm(cluster, &req, ledger).await?;
        let names = BTreeSet::from([req.name.clone()]);
        let timeout = cluster.timeouts.scheduler;
        let start = Instant::now();
        let scheduler = wait_running(&**provider, &cluster.name, &names, timeout, rt.poll)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Other("the scheduler VM vanished".into()))?;
        let url = (rt.resolve_url)(&scheduler).ok_or_else(|| {
            ProviderError::Other(format!(
                "scheduler VM {} has no IP address to reach it by",
                scheduler.id
            ))
        })?;
        let address = private_address(&scheduler, cluster.tls)?;
        // The certificates once the scheduler's addresses are known, so its certificate names
        // them; the scheduler VM waits for its files at boot.
        let certs = match secrets::store_of(cluster) {
            None => None,
            Some(store) => {
                (rt.progress)(&format!(
                    "{}: making the cluster's certificates, keys in {store}",
                    cluster.name
                ));
                let certs = ClusterCerts::generate(
                    &cluster.name,
                    &scheduler_names(&scheduler),
                    now() as i64,
                )
                .map_err(|e| ProviderError::Other(e.to_string()))?;
                provider.store_tls(cluster, &certs.files(), ledger).await?;
                rt.api = SchedulerApi::with_tls(
                    &certs.ca_pem,
                    &certs.client.cert_pem,
                    &certs.client.key_pem,
                    rt.api.timeout(),
                )
                .map_err(|e| ProviderError::Other(e.to_string()))?;
                Some(certs)
            }
        };
        (rt.progress)(&format!(
            "{}: waiting for the scheduler at {url} (VM {})",
            cluster.name, scheduler.id
        ));
        loop {
            let ok = tokio::time::timeout(
                rt.poll.max(Duration::from_secs(1)),
                rt.api.get_workers(&url),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if ok {
                break;
            }
            if start.elapsed() > timeout {
                let log = provider
                    .boot_log(&scheduler)
                    .await
                    .ok()
                    .map(|l| tail(&l, 30));
                return Err(ProviderError::Timeout {
                    what: format!(
                        "the scheduler on VM {} ({}) answering at {url}/api/v1/get_workers",
                        scheduler.name, scheduler.id
                    ),
                    after: timeout,
                    boot_log: log,
                });
            }
            tokio::time::sleep(rt.poll).await;
        }
        let backend = CloudBackend {
            provider: provider.clone(),
            cluster: cluster.clone(),
            scheduler,
            url,
            address,
            rt: rt.clone(),
            certs,
        };
        for (group, g) in &cluster.groups {
            if g.replicas > 0 {
                (rt.progress)(&format!(
                    "{}: creating {} {group} workers",
                    cluster.name, g.replicas
                ));
                backend
                    .create_workers(group, g.replicas as usize, ledger)
                    .await?;
            }
        }
        provider.mark_ready(&backend.scheduler).await?;
        Ok(backend)
    }

    /// Finds a running cluster's scheduler by its tags.
    pub async fn attach(
        provider: Arc<P>,
        cluster: Arc<CloudCluster>,
        rt: Runtime,
    ) -> Result<CloudBackend<P>, ProviderError> {
        let vms = provider.list_vms(&cluster.name).await?;
        let scheduler = vms
            .into_iter()
            .find(|v| v.role == Role::Scheduler)
            .ok_or_else(|| ProviderError::NoSuchCluster {
                name: cluster.name.clone(),
                reason: format!("no scheduler VM tagged {TAG_CLUSTER}={}", cluster.name),
            })?;
        if scheduler.state != VmState::Running {
            return Err(ProviderError::NoSuchCluster {
                name: cluster.name.clone(),
                reason: format!(
                    "its scheduler VM {} is {:?}, not running",
                    scheduler.id, scheduler.state
                ),
            });
        }
        let url = (rt.resolve_url)(&scheduler).ok_or_else(|| {
            ProviderError::Other(format!("scheduler VM {} has no IP address", scheduler.id))
        })?;
        let address = private_address(&scheduler, cluster.tls)?;
        Ok(CloudBackend {
            provider,
            cluster,
            scheduler,
            url,
            address,
            rt,
            certs: None,
        })
    }

    /// Creates `n` worker VMs of `group`, waits until they run and until the scheduler lists them.
    /// Every VM created is in the ledger; the caller rolls back on error.
    async fn create_workers(
        &self,
        group: &str,
        n: usize,
        ledger: &mut Ledger,
    ) -> Result<Vec<String>, ProviderError> {
        let cluster = &self.cluster;
        let g = cluster.groups.get(group).ok_or_else(|| {
            ProviderError::Other(no_group(&cluster.name, group, cluster.groups.keys()))
        })?;
        let spot = match &cluster.provider {
            crate::providers::config::vm::ProviderSettings::Aws(e) => e.spot,
            crate::providers::config::vm::ProviderSettings::Azure(a) => a.spot,
        };
        let mut names = BTreeSet::new();
        for _ in 0..n {
            let name = format!("{}-{group}-{}", cluster.name, suffix());
            let req = VmRequest {
                user_data: userdata::render(
                    cluster,
                    &Body::Worker {
                        group,
                        name: &name,
                        scheduler: &self.address,
                    },
                ),
                name: name.clone(),
                role: Role::Worker,
                group: Some(group.to_owned()),
                size: g.size.clone(),
                public_ip: false,
                spot,
            };
            self.provider.create_vm(cluster, &req, ledger).await?;
            names.insert(name);
        }
        let start = Instant::now();
        let timeout = cluster.timeouts.workers;
        let vms = wait_running(
            &*self.provider,
            &cluster.name,
            &names,
            timeout,
            self.rt.poll,
        )
        .await?;
        self.wait_joined(&vms, timeout.saturating_sub(start.elapsed()))
            .await?;
        Ok(names.into_iter().collect())
    }

    /// Waits until every VM's worker is in the scheduler's `get_workers`. On timeout the error
    /// names the VMs that did not join and carries the first one's boot log.
    pub async fn wait_joined(&self, vms: &[Vm], timeout: Duration) -> Result<(), ProviderError> {
        let start = Instant::now();
        loop {
            let seen: BTreeSet<String> = match self.rt.api.get_workers(&self.url).await {
                Ok(ws) => ws.into_iter().map(|w| w.name).collect(),
                Err(e) if start.elapsed() > timeout => return Err(e.into()),
                Err(_) => BTreeSet::new(),
            };
            let missing: Vec<&Vm> = vms.iter().filter(|v| !seen.contains(&v.name)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                let log = self
                    .provider
                    .boot_log(missing[0])
                    .await
                    .ok()
                    .map(|l| tail(&l, 30));
                return Err(ProviderError::Timeout {
                    what: format!(
                        "workers on VMs {} joining the scheduler at {} (see `rask-operator logs {} {}`)",
                        missing
                            .iter()
                            .map(|v| format!("{} ({})", v.name, v.id))
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.address,
                        self.cluster.name,
                        missing[0].name,
                    ),
                    after: timeout,
                    boot_log: log,
                });
            }
            tokio::time::sleep(self.rt.poll).await;
        }
    }

    /// Adds workers; on any failure the VMs this call created are deleted.
    pub async fn grow(&self, group: &str, n: usize) -> Result<Vec<String>, ProviderError> {
        let mut ledger = Ledger::default();
        match self.create_workers(group, n, &mut ledger).await {
            Ok(names) => Ok(names),
            Err(cause) => {
                Err(rollback(&*self.provider, ledger, self.cluster.timeouts.delete, cause).await)
            }
        }
    }

    /// Deletes worker VMs by name.
    pub async fn remove(&self, names: &[String]) -> Result<(), ProviderError> {
        let vms = self.provider.list_vms(&self.cluster.name).await?;
        let doomed: Vec<Resource> = vms
            .iter()
            .filter(|v| v.role == Role::Worker && names.contains(&v.name))
            .map(|v| self.provider.vm_resource(v))
            .collect();
        self.provider
            .delete(&doomed, self.cluster.timeouts.delete)
            .await
    }

    /// The cluster's worker VMs.
    pub async fn workers(&self) -> Result<Vec<Vm>, ProviderError> {
        Ok(self
            .provider
            .list_vms(&self.cluster.name)
            .await?
            .into_iter()
            .filter(|v| v.role == Role::Worker)
            .collect())
    }
}

impl<P: Provider> Backend for CloudBackend<P> {
    fn scheduler_url(&self) -> String {
        self.url.clone()
    }

    async fn list_workers(&self, group: &str) -> Result<Vec<WorkerInstance>, BackendError> {
        Ok(self
            .workers()
            .await?
            .into_iter()
            .filter(|v| v.group.as_deref() == Some(group))
            .map(|v| WorkerInstance {
                state: match v.state {
                    VmState::Pending => InstanceState::Starting,
                    VmState::Running => InstanceState::Running,
                    VmState::Stopping => InstanceState::Failed {
                        reason: format!("VM {} is stopping", v.id),
                    },
                    VmState::Failed(reason) => InstanceState::Failed { reason },
                },
                name: v.name,
                created: v.created,
            })
            .collect())
    }

    async fn add_workers(&self, group: &str, n: usize) -> Result<Vec<String>, BackendError> {
        Ok(self.grow(group, n).await?)
    }

    async fn retire_workers(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Retirement, BackendError> {
        let ours: Vec<String> = self
            .workers()
            .await?
            .into_iter()
            .filter(|v| v.group.as_deref() == Some(group) && names.contains(&v.name))
            .map(|v| v.name)
            .collect();
        retire_then_remove(&self.rt.api, &self.url, &ours, |retired| async move {
            self.remove(&retired).await.map_err(BackendError::from)
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), BackendError> {
        delete_all(
            &*self.provider,
            &self.cluster.name,
            self.cluster.timeouts.delete,
        )
        .await?;
        Ok(())
    }
}

/// Deletes everything tagged with the cluster's name; returns what it deleted.
pub async fn delete_all<P: Provider>(
    provider: &P,
    cluster: &str,
    timeout: Duration,
) -> Result<Vec<Resource>, ProviderError> {
    let mut found = provider.tagged(Some(cluster)).await?;
    found.sort_by_key(|r| delete_order(r.kind));
    provider.delete(&found, timeout).await?;
    Ok(found)
}

/// VMs before what hangs off them, network pieces last.
fn delete_order(kind: &str) -> u8 {
    match kind {
        "instance" | "virtual-machine" => 0,
        "network-interface" | "disk" => 1,
        "public-ip" => 2,
        // Secrets last: a cluster whose VMs could not all be deleted keeps them for the next try.
        "parameter" | "key-vault" | "deleted-key-vault" => 4,
        // The identity the VMs read their vault with, after the vault.
        "managed-identity" => 5,
        _ => 3,
    }
}

/// What sweep found for one cluster tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swept {
    pub cluster: String,
    /// Deleted (the cluster had no live scheduler), or left alone.
    pub deleted: bool,
    pub resources: Vec<Resource>,
    pub why: String,
}

/// Finds every resource tagged with a cluster and deletes those of clusters that are not live: no
/// running scheduler VM marked ready, and nothing of it younger than `grace` (an `up` may still be
/// under way).
pub async fn sweep<P: Provider>(
    provider: &P,
    grace: Duration,
    timeout: Duration,
) -> Result<Vec<Swept>, ProviderError> {
    let mut by_cluster: std::collections::BTreeMap<String, Vec<Resource>> = Default::default();
    for r in provider.tagged(None).await? {
        by_cluster.entry(r.cluster.clone()).or_default().push(r);
    }
    let nowish = now() as u64;
    let mut out = Vec::new();
    for (cluster, mut resources) in by_cluster {
        let vms = provider.list_vms(&cluster).await?;
        let live = vms
            .iter()
            .any(|v| v.role == Role::Scheduler && v.ready && v.state == VmState::Running);
        let newest = resources.iter().filter_map(|r| r.created).max();
        let young = newest.is_some_and(|t| nowish.saturating_sub(t) < grace.as_secs());
        let (deleted, why) = if live {
            (false, "its scheduler is running and ready".to_owned())
        } else if young {
            (
                false,
                format!("not live, but created less than {grace:?} ago (an `up` may be running)"),
            )
        } else {
            resources.sort_by_key(|r| delete_order(r.kind));
            provider.delete(&resources, timeout).await?;
            (true, "no running, ready scheduler".to_owned())
        };
        out.push(Swept {
            cluster,
            deleted,
            resources,
            why,
        });
    }
    Ok(out)
}
