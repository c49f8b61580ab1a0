//! Azure as a cloud [`Provider`], talking Azure Resource Manager's REST API directly over the
//! operator's hyper client (see `docs/cloud.md` for why not `azure_mgmt_compute`). Per VM: a NIC,
//! a public IP for the scheduler only (when `public_ingress`), and the VM with custom data, boot
//! diagnostics, tags and `deleteOption: Delete` on its OS disk, NIC and IP, so one VM delete
//! removes them all. Spot workers have eviction policy Delete: an evicted VM is never left
//! stopped and billed. Long-running operations are followed through `Azure-AsyncOperation`,
//! `Location` or the resource's `provisioningState`, each with a timeout; 429 and 503 answers are
//! retried after `Retry-After`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::cloud::{
    Ledger, Provider, Resource, Role, TAG_CLUSTER, TAG_CREATED, TAG_GROUP, TAG_READY, TAG_ROLE, Vm,
    VmRequest, VmState,
};
use crate::clock::now;
use crate::cloud::CloudError;
use crate::cloud::config::{AzureSettings, CloudCluster, ProviderSettings};

const PROVIDER: &str = "azure";
const COMPUTE_API: &str = "2024-07-01";
const NETWORK_API: &str = "2024-05-01";
const VM: &str = "virtual-machine";
const NIC: &str = "network-interface";
const PUBLIC_IP: &str = "public-ip";
const NSG: &str = "network-security-group";
/// Answers of 429/503 retried before giving up.
const RETRIES: u32 = 4;
const ARM: &str = "https://management.azure.com";

/// How to reach ARM besides the config: tests point it at a local stub with a fixed token.
#[derive(Clone, Debug, Default)]
pub struct AzureOptions {
    /// ARM's base URL (default `https://management.azure.com`).
    pub endpoint: Option<String>,
    /// A bearer token to use as is; default: `AZURE_CLIENT_ID`/`AZURE_CLIENT_SECRET`/
    /// `AZURE_TENANT_ID` (client credentials), else the Azure CLI's, else the VM's managed identity.
    pub token: Option<String>,
    /// Between polls of a long-running operation when ARM gives no `Retry-After` (default 2 s).
    pub poll: Option<Duration>,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

pub struct Arm {
    http: Client<Https, Full<Bytes>>,
    base: String,
    settings: AzureSettings,
    opts: AzureOptions,
    token: Mutex<Option<(String, Instant)>>,
    poll: Duration,
}

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

fn kind_path(kind: &str) -> (&'static str, &'static str) {
    match kind {
        VM => ("Microsoft.Compute/virtualMachines", COMPUTE_API),
        NIC => ("Microsoft.Network/networkInterfaces", NETWORK_API),
        PUBLIC_IP => ("Microsoft.Network/publicIPAddresses", NETWORK_API),
        _ => ("Microsoft.Network/networkSecurityGroups", NETWORK_API),
    }
}

fn arm_error(action: &str, status: u16, body: &Value, text: &str) -> CloudError {
    let err = body.get("error").unwrap_or(body);
    let code = err
        .get("code")
        .and_then(Value::as_str)
        .unwrap_or(if status == 0 { "Unknown" } else { "HttpError" })
        .to_owned();
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            )
        });
    let action = action.to_owned();
    match code.as_str() {
        "TooManyRequests" | "ThrottlingException" | "SubscriptionRequestsThrottled" => {
            CloudError::Throttled {
                provider: PROVIDER,
                action,
                code,
                message,
            }
        }
        "SkuNotAvailable"
        | "AllocationFailed"
        | "ZonalAllocationFailed"
        | "OverconstrainedAllocationRequest"
        | "OverconstrainedZonalAllocationRequest"
        | "QuotaExceeded"
        | "OperationNotAllowed" => CloudError::Capacity {
            provider: PROVIDER,
            action,
            what: String::new(),
            code,
            message,
        },
        "AuthorizationFailed"
        | "InvalidAuthenticationToken"
        | "AuthenticationFailed"
        | "ExpiredAuthenticationToken" => CloudError::Unauthorized {
            provider: PROVIDER,
            action,
            code,
            message,
        },
        _ => CloudError::Api {
            provider: PROVIDER,
            action,
            code,
            message,
        },
    }
}

fn retry_after(headers: &http::HeaderMap, default: Duration) -> Duration {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|s| Duration::from_secs(s.min(60)))
        .unwrap_or(default)
}

