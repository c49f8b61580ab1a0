//! The thin networking layer: TCP connections, plain or TLS ([`Stream`]), that carry protocol
//! frames, with outgoing messages batched into as few frames (and syscalls) as the queue allows;
//! and [`PeerPool`], the client side of workers' data servers.
//!
//! An address's scheme picks the transport, as Dask's: `tls://host:port` is TLS (it needs the
//! process's [`TlsConfig`]), `tcp://host:port` or a bare `host:port` is plain TCP.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use crate::key::Key;
use crate::protocol::{
    DEFAULT_MAX_FRAME, DataReply, DataRequest, Envelope, FrameError, FrameWriter, read_frame,
    write_frame,
};
use crate::tls::{self, TlsConfig};

/// One connection: plain TCP or TLS over TCP. Both carry the same frames.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_tls() { "tls" } else { "tcp" };
        write!(f, "Stream({kind}, {:?})", self.tcp().peer_addr().ok())
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp().local_addr()
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether the peer presented a certificate (that the TLS handshake verified).
    pub fn peer_has_certificate(&self) -> bool {
        match self {
            Stream::Tcp(_) => false,
            Stream::Tls(s) => s
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty()),
        }
    }

    fn into_halves(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w))
            }
            Stream::Tls(s) => {
                let (r, w) = tokio::io::split(*s);
                (Box::new(r), Box::new(w))
            }
        }
    }
}

type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Tcp(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Most blob bytes batched into one frame before it is sent.
const BATCH_BYTES: u64 = 64 << 20;
/// Most messages batched into one frame.
const BATCH_MSGS: usize = 20_000;

/// Default ceiling on the bytes queued for one peer and not yet written: a peer that stops
/// reading its socket is disconnected once this much waits for it.
pub const DEFAULT_MAX_BACKLOG: u64 = 1 << 30;
/// What one queued message counts for in the backlog beyond its blobs: the backlog is measured
/// by a counter, not by encoding each message, so a message's own fields are estimated.
const MSG_COST: u64 = 256;

/// Limits on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame read or written; a peer announcing more is disconnected.
    pub max_frame: u64,
    /// Most bytes (blobs, plus [`MSG_COST`] a message) queued for the peer and not yet written;
    /// beyond, the connection is closed (both halves) rather than the queue growing.
    pub max_backlog: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_backlog: DEFAULT_MAX_BACKLOG,
        }
    }
}

/// What a connection's sender, writer and receiver share.
struct Shared {
    peer: String,
    /// Bytes queued and not yet written (see [`Limits::max_backlog`]).
    queued: AtomicU64,
    max_backlog: u64,
    /// Set once the connection is closed (for its backlog, or by [`Sender::close`]); `notify`
    /// wakes the writer and reader, and `reason` says why.
    closed: AtomicBool,
    notify: Notify,
    reason: OnceLock<String>,
}

impl Shared {
    /// Counts `cost` more queued bytes; false (and the connection closed) past the limit.
    fn admit(&self, cost: u64) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let queued = self.queued.fetch_add(cost, Ordering::Relaxed) + cost;
        if queued > self.max_backlog {
            self.close_for_backlog(queued);
            return false;
        }
        true
    }

    fn written(&self, cost: u64) {
        self.queued.fetch_sub(cost, Ordering::Relaxed);
    }

    fn close_for_backlog(&self, queued: u64) {
        let reason = format!(
            "more than {} bytes wait to be sent to {}, which does not read them",
            self.max_backlog, self.peer
        );
        if self.close(reason) {
            tracing::error!(
                peer = %self.peer,
                queued,
                max = self.max_backlog,
                "closing the connection: the peer does not read what is sent to it \
                 (more bytes wait for it than the maximum backlog)"
            );
        }
    }

    /// Closes both halves now; true if this call closed it.
    fn close(&self, reason: String) -> bool {
        let _ = self.reason.set(reason);
        let first = !self.closed.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// Resolves once the connection is closed for its backlog.
    async fn closed(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        notified.await;
    }

    fn closed_error(&self) -> FrameError {
        let reason = self.reason.get().map_or("closed", String::as_str);
        FrameError::Io(std::io::Error::other(reason.to_owned()))
    }
}

