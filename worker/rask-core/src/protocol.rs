//! The wire protocol: every message rask's processes exchange, and how they are framed.
//!
//! A frame carries a batch of [`Envelope`]s. Each envelope is one serde message plus the bulk data
//! that belongs to it (encoded results, array chunks), which travels as raw bytes beside the
//! message and is never copied into the message encoding.
//!
//! ```text
//! u64 LE  body length (everything after these 8 bytes, at most the maximum frame size)
//! u32 LE  header length
//! header  postcard: [(message, [blob length, ...]), ...]
//! blobs   the blobs of every envelope, in order
//! ```
//!
//! A frame that is too large, truncated or undecodable is a [`FrameError`]; the connection that
//! sent it is closed with that reason logged, and nothing panics.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::function::{FamilyInfo, KernelError};
use crate::key::Key;
use crate::task::{Resources, TaskSpec};

/// Default ceiling on one frame's body; a peer announcing more is disconnected.
pub const DEFAULT_MAX_FRAME: u64 = 1 << 30;

/// Messages to the scheduler, from clients, workers and nannies. The first message on a
/// connection says which it is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ToScheduler {
    RegisterClient {
        name: String,
    },
    /// Boxed: the info is the largest message, and every message is the size of the largest.
    RegisterWorker(Box<WorkerInfo>),
    /// A nanny (a worker's supervising parent process), alone on a connection of its own: it is
    /// about to kill worker `name` for `reason` (its memory is over the terminate threshold).
    /// The scheduler removes the worker at once, answers `Welcome`, and the nanny kills it.
    WorkerKilled {
        name: String,
        reason: String,
    },

    /// Client: add these tasks (in priority order: earlier runs first) and hold the keys of the
    /// first `wanted_tasks` of them and the `wanted` keys. A `map` wants every task it sends: its
    /// keys are then not sent twice, nor read, allocated and freed again by the scheduler.
    ///
    /// A large graph comes in parts, each in a frame of its own, so that its first tasks run
    /// while the client still makes and encodes the rest: at least `more` tasks are still to
    /// come in later parts (exact for a `map`; a delayed graph sent as it is walked counts the
    /// tasks the walk has met), and 0 says this is the last part, or a graph sent whole. The
    /// scheduler keeps an earlier part's unwanted tasks until the last part, and counts its task
    /// limit over all the parts: a graph announced whole is refused at its first part, one
    /// announced short at the part that goes over.
    UpdateGraph {
        #[serde(deserialize_with = "deserialize_announced")]
        tasks: Vec<TaskSpec>,
        wanted_tasks: u64,
        wanted: Vec<Key>,
        more: u64,
    },
    /// Client: it no longer holds these keys.
    ReleaseKeys {
        keys: Vec<Key>,
    },
    /// Client: report the progress of these keys and of the unfinished tasks they depend on,
    /// as follow `id` (the client's own number). Keys sent again under the same `id` are added
    /// to what it follows. The scheduler answers with [`FromScheduler::Progress`] reports.
    FollowKeys {
        id: u64,
        keys: Vec<Key>,
    },
    /// Client: stop reporting follow `id`.
    Unfollow {
        id: u64,
    },

    /// Worker: still alive, with its load.
    Heartbeat(WorkerLoad),
    /// Worker: a task's result is in its store. When the scheduler asked for the result
    /// (`ComputeTask::send_result`), blob 0 is the encoded value.
    TaskFinished {
        key: Key,
        nbytes: u64,
        duration_us: u64,
        /// Microseconds spent fetching the task's inputs from peers before it ran.
        transfer_us: u64,
    },
    /// Worker: a task raised an error.
    TaskErred {
        key: Key,
        error: KernelError,
        duration_us: u64,
    },
    /// Worker: it now also holds these keys, copied from peers: on the scheduler's request, or
    /// as inputs of its tasks (reported once the next task ends, after that task's result).
    AddKeys {
        keys: Vec<(Key, u64)>,
    },
    /// Worker: no holder of `key` could give it (all listed holders failed or lacked it).
    MissingData {
        key: Key,
        holders: Vec<String>,
    },
    /// Worker: it is shutting down on its own (a signal), so its tasks must go elsewhere.
    WorkerClosing {
        reason: String,
    },
    /// Worker: it stopped (`true`) or resumed (`false`) taking new tasks, its process being over
    /// (or back under) its memory's pause threshold. A paused worker gets no new tasks.
    Paused {
        paused: bool,
    },
}

