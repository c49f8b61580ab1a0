//! The commands on VM clusters: `up`, `scale`, `status`, `logs`, `down`, `sweep`, and
//! `autoscale` (which the scheduler VM runs). Tests call these directly with [`Options`] pointing
//! at an emulator.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Options, ScalePlan, ScaleReport, find, save, saved_clusters, saved_path, scale_plan};
use crate::backend::{Backend, no_group};
use crate::providers::ProviderError;
use crate::providers::config::vm::{CloudCluster, ProviderSettings};
use crate::providers::config::{self, ClusterConfig};
#[cfg(feature = "aws")]
use crate::providers::vm::aws::Ec2;
#[cfg(feature = "azure")]
use crate::providers::vm::azure::Azure;
use crate::providers::vm::secrets::{self, SecretStore};
use crate::providers::vm::{
    CloudBackend, Ledger, Provider, Resource, Runtime, Swept, Vm, VmRequest, delete_all,
    scheduler_url_by_ip,
};
use crate::scheduler_api::SchedulerApi;
use crate::spec::AutoscalerSpec;

impl Options {
    /// How `up` reaches the scheduler: its HTTP API client gets the certificates `up` makes.
    fn vm_runtime(&self, cluster: &CloudCluster) -> Runtime {
        let private = match &cluster.provider {
            ProviderSettings::Aws(e) => e.use_private_ip,
            ProviderSettings::Azure(a) => !a.public_ingress,
        };
        let mut rt = Runtime::new(
            self.resolve_url
                .clone()
                .unwrap_or_else(|| scheduler_url_by_ip(private, cluster.tls)),
        );
        rt.poll = self.poll;
        rt.progress = self.progress.clone();
        rt
    }

    /// How the other commands reach a running cluster's scheduler: with TLS, presenting the
    /// certificate of [`Options::tls_identity`] (by default the client's, saved by `up`).
    fn attached_runtime(&self, cluster: &CloudCluster) -> Result<Runtime, ProviderError> {
        let mut rt = self.vm_runtime(cluster);
        if cluster.tls {
            let (dir, role) = self.tls_identity.clone().unwrap_or_else(|| {
                (
                    secrets::user_dir(&self.state_dir, &cluster.name),
                    crate::tls::Role::Client,
                )
            });
            let (ca, cert, key) = secrets::read_identity(&dir, role).map_err(|e| {
                ProviderError::Other(format!(
                    "cluster {} has TLS, but its {} certificate is not here ({e}); on another \
                     machine than the one that ran `up`, fetch it with `rask-operator vm-tls \
                     fetch --role client --dir {}` and the cluster's secret store (docs/cloud.md)",
                    cluster.name,
                    role.name(),
                    dir.display()
                ))
            })?;
            rt.api = SchedulerApi::with_tls(&ca, &cert, &key, rt.api.timeout()).map_err(|e| {
                ProviderError::Other(format!("certificates in {}: {e}", dir.display()))
            })?;
        }
        Ok(rt)
    }
}

/// The provider a config names. Every cloud behind one type, so the commands are written once.
pub enum Cloud {
    #[cfg(feature = "aws")]
    Aws(Box<Ec2>),
    #[cfg(feature = "azure")]
    Azure(Box<Azure>),
    /// Only there so the type is inhabited in a build without clouds.
    #[doc(hidden)]
    None(std::convert::Infallible),
}

macro_rules! each {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            #[cfg(feature = "aws")]
            Cloud::Aws($p) => $e,
            #[cfg(feature = "azure")]
            Cloud::Azure($p) => $e,
            Cloud::None(never) => match *never {},
        }
    };
}

