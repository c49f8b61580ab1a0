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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const SUBSCRIPTION: &str = "00000000-0000-0000-0000-000000000001";
pub const GROUP: &str = "rg-test";
pub const TOKEN: &str = "test-token";
/// The service principal Entra knows.
pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "66666666-7777-8888-9999-000000000000";
pub const CLIENT_SECRET: &str = "s3cret~value.For_the-stub";
/// The tokens each credential kind gets.
pub const SP_TOKEN: &str = "token-from-entra";
pub const MI_TOKEN: &str = "token-from-imds";
pub const CLI_TOKEN: &str = "token-from-az";
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

    pub fn handle(&self) -> StubHandle {
        StubHandle(self.state.clone())
    }
}

/// A cheap handle for tasks that watch the stub.
#[derive(Clone)]
pub struct StubHandle(Arc<Mutex<State>>);

impl StubHandle {
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
        return entra_token(tenant, body);
    }
    if path == "/metadata/identity/oauth2/token" {
        return imds_token(parts);
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
    let mut hit = None;
    for (f, seen) in s.faults.iter_mut() {
        if f.method == method && path.contains(f.path) {
            *seen += 1;
            if *seen > f.after {
                hit = Some(f.clone());
                break;
            }
        }
    }
    if let Some(f) = &hit {
        match f.kind {
            FaultKind::Sync { status, code } => return error(status, code, f.message),
            FaultKind::Throttle => {
                let (st, mut h, b) = error(429, "TooManyRequests", f.message);
                h.push(("retry-after", "0".into()));
                return (st, h, b);
            }
            FaultKind::Async { .. } => {}
        }
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

/// What still refers to a NIC, public IP or NSG.
fn in_use_by(s: &State, id: &str) -> Option<String> {
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
fn entra_token(tenant: &str, body: &[u8]) -> Reply {
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
    if field("scope") != ARM_SCOPE {
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
            "access_token": SP_TOKEN,
        })
        .to_string(),
    )
}

/// The instance metadata service's token for the VM's managed identity.
fn imds_token(parts: &http::request::Parts) -> Reply {
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
    if query.get("resource").map(String::as_str) != Some("https://management.azure.com") {
        return bad("Required query variable 'resource' is missing or not ARM");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (
        200,
        vec![],
        json!({
            "access_token": MI_TOKEN,
            "client_id": "77777777-0000-0000-0000-000000000000",
            "expires_in": "3599",
            "expires_on": (now + 3599).to_string(),
            "ext_expires_in": "3599",
            "not_before": now.to_string(),
            "resource": "https://management.azure.com",
            "token_type": "Bearer",
        })
        .to_string(),
    )
}
