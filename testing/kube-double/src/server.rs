//! The public face of the double: [`ApiServer`], its options, the fault knob and the request log.

use crate::error::Error;
use crate::http;
use crate::ops;
use crate::resources::{builtin_types, crd_types};
use crate::shared::{Caller, Fault, Options, RequestRecord, Shared};
use crate::store::State;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use std::convert::Infallible;
use std::sync::Arc;

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
        ApiServer {
            shared: Arc::new(Shared::new(state, options)),
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
    /// cluster's ServiceAccount tokens do. With [`Authorization::Rbac`](crate::Authorization::Rbac) such a client may do what
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
        self.listen(addr, Caller::FromRequest).await
    }

    /// As [`serve_http`](ApiServer::serve_http), but a request without credentials is the
    /// administrator's, as on kube-apiserver's old `--insecure-port`: for the tests' own tools
    /// under [`Authorization::Rbac`](crate::Authorization::Rbac), since kubectl (client-go) sends no bearer token over plain
    /// HTTP. Give the clients under test the [`serve_http`](ApiServer::serve_http) address and
    /// a token.
    pub async fn serve_insecure_port(
        &self,
        addr: std::net::SocketAddr,
    ) -> std::io::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
        self.listen(addr, Caller::FromRequestOrAdmin).await
    }

    async fn listen(
        &self,
        addr: std::net::SocketAddr,
        caller: Caller,
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
            Some(value) => Caller::Header(Arc::from(value)),
            None => Caller::Admin,
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
