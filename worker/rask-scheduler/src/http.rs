//! Dask's scheduler HTTP API and Prometheus metrics, served with warp.
//!
//! Operators and autoscalers talk to rask's scheduler exactly as they talk to a Dask scheduler
//! with `distributed.http.scheduler.api` enabled (`distributed/http/scheduler/api.py`,
//! `distributed/http/health.py`, `distributed/http/scheduler/prometheus/core.py`):
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /health` | `ok` (text/plain) |
//! | `GET /api/v1` | `API V1` (text/plain) |
//! | `GET /api/v1/adaptive_target` | `{"workers": 3}` |
//! | `GET /api/v1/get_workers` | `{"num_workers": 1, "workers": [{"name": "w0", "address": "tcp://10.0.0.5:40000"}]}` |
//! | `POST /api/v1/retire_workers` | body `{"n": 2}` or `{"workers": ["tcp://…" or name, …]}`; answer `{address: identity}` for each worker retired |
//! | `GET /api/v1/check_idle` | `{"idle_since": 1767225600.5}` or `{"idle_since": null}` |
//! | `GET /metrics` | Prometheus metrics in the OpenMetrics text format |
//! | `GET /`, `GET /status`, `GET /status/events` | the dashboard page and its live updates ([`crate::dashboard`]) |
//!
//! A retired worker's identity has the fields of Dask's `WorkerState.identity()` that rask knows:
//! `{"type": "Worker", "id": name, "host": "10.0.0.5", "name": name, "nthreads": 2,
//! "memory_limit": bytes, "resources": {}, "services": {}, "nanny": null, "status": "closed"}`.
//! Dask's `local_directory`, `last_seen` and `metrics` are left out: a retired worker is gone,
//! and rask does not track them per worker.
//!
//! Every handler asks the scheduler's event loop through a [`SchedulerHandle`]; none touches its
//! state. Errors answer with Dask's error shape, `{"Error": message}`, where the message names what
//! was wrong:
//! - a malformed `retire_workers` body: 400 (Dask answers 500 "Internal Server Error" for
//!   anything that goes wrong; a client that sent a bad body should be told so, and should not
//!   retry). A body that names neither `n` nor `workers`, or both, is malformed too: Dask
//!   quietly retires nothing (or ignores `workers`), which hides the caller's mistake.
//! - a `retire_workers` body over 64 KiB: 413; one that does not arrive within the body timeout
//!   (10 s by default): 408.
//! - the scheduler shutting down: 503.
//! - an unknown path: 404; a known path with the wrong method: 405.
//!
//! Who may call it ([`ApiAuth`], docs/security.md): with neither TLS nor a token configured,
//! anyone who reaches the port, as Dask's. With TLS (the API is then served over HTTPS) or an
//! API token, a request needs a client certificate signed by the cluster's CA or
//! `Authorization: Bearer <token>`: without either it is answered 401, with a wrong token 403.
//! `GET /health` stays open for probes; the other read-only routes (GET: the API's queries,
//! `/metrics`, the dashboard) are opened to anyone by [`ApiAuth::read_only_open`]; routes that
//! change the cluster (`POST /api/v1/retire_workers`) never are.
//!
//! Slow clients cannot hold the API: a connection whose request headers have not all arrived
//! within the header timeout (10 s by default; also how long an idle keep-alive connection stays
//! open) is closed ([`HttpLimits`]).
//!
//! Metrics keep Dask's names, types, label names and label values, with help texts of our own
//! (rendered by `metrics.rs`). All 19 `dask_scheduler_*` families of Dask 2026.8's scheduler:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dask_scheduler_clients` | gauge | |
//! | `dask_scheduler_client_connections_added_total` | counter | |
//! | `dask_scheduler_client_connections_removed_total` | counter | |
//! | `dask_scheduler_desired_workers` | gauge | |
//! | `dask_scheduler_workers` | gauge | `state`: `idle`, `partially_saturated`, `saturated`, `paused`, `retiring` |
//! | `dask_scheduler_workers_added_total` | counter | |
//! | `dask_scheduler_workers_removed_total` | counter | |
//! | `dask_scheduler_gc_collection_seconds_total` | counter | |
//! | `dask_scheduler_last_time_total` | counter | |
//! | `dask_scheduler_tasks_suspicious_total` | counter | `task_prefix_name` |
//! | `dask_scheduler_tasks_forgotten_total` | counter | |
//! | `dask_scheduler_tasks` | gauge | `state`: `released`, `waiting`, `no-worker`, `queued`, `processing`, `memory`, `erred` |
//! | `dask_scheduler_task_groups` | gauge | |
//! | `dask_scheduler_tasks_compute_seconds_total` | counter | `task_prefix_name` |
//! | `dask_scheduler_tasks_transfer_seconds_total` | counter | `task_prefix_name` |
//! | `dask_scheduler_tasks_output_bytes` | gauge | `task_prefix_name` |
//! | `dask_scheduler_prefix_state_totals_total` | counter | `task_prefix_name`, `state` (Dask's state names, `forgotten` too; states never entered are left out, as Dask does) |
//! | `dask_scheduler_tick_duration_maximum_seconds` | gauge | |
//! | `dask_scheduler_tick_count_total` | counter | |
//!
//! Where rask differs: worker states come from task counts (no tasks processing: idle; fewer than
//! its threads: partially saturated; else saturated) where Dask also weighs expected durations.
//! `dask_scheduler_gc_collection_seconds_total` is always 0: rask has no garbage collector (it
//! frees as it goes), so that is the true figure, kept for dashboards that plot it.
//! `dask_scheduler_last_time_total` is the scheduler's monotonic clock when the metrics were read,
//! as Dask's (its system monitor's last sample, taken at each scrape), counted from the
//! scheduler's start where Python's clock counts from an arbitrary point. A task group is a key
//! without its last `-` part (`inc-3f2a-17` → `inc-3f2a`: one prefix from one client process),
//! where Dask groups a collection's chunks by the name of their tuple keys.
//! `dask_scheduler_tasks_transfer_seconds_total` adds, per task, the longest fetch of its inputs
//! from peers that its worker waited for (Dask adds the times of the transfers themselves).
//! Ticks: the event loop ticks every 20 ms; the maximum is the longest gap between two ticks since
//! the last scrape (or since the last tick, if longer), as Dask's, and a scrape starts it over.
//! Figures Dask has no metric for use a `rask_` prefix:
//! `rask_scheduler_transfer_bytes_total`, `rask_scheduler_tasks_speculated_total`,
//! `rask_scheduler_workers_timed_out_total`, `rask_scheduler_workers_timed_out_silence_seconds_total`,
//! `rask_scheduler_start_time_seconds`,
//! `rask_scheduler_threads`, `rask_scheduler_memory_bytes`, `rask_scheduler_memory_limit_bytes`.
//! Each scrape builds a fresh registry from one [`crate::Snapshot`], so the figures are consistent with
//! each other.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Buf, Filter, Reply, Stream};

use crate::{RetireSelector, RetiredWorker, SchedulerGone, SchedulerHandle};
use rask_core::net;
use rask_core::tls::TlsConfig;

/// The content type of `/metrics`: the OpenMetrics text format that prometheus-client writes,
/// which Prometheus asks for first and whose text older parsers also read.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The largest `retire_workers` body accepted; a list of a few hundred addresses fits easily.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Timeouts that keep slow or stalled HTTP clients from holding the API.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpLimits {
    /// A request's headers must all arrive within this long; an idle keep-alive connection is
    /// closed after it too.
    pub header_timeout: Duration,
    /// A request's body must all arrive within this long (408 otherwise).
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Who may call the HTTP API beyond `GET /health` (see the module's docs).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiAuth {
    /// A bearer token that admits a request, as a client certificate does.
    pub token: Option<String>,
    /// Read-only routes (GET) open to anyone even when TLS or a token guards the API.
    pub read_only_open: bool,
}

impl std::fmt::Debug for ApiAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("read_only_open", &self.read_only_open)
            .finish()
    }
}

