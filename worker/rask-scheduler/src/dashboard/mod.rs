//! The dashboard page, served beside the HTTP API at Dask's path:
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /` | a redirect to `/status` |
//! | `GET /status` | the page (HTML; its script and style below, all compiled into the binary) |
//! | `GET /status/dashboard.js`, `GET /status/dashboard.css` | the page's script and style |
//! | `GET /status/events` | server-sent events: one `update` event every [`UPDATE_EVERY`] |
//!
//! Each `update` is the JSON of a [`feed::Update`]: the workers table, the cluster's task counts
//! (with the adaptive target every fourth update, 2 s), the progress of the current
//! computations per task prefix, the task-stream events since the previous update (with the
//! names of the prefixes it refers to), the graph panel's news (the graph's structure once per
//! version, then only state changes; see [`graph`]) and the scheduler process's own CPU and
//! memory. Nothing is encoded unless a page is subscribed: each
//! subscription asks the scheduler's event loop for its next update on its own timer, and stops
//! when the page goes away. When the scheduler stops, the stream ends; the browser's
//! `EventSource` reconnects (after the `retry` time sent with the first event) and the page says
//! it lost the scheduler until then.

pub mod feed;
pub mod graph;
pub mod task;

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc;
use warp::http::Uri;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply, Stream};

use crate::SchedulerHandle;
use feed::Cursor;

/// How often a subscribed page gets an update.
pub const UPDATE_EVERY: Duration = Duration::from_millis(500);

/// Every how many updates carry the adaptive target (every 2 s): computing it walks every queued
/// task, too much for every update when a million are queued.
const TARGET_EVERY: u32 = 4;

/// How soon a page's `EventSource` reconnects after losing the scheduler.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

const INDEX_HTML: &str = include_str!("assets/index.html");
const DASHBOARD_JS: &str = include_str!("assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("assets/dashboard.css");

/// The page's routes. Unknown paths are rejected, for the caller's other routes or its
/// rejection handler.
pub fn routes(
    handle: SchedulerHandle,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    let root = warp::path::end()
        .and(warp::get())
        .map(|| warp::redirect::found(Uri::from_static("/status")).into_response());
    let page = warp::path!("status")
        .and(warp::get())
        .map(|| asset(INDEX_HTML, "text/html; charset=utf-8"));
    let script = warp::path!("status" / "dashboard.js")
        .and(warp::get())
        .map(|| asset(DASHBOARD_JS, "text/javascript; charset=utf-8"));
    let style = warp::path!("status" / "dashboard.css")
        .and(warp::get())
        .map(|| asset(DASHBOARD_CSS, "text/css; charset=utf-8"));
    let events = warp::path!("status" / "events")
        .and(warp::get())
        .map(move || subscribe(handle.clone()));
    root.or(page)
        .unify()
        .or(script)
        .unify()
        .or(style)
        .unify()
        .or(events)
        .unify()
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = Response::new(body.into());
    r.headers_mut().insert(
        CONTENT_TYPE,
        warp::http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// A page's stream of updates: fed by a task of its own until the page goes away or the
/// scheduler stops.
fn subscribe(handle: SchedulerHandle) -> Response {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(feed_page(handle, tx));
    warp::sse::reply(warp::sse::keep_alive().stream(Updates(rx))).into_response()
}

async fn feed_page(handle: SchedulerHandle, tx: mpsc::Sender<Result<Event, Infallible>>) {
    let mut cursor = Cursor::default();
    let mut tick = tokio::time::interval(UPDATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    let mut n: u32 = 0;
    loop {
        tick.tick().await;
        let with_target = n.is_multiple_of(TARGET_EVERY);
        n = n.wrapping_add(1);
        let Ok(update) = handle.dashboard(cursor, with_target).await else {
            return; // the scheduler is stopping: the stream ends and the page says so
        };
        cursor = update.cursor;
        let event = match Event::default().event("update").json_data(&update) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a dashboard update");
                return;
            }
        };
        let event = if std::mem::take(&mut first) {
            event.retry(RECONNECT_AFTER)
        } else {
            event
        };
        if tx.send(Ok(event)).await.is_err() {
            return; // the page went away
        }
    }
}

/// The receiving end of a page's updates, as the stream warp's SSE reply reads.
struct Updates(mpsc::Receiver<Result<Event, Infallible>>);

impl Stream for Updates {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use crate::server::{Scheduler, SchedulerConfig};

    async fn scheduler() -> (Scheduler, SocketAddr) {
        let s = Scheduler::start(SchedulerConfig {
            dashboard: Some(([127, 0, 0, 1], 0).into()),
            ..SchedulerConfig::default()
        })
        .await
        .unwrap();
        let http = s.dashboard_address().unwrap();
        (s, http)
    }

    /// Sends a GET and returns the connection, the request written.
    async fn open(http: SocketAddr, path: &str) -> TcpStream {
        let mut c = TcpStream::connect(http).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        c
    }

    async fn get(http: SocketAddr, path: &str) -> String {
        let mut c = open(http, path).await;
        let mut raw = Vec::new();
        c.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    }

    /// Reads from an event stream until `text` holds `n` complete events.
    async fn read_events(c: &mut TcpStream, text: &mut String, n: usize) {
        let mut buf = [0u8; 65536];
        while text.matches("event:update").count() < n || !text.ends_with("\n\n\r\n") {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut buf))
                .await
                .expect("an update within 5 s")
                .unwrap();
            assert!(got > 0, "the stream ended early: {text}");
            text.push_str(std::str::from_utf8(&buf[..got]).unwrap());
        }
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_and_root_redirects_to_it() {
        let (s, http) = scheduler().await;
        let root = get(http, "/").await;
        assert!(root.starts_with("HTTP/1.1 302"), "{root}");
        assert!(
            root.to_ascii_lowercase().contains("location: /status\r\n"),
            "{root}"
        );
        let page = get(http, "/status").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("content-type: text/html; charset=utf-8"));
        assert!(page.contains(r#"<script src="/status/dashboard.js">"#));
        assert!(page.contains(r#"href="/status/dashboard.css""#));
        let js = get(http, "/status/dashboard.js").await;
        assert!(js.contains("content-type: text/javascript"), "{js}");
        assert!(js.contains("new EventSource('/status/events')"));
        let css = get(http, "/status/dashboard.css").await;
        assert!(css.contains("content-type: text/css"));
        // The API beside it is untouched.
        assert!(get(http, "/health").await.ends_with("ok"));
        s.shutdown().await;
    }

    #[tokio::test]
    async fn events_are_json_updates_and_end_when_the_scheduler_stops() {
        let (s, http) = scheduler().await;
        let mut c = open(http, "/status/events").await;
        let mut text = String::new();
        read_events(&mut c, &mut text, 2).await;
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("content-type: text/event-stream"), "{text}");
        // The first event tells the browser how soon to reconnect; later ones do not repeat it.
        assert_eq!(text.matches("retry:1000").count(), 1, "{text}");
        let updates: Vec<serde_json::Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(updates.len(), 2, "{text}");
        for u in &updates {
            // No task has run: no graph news.
            assert!(
                u.get("graph").is_none() || u["graph"]["nodes"] == serde_json::json!([]),
                "{u}"
            );
            assert_eq!(u["workers"], serde_json::json!([]));
            assert_eq!(u["progress"], serde_json::json!([]));
            assert_eq!(u["stream"], serde_json::json!([]));
            assert!(u["started_at"].as_f64().unwrap() > 0.0);
        }
        // The scheduler's own figures: its RSS from the first second on, its CPU from the second
        // reading.
        read_events(&mut c, &mut text, 6).await;
        let last: serde_json::Value = serde_json::from_str(
            text.lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .next_back()
                .unwrap(),
        )
        .unwrap();
        assert!(
            last["scheduler"]["rss"].as_u64().unwrap() > 1 << 20,
            "{last}"
        );
        assert!(
            last["scheduler"]["cpu_percent"].as_f64().unwrap() >= 0.0,
            "{last}"
        );
        let (t0, t1) = (
            updates[0]["now"].as_f64().unwrap(),
            updates[1]["now"].as_f64().unwrap(),
        );
        assert!(t1 - t0 >= 0.4, "updates {t0} and {t1} came too fast");
        // The scheduler stops: the stream ends instead of hanging.
        s.shutdown().await;
        let mut rest = Vec::new();
        tokio::time::timeout(std::time::Duration::from_secs(5), c.read_to_end(&mut rest))
            .await
            .expect("the stream ends when the scheduler stops")
            .unwrap();
    }
}
