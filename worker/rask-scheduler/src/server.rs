//! The scheduler's networking: accepts client and worker connections, feeds their messages to the
//! state machine in one event loop, and routes what the state machine emits back to connections.
//! All of it runs on one thread of its own (`rask-scheduler`, a current-thread runtime); only the
//! HTTP API stays on the caller's runtime and talks to the loop through requests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustc_hash::FxHashMap;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::dashboard::feed::SchedulerRow;
use crate::state::{self, ClientId, Outbox, RequestId, State, Wanted, WorkerId};
use crate::{Request, RetiredWorker, SchedulerHandle, Snapshot, TickSnapshot, http};
use rask_core::Key;
use rask_core::net;
use rask_core::process::{CpuMeter, process_cpu_seconds, process_rss};
use rask_core::protocol::{Envelope, FrameError, FromScheduler, ToScheduler, encode_frame};
use rask_core::ticks::{TICK_INTERVAL, Ticks};
use rask_core::tls::TlsConfig;

/// How to start a scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Address to listen on for clients and workers (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Address for the HTTP API and metrics (`None`: no HTTP server).
    pub dashboard: Option<SocketAddr>,
    /// Host name to advertise in the scheduler's address (defaults to the listen IP).
    pub advertise_host: Option<String>,
    pub policy: state::Config,
    /// What the scheduler accepts from its peers (the graph size limit is in `policy`).
    pub limits: Limits,
    /// Mutual TLS on the scheduler's port and its HTTP API (`tls://` address); `None`: plain
    /// TCP (docs/security.md).
    pub tls: Option<TlsConfig>,
    /// Who may use the HTTP API (docs/security.md).
    pub api_auth: http::ApiAuth,
}

/// Limits that protect the scheduler from its peers: each ends in a refusal or a closed
/// connection with a log line, never in unbounded memory or a stuck event loop
/// (docs/operations.md lists them with their flags).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Largest frame and most bytes queued for one peer.
    pub conn: net::Limits,
    /// Most connections open at once (clients, workers, nannies); more are refused.
    pub max_connections: usize,
    /// A connection that has not sent its registration within this long is closed (Dask's
    /// `distributed.comm.timeouts.connect`).
    pub handshake_timeout: Duration,
    /// The HTTP API's timeouts.
    pub http: http::HttpLimits,
}

/// The default of [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            conn: net::Limits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(30),
            http: http::HttpLimits::default(),
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dashboard: None,
            advertise_host: None,
            policy: state::Config::default(),
            limits: Limits::default(),
            tls: None,
            api_auth: http::ApiAuth::default(),
        }
    }
}

/// A running scheduler.
pub struct Scheduler {
    address: String,
    dashboard: Option<SocketAddr>,
    handle: SchedulerHandle,
    stop: Option<oneshot::Sender<()>>,
    /// Resolves when the event loop's thread has finished.
    event_loop_done: oneshot::Receiver<()>,
}