/// What a request brings to be admitted.
struct Credentials<'a> {
    /// A client certificate the TLS handshake verified against the cluster's CA.
    certificate: bool,
    /// The `Authorization` header.
    authorization: Option<&'a [u8]>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
enum Denied {
    /// No credentials: 401.
    Missing { mutating: bool },
    /// A token that is not the API's: 403.
    WrongToken,
}

impl ApiAuth {
    /// Admits a request to `path` by `method`, or says why not. `tls`: the API is served over
    /// TLS (client certificates can be checked).
    fn admit(
        &self,
        tls: bool,
        method: &warp::http::Method,
        path: &str,
        credentials: &Credentials<'_>,
    ) -> Result<(), Denied> {
        use warp::http::Method;
        if !tls && self.token.is_none() {
            return Ok(());
        }
        let read_only = method == Method::GET || method == Method::HEAD;
        if read_only && (path == "/health" || self.read_only_open) {
            return Ok(());
        }
        if credentials.certificate {
            return Ok(());
        }
        let bearer = credentials
            .authorization
            .and_then(|h| h.strip_prefix(b"Bearer "))
            .map(<[u8]>::trim_ascii);
        match (bearer, &self.token) {
            (Some(given), Some(token)) if constant_time_eq(given, token.as_bytes()) => Ok(()),
            (Some(_), _) => Err(Denied::WrongToken),
            (None, _) => Err(Denied::Missing {
                mutating: !read_only,
            }),
        }
    }
}

/// Compares without stopping at the first difference, so that timing does not tell how much of
/// a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn denied_reply(denied: &Denied) -> Response {
    match denied {
        Denied::Missing { mutating } => {
            let what = if *mutating {
                "this route changes the cluster"
            } else {
                "this route is not open to anyone (rask scheduler --api-read-only-open)"
            };
            let mut r = error_reply(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "{what}: present a client certificate signed by the cluster's CA, or \
                     `Authorization: Bearer <token>` with the scheduler's API token"
                ),
            );
            r.headers_mut().insert(
                warp::http::header::WWW_AUTHENTICATE,
                warp::http::HeaderValue::from_static("Bearer"),
            );
            r
        }
        Denied::WrongToken => error_reply(
            StatusCode::FORBIDDEN,
            "the bearer token is not the scheduler's API token",
        ),
    }
}

/// All routes, as [`serve`] serves them; mount them in a larger warp server if need be. Never
/// rejects: unknown paths, wrong methods and failures all become responses.
pub fn routes(
    handle: SchedulerHandle,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    routes_with(handle, HttpLimits::default())
}

/// [`routes`] with the given body timeout.
pub fn routes_with(
    handle: SchedulerHandle,
    limits: HttpLimits,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let dashboard = crate::dashboard::routes(handle.clone());
    let with_handle = warp::any().map(move || handle.clone());

    let health = warp::path!("health")
        .and(warp::get())
        .map(|| text_reply("ok"));
    let api = warp::path!("api" / "v1")
        .and(warp::get())
        .map(|| text_reply("API V1"));
    let adaptive_target = warp::path!("api" / "v1" / "adaptive_target")
        .and(warp::get())
        .and(with_handle.clone())
        .then(|handle| async move { respond(adaptive_target(handle).await) });
    let get_workers = warp::path!("api" / "v1" / "get_workers")
        .and(warp::get())
        .and(with_handle.clone())
        .then(|handle| async move { respond(get_workers(handle).await) });
    let check_idle = warp::path!("api" / "v1" / "check_idle")
        .and(warp::get())
        .and(with_handle.clone())
        .then(|handle| async move { respond(check_idle(handle).await) });
    let retire_workers = warp::path!("api" / "v1" / "retire_workers")
        .and(warp::post())
        .and(with_handle.clone())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(move |handle, length, body| async move {
            respond(retire_workers(handle, length, body, limits.body_timeout).await)
        });
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_handle)
        .then(|handle| async move { respond(metrics(handle).await) });

    health
        .or(api)
        .unify()
        .or(adaptive_target)
        .unify()
        .or(get_workers)
        .unify()
        .or(check_idle)
        .unify()
        .or(retire_workers)
        .unify()
        .or(metrics)
        .unify()
        .or(dashboard)
        .unify()
        .recover(|rejection| async move { Ok::<_, Infallible>(rejection_reply(rejection)) })
        .unify()
}