/// What a worker tells the scheduler when it registers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique worker name (pod or VM name on clusters).
    pub name: String,
    /// `tcp://host:port` where the worker serves its data to peers and clients.
    pub address: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    pub pid: u32,
    /// The function families it can run (the scheduler places tasks by them).
    pub families: Vec<FamilyInfo>,
    /// What it offers to tasks that need resources (`--resources`).
    pub resources: Resources,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLoad {
    /// Bytes of results held in memory.
    pub memory_bytes: u64,
    pub spilled_bytes: u64,
    pub executing: u32,
    /// The process's resident set (0 when not measured: no memory limit).
    #[serde(default)]
    pub rss: u64,
    /// Percent of one core the process used since its previous heartbeat (Dask's `cpu`: 200
    /// is two cores busy); `None` when not measured (no `/proc`, or the first heartbeat).
    #[serde(default)]
    pub cpu_percent: Option<f64>,
    /// Whether to answer with [`FromScheduler::HeartbeatAck`], whose round trip the worker
    /// times (see [`heartbeat_wants_ack`]). Answering every heartbeat cost the scheduler one
    /// socket write per worker per second, a fifth of its idle CPU at 1,000 workers.
    #[serde(default)]
    pub ack: bool,
}

/// A worker asks for an acknowledgement on its first heartbeat and then on every
/// [`HEARTBEAT_ACK_EVERY`]th: its latency (a moving average) needs no more.
pub const HEARTBEAT_ACK_EVERY: u64 = 5;

/// Whether heartbeat number `n` (counting from 0) asks for an acknowledgement.
pub fn heartbeat_wants_ack(n: u64) -> bool {
    n.is_multiple_of(HEARTBEAT_ACK_EVERY)
}

/// Messages from the scheduler to clients and workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FromScheduler {
    /// Registration accepted; `id` names this connection in the scheduler's logs. To a client,
    /// `families` are those of the workers connected now (each name and version once), so it can
    /// check that they run its tasks as it builds them (the `python` family's version names the
    /// workers' Python and cloudpickle); empty to workers and nannies.
    Welcome { id: u64, families: Vec<FamilyInfo> },
    /// Registration refused; the connection closes. `retry`: the same registration may succeed
    /// shortly (a worker of that name is still connected, as when a nanny restarts a worker
    /// before the scheduler has seen the old connection close).
    Refused { reason: String, retry: bool },

    /// Worker: run this task.
    Compute(ComputeTask),
    /// Worker: drop these results.
    FreeKeys { keys: Vec<Key> },
    /// Worker: copy these keys from the listed holders (for a retiring peer).
    AcquireReplicas { keys: Vec<(Key, Vec<String>)> },
    /// Worker: leave now.
    Close { reason: String },
    /// Worker: its heartbeat, which asked for this (`WorkerLoad::ack`), arrived; the worker
    /// times the round trip (Dask's worker latency).
    HeartbeatAck,

    /// Client: a wanted key is in memory. Blob 0 is the value when it was small enough to be
    /// forwarded (`who_has` is then empty); otherwise fetch it from one of `who_has`.
    KeyInMemory {
        key: Key,
        nbytes: u64,
        who_has: Vec<String>,
    },
    /// Client: a wanted key failed, because `failure.key` raised. Boxed: a failure is large
    /// and rare, and every message is the size of the largest.
    KeyErred { key: Key, failure: Box<TaskFailure> },
    /// Client: where the tasks of one of its follows ([`ToScheduler::FollowKeys`]) stand. Sent
    /// at once after each `FollowKeys`, then when they change, at most a few times a second,
    /// and at once when the last of them finishes or fails.
    Progress(ProgressReport),
}

/// Where the tasks of a client's follow stand, per task prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressReport {
    /// The follow's `id`, as the client chose it.
    pub id: u64,
    /// Per task prefix, in order of first appearance.
    pub prefixes: Vec<PrefixProgress>,
    /// Nothing the follow counts is waiting or processing: every task finished or failed.
    pub done: bool,
    /// Keys of the last `FollowKeys` that the scheduler does not know (not submitted, or
    /// already forgotten); they are not followed. At most [`MAX_UNKNOWN_NAMED`] are named.
    pub unknown: Vec<Key>,
}

/// The most unknown keys a [`ProgressReport`] names.
pub const MAX_UNKNOWN_NAMED: usize = 10;

impl ProgressReport {
    /// Tasks followed, of every prefix.
    pub fn total(&self) -> u64 {
        self.prefixes.iter().map(PrefixProgress::total).sum()
    }

    /// Tasks finished, of every prefix.
    pub fn memory(&self) -> u64 {
        self.prefixes.iter().map(|p| p.memory).sum()
    }

    /// Tasks failed, of every prefix.
    pub fn erred(&self) -> u64 {
        self.prefixes.iter().map(|p| p.erred).sum()
    }
}

/// The followed tasks of one task prefix (the part of a key before its first `-`), by where
/// they are.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixProgress {
    pub name: String,
    /// Waiting for inputs or for a worker (or not started yet).
    pub waiting: u64,
    /// Running on a worker.
    pub processing: u64,
    /// Finished: the result is in memory, or was computed and since released (an
    /// intermediate result its dependents no longer need).
    pub memory: u64,
    /// Failed, or depends on a task that failed.
    pub erred: u64,
}

impl PrefixProgress {
    pub fn total(&self) -> u64 {
        self.waiting + self.processing + self.memory + self.erred
    }
}