impl Scheduler {
    /// Binds the listeners and starts serving.
    pub async fn start(config: SchedulerConfig) -> std::io::Result<Scheduler> {
        let listener = TcpListener::bind(config.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.listen))
        })?;
        let local = listener.local_addr()?;
        let host = config
            .advertise_host
            .clone()
            .unwrap_or_else(|| local.ip().to_string());
        let address = format!(
            "{}{host}:{}",
            net::Scheme::of(config.tls.as_ref()).prefix(),
            local.port()
        );
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (req_tx, req_rx) = mpsc::unbounded_channel();
        let handle = SchedulerHandle::new(req_tx);
        let (stop_tx, stop_rx) = oneshot::channel();
        let (http_stop_tx, http_stop_rx) = oneshot::channel::<()>();
        let dashboard = match config.dashboard {
            Some(addr) => {
                let shutdown = async move {
                    let _ = http_stop_rx.await;
                };
                Some(
                    http::serve_secured(
                        addr,
                        handle.clone(),
                        shutdown,
                        config.limits.http,
                        config.tls.clone(),
                        config.api_auth.clone(),
                    )
                    .await?
                    .0,
                )
            }
            None => None,
        };
        let state = State::new(config.policy, address.clone(), now());
        let started = Instant::now();
        let event_loop = EventLoop {
            parts_held: VecDeque::new(),
            pending: FxHashMap::default(),
            state,
            started,
            ticks: Ticks::new("scheduler", started),
            cpu: CpuMeter::default(),
            process: SchedulerRow::default(),
            conns: FxHashMap::default(),
            retire_replies: FxHashMap::default(),
            next_request: 0,
        };
        // The scheduler's connections and its state machine get a thread and runtime of their
        // own: whatever else the process runs (a client, the HTTP API) never delays them, and
        // the path from a worker's message to the scheduler's answer stays on one thread, with
        // no hand-off between threads on the way.
        let (done_tx, event_loop_done) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = listener.into_std()?;
        let limits = config.limits;
        let tls = config.tls;
        std::thread::Builder::new()
            .name("rask-scheduler".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            tokio::spawn(accept_loop(listener, events_tx, limits, tls));
                            event_loop.run(events_rx, req_rx, stop_rx).await;
                        }
                        Err(e) => tracing::error!(error = %e, "cannot serve the scheduler port"),
                    }
                });
                let _ = http_stop_tx.send(());
                let _ = done_tx.send(());
            })?;
        tracing::info!(%address, ?dashboard, "scheduler listening");
        Ok(Scheduler {
            address,
            dashboard,
            handle,
            stop: Some(stop_tx),
            event_loop_done,
        })
    }

    /// `tcp://host:port` (`tls://host:port` with TLS) for clients and workers.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Where the HTTP API listens, if it was started.
    pub fn dashboard_address(&self) -> Option<SocketAddr> {
        self.dashboard
    }

    pub fn handle(&self) -> SchedulerHandle {
        self.handle.clone()
    }

    /// Tells workers to close, then stops.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.event_loop_done).await;
    }

    /// Runs until the event loop ends (it does not on its own; use with a signal).
    pub async fn wait(mut self) {
        let _ = (&mut self.event_loop_done).await;
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

enum Role {
    Client,
    Worker,
    /// A worker's nanny with a notice: one message, answered, then the connection closes.
    Nanny,
}

enum Event {
    Connected {
        id: u64,
        role: Role,
        first: Envelope<ToScheduler>,
        sender: net::Sender<FromScheduler>,
    },
    Messages {
        id: u64,
        batch: Vec<Envelope<ToScheduler>>,
        /// For a part of a graph sent in parts: dropped once the part is taken up, which the
        /// connection's reader awaits before reading the next part (see [`read_loop`]).
        taken: Option<oneshot::Sender<()>>,
    },
    Disconnected {
        id: u64,
        reason: String,
    },
}

impl Event {
    /// Whether it brings a part of a graph sent in parts, other than the last.
    fn is_graph_part(&self) -> bool {
        matches!(self, Event::Messages { taken: Some(_), .. })
    }
}

/// Whether a frame brings a part of a graph sent in parts, other than the last.
fn has_graph_part(batch: &[Envelope<ToScheduler>]) -> bool {
    batch
        .iter()
        .any(|e| matches!(e.msg, ToScheduler::UpdateGraph { more, .. } if more > 0))
}

async fn accept_loop(
    listener: TcpListener,
    events: mpsc::UnboundedSender<Event>,
    limits: Limits,
    tls: Option<TlsConfig>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut next_id: u64 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    next_id += 1;
                    tokio::spawn(read_loop(
                        next_id,
                        stream,
                        peer,
                        events.clone(),
                        limits,
                        tls.clone(),
                        slot,
                    ));
                }
                // A TLS peer could not read a plain refusal: it sees the connection close.
                Err(_) if tls.is_some() => {
                    tracing::warn!(%peer, max = limits.max_connections, "refusing a connection: as many are open as the limit");
                }
                Err(_) => refuse_over_limit(&stream, peer, limits.max_connections),
            },
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if events.is_closed() {
            return;
        }
    }
}

