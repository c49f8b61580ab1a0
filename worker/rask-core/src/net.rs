//! The thin networking layer: TCP connections that carry protocol frames, with outgoing messages
//! batched into as few frames (and syscalls) as the queue allows; and [`PeerPool`], the client
//! side of workers' data servers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use rustc_hash::FxHashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;

use crate::key::Key;
use crate::protocol::{
    DEFAULT_MAX_FRAME, DataReply, DataRequest, Envelope, FrameError, read_frame, write_frame,
};

/// Most blob bytes batched into one frame before it is sent.
const BATCH_BYTES: u64 = 64 << 20;
/// Most messages batched into one frame.
const BATCH_MSGS: usize = 20_000;

/// Sends envelopes to one peer; cloning is cheap. Sending never blocks; a closed connection
/// makes `send` return false.
pub struct Sender<M>(mpsc::UnboundedSender<Outgoing<M>>);

/// What goes through a connection's queue: one message, or many decided together.
enum Outgoing<M> {
    One(Envelope<M>),
    Many(Vec<Envelope<M>>),
}

impl<M> Clone for Sender<M> {
    fn clone(&self) -> Self {
        Sender(self.0.clone())
    }
}

impl<M> Sender<M> {
    pub fn send(&self, e: impl Into<Envelope<M>>) -> bool {
        self.0.send(Outgoing::One(e.into())).is_ok()
    }

    /// Queues many messages at once, in order: one wake-up of the writer instead of one each.
    pub fn send_many(&self, batch: Vec<Envelope<M>>) -> bool {
        if batch.is_empty() {
            return !self.0.is_closed();
        }
        self.0.send(Outgoing::Many(batch)).is_ok()
    }
}

/// Reads frames from one peer.
pub struct Receiver {
    read: OwnedReadHalf,
    max: u64,
}

impl Receiver {
    /// The next batch of envelopes; `Ok(None)` at a clean close.
    pub async fn recv<M: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Vec<Envelope<M>>>, FrameError> {
        read_frame(&mut self.read, self.max).await
    }
}

/// Splits a connected stream into a batching sender (a spawned writer task) and a receiver.
/// `peer` names the other side in log lines.
pub fn split<Out>(stream: TcpStream, peer: String) -> (Sender<Out>, Receiver)
where
    Out: Serialize + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(write_loop(write, rx, peer));
    (
        Sender(tx),
        Receiver {
            read,
            max: DEFAULT_MAX_FRAME,
        },
    )
}

async fn write_loop<M: Serialize>(
    write: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing<M>>,
    peer: String,
) {
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
        match write_frame(&mut w, &batch, DEFAULT_MAX_FRAME).await {
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