/// A task sent to a worker, with where to find its inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComputeTask {
    /// Boxed, as `RegisterWorker`'s info: a message is moved several times between the socket
    /// and the worker's table, and a ~120-byte spec inline made each move a `memcpy` call
    /// (5-10% of a worker's instructions on `map`, callgrind). The wire format is the same.
    pub spec: Box<TaskSpec>,
    /// Lower runs first.
    pub priority: u64,
    /// The dependencies in memory, with their sizes, grouped by the workers that hold them: a
    /// task of a million inputs held by two workers names each worker once, not a million times,
    /// and each input by its position in `spec.inputs`, not its key again.
    pub who_has: Vec<HeldBy>,
    /// Dependencies this worker is computing itself: the scheduler sent the task ahead of
    /// them (speculative assignment), to run as soon as they finish here, with no round trip
    /// through the scheduler. They are not in `who_has`. Should one of them fail or be dropped,
    /// the worker drops the task too; the scheduler decides its fate.
    /// Boxed slice: a `Vec` would take `ComputeTask` over the 64 bytes it moves in (see `spec`).
    pub after: Box<[Key]>,
    /// Send the encoded result along with `TaskFinished` (a client is waiting for a small value).
    pub send_result: bool,
}

impl ComputeTask {
    /// Its dependencies in memory, each with its size and holders (grouped on the wire). A
    /// position past the task's inputs names nothing and is left out.
    pub fn held_inputs(&self) -> impl Iterator<Item = (&Key, u64, &[String])> {
        let inputs = &self.spec.inputs;
        self.who_has.iter().flat_map(move |group| {
            group.inputs.iter().filter_map(move |&(at, nbytes)| {
                let key = inputs.get(at as usize)?;
                Some((key, nbytes, group.holders.as_slice()))
            })
        })
    }
}

/// Inputs of a task held by the same workers: where a worker fetches them from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeldBy {
    /// The workers' addresses, to try in order.
    pub holders: Vec<String>,
    /// The inputs, as positions in the task's `spec.inputs`, and their sizes in bytes.
    pub inputs: Vec<(u32, u64)>,
}

/// Where an error came from: the task that failed, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskFailure {
    pub key: Key,
    pub error: TaskError,
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "task {} failed: {}", self.key, self.error)
    }
}

/// Why a task failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum TaskError {
    /// Its function returned an error or panicked.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Workers died while running it, more often than allowed (Dask's `KilledWorker`).
    #[error("worker {last_worker} died while running it; {deaths} workers died on this task{}", reason_suffix(.reason))]
    KilledWorker {
        deaths: u32,
        last_worker: String,
        /// Why the last worker went, when known (e.g. it exceeded its memory limit).
        reason: Option<String>,
    },
    /// No connected worker has the function (or the resources) it needs.
    #[error("no worker can run {func}{}: the workers have {families}", resources_suffix(.resources))]
    NoWorker {
        func: String,
        resources: String,
        families: String,
    },
    /// It reads a key the scheduler does not know.
    #[error("depends on unknown key {input}")]
    UnknownInput { input: Key },
    /// An input was forgotten before it ran.
    #[error("input {input} was forgotten")]
    InputForgotten { input: Key },
    /// A client asked for a key that names no task.
    #[error("unknown key: no such task")]
    UnknownKey,
    /// The client's graph had more tasks than the scheduler takes in one update; none of it was
    /// added.
    #[error(
        "the graph has {tasks} tasks, more than the scheduler's limit of {max} per update \
         (rask scheduler --max-graph-tasks); nothing of it was added"
    )]
    GraphTooLarge { tasks: u64, max: u64 },
}

fn reason_suffix(reason: &Option<String>) -> String {
    reason
        .as_ref()
        .map(|r| format!(" ({r})"))
        .unwrap_or_default()
}

fn resources_suffix(resources: &str) -> String {
    if resources.is_empty() {
        String::new()
    } else {
        format!(" with resources {resources}")
    }
}

/// Requests to a worker's data server (from peers and clients).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DataRequest {
    GetData { keys: Vec<Key> },
}

/// Replies from a worker's data server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DataReply {
    /// One blob per key of `found`, in order.
    Data { found: Vec<Key>, missing: Vec<Key> },
}

/// One message and the bulk data that travels beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<M> {
    pub msg: M,
    pub blobs: Vec<Bytes>,
}

impl<M> Envelope<M> {
    pub fn new(msg: M) -> Self {
        Envelope {
            msg,
            blobs: Vec::new(),
        }
    }

    pub fn with_blobs(msg: M, blobs: Vec<Bytes>) -> Self {
        Envelope { msg, blobs }
    }

    /// Bytes this envelope adds to a frame's blob section.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.len() as u64).sum()
    }
}

impl<M> From<M> for Envelope<M> {
    fn from(msg: M) -> Self {
        Envelope::new(msg)
    }
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge { len: u64, max: u64 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("undecodable frame header: {0}")]
    Decode(#[from] postcard::Error),
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

#[derive(Serialize)]
struct HeaderItem<'a, M> {
    msg: &'a M,
    blob_lens: BlobLens<'a>,
}

/// A batch's header, written as the sequence of [`HeaderItem`]s without collecting them.
struct Header<'a, M>(&'a [Envelope<M>]);