/// Sends envelopes to one peer; cloning is cheap. Sending never blocks; a closed connection
/// makes `send` return false, as does one whose backlog went over [`Limits::max_backlog`] (it
/// is closed then).
pub struct Sender<M> {
    tx: mpsc::UnboundedSender<Outgoing<M>>,
    shared: Arc<Shared>,
}

/// What goes through a connection's queue: one message, or many decided together, or many
/// that each go in a frame of their own.
enum Outgoing<M> {
    One(Envelope<M>),
    Many(Vec<Envelope<M>>),
    Apart(Vec<Envelope<M>>),
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Sender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
        }
    }
}

fn cost<M>(e: &Envelope<M>) -> u64 {
    MSG_COST + e.blob_bytes()
}

impl<M> Sender<M> {
    pub fn send(&self, e: impl Into<Envelope<M>>) -> bool {
        let e = e.into();
        self.shared.admit(cost(&e)) && self.tx.send(Outgoing::One(e)).is_ok()
    }

    /// Queues many messages at once, in order: one wake-up of the writer instead of one each.
    pub fn send_many(&self, batch: Vec<Envelope<M>>) -> bool {
        if batch.is_empty() {
            return !self.tx.is_closed() && !self.shared.closed.load(Ordering::Relaxed);
        }
        let total = batch.iter().map(cost).sum();
        self.shared.admit(total) && self.tx.send(Outgoing::Many(batch)).is_ok()
    }

    /// Queues large messages in order, each in a frame of its own (nothing else batched with
    /// it): the peer can take up the first while the writer still encodes the next (a graph
    /// sent in parts).
    pub fn send_apart(&self, parts: Vec<Envelope<M>>) -> bool {
        let total = parts.iter().map(cost).sum();
        self.shared.admit(total) && self.tx.send(Outgoing::Apart(parts)).is_ok()
    }

    /// Closes the connection now, both halves, dropping what is still queued; the receiver's
    /// next `recv` fails with `reason`.
    pub fn close(&self, reason: impl Into<String>) {
        self.shared.close(reason.into());
    }

    /// Bytes queued for the peer and not yet written (estimated as [`Limits::max_backlog`] says).
    pub fn backlog(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }
}

/// Reads frames from one peer.
pub struct Receiver {
    read: ReadHalf,
    max: u64,
    shared: Arc<Shared>,
}

impl Receiver {
    /// The next batch of envelopes; `Ok(None)` at a clean close. An error once the connection
    /// was closed for its backlog.
    pub async fn recv<M: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Vec<Envelope<M>>>, FrameError> {
        tokio::select! {
            biased;
            r = read_frame(&mut self.read, self.max) => r,
            () = self.shared.closed() => Err(self.shared.closed_error()),
        }
    }
}

/// Splits a connected stream into a batching sender (a spawned writer task) and a receiver,
/// with the default [`Limits`]. `peer` names the other side in log lines.
pub fn split<Out>(stream: impl Into<Stream>, peer: String) -> (Sender<Out>, Receiver)
where
    Out: Serialize + Send + Sync + 'static,
{
    split_with(stream, peer, Limits::default())
}

/// [`split`] with the given limits.
pub fn split_with<Out>(
    stream: impl Into<Stream>,
    peer: String,
    limits: Limits,
) -> (Sender<Out>, Receiver)
where
    Out: Serialize + Send + Sync + 'static,
{
    let stream = stream.into();
    let _ = stream.tcp().set_nodelay(true);
    let (read, write) = stream.into_halves();
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        peer,
        queued: AtomicU64::new(0),
        max_backlog: limits.max_backlog,
        closed: AtomicBool::new(false),
        notify: Notify::new(),
        reason: OnceLock::new(),
    });
    let writer_shared = shared.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = write_loop(write, rx, &writer_shared, limits.max_frame) => {}
            // Dropping the write half mid-frame: the peer sees a truncated frame and a close.
            () = writer_shared.closed() => {}
        }
    });
    (
        Sender {
            tx,
            shared: shared.clone(),
        },
        Receiver {
            read,
            max: limits.max_frame,
            shared,
        },
    )
}