impl Cloud {
    pub async fn connect(cluster: &CloudCluster, opts: &Options) -> Result<Cloud, ProviderError> {
        match &cluster.provider {
            #[cfg(feature = "aws")]
            ProviderSettings::Aws(_) => Ok(Cloud::Aws(Box::new(
                Ec2::connect(cluster, &opts.aws).await?,
            ))),
            #[cfg(feature = "azure")]
            ProviderSettings::Azure(_) => Ok(Cloud::Azure(Box::new(Azure::connect(
                cluster,
                &opts.azure,
            )?))),
            #[allow(unreachable_patterns)]
            other => {
                let _ = opts;
                Err(ProviderError::NotBuilt {
                    provider: other.name().as_str(),
                })
            }
        }
    }
}

// Without a cloud feature every method's body is `match *never {}`.
#[cfg_attr(not(any(feature = "aws", feature = "azure")), allow(unused_variables))]
impl Provider for Cloud {
    fn name(&self) -> &'static str {
        each!(self, p => p.name())
    }
    async fn prepare(
        &self,
        cluster: &CloudCluster,
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        each!(self, p => p.prepare(cluster, ledger).await)
    }
    async fn create_vm(
        &self,
        cluster: &CloudCluster,
        req: &VmRequest,
        ledger: &mut Ledger,
    ) -> Result<Vm, ProviderError> {
        each!(self, p => p.create_vm(cluster, req, ledger).await)
    }
    async fn list_vms(&self, cluster: &str) -> Result<Vec<Vm>, ProviderError> {
        each!(self, p => p.list_vms(cluster).await)
    }
    async fn tagged(&self, cluster: Option<&str>) -> Result<Vec<Resource>, ProviderError> {
        each!(self, p => p.tagged(cluster).await)
    }
    async fn delete(&self, resources: &[Resource], timeout: Duration) -> Result<(), ProviderError> {
        each!(self, p => p.delete(resources, timeout).await)
    }
    async fn boot_log(&self, vm: &Vm) -> Result<String, ProviderError> {
        each!(self, p => p.boot_log(vm).await)
    }
    async fn store_tls(
        &self,
        cluster: &CloudCluster,
        files: &[(String, String)],
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        each!(self, p => p.store_tls(cluster, files, ledger).await)
    }
    async fn mark_ready(&self, vm: &Vm) -> Result<(), ProviderError> {
        each!(self, p => p.mark_ready(vm).await)
    }
    fn vm_resource(&self, vm: &Vm) -> Resource {
        each!(self, p => p.vm_resource(vm))
    }
}

/// What `up` made.
#[derive(Clone, Debug)]
pub struct UpReport {
    pub name: String,
    pub scheduler_vm: String,
    /// Where clients connect: `tcp://IP:8786`, `tls://` with TLS.
    pub scheduler_address: String,
    /// The scheduler's dashboard / HTTP API: `http://IP:8787`, `https://` with TLS.
    pub dashboard: String,
    /// Worker VMs, all of them seen in the scheduler's `get_workers`.
    pub workers: Vec<String>,
    /// With TLS: where the CA and the client's certificate and key were saved.
    pub certificates: Option<std::path::PathBuf>,
}

impl std::fmt::Display for UpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cluster {} is up", self.name)?;
        writeln!(
            f,
            "scheduler: {} (VM {})",
            self.scheduler_address, self.scheduler_vm
        )?;
        writeln!(f, "dashboard: {}", self.dashboard)?;
        if let Some(dir) = &self.certificates {
            writeln!(
                f,
                "tls:       ca.pem, client.pem, client-key.pem in {}",
                dir.display()
            )?;
        }
        write!(f, "workers:   {}", self.workers.join(", "))
    }
}

/// The VM cluster named `name`, from `config` when given, else from the saved configs.
fn find_vm(
    opts: &Options,
    name: &str,
    config: Option<&Path>,
) -> Result<(CloudCluster, String), ProviderError> {
    match find(opts, name, config)? {
        (ClusterConfig::Vm(c), text) => Ok((c, text)),
        (ClusterConfig::Batch(c), _) => Err(ProviderError::Other(format!(
            "cluster {name} runs on {}, not on cloud VMs",
            c.system.name().as_str()
        ))),
    }
}

