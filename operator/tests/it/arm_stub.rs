//! A local stand-in for Azure Resource Manager (none can be installed here): virtual machines,
//! network interfaces, public IPs and network security groups in one resource group, with ARM's
//! long-running-operation protocol — PUT answers 201 with `Azure-AsyncOperation` and the resource
//! `Creating` until the operation has been polled to its end; DELETE answers 202 with `Location`
//! and the resource stays `Deleting` until then. References are checked (a NIC's subnet, IP and
//! NSG; a VM's NIC), deleting a VM removes the NIC and IP marked `deleteOption: Delete`, and a NIC
//! or NSG still in use cannot be deleted. Faults can be injected per request: synchronous errors,
//! operations that end `Failed`, and 429 throttling.
//!
//! It also issues tokens as Azure does, each credential kind its own: Microsoft Entra ID's
//! client-credentials endpoint (`POST /{tenant}/oauth2/v2.0/token`, over HTTPS at `login_url`
//! with a self-signed certificate, `ca`, since `azure_identity` accepts no other authority) and
//! the instance metadata service's managed-identity endpoint
//! (`GET /metadata/identity/oauth2/token`). ARM answers only bearers it issued (or [`TOKEN`]),
//! and records which one each request carried.
//!
//! Key Vault, as Microsoft documents it: `Microsoft.KeyVault/vaults` in ARM (access policies by
//! tenant and object id; DELETE soft-deletes the vault, which then holds its name — a PUT of the
//! same name is `409 ConflictError` — until `POST .../deletedVaults/{name}/purge` removes it for
//! good; `GET .../deletedVaults` lists them, tags included), `Microsoft.ManagedIdentity/
//! userAssignedIdentities` (each with a principal id), and each vault's data plane at
//! `{login_url}/vaults/{name}/` (its `vaultUri`, HTTPS like the real one's): a request without a bearer gets the 401 challenge
//! naming the audience `https://vault.azure.net`; a bearer must be a token the stub issued for
//! that audience (or [`TOKEN`]) and its `oid` must have the permission in an access policy (403
//! `Forbidden` otherwise). Secrets have versions; DELETE soft-deletes one (its name then answers
//! `409 Conflict`, `ObjectIsDeletedButRecoverable`, until `DELETE deletedsecrets/{name}` purges
//! it). Tokens are JWTs (`tid`, `oid`, `aud` claims; not signed) as Entra's are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";
pub const GROUP: &str = "rg-test";
/// The tests' master token: a JWT for [`OPERATOR_OID`] in [`TENANT`], accepted by ARM and by
/// every vault.
pub const TOKEN: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhdWQiOiJodHRwczovL21hbmFnZW1lbnQuYXp1cmUuY29tIiwidGlkIjoiMTExMTExMTEtMjIyMi0zMzMzLTQ0NDQtNTU1NTU1NTU1NTU1Iiwib2lkIjoiYWFhYWFhYWEtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAxIn0.test";
/// The object id [`TOKEN`] names.
pub const OPERATOR_OID: &str = "aaaaaaaa-0000-0000-0000-000000000001";
/// Key Vault's audience.
const VAULT_RESOURCE: &str = "https://vault.azure.net";
/// The service principal Entra knows.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "66666666-7777-8888-9999-000000000000";
pub const CLIENT_SECRET: &str = "s3cret~value.For_the-stub";
/// The tokens each credential kind gets.
pub const SP_TOKEN: &str = "token-from-entra";
pub const MI_TOKEN: &str = "token-from-imds";
pub const CLI_TOKEN: &str = "token-from-az";
/// The service principal's object id, in the Key Vault tokens Entra gives it.
pub const SP_OID: &str = "dddddddd-0000-0000-0000-000000000001";
const ARM_SCOPE: &str = "https://management.azure.com/.default";
/// Polls an operation answers `InProgress` before it ends.
const POLLS: u32 = 2;

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// The request itself fails with this status and ARM error.
    Sync { status: u16, code: &'static str },
    /// The request is accepted; its operation ends `Failed` with this error.
    Async { code: &'static str },
    /// 429 Too Many Requests.
    Throttle,
}

#[derive(Clone, Debug)]
pub struct Fault {
    pub method: &'static str,
    /// A substring of the path (`/virtualMachines/demo-default`).
    pub path: &'static str,
    /// Matching requests let through first.
    pub after: usize,
    pub kind: FaultKind,
    pub message: &'static str,
}

enum Done {
    Provisioned(String),
    Deleted(String),
    /// A deleted vault's purge, by name.
    Purged(String),
}

/// One vault's secrets: name → versions (newest last), and the soft-deleted ones.
#[derive(Default)]
struct VaultData {
    secrets: BTreeMap<String, Vec<Value>>,
    deleted: BTreeMap<String, Vec<Value>>,
}

struct Op {
    left: u32,
    error: Option<(String, String)>,
    done: Done,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, Value>,
    ops: BTreeMap<String, Op>,
    faults: Vec<(Fault, usize)>,
    next: u64,
    polls: usize,
    requests: Vec<String>,
    /// The bearer token of each ARM request.
    bearers: Vec<String>,
    /// Soft-deleted vaults by name (lowercase): their ARM record.
    deleted_vaults: BTreeMap<String, Value>,
    /// Every vault's secrets by vault name (lowercase), kept while the vault is soft-deleted.
    vault_data: BTreeMap<String, VaultData>,
    /// JWTs issued (so a forged one is refused).
    issued: std::collections::BTreeSet<String>,
    /// Vaults' `vaultUri` instead of the stub's own data plane (an unreachable vault).
    vault_uri: Option<String>,
    /// Data-plane requests that were let in: `METHOD path by OID`.
    vault_access: Vec<String>,
    /// The login endpoint, for vaults' challenges.
    login_url: String,
    /// The query of each request to the metadata service's token endpoint.
    imds_queries: Vec<String>,
}

pub struct ArmStub {
    /// ARM and the instance metadata service (plain HTTP).
    pub url: String,
    /// Entra's login endpoint (HTTPS, certificate `ca`).
    pub login_url: String,
    /// The login endpoint's self-signed certificate (DER), to trust.
    pub ca: Vec<u8>,
    state: Arc<Mutex<State>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for ArmStub {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Serves one connection with [`handle`].
fn serve<S>(stream: S, st: Arc<Mutex<State>>, base: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (st, base) = (st.clone(), base.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes();
                let (status, headers, text) = handle(&st, &base, &parts, &body);
                let mut resp = http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (k, v) in headers {
                    resp = resp.header(k, v);
                }
                Ok::<_, std::convert::Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });
}

fn error(status: u16, code: &str, message: &str) -> (u16, Vec<(&'static str, String)>, String) {
    (
        status,
        vec![],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
}

fn group_prefix() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourcegroups/{GROUP}/providers/").to_ascii_lowercase()
}

impl ArmStub {
    pub async fn start() -> ArmStub {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<State>> = Arc::default();
        let (st, base) = (state.clone(), url.clone());
        let plain = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                serve(stream, st.clone(), base.clone());
            }
        });

        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = key.cert.der().to_vec();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![ca.clone().into()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let login_url = format!("https://{}", listener.local_addr().unwrap());
        state.lock().unwrap().login_url = login_url.clone();
        let (st, base) = (state.clone(), url.clone());
        let login = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, st, base) = (acceptor.clone(), st.clone(), base.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(stream).await {
                        serve(tls, st, base);
                    }
                });
            }
        });
        ArmStub {
            url,
            login_url,
            ca,
            state,
            tasks: vec![plain, login],
        }
    }

    pub fn fault(&self, f: Fault) {
        self.state.lock().unwrap().faults.push((f, 0));
    }

    pub fn clear_faults(&self) {
        self.state.lock().unwrap().faults.clear();
    }

    /// Resources of a type (`virtualMachines`, `networkInterfaces`, ...) tagged with `cluster`.
    pub fn tagged(&self, kind: &str, cluster: &str) -> Vec<Value> {
        let kind = format!("/{}/", kind.to_ascii_lowercase());
        self.state
            .lock()
            .unwrap()
            .resources
            .iter()
            .filter(|(id, _)| id.contains(&kind))
            .filter(|(_, v)| v["tags"]["rask:cluster"] == cluster)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Everything tagged with `cluster`.
    pub fn all_tagged(&self, cluster: &str) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .resources
            .values()
            .filter(|v| v["tags"]["rask:cluster"] == cluster)
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Operation polls answered so far.
    pub fn polls(&self) -> usize {
        self.state.lock().unwrap().polls
    }

    /// Requests seen, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// The bearer token each ARM request carried, in order.
    pub fn bearers(&self) -> Vec<String> {
        self.state.lock().unwrap().bearers.clone()
    }

    /// Vaults get this `vaultUri` (an unreachable one, say) instead of the stub's data plane.
    pub fn set_vault_uri(&self, uri: Option<String>) {
        self.state.lock().unwrap().vault_uri = uri;
    }

    /// Names of the vaults deleted but not purged.
    pub fn deleted_vaults(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .deleted_vaults
            .keys()
            .cloned()
            .collect()
    }

    /// The current secrets of vault `vault` (live or soft-deleted): name → (value, content type,
    /// tags).
    pub fn secrets(&self, vault: &str) -> BTreeMap<String, (String, Value, Value)> {
        let s = self.state.lock().unwrap();
        let Some(d) = s.vault_data.get(&vault.to_ascii_lowercase()) else {
            return BTreeMap::new();
        };
        d.secrets
            .iter()
            .filter_map(|(n, versions)| {
                let v = versions.last()?;
                Some((
                    n.clone(),
                    (
                        v["value"].as_str().unwrap_or_default().to_owned(),
                        v["contentType"].clone(),
                        v["tags"].clone(),
                    ),
                ))
            })
            .collect()
    }

    /// Names of vault `vault`'s soft-deleted secrets (not purged).
    pub fn deleted_secrets(&self, vault: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.vault_data
            .get(&vault.to_ascii_lowercase())
            .map(|d| d.deleted.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The query string of each metadata-service token request.
    pub fn imds_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().imds_queries.clone()
    }

    /// Data-plane requests let in, as `METHOD path by OID`.
    pub fn vault_access(&self) -> Vec<String> {
        self.state.lock().unwrap().vault_access.clone()
    }

    pub fn handle(&self) -> StubHandle {
        StubHandle(self.state.clone())
    }
}

/// A cheap handle for tasks that watch the stub.
#[derive(Clone)]
pub struct StubHandle(Arc<Mutex<State>>);

impl StubHandle {
    /// The cluster's VMs that are provisioned: (name, role, custom data as given, base64).
    pub fn running_vms(&self, cluster: &str) -> Vec<(String, String, String)> {
        self.0
            .lock()
            .unwrap()
            .resources
            .iter()
            .filter(|(id, _)| id.contains("/virtualmachines/"))
            .map(|(_, v)| v)
            .filter(|v| {
                v["tags"]["rask:cluster"] == cluster
                    && v["properties"]["provisioningState"] == "Succeeded"
            })
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_owned(),
                    v["tags"]["rask:role"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    v["properties"]["osProfile"]["customData"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    pub fn running_workers(&self, cluster: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .resources
            .iter()
            .filter(|(id, _)| id.contains("/virtualmachines/"))
            .map(|(_, v)| v)
            .filter(|v| {
                v["tags"]["rask:cluster"] == cluster
                    && v["tags"]["rask:role"] == "worker"
                    && v["properties"]["provisioningState"] == "Succeeded"
            })
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    }
}

type Reply = (u16, Vec<(&'static str, String)>, String);

fn handle(st: &Mutex<State>, base: &str, parts: &http::request::Parts, body: &[u8]) -> Reply {
    let mut s = st.lock().unwrap();
    let path = parts.uri.path().to_owned();
    let method = parts.method.as_str().to_owned();
    s.requests.push(format!("{method} {path}"));
    if let Some(name) = path.strip_prefix("/blobs/") {
        // A SAS URL: no bearer token.
        return (
            200,
            vec![],
            format!("[    0.000000] Linux version 6.8.0-azure\ncloud-init: serial log of {name}\n"),
        );
    }
    if method == "POST" && path.ends_with("/oauth2/v2.0/token") {
        let tenant = path
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or_default();
        return entra_token(&mut s, tenant, body);
    }
    if path == "/metadata/identity/oauth2/token" {
        let query = parts.uri.query().unwrap_or_default().to_owned();
        s.imds_queries.push(query);
        return imds_token(&mut s, parts);
    }
    if let Some(rest) = path.strip_prefix("/vaults/") {
        return vault_plane(&mut s, &method, parts, body, rest);
    }
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let bearer = auth.strip_prefix("Bearer ").unwrap_or_default();
    s.bearers.push(bearer.to_owned());
    if ![TOKEN, SP_TOKEN, MI_TOKEN, CLI_TOKEN].contains(&bearer) {
        return error(
            401,
            "InvalidAuthenticationToken",
            "The access token is invalid.",
        );
    }
    // Injected faults.
    let hit = take_fault(&mut s, &method, &path);
    if let Some(reply) = hit.as_ref().and_then(fault_reply) {
        return reply;
    }
    if let Some(op) = path.strip_prefix("/operations/") {
        return poll(&mut s, op, false);
    }
    if let Some(op) = path.strip_prefix("/locations/") {
        return poll(&mut s, op, true);
    }
    let query = parts.uri.query().unwrap_or_default();
    if !query.contains("api-version=") {
        return error(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter is required.",
        );
    }
    let lower = path.to_ascii_lowercase();
    let kv =
        format!("/subscriptions/{SUBSCRIPTION}/providers/microsoft.keyvault/").to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix(&kv) {
        return deleted_vaults(&mut s, base, &method, rest);
    }
    let Some(rest) = lower.strip_prefix(&group_prefix()) else {
        return error(
            404,
            "ResourceGroupNotFound",
            &format!("Resource group in {path} could not be found."),
        );
    };
    // rest: ns/type[/name[/action]]
    let segs: Vec<&str> = rest.split('/').collect();
    let orig: Vec<&str> = path.rsplit('/').collect();
    let id = |n: usize| lower.split('/').take(n).collect::<Vec<_>>().join("/");
    let prefix_len = group_prefix().split('/').count() - 1;
    match (method.as_str(), segs.len()) {
        ("GET", 2) => {
            let want = format!("{}/{}/", segs[0], segs[1]);
            let items: Vec<Value> = s
                .resources
                .iter()
                .filter(|(k, _)| {
                    k.strip_prefix(&group_prefix())
                        .is_some_and(|r| r.starts_with(&want))
                })
                .map(|(_, v)| v.clone())
                .collect();
            (200, vec![], json!({"value": items}).to_string())
        }
        ("GET", 3) => match s.resources.get(&lower) {
            Some(v) => (200, vec![], v.to_string()),
            None => error(
                404,
                "ResourceNotFound",
                &format!("The Resource '{}' was not found.", orig[0]),
            ),
        },
        ("PUT", 3) => {
            let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
                return error(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid.",
                );
            };
            if v.get("location").and_then(Value::as_str).is_none() {
                return error(
                    400,
                    "LocationRequired",
                    "The location property is required.",
                );
            }
            if let Err(e) = check_refs(&s, segs[1], &v) {
                return error(400, "InvalidResourceReference", &e);
            }
            if segs[1] == "vaults"
                && let Err(reply) = check_vault(&s, orig[0], &v)
            {
                return reply;
            }
            s.next += 1;
            let n = s.next;
            let name = orig[0].to_owned();
            v["id"] = json!(path);
            v["name"] = json!(name);
            v["type"] = json!(format!("{}/{}", segs[0], segs[1]));
            v["properties"]["provisioningState"] = json!("Creating");
            match segs[1] {
                "networkinterfaces" => {
                    v["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"] =
                        json!(format!("10.0.0.{}", n % 250 + 4));
                }
                "publicipaddresses" => {
                    v["properties"]["ipAddress"] = json!(format!("20.1.0.{}", n % 250 + 4));
                }
                "vaults" => {
                    let uri = match &s.vault_uri {
                        Some(u) => u.clone(),
                        // HTTPS: azure_core sends no bearer token over plain HTTP.
                        None => format!("{}/vaults/{}/", s.login_url, name.to_ascii_lowercase()),
                    };
                    v["properties"]["vaultUri"] = json!(uri);
                    v["properties"]["enableSoftDelete"] = json!(true);
                    s.vault_data.entry(name.to_ascii_lowercase()).or_default();
                }
                "userassignedidentities" => {
                    v["properties"]["principalId"] =
                        json!(format!("bbbbbbbb-0000-0000-0000-{n:012}"));
                    v["properties"]["clientId"] = json!(format!("cccccccc-0000-0000-0000-{n:012}"));
                    v["properties"]["tenantId"] = json!(TENANT);
                }
                _ => {}
            }
            let error = match &hit {
                Some(Fault {
                    kind: FaultKind::Async { code },
                    message,
                    ..
                }) => Some((code.to_string(), message.to_string())),
                _ => None,
            };
            s.resources.insert(lower.clone(), v.clone());
            let op = format!("op{n}");
            s.ops.insert(
                op.clone(),
                Op {
                    left: POLLS,
                    error,
                    done: Done::Provisioned(lower.clone()),
                },
            );
            (
                201,
                vec![
                    ("azure-asyncoperation", format!("{base}/operations/{op}")),
                    ("retry-after", "0".into()),
                ],
                v.to_string(),
            )
        }
        ("PATCH", 3) => {
            let Some(v) = s.resources.get_mut(&lower) else {
                return error(404, "ResourceNotFound", "not found");
            };
            let Ok(patch) = serde_json::from_slice::<Value>(body) else {
                return error(400, "InvalidRequestContent", "bad json");
            };
            if let Some(tags) = patch.get("tags") {
                v["tags"] = tags.clone();
            }
            (200, vec![], v.to_string())
        }
        ("DELETE", 3) => {
            if !s.resources.contains_key(&lower) {
                return (204, vec![], String::new());
            }
            if segs[1] == "vaults" {
                // Synchronous, and soft: the vault keeps its name and secrets until purged.
                let v = s.resources.remove(&lower).unwrap_or_default();
                let name = orig[0].to_ascii_lowercase();
                let now = unix_now();
                s.deleted_vaults.insert(
                    name.clone(),
                    json!({
                        "id": format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/{}/deletedVaults/{name}", v["location"].as_str().unwrap_or_default()),
                        "name": name,
                        "type": "Microsoft.KeyVault/deletedVaults",
                        "properties": {
                            "vaultId": v["id"],
                            "location": v["location"],
                            "deletionDate": now.to_string(),
                            "scheduledPurgeDate": (now + 7 * 86400).to_string(),
                            "tags": v["tags"],
                            "purgeProtectionEnabled": false,
                        },
                    }),
                );
                return (200, vec![], String::new());
            }
            if let Some(user) = in_use_by(&s, &lower) {
                let code = if segs[1] == "networksecuritygroups" {
                    "InUseNetworkSecurityGroupCannotBeDeleted"
                } else {
                    "InUseNetworkInterfaceCannotBeDeleted"
                };
                return error(400, code, &format!("{} is in use by {user}", orig[0]));
            }
            s.next += 1;
            let op = format!("op{}", s.next);
            if let Some(v) = s.resources.get_mut(&lower) {
                v["properties"]["provisioningState"] = json!("Deleting");
            }
            s.ops.insert(
                op.clone(),
                Op {
                    left: POLLS,
                    error: None,
                    done: Done::Deleted(lower.clone()),
                },
            );
            (
                202,
                vec![
                    ("location", format!("{base}/locations/{op}")),
                    ("retry-after", "0".into()),
                ],
                String::new(),
            )
        }
        ("POST", 4) if segs[1] == "virtualmachines" && segs[3] == "retrievebootdiagnosticsdata" => {
            let vm = id(prefix_len + 3);
            if !s.resources.contains_key(&vm) {
                return error(404, "ResourceNotFound", "no such VM");
            }
            let name = path.split('/').nth_back(1).unwrap_or_default();
            (
                200,
                vec![],
                json!({"serialConsoleLogBlobUri": format!("{base}/blobs/{name}?sv=sas")})
                    .to_string(),
            )
        }
        _ => error(
            400,
            "UnsupportedRequest",
            &format!("the stub does not serve {method} {path}"),
        ),
    }
}

fn exists(s: &State, id: &str) -> bool {
    s.resources.contains_key(&id.to_ascii_lowercase())
}

/// ARM refuses references to resources that do not exist (the stub's one virtual network and
/// subnet always exist).
fn check_refs(s: &State, kind: &str, v: &Value) -> Result<(), String> {
    let p = &v["properties"];
    match kind {
        "networkinterfaces" => {
            let ipc = &p["ipConfigurations"][0]["properties"];
            let subnet = ipc["subnet"]["id"].as_str().unwrap_or_default();
            let want = format!(
                "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.Network/virtualNetworks/vnet-test/subnets/default"
            );
            if subnet != want {
                return Err(format!("subnet {subnet} not found"));
            }
            if let Some(ip) = ipc["publicIPAddress"]["id"].as_str()
                && !exists(s, ip)
            {
                return Err(format!("public IP {ip} not found"));
            }
            if let Some(nsg) = p["networkSecurityGroup"]["id"].as_str()
                && !exists(s, nsg)
            {
                return Err(format!("network security group {nsg} not found"));
            }
        }
        "virtualmachines" => {
            for id in v["identity"]["userAssignedIdentities"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                if !exists(s, id) {
                    return Err(format!("user-assigned identity {id} not found"));
                }
            }
            for nic in p["networkProfile"]["networkInterfaces"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let id = nic["id"].as_str().unwrap_or_default();
                if !exists(s, id) {
                    return Err(format!("network interface {id} not found"));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// What still refers to a NIC, public IP or NSG (an identity or a vault may go while in use).
fn in_use_by(s: &State, id: &str) -> Option<String> {
    if ![
        "/networkinterfaces/",
        "/publicipaddresses/",
        "/networksecuritygroups/",
    ]
    .iter()
    .any(|k| id.contains(k))
    {
        return None;
    }
    s.resources.values().find_map(|v| {
        let text = v.to_string().to_ascii_lowercase();
        let own = v["id"].as_str().unwrap_or_default().to_ascii_lowercase();
        (own != id && text.contains(&format!("\"{id}\""))).then_some(own)
    })
}

fn poll(s: &mut State, op: &str, location: bool) -> Reply {
    s.polls += 1;
    let Some(o) = s.ops.get_mut(op) else {
        return error(404, "OperationNotFound", op);
    };
    if o.left > 0 {
        o.left -= 1;
        return if location {
            (202, vec![("retry-after", "0".into())], String::new())
        } else {
            (
                200,
                vec![("retry-after", "0".into())],
                json!({"status": "InProgress"}).to_string(),
            )
        };
    }
    let Some(o) = s.ops.remove(op) else {
        return error(404, "OperationNotFound", op);
    };
    match (o.done, o.error) {
        (Done::Provisioned(id), None) => {
            if let Some(v) = s.resources.get_mut(&id) {
                v["properties"]["provisioningState"] = json!("Succeeded");
            }
            (200, vec![], json!({"status": "Succeeded"}).to_string())
        }
        (Done::Provisioned(id), Some((code, message))) => {
            if let Some(v) = s.resources.get_mut(&id) {
                v["properties"]["provisioningState"] = json!("Failed");
            }
            (
                200,
                vec![],
                json!({"status": "Failed", "error": {"code": code, "message": message}})
                    .to_string(),
            )
        }
        (Done::Deleted(id), _) => {
            delete_cascading(s, &id);
            (200, vec![], String::new())
        }
        (Done::Purged(name), _) => {
            s.deleted_vaults.remove(&name);
            s.vault_data.remove(&name);
            (200, vec![], String::new())
        }
    }
}

/// Deletes a resource; a VM takes its NICs (and their public IPs) marked `deleteOption: Delete`.
fn delete_cascading(s: &mut State, id: &str) {
    let Some(v) = s.resources.remove(id) else {
        return;
    };
    for nic in v["properties"]["networkProfile"]["networkInterfaces"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if nic["properties"]["deleteOption"] == "Delete"
            && let Some(nid) = nic["id"].as_str()
        {
            let nid = nid.to_ascii_lowercase();
            if let Some(n) = s.resources.remove(&nid) {
                let ipc = &n["properties"]["ipConfigurations"][0]["properties"]["publicIPAddress"];
                if ipc["properties"]["deleteOption"] == "Delete"
                    && let Some(ip) = ipc["id"].as_str()
                {
                    s.resources.remove(&ip.to_ascii_lowercase());
                }
            }
        }
    }
}

/// An Entra ID error as its token endpoint writes it.
fn entra_error(status: u16, error: &str, code: u32, description: &str) -> Reply {
    (
        status,
        vec![],
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
        })
        .to_string(),
    )
}

/// Entra ID's client-credentials grant for the one service principal it knows.
fn entra_token(s: &mut State, tenant: &str, body: &[u8]) -> Reply {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    if tenant != TENANT {
        return entra_error(
            400,
            "invalid_request",
            90002,
            &format!("Tenant '{tenant}' not found."),
        );
    }
    if field("grant_type") != "client_credentials" {
        return entra_error(
            400,
            "unsupported_grant_type",
            70003,
            "The grant type is not supported.",
        );
    }
    let vault = field("scope") == format!("{VAULT_RESOURCE}/.default");
    if field("scope") != ARM_SCOPE && !vault {
        return entra_error(
            400,
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {} is not valid.",
                field("scope")
            ),
        );
    }
    if field("client_id") != CLIENT_ID {
        return entra_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                field("client_id")
            ),
        );
    }
    if field("client_secret") != CLIENT_SECRET {
        return entra_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{CLIENT_ID}'."
            ),
        );
    }
    (
        200,
        vec![],
        json!({
            "token_type": "Bearer",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": if vault {
                issue(s, VAULT_RESOURCE, SP_OID)
            } else {
                SP_TOKEN.to_owned()
            },
        })
        .to_string(),
    )
}

/// The instance metadata service's token for the VM's managed identity: for ARM, or for Key
/// Vault as the user-assigned identity `msi_res_id` names.
fn imds_token(s: &mut State, parts: &http::request::Parts) -> Reply {
    let bad = |description: &str| {
        (
            400,
            vec![],
            json!({"error": "invalid_request", "error_description": description}).to_string(),
        )
    };
    if parts.method != http::Method::GET {
        return bad("Only GET is supported");
    }
    if parts.headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return bad("Required metadata header not specified");
    }
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if !query.contains_key("api-version") {
        return bad("Required query variable 'api-version' is missing");
    }
    let resource = query.get("resource").cloned().unwrap_or_default();
    let token = match resource.as_str() {
        "https://management.azure.com" => MI_TOKEN.to_owned(),
        VAULT_RESOURCE => {
            let Some(id) = query.get("msi_res_id") else {
                return bad("Identity not found: this VM has only user-assigned identities");
            };
            let principal = s
                .resources
                .get(&id.to_ascii_lowercase())
                .and_then(|v| v["properties"]["principalId"].as_str())
                .map(str::to_owned);
            match principal {
                Some(oid) => issue(s, VAULT_RESOURCE, &oid),
                None => return bad("Identity not found"),
            }
        }
        _ => return bad("Required query variable 'resource' is missing or not supported"),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (
        200,
        vec![],
        json!({
            "access_token": token,
            "client_id": "77777777-0000-0000-0000-000000000000",
            "expires_in": "3599",
            "expires_on": (now + 3599).to_string(),
            "ext_expires_in": "3599",
            "not_before": now.to_string(),
            "resource": resource,
            "token_type": "Bearer",
        })
        .to_string(),
    )
}

/// The first injected fault matching the request, counting it.
fn take_fault(s: &mut State, method: &str, path: &str) -> Option<Fault> {
    for (f, seen) in s.faults.iter_mut() {
        if f.method == method && path.contains(f.path) {
            *seen += 1;
            if *seen > f.after {
                return Some(f.clone());
            }
        }
    }
    None
}

/// The answer a synchronous fault gives (an asynchronous one is the operation's).
fn fault_reply(f: &Fault) -> Option<Reply> {
    match f.kind {
        FaultKind::Sync { status, code } => Some(error(status, code, f.message)),
        FaultKind::Throttle => {
            let (st, mut h, b) = error(429, "TooManyRequests", f.message);
            h.push(("retry-after", "0".into()));
            Some((st, h, b))
        }
        FaultKind::Async { .. } => None,
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64url(v: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT for `aud` naming `oid` in [`TENANT`], remembered as issued.
fn issue(s: &mut State, aud: &str, oid: &str) -> String {
    s.next += 1;
    let t = format!(
        "{}.{}.sig{}",
        b64url(&json!({"alg": "none", "typ": "JWT"})),
        b64url(&json!({"aud": aud, "tid": TENANT, "oid": oid, "jti": s.next})),
        s.next
    );
    s.issued.insert(t.clone());
    t
}

/// A JWT's claims.
fn claims(token: &str) -> Option<Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Key Vault's rules for a vault PUT: its name (3-24 letters, digits and single hyphens,
/// starting with a letter, global, so one soft-deleted holds it), a tenant and a SKU.
fn check_vault(s: &State, name: &str, v: &Value) -> Result<(), Reply> {
    let ok = (3..=24).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("--")
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        return Err(error(
            400,
            "VaultNameNotValid",
            &format!(
                "The vault name '{name}' is invalid. A vault's name must be between 3-24 \
                 alphanumeric characters. The name must begin with a letter, end with a letter or \
                 digit, and not contain consecutive hyphens."
            ),
        ));
    }
    if s.deleted_vaults.contains_key(&name.to_ascii_lowercase()) {
        return Err(error(
            409,
            "ConflictError",
            "A vault with the same name already exists in deleted state. You need to either \
             recover or purge existing key vault. Follow this link \
             https://go.microsoft.com/fwlink/?linkid=2149745 for more information on soft delete.",
        ));
    }
    let p = &v["properties"];
    if p["tenantId"].as_str().is_none_or(str::is_empty) || p["sku"]["name"].as_str().is_none() {
        return Err(error(
            400,
            "BadRequest",
            "The request must give properties.tenantId and properties.sku.",
        ));
    }
    for ap in p["accessPolicies"].as_array().into_iter().flatten() {
        if ap["objectId"].as_str().is_none_or(str::is_empty) || ap["tenantId"] != p["tenantId"] {
            return Err(error(
                400,
                "BadRequest",
                "An access policy must give the vault's tenantId and an objectId.",
            ));
        }
    }
    Ok(())
}

/// `.../providers/Microsoft.KeyVault/` at subscription scope: deleted vaults, listed, read and
/// purged (`rest` lowercase).
fn deleted_vaults(s: &mut State, base: &str, method: &str, rest: &str) -> Reply {
    let segs: Vec<&str> = rest.split('/').collect();
    match (method, segs.as_slice()) {
        ("GET", ["deletedvaults"]) => {
            let items: Vec<Value> = s.deleted_vaults.values().cloned().collect();
            (200, vec![], json!({"value": items}).to_string())
        }
        ("GET", ["locations", _, "deletedvaults", name]) => match s.deleted_vaults.get(*name) {
            Some(v) => (200, vec![], v.to_string()),
            None => error(
                404,
                "ResourceNotFound",
                &format!("The deleted vault '{name}' was not found."),
            ),
        },
        ("POST", ["locations", location, "deletedvaults", name, "purge"]) => {
            let here = s
                .deleted_vaults
                .get(*name)
                .is_some_and(|v| v["properties"]["location"] == *location);
            if !here {
                return error(
                    404,
                    "ResourceNotFound",
                    &format!("The deleted vault '{name}' in {location} was not found."),
                );
            }
            s.next += 1;
            let op = format!("op{}", s.next);
            s.ops.insert(
                op.clone(),
                Op {
                    left: POLLS,
                    error: None,
                    done: Done::Purged(name.to_string()),
                },
            );
            (
                202,
                vec![
                    ("location", format!("{base}/locations/{op}")),
                    ("retry-after", "0".into()),
                ],
                String::new(),
            )
        }
        _ => error(
            400,
            "UnsupportedRequest",
            &format!("the stub does not serve {method} Microsoft.KeyVault/{rest}"),
        ),
    }
}

/// A Key Vault error as the data plane writes it.
fn kv_error(status: u16, code: &str, inner: Option<&str>, message: &str) -> Reply {
    let mut e = json!({"error": {"code": code, "message": message}});
    if let Some(i) = inner {
        e["error"]["innererror"] = json!({"code": i});
    }
    (status, vec![], e.to_string())
}

/// One vault's data plane: `rest` is `NAME/secrets/...` or `NAME/deletedsecrets/...`.
fn vault_plane(
    s: &mut State,
    method: &str,
    parts: &http::request::Parts,
    body: &[u8],
    rest: &str,
) -> Reply {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let vault = segs[0].to_ascii_lowercase();
    let record = s
        .resources
        .iter()
        .find(|(id, _)| id.ends_with(&format!("/microsoft.keyvault/vaults/{vault}")))
        .map(|(_, v)| v.clone());
    let Some(record) = record else {
        return kv_error(
            404,
            "VaultNotFound",
            None,
            &format!("Vault {vault} not found."),
        );
    };
    let challenge = || {
        vec![(
            "www-authenticate",
            format!(
                "Bearer authorization=\"{}/{TENANT}\", resource=\"{VAULT_RESOURCE}\"",
                s.login_url
            ),
        )]
    };
    let bearer = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(bearer) = bearer else {
        let (st, _, b) = kv_error(
            401,
            "Unauthorized",
            None,
            "AKV10000: Request is missing a Bearer or PoP token.",
        );
        return (st, challenge(), b);
    };
    let oid = if bearer == TOKEN {
        Some(OPERATOR_OID.to_owned())
    } else if s.issued.contains(&bearer) {
        claims(&bearer)
            .filter(|c| c["aud"] == VAULT_RESOURCE)
            .and_then(|c| c["oid"].as_str().map(str::to_owned))
    } else {
        None
    };
    let Some(oid) = oid else {
        let (st, _, b) = kv_error(
            401,
            "Unauthorized",
            None,
            &format!("AKV10022: Invalid audience. Expected {VAULT_RESOURCE}."),
        );
        return (st, challenge(), b);
    };
    let query = parts.uri.query().unwrap_or_default();
    if !query.contains("api-version=") {
        return kv_error(
            400,
            "BadParameter",
            None,
            "The 'api-version' query parameter is missing.",
        );
    }
    let path = parts.uri.path().to_owned();
    if let Some(reply) = take_fault(s, method, &path).as_ref().and_then(fault_reply) {
        return reply;
    }
    let allowed: Vec<String> = record["properties"]["accessPolicies"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ap| ap["objectId"] == oid.as_str())
        .flat_map(|ap| {
            ap["permissions"]["secrets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p.as_str().map(str::to_ascii_lowercase))
        .collect();
    let need = match (method, segs.get(1).copied()) {
        ("PUT", Some("secrets")) => "set",
        ("GET", _) => "get",
        ("DELETE", Some("secrets")) => "delete",
        ("DELETE", Some("deletedsecrets")) => "purge",
        _ => "",
    };
    if !allowed.iter().any(|p| p == need || p == "all") {
        return kv_error(
            403,
            "Forbidden",
            Some("AccessDenied"),
            &format!(
                "The user, group or application 'oid={oid};iss=https://sts.windows.net/{TENANT}/' \
                 does not have secrets {need} permission on key vault '{vault};location={}'. For \
                 help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                record["location"].as_str().unwrap_or_default()
            ),
        );
    }
    s.vault_access.push(format!("{method} {path} by {oid}"));
    let uri = record["properties"]["vaultUri"]
        .as_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_owned();
    let now = unix_now();
    let data = s.vault_data.entry(vault.clone()).or_default();
    let name = segs.get(2).copied().unwrap_or_default().to_owned();
    let not_found = |name: &str| {
        kv_error(
            404,
            "SecretNotFound",
            None,
            &format!(
                "A secret with (name/id) {name} was not found in this key vault. If you recently \
                 deleted this secret you may be able to recover it using the correct recovery \
                 command. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125182"
            ),
        )
    };
    let valid = !name.is_empty()
        && name.len() <= 127
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match (method, segs.get(1).copied(), segs.len()) {
        ("PUT", Some("secrets"), 3) => {
            if !valid {
                return kv_error(
                    400,
                    "BadParameter",
                    None,
                    "The request URI contains an invalid name: secret names are 1-127 letters, \
                     digits and dashes.",
                );
            }
            if data.deleted.contains_key(&name) {
                return kv_error(
                    409,
                    "Conflict",
                    Some("ObjectIsDeletedButRecoverable"),
                    &format!(
                        "Secret {name} is currently in a deleted but recoverable state, and its \
                         name cannot be reused; in this state, the secret can only be recovered \
                         or purged."
                    ),
                );
            }
            let Ok(req) = serde_json::from_slice::<Value>(body) else {
                return kv_error(400, "BadParameter", None, "The request body is not JSON.");
            };
            let Some(value) = req["value"].as_str() else {
                return kv_error(400, "BadParameter", None, "Property 'value' is required.");
            };
            let version = format!("{:032x}", now as u128 * 1000 + data.secrets.len() as u128);
            let bundle = json!({
                "value": value,
                "contentType": req["contentType"],
                "tags": req["tags"],
                "id": format!("{uri}/secrets/{name}/{version}"),
                "attributes": {
                    "enabled": true,
                    "created": now,
                    "updated": now,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 7,
                },
            });
            data.secrets.entry(name).or_default().push(bundle.clone());
            (200, vec![], bundle.to_string())
        }
        ("GET", Some("secrets"), 3 | 4) => {
            let Some(versions) = data.secrets.get(&name) else {
                return not_found(&name);
            };
            let found = match segs.get(3) {
                Some(v) => versions.iter().find(|b| {
                    b["id"]
                        .as_str()
                        .is_some_and(|id| id.ends_with(&format!("/{v}")))
                }),
                None => versions.last(),
            };
            match found {
                Some(b) => (200, vec![], b.to_string()),
                None => not_found(&name),
            }
        }
        ("DELETE", Some("secrets"), 3) => {
            let Some(versions) = data.secrets.remove(&name) else {
                return not_found(&name);
            };
            let mut b = versions.last().cloned().unwrap_or_default();
            if let Some(o) = b.as_object_mut() {
                o.remove("value");
            }
            b["recoveryId"] = json!(format!("{uri}/deletedsecrets/{name}"));
            b["deletedDate"] = json!(now);
            b["scheduledPurgeDate"] = json!(now + 7 * 86400);
            data.deleted.insert(name, versions);
            (200, vec![], b.to_string())
        }
        ("GET", Some("deletedsecrets"), 3) => match data.deleted.get(&name) {
            Some(v) => (
                200,
                vec![],
                json!({"recoveryId": format!("{uri}/deletedsecrets/{name}"), "id": v.last().map(|b| b["id"].clone())}).to_string(),
            ),
            None => not_found(&name),
        },
        ("DELETE", Some("deletedsecrets"), 3) => match data.deleted.remove(&name) {
            Some(_) => (204, vec![], String::new()),
            None => not_found(&name),
        },
        _ => kv_error(
            400,
            "BadParameter",
            None,
            &format!("the stub does not serve {method} {path}"),
        ),
    }
}

/// One request to the stub as a client would make it: `url` over HTTP or (trusting the stub's
/// certificate) HTTPS, with `bearer` if given. Returns the status, the headers and the body as
/// JSON (`Null` if empty).
pub async fn call(
    stub: &ArmStub,
    method: &str,
    url: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, http::HeaderMap, Value) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(stub.ca.clone().into()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https);
    let mut req = http::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json");
    if let Some(b) = bearer {
        req = req.header("authorization", format!("Bearer {b}"));
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let resp = client
        .request(req.body(Full::new(Bytes::from(payload))).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}