/// Binds `addr` (port 0 picks a free port) and serves [`routes`] until `shutdown` resolves, then
/// finishes the requests in flight.
///
/// Returns once listening, with the bound address and the task that serves; the task ends after
/// shutdown. Fails only if `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    handle: SchedulerHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(addr, handle, shutdown, HttpLimits::default()).await
}

/// [`serve`] with the given limits.
pub async fn serve_with(
    addr: SocketAddr,
    handle: SchedulerHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_secured(addr, handle, shutdown, limits, None, ApiAuth::default()).await
}

/// [`serve_with`] over TLS when `tls` is given (HTTPS; a client certificate is checked if
/// offered), admitting requests as `auth` says.
pub async fn serve_secured(
    addr: SocketAddr,
    handle: SchedulerHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: HttpLimits,
    tls: Option<TlsConfig>,
    auth: ApiAuth,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for the scheduler's HTTP API on {addr}: {e}"),
        )
    })?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, tls = tls.is_some(), "scheduler HTTP API listening");
    let routes = routes_with(handle, limits);
    let secured = Secured {
        tls,
        auth: std::sync::Arc::new(auth),
    };
    Ok((
        bound,
        tokio::spawn(accept_http(listener, routes, shutdown, limits, secured)),
    ))
}

/// The API's TLS and who it admits.
struct Secured {
    tls: Option<TlsConfig>,
    auth: std::sync::Arc<ApiAuth>,
}

/// Serves each connection with hyper directly rather than through `warp::serve`, which sets no
/// timer and so no header timeout: a client trickling its headers would hold its connection for
/// ever. With TLS, the handshake runs in the connection's task, bounded by the header timeout.
async fn accept_http<F>(
    listener: tokio::net::TcpListener,
    routes: F,
    shutdown: impl Future<Output = ()>,
    limits: HttpLimits,
    secured: Secured,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(error = %e, "HTTP API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let routes = routes.clone();
        let tls = secured.tls.clone();
        let auth = secured.auth.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let handshake = net::accept_http(stream, peer, tls.as_ref());
            let stream = match tokio::time::timeout(limits.header_timeout, handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "refusing an HTTP connection");
                    return;
                }
                Err(_) => {
                    tracing::info!(%peer, "closing an HTTP connection: no TLS handshake within the header timeout");
                    return;
                }
            };
            let certificate = stream.peer_has_certificate();
            let inner = hyper_util::service::TowerToHyperService::new(warp::service(routes));
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let credentials = Credentials {
                        certificate,
                        authorization: req
                            .headers()
                            .get(warp::http::header::AUTHORIZATION)
                            .map(|v| v.as_bytes()),
                    };
                    let verdict =
                        auth.admit(tls.is_some(), req.method(), req.uri().path(), &credentials);
                    let inner = inner.clone();
                    async move {
                        match verdict {
                            Ok(()) => hyper::service::Service::call(&inner, req).await,
                            Err(denied) => {
                                tracing::info!(%peer, ?denied, "refusing an HTTP API request");
                                Ok(denied_reply(&denied))
                            }
                        }
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            match watcher.watch(conn).await {
                Ok(()) => {}
                Err(e) if e.is_timeout() => tracing::info!(
                    %peer,
                    timeout_s = limits.header_timeout.as_secs_f64(),
                    "closing an HTTP connection: no complete request headers within the timeout"
                ),
                Err(e) => tracing::debug!(%peer, error = %e, "HTTP connection failed"),
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Why a request failed; each maps to a status code and a message naming the problem.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error(transparent)]
    BadRetireBody(#[from] BadRetireBody),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("cannot read the request body: {0}")]
    BodyRead(#[source] warp::Error),
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(Duration),
    #[error(transparent)]
    SchedulerGone(#[from] SchedulerGone),
    #[error("cannot encode the metrics: {0}")]
    EncodeMetrics(#[source] std::fmt::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRetireBody(_) | ApiError::BodyRead(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::SchedulerGone(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::EncodeMetrics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// What is wrong with a `retire_workers` body.
#[derive(Debug, thiserror::Error, PartialEq)]
enum BadRetireBody {
    #[error(
        r#"the body is empty; send a JSON object such as {{"n": 1}} or {{"workers": ["tcp://10.0.0.5:40000"]}}"#
    )]
    Empty,
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error(r#"the body must be a JSON object with "n" or "workers", not {0}"#)]
    NotAnObject(String),
    #[error(
        r#"the body names neither "n" (how many workers to retire) nor "workers" (their addresses or names)"#
    )]
    Neither,
    #[error(r#"the body names both "n" and "workers"; give one of them"#)]
    Both,
    #[error(r#""n" must be a non-negative integer, not {0}"#)]
    BadCount(String),
    #[error(r#""workers" must be a list of worker addresses or names, not {0}"#)]
    WorkersNotAList(String),
    #[error(r#""workers"[{index}] must be a string (a worker address or name), not {value}"#)]
    WorkerNotAString { index: usize, value: String },
}

/// Reads a `retire_workers` body: `{"n": k}` or `{"workers": [address or name, ...]}`. Other keys
/// are ignored, as Dask does.
/// For the fuzz target under `fuzz/` (built only with `--cfg fuzzing`): the one HTTP body the
/// API parses. Errors are fine; a panic is a bug.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_retire_body(body: &[u8]) -> bool {
    parse_retire_body(body).is_ok()
}

fn parse_retire_body(body: &[u8]) -> Result<RetireSelector, BadRetireBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BadRetireBody::Empty);
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BadRetireBody::NotJson(e.to_string()))?;
    let Value::Object(fields) = value else {
        return Err(BadRetireBody::NotAnObject(excerpt(&value)));
    };
    match (fields.get("n"), fields.get("workers")) {
        (None, None) => Err(BadRetireBody::Neither),
        (Some(_), Some(_)) => Err(BadRetireBody::Both),
        (Some(n), None) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(RetireSelector::Count)
            .ok_or_else(|| BadRetireBody::BadCount(excerpt(n))),
        (None, Some(Value::Array(workers))) => workers
            .iter()
            .enumerate()
            .map(|(index, worker)| match worker {
                Value::String(worker) => Ok(worker.clone()),
                other => Err(BadRetireBody::WorkerNotAString {
                    index,
                    value: excerpt(other),
                }),
            })
            .collect::<Result<_, _>>()
            .map(RetireSelector::Workers),
        (None, Some(other)) => Err(BadRetireBody::WorkersNotAList(excerpt(other))),
    }
}