fn header(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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

impl Arm {
    pub fn connect(cluster: &CloudCluster, opts: &AzureOptions) -> Result<Arm, CloudError> {
        let ProviderSettings::Azure(settings) = &cluster.provider else {
            return Err(CloudError::Other(format!(
                "cluster {} is not an azure cluster",
                cluster.name
            )));
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                CloudError::Other(format!("cannot load the system's CA certificates: {e}"))
            })?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Arm {
            http: Client::builder(TokioExecutor::new()).build(https),
            base: opts
                .endpoint
                .clone()
                .unwrap_or_else(|| ARM.into())
                .trim_end_matches('/')
                .to_owned(),
            settings: settings.clone(),
            poll: opts.poll.unwrap_or(Duration::from_secs(2)),
            opts: opts.clone(),
            token: Mutex::new(None),
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

    fn url(&self, id: &str, api: &str) -> String {
        format!("{}{id}?api-version={api}", self.base)
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

    async fn token(&self) -> Result<String, CloudError> {
        if let Some(t) = &self.opts.token {
            return Ok(t.clone());
        }
        if let Some((t, until)) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
            && Instant::now() < until
        {
            return Ok(t);
        }
        let (token, lifetime) = fetch_token().await?;
        let until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(300));
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), until));
        Ok(token)
    }

    /// One request, retried on 429/503 after `Retry-After`.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        body: Option<&Value>,
        action: &str,
        auth: bool,
    ) -> Result<Answer, CloudError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(url)
                .header("content-type", "application/json");
            if auth {
                req = req.header("authorization", format!("Bearer {}", self.token().await?));
            }
            let payload = body.map(Value::to_string).unwrap_or_default();
            let req = req
                .body(Full::new(Bytes::from(payload)))
                .map_err(|e| CloudError::Other(format!("{action}: bad request: {e}")))?;
            let unreachable = |reason: String| CloudError::Unreachable {
                provider: PROVIDER,
                action: action.to_owned(),
                endpoint: self.base.clone(),
                reason,
            };
            let resp = tokio::time::timeout(Duration::from_secs(60), self.http.request(req))
                .await
                .map_err(|_| unreachable("no answer within 60s".into()))?
                .map_err(|e| unreachable(format!("{e:?}")))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect())
                .await
                .map_err(|_| unreachable("body not received in time".into()))?
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if (status == 429 || status == 503) && attempt <= RETRIES {
                tokio::time::sleep(retry_after(&headers, self.poll)).await;
                continue;
            }
            if status == 429 {
                let mut e = arm_error(action, status, &body, &text);
                if !matches!(e, CloudError::Throttled { .. }) {
                    e = CloudError::Throttled {
                        provider: PROVIDER,
                        action: action.to_owned(),
                        code: "TooManyRequests".into(),
                        message: text.chars().take(300).collect(),
                    };
                }
                return Err(e);
            }
            return Ok(Answer {
                status,
                headers,
                body,
                text,
            });
        }
    }

    async fn get(&self, id: &str, api: &str, action: &str) -> Result<Option<Value>, CloudError> {
        let a = self
            .send(http::Method::GET, &self.url(id, api), None, action, true)
            .await?;
        match a.status {
            200 => Ok(Some(a.body)),
            404 => Ok(None),
            s => Err(arm_error(action, s, &a.body, &a.text)),
        }
    }

    /// Every resource of a type in the resource group (following `nextLink`).
    async fn list(&self, kind: &str) -> Result<Vec<Value>, CloudError> {
        let (path, api) = kind_path(kind);
        let action = format!("list {path} in {}", self.settings.resource_group);
        let mut url = self.url(&format!("{}/providers/{path}", self.group_path()), api);
        let mut out = Vec::new();
        loop {
            let a = self
                .send(http::Method::GET, &url, None, &action, true)
                .await?;
            if a.status == 404 {
                return Err(CloudError::Config {
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
    async fn follow(
        &self,
        first: Answer,
        resource_url: &str,
        action: &str,
        timeout: Duration,
        deleting: bool,
    ) -> Result<(), CloudError> {
        let start = Instant::now();
        let timed_out = || CloudError::Timeout {
            what: format!("{action} finishing"),
            after: timeout,
            boot_log: None,
        };
        if let Some(op) = header(&first.headers, "azure-asyncoperation") {
            let mut wait = retry_after(&first.headers, self.poll);
            loop {
                if start.elapsed() > timeout {
                    return Err(timed_out());
                }
                tokio::time::sleep(wait).await;
                let a = self
                    .send(http::Method::GET, &op, None, action, true)
                    .await?;
                if a.status != 200 {
                    return Err(arm_error(action, a.status, &a.body, &a.text));
                }
                match a.body.get("status").and_then(Value::as_str) {
                    Some("Succeeded") => return Ok(()),
                    Some("Failed" | "Canceled") => {
                        return Err(arm_error(action, a.status, &a.body, &a.text));
                    }
                    _ => wait = retry_after(&a.headers, self.poll),
                }
            }
        }
        if first.status == 202
            && let Some(loc) = header(&first.headers, "location")
        {
            let mut wait = retry_after(&first.headers, self.poll);
            loop {
                if start.elapsed() > timeout {
                    return Err(timed_out());
                }
                tokio::time::sleep(wait).await;
                let a = self
                    .send(http::Method::GET, &loc, None, action, true)
                    .await?;
                match a.status {
                    202 => wait = retry_after(&a.headers, self.poll),
                    200..=299 => return Ok(()),
                    404 if deleting => return Ok(()),
                    s => return Err(arm_error(action, s, &a.body, &a.text)),
                }
            }
        }
        // No operation to follow: watch the resource itself.
        loop {
            let a = self
                .send(http::Method::GET, resource_url, None, action, true)
                .await?;
            match (a.status, deleting) {
                (404, true) => return Ok(()),
                (200, false) => match a.body["properties"]["provisioningState"].as_str() {
                    Some("Succeeded") | None => return Ok(()),
                    Some("Failed" | "Canceled") => {
                        return Err(CloudError::Api {
                            provider: PROVIDER,
                            action: action.to_owned(),
                            code: "ProvisioningFailed".into(),
                            message: format!(
                                "provisioningState is {}",
                                a.body["properties"]["provisioningState"]
                            ),
                        });
                    }
                    _ => {}
                },
                (200, true) => {}
                (s, _) => return Err(arm_error(action, s, &a.body, &a.text)),
            }
            if start.elapsed() > timeout {
                return Err(timed_out());
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// PUTs a resource, records it in the ledger once ARM accepted it, and follows the operation.
    async fn put(
        &self,
        kind: &'static str,
        name: &str,
        body: &Value,
        cluster: &str,
        ledger: &mut Ledger,
        timeout: Duration,
    ) -> Result<String, CloudError> {
        let id = self.id(kind, name);
        let url = self.url(&id, kind_path(kind).1);
        let action = format!("create {kind} {name}");
        let a = self
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
        self.follow(a, &url, &action, timeout, false).await?;
        Ok(id)
    }

    async fn delete_one(&self, r: &Resource, timeout: Duration) -> Result<(), CloudError> {
        let id = self.id(r.kind, &r.id);
        let url = self.url(&id, kind_path(r.kind).1);
        let action = format!("delete {} {}", r.kind, r.id);
        let a = self
            .send(http::Method::DELETE, &url, None, &action, true)
            .await?;
        match a.status {
            404 | 204 => Ok(()),
            200..=299 => self.follow(a, &url, &action, timeout, true).await,
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
}

/// A token for ARM: client credentials from the environment, else the Azure CLI's, else the
/// VM's managed identity (what the autoscaler on the scheduler VM uses).
async fn fetch_token() -> Result<(String, Duration), CloudError> {
    let fail = |how: &str, e: String| CloudError::Unauthorized {
        provider: PROVIDER,
        action: format!("get a token ({how})"),
        code: "NoCredentials".into(),
        message: e,
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let (Some(tenant), Some(client), Some(secret)) = (
        env("AZURE_TENANT_ID"),
        env("AZURE_CLIENT_ID"),
        env("AZURE_CLIENT_SECRET"),
    ) {
        let form = format!(
            "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
            form_escape(&client),
            form_escape(&secret),
            form_escape("https://management.azure.com/.default")
        );
        let url = format!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
        let body = post_form(&url, form)
            .await
            .map_err(|e| fail("AZURE_CLIENT_SECRET", e))?;
        return token_from(&body).ok_or_else(|| fail("AZURE_CLIENT_SECRET", body.to_string()));
    }
    let cli = tokio::process::Command::new("az")
        .args([
            "account",
            "get-access-token",
            "--resource",
            "https://management.azure.com/",
            "--output",
            "json",
        ])
        .output()
        .await;
    if let Ok(out) = cli
        && out.status.success()
        && let Ok(v) = serde_json::from_slice::<Value>(&out.stdout)
        && let Some(t) = v.get("accessToken").and_then(Value::as_str)
    {
        return Ok((t.to_owned(), Duration::from_secs(1800)));
    }
    // Managed identity through the instance metadata service (only on an Azure VM).
    let url = "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F";
    let http: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build({
        let mut c = HttpConnector::new();
        c.set_connect_timeout(Some(Duration::from_secs(2)));
        c
    });
    let req = http::Request::get(url)
        .header("Metadata", "true")
        .body(Full::new(Bytes::new()))
        .map_err(|e| fail("managed identity", e.to_string()))?;
    let none = "no AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID, no `az login`, and no managed identity";
    let resp = tokio::time::timeout(Duration::from_secs(5), http.request(req))
        .await
        .map_err(|_| fail("managed identity", none.into()))?
        .map_err(|_| fail("managed identity", none.into()))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| fail("managed identity", e.to_string()))?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    token_from(&v).ok_or_else(|| fail("managed identity", String::from_utf8_lossy(&bytes).into()))
}

fn token_from(v: &Value) -> Option<(String, Duration)> {
    let t = v.get("access_token")?.as_str()?.to_owned();
    let secs = match v.get("expires_in") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .unwrap_or(1800);
    Some((t, Duration::from_secs(secs)))
}

fn form_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_form(url: &str, form: String) -> Result<Value, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(|e| e.to_string())?
        .https_only()
        .enable_http1()
        .build();
    let http: Client<Https, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = http::Request::post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(form)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), http.request(req))
        .await
        .map_err(|_| format!("{url}: no answer within 30s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))
}

impl Provider for Arm {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn prepare(&self, cluster: &CloudCluster, ledger: &mut Ledger) -> Result<(), CloudError> {
        if self.settings.security_group.is_some() {
            return Ok(());
        }
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

    async fn create_vm(
        &self,
        cluster: &CloudCluster,
        req: &VmRequest,
        ledger: &mut Ledger,
    ) -> Result<Vm, CloudError> {
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
        if let (Some(identity), Role::Scheduler) = (&s.identity, req.role) {
            // The autoscaler on the scheduler VM creates and deletes workers as this identity.
            body["identity"] = json!({
                "type": "UserAssigned",
                "userAssignedIdentities": {identity: {}},
            });
        }
        let action = format!("create virtual-machine {} ({})", req.name, req.size);
        self.put(VM, &req.name, &body, &cluster.name, ledger, timeout)
            .await
            .map_err(|e| match e {
                CloudError::Capacity {
                    provider,
                    code,
                    message,
                    ..
                } => CloudError::Capacity {
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
                CloudError::Other(format!("VM {} vanished after its creation", req.name))
            })
    }

    async fn list_vms(&self, cluster: &str) -> Result<Vec<Vm>, CloudError> {
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

    async fn tagged(&self, cluster: Option<&str>) -> Result<Vec<Resource>, CloudError> {
        let mut out = Vec::new();
        for kind in [VM, NIC, PUBLIC_IP, NSG] {
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
        Ok(out)
    }

    async fn delete(&self, resources: &[Resource], timeout: Duration) -> Result<(), CloudError> {
        let start = Instant::now();
        // VMs first, all at once (each takes their NIC, IP and disk along), then what is left.
        for batch in [
            resources
                .iter()
                .filter(|r| r.kind == VM)
                .collect::<Vec<_>>(),
            resources.iter().filter(|r| r.kind == NIC).collect(),
            resources.iter().filter(|r| r.kind == PUBLIC_IP).collect(),
            resources.iter().filter(|r| r.kind == NSG).collect(),
        ] {
            let left = timeout.saturating_sub(start.elapsed());
            let results =
                futures::future::join_all(batch.iter().map(|r| self.delete_one(r, left))).await;
            for r in results {
                r?;
            }
        }
        Ok(())
    }

    async fn boot_log(&self, vm: &Vm) -> Result<String, CloudError> {
        let id = self.id(VM, &vm.name);
        let action = format!("retrieveBootDiagnosticsData {}", vm.name);
        let url = format!(
            "{}{id}/retrieveBootDiagnosticsData?api-version={COMPUTE_API}",
            self.base
        );
        let a = self
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

    async fn mark_ready(&self, vm: &Vm) -> Result<(), CloudError> {
        let id = self.id(VM, &vm.name);
        let action = format!("tag virtual-machine {} ready", vm.name);
        let current = self
            .get(&id, COMPUTE_API, &action)
            .await?
            .ok_or_else(|| CloudError::Other(format!("VM {} vanished", vm.name)))?;
        let mut tags = current.get("tags").cloned().unwrap_or_else(|| json!({}));
        tags[TAG_READY] = json!("true");
        let url = self.url(&id, COMPUTE_API);
        let a = self
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
        self.follow(a, &url, &action, Duration::from_secs(300), false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arm_error_codes_become_clear_errors() {
        let body = json!({"error": {"code": "SkuNotAvailable", "message": "Standard_X is not available in westeurope"}});
        let e = arm_error("create virtual-machine w", 409, &body, "");
        assert!(matches!(e, CloudError::Capacity { .. }), "{e}");
        let e = arm_error(
            "list",
            403,
            &json!({"error": {"code": "AuthorizationFailed", "message": "no"}}),
            "",
        );
        assert!(matches!(e, CloudError::Unauthorized { .. }), "{e}");
        let e = arm_error("x", 500, &Value::Null, "<html>oops</html>");
        assert!(e.to_string().contains("HTTP 500: <html>oops</html>"), "{e}");
    }

    #[test]
    fn form_values_are_escaped() {
        assert_eq!(form_escape("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