/// Reads a VM cluster's file.
fn load_vm(path: &Path) -> Result<(CloudCluster, String), ProviderError> {
    let (c, text) = config::load(path)?;
    match c {
        ClusterConfig::Vm(c) => Ok((c, text)),
        ClusterConfig::Batch(c) => Err(ProviderError::Other(format!(
            "{} describes a {} cluster, not a cloud one",
            path.display(),
            c.system.name().as_str()
        ))),
    }
}

/// The scheduler's address for clients, from its HTTP API's URL: `tls://` for `https://`.
fn scheduler_address(url: &str) -> String {
    let scheme = if url.starts_with("https://") {
        "tls"
    } else {
        "tcp"
    };
    let host = url
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(url);
    format!("{scheme}://{host}:8786")
}

/// `up CONFIG`: the scheduler VM, then the workers, each verified in the scheduler. On failure
/// everything created is deleted again (and the saved config removed).
pub async fn up(config: &Path, opts: &Options) -> Result<UpReport, ProviderError> {
    let (cluster, text) = load_vm(config)?;
    let cloud = Cloud::connect(&cluster, opts).await?;
    let saved = save(opts, &cluster.name, &text)?;
    let rt = opts.vm_runtime(&cluster);
    match CloudBackend::provision(Arc::new(cloud), Arc::new(cluster), &text, rt).await {
        Ok(b) => {
            let certificates = match &b.certs {
                Some(certs) => {
                    let dir = secrets::user_dir(&opts.state_dir, &b.cluster.name);
                    secrets::write_dir(&dir, &secrets::user_files(certs), None).map_err(|e| {
                        ProviderError::Other(format!(
                            "cluster {} is up, but its client certificate could not be saved \
                             ({e}); `rask-operator down {}` deletes the cluster",
                            b.cluster.name, b.cluster.name
                        ))
                    })?;
                    Some(dir)
                }
                None => None,
            };
            let workers = b.workers().await?.into_iter().map(|v| v.name).collect();
            Ok(UpReport {
                name: b.cluster.name.clone(),
                scheduler_vm: b.scheduler.id.clone(),
                scheduler_address: scheduler_address(&b.url),
                dashboard: b.url.clone(),
                workers,
                certificates,
            })
        }
        Err(e) => {
            // Keep the saved config while something may remain, so `down NAME` finds it.
            if !matches!(e, ProviderError::RollbackFailed { .. }) {
                let _ = std::fs::remove_file(&saved);
            }
            Err(e)
        }
    }
}

/// The running cluster named `name` as a [`Backend`].
pub async fn attach(
    opts: &Options,
    name: &str,
    config: Option<&Path>,
) -> Result<CloudBackend<Cloud>, ProviderError> {
    let (cluster, _) = find_vm(opts, name, config)?;
    let rt = opts.attached_runtime(&cluster)?;
    let cloud = Cloud::connect(&cluster, opts).await?;
    CloudBackend::attach(Arc::new(cloud), Arc::new(cluster), rt).await
}

/// `scale NAME N`: adds workers (verified in the scheduler) or retires the newest ones through
/// the scheduler, then deletes their VMs. `workers` names them instead of the newest.
pub async fn scale(
    name: &str,
    n: usize,
    group: Option<&str>,
    workers: &[String],
    config: Option<&Path>,
    opts: &Options,
) -> Result<ScaleReport, ProviderError> {
    let b = attach(opts, name, config).await?;
    let group = group.unwrap_or(config::DEFAULT_GROUP);
    if !b.cluster.groups.contains_key(group) {
        return Err(ProviderError::Other(no_group(
            name,
            group,
            b.cluster.groups.keys(),
        )));
    }
    let mut current: Vec<Vm> = b
        .workers()
        .await?
        .into_iter()
        .filter(|v| v.group.as_deref() == Some(group))
        .collect();
    current.sort_by(|a, b| b.created.total_cmp(&a.created).then(b.name.cmp(&a.name)));
    let names: Vec<String> = current.into_iter().map(|v| v.name).collect();
    let mut report = ScaleReport::default();
    match scale_plan(name, group, &names, n, workers)? {
        ScalePlan::Add(k) => report.added = b.grow(group, k).await?,
        ScalePlan::Retire(names) => {
            report.retired = b
                .retire_workers(group, &names)
                .await
                .map_err(|e| ProviderError::Other(e.to_string()))?;
        }
        ScalePlan::Nothing => {}
    }
    Ok(report)
}