/// A JSON value as the caller wrote it, shortened so error messages stay readable.
fn excerpt(value: &Value) -> String {
    const MAX_CHARS: usize = 80;
    let text = value.to_string();
    if text.chars().count() <= MAX_CHARS {
        return text;
    }
    let mut short: String = text.chars().take(MAX_CHARS).collect();
    short.push('…');
    short
}

async fn adaptive_target(handle: SchedulerHandle) -> Result<Response, ApiError> {
    let snapshot = handle.snapshot().await?;
    Ok(json_reply(&json!({ "workers": snapshot.adaptive_target })))
}

async fn get_workers(handle: SchedulerHandle) -> Result<Response, ApiError> {
    let mut workers = handle.snapshot().await?.workers;
    // Dask keeps its workers sorted by address.
    workers.sort_by(|a, b| a.address.cmp(&b.address));
    let listed: Vec<Value> = workers
        .iter()
        .map(|w| json!({ "name": w.name, "address": w.address }))
        .collect();
    Ok(json_reply(&json!({
        "num_workers": workers.len(),
        "workers": listed,
    })))
}

async fn check_idle(handle: SchedulerHandle) -> Result<Response, ApiError> {
    let snapshot = handle.snapshot().await?;
    Ok(json_reply(&json!({ "idle_since": snapshot.idle_since })))
}

async fn retire_workers<S, B>(
    handle: SchedulerHandle,
    content_length: Option<u64>,
    body: S,
    body_timeout: Duration,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    // Refuse an announced oversized body before reading any of it.
    if content_length.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(ApiError::BodyTooLarge);
    }
    let body = tokio::time::timeout(body_timeout, read_body(body))
        .await
        .map_err(|_| ApiError::BodyTimeout(body_timeout))??;
    let selector = parse_retire_body(&body)?;
    tracing::info!(?selector, "retiring workers on HTTP request");
    let retired = handle.retire(selector).await?;
    let answer: Map<String, Value> = retired
        .iter()
        .map(|w| (w.address.clone(), identity(w)))
        .collect();
    Ok(json_reply(&Value::Object(answer)))
}

/// Collects a request body, refusing more than [`MAX_BODY_BYTES`] whether or not the client said
/// how long it is.
async fn read_body<S, B>(body: S) -> Result<Vec<u8>, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = pin!(body);
    let mut bytes = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
        let mut chunk = chunk.map_err(ApiError::BodyRead)?;
        if bytes.len() + chunk.remaining() > MAX_BODY_BYTES {
            return Err(ApiError::BodyTooLarge);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            bytes.extend_from_slice(part);
            let read = part.len();
            chunk.advance(read);
        }
    }
    Ok(bytes)
}

/// A retired worker as Dask's `WorkerState.identity()` describes it, with the fields rask knows.
fn identity(worker: &RetiredWorker) -> Value {
    json!({
        "type": "Worker",
        "id": worker.name,
        "host": host(&worker.address),
        "resources": {},
        "name": worker.name,
        "nthreads": worker.nthreads,
        "memory_limit": worker.memory_limit,
        "services": {},
        "nanny": null,
        // Retirement answers once the worker has been removed, as Dask's does by default.
        "status": "closed",
    })
}

/// The host part of a worker address: `tcp://10.0.0.5:40000` → `10.0.0.5`,
/// `tcp://[::1]:40000` → `::1`.
fn host(address: &str) -> &str {
    let location = address
        .split_once("://")
        .map_or(address, |(_, location)| location);
    let host = match location.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => location,
    };
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

async fn metrics(handle: SchedulerHandle) -> Result<Response, ApiError> {
    let snapshot = handle.metrics_snapshot().await?;
    let text = crate::metrics::render(&snapshot).map_err(ApiError::EncodeMetrics)?;
    Ok(warp::reply::with_header(text, CONTENT_TYPE, METRICS_CONTENT_TYPE).into_response())
}

fn text_reply(text: &'static str) -> Response {
    warp::reply::with_header(text, CONTENT_TYPE, "text/plain; charset=utf-8").into_response()
}

fn json_reply(value: &Value) -> Response {
    warp::reply::json(value).into_response()
}

fn error_reply(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(json_reply(&json!({ "Error": message })), status).into_response()
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|e| {
        let status = e.status();
        if status.is_server_error() {
            tracing::warn!(error = %e, "HTTP API request failed");
        } else {
            tracing::debug!(error = %e, "HTTP API request refused");
        }
        error_reply(status, &e.to_string())
    })
}