/// How long a connection's writer waits with nothing to send before it gives back the buffers
/// it keeps between frames beyond what an idle connection needs.
const IDLE_RELEASE: Duration = Duration::from_secs(1);
/// Messages' room an idle writer keeps (its queue and its batch each).
const IDLE_MSGS: usize = 64;

/// What a connection's writer keeps between frames: the queue of messages, the batch being
/// written and the frame's header buffer. Reused, they are allocated once, not made and freed
/// with every frame (blocks of 100 KiB to 2 MiB each, that glibc's malloc re-carves from its
/// heap once its mmap threshold slid up); released when the connection goes idle.
struct WriteBufs<M> {
    /// Messages to write, each with whether it goes in a frame of its own.
    queue: VecDeque<(Envelope<M>, bool)>,
    batch: Vec<Envelope<M>>,
    frames: FrameWriter,
}

impl<M> WriteBufs<M> {
    fn new() -> Self {
        WriteBufs {
            queue: VecDeque::new(),
            batch: Vec::new(),
            frames: FrameWriter::default(),
        }
    }

    /// Gives back what an idle connection does not need.
    fn release(&mut self) {
        self.queue.shrink_to(IDLE_MSGS);
        if self.batch.capacity() > IDLE_MSGS {
            self.batch = Vec::new();
        }
        self.frames.release();
    }

    /// Bytes kept (the queue's and batch's room, and the header buffer).
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.queue.capacity() * std::mem::size_of::<(Envelope<M>, bool)>()
            + self.batch.capacity() * std::mem::size_of::<Envelope<M>>()
            + self.frames.capacity()
    }

    fn take(&mut self, item: Outgoing<M>) {
        match item {
            Outgoing::One(e) => self.queue.push_back((e, false)),
            Outgoing::Many(batch) => self.queue.extend(batch.into_iter().map(|e| (e, false))),
            Outgoing::Apart(parts) => self.queue.extend(parts.into_iter().map(|e| (e, true))),
        }
    }

    /// Moves the next frame's messages from the queue into the batch: at most BATCH_MSGS
    /// messages and BATCH_BYTES blob bytes (a single larger message still goes alone), and a
    /// message sent apart alone. Returns their blob bytes.
    fn next_batch(&mut self) -> u64 {
        self.batch.clear();
        let mut bytes = 0;
        while let Some((e, apart)) = self.queue.front() {
            let b = e.blob_bytes();
            let full = self.batch.len() >= BATCH_MSGS || bytes + b > BATCH_BYTES || *apart;
            if !self.batch.is_empty() && full {
                break;
            }
            let Some((e, apart)) = self.queue.pop_front() else {
                break;
            };
            bytes += b;
            self.batch.push(e);
            if apart {
                break;
            }
        }
        bytes
    }
}

/// Waits for the next item; after `idle` without one, releases `bufs` first.
async fn next_item<M>(
    rx: &mut mpsc::UnboundedReceiver<Outgoing<M>>,
    bufs: &mut WriteBufs<M>,
    idle: Duration,
) -> Option<Outgoing<M>> {
    match tokio::time::timeout(idle, rx.recv()).await {
        Ok(item) => item,
        Err(_) => {
            bufs.release();
            rx.recv().await
        }
    }
}