/// Tells a connection over the limit why it is refused (a `Refused` the peer may retry, written
/// without waiting: the socket's empty buffer takes it) and closes it.
fn refuse_over_limit(stream: &TcpStream, peer: SocketAddr, max: usize) {
    let reason = format!(
        "the scheduler has {max} connections open, its limit (rask scheduler --max-connections)"
    );
    tracing::warn!(%peer, max, "refusing a connection: as many are open as the limit");
    let refusal = [Envelope::new(FromScheduler::Refused {
        reason,
        retry: true,
    })];
    if let Ok((head, _)) = encode_frame(&refusal, rask_core::protocol::DEFAULT_MAX_FRAME) {
        let _ = stream.try_write(&head);
    }
}

/// Reads one connection: the first message says whether it is a client or a worker. It must
/// arrive within the handshake timeout. `_slot` counts the connection against the limit.
async fn read_loop(
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    events: mpsc::UnboundedSender<Event>,
    limits: Limits,
    tls: Option<TlsConfig>,
    _slot: OwnedSemaphorePermit,
) {
    // The TLS handshake counts against the handshake timeout too.
    let handshake = tokio::time::timeout(
        limits.handshake_timeout,
        net::accept(stream, peer, tls.as_ref()),
    );
    let stream = match handshake.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refusing a connection");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                timeout_s = limits.handshake_timeout.as_secs_f64(),
                "closing connection: no TLS handshake within the handshake timeout"
            );
            return;
        }
    };
    let (sender, mut receiver) =
        net::split_with::<FromScheduler>(stream, peer.to_string(), limits.conn);
    let first = tokio::time::timeout(limits.handshake_timeout, receiver.recv::<ToScheduler>());
    let mut batch = match first.await {
        Ok(Ok(Some(b))) if !b.is_empty() => b,
        Ok(Ok(_)) => return,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "closing connection: bad first frame");
            return;
        }
        Err(_) => {
            tracing::warn!(
                %peer,
                timeout_s = limits.handshake_timeout.as_secs_f64(),
                "closing connection: no registration within the handshake timeout"
            );
            return;
        }
    };
    let first = batch.remove(0);
    let role = match first.msg {
        ToScheduler::RegisterClient { .. } => Role::Client,
        ToScheduler::RegisterWorker(_) => Role::Worker,
        ToScheduler::WorkerKilled { .. } => Role::Nanny,
        ref other => {
            let reason = format!("expected a registration message first, got {other:?}");
            tracing::warn!(%peer, %reason, "closing connection");
            sender.send(FromScheduler::Refused {
                reason,
                retry: false,
            });
            return;
        }
    };
    if events
        .send(Event::Connected {
            id,
            role,
            first,
            sender,
        })
        .is_err()
    {
        return;
    }
    let messages = |batch, taken| Event::Messages { id, batch, taken };
    if !batch.is_empty() && events.send(messages(batch, None)).is_err() {
        return;
    }
    let reason = loop {
        match receiver.recv::<ToScheduler>().await {
            Ok(Some(batch)) if has_graph_part(&batch) => {
                // The next part is read once this one is taken up: the workers' results that
                // arrive meanwhile go before it, and its first tasks run while it is added.
                let (taken, done) = oneshot::channel();
                if events.send(messages(batch, Some(taken))).is_err() {
                    return;
                }
                let _ = done.await;
            }
            Ok(Some(batch)) => {
                if events.send(messages(batch, None)).is_err() {
                    return;
                }
            }
            Ok(None) => break "connection closed".to_owned(),
            // A peer that went away (a client that exited, a worker killed) is not a protocol
            // error: the scheduler's handling of the disconnection says what it means.
            Err(e @ (FrameError::Io(_) | FrameError::Truncated)) => {
                tracing::info!(%peer, error = %e, "connection lost");
                break e.to_string();
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: malformed frame");
                break e.to_string();
            }
        }
    };
    let _ = events.send(Event::Disconnected { id, reason });
}

struct Conn {
    role: Role,
    sender: net::Sender<FromScheduler>,
    /// For a worker's connection: since when the state no longer knows the worker (removed
    /// for missing heartbeats, retired, or closing) while the connection stays open.
    orphaned: Option<f64>,
}

/// Yields of the event loop, at most, for the clients' writers to write its answers before it
/// frees what the answered tasks left unneeded.
const ANSWER_YIELDS: usize = 4;