fn rejection_reply(rejection: warp::Rejection) -> Response {
    if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: retire_workers takes POST, every other endpoint GET",
        )
    } else if let Some(header) = rejection.find::<warp::reject::InvalidHeader>() {
        error_reply(
            StatusCode::BAD_REQUEST,
            &format!("invalid {} header", header.name()),
        )
    } else if rejection.is_not_found() {
        error_reply(
            StatusCode::NOT_FOUND,
            "no such endpoint; see /health, /metrics and /api/v1/{adaptive_target, get_workers, \
             retire_workers, check_idle}",
        )
    } else {
        tracing::warn!(?rejection, "unexpected HTTP rejection");
        error_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("unexpected rejection: {rejection:?}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::sync::{mpsc, oneshot};

    use super::*;
    use crate::{PrefixSnapshot, Request, Snapshot, TaskCounts, WorkerSnapshot, WorkerStatus};

    fn worker(name: &str, address: &str, nthreads: u32, processing: usize) -> WorkerSnapshot {
        WorkerSnapshot {
            name: name.to_owned(),
            address: address.to_owned(),
            nthreads,
            memory_limit: 4 << 30,
            nbytes: 1000,
            processing,
            keys: 3,
            spilled_bytes: 0,
            rss: 0,
            status: WorkerStatus::Running,
            pid: 4242,
            last_seen_s: 0.5,
        }
    }

    fn snapshot() -> Snapshot {
        let mut retiring = worker("w3", "tcp://10.0.0.4:40000", 2, 0);
        retiring.status = WorkerStatus::Retiring;
        Snapshot {
            address: "tcp://10.0.0.1:8786".to_owned(),
            workers: vec![
                worker("w1", "tcp://10.0.0.2:40000", 2, 0),
                worker("w0", "tcp://10.0.0.1:40000", 2, 1),
                worker("w2", "tcp://[::1]:40000", 2, 5),
                retiring,
            ],
            tasks: TaskCounts {
                released: 1,
                waiting: 2,
                queued: 3,
                no_worker: 8,
                processing: 6,
                memory: 4,
                erred: 5,
            },
            clients: 2,
            adaptive_target: 7,
            idle_since: None,
            tasks_forgotten_total: 11,
            tasks_suspicious_total: 12,
            prefixes: vec![PrefixSnapshot {
                name: "inc".to_owned(),
                compute_seconds: 1.5,
                ..PrefixSnapshot::default()
            }],
            workers_added_total: 5,
            transfer_bytes_total: 4096,
            tasks_computed_total: 30,
            tasks_speculated_total: 3,
            started_at: 1_767_225_600.5,
            ..Snapshot::default()
        }
    }

    /// A scheduler event loop that answers from a fixed snapshot and records what it was asked to
    /// retire.
    struct FakeScheduler {
        handle: SchedulerHandle,
        retired: Arc<Mutex<Vec<RetireSelector>>>,
        /// How many metrics snapshots it was asked for.
        metrics_requests: Arc<Mutex<usize>>,
    }

    fn fake_scheduler(snapshot: Snapshot) -> FakeScheduler {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let retired = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&retired);
        let metrics_requests = Arc::new(Mutex::new(0));
        let count = Arc::clone(&metrics_requests);
        tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                match request {
                    Request::Snapshot(reply) => {
                        let _ = reply.send(snapshot.clone());
                    }
                    Request::Metrics(reply) => {
                        *count.lock().unwrap() += 1;
                        let _ = reply.send(snapshot.clone());
                    }
                    Request::Dashboard { cursor, reply, .. } => {
                        let feed = crate::dashboard::feed::Feed::default();
                        let cluster = Default::default();
                        let _ = reply.send(feed.update(cursor, Vec::new(), cluster, 0.0, 0.0));
                    }
                    Request::Retire { selector, reply } => {
                        let chosen: Vec<&WorkerSnapshot> = match &selector {
                            RetireSelector::Count(n) => snapshot.workers.iter().take(*n).collect(),
                            RetireSelector::Workers(names) => snapshot
                                .workers
                                .iter()
                                .filter(|w| names.contains(&w.address) || names.contains(&w.name))
                                .collect(),
                        };
                        let answer = chosen
                            .into_iter()
                            .map(|w| RetiredWorker {
                                name: w.name.clone(),
                                address: w.address.clone(),
                                nthreads: w.nthreads,
                                memory_limit: w.memory_limit,
                            })
                            .collect();
                        record.lock().unwrap().push(selector);
                        let _ = reply.send(answer);
                    }
                }
            }
        });
        FakeScheduler {
            handle: SchedulerHandle::new(tx),
            retired,
            metrics_requests,
        }
    }

    /// A handle whose event loop has already gone.
    fn gone_scheduler() -> SchedulerHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        SchedulerHandle::new(tx)
    }

    /// A response as read off the wire.
    #[derive(Debug)]
    struct Answer {
        status: StatusCode,
        /// Header names lowercased.
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Answer {
        fn status(&self) -> StatusCode {
            self.status
        }

        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        }
    }

    /// Serves `routes(handle)` on a free port for one raw HTTP/1.1 exchange, then shuts down.
    ///
    /// warp's in-process `warp::test` needs warp's `test` feature, which the workspace does not
    /// enable, so these tests go through a real socket.
    async fn exchange(handle: &SchedulerHandle, raw_request: &[u8]) -> Answer {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, server) = serve(([127, 0, 0, 1], 0).into(), handle.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(raw_request).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        stop.send(()).unwrap();
        server.await.unwrap();
        parse_answer(&raw)
    }

    fn parse_answer(raw: &[u8]) -> Answer {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete response head");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let code = status_line
            .split(' ')
            .nth(1)
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let mut answer = Answer {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
            body: raw[split + 4..].to_vec(),
        };
        if answer.header("transfer-encoding") == Some("chunked") {
            answer.body = dechunk(&answer.body);
        }
        answer
    }

    fn dechunk(mut data: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let end = data.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = std::str::from_utf8(&data[..end]).unwrap();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap(), 16).unwrap();
            data = &data[end + 2..];
            if size == 0 {
                return body;
            }
            body.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }

    async fn get(handle: &SchedulerHandle, path: &str) -> Answer {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        exchange(handle, request.as_bytes()).await
    }

    async fn post(handle: &SchedulerHandle, path: &str, body: &[u8]) -> Answer {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        exchange(handle, &request).await
    }

    fn content_type(answer: &Answer) -> &str {
        answer.header("content-type").unwrap()
    }

    fn body_json(answer: &Answer) -> Value {
        assert_eq!(content_type(answer), "application/json");
        serde_json::from_slice(&answer.body).unwrap()
    }

    fn body_text(answer: &Answer) -> &str {
        std::str::from_utf8(&answer.body).unwrap()
    }

    #[tokio::test]
    async fn health_answers_ok_as_plain_text() {
        let s = fake_scheduler(snapshot());
        let response = get(&s.handle, "/health").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "text/plain; charset=utf-8");
        assert_eq!(body_text(&response), "ok");
    }

    #[tokio::test]
    async fn api_v1_answers_its_name() {
        let s = fake_scheduler(snapshot());
        let response = get(&s.handle, "/api/v1").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), "text/plain; charset=utf-8");
        assert_eq!(body_text(&response), "API V1");
    }

    #[tokio::test]
    async fn adaptive_target_answers_desired_workers() {
        let s = fake_scheduler(snapshot());
        let response = get(&s.handle, "/api/v1/adaptive_target").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_json(&response), json!({"workers": 7}));
    }

    #[tokio::test]
    async fn get_workers_lists_names_and_addresses_sorted_by_address() {
        let s = fake_scheduler(snapshot());
        let response = get(&s.handle, "/api/v1/get_workers").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body_json(&response),
            json!({
                "num_workers": 4,
                "workers": [
                    {"name": "w0", "address": "tcp://10.0.0.1:40000"},
                    {"name": "w1", "address": "tcp://10.0.0.2:40000"},
                    {"name": "w3", "address": "tcp://10.0.0.4:40000"},
                    {"name": "w2", "address": "tcp://[::1]:40000"},
                ],
            })
        );
    }

    #[tokio::test]
    async fn get_workers_without_workers() {
        let s = fake_scheduler(Snapshot::default());
        let response = get(&s.handle, "/api/v1/get_workers").await;
        assert_eq!(
            body_json(&response),
            json!({"num_workers": 0, "workers": []})
        );
    }

    #[tokio::test]
    async fn check_idle_answers_null_while_busy_and_a_time_when_idle() {
        let busy = fake_scheduler(snapshot());
        let response = get(&busy.handle, "/api/v1/check_idle").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_json(&response), json!({"idle_since": null}));

        let idle = fake_scheduler(Snapshot {
            idle_since: Some(1_767_225_700.25),
            ..snapshot()
        });
        let response = get(&idle.handle, "/api/v1/check_idle").await;
        assert_eq!(
            body_json(&response),
            json!({"idle_since": 1_767_225_700.25})
        );
    }

    #[tokio::test]
    async fn retire_by_count_answers_identities_keyed_by_address() {
        let s = fake_scheduler(snapshot());
        let response = post(&s.handle, "/api/v1/retire_workers", br#"{"n": 2}"#).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            body_json(&response),
            json!({
                "tcp://10.0.0.2:40000": {
                    "type": "Worker",
                    "id": "w1",
                    "host": "10.0.0.2",
                    "resources": {},
                    "name": "w1",
                    "nthreads": 2,
                    "memory_limit": 4u64 << 30,
                    "services": {},
                    "nanny": null,
                    "status": "closed",
                },
                "tcp://10.0.0.1:40000": {
                    "type": "Worker",
                    "id": "w0",
                    "host": "10.0.0.1",
                    "resources": {},
                    "name": "w0",
                    "nthreads": 2,
                    "memory_limit": 4u64 << 30,
                    "services": {},
                    "nanny": null,
                    "status": "closed",
                },
            })
        );
        assert_eq!(*s.retired.lock().unwrap(), vec![RetireSelector::Count(2)]);
    }

    #[tokio::test]
    async fn retire_by_address_or_name() {
        let s = fake_scheduler(snapshot());
        let response = post(
            &s.handle,
            "/api/v1/retire_workers",
            br#"{"workers": ["tcp://[::1]:40000", "w0", "tcp://10.9.9.9:1"]}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let answer = body_json(&response);
        let retired: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(retired, ["tcp://10.0.0.1:40000", "tcp://[::1]:40000"]);
        assert_eq!(answer["tcp://[::1]:40000"]["host"], "::1");
        assert_eq!(answer["tcp://10.0.0.1:40000"]["name"], "w0");
        assert_eq!(
            *s.retired.lock().unwrap(),
            vec![RetireSelector::Workers(vec![
                "tcp://[::1]:40000".to_owned(),
                "w0".to_owned(),
                "tcp://10.9.9.9:1".to_owned(),
            ])]
        );
    }

    #[tokio::test]
    async fn retire_with_nothing_matched_answers_an_empty_object() {
        let s = fake_scheduler(snapshot());
        for body in [
            &br#"{"workers": []}"#[..],
            br#"{"n": 0}"#,
            br#"{"workers": ["nobody"]}"#,
        ] {
            let response = post(&s.handle, "/api/v1/retire_workers", body).await;
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(body_json(&response), json!({}));
        }
    }

    #[tokio::test]
    async fn retire_ignores_other_keys_as_dask_does() {
        let s = fake_scheduler(snapshot());
        let response = post(
            &s.handle,
            "/api/v1/retire_workers",
            br#"{"n": 1, "close_workers": true}"#,
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(*s.retired.lock().unwrap(), vec![RetireSelector::Count(1)]);
    }

    #[tokio::test]
    async fn bad_retire_bodies_are_400_naming_the_problem() {
        let cases: [(&[u8], &str); 14] = [
            (b"", "the body is empty"),
            (b"  \n", "the body is empty"),
            (b"n=2", "the body is not JSON"),
            (br#"{"n": 2"#, "the body is not JSON"),
            (
                b"[1, 2]",
                r#"must be a JSON object with "n" or "workers", not [1,2]"#,
            ),
            (b"{}", r#"names neither "n""#),
            (br#"{"nn": 1}"#, r#"names neither "n""#),
            (br#"{"n": 1, "workers": []}"#, r#"both "n" and "workers""#),
            (
                br#"{"n": -1}"#,
                r#""n" must be a non-negative integer, not -1"#,
            ),
            (
                br#"{"n": 1.5}"#,
                r#""n" must be a non-negative integer, not 1.5"#,
            ),
            (
                br#"{"n": "2"}"#,
                r#""n" must be a non-negative integer, not "2""#,
            ),
            (
                br#"{"n": null}"#,
                r#""n" must be a non-negative integer, not null"#,
            ),
            (
                br#"{"workers": "tcp://10.0.0.1:40000"}"#,
                r#""workers" must be a list of worker addresses or names, not "tcp://10.0.0.1:40000""#,
            ),
            (
                br#"{"workers": ["w0", 7]}"#,
                r#""workers"[1] must be a string (a worker address or name), not 7"#,
            ),
        ];
        let s = fake_scheduler(snapshot());
        for (body, want) in cases {
            let response = post(&s.handle, "/api/v1/retire_workers", body).await;
            let shown = String::from_utf8_lossy(body);
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "body {shown:?}");
            let answer = body_json(&response);
            let message = answer["Error"].as_str().unwrap();
            assert!(
                message.contains(want),
                "body {shown:?}: {message:?} lacks {want:?}"
            );
            assert_eq!(answer.as_object().unwrap().len(), 1, "body {shown:?}");
        }
        assert!(s.retired.lock().unwrap().is_empty(), "nothing is retired");
    }

    #[tokio::test]
    async fn long_values_are_shortened_in_error_messages() {
        let s = fake_scheduler(snapshot());
        let body = format!(r#"{{"n": "{}"}}"#, "x".repeat(1000));
        let response = post(&s.handle, "/api/v1/retire_workers", body.as_bytes()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let answer = body_json(&response);
        let message = answer["Error"].as_str().unwrap();
        assert!(message.ends_with('…'), "{message}");
        assert!(message.len() < 200, "{message}");
    }

    #[tokio::test]
    async fn announced_oversized_retire_body_is_413_before_reading_it() {
        let s = fake_scheduler(snapshot());
        let request = b"POST /api/v1/retire_workers HTTP/1.1\r\nHost: localhost\r\n\
            Connection: close\r\nContent-Length: 1000000\r\n\r\n";
        let response = exchange(&s.handle, request).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let message = body_json(&response)["Error"].as_str().unwrap().to_owned();
        assert!(message.contains("larger than 65536 bytes"), "{message}");
        assert!(s.retired.lock().unwrap().is_empty());
    }

    /// A body stream of `n` chunks of `size` bytes each, as a chunked upload arrives.
    struct Chunks {
        left: usize,
        size: usize,
    }

    impl Stream for Chunks {
        type Item = Result<bytes::Bytes, warp::Error>;

        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            if self.left == 0 {
                return std::task::Poll::Ready(None);
            }
            self.left -= 1;
            std::task::Poll::Ready(Some(Ok(bytes::Bytes::from(vec![b' '; self.size]))))
        }
    }

    #[tokio::test]
    async fn bodies_without_a_length_are_capped_while_read() {
        let read = read_body(Chunks {
            left: 16,
            size: 4096,
        })
        .await
        .unwrap();
        assert_eq!(read.len(), MAX_BODY_BYTES);
        let too_long = read_body(Chunks {
            left: 17,
            size: 4096,
        })
        .await;
        assert!(matches!(too_long, Err(ApiError::BodyTooLarge)));
    }

    #[tokio::test]
    async fn metrics_are_rendered_from_a_metrics_snapshot() {
        let s = fake_scheduler(snapshot());
        let response = get(&s.handle, "/metrics").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(content_type(&response), METRICS_CONTENT_TYPE);
        let text = body_text(&response);
        // The families and their values are tested in `metrics`; here, that the scrape reads
        // the scheduler's answer to a metrics request.
        for sample in [
            "dask_scheduler_clients 2",
            "dask_scheduler_desired_workers 7",
            r#"dask_scheduler_workers{state="idle"} 1.0"#,
            r#"dask_scheduler_workers{state="retiring"} 1.0"#,
            r#"dask_scheduler_tasks{state="no-worker"} 8.0"#,
            "dask_scheduler_tasks_forgotten_total 11",
            "dask_scheduler_workers_added_total 5",
            r#"dask_scheduler_tasks_compute_seconds_total{task_prefix_name="inc"} 1.5"#,
            "rask_scheduler_transfer_bytes_total 4096",
            "rask_scheduler_tasks_speculated_total 3",
        ] {
            assert!(
                text.lines().any(|line| line == sample),
                "no {sample:?} in\n{text}"
            );
        }
        assert_eq!(*s.metrics_requests.lock().unwrap(), 1);
        assert!(text.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn every_endpoint_that_asks_the_scheduler_is_503_when_it_is_gone() {
        let handle = gone_scheduler();
        for path in [
            "/api/v1/adaptive_target",
            "/api/v1/get_workers",
            "/api/v1/check_idle",
            "/metrics",
        ] {
            let response = get(&handle, path).await;
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
            assert_eq!(
                body_json(&response),
                json!({"Error": "the scheduler is shutting down"}),
                "{path}"
            );
        }
        let response = post(&handle, "/api/v1/retire_workers", br#"{"n": 1}"#).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body_json(&response),
            json!({"Error": "the scheduler is shutting down"})
        );
        // Liveness does not depend on the event loop.
        assert_eq!(get(&handle, "/health").await.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn a_scheduler_that_drops_the_request_is_503() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
        tokio::spawn(async move {
            // Receive, then drop the reply sender without answering, as a loop shutting down does.
            while let Some(request) = rx.recv().await {
                drop(request);
            }
        });
        let handle = SchedulerHandle::new(tx);
        let response = get(&handle, "/api/v1/adaptive_target").await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn unknown_paths_are_404_and_wrong_methods_405() {
        let s = fake_scheduler(snapshot());
        for path in [
            "/status/nope",
            "/nope",
            "/api/v2",
            "/api/v1/adaptive_target/extra",
            "/healthz",
        ] {
            let response = get(&s.handle, path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(
                body_json(&response)["Error"]
                    .as_str()
                    .unwrap()
                    .contains("no such endpoint")
            );
        }
        let response = get(&s.handle, "/api/v1/retire_workers").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let response = post(&s.handle, "/api/v1/get_workers", b"{}").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(s.retired.lock().unwrap().is_empty());
    }

    #[test]
    fn host_of_worker_addresses() {
        assert_eq!(host("tcp://10.0.0.5:40000"), "10.0.0.5");
        assert_eq!(host("tls://worker-0.ns.svc:40000"), "worker-0.ns.svc");
        assert_eq!(host("tcp://[::1]:40000"), "::1");
        assert_eq!(host("10.0.0.5:40000"), "10.0.0.5");
        assert_eq!(host("tcp://10.0.0.5"), "10.0.0.5");
    }

    #[tokio::test]
    async fn serve_answers_health_over_tcp_and_stops_on_shutdown() {
        let s = fake_scheduler(snapshot());
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, server) = serve(([127, 0, 0, 1], 0).into(), s.handle.clone(), async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        assert_ne!(addr.port(), 0);

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains("content-type: text/plain; charset=utf-8\r\n"),
            "{response}"
        );
        assert!(response.ends_with("\r\n\r\nok"), "{response}");

        stop.send(()).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .expect("the server stops after shutdown")
            .unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn serve_reports_an_address_in_use() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = serve(addr, gone_scheduler(), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }

    #[test]
    fn parse_retire_body_selects_workers() {
        assert_eq!(
            parse_retire_body(br#"{"n": 3}"#),
            Ok(RetireSelector::Count(3))
        );
        assert_eq!(
            parse_retire_body(br#"{"workers": ["a", "tcp://b:1"]}"#),
            Ok(RetireSelector::Workers(vec![
                "a".to_owned(),
                "tcp://b:1".to_owned()
            ]))
        );
        assert_eq!(parse_retire_body(b"{}"), Err(BadRetireBody::Neither));
    }

    fn admit(
        auth: &ApiAuth,
        tls: bool,
        method: &str,
        path: &str,
        cert: bool,
        header: Option<&str>,
    ) -> Result<(), Denied> {
        let method = warp::http::Method::from_bytes(method.as_bytes()).unwrap();
        let credentials = Credentials {
            certificate: cert,
            authorization: header.map(str::as_bytes),
        };
        auth.admit(tls, &method, path, &credentials)
    }

    #[test]
    fn without_tls_or_a_token_the_api_is_open_as_dask_s() {
        let open = ApiAuth::default();
        assert_eq!(
            admit(&open, false, "POST", "/api/v1/retire_workers", false, None),
            Ok(())
        );
    }

    #[test]
    fn changing_the_cluster_needs_a_certificate_or_the_token() {
        let auth = ApiAuth {
            token: Some("s3cret".into()),
            read_only_open: true,
        };
        let retire = "/api/v1/retire_workers";
        for tls in [false, true] {
            assert_eq!(
                admit(&auth, tls, "POST", retire, false, None),
                Err(Denied::Missing { mutating: true })
            );
            assert_eq!(
                admit(&auth, tls, "POST", retire, false, Some("Bearer nope")),
                Err(Denied::WrongToken)
            );
            assert_eq!(
                admit(&auth, tls, "POST", retire, false, Some("Basic s3cret")),
                Err(Denied::Missing { mutating: true })
            );
            assert_eq!(
                admit(&auth, tls, "POST", retire, false, Some("Bearer s3cret")),
                Ok(())
            );
        }
        assert_eq!(admit(&auth, true, "POST", retire, true, None), Ok(()));
        // TLS without a token: only a certificate admits.
        let tls_only = ApiAuth::default();
        assert_eq!(
            admit(
                &tls_only,
                true,
                "POST",
                retire,
                false,
                Some("Bearer anything")
            ),
            Err(Denied::WrongToken)
        );
        assert_eq!(admit(&tls_only, true, "POST", retire, true, None), Ok(()));
    }

    #[test]
    fn read_only_routes_are_open_only_by_the_flag_and_health_always() {
        let closed = ApiAuth {
            token: Some("t".into()),
            read_only_open: false,
        };
        assert_eq!(
            admit(&closed, true, "GET", "/metrics", false, None),
            Err(Denied::Missing { mutating: false })
        );
        assert_eq!(
            admit(&closed, true, "GET", "/metrics", false, Some("Bearer t")),
            Ok(())
        );
        assert_eq!(admit(&closed, true, "GET", "/health", false, None), Ok(()));
        let open = ApiAuth {
            read_only_open: true,
            ..closed
        };
        assert_eq!(admit(&open, true, "GET", "/metrics", false, None), Ok(()));
        assert_eq!(
            admit(&open, true, "GET", "/api/v1/get_workers", false, None),
            Ok(())
        );
    }

    #[test]
    fn the_token_is_not_shown_in_debug_output() {
        let auth = ApiAuth {
            token: Some("s3cret".into()),
            read_only_open: false,
        };
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