impl<M: Serialize> Serialize for Header<'_, M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|e| HeaderItem {
            msg: &e.msg,
            blob_lens: BlobLens(&e.blobs),
        }))
    }
}

/// The lengths of a message's blobs, written as the sequence [`OwnedHeaderItem`] reads back
/// without collecting them first (one allocation less per message sent).
struct BlobLens<'a>(&'a [Bytes]);

impl Serialize for BlobLens<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|b| b.len() as u64))
    }
}

#[derive(Deserialize)]
struct OwnedHeaderItem<M> {
    msg: M,
    blob_lens: Vec<u64>,
}

/// Header bytes a frame's buffer may reach and still be kept for the connection's next frame.
/// A larger header is encoded into a buffer of its exact size (measured first) that is freed
/// after it is written: one block, not the doublings that leave freed blocks of every size
/// between the kept ones (glibc's malloc serves blocks under its sliding mmap threshold, up to
/// 32 MiB, from the heap, and they stay in the process once freed).
const KEPT_HEAD: usize = 1 << 20;

/// Header bytes a writer keeps once its connection is idle ([`FrameWriter::release`]).
const IDLE_HEAD: usize = 16 << 10;

/// A postcard output that appends to a vector up to a limit, past which it fails (and the
/// frame is measured and encoded again into a buffer of its own).
struct Bounded<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
}

impl postcard::ser_flavors::Flavor for Bounded<'_> {
    type Output = ();

    fn try_push(&mut self, b: u8) -> postcard::Result<()> {
        if self.buf.len() >= self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.push(b);
        Ok(())
    }

    fn try_extend(&mut self, b: &[u8]) -> postcard::Result<()> {
        if self.buf.len() + b.len() > self.limit {
            return Err(postcard::Error::SerializeBufferFull);
        }
        self.buf.extend_from_slice(b);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes frames for one connection, keeping the header's buffer between frames (up to
/// [`KEPT_HEAD`] bytes; [`FrameWriter::release`] gives back all but [`IDLE_HEAD`] of it).
#[derive(Debug, Default)]
pub struct FrameWriter {
    head: Vec<u8>,
}

impl FrameWriter {
    /// Bytes of the kept header buffer.
    pub fn capacity(&self) -> usize {
        self.head.capacity()
    }

    /// Gives back a kept buffer larger than an idle connection needs.
    pub fn release(&mut self) {
        if self.head.capacity() > IDLE_HEAD {
            self.head = Vec::new();
        }
    }

    /// Encodes `batch`'s length prefix and header into the kept buffer, or into a new buffer of
    /// the exact size for a header over [`KEPT_HEAD`] (returned then).
    fn encode<M: Serialize>(
        &mut self,
        batch: &[Envelope<M>],
        max: u64,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        let header = Header(batch);
        self.head.clear();
        self.head.extend_from_slice(&[0; 12]);
        let flavor = Bounded {
            buf: &mut self.head,
            limit: KEPT_HEAD,
        };
        let mut big = match postcard::serialize_with_flavor(&header, flavor) {
            Ok(()) => None,
            Err(postcard::Error::SerializeBufferFull) => {
                self.head.clear();
                let size = postcard::serialize_with_flavor(
                    &header,
                    postcard::ser_flavors::Size::default(),
                )?;
                let mut head = Vec::with_capacity(12 + size);
                head.extend_from_slice(&[0; 12]);
                Some(postcard::to_extend(&header, head)?)
            }
            Err(e) => return Err(e.into()),
        };
        let head = big.as_mut().unwrap_or(&mut self.head);
        let header_len = head.len() - 12;
        let blob_total: u64 = batch.iter().map(Envelope::blob_bytes).sum();
        let body_len = 4 + header_len as u64 + blob_total;
        if body_len > max {
            return Err(FrameError::TooLarge { len: body_len, max });
        }
        let header_len = u32::try_from(header_len).map_err(|_| {
            FrameError::Malformed(format!("header of {header_len} bytes does not fit a frame"))
        })?;
        head[..8].copy_from_slice(&body_len.to_le_bytes());
        head[8..12].copy_from_slice(&header_len.to_le_bytes());
        Ok(big)
    }

    /// Writes one frame (does not flush).
    pub async fn write<M, W>(
        &mut self,
        w: &mut W,
        batch: &[Envelope<M>],
        max: u64,
    ) -> Result<(), FrameError>
    where
        M: Serialize,
        W: AsyncWrite + Unpin,
    {
        let big = self.encode(batch, max)?;
        let pending = match big {
            Some(head) => {
                // A header this large is written alone; its buffer is not kept.
                w.write_all(&head).await?;
                self.head.clear();
                &mut self.head
            }
            None => &mut self.head,
        };
        // Small blobs are copied after the header and go out in few writes (one write per blob
        // would be one TCP segment per result on an unbuffered socket: 5,000 small results took
        // 10 ms); large ones are written from their own buffers without a copy.
        for b in batch.iter().flat_map(|e| &e.blobs) {
            let small = b.len() < COALESCE_BELOW;
            if (!small || pending.len() + b.len() > COALESCE_MAX) && !pending.is_empty() {
                w.write_all(pending).await?;
                pending.clear();
            }
            if small {
                pending.extend_from_slice(b);
            } else {
                w.write_all(b).await?;
            }
        }
        if !pending.is_empty() {
            w.write_all(pending).await?;
        }
        Ok(())
    }
}

/// Encodes a batch into its wire form: the length prefix plus header, then the blobs to write
/// after it unchanged.
pub fn encode_frame<M: Serialize>(
    batch: &[Envelope<M>],
    max: u64,
) -> Result<(Vec<u8>, Vec<Bytes>), FrameError> {
    let mut frames = FrameWriter::default();
    let head = match frames.encode(batch, max)? {
        Some(head) => head,
        None => frames.head,
    };
    let blobs = batch.iter().flat_map(|e| e.blobs.iter().cloned()).collect();
    Ok((head, blobs))
}

thread_local! {
    /// Bytes of the header being decoded on this thread: what bounds the elements a sequence in
    /// it may announce (each takes at least a byte), 0 outside [`decode_body`].
    static HEADER_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A vector read at the length its encoding announces, in one allocation: serde's own reads
/// at most 1 MiB's worth before growing by doubling, which for an update of a million tasks
/// made and freed blocks of 2, 4, 8, 16 and 32 MiB on the way to its 128. The announcement is
/// believed up to the bytes left in the frame's header (an element takes at least one), and
/// a failed reservation falls back to growing.
fn deserialize_announced<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Announced<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Announced<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let announced = seq.size_hint().unwrap_or(0);
            let mut out = Vec::new();
            let _ = out.try_reserve_exact(announced.min(HEADER_BYTES.get()));
            while let Some(x) = seq.next_element()? {
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Announced(std::marker::PhantomData))
}

/// A frame's header items, read as [`deserialize_announced`] reads.
struct Items<M>(Vec<OwnedHeaderItem<M>>);

impl<'de, M: Deserialize<'de>> Deserialize<'de> for Items<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize_announced(d).map(Items)
    }
}