/// Ready tasks, waiting for a worker that can run them, at which a graph part that arrives is
/// held back until the workers have taken all but this many. Taken up at once, the parts of a
/// million-task `map` queued 500,000 tasks: each was sent to a worker long after it was added,
/// its entry out of the cache by then, and the queue's tree deep. Held, its sender's reader
/// stays blocked on it (see `read_loop`), so the client's next parts wait in its socket. Two
/// parts of a client's 2,048 tasks keep the workers busy while the next is added.
const PART_BACKLOG: usize = 4096;

/// The longest a graph part is held back: the client's later messages (a cancel, a release)
/// wait behind it, and tasks of seconds drain no backlog in milliseconds. A million tasks of
/// `inc` drain 4,096 in about 10 ms.
const HOLD_PART_AT_MOST: Duration = Duration::from_millis(50);

/// When the graph part held longest is due to be taken up anyway (never, with none held).
async fn hold_expires(until: Option<Instant>) {
    match until {
        Some(until) => tokio::time::sleep_until(until.into()).await,
        None => std::future::pending().await,
    }
}

struct EventLoop {
    /// Graph parts held back while the workers' backlog is long (see [`PART_BACKLOG`]), each
    /// with when it is taken up anyway.
    parts_held: VecDeque<(Event, Instant)>,
    pending: FxHashMap<u64, Outgoing>,
    state: State,
    /// When the event loop was made: the epoch of the monotonic clock metrics show.
    started: Instant,
    ticks: Ticks,
    /// The scheduler process's CPU use and RSS, measured every second for the dashboard.
    cpu: CpuMeter,
    process: SchedulerRow,
    conns: FxHashMap<u64, Conn>,
    retire_replies: FxHashMap<RequestId, oneshot::Sender<Vec<RetiredWorker>>>,
    next_request: RequestId,
}

struct NetOutbox<'a> {
    conns: &'a FxHashMap<u64, Conn>,
    retire_replies: &'a mut FxHashMap<RequestId, oneshot::Sender<Vec<RetiredWorker>>>,
    /// Messages decided while handling the current event, per connection, handed to the
    /// connections' writers together by `flush` (one channel send per connection, not one per
    /// message: an update of 10,000 tasks sends thousands).
    pending: &'a mut FxHashMap<u64, Outgoing>,
}

/// One connection's messages not yet handed to its writer.
#[derive(Default)]
struct Outgoing {
    msgs: Vec<Envelope<FromScheduler>>,
    /// Keys to free, sent as one message (a finished reduction frees thousands).
    frees: Vec<Key>,
}

impl Outgoing {
    fn close_frees(&mut self) {
        if !self.frees.is_empty() {
            let keys = std::mem::take(&mut self.frees);
            self.msgs.push(FromScheduler::FreeKeys { keys }.into());
        }
    }
}

impl NetOutbox<'_> {
    /// Hands every pending message to its connection's writer.
    fn flush(&mut self) {
        for (id, mut out) in self.pending.drain() {
            out.close_frees();
            if let Some(c) = self.conns.get(&id) {
                c.sender.send_many(out.msgs);
            }
        }
    }
}

impl Outbox for NetOutbox<'_> {
    fn to_worker(&mut self, worker: WorkerId, msg: Envelope<FromScheduler>) {
        let out = self.pending.entry(worker).or_default();
        if let (FromScheduler::FreeKeys { keys }, true) = (&msg.msg, msg.blobs.is_empty()) {
            out.frees.extend(keys.iter().cloned());
            return;
        }
        // Anything else goes after the frees already decided, keeping the order the state
        // machine chose.
        out.close_frees();
        out.msgs.push(msg);
    }

    fn to_client(&mut self, client: ClientId, msg: Envelope<FromScheduler>) {
        self.pending.entry(client).or_default().msgs.push(msg);
    }

    fn retire_done(&mut self, request: RequestId, retired: Vec<RetiredWorker>) {
        if let Some(reply) = self.retire_replies.remove(&request) {
            let _ = reply.send(retired);
        }
    }
}

