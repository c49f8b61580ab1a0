//! The thin networking layer: TCP connections that carry protocol frames, with outgoing messages
//! batched into as few frames (and syscalls) as the queue allows; and [`PeerPool`], the client
//! side of workers' data servers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc};

use crate::key::Key;
use crate::protocol::{
    DEFAULT_MAX_FRAME, DataReply, DataRequest, Envelope, FrameError, read_frame, write_frame,
};

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

/// What goes through a connection's queue: one message, or many decided together.
enum Outgoing<M> {
    One(Envelope<M>),
    Many(Vec<Envelope<M>>),
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
    read: OwnedReadHalf,
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
pub fn split<Out>(stream: TcpStream, peer: String) -> (Sender<Out>, Receiver)
where
    Out: Serialize + Send + Sync + 'static,
{
    split_with(stream, peer, Limits::default())
}

/// [`split`] with the given limits.
pub fn split_with<Out>(stream: TcpStream, peer: String, limits: Limits) -> (Sender<Out>, Receiver)
where
    Out: Serialize + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
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

async fn write_loop<M: Serialize>(
    write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing<M>>,
    shared: &Shared,
    max_frame: u64,
) {
    let peer = shared.peer.as_str();
    let mut w = BufWriter::with_capacity(256 << 10, write);
    let mut queue: VecDeque<Envelope<M>> = VecDeque::new();
    let take = |item: Outgoing<M>, queue: &mut VecDeque<Envelope<M>>| match item {
        Outgoing::One(e) => queue.push_back(e),
        Outgoing::Many(batch) => queue.extend(batch),
    };
    loop {
        if queue.is_empty() {
            match rx.recv().await {
                Some(item) => take(item, &mut queue),
                None => break,
            }
            if rx.is_empty() {
                // Let the tasks producing messages run once before writing: a worker finishing
                // tasks one by one then sends them in one frame and one syscall, not one each.
                tokio::task::yield_now().await;
            }
        }
        while let Ok(item) = rx.try_recv() {
            take(item, &mut queue);
        }
        // One frame of at most BATCH_MSGS messages and BATCH_BYTES blob bytes (a single larger
        // message still goes alone).
        let mut bytes = 0;
        let mut batch = Vec::new();
        while let Some(e) = queue.front() {
            let b = e.blob_bytes();
            if batch.len() >= BATCH_MSGS || (!batch.is_empty() && bytes + b > BATCH_BYTES) {
                break;
            }
            let Some(e) = queue.pop_front() else { break };
            bytes += b;
            batch.push(e);
        }
        let written = bytes + MSG_COST * batch.len() as u64;
        let result = write_frame(&mut w, &batch, max_frame).await;
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
        if queue.is_empty()
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

/// Connects with retries until `timeout` passes (the peer may still be starting).
pub async fn connect(addr: &str, timeout: Duration) -> std::io::Result<TcpStream> {
    let hostport = strip_scheme(addr);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut delay = Duration::from_millis(5);
    loop {
        match TcpStream::connect(hostport).await {
            Ok(s) => return Ok(s),
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
    }
}

/// `tcp://host:port` → `host:port`.
pub fn strip_scheme(addr: &str) -> &str {
    addr.strip_prefix("tcp://").unwrap_or(addr)
}

/// Idle connections to peers' data servers, reused between fetches.
#[derive(Default)]
pub struct PeerPool {
    idle: Mutex<FxHashMap<String, Vec<TcpStream>>>,
}

impl PeerPool {
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
            None => {
                let s = connect(addr, Duration::from_secs(2))
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = s.set_nodelay(true);
                s
            }
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
}
