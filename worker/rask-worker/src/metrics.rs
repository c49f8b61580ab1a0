//! The worker's dashboard port: `/health` and `/metrics`, the latter with Dask's `dask_worker_*`
//! families (`distributed/http/worker/prometheus/core.py`), served with warp in the Prometheus
//! text format 0.0.4, as Dask's worker serves them.
//!
//! The text format 0.0.4 and not OpenMetrics (which the scheduler's `/metrics` speaks): Dask's
//! worker has gauges and counters whose names differ only by `_total`
//! (`dask_worker_transfer_incoming_count` and `dask_worker_transfer_incoming_count_total`), which
//! OpenMetrics would read as one family twice.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `dask_worker_tasks` | gauge | `state`: `waiting`, `ready`, `executing`, `flight`, `memory`, `disk` |
//! | `dask_worker_gc_collection_seconds_total` | counter | |
//! | `dask_worker_threads` | gauge | |
//! | `dask_worker_latency_seconds` | gauge | |
//! | `dask_worker_memory_bytes` | gauge | `type`: `managed`, `unmanaged`, `spilled` |
//! | `dask_worker_transfer_incoming_bytes` | gauge | |
//! | `dask_worker_transfer_incoming_count` | gauge | |
//! | `dask_worker_transfer_incoming_count_total` | counter | |
//! | `dask_worker_transfer_outgoing_bytes` | gauge | |
//! | `dask_worker_transfer_outgoing_count` | gauge | |
//! | `dask_worker_transfer_outgoing_bytes_total` | counter | |
//! | `dask_worker_transfer_outgoing_count_total` | counter | |
//! | `dask_worker_spill_bytes_total` | counter | `activity`: `memory-read`, `disk-read`, `disk-write` |
//! | `dask_worker_spill_count_total` | counter | `activity`: `memory-read`, `disk-read`, `disk-write` |
//! | `dask_worker_spill_time_seconds_total` | counter | `activity`: `disk-read`, `disk-write` |
//! | `dask_worker_tick_duration_maximum_seconds` | gauge | |
//! | `dask_worker_tick_count_total` | counter | |
//!
//! Where rask differs: `dask_worker_gc_collection_seconds_total` is always 0 (rask has no
//! garbage collector); spilling has no `pickle` and `unpickle` times (results are stored encoded
//! and spilled as they are); `dask_worker_latency_seconds` starts at the first heartbeat's round
//! trip rather than at Dask's 1 ms, then moves as Dask's does (5% of each new round trip); the
//! bytes of inputs being copied for a retiring peer count as 0 until they arrive (the scheduler
//! does not send their sizes). Dask's optional families (`gil_contention`, and the `crick`
//! medians) are not served.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use warp::http::StatusCode;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::store::SpillActivity;

/// The content type of `/metrics`: the Prometheus text format 0.0.4, as Dask's worker answers.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Transfers of results between this worker and its peers, counted by the tasks that carry
/// them out (a fetch from a peer, a peer's request served); read when metrics are scraped.
#[derive(Debug, Default)]
pub(crate) struct Transfers {
    incoming_open: AtomicU64,
    incoming_total: AtomicU64,
    outgoing_open: AtomicU64,
    outgoing_open_bytes: AtomicU64,
    outgoing_total: AtomicU64,
    outgoing_bytes_total: AtomicU64,
}

impl Transfers {
    /// A request to a peer for results starts; it counts as open until the guard is dropped.
    pub(crate) fn incoming(&self) -> Incoming<'_> {
        self.incoming_open.fetch_add(1, Ordering::Relaxed);
        Incoming(self)
    }

    /// Results of `nbytes` start going to a peer or client; open until the guard is dropped.
    /// Counted in the totals at once: Dask counts transfers that fail part way too.
    pub(crate) fn outgoing(&self, nbytes: u64) -> Outgoing<'_> {
        self.outgoing_open.fetch_add(1, Ordering::Relaxed);
        self.outgoing_open_bytes
            .fetch_add(nbytes, Ordering::Relaxed);
        self.outgoing_total.fetch_add(1, Ordering::Relaxed);
        self.outgoing_bytes_total
            .fetch_add(nbytes, Ordering::Relaxed);
        Outgoing(self, nbytes)
    }

    fn read(&self) -> TransferCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransferCounts {
            incoming_open: get(&self.incoming_open),
            incoming_total: get(&self.incoming_total),
            outgoing_open: get(&self.outgoing_open),
            outgoing_open_bytes: get(&self.outgoing_open_bytes),
            outgoing_total: get(&self.outgoing_total),
            outgoing_bytes_total: get(&self.outgoing_bytes_total),
        }
    }
}