impl EventLoop {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        mut requests: mpsc::UnboundedReceiver<Request>,
        mut stop: oneshot::Receiver<()>,
    ) {
        // Housekeeping, planned by the state after each run (see `State::next_tick_in`).
        let tick = tokio::time::sleep(self.state.next_tick_in(now()));
        tokio::pin!(tick);
        let mut measure = tokio::time::interval(TICK_INTERVAL);
        measure.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Sends the follows' reports held back by their interval (only while a client follows).
        let mut progress = tokio::time::interval(Duration::from_secs_f64(
            crate::follow::PROGRESS_INTERVAL_S / 2.0,
        ));
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                Some(ev) = events.recv() => {
                    if ev.is_graph_part() && self.state.ready_backlog() >= PART_BACKLOG {
                        self.parts_held.push_back((ev, Instant::now() + HOLD_PART_AT_MOST));
                    } else {
                        self.handle(ev).await;
                    }
                    self.take_held_parts().await;
                }
                () = hold_expires(self.parts_held.front().map(|h| h.1)) => {
                    self.take_held_parts().await;
                }
                Some(req) = requests.recv() => {
                    self.on_request(req);
                    self.flush();
                }
                () = &mut tick => {
                    let (state, mut out) = self.split();
                    state.tick(now(), &mut out);
                    out.flush();
                    self.take_held_parts().await;
                    self.measure_process();
                    self.close_orphans(now());
                    let next = self.state.next_tick_in(now());
                    tick.as_mut().reset(tokio::time::Instant::now() + next);
                }
                _ = measure.tick() => self.ticks.tick(Instant::now()),
                _ = progress.tick(), if self.state.has_follows() => {
                    self.send_progress();
                    self.flush();
                }
                _ = &mut stop => break,
            }
        }
        for (id, c) in &self.conns {
            if matches!(c.role, Role::Worker) {
                c.sender.send(FromScheduler::Close {
                    reason: "the scheduler is shutting down".into(),
                });
            }
            tracing::debug!(conn = id, "closing");
        }
        // Let the writers flush the Close messages.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    /// Handles one event: its answers handed to the connections' writers, then what it left
    /// unneeded freed.
    async fn handle(&mut self, ev: Event) {
        let part = ev.is_graph_part();
        self.on_event(ev);
        self.send_progress();
        self.flush();
        if part {
            // Let the connection writers send this part's tasks to the workers before the next
            // part is taken up: they run while the rest arrives.
            tokio::task::yield_now().await;
        }
        if self.state.has_deferred_work() {
            // Let the connection writers send this event's answers first (a client waiting for
            // a reduction's result), then free what it left unneeded.
            self.let_answers_out().await;
            let (state, mut out) = self.split();
            state.settle(now(), &mut out);
            out.flush();
        }
    }

    /// Takes up the graph parts held back, in the order they came, while the workers' ready
    /// backlog is under [`PART_BACKLOG`] or the first has been held for [`HOLD_PART_AT_MOST`].
    async fn take_held_parts(&mut self) {
        while let Some(ev) = self.held_part_due() {
            self.handle(ev).await;
        }
    }

    /// The first graph part held back, if it is due to be taken up now.
    fn held_part_due(&mut self) -> Option<Event> {
        let (_, until) = self.parts_held.front()?;
        if self.state.ready_backlog() >= PART_BACKLOG && Instant::now() < *until {
            return None;
        }
        self.parts_held.pop_front().map(|(ev, _)| ev)
    }

    /// Yields until the clients' writers have written what they were handed (at most
    /// [`ANSWER_YIELDS`] times: a client that does not read keeps its backlog).
    ///
    /// One yield is not enough: a writer handed a message yields once itself before writing,
    /// to batch what else comes (see `net::write_loop`), and the event loop, woken with it, ran
    /// on first. At a million inputs the sum's value then waited for the 0.27 s of freeing its
    /// inputs, and for the 500,000 copies the worker reported in the same frame.
    async fn let_answers_out(&self) {
        for _ in 0..ANSWER_YIELDS {
            tokio::task::yield_now().await;
            let waiting = self
                .conns
                .values()
                .any(|c| matches!(c.role, Role::Client) && c.sender.backlog() > 0);
            if !waiting {
                break;
            }
        }
    }

    /// Closes the connections of workers the state removed that have not left on their own
    /// within the worker TTL of being told to (a hung worker that no longer reads): their
    /// connection and its slot are not held for ever.
    fn close_orphans(&mut self, now: f64) {
        let ttl = self.state.config().worker_ttl_s;
        for (id, conn) in &mut self.conns {
            if !matches!(conn.role, Role::Worker) || self.state.has_worker(*id) {
                continue;
            }
            match conn.orphaned {
                None => conn.orphaned = Some(now),
                Some(since) if now - since > ttl => {
                    tracing::warn!(
                        conn = id,
                        ttl,
                        "closing the connection of a removed worker that did not leave"
                    );
                    conn.sender
                        .close(format!("removed worker still connected after {ttl} s"));
                }
                Some(_) => {}
            }
        }
    }

    fn split(&mut self) -> (&mut State, NetOutbox<'_>) {
        (
            &mut self.state,
            NetOutbox {
                conns: &self.conns,
                retire_replies: &mut self.retire_replies,
                pending: &mut self.pending,
            },
        )
    }

    fn flush(&mut self) {
        self.split().1.flush();
    }

    /// Queues the follows' reports that are due.
    fn send_progress(&mut self) {
        if self.state.has_follows() {
            let (state, mut out) = self.split();
            state.send_progress(now(), &mut out);
        }
    }

    /// Reads this process's CPU time and RSS (two small files of `/proc`).
    fn measure_process(&mut self) {
        self.process = SchedulerRow {
            cpu_percent: self.cpu.sample(Instant::now(), process_cpu_seconds()),
            rss: process_rss(None),
        };
    }

    /// The state's snapshot with the event loop's own measurements.
    fn snapshot(&self) -> Snapshot {
        let at = Instant::now();
        let mut snapshot = self.state.snapshot(now());
        snapshot.ticks = TickSnapshot {
            count: self.ticks.count(),
            max_duration_s: self.ticks.longest(at).as_secs_f64(),
        };
        snapshot.monotonic_s = at.saturating_duration_since(self.started).as_secs_f64();
        snapshot
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Request::Metrics(reply) => {
                let _ = reply.send(self.snapshot());
                self.ticks.scraped();
            }
            Request::Dashboard {
                cursor,
                with_target,
                reply,
            } => {
                let mut update = self.state.dashboard(cursor, with_target, now());
                update.scheduler = self.process;
                let _ = reply.send(update);
            }
            Request::Retire { selector, reply } => {
                self.next_request += 1;
                let id = self.next_request;
                self.retire_replies.insert(id, reply);
                let (state, mut out) = self.split();
                state.retire_workers(id, &selector, now(), &mut out);
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Connected {
                id,
                role,
                first,
                sender,
            } => match (role, first.msg) {
                (Role::Client, ToScheduler::RegisterClient { name }) => {
                    tracing::debug!(id, %name, "client connected");
                    sender.send(FromScheduler::Welcome {
                        id,
                        families: self.state.families(),
                    });
                    self.conns.insert(
                        id,
                        Conn {
                            role: Role::Client,
                            sender,
                            orphaned: None,
                        },
                    );
                    self.state.add_client(id);
                }
                (Role::Worker, ToScheduler::RegisterWorker(info)) => {
                    self.conns.insert(
                        id,
                        Conn {
                            role: Role::Worker,
                            sender: sender.clone(),
                            orphaned: None,
                        },
                    );
                    let (state, mut out) = self.split();
                    match state.add_worker(id, *info, now(), &mut out) {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(error = %e, "worker refused");
                            sender.send(FromScheduler::Refused {
                                reason: e.to_string(),
                                retry: matches!(e, state::RegisterError::DuplicateName(_)),
                            });
                            self.conns.remove(&id);
                        }
                    }
                }
                (Role::Nanny, ToScheduler::WorkerKilled { name, reason }) => {
                    let (state, mut out) = self.split();
                    state.worker_killed(&name, reason, now(), &mut out);
                    // The acknowledgement tells the nanny it may kill the worker now.
                    sender.send(FromScheduler::Welcome {
                        id,
                        families: Vec::new(),
                    });
                }
                _ => {}
            },
            Event::Messages { id, batch, .. } => {
                let Some(conn) = self.conns.get(&id) else {
                    return;
                };
                let is_worker = match conn.role {
                    Role::Worker => true,
                    Role::Client => false,
                    // A nanny's connection is never kept (see `Connected`).
                    Role::Nanny => return,
                };
                let t = now();
                for env in batch {
                    let (state, mut out) = self.split();
                    if is_worker {
                        on_worker_message(state, id, env, t, &mut out);
                    } else {
                        on_client_message(state, id, env, t, &mut out);
                    }
                }
            }
            Event::Disconnected { id, reason } => {
                let Some(conn) = self.conns.remove(&id) else {
                    return;
                };
                let t = now();
                let (state, mut out) = self.split();
                match conn.role {
                    Role::Worker => {
                        tracing::info!(worker = id, %reason, "worker connection lost");
                        state.remove_worker(id, t, &mut out);
                    }
                    Role::Client => state.remove_client(id, t, &mut out),
                    Role::Nanny => {}
                }
            }
        }
    }
}

