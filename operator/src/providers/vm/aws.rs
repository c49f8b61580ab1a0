//! AWS EC2 as a cloud [`Provider`]: a security group per cluster (all traffic between the
//! cluster's own instances, the scheduler's ports 8786–8787 only to the configured CIDRs), one
//! instance per VM with cloud-init user-data, IMDSv2 only, tags on instances and their volumes,
//! optional spot workers. Errors keep EC2's code (`InsufficientInstanceCapacity`,
//! `RequestLimitExceeded`, ...) and say which call failed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_ec2::Client;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, IamInstanceProfileSpecification,
    Instance, InstanceInterruptionBehavior, InstanceMarketOptionsRequest,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, InstanceStateName,
    InstanceType, IpPermission, IpRange, MarketType, Placement, ResourceType, SpotInstanceType,
    SpotMarketOptions, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use base64::Engine;

pub use super::aws_sdk::AwsOptions;
use super::aws_sdk::{PROVIDER, api_error, sdk_config};
use super::ssm::{PARAMETER, Parameters};
use super::{
    Ledger, Provider, Resource, Role, TAG_CLUSTER, TAG_CREATED, TAG_GROUP, TAG_READY, TAG_ROLE, Vm,
    VmRequest, VmState,
};
use crate::providers::ProviderError;
use crate::providers::config::vm::{CloudCluster, Ec2Settings, ProviderSettings};

const INSTANCE: &str = "instance";
const SECURITY_GROUP: &str = "security-group";

/// The cluster's network as EC2 knows it.
#[derive(Clone, Debug)]
struct Network {
    security_groups: Vec<String>,
    subnet: String,
}

pub struct Ec2 {
    client: Client,
    /// Where the cluster's TLS files are kept.
    ssm: Parameters,
    settings: Ec2Settings,
    endpoint: String,
    network: Mutex<Option<Network>>,
}

fn code_of(e: &ProviderError) -> Option<&str> {
    match e {
        ProviderError::Api { code, .. } => Some(code),
        _ => None,
    }
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn tag_value<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

fn filter(name: &str, values: &[&str]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.iter().map(|v| v.to_string()).collect()))
        .build()
}

fn cluster_filter(cluster: Option<&str>) -> Filter {
    match cluster {
        Some(c) => filter(&format!("tag:{TAG_CLUSTER}"), &[c]),
        None => filter("tag-key", &[TAG_CLUSTER]),
    }
}

/// Instance states that still exist (and cost).
const LIVE_STATES: [&str; 5] = ["pending", "running", "stopping", "stopped", "shutting-down"];

impl Ec2 {
    /// A client for the config's region.
    pub async fn connect(cluster: &CloudCluster, opts: &AwsOptions) -> Result<Ec2, ProviderError> {
        let ProviderSettings::Aws(settings) = &cluster.provider else {
            return Err(ProviderError::Other(format!(
                "cluster {} is not an aws cluster",
                cluster.name
            )));
        };
        let config = sdk_config(&settings.region, opts).await;
        let endpoint = opts
            .endpoint_url
            .clone()
            .unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com", settings.region));
        Ok(Ec2 {
            client: Client::new(&config),
            ssm: Parameters::new(&config, &settings.region, opts),
            settings: settings.clone(),
            endpoint,
            network: Mutex::new(None),
        })
    }

