//! What the server's parts share: the state behind its lock, the request log, injected faults,
//! the tokens it knows, and the gate every request passes (who sends it, whether RBAC allows it).

use crate::auth::{self, Authorization, Identity, Tokens, Verb};
use crate::error::ApiError;
use crate::resources::ResourceType;
use crate::store::State;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Tunables of an [`ApiServer`](crate::ApiServer).
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
    /// Who sent it: `"client"` for [`ApiServer::client`](crate::ApiServer::client) and
    /// [`ApiServer::service_account_client`](crate::ApiServer::service_account_client), `"kubelet"` for a [`crate::Kubelet`], `"http"` over
    /// [`ApiServer::serve_http`](crate::ApiServer::serve_http).
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
    /// The parts around a freshly seeded state.
    pub fn new(state: State, options: Options) -> Shared {
        let (notify, _) = tokio::sync::watch::channel(state.rv);
        Shared {
            state: Mutex::new(state),
            notify,
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            pod_logs: crate::logs::Logs::default(),
            options,
            tokens: Mutex::new(Tokens::default()),
        }
    }

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

/// Whose credentials a request carries.
#[derive(Clone)]
pub(crate) enum Caller {
    /// An in-process client of the tests or a kubelet: the administrator.
    Admin,
    /// An in-process client with this `Authorization` header value.
    Header(Arc<str>),
    /// A request over HTTP: its own `Authorization` header, if any.
    FromRequest,
    /// A request over HTTP on the insecure port: its `Authorization` header, or without one the
    /// administrator.
    FromRequestOrAdmin,
}

/// The gate: authentication and authorisation of a request.
impl Shared {
    /// Authenticates a request: who it comes from, or `401`.
    pub(crate) fn authenticate(
        &self,
        caller: &Caller,
        headers: &::http::HeaderMap,
    ) -> Result<Identity, ApiError> {
        let header = match caller {
            Caller::Admin => return Ok(Identity::Admin),
            Caller::Header(h) => Some(h.as_ref()),
            Caller::FromRequest | Caller::FromRequestOrAdmin => {
                let header = headers
                    .get(::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                if header.is_none() && matches!(caller, Caller::FromRequestOrAdmin) {
                    return Ok(Identity::Admin);
                }
                header
            }
        };
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .authenticate(header)
    }

    /// Authorises a resource request (403 with Kubernetes' message when RBAC says no).
    pub(crate) fn authorize(
        &self,
        who: &Identity,
        ty: &ResourceType,
        verb: &str,
        namespace: Option<&str>,
        name: Option<&str>,
        sub: Option<&str>,
    ) -> Result<(), ApiError> {
        let attributes = auth::Attributes {
            verb,
            group: &ty.group,
            resource: &ty.plural,
            subresource: sub,
            namespace,
            name,
        };
        auth::authorize(self.options.authorization, &self.lock(), who, &attributes)
    }
}