async fn write_loop<M: Serialize>(
    write: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing<M>>,
    shared: &Shared,
    max_frame: u64,
) {
    let peer = shared.peer.as_str();
    let mut w = BufWriter::with_capacity(256 << 10, write);
    let mut bufs = WriteBufs::new();
    loop {
        if bufs.queue.is_empty() {
            match next_item(&mut rx, &mut bufs, IDLE_RELEASE).await {
                Some(item) => bufs.take(item),
                None => break,
            }
            if rx.is_empty() {
                // Let the tasks producing messages run once before writing: a worker finishing
                // tasks one by one then sends them in one frame and one syscall, not one each.
                tokio::task::yield_now().await;
            }
        }
        while let Ok(item) = rx.try_recv() {
            bufs.take(item);
        }
        let bytes = bufs.next_batch();
        let written = bytes + MSG_COST * bufs.batch.len() as u64;
        let result = bufs.frames.write(&mut w, &bufs.batch, max_frame).await;
        // Dropped now, not when the batch is next refilled: its blobs may be large.
        bufs.batch.clear();
        shared.written(written);
        match result {
            Ok(()) => {}
            Err(FrameError::TooLarge { len, max }) => {
                tracing::error!(
                    peer,
                    len,
                    max,
                    "dropping a message batch larger than the maximum frame"
                );
                continue;
            }
            Err(e) => {
                tracing::debug!(peer, error = %e, "connection write failed");
                return;
            }
        }
        if bufs.queue.is_empty()
            && rx.is_empty()
            && let Err(e) = w.flush().await
        {
            tracing::debug!(peer, error = %e, "connection flush failed");
            return;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

/// Which transport an address asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Tls,
}

impl Scheme {
    /// `tcp://` or `tls://`.
    pub fn prefix(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp://",
            Scheme::Tls => "tls://",
        }
    }

    /// The scheme of a process's own addresses: TLS when it has a TLS config.
    pub fn of(tls: Option<&TlsConfig>) -> Scheme {
        if tls.is_some() {
            Scheme::Tls
        } else {
            Scheme::Tcp
        }
    }
}

/// `tls://host:port` → (TLS, `host:port`); `tcp://host:port` or `host:port` → (TCP, `host:port`).
pub fn parse_address(addr: &str) -> (Scheme, &str) {
    match addr.strip_prefix("tls://") {
        Some(rest) => (Scheme::Tls, rest),
        None => (Scheme::Tcp, addr.strip_prefix("tcp://").unwrap_or(addr)),
    }
}

/// Connects with retries until `timeout` passes (the peer may still be starting); over TLS for
/// a `tls://` address, which needs `tls`. A failed TLS handshake (a certificate the other side
/// refuses, or one this side does not trust) is not retried.
pub async fn connect(
    addr: &str,
    tls: Option<&TlsConfig>,
    timeout: Duration,
) -> std::io::Result<Stream> {
    let (scheme, hostport) = parse_address(addr);
    let tls = match (scheme, tls) {
        (Scheme::Tls, None) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "cannot connect to {addr}: a tls:// address needs this process's TLS \
                     certificate (--tls-ca-file, --tls-cert, --tls-key)"
                ),
            ));
        }
        (Scheme::Tls, Some(t)) => Some(t),
        (Scheme::Tcp, _) => None,
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    let tcp = loop {
        match TcpStream::connect(hostport).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() + delay >= deadline => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot connect to {addr}: {e}"),
                ));
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    let host = hostport.rsplit_once(':').map_or(hostport, |(host, _)| host);
    let handshake = tls.connector().connect(tls::server_name(host), tcp);
    let left = deadline
        .saturating_duration_since(tokio::time::Instant::now())
        .max(Duration::from_secs(1));
    match tokio::time::timeout(left, handshake).await {
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s.into()))),
        Ok(Err(e)) => Err(tls::client_handshake_error(addr, tls.ca_file(), e)),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake with {addr} did not finish within {left:?}"),
        )),
    }
}

/// The server side of a new connection: plain as it is without `tls`, else the TLS handshake,
/// which requires a certificate signed by the cluster's CA. `peer` names the other side in the
/// error. The caller bounds how long this may take.
pub async fn accept(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsConfig>,
) -> std::io::Result<Stream> {
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    match tls.acceptor().accept(tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s.into()))),
        Err(e) => Err(handshake_failed(peer, e)),
    }
}