    fn err<E, R>(&self, action: &str, e: SdkError<E, R>) -> ProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        api_error(action, e, &self.endpoint)
    }

    fn cached_network(&self) -> Option<Network> {
        self.network
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn cache_network(&self, n: Network) {
        *self.network.lock().unwrap_or_else(|p| p.into_inner()) = Some(n);
    }

    /// The VPC to use: the configured one, the subnet's, or the region's default VPC.
    async fn vpc(&self) -> Result<String, ProviderError> {
        if let Some(v) = &self.settings.vpc {
            return Ok(v.clone());
        }
        if let Some(s) = &self.settings.subnet_id {
            let out = self
                .client
                .describe_subnets()
                .subnet_ids(s)
                .send()
                .await
                .map_err(|e| self.err(&format!("DescribeSubnets {s} (ec2.subnet_id)"), e))?;
            return out
                .subnets()
                .first()
                .and_then(|s| s.vpc_id())
                .map(str::to_owned)
                .ok_or_else(|| ProviderError::Config {
                    file: String::new(),
                    key: "ec2.subnet_id".into(),
                    message: format!("subnet {s} not found in {}", self.settings.region),
                });
        }
        let out = self
            .client
            .describe_vpcs()
            .filters(filter("is-default", &["true"]))
            .send()
            .await
            .map_err(|e| self.err("DescribeVpcs (default VPC)", e))?;
        out.vpcs()
            .first()
            .and_then(|v| v.vpc_id())
            .map(str::to_owned)
            .ok_or_else(|| ProviderError::Config {
                file: String::new(),
                key: "ec2.vpc".into(),
                message: format!(
                    "region {} has no default VPC: set ec2.vpc or ec2.subnet_id",
                    self.settings.region
                ),
            })
    }

    /// The subnet: the configured one, or one of the VPC's (in the availability zone, if set).
    async fn subnet(&self, vpc: &str) -> Result<String, ProviderError> {
        if let Some(s) = &self.settings.subnet_id {
            return Ok(s.clone());
        }
        let mut req = self
            .client
            .describe_subnets()
            .filters(filter("vpc-id", &[vpc]));
        if let Some(az) = &self.settings.availability_zone {
            req = req.filters(filter("availability-zone", &[az]));
        }
        let out = req
            .send()
            .await
            .map_err(|e| self.err(&format!("DescribeSubnets of {vpc}"), e))?;
        let mut subnets: Vec<(String, bool)> = out
            .subnets()
            .iter()
            .filter_map(|s| Some((s.subnet_id()?.to_owned(), s.default_for_az() == Some(true))))
            .collect();
        subnets.sort_by_key(|(id, default)| (!default, id.clone()));
        subnets
            .into_iter()
            .next()
            .map(|(id, _)| id)
            .ok_or_else(|| ProviderError::Config {
                file: String::new(),
                key: "ec2.subnet_id".into(),
                message: format!(
                    "VPC {vpc} has no subnet{}: set ec2.subnet_id",
                    match &self.settings.availability_zone {
                        Some(az) => format!(" in {az}"),
                        None => String::new(),
                    }
                ),
            })
    }

    /// The security groups and subnet of an existing cluster (for `scale`): from the cache, the
    /// config, or the group tagged with the cluster.
    async fn network_of(&self, cluster: &str) -> Result<Network, ProviderError> {
        if let Some(n) = self.cached_network() {
            return Ok(n);
        }
        let vpc = self.vpc().await?;
        let subnet = self.subnet(&vpc).await?;
        let security_groups = if self.settings.security_groups.is_empty() {
            let out = self
                .client
                .describe_security_groups()
                .filters(cluster_filter(Some(cluster)))
                .send()
                .await
                .map_err(|e| self.err("DescribeSecurityGroups", e))?;
            let ids: Vec<String> = out
                .security_groups()
                .iter()
                .filter_map(|g| g.group_id().map(str::to_owned))
                .collect();
            if ids.is_empty() {
                return Err(ProviderError::NoSuchCluster {
                    name: cluster.to_owned(),
                    reason: format!("no security group tagged {TAG_CLUSTER}={cluster}"),
                });
            }
            ids
        } else {
            self.settings.security_groups.clone()
        };
        let n = Network {
            security_groups,
            subnet,
        };
        self.cache_network(n.clone());
        Ok(n)
    }

    /// The AMI's root device, for the root volume's size; also checks the AMI exists.
    async fn root_device(&self) -> Result<String, ProviderError> {
        let ami = &self.settings.ami;
        let out = self
            .client
            .describe_images()
            .image_ids(ami)
            .send()
            .await
            .map_err(
                |e| match self.err(&format!("DescribeImages {ami} (ec2.ami)"), e) {
                    ProviderError::Api { code, message, .. }
                        if code.starts_with("InvalidAMIID") =>
                    {
                        ProviderError::Config {
                            file: String::new(),
                            key: "ec2.ami".into(),
                            message: format!(
                                "{ami} is not an image in {}: {message}",
                                self.settings.region
                            ),
                        }
                    }
                    other => other,
                },
            )?;
        let image = out.images().first().ok_or_else(|| ProviderError::Config {
            file: String::new(),
            key: "ec2.ami".into(),
            message: format!("{ami} is not an image in {}", self.settings.region),
        })?;
        Ok(image.root_device_name().unwrap_or("/dev/xvda").to_owned())
    }

    fn vm_of(&self, i: &Instance) -> Option<Vm> {
        let tags = i.tags();
        let cluster = tag_value(tags, TAG_CLUSTER)?.to_owned();
        let role = Role::parse(tag_value(tags, TAG_ROLE)?)?;
        let id = i.instance_id()?.to_owned();
        let state = match i.state().and_then(|s| s.name()) {
            Some(InstanceStateName::Pending) => VmState::Pending,
            Some(InstanceStateName::Running) => VmState::Running,
            Some(InstanceStateName::Terminated) => return None,
            Some(other) => stopping(other.as_str(), i.state_reason().and_then(|r| r.message())),
            None => VmState::Pending,
        };
        let created = tag_value(tags, TAG_CREATED)
            .and_then(|t| t.parse::<f64>().ok())
            .or_else(|| i.launch_time().map(|t| t.as_secs_f64()))
            .unwrap_or(0.0);
        Some(Vm {
            name: tag_value(tags, "Name").unwrap_or(&id).to_owned(),
            id,
            cluster,
            role,
            group: tag_value(tags, TAG_GROUP).map(str::to_owned),
            state,
            private_ip: i.private_ip_address().map(str::to_owned),
            public_ip: i.public_ip_address().map(str::to_owned),
            created,
            ready: tag_value(tags, TAG_READY) == Some("true"),
        })
    }

    async fn instances(&self, cluster: Option<&str>) -> Result<Vec<Instance>, ProviderError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .describe_instances()
            .filters(cluster_filter(cluster))
            .filters(filter("instance-state-name", &LIVE_STATES))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.err("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().cloned());
            }
        }
        Ok(out)
    }

    async fn terminate(&self, ids: &[String], timeout: Duration) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        // One call per instance would be slow; one for all fails whole if one id is already
        // gone, so on NotFound fall back to one by one.
        let all = self
            .client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await;
        if let Err(e) = all {
            let e = self.err("TerminateInstances", e);
            if !code_of(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) {
                return Err(e);
            }
            for id in ids {
                if let Err(e) = self
                    .client
                    .terminate_instances()
                    .instance_ids(id)
                    .send()
                    .await
                {
                    let e = self.err(&format!("TerminateInstances {id}"), e);
                    if !code_of(&e).is_some_and(|c| c.starts_with("InvalidInstanceID")) {
                        return Err(e);
                    }
                }
            }
        }
        let start = Instant::now();
        loop {
            let left: Vec<String> = self
                .client
                .describe_instances()
                .filters(filter(
                    "instance-id",
                    &ids.iter().map(String::as_str).collect::<Vec<_>>(),
                ))
                .filters(filter("instance-state-name", &LIVE_STATES))
                .send()
                .await
                .map_err(|e| self.err("DescribeInstances", e))?
                .reservations()
                .iter()
                .flat_map(|r| r.instances())
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(ProviderError::Timeout {
                    what: format!("instances {} terminating", left.join(", ")),
                    after: timeout,
                    boot_log: None,
                });
            }
            tokio::time::sleep(Duration::from_secs(2).min(timeout / 10)).await;
        }
    }

    /// Deletes a security group, retrying while instances that use it are still terminating.
    async fn delete_group(&self, id: &str, timeout: Duration) -> Result<(), ProviderError> {
        let start = Instant::now();
        loop {
            match self
                .client
                .delete_security_group()
                .group_id(id)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let e = self.err(&format!("DeleteSecurityGroup {id}"), e);
                    match code_of(&e) {
                        Some(c) if c.starts_with("InvalidGroup") => return Ok(()),
                        Some("DependencyViolation") if start.elapsed() < timeout => {
                            tokio::time::sleep(Duration::from_secs(2).min(timeout / 10)).await;
                        }
                        _ => return Err(e),
                    }
                }
            }
        }
    }
}