fn on_worker_message(
    state: &mut State,
    id: WorkerId,
    env: Envelope<ToScheduler>,
    now: f64,
    out: &mut NetOutbox<'_>,
) {
    let Envelope { msg, blobs } = env;
    match msg {
        ToScheduler::Heartbeat(load) => {
            let ack = load.ack;
            state.heartbeat(id, load, now);
            if ack {
                out.to_worker(id, FromScheduler::HeartbeatAck.into());
            }
        }
        ToScheduler::TaskFinished {
            key,
            nbytes,
            duration_us,
            transfer_us,
        } => {
            let data = blobs.into_iter().next();
            let done = state::Finished {
                key,
                nbytes,
                duration_us,
                transfer_us,
                data,
            };
            state.task_finished(id, done, now, out)
        }
        ToScheduler::TaskErred {
            key,
            error,
            duration_us,
        } => state.task_erred(id, &key, error, duration_us, now, out),
        ToScheduler::AddKeys { keys } => state.add_keys(id, &keys, now, out),
        ToScheduler::MissingData { key, holders } => {
            state.missing_data(id, &key, &holders, now, out)
        }
        ToScheduler::WorkerClosing { reason } => {
            tracing::info!(worker = id, %reason, "worker closing");
            state.remove_worker(id, now, out);
        }
        ToScheduler::Paused { paused } => state.set_paused(id, paused, now, out),
        other => {
            tracing::warn!(worker = id, message = ?other, "ignoring a client message from a worker")
        }
    }
}