/// One VM in `status`.
#[derive(Clone, Debug)]
pub struct VmStatus {
    pub vm: Vm,
    /// Whether the scheduler lists it (workers only).
    pub joined: bool,
}

#[derive(Clone, Debug)]
pub struct Status {
    pub name: String,
    pub provider: &'static str,
    pub dashboard: Option<String>,
    /// Why the scheduler could not be asked, if it could not.
    pub scheduler_error: Option<String>,
    pub vms: Vec<VmStatus>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "cluster {} ({})", self.name, self.provider)?;
        if let Some(d) = &self.dashboard {
            writeln!(f, "dashboard: {d}")?;
        }
        if let Some(e) = &self.scheduler_error {
            writeln!(f, "scheduler: {e}")?;
        }
        writeln!(
            f,
            "{:<36} {:<10} {:<10} {:<16} {:<16} JOINED",
            "VM", "ROLE", "STATE", "PRIVATE IP", "PUBLIC IP"
        )?;
        for s in &self.vms {
            let v = &s.vm;
            writeln!(
                f,
                "{:<36} {:<10} {:<10} {:<16} {:<16} {}",
                v.name,
                v.group
                    .clone()
                    .unwrap_or_else(|| v.role.as_str().to_owned()),
                match &v.state {
                    crate::providers::vm::VmState::Failed(r) => format!("failed: {r}"),
                    other => format!("{other:?}").to_lowercase(),
                },
                v.private_ip.as_deref().unwrap_or("-"),
                v.public_ip.as_deref().unwrap_or("-"),
                if v.role == crate::providers::vm::Role::Worker {
                    if s.joined { "yes" } else { "no" }
                } else {
                    "-"
                }
            )?;
        }
        Ok(())
    }
}

