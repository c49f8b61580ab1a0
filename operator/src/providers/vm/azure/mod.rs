//! Azure as a cloud [`Provider`], talking Azure Resource Manager's REST API directly over the
//! operator's hyper client (see `docs/cloud.md` for why not `azure_mgmt_compute`). Per VM: a NIC,
//! a public IP for the scheduler only (when `public_ingress`), and the VM with custom data, boot
//! diagnostics, tags and `deleteOption: Delete` on its OS disk, NIC and IP, so one VM delete
//! removes them all. Spot workers have eviction policy Delete: an evicted VM is never left
//! stopped and billed. Long-running operations are followed through `Azure-AsyncOperation`,
//! `Location` or the resource's `provisioningState`, each with a timeout; 429 and 503 answers are
//! retried after `Retry-After`.
//!
//! With TLS (the default), `prepare` also makes the cluster's Key Vault and the user-assigned
//! managed identity its VMs read it with (see [`super::secrets`]); `store_tls` puts the files in
//! the vault ([`vault`]); deleting the vault purges it, and `tagged` also finds the cluster's
//! vaults that were deleted but not purged (soft-delete), so `sweep` purges those too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use super::secrets::{self, SecretStore};
use super::{
    Ledger, Provider, Resource, Role, TAG_CLUSTER, TAG_CREATED, TAG_GROUP, TAG_READY, TAG_ROLE, Vm,
    VmRequest, VmState,
};
use crate::clock::now;
use crate::providers::ProviderError;
use crate::providers::config::vm::{AzureSettings, CloudCluster, ProviderSettings};

pub mod arm;
mod credential;
mod transport;
pub(crate) mod vault;

use arm::{Arm, arm_error};

const PROVIDER: &str = "azure";
const COMPUTE_API: &str = "2024-07-01";
const NETWORK_API: &str = "2024-05-01";
const VM: &str = "virtual-machine";
const NIC: &str = "network-interface";
const PUBLIC_IP: &str = "public-ip";
const NSG: &str = "network-security-group";
const KEYVAULT_API: &str = "2023-07-01";
const IDENTITY_API: &str = "2023-01-31";
/// The cluster's Key Vault, and one deleted but not purged yet (id `LOCATION/NAME`).
const KEY_VAULT: &str = "key-vault";
const DELETED_KEY_VAULT: &str = "deleted-key-vault";
/// The user-assigned managed identity the cluster's VMs read its vault with.
const IDENTITY: &str = "managed-identity";

/// How to reach ARM besides the config: tests point it at a local stub.
#[derive(Clone, Debug, Default)]
pub struct AzureOptions {
    /// ARM's base URL (default `https://management.azure.com`).
    pub endpoint: Option<String>,
    /// A bearer token to use as is; default: the config's credential (`azure.credential`: a
    /// service principal, the Azure CLI or the VM's managed identity).
    pub token: Option<String>,
    /// Root certificates (DER) trusted besides the system's, for ARM and the login endpoint.
    pub root_certificates: Vec<Vec<u8>>,
    /// Between polls of a long-running operation when ARM gives no `Retry-After` (default 2 s).
    pub poll: Option<Duration>,
    /// The user-assigned identity (resource id) a managed-identity credential asks the instance
    /// metadata service for; default: the VM's only one. The autoscaler on a scheduler VM sets
    /// `azure.identity`: with TLS the VM also has the cluster's Key Vault identity.
    pub identity: Option<String>,
    /// The instance metadata service for `vm-tls fetch` on a VM (default Azure's,
    /// `http://169.254.169.254`).
    pub imds_endpoint: Option<String>,
}

/// Azure as a cloud [`Provider`] for one resource group.
pub struct Azure {
    arm: Arm,
    settings: AzureSettings,
}