/// A server's failed handshake with `peer`, with a hint when the peer did not speak TLS at all.
fn handshake_failed(peer: SocketAddr, e: std::io::Error) -> std::io::Error {
    let not_tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidMessage(_)));
    let hint = if not_tls {
        " (the peer does not speak TLS: a plain tcp:// client?)"
    } else {
        ""
    };
    std::io::Error::new(
        e.kind(),
        format!("TLS handshake with {peer} failed: {e}{hint}"),
    )
}

/// [`accept`] for an HTTP server: with `tls`, a client certificate is verified if offered but
/// not required ([`Stream::peer_has_certificate`] tells whether one was), so that the server can
/// admit others by a bearer token.
pub async fn accept_http(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsConfig>,
) -> std::io::Result<Stream> {
    let Some(tls) = tls else {
        return Ok(Stream::Tcp(tcp));
    };
    match tls.http_acceptor().accept(tcp).await {
        Ok(s) => Ok(Stream::Tls(Box::new(s.into()))),
        Err(e) => Err(handshake_failed(peer, e)),
    }
}

/// `tcp://host:port` or `tls://host:port` → `host:port`.
pub fn strip_scheme(addr: &str) -> &str {
    parse_address(addr).1
}

/// Idle connections to peers' data servers, reused between fetches.
#[derive(Default)]
pub struct PeerPool {
    idle: Mutex<FxHashMap<String, Vec<Stream>>>,
    /// For peers at `tls://` addresses.
    tls: Option<TlsConfig>,
}

impl PeerPool {
    /// A pool whose connections to `tls://` peers use `tls`.
    pub fn new(tls: Option<TlsConfig>) -> PeerPool {
        PeerPool {
            idle: Mutex::default(),
            tls,
        }
    }