fn on_client_message(
    state: &mut State,
    id: ClientId,
    env: Envelope<ToScheduler>,
    now: f64,
    out: &mut NetOutbox<'_>,
) {
    match env.msg {
        ToScheduler::UpdateGraph {
            tasks,
            wanted_tasks,
            wanted,
            more,
        } => {
            let wanted_tasks = usize::try_from(wanted_tasks).unwrap_or(usize::MAX);
            let wanted = Wanted::new(wanted_tasks, wanted);
            state.update_graph_part(id, tasks, wanted, more, now, out)
        }
        ToScheduler::ReleaseKeys { keys } => state.release_keys(id, &keys, now, out),
        ToScheduler::FollowKeys { id: follow, keys } => state.follow_keys(id, follow, keys),
        ToScheduler::Unfollow { id: follow } => state.unfollow(id, follow),
        other => {
            tracing::warn!(client = id, message = ?other, "ignoring a worker message from a client")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_writer_writes_what_it_is_handed_within_the_answer_yields() {
        // The event loop frees a reduction's inputs only after the clients' writers (tasks of
        // its own thread) wrote its answers, yielding at most ANSWER_YIELDS times for them.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let (tx, _rx) = net::split::<FromScheduler>(ours.unwrap(), "client".into());
        let _peer = theirs.unwrap().0;
        for round in 0..20 {
            let answers = (0..=round)
                .map(|_| FromScheduler::FreeKeys { keys: Vec::new() }.into())
                .collect();
            tx.send_many(answers);
            assert!(tx.backlog() > 0, "round {round}: nothing queued");
            let mut yields = 0;
            while tx.backlog() > 0 {
                assert!(
                    yields < ANSWER_YIELDS,
                    "round {round}: still queued after {ANSWER_YIELDS} yields"
                );
                tokio::task::yield_now().await;
                yields += 1;
            }
        }
    }
}