/// Decodes a frame body (everything after the 8-byte length prefix).
pub fn decode_body<M: DeserializeOwned>(mut body: Bytes) -> Result<Vec<Envelope<M>>, FrameError> {
    if body.len() < 4 {
        return Err(FrameError::Malformed(format!(
            "body of {} bytes has no header length",
            body.len()
        )));
    }
    let header_len = u32::from_le_bytes([body[0], body[1], body[2], body[3]]) as usize;
    if header_len > body.len() - 4 {
        return Err(FrameError::Malformed(format!(
            "header length {header_len} exceeds the {} bytes of the frame",
            body.len() - 4
        )));
    }
    let _ = body.split_to(4);
    let header = body.split_to(header_len);
    HEADER_BYTES.set(header_len);
    let items = postcard::from_bytes::<Items<M>>(&header);
    HEADER_BYTES.set(0);
    let Items(items) = items?;
    // Checked: a header from the network can announce lengths whose sum wraps around to the
    // frame's size, after which splitting off the first blob would panic.
    let announced = items
        .iter()
        .flat_map(|i| i.blob_lens.iter())
        .try_fold(0u64, |sum, &n| sum.checked_add(n));
    let Some(announced) = announced else {
        return Err(FrameError::Malformed(
            "header announces blob lengths whose sum overflows".to_owned(),
        ));
    };
    if announced != body.len() as u64 {
        return Err(FrameError::Malformed(format!(
            "header announces {announced} blob bytes but the frame carries {}",
            body.len()
        )));
    }
    Ok(items
        .into_iter()
        .map(|item| {
            let blobs = item
                .blob_lens
                .iter()
                .map(|&n| body.split_to(n as usize))
                .collect();
            Envelope {
                msg: item.msg,
                blobs,
            }
        })
        .collect())
}

/// Reads one frame. `Ok(None)` is a clean end of stream between frames.
pub async fn read_frame<M, R>(r: &mut R, max: u64) -> Result<Option<Vec<Envelope<M>>>, FrameError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut len_buf = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = match r.read(&mut len_buf[got..]).await {
            Ok(n) => n,
            // A TLS peer gone without its close_notify (a process that exited, a dropped
            // connection): between frames that is the end of the stream, as it is over plain
            // TCP. Frames carry their lengths, so a cut stream cannot pass for shorter messages.
            Err(e) if got == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
        got += n;
    }
    let len = u64::from_le_bytes(len_buf);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len,
        max: usize::MAX as u64,
    })?;
    let body = if len <= FIRST_READ {
        let mut body = BytesMut::zeroed(len);
        r.read_exact(&mut body).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => FrameError::Truncated,
            _ => FrameError::Io(e),
        })?;
        body
    } else {
        // A larger buffer starts at `BIG_FIRST_READ` and grows as the bytes arrive (eightfold):
        // a peer that announces a large frame and sends little holds what it sent (a block this
        // large is mapped, and its pages are memory once written), not the announced size, in
        // one block of the process's address space. One block: the first is over glibc's
        // largest mmap threshold (32 MiB), so a frame of up to 64 MiB is neither copied nor
        // leaves a freed block in the heap as an 8 MiB start did (grown by remapping beyond).
        let mut body = BytesMut::with_capacity(len.min(BIG_FIRST_READ));
        while body.len() < len {
            let missing = len - body.len();
            if body.capacity() == body.len() {
                body.reserve((body.len() * (GROWTH - 1)).min(missing));
            }
            let n = (&mut *r).take(missing as u64).read_buf(&mut body).await?;
            if n == 0 {
                return Err(FrameError::Truncated);
            }
        }
        body
    };
    decode_body(body.freeze()).map(Some)
}

