//! The public face of the double: [`ApiServer`], its options, the fault knob and the request log.

use crate::auth::{Authorization, Tokens};
use crate::error::Error;
use crate::http;
use crate::ops;
use crate::resources::{builtin_types, crd_types};
use crate::store::State;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Tunables of an [`ApiServer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// How many changes the server retains for watches to replay; a watch (or continue token)
    /// from an older resourceVersion gets `410 Gone`. Default 10 000.
    pub history_limit: usize,
    /// How long a watch that asked for bookmarks stays idle before it gets one. Default 1 s.
    pub bookmark_interval: Duration,
    /// How requests are authorised: everything allowed (the default), or Kubernetes' RBAC over
    /// the Roles, ClusterRoles and bindings stored in the server.
    pub authorization: Authorization,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            history_limit: 10_000,
            bookmark_interval: Duration::from_secs(1),
            authorization: Authorization::AlwaysAllow,
        }
    }
}

/// A Kubernetes API verb, as RBAC and audit logs name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `GET` of one object.
    Get,
    /// `GET` of a collection.
    List,
    /// `GET` of a collection with `watch=true`.
    Watch,
    /// `POST`.
    Create,
    /// `PUT`.
    Update,
    /// `PATCH` of any type, server-side apply included.
    Patch,
    /// `DELETE` of one object.
    Delete,
    /// `DELETE` of a collection.
    DeleteCollection,
}

impl Verb {
    /// Whether the verb can change state.
    pub fn is_write(self) -> bool {
        !matches!(self, Verb::Get | Verb::List | Verb::Watch)
    }
}

/// An injected failure: the next `times` requests that match answer with `code` (a Kubernetes
/// `Status` with the usual reason for that code) and change nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    verb: Option<Verb>,
    resource: Option<String>,
    name: Option<String>,
    code: u16,
    times: usize,
}

impl Fault {
    /// Fails the next request (any verb, any resource) with `code`, once.
    pub fn new(code: u16) -> Fault {
        Fault {
            verb: None,
            resource: None,
            name: None,
            code,
            times: 1,
        }
    }

    /// Only requests with this verb.
    pub fn verb(mut self, verb: Verb) -> Fault {
        self.verb = Some(verb);
        self
    }

    /// Only requests for this resource (plural, e.g. `pods`, `daskclusters`; `pods/status` for a
    /// subresource).
    pub fn resource(mut self, resource: &str) -> Fault {
        self.resource = Some(resource.to_owned());
        self
    }

    /// Only requests naming this object.
    pub fn name(mut self, name: &str) -> Fault {
        self.name = Some(name.to_owned());
        self
    }

    /// Fail this many matching requests (default 1).
    pub fn times(mut self, times: usize) -> Fault {
        self.times = times;
        self
    }

    pub(crate) fn matches(&self, rec: &RequestRecord) -> bool {
        let resource = match (&rec.resource, &rec.subresource) {
            (Some(r), Some(s)) => Some(format!("{r}/{s}")),
            (r, None) => r.clone(),
            (None, Some(_)) => None,
        };
        self.times > 0
            && self.verb.is_none_or(|v| Some(v) == rec.verb)
            && self
                .resource
                .as_ref()
                .is_none_or(|r| Some(r) == resource.as_ref())
            && self
                .name
                .as_ref()
                .is_none_or(|n| Some(n) == rec.name.as_ref())
    }

    pub(crate) fn code(&self) -> u16 {
        self.code
    }

    pub(crate) fn consume(&mut self) {
        self.times = self.times.saturating_sub(1);
    }

    pub(crate) fn spent(&self) -> bool {
        self.times == 0
    }
}

/// One request the server answered.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// Who sent it: `"client"` for [`ApiServer::client`] and
    /// [`ApiServer::service_account_client`], `"kubelet"` for a [`crate::Kubelet`], `"http"` over
    /// [`ApiServer::serve_http`].
    pub actor: String,
    /// The authenticated user: `system:admin`, `system:serviceaccount:<ns>:<name>` or
    /// `system:anonymous` (none when the credentials were refused: `401`).
    pub user: Option<String>,
    /// HTTP method.
    pub method: ::http::Method,
    /// URL path.
    pub path: String,
    /// Raw query string (percent-encoded).
    pub query: String,
    /// The API verb, when the path named a resource.
    pub verb: Option<Verb>,
    /// Resource plural (`pods`, `daskclusters`).
    pub resource: Option<String>,
    /// Subresource (`status`, `scale`, `binding`).
    pub subresource: Option<String>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// Object name from the path.
    pub name: Option<String>,
    /// `Content-Type` of the body (tells patch types apart).
    pub content_type: Option<String>,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// HTTP status code of the answer.
    pub code: u16,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub notify: tokio::sync::watch::Sender<u64>,
    pub log: Mutex<Vec<RequestRecord>>,
    pub faults: Mutex<Vec<Fault>>,
    /// Containers' output, written by kubelets, served by `pods/{name}/log`.
    pub pod_logs: crate::logs::Logs,
    pub options: Options,
    pub tokens: Mutex<Tokens>,
}

impl Shared {
    /// The state lock (a panic while holding it in one test thread does not wedge the others).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes watches after a change.
    pub fn changed(&self) {
        let rv = self.lock().rv;
        self.notify.send_if_modified(|current| {
            let moved = *current != rv;
            *current = rv;
            moved
        });
    }
}

/// An in-process Kubernetes API server with the semantics controllers depend on: resource
/// versions, list/watch with history and `410 Gone`, optimistic concurrency, merge / JSON /
/// strategic patches and server-side apply with field ownership, the status subresource,
/// finalizers, ownerReference garbage collection, and schema validation of custom resources.
///
/// Cheap to clone (an `Arc` inside). Its [`client`](ApiServer::client) must be created inside a
/// Tokio runtime (kube's client buffers requests on a spawned task).
#[derive(Clone)]
pub struct ApiServer {
    shared: Arc<Shared>,
}

impl Default for ApiServer {
    fn default() -> Self {
        ApiServer::new()
    }
}

impl ApiServer {
    /// A server with default [`Options`], serving the built-in types and the namespaces
    /// `default`, `kube-system`, `kube-public` and `kube-node-lease`.
    pub fn new() -> ApiServer {
        ApiServer::with_options(Options::default())
    }

    /// A server with the given options.
    pub fn with_options(options: Options) -> ApiServer {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let mut state = State::new(options.history_limit.max(1), seed);
        for ty in builtin_types() {
            state.register(ty);
        }
        ops::seed_namespaces(&mut state);
        let (notify, _) = tokio::sync::watch::channel(state.rv);
        ApiServer {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                notify,
                log: Mutex::new(Vec::new()),
                faults: Mutex::new(Vec::new()),
                pod_logs: crate::logs::Logs::default(),
                options,
                tokens: Mutex::new(Tokens::default()),
            }),
        }
    }

    /// Serves the custom resource a CRD defines (every served version, sharing storage): its REST
    /// paths, validation, pruning and defaulting from `openAPIV3Schema`, its scope and its
    /// `status`/`scale` subresources. The CRD itself becomes readable (and watchable) with the
    /// `Established` condition. Installing a CRD of the same name again replaces its types.
    pub fn install_crd(&self, crd: CustomResourceDefinition) -> Result<(), Error> {
        crd_types(&crd)?;
        let name = crd.metadata.name.clone().unwrap_or_default();
        let body = serde_json::to_value(&crd).map_err(|e| Error::InvalidCrd {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        let result = {
            let mut state = self.shared.lock();
            let ty = state
                .find_type("apiextensions.k8s.io", "v1", "customresourcedefinitions")
                .ok_or_else(|| Error::InvalidCrd {
                    name: name.clone(),
                    reason: "CRD type missing".into(),
                })?;
            let ctx = ops::Ctx {
                ty: &ty,
                namespace: None,
                manager: "kube-double",
                dry_run: false,
                strict: false,
            };
            let mut apply_body = body.clone();
            if let Some(m) = apply_body
                .get_mut("metadata")
                .and_then(serde_json::Value::as_object_mut)
            {
                m.remove("resourceVersion");
                m.remove("managedFields");
            }
            let bytes = serde_json::to_vec(&apply_body).unwrap_or_default();
            ops::patch(
                &mut state,
                &ctx,
                &name,
                ops::Sub::Main,
                &ops::PatchRequest {
                    patch_type: crate::patch::PatchType::Apply,
                    body: &bytes,
                    force: true,
                    manager_given: true,
                },
            )
        };
        self.shared.changed();
        result.map(|_| ()).map_err(|e| Error::InvalidCrd {
            name,
            reason: e.message,
        })
    }

    /// A `kube::Client` whose requests this server answers in-process, as the administrator
    /// (`system:admin` in `system:masters`, which RBAC does not restrict): for a test's own setup
    /// and checks.
    pub fn client(&self) -> kube::Client {
        self.client_as("client", None)
    }

    /// A bearer token that authenticates as the ServiceAccount `namespace/name`, for clients in
    /// other processes (`Authorization: Bearer <token>`, a kubeconfig's `token`), as a real
    /// cluster's ServiceAccount tokens do. With [`Authorization::Rbac`] such a client may do what
    /// the RoleBindings and ClusterRoleBindings naming the account allow, and gets `403` for the
    /// rest.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        self.shared
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .issue(namespace, name)
    }

    /// An in-process `kube::Client` authenticated as the ServiceAccount `namespace/name` (with a
    /// token from [`ApiServer::service_account_token`]), e.g. for a controller under test.
    pub fn service_account_client(&self, namespace: &str, name: &str) -> kube::Client {
        let token = self.service_account_token(namespace, name);
        self.client_as("client", Some(format!("Bearer {token}")))
    }

    /// Also serves the API over plain HTTP on `addr` (port 0 picks one), for clients in other
    /// processes (a controller binary under test, `kubectl`, kr8s), port-forwards to pods over
    /// WebSocket included. Returns the bound address. A request's `Authorization: Bearer` token
    /// says who sends it; without one it is `system:anonymous`.
    pub async fn serve_http(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        self.listen(addr, http::Caller::FromRequest).await
    }

    /// As [`serve_http`](ApiServer::serve_http), but a request without credentials is the
    /// administrator's, as on kube-apiserver's old `--insecure-port`: for the tests' own tools
    /// under [`Authorization::Rbac`], since kubectl (client-go) sends no bearer token over plain
    /// HTTP. Give the clients under test the [`serve_http`](ApiServer::serve_http) address and
    /// a token.
    pub async fn serve_insecure_port(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        self.listen(addr, http::Caller::FromRequestOrAdmin).await
    }

    async fn listen(
        &self,
        addr: std::net::SocketAddr,
        caller: http::Caller,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        use http_body_util::BodyExt;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let caller = caller.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: ::http::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            let caller = caller.clone();
                            async move {
                                if crate::proxy::is_portforward(&req) {
                                    return Ok::<_, Infallible>(crate::proxy::portforward(
                                        shared, &caller, req,
                                    ));
                                }
                                let (parts, body) = req.into_parts();
                                let bytes = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let req = ::http::Request::from_parts(
                                    parts,
                                    kube::client::Body::from(bytes.to_vec()),
                                );
                                Ok::<_, Infallible>(http::handle(shared, "http", caller, req).await)
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok((bound, task))
    }

    /// An in-process client; without `authorization` (an `Authorization` header's value) its
    /// requests are the administrator's.
    pub(crate) fn client_as(&self, actor: &str, authorization: Option<String>) -> kube::Client {
        let shared = self.shared.clone();
        let actor: Arc<str> = Arc::from(actor);
        let authorization = match authorization {
            Some(value) => http::Caller::Header(Arc::from(value)),
            None => http::Caller::Admin,
        };
        let service = tower::service_fn(move |req: ::http::Request<kube::client::Body>| {
            let shared = shared.clone();
            let actor = actor.clone();
            let caller = authorization.clone();
            async move { Ok::<_, Infallible>(http::handle(shared, &actor, caller, req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Makes matching requests fail (see [`Fault`]); faults are consumed in the order added.
    pub fn fail_next(&self, fault: Fault) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(fault);
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// Drops all retained watch history, as etcd compaction does: any watch from an older
    /// resourceVersion then gets `410 Gone` and must re-list.
    pub fn compact_history(&self) {
        self.shared.lock().compact();
    }

    /// The newest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn kubelet_started(&self) {
        self.shared.lock().kubelets += 1;
    }

    pub(crate) fn kubelet_stopped(&self) {
        let mut state = self.shared.lock();
        state.kubelets = state.kubelets.saturating_sub(1);
    }
}
