//! A VM cluster's file (`provider: aws` or `azure`): the scheduler and worker groups as VMs, and
//! the provider's section, which takes dask-cloudprovider's keys where they mean the same.
//! [`validate`] settles every default into a [`CloudCluster`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::{
    AutoscalingConfig, ClusterConfig, ProviderName, Timeouts, TimeoutsConfig, bad, check_name,
    env_vars, required,
};
use crate::providers::ProviderError;
use crate::spec::{AutoscalerSpec, MemoryLimit, WorkerTemplate};

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmFile {
    pub provider: ProviderName,
    pub name: String,
    #[serde(default)]
    pub software: SoftwareConfig,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    #[serde(default)]
    pub worker: WorkerGroupConfig,
    /// More worker groups besides the default one (`worker:`), by name.
    #[serde(default)]
    pub worker_groups: BTreeMap<String, WorkerGroupConfig>,
    #[serde(default)]
    pub autoscaling: Option<AutoscalingConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    /// Mutual TLS between the cluster's processes with certificates `up` makes (default true;
    /// the keys live in SSM Parameter Store on aws, in a Key Vault of the cluster's on azure).
    pub tls: Option<bool>,
    #[serde(default)]
    pub ec2: Option<Ec2Config>,
    #[serde(default)]
    pub azure: Option<AzureConfig>,
}

/// What the VMs run: container images started by cloud-init.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoftwareConfig {
    /// The image with the `rask` binary (scheduler and workers).
    pub image: Option<String>,
    /// The image with `rask-operator`, run on the scheduler VM when `autoscaling` is set.
    pub operator_image: Option<String>,
    /// Install Docker with the distribution's package manager at boot (default true); false when
    /// the image (AMI / VM image) already has it.
    pub install_docker: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Networks (IPv4 CIDRs) allowed to reach the scheduler's ports 8786 and 8787 besides the
    /// cluster's own VMs. Empty by default: nobody outside the cluster.
    #[serde(default)]
    pub ingress_cidrs: Vec<String>,
    /// Instance type / VM size for the scheduler only (overrides the provider section's).
    pub instance_type: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerGroupConfig {
    /// Workers `up` starts (default 1 for the default group, 0 for others).
    pub replicas: Option<u32>,
    /// Threads per worker (default: the VM's cores).
    pub nthreads: Option<u32>,
    /// `rask worker --memory-limit`: `4GiB`, `auto` (default), `0`.
    pub memory_limit: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Instance type / VM size for this group (overrides the provider section's).
    pub instance_type: Option<String>,
}

/// dask-cloudprovider's `EC2Cluster` keys, where they mean the same.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ec2Config {
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub ami: Option<String>,
    pub instance_type: Option<String>,
    pub scheduler_instance_type: Option<String>,
    pub worker_instance_type: Option<String>,
    pub vpc: Option<String>,
    pub subnet_id: Option<String>,
    /// Existing security groups to use instead of the one rask creates per cluster.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Root volume size in GiB (default 40).
    pub filesystem_size: Option<u32>,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    #[serde(default)]
    pub instance_tags: BTreeMap<String, String>,
    /// Reach the scheduler from here at its private IP (when this machine is inside the VPC).
    pub use_private_ip: Option<bool>,
    /// Workers as spot instances.
    pub spot: Option<bool>,
}

/// dask-cloudprovider's `AzureVMCluster` keys, where they mean the same.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub location: Option<String>,
    pub resource_group: Option<String>,
    pub subscription_id: Option<String>,
    pub vnet: Option<String>,
    pub subnet: Option<String>,
    /// An existing network security group for the scheduler's NIC instead of the one rask creates.
    pub security_group: Option<String>,
    /// Give the scheduler a public IP (default true). Workers never get one.
    pub public_ingress: Option<bool>,
    pub vm_size: Option<String>,
    pub scheduler_vm_size: Option<String>,
    pub vm_image: Option<AzureImage>,
    /// OS disk size in GiB (default 50).
    pub disk_size: Option<u32>,
    /// Workers as spot VMs (evicted VMs are deleted, never left stopped and billed).
    pub spot: Option<bool>,
    /// Login user on the VMs (default `rask`).
    pub admin_username: Option<String>,
    /// SSH public key for the login user (Azure requires one; no password is ever set).
    pub ssh_public_key: Option<String>,
    /// Resource id of a user-assigned managed identity for the scheduler VM, allowed to manage
    /// VMs and NICs in the resource group: the autoscaler runs there as this identity.
    pub identity: Option<String>,
    /// Which credential gets rask-operator's ARM token (default `auto`).
    pub credential: Option<AzureCredentialKind>,
    /// A service principal (app registration) and where its client secret is read from.
    pub service_principal: Option<ServicePrincipalConfig>,
    /// Microsoft Entra's authority host (default `https://login.microsoftonline.com`).
    pub login_endpoint: Option<String>,
    /// The instance metadata service a managed identity's token comes from (default
    /// `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
    /// The Azure CLI binary (default `az` on `PATH`).
    pub az_path: Option<String>,
}