/// Writes one frame (does not flush).
pub async fn write_frame<M, W>(w: &mut W, batch: &[Envelope<M>], max: u64) -> Result<(), FrameError>
where
    M: Serialize,
    W: AsyncWrite + Unpin,
{
    FrameWriter::default().write(w, batch, max).await
}

/// Frames up to this size are read into a buffer of their size at once; a larger frame's buffer
/// starts at [`BIG_FIRST_READ`] and grows `GROWTH`-fold as its bytes arrive.
const FIRST_READ: usize = 8 << 20;
const BIG_FIRST_READ: usize = 64 << 20;
const GROWTH: usize = 8;

/// Blobs below this size are copied into the frame's write buffer rather than written alone.
const COALESCE_BELOW: usize = 64 << 10;
/// The most bytes `write_frame` buffers before writing.
const COALESCE_MAX: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_asks_for_an_acknowledgement_on_its_first_heartbeat_then_every_fifth() {
        let asked: Vec<u64> = (0..12).filter(|&n| heartbeat_wants_ack(n)).collect();
        assert_eq!(asked, [0, 5, 10]);
    }

    fn sample() -> Vec<Envelope<ToScheduler>> {
        vec![
            Envelope::new(ToScheduler::UpdateGraph {
                tasks: vec![TaskSpec::new(
                    "inc-1".into(),
                    "seed.inc".into(),
                    Bytes::from_static(&[1, 2]),
                    vec!["x-1".into()],
                )],
                wanted_tasks: 1,
                wanted: vec!["x-1".into()],
                more: 0,
            }),
            Envelope::with_blobs(
                ToScheduler::TaskFinished {
                    key: "inc-1".into(),
                    nbytes: 3,
                    duration_us: 5,
                    transfer_us: 7,
                },
                vec![Bytes::from_static(b"abc")],
            ),
            Envelope::with_blobs(
                ToScheduler::AddKeys {
                    keys: vec![("x".into(), 0), ("y".into(), 2)],
                },
                vec![Bytes::new(), Bytes::from_static(b"yy")],
            ),
        ]
    }

    #[tokio::test]
    async fn frames_round_trip_with_blobs() {
        let batch = sample();
        let mut buf = Vec::new();
        write_frame(&mut buf, &batch, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        write_frame(&mut buf, &batch[..1], DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let mut r = &buf[..];
        let got: Vec<Envelope<ToScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, batch);
        let got2: Vec<Envelope<ToScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got2, batch[..1]);
        assert!(
            read_frame::<ToScheduler, _>(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .is_none()
        );
    }

    /// Records each write call, as an unbuffered socket would send each as its own segment.
    #[derive(Default)]
    struct Writes {
        data: Vec<u8>,
        calls: usize,
    }

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            self.calls += 1;
            self.data.extend_from_slice(buf);
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn many_small_blobs_go_out_in_few_writes_and_big_ones_intact() {
        let small: Vec<Bytes> = (0..5000u32)
            .map(|i| Bytes::from(i.to_le_bytes().to_vec()))
            .collect();
        let big = Bytes::from(vec![7u8; 3 << 20]);
        let mut blobs = small.clone();
        blobs.insert(2500, big.clone());
        let keys = (0..blobs.len())
            .map(|i| (Key::from(format!("k-{i}")), 4))
            .collect();
        let batch = vec![Envelope::with_blobs(ToScheduler::AddKeys { keys }, blobs)];
        let mut w = Writes::default();
        write_frame(&mut w, &batch, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        // Header and first half, the big blob, the second half.
        assert_eq!(w.calls, 3);
        let got: Vec<Envelope<ToScheduler>> = read_frame(&mut &w.data[..], DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, batch);
    }

    #[tokio::test]
    async fn follows_and_their_reports_round_trip() {
        let to: Vec<Envelope<ToScheduler>> = vec![
            ToScheduler::FollowKeys {
                id: 3,
                keys: vec!["inc-1".into(), "sum-2".into()],
            }
            .into(),
            ToScheduler::Unfollow { id: 3 }.into(),
        ];
        let report = ProgressReport {
            id: 3,
            prefixes: vec![
                PrefixProgress {
                    name: "inc".into(),
                    waiting: 1,
                    processing: 2,
                    memory: 3,
                    erred: 4,
                },
                PrefixProgress {
                    name: "sum".into(),
                    waiting: 1,
                    ..PrefixProgress::default()
                },
            ],
            done: false,
            unknown: vec!["nope-1".into()],
        };
        assert_eq!(
            (report.total(), report.memory(), report.erred()),
            (11, 3, 4)
        );
        let from = vec![Envelope::new(FromScheduler::Progress(report))];
        let mut buf = Vec::new();
        write_frame(&mut buf, &to, DEFAULT_MAX_FRAME).await.unwrap();
        write_frame(&mut buf, &from, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let mut r = &buf[..];
        let got: Vec<Envelope<ToScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, to);
        let got: Vec<Envelope<FromScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, from);
    }

    #[tokio::test]
    async fn oversized_frame_is_refused_before_allocation() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&(u64::MAX).to_le_bytes());
        let err = read_frame::<ToScheduler, _>(&mut &buf[..], 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(err, FrameError::TooLarge { max: 1024, .. }),
            "{err}"
        );
        // and the writer refuses to produce one
        let big = vec![Envelope::with_blobs(
            ToScheduler::Heartbeat(WorkerLoad::default()),
            vec![Bytes::from(vec![0u8; 2048])],
        )];
        assert!(matches!(
            encode_frame(&big, 1024),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn frames_over_the_first_read_grow_as_they_arrive_and_round_trip() {
        let blob = Bytes::from((0..(20usize << 20)).map(|i| i as u8).collect::<Vec<_>>());
        let batch = vec![Envelope::with_blobs(
            ToScheduler::ReleaseKeys { keys: vec![] },
            vec![blob],
        )];
        let mut buf = Vec::new();
        write_frame(&mut buf, &batch, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let got: Vec<Envelope<ToScheduler>> = read_frame(&mut &buf[..], DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, batch);
        // Cut anywhere, it is truncated, never a panic or a hang.
        for cut in [9, FIRST_READ, FIRST_READ + 1, 9 << 20, buf.len() - 1] {
            let err = read_frame::<ToScheduler, _>(&mut &buf[..cut], DEFAULT_MAX_FRAME)
                .await
                .unwrap_err();
            assert!(matches!(err, FrameError::Truncated), "{cut}: {err}");
        }
    }

    fn update_of(n: usize) -> Vec<Envelope<ToScheduler>> {
        let tasks = (0..n)
            .map(|i| {
                TaskSpec::new(
                    format!("inc-{i}").as_str().into(),
                    "seed.inc".into(),
                    Bytes::from_static(&[1, 2]),
                    vec![],
                )
            })
            .collect();
        vec![Envelope::new(ToScheduler::UpdateGraph {
            tasks,
            wanted_tasks: n as u64,
            wanted: vec![],
            more: 0,
        })]
    }

    #[tokio::test]
    async fn a_frame_writer_reuses_its_buffer_and_encodes_a_large_header_exactly() {
        let mut frames = FrameWriter::default();
        let mut wire = Vec::new();
        frames
            .write(&mut wire, &sample(), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let kept = (frames.head.as_ptr(), frames.capacity());
        frames
            .write(&mut wire, &sample(), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert_eq!((frames.head.as_ptr(), frames.capacity()), kept);
        // A header over KEPT_HEAD goes through a buffer of its own; the kept one stays bounded.
        let big = update_of(100_000);
        let exact = frames.encode(&big, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!(exact.capacity(), exact.len());
        assert!(exact.len() > KEPT_HEAD);
        frames
            .write(&mut wire, &big, DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert!(frames.capacity() <= 2 * KEPT_HEAD, "{}", frames.capacity());
        frames.release();
        assert_eq!(frames.capacity(), 0);
        let mut r = &wire[..];
        for want in [sample(), sample(), big] {
            let got: Vec<Envelope<ToScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(got, want);
        }
        assert!(r.is_empty());
        // The same bytes as the frames' encoding without a kept buffer.
        let mut once = Vec::new();
        write_frame(&mut once, &sample(), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        assert_eq!(&wire[..once.len()], &once[..]);
    }

    #[test]
    fn an_update_is_read_into_one_block_of_its_announced_length() {
        let (head, _) = encode_frame(&update_of(50_000), DEFAULT_MAX_FRAME).unwrap();
        let got = decode_body::<ToScheduler>(Bytes::copy_from_slice(&head[8..])).unwrap();
        let ToScheduler::UpdateGraph { tasks, .. } = &got[0].msg else {
            panic!("{got:?}");
        };
        assert_eq!((tasks.len(), tasks.capacity()), (50_000, 50_000));
    }

    #[test]
    fn an_announced_length_beyond_the_frame_is_not_believed() {
        // An update announcing 2^40 tasks in a few bytes: an error, not an allocation of them.
        #[derive(Serialize)]
        enum Lying {
            #[allow(dead_code)]
            RegisterClient,
            #[allow(dead_code)]
            RegisterWorker,
            #[allow(dead_code)]
            WorkerKilled,
            UpdateGraph(u64),
        }
        let item = (Lying::UpdateGraph(1 << 40), Vec::<u64>::new());
        let header = postcard::to_allocvec(&vec![item]).unwrap();
        let mut body = (header.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&header);
        assert!(decode_body::<ToScheduler>(Bytes::from(body)).is_err());
        assert_eq!(HEADER_BYTES.get(), 0);
    }

    /// The rest of a TLS stream whose peer left without its close_notify: rustls' error.
    struct NoCloseNotify;

    impl tokio::io::AsyncRead for NoCloseNotify {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "peer closed connection without sending TLS close_notify",
            )))
        }
    }

    #[tokio::test]
    async fn a_tls_peer_gone_without_close_notify_between_frames_ends_the_stream() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &sample(), DEFAULT_MAX_FRAME)
            .await
            .unwrap();
        let mut r = (&buf[..]).chain(NoCloseNotify);
        let got: Vec<Envelope<ToScheduler>> = read_frame(&mut r, DEFAULT_MAX_FRAME)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, sample());
        assert!(
            read_frame::<ToScheduler, _>(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap()
                .is_none()
        );
        // Inside a frame it is still a cut frame, not an end.
        for cut in [3, 8, buf.len() - 1] {
            let mut r = (&buf[..cut]).chain(NoCloseNotify);
            let err = read_frame::<ToScheduler, _>(&mut r, DEFAULT_MAX_FRAME)
                .await
                .unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated | FrameError::Io(_)),
                "{cut}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn malformed_frames_are_errors() {
        // truncated length prefix
        let err = read_frame::<ToScheduler, _>(&mut &[1u8, 0, 0][..], 1024)
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::Truncated));
        // body shorter than announced
        let mut buf = 100u64.to_le_bytes().to_vec();
        buf.extend_from_slice(&[0; 10]);
        assert!(matches!(
            read_frame::<ToScheduler, _>(&mut &buf[..], 1024).await,
            Err(FrameError::Truncated)
        ));
        // header length beyond the body
        let mut body = 200u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0; 4]);
        assert!(matches!(
            decode_body::<ToScheduler>(Bytes::from(body)),
            Err(FrameError::Malformed(_))
        ));
        // garbage header
        let mut body = 3u32.to_le_bytes().to_vec();
        body.extend_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_body::<ToScheduler>(Bytes::from(body)),
            Err(FrameError::Decode(_))
        ));
        // blob lengths that disagree with the frame
        let (head, _blobs) = encode_frame(&sample(), DEFAULT_MAX_FRAME).unwrap();
        let body = Bytes::copy_from_slice(&head[8..]);
        assert!(matches!(
            decode_body::<ToScheduler>(body),
            Err(FrameError::Malformed(_))
        ));
    }

    /// Messages are moved by value from the socket to the handlers (decode, channel, batch,
    /// state); over 128 bytes each move is a `memcpy` call rather than a few register stores,
    /// which cost a worker 5-10% of its instructions per task before the large parts were
    /// boxed. Box a new large variant or field rather than raise these bounds.
    #[test]
    fn messages_stay_small_enough_to_move_without_memcpy() {
        use std::mem::size_of;
        assert!(
            size_of::<Envelope<ToScheduler>>() <= 128,
            "{}",
            size_of::<Envelope<ToScheduler>>()
        );
        assert!(
            size_of::<Envelope<FromScheduler>>() <= 128,
            "{}",
            size_of::<Envelope<FromScheduler>>()
        );
        assert!(
            size_of::<ComputeTask>() <= 64,
            "{}",
            size_of::<ComputeTask>()
        );
    }

    #[test]
    fn blob_lengths_that_wrap_around_are_malformed_not_a_panic() {
        // Two blobs announced as u64::MAX and 2 bytes: their sum wraps to the 1 byte the frame
        // carries (found reading the decoder for the `frame` fuzz target; docs/security.md).
        #[derive(Serialize)]
        struct Item {
            msg: ToScheduler,
            blob_lens: Vec<u64>,
        }
        let header = postcard::to_allocvec(&vec![Item {
            msg: ToScheduler::Heartbeat(WorkerLoad::default()),
            blob_lens: vec![u64::MAX, 2],
        }])
        .unwrap();
        let mut body = (header.len() as u32).to_le_bytes().to_vec();
        body.extend_from_slice(&header);
        body.push(7);
        let err = decode_body::<ToScheduler>(Bytes::from(body)).unwrap_err();
        assert!(err.to_string().contains("overflows"), "{err}");
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and many byte flips of a valid frame.
        let (head, blobs) = encode_frame(&sample(), DEFAULT_MAX_FRAME).unwrap();
        let mut body = head[8..].to_vec();
        for b in &blobs {
            body.extend_from_slice(b);
        }
        for cut in 0..body.len() {
            let _ = decode_body::<ToScheduler>(Bytes::copy_from_slice(&body[..cut]));
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut b = body.clone();
            let i = (state as usize) % b.len();
            b[i] = (state >> 32) as u8;
            let _ = decode_body::<ToScheduler>(Bytes::from(b));
        }
    }
}