    /// Asks `addr` for `keys`; returns the data found and the keys it lacked.
    pub async fn get_data(
        &self,
        addr: &str,
        keys: Vec<Key>,
    ) -> Result<(Vec<(Key, Bytes)>, Vec<Key>), String> {
        let reused = self
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(addr)
            .and_then(Vec::pop);
        let mut stream = match reused {
            Some(s) => s,
            None => connect(addr, self.tls.as_ref(), Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?,
        };
        let req = [Envelope::new(DataRequest::GetData { keys })];
        write_frame(&mut stream, &req, DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let reply = read_frame::<DataReply, _>(&mut stream, DEFAULT_MAX_FRAME)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let Some(mut batch) = reply else {
            return Err(format!("{addr} closed the connection"));
        };
        let Some(Envelope {
            msg: DataReply::Data { found, missing },
            blobs,
        }) = batch.pop()
        else {
            return Err(format!("{addr} sent an empty reply"));
        };
        if found.len() != blobs.len() {
            return Err(format!(
                "{addr} sent {} keys but {} blobs",
                found.len(),
                blobs.len()
            ));
        }
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .push(stream);
        Ok((found.into_iter().zip(blobs).collect(), missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ToScheduler;
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (a.unwrap(), b.unwrap().0)
    }

    fn blob_msg(n: usize) -> Envelope<ToScheduler> {
        Envelope::with_blobs(
            ToScheduler::ReleaseKeys { keys: Vec::new() },
            vec![Bytes::from(vec![1u8; n])],
        )
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_is_closed_at_the_backlog_limit() {
        let (ours, theirs) = pair().await;
        let limits = Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_backlog: 8 << 20,
        };
        let (tx, mut rx) = split_with::<ToScheduler>(ours, "stuck-peer".into(), limits);
        // The peer never reads: the kernel's buffers fill, then the queue grows to the limit.
        let mut sent = 0u64;
        let refused = loop {
            if !tx.send(blob_msg(64 << 10)) {
                break true;
            }
            sent += 64 << 10;
            if sent > 1 << 30 {
                break false;
            }
            tokio::task::yield_now().await;
        };
        assert!(refused, "the backlog grew past 1 GiB without closing");
        assert!(sent < 64 << 20, "sent {sent} bytes before the limit");
        // Later sends fail at once, and the reading half reports the close.
        assert!(!tx.send(ToScheduler::ReleaseKeys { keys: Vec::new() }));
        let err = tokio::time::timeout(Duration::from_secs(5), rx.recv::<ToScheduler>())
            .await
            .expect("the receiver must end")
            .unwrap_err();
        assert!(err.to_string().contains("stuck-peer"), "{err}");
        drop(theirs);
    }

    #[test]
    fn messages_sent_apart_each_take_a_frame_of_their_own() {
        let mut bufs = WriteBufs::<ToScheduler>::new();
        let msg = || Envelope::new(ToScheduler::ReleaseKeys { keys: Vec::new() });
        bufs.take(Outgoing::Many(vec![msg(), msg()]));
        bufs.take(Outgoing::Apart(vec![msg(), msg()]));
        bufs.take(Outgoing::Many(vec![msg(), msg(), msg()]));
        let mut frames = Vec::new();
        while !bufs.queue.is_empty() {
            bufs.next_batch();
            frames.push(bufs.batch.len());
        }
        assert_eq!(frames, [2, 1, 1, 3]);
    }

    #[tokio::test]
    async fn a_writer_keeps_its_buffers_while_busy_and_gives_them_back_when_idle() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut bufs = WriteBufs::<ToScheduler>::new();
        let many = |n: usize| {
            Outgoing::Many(
                (0..n)
                    .map(|_| Envelope::new(ToScheduler::ReleaseKeys { keys: Vec::new() }))
                    .collect(),
            )
        };
        let mut sink = Vec::new();
        for round in 0..3 {
            bufs.take(many(5_000));
            assert_eq!(bufs.next_batch(), 0);
            assert_eq!(bufs.batch.len(), 5_000);
            let (queue, batch) = (bufs.queue.capacity(), bufs.batch.as_ptr());
            bufs.frames
                .write(&mut sink, &bufs.batch, DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            let head = bufs.frames.capacity();
            bufs.batch.clear();
            if round > 0 {
                // The same blocks serve every frame of a busy connection.
                assert_eq!(bufs.queue.capacity(), queue);
                assert_eq!(bufs.batch.as_ptr(), batch);
                assert_eq!(bufs.frames.capacity(), head);
            }
        }
        assert!(bufs.kept_bytes() > 100 << 10, "{}", bufs.kept_bytes());
        // An item within the idle time keeps them; none within it releases them.
        assert!(tx.send(many(1)).is_ok());
        let got = next_item(&mut rx, &mut bufs, Duration::from_secs(10)).await;
        assert!(got.is_some() && bufs.kept_bytes() > 100 << 10);
        let later = tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = later.send(Outgoing::One(Envelope::new(ToScheduler::ReleaseKeys {
                keys: Vec::new(),
            })));
        });
        let got = next_item(&mut rx, &mut bufs, Duration::from_millis(5)).await;
        assert!(matches!(got, Some(Outgoing::One(_))));
        assert!(bufs.kept_bytes() < 64 << 10, "{}", bufs.kept_bytes());
        // Every frame written decodes back.
        let mut r = &sink[..];
        for _ in 0..3 {
            let batch = read_frame::<ToScheduler, _>(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(batch.len(), 5_000);
        }
        assert!(r.is_empty());
    }

    #[tokio::test]
    async fn close_ends_both_halves_with_its_reason() {
        let (ours, mut theirs) = pair().await;
        let (tx, mut rx) = split::<ToScheduler>(ours, "peer".into());
        tx.close("gone quiet");
        let err = rx.recv::<ToScheduler>().await.unwrap_err();
        assert!(err.to_string().contains("gone quiet"), "{err}");
        assert!(!tx.send(ToScheduler::ReleaseKeys { keys: Vec::new() }));
        drop(rx);
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::io::AsyncReadExt::read_to_end(&mut theirs, &mut buf),
        )
        .await;
        assert!(read.is_ok(), "the peer sees the close");
    }

    #[tokio::test]
    async fn a_peer_that_reads_is_never_limited_and_the_backlog_drains() {
        let (ours, theirs) = pair().await;
        let limits = Limits {
            max_frame: DEFAULT_MAX_FRAME,
            max_backlog: 1 << 20,
        };
        let (tx, _rx) = split_with::<ToScheduler>(ours, "reader".into(), limits);
        let reader = tokio::spawn(async move {
            let mut theirs = theirs;
            let mut got = 0;
            while got < 200 {
                let batch = read_frame::<ToScheduler, _>(&mut theirs, DEFAULT_MAX_FRAME)
                    .await
                    .unwrap()
                    .unwrap();
                got += batch.len();
            }
            got
        });
        // 200 × 64 KiB = 12.5 MiB through a 1 MiB backlog: each send waits for room.
        for _ in 0..200 {
            while tx.backlog() > 512 << 10 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(tx.send(blob_msg(64 << 10)));
        }
        assert_eq!(reader.await.unwrap(), 200);
        assert_eq!(tx.backlog(), 0);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_maximum_closes_the_connection() {
        let (ours, mut theirs) = pair().await;
        let limits = Limits {
            max_frame: 4096,
            max_backlog: DEFAULT_MAX_BACKLOG,
        };
        let (_tx, mut rx) = split_with::<ToScheduler>(ours, "big-sender".into(), limits);
        write_frame(&mut theirs, &[blob_msg(8192)], DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let err = rx.recv::<ToScheduler>().await.unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { max: 4096, len } if len > 8192),
            "{err}"
        );
    }

    // ----- TLS ------------------------------------------------------------------------------

    use crate::tls::tests::TestCa;

    /// A TLS server on a free port that accepts one connection with `server` and echoes one
    /// frame back; returns its address and what accepting gave.
    async fn tls_server(
        server: TlsConfig,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tls://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await?;
            let mut s = accept(tcp, peer, Some(&server)).await?;
            assert!(s.peer_has_certificate());
            let batch = read_frame::<ToScheduler, _>(&mut s, DEFAULT_MAX_FRAME)
                .await
                .map_err(std::io::Error::other)?
                .unwrap_or_default();
            write_frame(&mut s, &batch, DEFAULT_MAX_FRAME)
                .await
                .map_err(std::io::Error::other)?;
            s.flush().await
        });
        (addr, task)
    }