/// `status NAME`: every VM of the cluster, and whether each worker has joined.
pub async fn status(
    name: &str,
    config: Option<&Path>,
    opts: &Options,
) -> Result<Status, ProviderError> {
    let (cluster, _) = find_vm(opts, name, config)?;
    let cloud = Cloud::connect(&cluster, opts).await?;
    let mut vms = cloud.list_vms(&cluster.name).await?;
    vms.sort_by(|a, b| (a.role as u8, &a.name).cmp(&(b.role as u8, &b.name)));
    // Without the certificate to ask the scheduler with, the VMs are still shown.
    let (rt, no_tls) = match opts.attached_runtime(&cluster) {
        Ok(rt) => (rt, None),
        Err(e) => (opts.vm_runtime(&cluster), Some(e.to_string())),
    };
    let dashboard = vms
        .iter()
        .find(|v| v.role == crate::providers::vm::Role::Scheduler)
        .and_then(|v| (rt.resolve_url)(v));
    let (joined, scheduler_error) = match (&dashboard, no_tls) {
        (_, Some(e)) => (Vec::new(), Some(e)),
        (Some(url), None) => match rt.api.get_workers(url).await {
            Ok(ws) => (ws.into_iter().map(|w| w.name).collect(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        },
        (None, None) => (Vec::new(), Some("no scheduler VM".to_owned())),
    };
    Ok(Status {
        name: cluster.name.clone(),
        provider: cloud.name(),
        dashboard,
        scheduler_error,
        vms: vms
            .into_iter()
            .map(|vm| VmStatus {
                joined: joined.contains(&vm.name),
                vm,
            })
            .collect(),
    })
}

/// `logs NAME [VM]`: the boot (serial console) output of the scheduler VM or the named one.
pub async fn logs(
    name: &str,
    vm: Option<&str>,
    config: Option<&Path>,
    opts: &Options,
) -> Result<String, ProviderError> {
    let (cluster, _) = find_vm(opts, name, config)?;
    let cloud = Cloud::connect(&cluster, opts).await?;
    let vms = cloud.list_vms(&cluster.name).await?;
    let found = match vm {
        Some(want) => vms.iter().find(|v| v.name == want || v.id == want),
        None => vms
            .iter()
            .find(|v| v.role == crate::providers::vm::Role::Scheduler),
    };
    let Some(found) = found else {
        return Err(ProviderError::Other(format!(
            "cluster {name} has no VM {} (it has: {})",
            vm.unwrap_or("scheduler"),
            vms.iter()
                .map(|v| v.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    cloud.boot_log(found).await
}

/// `down NAME`: deletes everything tagged with the cluster, then its saved config.
pub async fn down(
    name: &str,
    config: Option<&Path>,
    opts: &Options,
) -> Result<Vec<Resource>, ProviderError> {
    let (cluster, _) = find_vm(opts, name, config)?;
    let cloud = Cloud::connect(&cluster, opts).await?;
    let deleted = delete_all(&cloud, &cluster.name, cluster.timeouts.delete).await?;
    let _ = std::fs::remove_file(saved_path(opts, name));
    let _ = std::fs::remove_dir_all(secrets::user_dir(&opts.state_dir, name));
    Ok(deleted)
}

/// `sweep`: in the place (region / resource group) of `config`, or of every saved cluster,
/// deletes the resources of clusters that are not live and older than `grace`.
pub async fn sweep(
    config: Option<&Path>,
    grace: Duration,
    opts: &Options,
) -> Result<Vec<Swept>, ProviderError> {
    let mut places: Vec<CloudCluster> = Vec::new();
    match config {
        Some(path) => places.push(load_vm(path)?.0),
        None => {
            for c in saved_clusters(opts)? {
                if let ClusterConfig::Vm(c) = c
                    && !places.iter().any(|p| same_place(p, &c))
                {
                    places.push(c);
                }
            }
        }
    }
    let mut out = Vec::new();
    for c in places {
        let cloud = Cloud::connect(&c, opts).await?;
        out.extend(crate::providers::vm::sweep(&cloud, grace, c.timeouts.delete).await?);
    }
    Ok(out)
}

fn same_place(a: &CloudCluster, b: &CloudCluster) -> bool {
    match (&a.provider, &b.provider) {
        (ProviderSettings::Aws(x), ProviderSettings::Aws(y)) => x.region == y.region,
        (ProviderSettings::Azure(x), ProviderSettings::Azure(y)) => {
            x.subscription_id == y.subscription_id && x.resource_group == y.resource_group
        }
        _ => false,
    }
}

/// `autoscale CONFIG` (on the scheduler VM): the autoscaling loop for the config's group, with the
/// scheduler at `scheduler_url`, until `stop` turns true.
pub async fn autoscale(
    config: &Path,
    scheduler_url: &str,
    interval: Duration,
    opts: &Options,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), ProviderError> {
    let (cluster, _) = load_vm(config)?;
    let Some(auto) = cluster.autoscaling.clone() else {
        return Err(ProviderError::Config {
            file: config.display().to_string(),
            key: "autoscaling".into(),
            message: "is not set: nothing to autoscale".into(),
        });
    };
    let mut opts = opts.clone();
    #[cfg(feature = "azure")]
    if let ProviderSettings::Azure(a) = &cluster.provider
        && opts.azure.identity.is_none()
    {
        // With TLS the scheduler VM has two identities: ask for the one that manages VMs.
        opts.azure.identity = a.identity.clone();
    }
    let cloud = Cloud::connect(&cluster, &opts).await?;
    let url = scheduler_url.to_owned();
    opts.resolve_url = Some(Arc::new(move |_| Some(url.clone())));
    let rt = opts.attached_runtime(&cluster)?;
    let backend = CloudBackend::attach(Arc::new(cloud), Arc::new(cluster), rt).await?;
    run_autoscaler(&backend, auto, interval, stop).await;
    Ok(())
}

/// The autoscaling loop of [`crate::autoscaler::driver`] on a cloud cluster, logging each step.
pub async fn run_autoscaler(
    backend: &CloudBackend<Cloud>,
    auto: AutoscalerSpec,
    interval: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut scaler = crate::autoscaler::driver::Autoscaler::new(auto.group.clone(), auto.settings);
    scaler.interval = interval;
    // The backend's client: with TLS it presents the operator's certificate to the scheduler.
    scaler.api = backend.rt.api.clone();
    scaler
        .run(backend, stop, |s| {
            tracing::info!(
                group = %auto.group,
                current = s.current,
                target = ?s.target,
                decision = s.decision.reason(),
                outcome = ?s.outcome,
                "autoscaler step"
            );
        })
        .await;
}

/// Each of `files` with the value found under its secret's name (`names`, in the same order);
/// files without one are left out.
#[cfg(any(feature = "aws", feature = "azure"))]
fn by_file(
    files: &[String],
    names: &[String],
    values: &[(String, String)],
) -> Vec<(String, String)> {
    files
        .iter()
        .zip(names)
        .filter_map(|(f, n)| {
            values
                .iter()
                .find(|(name, _)| name == n)
                .map(|(_, v)| (f.clone(), v.clone()))
        })
        .collect()
}

/// `vm-tls fetch` (on a VM at boot, or on another machine than the one that ran `up`): brings
/// `roles`' files (the CA, each party's certificate and key) from `store` into `dir`, keys 0600,
/// the directory 0700, owned by `owner` when given. Waits up to `wait` for files not stored yet.
// Without a cloud feature every store is an error and the rest is unreachable.
#[cfg_attr(
    not(any(feature = "aws", feature = "azure")),
    allow(unreachable_code, unused_variables)
)]
pub async fn fetch_tls(
    store: &SecretStore,
    roles: &[crate::tls::Role],
    dir: &Path,
    owner: Option<(u32, u32)>,
    wait: Duration,
    opts: &Options,
) -> Result<Vec<std::path::PathBuf>, ProviderError> {
    let mut files: Vec<String> = Vec::new();
    for r in roles {
        for f in secrets::role_files(*r) {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    let found: Vec<(String, String)> = match store {
        #[cfg(feature = "aws")]
        SecretStore::AwsSsm { region, prefix } => {
            let names: Vec<String> = files.iter().map(|f| format!("{prefix}/{f}")).collect();
            let params = crate::providers::vm::ssm::Parameters::connect(region, &opts.aws).await;
            let poll = opts.poll.min(wait.max(Duration::from_millis(100)));
            let values = params.wait_for(&names, wait, poll).await?;
            by_file(&files, &names, &values)
        }
        #[cfg(not(feature = "aws"))]
        SecretStore::AwsSsm { .. } => {
            let _ = (wait, opts);
            return Err(ProviderError::NotBuilt { provider: "aws" });
        }
        #[cfg(feature = "azure")]
        SecretStore::AzureKeyVault { url, identity } => {
            let names: Vec<String> = files.iter().map(|f| secrets::secret_name(f)).collect();
            let vault = crate::providers::vm::azure::vm_vault(url, identity, &opts.azure)?;
            let poll = opts.poll.min(wait.max(Duration::from_millis(100)));
            let values = vault.wait_for(&names, wait, poll).await?;
            by_file(&files, &names, &values)
        }
        #[cfg(not(feature = "azure"))]
        SecretStore::AzureKeyVault { .. } => {
            let _ = (wait, opts);
            return Err(ProviderError::NotBuilt { provider: "azure" });
        }
    };
    if found.len() != files.len() {
        return Err(ProviderError::Other(format!(
            "{store} answered {} of the {} files asked for",
            found.len(),
            files.len()
        )));
    }
    secrets::write_dir(dir, &found, owner)?;
    Ok(files.iter().map(|f| dir.join(f)).collect())
}