/// An open request to a peer (see [`Transfers::incoming`]).
pub(crate) struct Incoming<'a>(&'a Transfers);

impl Drop for Incoming<'_> {
    fn drop(&mut self) {
        self.0.incoming_open.fetch_sub(1, Ordering::Relaxed);
        self.0.incoming_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Results being sent to a peer (see [`Transfers::outgoing`]).
pub(crate) struct Outgoing<'a>(&'a Transfers, u64);

impl Drop for Outgoing<'_> {
    fn drop(&mut self) {
        self.0.outgoing_open.fetch_sub(1, Ordering::Relaxed);
        self.0
            .outgoing_open_bytes
            .fetch_sub(self.1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TransferCounts {
    incoming_open: u64,
    incoming_total: u64,
    outgoing_open: u64,
    outgoing_open_bytes: u64,
    outgoing_total: u64,
    outgoing_bytes_total: u64,
}

/// Everything `/metrics` shows, read by the worker's event loop in one go.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct WorkerMetrics {
    /// Tasks by Dask's worker state name, in a fixed order.
    pub tasks: Vec<(&'static str, usize)>,
    pub nthreads: usize,
    pub latency_s: f64,
    /// The process's resident set (`None`: not measurable here).
    pub rss: Option<u64>,
    /// Bytes of results in memory and on disk.
    pub managed_bytes: u64,
    pub spilled_bytes: u64,
    /// Bytes of the inputs being fetched from peers.
    pub incoming_bytes: u64,
    pub transfers: TransferCounts,
    pub spill: SpillActivity,
    pub tick_count: u64,
    pub tick_max_s: f64,
}

impl WorkerMetrics {
    pub(crate) fn with_transfers(mut self, transfers: &Transfers) -> Self {
        self.transfers = transfers.read();
        self
    }
}

/// Writes the families of one worker in the Prometheus text format 0.0.4.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (label, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{label}=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.0.push_str(r"\\"),
                        '"' => self.0.push_str(r#"\""#),
                        '\n' => self.0.push_str(r"\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value:?}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Renders one worker's metrics with Dask's names, in Dask's order.
pub(crate) fn render(m: &WorkerMetrics) -> String {
    let mut t = Text(String::with_capacity(4096));
    t.family(
        "dask_worker_tasks",
        "gauge",
        "Tasks on the worker, by state",
    );
    for (state, n) in &m.tasks {
        t.sample("dask_worker_tasks", &[("state", state)], *n as f64);
    }
    t.one(
        "dask_worker_gc_collection_seconds_total",
        "counter",
        "Time spent collecting garbage: always 0, rask has no garbage collector",
        0.0,
    );
    t.one(
        "dask_worker_threads",
        "gauge",
        "Threads running tasks",
        m.nthreads as f64,
    );
    t.one(
        "dask_worker_latency_seconds",
        "gauge",
        "Round trip of a heartbeat to the scheduler, averaged",
        m.latency_s,
    );
    // As Dask: managed memory is at most the process's, the rest of the process is unmanaged.
    let (managed, unmanaged) = match m.rss {
        Some(rss) => {
            let managed = m.managed_bytes.min(rss);
            (managed, rss - managed)
        }
        None => (m.managed_bytes, 0),
    };
    t.family(
        "dask_worker_memory_bytes",
        "gauge",
        "Memory of the worker: results in memory (managed), the rest of the process \
         (unmanaged), results on disk (spilled)",
    );
    for (kind, bytes) in [
        ("managed", managed),
        ("unmanaged", unmanaged),
        ("spilled", m.spilled_bytes),
    ] {
        t.sample("dask_worker_memory_bytes", &[("type", kind)], bytes as f64);
    }
    let x = &m.transfers;
    t.one(
        "dask_worker_transfer_incoming_bytes",
        "gauge",
        "Bytes of the results being fetched from peers",
        m.incoming_bytes as f64,
    );
    t.one(
        "dask_worker_transfer_incoming_count",
        "gauge",
        "Requests for results open to peers",
        x.incoming_open as f64,
    );
    t.one(
        "dask_worker_transfer_incoming_count_total",
        "counter",
        "Requests for results made to peers, since the worker started",
        x.incoming_total as f64,
    );
    t.one(
        "dask_worker_transfer_outgoing_bytes",
        "gauge",
        "Bytes of results being sent to peers and clients",
        x.outgoing_open_bytes as f64,
    );
    t.one(
        "dask_worker_transfer_outgoing_count",
        "gauge",
        "Sends of results to peers and clients open",
        x.outgoing_open as f64,
    );
    t.one(
        "dask_worker_transfer_outgoing_bytes_total",
        "counter",
        "Bytes of results sent to peers and clients, since the worker started (failed sends \
         included)",
        x.outgoing_bytes_total as f64,
    );
    t.one(
        "dask_worker_transfer_outgoing_count_total",
        "counter",
        "Sends of results to peers and clients, since the worker started",
        x.outgoing_total as f64,
    );
    let s = &m.spill;
    t.family(
        "dask_worker_spill_bytes_total",
        "counter",
        "Bytes of results read from memory, read from disk and written to disk, since the \
         worker started",
    );
    for (activity, bytes) in [
        ("memory-read", s.memory_read_bytes),
        ("disk-read", s.disk_read_bytes),
        ("disk-write", s.disk_write_bytes),
    ] {
        let labels = [("activity", activity)];
        t.sample("dask_worker_spill_bytes_total", &labels, bytes as f64);
    }
    t.family(
        "dask_worker_spill_count_total",
        "counter",
        "Results read from memory, read from disk and written to disk, since the worker started",
    );
    for (activity, n) in [
        ("memory-read", s.memory_read_count),
        ("disk-read", s.disk_read_count),
        ("disk-write", s.disk_write_count),
    ] {
        let labels = [("activity", activity)];
        t.sample("dask_worker_spill_count_total", &labels, n as f64);
    }
    t.family(
        "dask_worker_spill_time_seconds_total",
        "counter",
        "Time spent reading results from disk and writing them, since the worker started",
    );
    for (activity, seconds) in [
        ("disk-read", s.disk_read_seconds),
        ("disk-write", s.disk_write_seconds),
    ] {
        let labels = [("activity", activity)];
        t.sample("dask_worker_spill_time_seconds_total", &labels, seconds);
    }
    t.one(
        "dask_worker_tick_duration_maximum_seconds",
        "gauge",
        "The longest time between two ticks of the worker's event loop since the last scrape",
        m.tick_max_s,
    );
    t.one(
        "dask_worker_tick_count_total",
        "counter",
        "Ticks of the worker's event loop, since it started",
        m.tick_count as f64,
    );
    t.0
}

/// Asks the worker's event loop for the figures of one scrape: `None` when it has stopped.
pub(crate) trait Ask: Fn() -> Option<oneshot::Receiver<WorkerMetrics>> {}

impl<F: Fn() -> Option<oneshot::Receiver<WorkerMetrics>>> Ask for F {}

/// The dashboard's routes: `/health` and `/metrics`; anything else is 404, another method 405.
fn routes(
    ask: impl Ask + Clone + Send + Sync + 'static,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let health = warp::path!("health")
        .and(warp::get())
        .map(|| text_reply(StatusCode::OK, "ok".to_owned(), "text/plain; charset=utf-8"));
    let metrics = warp::path!("metrics").and(warp::get()).then(move || {
        let answer = ask();
        async move { metrics(answer).await }
    });
    health
        .or(metrics)
        .unify()
        .recover(|rejection: warp::Rejection| async move {
            let (status, message) = if rejection.is_not_found() {
                (
                    StatusCode::NOT_FOUND,
                    "no such endpoint; see /health and /metrics",
                )
            } else {
                (
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method not allowed: /health and /metrics take GET",
                )
            };
            Ok::<_, Infallible>(text_reply(
                status,
                message.to_owned(),
                "text/plain; charset=utf-8",
            ))
        })
        .unify()
}

async fn metrics(answer: Option<oneshot::Receiver<WorkerMetrics>>) -> Response {
    let Some(answer) = answer else {
        return gone();
    };
    match answer.await {
        Ok(m) => text_reply(StatusCode::OK, render(&m), METRICS_CONTENT_TYPE),
        Err(_) => gone(),
    }
}

fn gone() -> Response {
    text_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "the worker is shutting down".to_owned(),
        "text/plain; charset=utf-8",
    )
}

fn text_reply(status: StatusCode, text: String, content_type: &'static str) -> Response {
    let reply = warp::reply::with_header(text, CONTENT_TYPE, content_type);
    warp::reply::with_status(reply, status).into_response()
}

/// Binds `addr` (port 0 picks a free port) for the dashboard; fails only if it cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// How long a dashboard connection may take to send a request's headers (and stay idle between
/// requests) before it is closed, as the scheduler's API does by default.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the dashboard on `listener` until `shutdown` resolves, asking the worker's event loop
/// with `ask` for each scrape.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    ask: impl Ask + Clone + Send + Sync + 'static,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(accept(listener, routes(ask), shutdown, HEADER_TIMEOUT))
}

/// Serves each connection with hyper directly, with a timer, so that a header timeout applies
/// (`warp::serve` sets none: a client trickling its headers would hold its connection for ever);
/// as the scheduler's HTTP API does.
async fn accept<F>(
    listener: tokio::net::TcpListener,
    routes: F,
    shutdown: impl Future<Output = ()>,
    header_timeout: Duration,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "dashboard connection closed");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> WorkerMetrics {
        let transfers = Transfers::default();
        let open_in = transfers.incoming();
        drop(transfers.incoming());
        let open_out = transfers.outgoing(300);
        drop(transfers.outgoing(50));
        let m = WorkerMetrics {
            tasks: vec![("waiting", 1), ("executing", 2)],
            nthreads: 4,
            latency_s: 0.25,
            rss: Some(1000),
            managed_bytes: 400,
            spilled_bytes: 70,
            incoming_bytes: 123,
            spill: SpillActivity {
                memory_read_count: 3,
                memory_read_bytes: 30,
                disk_read_count: 1,
                disk_read_bytes: 10,
                disk_read_seconds: 0.5,
                disk_write_count: 2,
                disk_write_bytes: 20,
                disk_write_seconds: 0.125,
            },
            tick_count: 9,
            tick_max_s: 0.0625,
            ..WorkerMetrics::default()
        }
        .with_transfers(&transfers);
        drop((open_in, open_out));
        m
    }

    #[test]
    fn every_family_is_rendered_with_dasks_names_types_and_values() {
        let text = render(&metrics());
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                r#"dask_worker_tasks{state="waiting"} 1.0"#,
                r#"dask_worker_tasks{state="executing"} 2.0"#,
                "dask_worker_gc_collection_seconds_total 0.0",
                "dask_worker_threads 4.0",
                "dask_worker_latency_seconds 0.25",
                r#"dask_worker_memory_bytes{type="managed"} 400.0"#,
                r#"dask_worker_memory_bytes{type="unmanaged"} 600.0"#,
                r#"dask_worker_memory_bytes{type="spilled"} 70.0"#,
                "dask_worker_transfer_incoming_bytes 123.0",
                "dask_worker_transfer_incoming_count 1.0",
                "dask_worker_transfer_incoming_count_total 1.0",
                "dask_worker_transfer_outgoing_bytes 300.0",
                "dask_worker_transfer_outgoing_count 1.0",
                "dask_worker_transfer_outgoing_bytes_total 350.0",
                "dask_worker_transfer_outgoing_count_total 2.0",
                r#"dask_worker_spill_bytes_total{activity="memory-read"} 30.0"#,
                r#"dask_worker_spill_bytes_total{activity="disk-read"} 10.0"#,
                r#"dask_worker_spill_bytes_total{activity="disk-write"} 20.0"#,
                r#"dask_worker_spill_count_total{activity="memory-read"} 3.0"#,
                r#"dask_worker_spill_count_total{activity="disk-read"} 1.0"#,
                r#"dask_worker_spill_count_total{activity="disk-write"} 2.0"#,
                r#"dask_worker_spill_time_seconds_total{activity="disk-read"} 0.5"#,
                r#"dask_worker_spill_time_seconds_total{activity="disk-write"} 0.125"#,
                "dask_worker_tick_duration_maximum_seconds 0.0625",
                "dask_worker_tick_count_total 9.0",
            ],
            "{text}"
        );
        for (family, kind) in [
            ("dask_worker_tasks", "gauge"),
            ("dask_worker_gc_collection_seconds_total", "counter"),
            ("dask_worker_transfer_incoming_count", "gauge"),
            ("dask_worker_transfer_incoming_count_total", "counter"),
            ("dask_worker_spill_time_seconds_total", "counter"),
            ("dask_worker_tick_count_total", "counter"),
        ] {
            assert!(
                text.contains(&format!("# TYPE {family} {kind}\n")),
                "{family}"
            );
            assert!(text.contains(&format!("# HELP {family} ")), "{family}");
        }
    }

    #[test]
    fn transfers_close_when_their_guards_drop() {
        let transfers = Transfers::default();
        {
            let _a = transfers.incoming();
            let _b = transfers.outgoing(10);
            let open = transfers.read();
            assert_eq!((open.incoming_open, open.incoming_total), (1, 0));
            assert_eq!((open.outgoing_open, open.outgoing_open_bytes), (1, 10));
            assert_eq!((open.outgoing_total, open.outgoing_bytes_total), (1, 10));
        }
        assert_eq!(
            transfers.read(),
            TransferCounts {
                incoming_open: 0,
                incoming_total: 1,
                outgoing_open: 0,
                outgoing_open_bytes: 0,
                outgoing_total: 1,
                outgoing_bytes_total: 10,
            }
        );
    }

    #[test]
    fn memory_without_a_measurable_process_is_all_managed() {
        let m = WorkerMetrics {
            rss: None,
            managed_bytes: 400,
            ..WorkerMetrics::default()
        };
        let text = render(&m);
        assert!(text.contains("dask_worker_memory_bytes{type=\"managed\"} 400.0\n"));
        assert!(text.contains("dask_worker_memory_bytes{type=\"unmanaged\"} 0.0\n"));
        // More results than the process holds (shared pages): managed is capped at the process.
        let m = WorkerMetrics {
            rss: Some(100),
            managed_bytes: 400,
            ..WorkerMetrics::default()
        };
        let text = render(&m);
        assert!(text.contains("dask_worker_memory_bytes{type=\"managed\"} 100.0\n"));
        assert!(text.contains("dask_worker_memory_bytes{type=\"unmanaged\"} 0.0\n"));
    }

    /// One raw HTTP/1.1 exchange with a dashboard served by `ask`: the status line and the body.
    async fn exchange(
        ask: impl Ask + Clone + Send + Sync + 'static,
        request: &str,
    ) -> (String, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = serve(listener, ask, async {
            let _ = stopped.await;
        });
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        stop.send(()).unwrap();
        server.await.unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    }

    #[tokio::test]
    async fn the_dashboard_answers_health_metrics_and_errors() {
        let answering = || {
            let (reply, answer) = oneshot::channel();
            let _ = reply.send(metrics());
            Some(answer)
        };
        let (status, body) = exchange(answering, &get("/health")).await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", "ok"));
        let (status, body) = exchange(answering, &get("/metrics")).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, render(&metrics()));
        let (status, _) = exchange(answering, &get("/nope")).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let post =
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let (status, _) = exchange(answering, post).await;
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    }

    #[tokio::test]
    async fn metrics_of_a_stopped_worker_are_503() {
        let (status, body) = exchange(|| None, &get("/metrics")).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "the worker is shutting down");
        // A loop that drops the request without answering.
        let dropping = || Some(oneshot::channel::<WorkerMetrics>().1);
        let (status, _) = exchange(dropping, &get("/metrics")).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        // Liveness does not depend on the loop.
        let (status, _) = exchange(|| None, &get("/health")).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
    }

    #[tokio::test]
    async fn a_client_trickling_its_headers_is_cut_off_and_others_are_answered() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = bind(([127, 0, 0, 1], 0).into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answering = || {
            let (reply, answer) = oneshot::channel();
            let _ = reply.send(metrics());
            Some(answer)
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(accept(
            listener,
            routes(answering),
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(300),
        ));
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let trickle = async {
            for b in b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().cycle() {
                if slow.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
                if started.elapsed() > Duration::from_secs(5) {
                    panic!("the trickling client was never cut off");
                }
            }
        };
        let other = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(get("/health").as_bytes()).await.unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).await.unwrap();
            assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        };
        tokio::join!(trickle, other);
        assert!(started.elapsed() < Duration::from_secs(5));
        stop.send(()).unwrap();
        server.await.unwrap();
    }

    #[test]
    fn label_values_are_escaped() {
        let mut t = Text(String::new());
        t.sample("m", &[("a", "x\"y\\z\nw"), ("b", "c")], 1.5);
        assert_eq!(t.0, "m{a=\"x\\\"y\\\\z\\nw\",b=\"c\"} 1.5\n");
    }
}