fn kind_path(kind: &str) -> (&'static str, &'static str) {
    match kind {
        VM => ("Microsoft.Compute/virtualMachines", COMPUTE_API),
        KEY_VAULT => ("Microsoft.KeyVault/vaults", KEYVAULT_API),
        IDENTITY => (
            "Microsoft.ManagedIdentity/userAssignedIdentities",
            IDENTITY_API,
        ),
        NIC => ("Microsoft.Network/networkInterfaces", NETWORK_API),
        PUBLIC_IP => ("Microsoft.Network/publicIPAddresses", NETWORK_API),
        _ => ("Microsoft.Network/networkSecurityGroups", NETWORK_API),
    }
}

fn tags_of(v: &Value) -> BTreeMap<String, String> {
    v.get("tags")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A VM's view of its cluster's Key Vault at `url`: tokens for the user-assigned identity
/// `identity` (a resource id) from the instance metadata service (`opts.imds_endpoint`, default
/// Azure's), over the operator's transport.
pub(crate) fn vm_vault(
    url: &str,
    identity: &str,
    opts: &AzureOptions,
) -> Result<vault::Vault, ProviderError> {
    let http = transport::client(&opts.root_certificates, Duration::from_secs(20))?;
    let transport = std::sync::Arc::new(
        transport::Transport::new(http, opts.imds_endpoint.as_deref())
            .map_err(|e| ProviderError::Other(format!("azure: instance metadata endpoint: {e}")))?,
    );
    let credential = credential::vm_identity(identity, &transport)?;
    let options =
        credential::client_options(&transport, crate::providers::config::vm::LOGIN_ENDPOINT);
    vault::Vault::connect(url, credential, options)
}

impl Azure {
    pub fn connect(cluster: &CloudCluster, opts: &AzureOptions) -> Result<Azure, ProviderError> {
        let ProviderSettings::Azure(settings) = &cluster.provider else {
            return Err(ProviderError::Other(format!(
                "cluster {} is not an azure cluster",
                cluster.name
            )));
        };
        Ok(Azure {
            arm: Arm::connect(opts, &settings.credentials)?,
            settings: settings.clone(),
        })
    }

    fn group_path(&self) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/{}",
            self.settings.subscription_id, self.settings.resource_group
        )
    }

    fn id(&self, kind: &str, name: &str) -> String {
        format!(
            "{}/providers/{}/{name}",
            self.group_path(),
            kind_path(kind).0
        )
    }

    fn subnet_id(&self) -> String {
        if self.settings.subnet.starts_with("/subscriptions/") {
            return self.settings.subnet.clone();
        }
        format!(
            "{}/providers/Microsoft.Network/virtualNetworks/{}/subnets/{}",
            self.group_path(),
            self.settings.vnet,
            self.settings.subnet
        )
    }

    async fn list(&self, kind: &str) -> Result<Vec<Value>, ProviderError> {
        let (path, api) = kind_path(kind);
        let action = format!("list {path} in {}", self.settings.resource_group);
        let mut url = self
            .arm
            .url(&format!("{}/providers/{path}", self.group_path()), api);
        let mut out = Vec::new();
        loop {
            let a = self
                .arm
                .send(http::Method::GET, &url, None, &action, true)
                .await?;
            if a.status == 404 {
                return Err(ProviderError::Config {
                    file: String::new(),
                    key: "azure.resource_group".into(),
                    message: format!(
                        "{}: {}",
                        self.settings.resource_group,
                        arm_error(&action, a.status, &a.body, &a.text)
                    ),
                });
            }
            if a.status != 200 {
                return Err(arm_error(&action, a.status, &a.body, &a.text));
            }
            if let Some(items) = a.body.get("value").and_then(Value::as_array) {
                out.extend(items.iter().cloned());
            }
            match a.body.get("nextLink").and_then(Value::as_str) {
                Some(next) => url = next.to_owned(),
                None => return Ok(out),
            }
        }
    }

    /// Follows a long-running operation to its end.
    async fn put(
        &self,
        kind: &'static str,
        name: &str,
        body: &Value,
        cluster: &str,
        ledger: &mut Ledger,
        timeout: Duration,
    ) -> Result<String, ProviderError> {
        let id = self.id(kind, name);
        let url = self.arm.url(&id, kind_path(kind).1);
        let action = format!("create {kind} {name}");
        let a = self
            .arm
            .send(http::Method::PUT, &url, Some(body), &action, true)
            .await?;
        if !(200..300).contains(&a.status) {
            return Err(arm_error(&action, a.status, &a.body, &a.text));
        }
        ledger.record(Resource {
            kind,
            id: name.to_owned(),
            cluster: cluster.to_owned(),
            created: Some(now() as u64),
        });
        self.arm.follow(a, &url, &action, timeout, false).await?;
        Ok(id)
    }

    async fn delete_one(&self, r: &Resource, timeout: Duration) -> Result<(), ProviderError> {
        let id = self.id(r.kind, &r.id);
        let url = self.arm.url(&id, kind_path(r.kind).1);
        let action = format!("delete {} {}", r.kind, r.id);
        let a = self
            .arm
            .send(http::Method::DELETE, &url, None, &action, true)
            .await?;
        match a.status {
            404 | 204 => Ok(()),
            200..=299 => self.arm.follow(a, &url, &action, timeout, true).await,
            s => Err(arm_error(&action, s, &a.body, &a.text)),
        }
    }

    fn tags(&self, cluster: &str, role: Role, group: Option<&str>) -> Value {
        let mut t = json!({
            TAG_CLUSTER: cluster,
            TAG_ROLE: role.as_str(),
            TAG_CREATED: (now() as u64).to_string(),
        });
        if let Some(g) = group {
            t[TAG_GROUP] = json!(g);
        }
        t
    }

    /// The cluster's network security group: the scheduler's ports open to its ingress networks.
    async fn prepare_nsg(
        &self,
        cluster: &CloudCluster,
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        let mut rules = Vec::new();
        if !cluster.scheduler.ingress_cidrs.is_empty() {
            rules.push(json!({
                "name": "rask-scheduler-ingress",
                "properties": {
                    "priority": 100,
                    "direction": "Inbound",
                    "access": "Allow",
                    "protocol": "Tcp",
                    "sourceAddressPrefixes": cluster.scheduler.ingress_cidrs,
                    "sourcePortRange": "*",
                    "destinationAddressPrefix": "*",
                    "destinationPortRange": "8786-8787",
                }
            }));
        }
        // Azure's default rules already allow traffic within the virtual network and deny the
        // internet: only the configured networks are added.
        let body = json!({
            "location": self.settings.location,
            "tags": self.tags(&cluster.name, Role::Network, None),
            "properties": {"securityRules": rules},
        });
        let name = format!("rask-{}-nsg", cluster.name);
        self.put(
            NSG,
            &name,
            &body,
            &cluster.name,
            ledger,
            cluster.timeouts.scheduler,
        )
        .await?;
        Ok(())
    }

    /// The cluster's Key Vault's name.
    fn vault_name(&self, cluster: &str) -> String {
        secrets::key_vault_name(
            &self.settings.subscription_id,
            &self.settings.resource_group,
            cluster,
        )
    }

    /// The identity the VMs read the vault with, then the vault: secrets readable (`get`) by
    /// that identity, and writable by whoever runs `up` (the ARM token's object id).
    async fn prepare_vault(
        &self,
        cluster: &CloudCluster,
        identity_id: &str,
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        let s = &self.settings;
        let timeout = cluster.timeouts.scheduler;
        let (tenant, operator) = self.arm.principal().await?;
        let tags = json!({
            TAG_CLUSTER: cluster.name,
            TAG_ROLE: "secrets",
            TAG_CREATED: (now() as u64).to_string(),
        });
        let identity = secrets::tls_identity_name(&cluster.name);
        let body = json!({"location": s.location, "tags": tags});
        self.put(IDENTITY, &identity, &body, &cluster.name, ledger, timeout)
            .await?;
        let action = format!("read {IDENTITY} {identity}");
        let made = self
            .arm
            .get(&self.id(IDENTITY, &identity), IDENTITY_API, &action)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("{action}: it vanished")))?;
        let principal = made["properties"]["principalId"]
            .as_str()
            .ok_or_else(|| {
                ProviderError::Other(format!(
                    "{action}: ARM gave no principalId for {identity_id}"
                ))
            })?
            .to_owned();
        let name = self.vault_name(&cluster.name);
        let body = json!({
            "location": s.location,
            "tags": tags,
            "properties": {
                "tenantId": tenant,
                "sku": {"family": "A", "name": "standard"},
                // Access policies, not Azure RBAC: granting a role needs more than Contributor.
                "enableRbacAuthorization": false,
                // The shortest retention, should a purge ever fail.
                "softDeleteRetentionInDays": 7,
                "accessPolicies": [
                    {
                        "tenantId": tenant,
                        "objectId": operator,
                        // delete and purge: `down` purges the secrets one by one first.
                        "permissions": {"secrets": ["get", "set", "delete", "purge"]},
                    },
                    {
                        "tenantId": tenant,
                        "objectId": principal,
                        "permissions": {"secrets": ["get"]},
                    },
                ],
            },
        });
        self.put(KEY_VAULT, &name, &body, &cluster.name, ledger, timeout)
            .await
            .map_err(|e| match e {
                ProviderError::Api { code, message, .. } if code == "ConflictError" => {
                    ProviderError::Api {
                        provider: PROVIDER,
                        action: format!("create {KEY_VAULT} {name}"),
                        code,
                        message: format!(
                            "{message} (Key Vault keeps a deleted vault's name for its retention \
                             period: `rask-operator sweep` purges this cluster's, `az keyvault \
                             purge --name {name}` any other)"
                        ),
                    }
                }
                other => other,
            })?;
        Ok(())
    }

    /// Deletes and purges the vault's secrets, best effort: whoever runs `down` may not be in
    /// the vault's access policies, or the vault may not answer; the vault's purge takes them
    /// along anyway where it is allowed.
    async fn purge_secrets(&self, name: &str, uri: &str, timeout: Duration) -> bool {
        let vault = match vault::Vault::connect(
            uri,
            self.arm.token_credential(),
            self.arm.client_options(),
        ) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(vault = name, error = %e, "cannot reach the Key Vault's secrets");
                return false;
            }
        };
        let wait = timeout.min(Duration::from_secs(30));
        for file in secrets::all_files() {
            if let Err(e) = vault
                .delete_and_purge(&secrets::secret_name(&file), wait)
                .await
            {
                tracing::warn!(
                    vault = name,
                    error = %e,
                    "could not delete and purge the vault's secrets one by one; purging the vault"
                );
                return false;
            }
        }
        true
    }

    /// Deletes the cluster's vault (Key Vault keeps it, soft-deleted), then purges it; its
    /// secrets are deleted and purged first.
    async fn delete_vault(&self, name: &str, timeout: Duration) -> Result<(), ProviderError> {
        let action = format!("read {KEY_VAULT} {name}");
        let found = self
            .arm
            .get(&self.id(KEY_VAULT, name), KEYVAULT_API, &action)
            .await?;
        let mut secrets_purged = false;
        if let Some(uri) = found
            .as_ref()
            .and_then(|v| v["properties"]["vaultUri"].as_str())
        {
            secrets_purged = self.purge_secrets(name, uri, timeout).await;
        }
        let location = found
            .and_then(|v| v["location"].as_str().map(str::to_owned))
            .unwrap_or_else(|| self.settings.location.clone());
        let r = Resource {
            kind: KEY_VAULT,
            id: name.to_owned(),
            cluster: String::new(),
            created: None,
        };
        self.delete_one(&r, timeout).await?;
        match self.purge_vault(&location, name, timeout).await {
            // The keys are gone; only the empty vault's name stays taken until its retention
            // ends (purging a deleted vault is a right on the subscription).
            Err(ProviderError::Unauthorized { message, .. }) if secrets_purged => {
                tracing::warn!(
                    vault = name,
                    %location,
                    reason = %message,
                    "the Key Vault's secrets are purged, but the deleted vault may not be: its \
                     name stays taken for its retention period (7 days)"
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Purges the deleted vault `name`: its secrets and its name are gone for good.
    async fn purge_vault(
        &self,
        location: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<(), ProviderError> {
        let deleted = format!(
            "/subscriptions/{}/providers/Microsoft.KeyVault/locations/{location}/deletedVaults/{name}",
            self.settings.subscription_id
        );
        let url = format!(
            "{}{deleted}/purge?api-version={KEYVAULT_API}",
            self.arm.base()
        );
        let action = format!("purge deleted {KEY_VAULT} {name} in {location}");
        let a = self
            .arm
            .send(http::Method::POST, &url, None, &action, true)
            .await?;
        match a.status {
            // Nothing to purge: never deleted, or purged already.
            404 => Ok(()),
            200 | 204 => Ok(()),
            202 => {
                let watch = self.arm.url(&deleted, KEYVAULT_API);
                self.arm.follow(a, &watch, &action, timeout, true).await
            }
            s => Err(arm_error(&action, s, &a.body, &a.text)),
        }
    }

    /// Vaults of ours in this resource group that were deleted but not purged.
    async fn deleted_vaults(&self, cluster: Option<&str>) -> Result<Vec<Resource>, ProviderError> {
        let action = format!(
            "list deleted Key Vaults of subscription {}",
            self.settings.subscription_id
        );
        let mut url = self.arm.url(
            &format!(
                "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults",
                self.settings.subscription_id
            ),
            KEYVAULT_API,
        );
        let group = format!("{}/", self.group_path()).to_ascii_lowercase();
        let mut out = Vec::new();
        loop {
            let a = self
                .arm
                .send(http::Method::GET, &url, None, &action, true)
                .await?;
            if a.status == 403 {
                // Deleted vaults are the subscription's: a principal with rights on the resource
                // group alone cannot list them. Then a vault left unpurged goes unseen.
                tracing::warn!(
                    subscription = %self.settings.subscription_id,
                    "cannot list deleted Key Vaults (403): a vault of rask's that was deleted but \
                     not purged would not be found"
                );
                return Ok(Vec::new());
            }
            if a.status != 200 {
                return Err(arm_error(&action, a.status, &a.body, &a.text));
            }
            for v in a.body["value"].as_array().into_iter().flatten() {
                let p = &v["properties"];
                let ours = p["vaultId"]
                    .as_str()
                    .is_some_and(|id| id.to_ascii_lowercase().starts_with(&group));
                let tags = tags_of(p);
                let (Some(c), Some(name), Some(location), true) = (
                    tags.get(TAG_CLUSTER),
                    v["name"].as_str(),
                    p["location"].as_str(),
                    ours,
                ) else {
                    continue;
                };
                if cluster.is_some_and(|want| want != c) {
                    continue;
                }
                out.push(Resource {
                    kind: DELETED_KEY_VAULT,
                    id: format!("{location}/{name}"),
                    cluster: c.clone(),
                    created: tags.get(TAG_CREATED).and_then(|t| t.parse().ok()),
                });
            }
            match a.body.get("nextLink").and_then(Value::as_str) {
                Some(next) => url = next.to_owned(),
                None => return Ok(out),
            }
        }
    }

    /// Deletes one resource of any kind, purging vaults.
    async fn delete_any(&self, r: &Resource, timeout: Duration) -> Result<(), ProviderError> {
        match r.kind {
            KEY_VAULT => self.delete_vault(&r.id, timeout).await,
            DELETED_KEY_VAULT => {
                let (location, name) =
                    r.id.split_once('/')
                        .ok_or_else(|| ProviderError::Other(format!("{r}: not LOCATION/NAME")))?;
                self.purge_vault(location, name, timeout).await
            }
            _ => self.delete_one(r, timeout).await,
        }
    }
}

impl Provider for Azure {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn prepare(
        &self,
        cluster: &CloudCluster,
        ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        if self.settings.security_group.is_none() {
            self.prepare_nsg(cluster, ledger).await?;
        }
        if let Some(SecretStore::AzureKeyVault { identity, .. }) = secrets::store_of(cluster) {
            self.prepare_vault(cluster, &identity, ledger).await?;
        }
        Ok(())
    }

    async fn create_vm(
        &self,
        cluster: &CloudCluster,
        req: &VmRequest,
        ledger: &mut Ledger,
    ) -> Result<Vm, ProviderError> {
        let s = &self.settings;
        let timeout = match req.role {
            Role::Scheduler => cluster.timeouts.scheduler,
            _ => cluster.timeouts.workers,
        };
        let tags = self.tags(&cluster.name, req.role, req.group.as_deref());
        let mut ip_config = json!({
            "subnet": {"id": self.subnet_id()},
            "privateIPAllocationMethod": "Dynamic",
        });
        if req.public_ip {
            let body = json!({
                "location": s.location,
                "tags": tags,
                "sku": {"name": "Standard"},
                "properties": {"publicIPAllocationMethod": "Static"},
            });
            let ip = self
                .put(
                    PUBLIC_IP,
                    &format!("{}-ip", req.name),
                    &body,
                    &cluster.name,
                    ledger,
                    timeout,
                )
                .await?;
            ip_config["publicIPAddress"] =
                json!({"id": ip, "properties": {"deleteOption": "Delete"}});
        }
        let nsg = match &s.security_group {
            Some(g) if g.starts_with("/subscriptions/") => g.clone(),
            Some(g) => self.id(NSG, g),
            None => self.id(NSG, &format!("rask-{}-nsg", cluster.name)),
        };
        let body = json!({
            "location": s.location,
            "tags": tags,
            "properties": {
                "ipConfigurations": [{"name": "ipconfig1", "properties": ip_config}],
                "networkSecurityGroup": {"id": nsg},
            },
        });
        let nic = self
            .put(
                NIC,
                &format!("{}-nic", req.name),
                &body,
                &cluster.name,
                ledger,
                timeout,
            )
            .await?;
        let mut properties = json!({
            "hardwareProfile": {"vmSize": req.size},
            "storageProfile": {
                "imageReference": {
                    "publisher": s.vm_image.publisher,
                    "offer": s.vm_image.offer,
                    "sku": s.vm_image.sku,
                    "version": s.vm_image.version,
                },
                "osDisk": {
                    "name": format!("{}-osdisk", req.name),
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "diskSizeGB": s.disk_size,
                    "managedDisk": {"storageAccountType": "StandardSSD_LRS"},
                },
            },
            "osProfile": {
                "computerName": req.name,
                "adminUsername": s.admin_username,
                "customData": base64::engine::general_purpose::STANDARD.encode(&req.user_data),
                "linuxConfiguration": {
                    "disablePasswordAuthentication": true,
                    "ssh": {"publicKeys": [{
                        "path": format!("/home/{}/.ssh/authorized_keys", s.admin_username),
                        "keyData": s.ssh_public_key,
                    }]},
                },
            },
            "networkProfile": {"networkInterfaces": [
                {"id": nic, "properties": {"primary": true, "deleteOption": "Delete"}}
            ]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": true}},
        });
        if req.spot {
            properties["priority"] = json!("Spot");
            properties["evictionPolicy"] = json!("Delete");
            properties["billingProfile"] = json!({"maxPrice": -1});
        }
        let mut body = json!({
            "location": s.location,
            "tags": tags,
            "properties": properties,
        });
        let mut identities = serde_json::Map::new();
        if let (Some(identity), Role::Scheduler) = (&s.identity, req.role) {
            // The autoscaler on the scheduler VM creates and deletes workers as this identity.
            identities.insert(identity.clone(), json!({}));
        }
        if let Some(SecretStore::AzureKeyVault { identity, .. }) = secrets::store_of(cluster) {
            // Every VM reads its files from the cluster's vault as this one.
            identities.insert(identity, json!({}));
        }
        if !identities.is_empty() {
            body["identity"] = json!({
                "type": "UserAssigned",
                "userAssignedIdentities": identities,
            });
        }
        let action = format!("create virtual-machine {} ({})", req.name, req.size);
        self.put(VM, &req.name, &body, &cluster.name, ledger, timeout)
            .await
            .map_err(|e| match e {
                ProviderError::Capacity {
                    provider,
                    code,
                    message,
                    ..
                } => ProviderError::Capacity {
                    provider,
                    action: action.clone(),
                    what: format!(
                        "{}{} in {}",
                        if req.spot { "spot " } else { "" },
                        req.size,
                        s.location
                    ),
                    code,
                    message,
                },
                other => other,
            })?;
        self.list_vms(&cluster.name)
            .await?
            .into_iter()
            .find(|v| v.name == req.name)
            .ok_or_else(|| {
                ProviderError::Other(format!("VM {} vanished after its creation", req.name))
            })
    }

    async fn list_vms(&self, cluster: &str) -> Result<Vec<Vm>, ProviderError> {
        let vms = self.list(VM).await?;
        let mut nics: BTreeMap<String, (Option<String>, Option<String>)> = BTreeMap::new();
        for n in self.list(NIC).await? {
            let id = n["id"].as_str().unwrap_or_default().to_ascii_lowercase();
            let ipc = &n["properties"]["ipConfigurations"][0]["properties"];
            nics.insert(
                id,
                (
                    ipc["privateIPAddress"].as_str().map(str::to_owned),
                    ipc["publicIPAddress"]["id"]
                        .as_str()
                        .map(|s| s.to_ascii_lowercase()),
                ),
            );
        }
        let public: BTreeMap<String, String> = if nics.values().any(|(_, p)| p.is_some()) {
            self.list(PUBLIC_IP)
                .await?
                .into_iter()
                .filter_map(|p| {
                    Some((
                        p["id"].as_str()?.to_ascii_lowercase(),
                        p["properties"]["ipAddress"].as_str()?.to_owned(),
                    ))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Ok(vms
            .iter()
            .filter_map(|v| {
                let tags = tags_of(v);
                if tags.get(TAG_CLUSTER).map(String::as_str) != Some(cluster) {
                    return None;
                }
                let role = Role::parse(tags.get(TAG_ROLE)?)?;
                let name = v["name"].as_str()?.to_owned();
                let state = match v["properties"]["provisioningState"].as_str() {
                    Some("Succeeded") => VmState::Running,
                    Some("Deleting") => VmState::Stopping,
                    Some("Failed") => VmState::Failed("provisioningState Failed".into()),
                    _ => VmState::Pending,
                };
                let nic = v["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
                    .as_str()
                    .map(str::to_ascii_lowercase);
                let (private_ip, pip) = nic.and_then(|n| nics.get(&n).cloned()).unwrap_or_default();
                Some(Vm {
                    id: name.clone(),
                    name,
                    cluster: cluster.to_owned(),
                    role,
                    group: tags.get(TAG_GROUP).cloned(),
                    state,
                    private_ip,
                    public_ip: pip.and_then(|p| public.get(&p).cloned()),
                    created: tags
                        .get(TAG_CREATED)
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0.0),
                    ready: tags.get(TAG_READY).map(String::as_str) == Some("true"),
                })
            })
            .collect())
    }

    async fn tagged(&self, cluster: Option<&str>) -> Result<Vec<Resource>, ProviderError> {
        let mut out = Vec::new();
        for kind in [VM, NIC, PUBLIC_IP, NSG, KEY_VAULT, IDENTITY] {
            for r in self.list(kind).await? {
                let tags = tags_of(&r);
                let Some(c) = tags.get(TAG_CLUSTER) else {
                    continue;
                };
                if cluster.is_some_and(|want| want != c) {
                    continue;
                }
                if let Some(name) = r["name"].as_str() {
                    out.push(Resource {
                        kind,
                        id: name.to_owned(),
                        cluster: c.clone(),
                        created: tags.get(TAG_CREATED).and_then(|t| t.parse().ok()),
                    });
                }
            }
        }
        out.extend(self.deleted_vaults(cluster).await?);
        Ok(out)
    }

    async fn delete(&self, resources: &[Resource], timeout: Duration) -> Result<(), ProviderError> {
        let start = Instant::now();
        // VMs first, all at once (each takes their NIC, IP and disk along), then what is left;
        // the vault (deleted, then purged) and the identity that reads it last.
        for batch in [
            resources
                .iter()
                .filter(|r| r.kind == VM)
                .collect::<Vec<_>>(),
            resources.iter().filter(|r| r.kind == NIC).collect(),
            resources.iter().filter(|r| r.kind == PUBLIC_IP).collect(),
            resources.iter().filter(|r| r.kind == NSG).collect(),
            resources
                .iter()
                .filter(|r| r.kind == KEY_VAULT || r.kind == DELETED_KEY_VAULT)
                .collect(),
            resources.iter().filter(|r| r.kind == IDENTITY).collect(),
        ] {
            let left = timeout.saturating_sub(start.elapsed());
            let results =
                futures::future::join_all(batch.iter().map(|r| self.delete_any(r, left))).await;
            for r in results {
                r?;
            }
        }
        Ok(())
    }

    async fn boot_log(&self, vm: &Vm) -> Result<String, ProviderError> {
        let id = self.id(VM, &vm.name);
        let action = format!("retrieveBootDiagnosticsData {}", vm.name);
        let url = format!(
            "{}{id}/retrieveBootDiagnosticsData?api-version={COMPUTE_API}",
            self.arm.base()
        );
        let a = self
            .arm
            .send(http::Method::POST, &url, Some(&json!({})), &action, true)
            .await?;
        if a.status != 200 {
            return Err(arm_error(&action, a.status, &a.body, &a.text));
        }
        let Some(blob) = a.body["serialConsoleLogBlobUri"].as_str() else {
            return Ok(String::new());
        };
        // A SAS URL: no ARM token.
        let log = self
            .arm
            .send(
                http::Method::GET,
                blob,
                None,
                &format!("read the serial log of {}", vm.name),
                false,
            )
            .await?;
        if log.status != 200 {
            return Err(arm_error(&action, log.status, &log.body, &log.text));
        }
        Ok(log.text)
    }

    async fn store_tls(
        &self,
        cluster: &CloudCluster,
        files: &[(String, String)],
        _ledger: &mut Ledger,
    ) -> Result<(), ProviderError> {
        // The vault is in the ledger since `prepare`: deleting it takes the secrets along.
        let name = self.vault_name(&cluster.name);
        let action = format!("read {KEY_VAULT} {name}");
        let v = self
            .arm
            .get(&self.id(KEY_VAULT, &name), KEYVAULT_API, &action)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("{action}: it does not exist")))?;
        let url = v["properties"]["vaultUri"].as_str().ok_or_else(|| {
            ProviderError::Other(format!("{action}: ARM gave no properties.vaultUri"))
        })?;
        let vault =
            vault::Vault::connect(url, self.arm.token_credential(), self.arm.client_options())?;
        let tags =
            std::collections::HashMap::from([(TAG_CLUSTER.to_owned(), cluster.name.clone())]);
        for (file, text) in files {
            vault
                .set(&secrets::secret_name(file), text, tags.clone())
                .await?;
        }
        Ok(())
    }

    async fn mark_ready(&self, vm: &Vm) -> Result<(), ProviderError> {
        let id = self.id(VM, &vm.name);
        let action = format!("tag virtual-machine {} ready", vm.name);
        let current = self
            .arm
            .get(&id, COMPUTE_API, &action)
            .await?
            .ok_or_else(|| ProviderError::Other(format!("VM {} vanished", vm.name)))?;
        let mut tags = current.get("tags").cloned().unwrap_or_else(|| json!({}));
        tags[TAG_READY] = json!("true");
        let url = self.arm.url(&id, COMPUTE_API);
        let a = self
            .arm
            .send(
                http::Method::PATCH,
                &url,
                Some(&json!({"tags": tags})),
                &action,
                true,
            )
            .await?;
        if !(200..300).contains(&a.status) {
            return Err(arm_error(&action, a.status, &a.body, &a.text));
        }
        self.arm
            .follow(a, &url, &action, Duration::from_secs(300), false)
            .await
    }

    fn vm_resource(&self, vm: &Vm) -> Resource {
        Resource {
            kind: VM,
            id: vm.name.clone(),
            cluster: vm.cluster.clone(),
            created: Some(vm.created as u64),
        }
    }
}