    #[tokio::test]
    async fn frames_go_both_ways_over_mutual_tls() {
        let ca = TestCa::new("cluster");
        let (addr, server) = tls_server(ca.config("scheduler")).await;
        let client = ca.config("client");
        let stream = connect(&addr, Some(&client), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(stream.is_tls());
        let (tx, mut rx) = split::<ToScheduler>(stream, "scheduler".into());
        assert!(tx.send(blob_msg(100_000)));
        let back = rx.recv::<ToScheduler>().await.unwrap().unwrap();
        assert_eq!(back[0].blobs[0].len(), 100_000);
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_tls_address_without_a_tls_config_is_an_error_naming_the_flags() {
        let err = connect("tls://127.0.0.1:1", None, Duration::from_secs(1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tls://127.0.0.1:1") && err.contains("--tls-cert"),
            "{err}"
        );
    }

    /// A client that trusts the cluster's CA but has no certificate of its own.
    fn no_certificate_client(ca: &TestCa) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    use rustls::pki_types::pem::PemObject;

    #[tokio::test]
    async fn a_peer_without_a_certificate_is_refused_naming_it() {
        let ca = TestCa::new("cluster");
        let (addr, server) = tls_server(ca.config("scheduler")).await;
        let tcp = TcpStream::connect(strip_scheme(&addr)).await.unwrap();
        let ours = tcp.local_addr().unwrap();
        let name = rustls::pki_types::ServerName::try_from("scheduler").unwrap();
        // TLS 1.3: the client's side of the handshake may finish before the server refuses it;
        // the refusal arrives as an alert on the first read.
        if let Ok(mut s) = no_certificate_client(&ca).connect(name, tcp).await {
            let _ = write_frame(&mut s, &[blob_msg(10)], DEFAULT_MAX_FRAME).await;
            let read = read_frame::<ToScheduler, _>(&mut s, DEFAULT_MAX_FRAME).await;
            assert!(read.is_err(), "the server must not answer");
        }
        let err = server.await.unwrap().unwrap_err().to_string();
        assert!(err.contains(&ours.to_string()), "{err}");
        assert!(
            err.contains("TLS handshake") && err.contains("no certificate"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused_by_the_server() {
        let ca = TestCa::new("cluster");
        let other = TestCa::new("intruder");
        let (addr, server) = tls_server(ca.config("scheduler")).await;
        // Trusts the cluster's CA, so only the server's check of its certificate can stop it.
        let intruder = other.config_trusting(&ca, "intruder");
        let result = async {
            let s = connect(&addr, Some(&intruder), Duration::from_secs(10)).await?;
            let (tx, mut rx) = split::<ToScheduler>(s, "scheduler".into());
            tx.send(blob_msg(10));
            rx.recv::<ToScheduler>()
                .await
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("closed"))
        }
        .await;
        assert!(result.is_err(), "the intruder got an answer");
        let err = server.await.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("TLS handshake") && err.contains("UnknownIssuer"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_server_with_a_certificate_from_another_ca_is_refused_by_the_client() {
        let ca = TestCa::new("cluster");
        let other = TestCa::new("impostor");
        let (addr, _server) = tls_server(other.config_trusting(&ca, "impostor")).await;
        let err = connect(&addr, Some(&ca.config("client")), Duration::from_secs(10))
            .await
            .expect_err("the impostor must be refused")
            .to_string();
        assert!(
            err.contains(&addr) && err.contains("UnknownIssuer"),
            "{err}"
        );
        assert!(
            err.contains("the server's certificate is not signed by the CA in"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_plain_client_cannot_talk_to_a_tls_server() {
        let ca = TestCa::new("cluster");
        let (addr, server) = tls_server(ca.config("scheduler")).await;
        let plain = addr.replace("tls://", "tcp://");
        let s = connect(&plain, None, Duration::from_secs(10))
            .await
            .unwrap();
        let (tx, mut rx) = split::<ToScheduler>(s, "scheduler".into());
        tx.send(blob_msg(10));
        assert!(!matches!(rx.recv::<ToScheduler>().await, Ok(Some(_))));
        let err = server.await.unwrap().unwrap_err().to_string();
        assert!(err.contains("does not speak TLS"), "{err}");
    }

    #[tokio::test]
    async fn the_peer_pool_fetches_over_tls() {
        let ca = TestCa::new("cluster");
        let server = ca.config("worker-a");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("tls://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            let mut s = accept(tcp, peer, Some(&server)).await.unwrap();
            let req = read_frame::<DataRequest, _>(&mut s, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            let DataRequest::GetData { keys } = &req[0].msg;
            let reply = [Envelope::with_blobs(
                DataReply::Data {
                    found: keys.clone(),
                    missing: Vec::new(),
                },
                vec![Bytes::from_static(b"value")],
            )];
            write_frame(&mut s, &reply, DEFAULT_MAX_FRAME)
                .await
                .unwrap();
            s.flush().await.unwrap();
        });
        let pool = PeerPool::new(Some(ca.config("worker-b")));
        let (found, missing) = pool.get_data(&addr, vec![Key::from("x")]).await.unwrap();
        assert_eq!(found, vec![(Key::from("x"), Bytes::from_static(b"value"))]);
        assert!(missing.is_empty());
    }
}