/// A stopping or stopped instance is capacity lost; one EC2 stopped on its own (a `Server.`
/// reason: spot interruption, host failure) has failed, and says why.
fn stopping(state: &str, reason: Option<&str>) -> VmState {
    match reason {
        Some(r) if r.contains("Server.") => VmState::Failed(format!("{state}: {r}")),
        _ => VmState::Stopping,
    }
}

fn tags_for(
    cluster: &str,
    role: Role,
    name: &str,
    group: Option<&str>,
    extra: &[(String, String)],
) -> Vec<Tag> {
    let mut tags = vec![
        tag("Name", name),
        tag(TAG_CLUSTER, cluster),
        tag(TAG_ROLE, role.as_str()),
        tag(TAG_CREATED, &(crate::clock::now() as u64).to_string()),
    ];
    if let Some(g) = group {
        tags.push(tag(TAG_GROUP, g));
    }
    tags.extend(extra.iter().map(|(k, v)| tag(k, v)));
    tags
}

impl Provider for Ec2 {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn prepare(
        &self,
        cluster: &CloudCluster,
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        self.root_device().await?;
        let vpc = self.vpc().await?;
        let subnet = self.subnet(&vpc).await?;
        if !self.settings.security_groups.is_empty() {
            self.cache_network(Network {
                security_groups: self.settings.security_groups.clone(),
                subnet,
            });
            return Ok(());
        }
        let name = format!("rask-{}", cluster.name);
        let created = self
            .client
            .create_security_group()
            .group_name(&name)
            .description(format!(
                "rask cluster {}: scheduler and workers",
                cluster.name
            ))
            .vpc_id(&vpc)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::SecurityGroup)
                    .set_tags(Some(tags_for(
                        &cluster.name,
                        Role::Network,
                        &name,
                        None,
                        &[],
                    )))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err(&format!("CreateSecurityGroup {name} in {vpc}"), e))?;
        let id = created
            .group_id()
            .ok_or_else(|| ProviderError::Other("CreateSecurityGroup answered no group id".into()))?
            .to_owned();
        ledger.record(Resource {
            kind: SECURITY_GROUP,
            id: id.clone(),
            cluster: cluster.name.clone(),
            created: Some(crate::clock::now() as u64),
        });
        // Everything between the cluster's own instances; the scheduler's ports to the
        // configured networks only. Never 0.0.0.0/0 unless the config says so.
        let mut permissions = vec![
            IpPermission::builder()
                .ip_protocol("-1")
                .user_id_group_pairs(UserIdGroupPair::builder().group_id(&id).build())
                .build(),
        ];
        if !cluster.scheduler.ingress_cidrs.is_empty() {
            let mut p = IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(8786)
                .to_port(8787);
            for cidr in &cluster.scheduler.ingress_cidrs {
                p = p.ip_ranges(
                    IpRange::builder()
                        .cidr_ip(cidr)
                        .description("scheduler.ingress_cidrs")
                        .build(),
                );
            }
            permissions.push(p.build());
        }
        self.client
            .authorize_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(permissions))
            .send()
            .await
            .map_err(|e| self.err(&format!("AuthorizeSecurityGroupIngress {id}"), e))?;
        self.cache_network(Network {
            security_groups: vec![id],
            subnet,
        });
        Ok(())
    }

    async fn create_vm(
        &self,
        cluster: &CloudCluster,
        req: &VmRequest,
        ledger: &mut Ledger,
    ) -> Result<Vm, ProviderError> {
        let network = self.network_of(&cluster.name).await?;
        let root = self.root_device().await?;
        let s = &self.settings;
        let extra: Vec<(String, String)> = s.instance_tags.clone().into_iter().collect();
        let tags = tags_for(
            &cluster.name,
            req.role,
            &req.name,
            req.group.as_deref(),
            &extra,
        );
        let nic = InstanceNetworkInterfaceSpecification::builder()
            .device_index(0)
            .subnet_id(&network.subnet)
            .set_groups(Some(network.security_groups.clone()))
            .associate_public_ip_address(req.public_ip)
            .delete_on_termination(true)
            .build();
        let mut run = self
            .client
            .run_instances()
            .image_id(&s.ami)
            .instance_type(InstanceType::from(req.size.as_str()))
            .min_count(1)
            .max_count(1)
            .client_token(&req.name)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&req.user_data))
            .network_interfaces(nic)
            .metadata_options(
                InstanceMetadataOptionsRequest::builder()
                    .http_tokens(HttpTokensState::Required)
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name(root)
                    .ebs(
                        EbsBlockDevice::builder()
                            .volume_size(s.filesystem_size as i32)
                            .volume_type(VolumeType::Gp3)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .set_tags(Some(tags.clone()))
                    .build(),
            )
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Volume)
                    .set_tags(Some(tags))
                    .build(),
            );
        if let Some(az) = &s.availability_zone {
            run = run.placement(Placement::builder().availability_zone(az).build());
        }
        if let Some(k) = &s.key_name {
            run = run.key_name(k);
        }
        if let Some(p) = &s.iam_instance_profile {
            let spec = if p.starts_with("arn:") {
                IamInstanceProfileSpecification::builder().arn(p)
            } else {
                IamInstanceProfileSpecification::builder().name(p)
            };
            run = run.iam_instance_profile(spec.build());
        }
        if req.spot {
            run = run.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .spot_options(
                        SpotMarketOptions::builder()
                            .spot_instance_type(SpotInstanceType::OneTime)
                            .instance_interruption_behavior(InstanceInterruptionBehavior::Terminate)
                            .build(),
                    )
                    .build(),
            );
        }
        let out = run.send().await.map_err(|e| {
            match self.err(&format!("RunInstances {} ({})", req.name, req.size), e) {
                ProviderError::Capacity {
                    provider,
                    action,
                    code,
                    message,
                    ..
                } => ProviderError::Capacity {
                    provider,
                    action,
                    what: format!(
                        "{}{} {}",
                        if req.spot { "spot " } else { "" },
                        req.size,
                        s.availability_zone.as_deref().unwrap_or(&s.region)
                    ),
                    code,
                    message,
                },
                other => other,
            }
        })?;
        let instance = out.instances().first().ok_or_else(|| {
            ProviderError::Other(format!("RunInstances {} answered no instance", req.name))
        })?;
        let id = instance
            .instance_id()
            .ok_or_else(|| ProviderError::Other("RunInstances answered no instance id".into()))?;
        ledger.record(Resource {
            kind: INSTANCE,
            id: id.to_owned(),
            cluster: cluster.name.clone(),
            created: Some(crate::clock::now() as u64),
        });
        // Built from the request: RunInstances' answer need not carry the tags yet.
        Ok(Vm {
            id: id.to_owned(),
            name: req.name.clone(),
            cluster: cluster.name.clone(),
            role: req.role,
            group: req.group.clone(),
            state: VmState::Pending,
            private_ip: instance.private_ip_address().map(str::to_owned),
            public_ip: instance.public_ip_address().map(str::to_owned),
            created: crate::clock::now(),
            ready: false,
        })
    }

    async fn list_vms(&self, cluster: &str) -> Result<Vec<Vm>, ProviderError> {
        Ok(self
            .instances(Some(cluster))
            .await?
            .iter()
            .filter_map(|i| self.vm_of(i))
            .collect())
    }

    async fn tagged(&self, cluster: Option<&str>) -> Result<Vec<Resource>, ProviderError> {
        let mut out = Vec::new();
        for i in self.instances(cluster).await? {
            let tags = i.tags();
            if let (Some(id), Some(c)) = (i.instance_id(), tag_value(tags, TAG_CLUSTER)) {
                out.push(Resource {
                    kind: INSTANCE,
                    id: id.to_owned(),
                    cluster: c.to_owned(),
                    created: tag_value(tags, TAG_CREATED).and_then(|t| t.parse().ok()),
                });
            }
        }
        let groups = self
            .client
            .describe_security_groups()
            .filters(cluster_filter(cluster))
            .send()
            .await
            .map_err(|e| self.err("DescribeSecurityGroups", e))?;
        for g in groups.security_groups() {
            let tags = g.tags();
            if let (Some(id), Some(c)) = (g.group_id(), tag_value(tags, TAG_CLUSTER)) {
                out.push(Resource {
                    kind: SECURITY_GROUP,
                    id: id.to_owned(),
                    cluster: c.to_owned(),
                    created: tag_value(tags, TAG_CREATED).and_then(|t| t.parse().ok()),
                });
            }
        }
        out.extend(self.ssm.list(cluster).await?);
        Ok(out)
    }

    async fn delete(&self, resources: &[Resource], timeout: Duration) -> Result<(), ProviderError> {
        let start = Instant::now();
        let instances: Vec<String> = resources
            .iter()
            .filter(|r| r.kind == INSTANCE)
            .map(|r| r.id.clone())
            .collect();
        self.terminate(&instances, timeout).await?;
        for r in resources.iter().filter(|r| r.kind == SECURITY_GROUP) {
            self.delete_group(&r.id, timeout.saturating_sub(start.elapsed()))
                .await?;
        }
        let parameters: Vec<String> = resources
            .iter()
            .filter(|r| r.kind == PARAMETER)
            .map(|r| r.id.clone())
            .collect();
        self.ssm.delete(&parameters).await
    }

    async fn store_tls(
        &self,
        cluster: &CloudCluster,
        files: &[(String, String)],
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        for (file, text) in files {
            let secure = crate::tls::ClusterCerts::is_key_file(file);
            let r = self.ssm.put(&cluster.name, file, text, secure).await?;
            ledger.record(r);
        }
        Ok(())
    }

    async fn boot_log(&self, vm: &Vm) -> Result<String, ProviderError> {
        let out = self
            .client
            .get_console_output()
            .instance_id(&vm.id)
            .latest(true)
            .send()
            .await
            .map_err(|e| self.err(&format!("GetConsoleOutput {}", vm.id), e))?;
        let Some(text) = out.output() else {
            return Ok(String::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| {
                ProviderError::Other(format!("console output of {} is not base64: {e}", vm.id))
            })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn mark_ready(&self, vm: &Vm) -> Result<(), ProviderError> {
        self.client
            .create_tags()
            .resources(&vm.id)
            .tags(tag(TAG_READY, "true"))
            .send()
            .await
            .map_err(|e| self.err(&format!("CreateTags {}", vm.id), e))?;
        Ok(())
    }

    fn vm_resource(&self, vm: &Vm) -> Resource {
        Resource {
            kind: INSTANCE,
            id: vm.id.clone(),
            cluster: vm.cluster.clone(),
            created: Some(vm.created as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_ec2_stopped_on_its_own_has_failed_and_says_why() {
        let spot = stopping(
            "shutting-down",
            Some("Server.SpotInstanceTermination: Spot instance termination"),
        );
        assert_eq!(
            spot,
            VmState::Failed(
                "shutting-down: Server.SpotInstanceTermination: Spot instance termination".into()
            )
        );
        assert_eq!(
            stopping("stopping", Some("Client.UserInitiatedShutdown")),
            VmState::Stopping
        );
        assert_eq!(stopping("stopped", None), VmState::Stopping);
    }
}