/// Where rask-operator's ARM token comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AzureCredentialKind {
    /// A service principal if one is configured (or `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and
    /// `AZURE_CLIENT_SECRET` are set), else the Azure CLI's login, else the VM's managed identity.
    #[default]
    Auto,
    ServicePrincipal,
    AzureCli,
    ManagedIdentity,
}

/// `azure.service_principal`: tenant and client ids (default `AZURE_TENANT_ID`,
/// `AZURE_CLIENT_ID`) and the client secret from a file or an environment variable, never from
/// the config itself (it is copied into the scheduler VM's custom data with autoscaling).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePrincipalConfig {
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    /// A file holding the client secret (surrounding whitespace ignored).
    pub client_secret_file: Option<String>,
    /// The environment variable holding the client secret (default `AZURE_CLIENT_SECRET`).
    pub client_secret_env: Option<String>,
    /// Only to refuse it with a clear message.
    pub client_secret: Option<serde::de::IgnoredAny>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureImage {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    #[serde(default = "latest")]
    pub version: String,
}

fn latest() -> String {
    "latest".into()
}

/// A cluster ready to provision: every name and default settled.
#[derive(Clone, Debug, PartialEq)]
pub struct CloudCluster {
    pub name: String,
    pub software: Software,
    pub scheduler: SchedulerSettings,
    pub groups: BTreeMap<String, GroupSettings>,
    pub autoscaling: Option<AutoscalerSpec>,
    pub timeouts: Timeouts,
    /// The cluster's certificates are made by `up`, their private keys kept in the provider's
    /// secret store (see [`crate::providers::vm::secrets`]).
    pub tls: bool,
    pub provider: ProviderSettings,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Software {
    pub image: String,
    pub operator_image: String,
    pub install_docker: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerSettings {
    pub env: BTreeMap<String, String>,
    pub ingress_cidrs: Vec<String>,
    pub size: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct GroupSettings {
    pub replicas: u32,
    pub worker: WorkerTemplate,
    /// Instance type / VM size.
    pub size: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProviderSettings {
    Aws(Ec2Settings),
    Azure(AzureSettings),
}

impl ProviderSettings {
    pub fn name(&self) -> ProviderName {
        match self {
            ProviderSettings::Aws(_) => ProviderName::Aws,
            ProviderSettings::Azure(_) => ProviderName::Azure,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ec2Settings {
    pub region: String,
    pub availability_zone: Option<String>,
    pub ami: String,
    pub vpc: Option<String>,
    pub subnet_id: Option<String>,
    pub security_groups: Vec<String>,
    pub filesystem_size: u32,
    pub key_name: Option<String>,
    pub iam_instance_profile: Option<String>,
    pub instance_tags: BTreeMap<String, String>,
    pub use_private_ip: bool,
    pub spot: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct AzureSettings {
    pub location: String,
    pub resource_group: String,
    pub subscription_id: String,
    pub vnet: String,
    pub subnet: String,
    pub security_group: Option<String>,
    pub public_ingress: bool,
    pub vm_image: AzureImage,
    pub disk_size: u32,
    pub spot: bool,
    pub admin_username: String,
    pub ssh_public_key: String,
    pub identity: Option<String>,
    /// Boxed: the rest of the settings are much smaller than AWS's.
    pub credentials: Box<AzureCredentials>,
}

/// How rask-operator gets its ARM token, settled from the `azure` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureCredentials {
    pub kind: AzureCredentialKind,
    /// `None`: `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET` when all are set.
    pub service_principal: Option<ServicePrincipal>,
    /// Entra's authority host, `https://...` without a trailing `/`.
    pub login_endpoint: String,
    /// `None`: Azure's own, `http://169.254.169.254`.
    pub imds_endpoint: Option<String>,
    pub az_path: String,
}

impl Default for AzureCredentials {
    fn default() -> AzureCredentials {
        AzureCredentials {
            kind: AzureCredentialKind::Auto,
            service_principal: None,
            login_endpoint: LOGIN_ENDPOINT.into(),
            imds_endpoint: None,
            az_path: "az".into(),
        }
    }
}

/// Microsoft Entra ID's authority host in Azure's public cloud.
pub const LOGIN_ENDPOINT: &str = "https://login.microsoftonline.com";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePrincipal {
    /// `None`: `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `None`: `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    pub secret: SecretSource,
}

/// Where a secret is read from when it is needed (never kept in the config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    File(std::path::PathBuf),
    Env(String),
}

/// An IPv4 CIDR such as `203.0.113.0/24`.
fn check_cidr(key: &str, value: &str) -> Result<(), ProviderError> {
    let ok = value.split_once('/').is_some_and(|(ip, len)| {
        ip.parse::<Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
    });
    if ok {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("{value:?} is not an IPv4 CIDR like 203.0.113.0/24"),
        ))
    }
}

/// User-data is readable by anyone who may describe the VM, and it is kept in the cloud's
/// records: values that look like credentials must not go there.
fn check_env(key: &str, env: &BTreeMap<String, String>) -> Result<(), ProviderError> {
    const SECRET_WORDS: [&str; 7] = [
        "SECRET",
        "PASSWORD",
        "TOKEN",
        "CREDENTIAL",
        "PRIVATE_KEY",
        "ACCESS_KEY",
        "TLS_KEY",
    ];
    for (name, _) in env.iter() {
        if !crate::spec::worker::is_env_name(name) {
            return Err(bad(
                format!("{key}.{name}"),
                "not an environment variable name (letters, digits and '_')",
            ));
        }
        let upper = name.to_ascii_uppercase();
        if let Some(word) = SECRET_WORDS.iter().find(|w| upper.contains(*w)) {
            return Err(bad(
                format!("{key}.{name}"),
                format!(
                    "looks like a secret ({word}); VM user-data is readable by anyone allowed to \
                     describe the VM, so rask never puts secrets there: give the VMs an instance \
                     profile or managed identity and read secrets from a secret store at run time"
                ),
            ));
        }
    }
    Ok(())
}

/// A URL with one of `schemes` and a host, returned without a trailing `/`.
fn check_url(key: &str, value: &str, schemes: &[&str]) -> Result<String, ProviderError> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| bad(key, format!("{value:?} is not a URL: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or_default();
    if !schemes.contains(&scheme) {
        return Err(bad(
            key,
            format!(
                "{value:?} must start with {}",
                schemes
                    .iter()
                    .map(|s| format!("{s}://"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(key, format!("{value:?} has no host")));
    }
    if uri.query().is_some() {
        return Err(bad(key, format!("{value:?} must not have a query")));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// Entra's tenant ids: a GUID or a domain name (letters, digits, `-` and `.`).
fn check_tenant(key: &str, value: &str) -> Result<(), ProviderError> {
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(bad(
            key,
            format!("{value:?} is not a tenant id (a GUID or a domain name)"),
        ))
    }
}

fn azure_credentials(
    kind: Option<AzureCredentialKind>,
    sp: Option<ServicePrincipalConfig>,
    login_endpoint: Option<String>,
    imds_endpoint: Option<String>,
    az_path: Option<String>,
) -> Result<AzureCredentials, ProviderError> {
    let key = "azure.service_principal";
    let service_principal = match sp {
        None => None,
        Some(sp) => {
            if sp.client_secret.is_some() {
                return Err(bad(
                    format!("{key}.client_secret"),
                    "a secret is never written in the config (with autoscaling the config is \
                     copied into the scheduler VM's custom data): put it in a file named by \
                     client_secret_file, or in the environment variable named by \
                     client_secret_env (default AZURE_CLIENT_SECRET)",
                ));
            }
            if let Some(t) = &sp.tenant_id {
                check_tenant(&format!("{key}.tenant_id"), t)?;
            }
            if sp.client_id.as_deref().is_some_and(|c| c.trim().is_empty()) {
                return Err(bad(format!("{key}.client_id"), "must not be empty"));
            }
            let secret = match (sp.client_secret_file, sp.client_secret_env) {
                (Some(_), Some(_)) => {
                    return Err(bad(
                        key,
                        "give client_secret_file or client_secret_env, not both",
                    ));
                }
                (Some(f), None) if f.trim().is_empty() => {
                    return Err(bad(
                        format!("{key}.client_secret_file"),
                        "must not be empty",
                    ));
                }
                (Some(f), None) => SecretSource::File(f.into()),
                (None, Some(e)) if !crate::spec::worker::is_env_name(&e) => {
                    return Err(bad(
                        format!("{key}.client_secret_env"),
                        format!(
                            "{e:?} is not an environment variable name (letters, digits and '_')"
                        ),
                    ));
                }
                (None, e) => SecretSource::Env(e.unwrap_or_else(|| "AZURE_CLIENT_SECRET".into())),
            };
            Some(ServicePrincipal {
                tenant_id: sp.tenant_id,
                client_id: sp.client_id,
                secret,
            })
        }
    };
    let az_path = az_path.unwrap_or_else(|| "az".into());
    if az_path.trim().is_empty() {
        return Err(bad("azure.az_path", "must not be empty"));
    }
    Ok(AzureCredentials {
        kind: kind.unwrap_or_default(),
        service_principal,
        login_endpoint: match login_endpoint {
            Some(u) => check_url("azure.login_endpoint", &u, &["https"])?,
            None => LOGIN_ENDPOINT.into(),
        },
        imds_endpoint: imds_endpoint
            .map(|u| check_url("azure.imds_endpoint", &u, &["http", "https"]))
            .transpose()?,
        az_path,
    })
}

/// Settles names and defaults, and checks every value.
pub fn validate(file: VmFile) -> Result<CloudCluster, ProviderError> {
    // VM names are `{name}-{group}-{8 hex}` plus `-nic`/`-osdisk` on Azure: within the 64
    // characters of EC2's client token and Azure's resource names.
    check_name("name", &file.name, 30)?;
    let version = env!("CARGO_PKG_VERSION");
    let software = Software {
        image: file
            .software
            .image
            .unwrap_or_else(|| format!("{}:{version}", crate::names::WORKER_IMAGE)),
        operator_image: file
            .software
            .operator_image
            .unwrap_or_else(|| format!("{}:{version}", crate::names::OPERATOR_IMAGE)),
        install_docker: file.software.install_docker.unwrap_or(true),
    };
    for (key, image) in [
        ("software.image", &software.image),
        ("software.operator_image", &software.operator_image),
    ] {
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(bad(key, format!("{image:?} is not an image reference")));
        }
    }
    check_env("scheduler.env", &file.scheduler.env)?;
    for (i, cidr) in file.scheduler.ingress_cidrs.iter().enumerate() {
        check_cidr(&format!("scheduler.ingress_cidrs[{i}]"), cidr)?;
    }
    let timeouts = super::timeouts(file.timeouts)?;

    let (provider, default_size, scheduler_size) = match file.provider {
        ProviderName::Aws => {
            if file.azure.is_some() {
                return Err(bad("azure", "given, but provider is aws"));
            }
            let ec2 = file
                .ec2
                .ok_or_else(|| bad("ec2", "is required when provider is aws"))?;
            let region = required("ec2.region", ec2.region)?;
            let ami = required("ec2.ami", ec2.ami)?;
            if !ami.starts_with("ami-") {
                return Err(bad(
                    "ec2.ami",
                    format!("{ami:?} is not an AMI id (ami-...)"),
                ));
            }
            for (k, v) in &ec2.instance_tags {
                if k.starts_with("rask:") || k.starts_with("aws:") || k == "Name" {
                    return Err(bad(
                        format!("ec2.instance_tags.{k}"),
                        "is reserved: rask sets Name and the rask: tags, AWS the aws: ones",
                    ));
                }
                if v.len() > 256 {
                    return Err(bad(
                        format!("ec2.instance_tags.{k}"),
                        "longer than 256 characters",
                    ));
                }
            }
            let size = ec2.filesystem_size.unwrap_or(40);
            if !(8..=16384).contains(&size) {
                return Err(bad(
                    "ec2.filesystem_size",
                    format!("{size} GiB is outside 8..=16384"),
                ));
            }
            let default = ec2
                .worker_instance_type
                .or(ec2.instance_type.clone())
                .unwrap_or_else(|| "t3.medium".into());
            let scheduler = ec2
                .scheduler_instance_type
                .or(ec2.instance_type)
                .unwrap_or_else(|| "t3.medium".into());
            if file.autoscaling.is_some() && ec2.iam_instance_profile.is_none() {
                return Err(bad(
                    "ec2.iam_instance_profile",
                    "is required with autoscaling: the autoscaler runs on the scheduler VM and \
                     needs the profile's EC2 permissions (no keys are ever put in user-data)",
                ));
            }
            let settings = Ec2Settings {
                region,
                availability_zone: ec2.availability_zone,
                ami,
                vpc: ec2.vpc,
                subnet_id: ec2.subnet_id,
                security_groups: ec2.security_groups,
                filesystem_size: size,
                key_name: ec2.key_name,
                iam_instance_profile: ec2.iam_instance_profile,
                instance_tags: ec2.instance_tags,
                use_private_ip: ec2.use_private_ip.unwrap_or(false),
                spot: ec2.spot.unwrap_or(false),
            };
            (ProviderSettings::Aws(settings), default, scheduler)
        }
        ProviderName::Azure => {
            if file.ec2.is_some() {
                return Err(bad("ec2", "given, but provider is azure"));
            }
            let az = file
                .azure
                .ok_or_else(|| bad("azure", "is required when provider is azure"))?;
            let disk = az.disk_size.unwrap_or(50);
            if !(30..=4095).contains(&disk) {
                return Err(bad(
                    "azure.disk_size",
                    format!("{disk} GiB is outside 30..=4095"),
                ));
            }
            let subscription_id = required("azure.subscription_id", az.subscription_id)?;
            let uuid_like = subscription_id.len() == 36
                && subscription_id
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == '-');
            if !uuid_like {
                return Err(bad(
                    "azure.subscription_id",
                    format!("{subscription_id:?} is not a subscription id (a UUID)"),
                ));
            }
            let ssh = required("azure.ssh_public_key", az.ssh_public_key)?;
            if !ssh.starts_with("ssh-") && !ssh.starts_with("ecdsa-") {
                return Err(bad(
                    "azure.ssh_public_key",
                    "is not an OpenSSH public key (ssh-rsa ..., ssh-ed25519 ...)",
                ));
            }
            let default = az
                .vm_size
                .clone()
                .unwrap_or_else(|| "Standard_D2s_v3".into());
            let scheduler = az
                .scheduler_vm_size
                .or(az.vm_size)
                .unwrap_or_else(|| "Standard_D2s_v3".into());
            if file.autoscaling.is_some() && az.identity.is_none() {
                return Err(bad(
                    "azure.identity",
                    "is required with autoscaling: the autoscaler runs on the scheduler VM as this \
                     user-assigned managed identity (no credentials are ever put in custom data)",
                ));
            }
            let settings = AzureSettings {
                location: required("azure.location", az.location)?,
                resource_group: required("azure.resource_group", az.resource_group)?,
                subscription_id,
                vnet: required("azure.vnet", az.vnet)?,
                subnet: required("azure.subnet", az.subnet)?,
                security_group: az.security_group,
                public_ingress: az.public_ingress.unwrap_or(true),
                vm_image: az.vm_image.unwrap_or_else(|| AzureImage {
                    publisher: "Canonical".into(),
                    offer: "ubuntu-24_04-lts".into(),
                    sku: "server".into(),
                    version: latest(),
                }),
                disk_size: disk,
                spot: az.spot.unwrap_or(false),
                admin_username: az.admin_username.unwrap_or_else(|| "rask".into()),
                ssh_public_key: ssh,
                credentials: Box::new(azure_credentials(
                    az.credential,
                    az.service_principal,
                    az.login_endpoint,
                    az.imds_endpoint,
                    az.az_path,
                )?),
                identity: az.identity,
            };
            (ProviderSettings::Azure(settings), default, scheduler)
        }
        other => {
            return Err(bad(
                "provider",
                format!("{} is a batch queue, not a cloud", other.as_str()),
            ));
        }
    };

    let mut groups = BTreeMap::new();
    for (name, key, g, default_replicas) in super::groups(file.worker, file.worker_groups)? {
        check_env(&format!("{key}.env"), &g.env)?;
        if g.nthreads == Some(0) {
            return Err(bad(format!("{key}.nthreads"), "must be at least 1"));
        }
        let memory_limit = match g.memory_limit {
            None => MemoryLimit::Auto,
            Some(m) => MemoryLimit::parse(&m).map_err(|e| bad(format!("{key}.memory_limit"), e))?,
        };
        let worker = WorkerTemplate {
            nthreads: g.nthreads.map(|n| n as usize),
            memory_limit,
            env: env_vars(&format!("{key}.env"), g.env)?,
            resources: None,
        };
        groups.insert(
            name,
            GroupSettings {
                replicas: g.replicas.unwrap_or(default_replicas),
                worker,
                size: g.instance_type.unwrap_or_else(|| default_size.clone()),
            },
        );
    }
    let autoscaling = super::autoscaling(file.autoscaling, groups.keys())?;

    // On by default: on AWS the keys live in SSM Parameter Store, on Azure in a Key Vault of the
    // cluster's (see `providers::vm::secrets`).
    let tls = file.tls.unwrap_or(true);
    if let ProviderSettings::Aws(ec2) = &provider
        && tls
        && ec2.iam_instance_profile.is_none()
    {
        return Err(bad(
            "ec2.iam_instance_profile",
            "is required with tls (the default): the VMs read their private keys from SSM \
             Parameter Store with the profile's role (docs/cloud.md names the policy); set it, \
             or `tls: false` for a cluster without TLS",
        ));
    }
    Ok(CloudCluster {
        name: file.name,
        software,
        scheduler: SchedulerSettings {
            env: file.scheduler.env,
            ingress_cidrs: file.scheduler.ingress_cidrs,
            size: file.scheduler.instance_type.unwrap_or(scheduler_size),
        },
        groups,
        autoscaling,
        timeouts,
        tls,
        provider,
    })
}

/// Parses a VM cluster's config text; a batch cluster's is an error naming `provider`.
pub fn parse(text: &str) -> Result<CloudCluster, ProviderError> {
    match super::parse(text)? {
        ClusterConfig::Vm(c) => Ok(c),
        ClusterConfig::Batch(c) => Err(bad(
            "provider",
            format!("{} is a batch queue, not a cloud", c.system.name().as_str()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::config::{DEFAULT_GROUP, names_provider};
    use std::time::Duration;

    const AWS: &str = "
provider: aws
name: demo
worker:
  replicas: 2
tls: false
ec2:
  region: eu-west-1
  ami: ami-0123456789abcdef0
";

    fn err(text: &str) -> (String, String) {
        match parse(text) {
            Err(ProviderError::Config { key, message, .. }) => (key, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn a_minimal_aws_file_gets_every_default() {
        let c = parse(AWS).unwrap();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            c.software.image,
            format!("ghcr.io/rask-dev/rask-worker:{version}")
        );
        assert_eq!(
            c.software.operator_image,
            format!("ghcr.io/rask-dev/rask-operator:{version}")
        );
        assert_eq!(c.name, "demo");
        assert_eq!(c.groups[DEFAULT_GROUP].replicas, 2);
        assert_eq!(c.groups[DEFAULT_GROUP].size, "t3.medium");
        assert_eq!(
            c.groups[DEFAULT_GROUP].worker.memory_limit,
            MemoryLimit::Auto
        );
        assert!(c.scheduler.ingress_cidrs.is_empty(), "closed by default");
        assert_eq!(c.timeouts.workers, Duration::from_secs(600));
        let ProviderSettings::Aws(ec2) = &c.provider else {
            panic!()
        };
        assert_eq!(ec2.filesystem_size, 40);
        assert!(!ec2.spot && !ec2.use_private_ip);
    }

    #[test]
    fn tls_is_on_by_default_on_aws_and_needs_an_instance_profile() {
        let minimal = AWS.replace("tls: false\n", "");
        let (key, message) = err(&minimal);
        assert_eq!(key, "ec2.iam_instance_profile");
        assert!(message.contains("SSM Parameter Store"), "{message}");
        assert!(message.contains("`tls: false`"), "{message}");
        let c = parse(&format!("{minimal}  iam_instance_profile: rask-vm\n")).unwrap();
        assert!(c.tls);
        assert!(!parse(AWS).unwrap().tls);
        let (key, message) = err(&AWS.replace("tls: false", "tls: maybe"));
        assert!(
            key.contains("tls") || message.contains("tls"),
            "{key}: {message}"
        );
        assert!(message.contains("maybe"), "{key}: {message}");
    }

    #[test]
    fn dask_cloudprovider_instance_type_keys_mean_the_same() {
        let text = format!(
            "{AWS}  instance_type: m5.large\n  scheduler_instance_type: t3.small\nworker_groups:\n  big:\n    instance_type: r5.4xlarge\n"
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.scheduler.size, "t3.small");
        assert_eq!(c.groups[DEFAULT_GROUP].size, "m5.large");
        assert_eq!(c.groups["big"].size, "r5.4xlarge");
        assert_eq!(c.groups["big"].replicas, 0);
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let (key, message) = err(&format!("{AWS}  instance_typo: m5.large\n"));
        assert_eq!(key, "ec2");
        assert!(message.contains("instance_typo"), "{message}");
        let (key, message) = err(&AWS.replace("replicas: 2", "replicas: 2\n  nthread: 2"));
        assert_eq!(key, "worker");
        assert!(message.contains("nthread"), "{message}");
        let (_, message) = err(&format!("{AWS}colour: blue\n"));
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (
                AWS.replace("replicas: 2", "replicas: -1"),
                "worker.replicas",
            ),
            (AWS.replace("name: demo", "name: Demo_1"), "name"),
            (
                AWS.replace("ami: ami-0123456789abcdef0", "ami: ubuntu"),
                "ec2.ami",
            ),
            (AWS.replace("  region: eu-west-1\n", ""), "ec2.region"),
            (AWS.replace("provider: aws", "provider: gcp"), "provider"),
            (
                format!("{AWS}scheduler:\n  ingress_cidrs: [10.0.0.0/33]\n"),
                "scheduler.ingress_cidrs[0]",
            ),
            (
                format!(
                    "{AWS}  iam_instance_profile: p\nautoscaling: {{minimum: 5, maximum: 2}}\n"
                ),
                "autoscaling.minimum",
            ),
            (
                format!(
                    "{AWS}  iam_instance_profile: p\nautoscaling: {{minimum: 1, maximum: 2, worker_group: gpu}}\n"
                ),
                "autoscaling.worker_group",
            ),
            (
                format!("{AWS}autoscaling: {{minimum: 1, maximum: 2}}\n"),
                "ec2.iam_instance_profile",
            ),
            (
                format!("{AWS}  filesystem_size: 2\n"),
                "ec2.filesystem_size",
            ),
            (
                format!("{AWS}  instance_tags: {{\"rask:cluster\": x}}\n"),
                "ec2.instance_tags.rask:cluster",
            ),
            (format!("{AWS}azure: {{}}\n"), "azure"),
            (
                "provider: azure\nname: demo\nazure: {location: westeurope}\n".to_owned(),
                "azure.subscription_id",
            ),
        ];
        for (text, want) in cases {
            let (key, message) = err(&text);
            assert_eq!(key, want, "{message}");
        }
    }

    #[test]
    fn secrets_in_env_are_refused_because_user_data_is_not_secret() {
        let text = AWS.replace(
            "replicas: 2",
            "replicas: 2\n  env:\n    AWS_SECRET_ACCESS_KEY: abc",
        );
        let (key, message) = err(&text);
        assert_eq!(key, "worker.env.AWS_SECRET_ACCESS_KEY");
        assert!(message.contains("user-data"), "{message}");
    }

    #[test]
    fn azure_settles_dask_cloudprovider_defaults() {
        let text = "
provider: azure
name: az
azure:
  location: westeurope
  resource_group: rg
  subscription_id: 00000000-0000-0000-0000-000000000000
  vnet: net
  subnet: sub
  vm_size: Standard_D4s_v3
  spot: true
  ssh_public_key: ssh-ed25519 AAAA test
";
        let c = parse(text).unwrap();
        let ProviderSettings::Azure(az) = &c.provider else {
            panic!()
        };
        assert!(az.public_ingress && az.spot);
        assert_eq!(az.disk_size, 50);
        assert_eq!(c.groups[DEFAULT_GROUP].size, "Standard_D4s_v3");
        assert_eq!(c.scheduler.size, "Standard_D4s_v3");
    }

    const AZURE: &str = "
provider: azure
name: az
azure:
  location: westeurope
  resource_group: rg
  subscription_id: 00000000-0000-0000-0000-000000000000
  vnet: net
  subnet: sub
  ssh_public_key: ssh-ed25519 AAAA test
";

    fn credentials_of(extra: &str) -> AzureCredentials {
        let ProviderSettings::Azure(az) = parse(&format!("{AZURE}{extra}")).unwrap().provider
        else {
            panic!()
        };
        *az.credentials
    }

    #[test]
    fn azure_has_tls_by_default_with_its_keys_in_key_vault() {
        assert!(parse(AZURE).unwrap().tls);
        assert!(parse(&format!("tls: true{AZURE}")).unwrap().tls);
        assert!(!parse(&format!("tls: false{AZURE}")).unwrap().tls);
    }

    #[test]
    fn azure_credentials_default_to_auto_against_azure_s_public_endpoints() {
        assert_eq!(credentials_of(""), AzureCredentials::default());
        let c = credentials_of("");
        assert_eq!(c.kind, AzureCredentialKind::Auto);
        assert_eq!(c.login_endpoint, "https://login.microsoftonline.com");
        assert_eq!(c.imds_endpoint, None);
        assert_eq!(c.az_path, "az");
    }

    #[test]
    fn a_service_principal_s_secret_comes_from_a_file_or_the_environment() {
        let c = credentials_of(
            "  credential: service_principal
  login_endpoint: https://login.example.net/
  imds_endpoint: http://127.0.0.1:8080
  az_path: /opt/az/bin/az
  service_principal:
    tenant_id: contoso.onmicrosoft.com
    client_id: 6b7d3a8e-0000-0000-0000-000000000000
    client_secret_file: /run/secrets/sp
",
        );
        assert_eq!(c.kind, AzureCredentialKind::ServicePrincipal);
        assert_eq!(c.login_endpoint, "https://login.example.net");
        assert_eq!(c.imds_endpoint.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(c.az_path, "/opt/az/bin/az");
        let sp = c.service_principal.unwrap();
        assert_eq!(sp.tenant_id.as_deref(), Some("contoso.onmicrosoft.com"));
        assert_eq!(sp.secret, SecretSource::File("/run/secrets/sp".into()));
        let c = credentials_of("  service_principal: {client_id: x}\n");
        assert_eq!(
            c.service_principal.unwrap().secret,
            SecretSource::Env("AZURE_CLIENT_SECRET".into())
        );
        let c = credentials_of("  service_principal: {client_secret_env: MY_SP_SECRET}\n");
        assert_eq!(
            c.service_principal.unwrap().secret,
            SecretSource::Env("MY_SP_SECRET".into())
        );
    }

    #[test]
    fn bad_azure_credentials_name_the_key() {
        let cases = [
            (
                "  service_principal: {client_secret: hunter2}\n",
                "azure.service_principal.client_secret",
                "never written in the config",
            ),
            (
                "  service_principal: {client_secret_file: /s, client_secret_env: S}\n",
                "azure.service_principal",
                "not both",
            ),
            (
                "  service_principal: {client_secret_env: 'my-secret'}\n",
                "azure.service_principal.client_secret_env",
                "not an environment variable name",
            ),
            (
                "  service_principal: {tenant_id: 'a tenant'}\n",
                "azure.service_principal.tenant_id",
                "not a tenant id",
            ),
            (
                "  login_endpoint: http://login.microsoftonline.com\n",
                "azure.login_endpoint",
                "must start with https://",
            ),
            (
                "  imds_endpoint: 169.254.169.254\n",
                "azure.imds_endpoint",
                "must start with http:// or https://",
            ),
            ("  az_path: ''\n", "azure.az_path", "must not be empty"),
            (
                "  credential: certificate\n",
                "azure.credential",
                "unknown variant `certificate`",
            ),
        ];
        for (extra, want, says) in cases {
            let (key, message) = err(&format!("{AZURE}{extra}"));
            assert_eq!(key, want, "{message}");
            assert!(message.contains(says), "{key}: {message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn the_provider_key_tells_a_cloud_file_from_a_manifest() {
        assert!(names_provider(AWS));
        assert!(!names_provider(
            "apiVersion: kubernetes.dask.org/v1\nkind: DaskCluster\n"
        ));
    }
}
