//! `rask-bench`: rask's engine benchmarks, one JSON line per workload, each with the median, min
//! and max over `--reps` repetitions and Dask's reference figure (`../shared/DESIGN.md`) beside it.
//!
//! ```text
//! cargo build --release --bins && target/release/rask-bench all
//! ```
//!
//! Workloads mirror the peer scripts in `shared/peer-bench/`: `map` and `chain` (bench_e),
//! `delayed` (bench_d), `startup` (bench_f), `futures-pipeline` (bench_e's seed pipeline) and
//! `dataframe` (bench_c: the taxi CSV read with a block size, `len`, groupby-mean), and
//! `python-map`, bench_e's `map(inc)` with a Python `inc` run by the workers' Python processes.
//! Cluster workloads run on a [`LocalCluster`] of 2 worker processes × 1 thread whose scheduler
//! lives in this process, like Dask's `LocalCluster(processes=True)`.
//!
//! `many-workers` ([`many_workers`], not in `all`) is of another kind: a `rask scheduler` process
//! and 100 or 1,000 simulated workers in this process ([`sim_worker`]), for the scheduler's cost
//! per worker (issue 18).
//!
//! `--tls` runs the cluster workloads over mutual TLS instead of plain TCP (a throwaway CA and
//! certificate made for the run), naming each line `<workload>-tls` (`map-tls`), so a results
//! file can hold both and show what encryption costs (`TLS=1 scripts/bench map array-mean`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde_json::{Value as Json, json};

use rask::Value;
use rask::array::ChunkSpec;
use rask::client::delayed::{Delayed, delayed, delayed_with};
use rask::client::{Client, ClientError, Future};
use rask::core::Pickled;
use rask::jobs;
use rask::local::{LocalCluster, LocalClusterConfig, LocalError};
use rask::python::{CALL, PyCall, PythonConfig};
use rask::seed::{ADD, CUSTOM_OP, INC, SUM, lit};

mod many_workers;
mod sim_worker;

/// Dask's figures from DESIGN.md ("Dask 2026.8 on a 2-core machine of this kind, median of 3").
mod dask_ref {
    pub const MAP_TASKS_PER_S: f64 = 593.0;
    pub const CHAIN_MS_PER_LINK: f64 = 6.2;
    pub const DELAYED_BUILD_S: f64 = 5.4;
    pub const DELAYED_COMPUTE_S: f64 = 4.1;
    pub const STARTUP_S: f64 = 0.71;
    pub const SCHEDULER_RSS_MIB: f64 = 79.0;
    /// `da.random.random((800,)*3, chunks=200).mean()`, threaded scheduler, 2 threads.
    pub const ARRAY_MEAN_GB_S: f64 = 1.24;
    pub const ARRAY_MEAN_PEAK_RSS_MIB: f64 = 188.0;
    /// `(x.dot(x.T + 1) - x.mean()).std()` on 8000², chunks 1000², 1 BLAS thread.
    pub const ARRAY_LINALG_EXPR_S: f64 = 22.8;
    /// CSV 5 M rows (234 MB), `blocksize=64MB`: groupby-mean and `len`.
    pub const DATAFRAME_GROUPBY_S: f64 = 1.44;
    pub const DATAFRAME_LEN_S: f64 = 2.0;
    /// Polars' lazy `scan_csv` group_by on the same file (DESIGN.md).
    pub const POLARS_GROUPBY_S: f64 = 0.55;
}

/// rask's targets for the same workloads.
mod target {
    pub const MAP_TASKS_PER_S: f64 = 100_000.0;
    /// Issue 14: 20× Dask's `map(inc)`, whose `inc` is a Python function too.
    pub const PYTHON_MAP_TASKS_PER_S: f64 = 20.0 * super::dask_ref::MAP_TASKS_PER_S;
    pub const CHAIN_MS_PER_LINK: f64 = 0.1;
    pub const DELAYED_TOTAL_MS: f64 = 50.0;
    pub const STARTUP_MS: f64 = 20.0;
    pub const SCHEDULER_RSS_MIB: f64 = 10.0;
    pub const ARRAY_MEAN_GB_S: f64 = 3.7;
    /// Summed over the bench process (client and scheduler) and the workers.
    pub const ARRAY_MEAN_PEAK_RSS_MIB: f64 = 100.0;
    pub const ARRAY_MEAN_BIG_S: f64 = 20.0;
    /// Per process.
    pub const ARRAY_MEAN_BIG_PEAK_RSS_MIB: f64 = 1024.0;
    /// No slower than Polars' lazy group_by on one process.
    pub const DATAFRAME_GROUPBY_S: f64 = 0.55;
    pub const DATAFRAME_LEN_S: f64 = 0.2;
}

const WORKERS: usize = 2;
const THREADS: usize = 1;

#[derive(Parser)]
#[command(
    name = "rask-bench",
    about = "rask's engine benchmarks: one JSON line per workload, Dask's figure beside it"
)]
struct Cli {
    /// Workloads to run, in order (`all`: every one; the pipeline only with --with-pipeline).
    #[arg(required = true, value_enum)]
    workloads: Vec<Workload>,
    /// Repetitions of each workload (median, min and max are reported). `scale` at several
    /// sizes: rounds, each running every size in turn in a fresh process, 3 repetitions each.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Let `all` include the 20-second futures pipeline.
    #[arg(long)]
    with_pipeline: bool,
    /// Tasks of `map`, `delayed`, `python-map` and `scale`: repeatable or a comma-separated list,
    /// one line per size (default: 10,000, the reference figures' size; `scale`: 10,000, 100,000
    /// and 1,000,000).
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<usize>,
    /// Links of `chain` (the reference figure is for 1,000).
    #[arg(long, default_value_t = 1_000)]
    links: usize,
    /// (src, dst) pairs of `futures-pipeline` (the reference is 50 pairs of 0.2-s steps).
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Seconds each step of `futures-pipeline` takes.
    #[arg(long, default_value_t = 0.2)]
    step: f64,
    /// Threads of this process's async runtime, which runs the client and the scheduler.
    #[arg(long, default_value_t = 2)]
    runtime_threads: usize,
    /// `array-mean`: length of each of the 3 dimensions (the reference is 800).
    #[arg(long, default_value_t = 800)]
    array_size: usize,
    /// `array-mean`: chunk length (the reference is 200).
    #[arg(long, default_value_t = 200)]
    array_chunk: usize,
    /// `array-linalg`: rows and columns of the matrix (the reference is 8000).
    #[arg(long, default_value_t = 8000)]
    linalg_size: usize,
    /// `array-linalg`: chunk rows and columns (the reference is 1000).
    #[arg(long, default_value_t = 1000)]
    linalg_chunk: usize,
    /// CSV for `dataframe` (the peers' `taxi_5000000_seed42.csv` for like-for-like figures);
    /// without it, a 5,000,000-row file is generated once under the target directory.
    #[arg(long, env = "RASK_BENCH_CSV")]
    csv: Option<PathBuf>,
    /// Block size of `dataframe`'s read_csv.
    #[arg(long, default_value = "64MB")]
    blocksize: String,
    /// Seconds one repetition may take before the run is abandoned.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Keep the dashboard page's live feed open during cluster workloads: the scheduler serves
    /// its dashboard and a reader subscribes to `/status/events` as an open `/status` page does,
    /// so the scheduler encodes an update every 500 ms. Each line then carries `"page"`: the
    /// updates received and their sizes.
    #[arg(long)]
    page: bool,
    /// Run the cluster workloads over mutual TLS (a throwaway CA and certificate); their lines
    /// are named `<workload>-tls`.
    #[arg(long)]
    tls: bool,
    /// `many-workers`: how many simulated workers, one line per size (default: 100 and 1,000).
    /// Its busy `map` has the first of `--tasks` tasks (default 100,000).
    #[arg(long, value_delimiter = ',')]
    workers: Vec<usize>,
    /// `many-workers`: seconds between a simulated worker's heartbeats (`rask worker`'s default).
    #[arg(long, default_value_t = 1.0)]
    heartbeat_s: f64,
    /// `many-workers`: the scheduler's `--worker-ttl`, seconds without a heartbeat before a
    /// worker is lost (shorter than the 30-s default so the run stays short).
    #[arg(long, default_value_t = 5.0)]
    worker_ttl: f64,
    /// `many-workers`: seconds over which the idle scheduler's CPU is measured.
    #[arg(long, default_value_t = 10.0)]
    idle_s: f64,
    /// `many-workers`: workers retired by one `retire_workers` request (at most half of them).
    #[arg(long, default_value_t = 100)]
    retire: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// 10,000 `map(inc)` + gather, and the same as a `submit` loop, on 2×1 worker processes.
    Map,
    /// A chain of 1,000 dependent futures (`x = submit(inc, x)`).
    Chain,
    /// A 10,000-task delayed graph (inc × N + sum), and the seed pattern (inc, custom_op, add).
    Delayed,
    /// `rask scheduler` from spawn to `GET /health` = `ok`, and its RSS.
    Startup,
    /// The seed futures pipeline: 50 × (load → process1 → process2 → save), 0.2 s per step.
    FuturesPipeline,
    /// `random((800,)*3, chunks=200).mean()`: GB/s generated, peak RSS of every process.
    ArrayMean,
    /// `random((2000,)*3, chunks="auto").mean()` (59.6 GiB): seconds, peak RSS per process.
    ArrayMeanBig,
    /// On a random 8000² matrix, chunks 1000²: `x.sum(axis=0)`, `(x.dot(x.T + 1) - x.mean()).std()`.
    ArrayLinalg,
    /// The taxi CSV (5 M rows, 234 MB) read with blocksize 64MB: `len`, then the mean of
    /// total_amount and trip_distance by payment_type (bench_c).
    Dataframe,
    /// 10,000 `map(inc)` + gather with a Python `inc` (`python.call` tasks, pickled with
    /// cloudpickle by the Python of `RASK_PYTHON` or `python3`, as a Python client would).
    PythonMap,
    /// At each of `--tasks`' sizes (10,000, 100,000 and 1,000,000 by default), each size in a
    /// process of its own: `map` + gather and the delayed sum (inc × N + one sum), tasks/s and
    /// the bench process's RSS growth per task.
    Scale,
    /// A `rask scheduler` process and `--workers` simulated workers (100 and 1,000) speaking the
    /// worker protocol from this process: the scheduler's idle CPU, tasks/s with every worker
    /// busy, time to notice a lost worker, time to retire 100.
    ManyWorkers,
    /// Every workload above (the pipeline only with --with-pipeline; `scale` and
    /// `many-workers` not: they take minutes).
    All,
}

/// Why a benchmark could not run or got a wrong answer.
#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error(
        "the rask binary is missing at {0} (the cluster's workers run it): \
         build it with `cargo build --release --bins`"
    )]
    MissingRask(PathBuf),
    #[error("python: {0}")]
    Python(String),
    #[error("cannot find this executable's path: {0}")]
    CurrentExe(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("local cluster: {0}")]
    Cluster(#[from] LocalError),
    #[error("client: {0}")]
    Client(#[from] ClientError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{workload}: wrong result {got}, expected {expected}")]
    Wrong {
        workload: &'static str,
        got: String,
        expected: String,
    },
    #[error("{workload}: {what} took longer than {secs} s")]
    Timeout {
        workload: &'static str,
        what: &'static str,
        secs: u64,
    },
    #[error("dataframe: {0}")]
    Frame(#[from] rask::frame::FrameError),
    #[error("--tls: {0}")]
    Certs(#[from] rask::certs::CertError),
    #[error("startup: the scheduler exited before answering /health ({0})")]
    SchedulerExited(std::process::ExitStatus),
    #[error("many-workers: {0}")]
    ManyWorkers(String),
    #[error("cannot read {field} of process {pid} from /proc: {reason}")]
    Proc {
        pid: u32,
        field: &'static str,
        reason: String,
    },
}

type Result<T, E = BenchError> = std::result::Result<T, E>;

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen workloads in order, printing each one's JSON line as soon as it is done.
fn run(cli: &Cli) -> Result<()> {
    let rask = rask_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.runtime_threads.max(1))
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)?;
    for w in expand(&cli.workloads, cli.with_pipeline) {
        match w {
            Workload::Startup => println!("{}", startup(cli, &rask)?),
            Workload::ManyWorkers => many_workers::run(cli, &rask, &runtime)?,
            Workload::Scale if sizes(cli, w).len() > 1 => scale_in_rounds(cli, &sizes(cli, w))?,
            w => {
                for n in sizes(cli, w) {
                    println!("{}", runtime.block_on(on_cluster(cli, &rask, w, n))?);
                }
            }
        }
    }
    Ok(())
}

/// The task counts `w` runs at: `--tasks`, else its default.
fn sizes(cli: &Cli, w: Workload) -> Vec<usize> {
    match (cli.tasks.is_empty(), w) {
        (false, _) => cli.tasks.clone(),
        (true, Workload::Scale) => vec![10_000, 100_000, 1_000_000],
        (true, _) => vec![10_000],
    }
}

/// `all` → every workload (the pipeline only when asked for); duplicates run once.
fn expand(chosen: &[Workload], with_pipeline: bool) -> Vec<Workload> {
    let every = [
        Workload::Map,
        Workload::Chain,
        Workload::Delayed,
        Workload::Startup,
        Workload::FuturesPipeline,
        Workload::ArrayMean,
        Workload::ArrayMeanBig,
        Workload::ArrayLinalg,
        Workload::Dataframe,
        Workload::PythonMap,
    ];
    let mut out = Vec::new();
    for w in chosen {
        let add: Vec<Workload> = match w {
            Workload::All => every
                .into_iter()
                .filter(|w| with_pipeline || *w != Workload::FuturesPipeline)
                .collect(),
            w => vec![*w],
        };
        for w in add {
            if !out.contains(&w) {
                out.push(w);
            }
        }
    }
    out
}

/// The `rask` binary beside this one, which the cluster's worker processes and `startup` run.
fn rask_binary() -> Result<PathBuf> {
    let path = std::env::current_exe()
        .map_err(BenchError::CurrentExe)?
        .with_file_name("rask");
    if path.is_file() {
        Ok(path)
    } else {
        Err(BenchError::MissingRask(path))
    }
}

// ----- statistics and /proc ---------------------------------------------------------------

/// `{"median", "min", "max", "runs"}` of repeated measurements, like the peer scripts' `stats`.
fn stats(runs: &[f64]) -> Json {
    let mut sorted = runs.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({
        "median": round(median_of_sorted(&sorted)),
        "min": round(sorted.first().copied().unwrap_or(f64::NAN)),
        "max": round(sorted.last().copied().unwrap_or(f64::NAN)),
        "runs": runs.iter().map(|v| round(*v)).collect::<Vec<_>>(),
    })
}

/// The median of values sorted in rising order (NaN for none).
fn median_of_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Six significant digits are plenty for timings and keep the lines short.
fn round(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(5 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in MiB.
fn proc_mib(pid: u32, field: &'static str) -> Result<f64> {
    let fail = |reason: String| BenchError::Proc { pid, field, reason };
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| fail(e.to_string()))?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| fail("field not found".into()))?
        .parse::<u64>()
        .map_err(|e| fail(e.to_string()))?;
    Ok(round(kib as f64 / 1024.0))
}

/// Current and peak RSS of a process, in MiB.
fn rss_of(pid: u32) -> Result<Json> {
    Ok(json!({"rss_mib": proc_mib(pid, "VmRSS")?, "hwm_mib": proc_mib(pid, "VmHWM")?}))
}

// ----- cluster workloads ------------------------------------------------------------------

/// Starts a 2×1 process cluster, runs one workload on it, and stops the cluster.
async fn on_cluster(cli: &Cli, rask: &Path, w: Workload, n: usize) -> Result<Json> {
    let mut config = LocalClusterConfig::new(WORKERS, THREADS).processes(rask);
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    config.worker_env.push(("RUST_LOG".into(), log));
    if cli.page {
        config.dashboard = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    // The certificates live as long as the cluster; the directory goes with them.
    let certs = if cli.tls {
        let dir = tempfile::tempdir().map_err(io_err("a directory for --tls certificates"))?;
        let ca = rask::certs::ThrowawayCa::new("rask-bench CA")?;
        config.tls = Some(ca.cluster_tls(dir.path(), "bench")?);
        Some(dir)
    } else {
        None
    };
    let cluster = LocalCluster::start(config).await?;
    let page = match cluster.dashboard_address() {
        Some(addr) if cli.page => Some(page::open(addr).await?),
        _ => None,
    };
    let client = cluster.client().await?;
    // One task per worker first (each starts with room for one task of unknown duration), so
    // connections are open and `inc`'s duration is known before measuring, as bench_e warms up.
    let warm = client.map(INC, (0..WORKERS as i64).map(lit));
    client.gather(&warm).await?;
    drop(warm);
    let line = match w {
        Workload::Map => map(cli, &cluster, &client, n).await,
        Workload::Chain => chain(cli, &cluster, &client).await,
        Workload::Delayed => delayed_graphs(cli, &cluster, &client, n).await,
        Workload::FuturesPipeline => pipeline(cli, &cluster, &client).await,
        Workload::ArrayMean | Workload::ArrayMeanBig => {
            array_mean(cli, &cluster, &client, w == Workload::ArrayMeanBig).await
        }
        Workload::ArrayLinalg => array_linalg(cli, &cluster, &client).await,
        Workload::Dataframe => dataframe(cli, &cluster, &client).await,
        Workload::PythonMap => python_map(cli, &cluster, &client, n).await,
        Workload::Scale => scale(cli, &cluster, &client, n).await,
        Workload::Startup | Workload::ManyWorkers | Workload::All => {
            unreachable!("not a cluster workload")
        }
    };
    drop(client);
    cluster.shutdown().await;
    drop(certs);
    let mut line = line?;
    if cli.tls
        && let Some(name) = line.get("bench").and_then(Json::as_str)
    {
        line["bench"] = Json::from(format!("{name}-tls"));
        line["transport"] = Json::from("tls");
    }
    if let Some(page) = page {
        let report = page.close()?;
        if let Some(obj) = line.as_object_mut() {
            obj.insert("page".into(), report);
        }
    }
    Ok(line)
}

/// An open dashboard page's live feed, read as the browser's `EventSource` reads it.
mod page {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::thread::JoinHandle;
    use std::time::Duration;

    use serde_json::{Value as Json, json};

    use super::{BenchError, Result, io_err, stats};

    pub(super) struct Page {
        stream: TcpStream,
        reader: JoinHandle<std::io::Result<Vec<f64>>>,
    }

    /// Subscribes to `/status/events` and returns once the first update has arrived, so the
    /// workload runs with the feed flowing. The reader is a thread of its own that only counts
    /// bytes; the cost measured is the scheduler's, which builds and sends every update.
    pub(super) async fn open(addr: SocketAddr) -> Result<Page> {
        let what = format!("dashboard feed at http://{addr}/status/events");
        let mut stream = TcpStream::connect(addr).map_err(io_err(what.clone()))?;
        // HTTP/1.0: the body is not chunked, it ends when the connection does.
        stream
            .write_all(b"GET /status/events HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
            .map_err(io_err(what.clone()))?;
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let read_half = stream.try_clone().map_err(io_err(what.clone()))?;
        let reader = std::thread::spawn(move || read_updates(read_half, first_tx));
        match tokio::time::timeout(Duration::from_secs(10), first_rx).await {
            Ok(Ok(())) => Ok(Page { stream, reader }),
            _ => Err(BenchError::Io {
                what,
                source: std::io::Error::other("no update within 10 s"),
            }),
        }
    }

    /// Reads events until the connection ends; returns each `update` event's size in bytes
    /// (its `data:` lines). Signals `first` at the first one.
    fn read_updates(
        stream: TcpStream,
        first: tokio::sync::oneshot::Sender<()>,
    ) -> std::io::Result<Vec<f64>> {
        let mut first = Some(first);
        let mut sizes = Vec::new();
        let mut lines = BufReader::new(stream);
        let mut line = String::new();
        let mut in_body = false;
        let mut event_bytes = 0usize;
        loop {
            line.clear();
            if lines.read_line(&mut line)? == 0 {
                return Ok(sizes);
            }
            let text = line.trim_end_matches(['\r', '\n']);
            if !in_body {
                if text.starts_with("HTTP/") && !text.contains(" 200") {
                    return Err(std::io::Error::other(format!(
                        "the scheduler answered {text}"
                    )));
                }
                in_body = text.is_empty();
                continue;
            }
            if let Some(data) = text.strip_prefix("data:") {
                event_bytes += data.len();
            } else if text.is_empty() && event_bytes > 0 {
                sizes.push(event_bytes as f64);
                event_bytes = 0;
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        }
    }

    impl Page {
        /// Closes the feed; `{"updates", "bytes", "update_bytes": stats}` of what it carried.
        pub(super) fn close(self) -> Result<Json> {
            // The cluster is down by now, so the stream has ended or ends here.
            let _ = self.stream.shutdown(Shutdown::Both);
            let sizes = self
                .reader
                .join()
                .map_err(|_| BenchError::Io {
                    what: "dashboard feed reader".into(),
                    source: std::io::Error::other("the reader thread panicked"),
                })?
                .map_err(io_err("reading the dashboard feed"))?;
            let mut update_bytes = stats(&sizes);
            if let Some(o) = update_bytes.as_object_mut() {
                o.remove("runs"); // one per update: too many to list
            }
            Ok(json!({
                "updates": sizes.len(),
                "bytes": sizes.iter().sum::<f64>(),
                "update_bytes": update_bytes,
            }))
        }
    }
}

/// Each repetition's measurement, and the CPU time it took.
struct Reps<T> {
    runs: Vec<T>,
    /// Per repetition: CPU ms of this process (client and scheduler), and of the workers.
    cpu_ms: Vec<(f64, f64)>,
}

impl<T> Reps<T> {
    /// `{"bench_process": stats, "workers": stats}` of CPU ms per repetition.
    fn cpu_json(&self) -> Json {
        let this: Vec<f64> = self.cpu_ms.iter().map(|c| c.0).collect();
        let workers: Vec<f64> = self.cpu_ms.iter().map(|c| c.1).collect();
        json!({"bench_process": stats(&this), "workers": stats(&workers)})
    }
}

/// Runs `rep` `cli.reps` times with a timeout each, waiting for the scheduler to forget the
/// previous repetition's tasks in between.
async fn repeat<T, F, Fut>(
    cli: &Cli,
    cluster: &LocalCluster,
    workload: &'static str,
    mut rep: F,
) -> Result<Reps<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let workers = worker_pids(cluster);
    let cpu = || -> Result<(f64, f64)> { Ok((cpu_ms(std::process::id())?, cpu_ms_all(&workers)?)) };
    let mut out = Reps {
        runs: Vec::with_capacity(cli.reps),
        cpu_ms: Vec::with_capacity(cli.reps),
    };
    for _ in 0..cli.reps {
        let limit = Duration::from_secs(cli.timeout);
        let before = cpu()?;
        let m = tokio::time::timeout(limit, rep())
            .await
            .map_err(|_| BenchError::Timeout {
                workload,
                what: "a repetition",
                secs: cli.timeout,
            })??;
        let after = cpu()?;
        out.runs.push(m);
        out.cpu_ms.push((after.0 - before.0, after.1 - before.1));
        drained(cluster, workload).await?;
    }
    Ok(out)
}

fn worker_pids(cluster: &LocalCluster) -> Vec<u32> {
    cluster
        .worker_names()
        .iter()
        .filter_map(|name| cluster.worker_pid(name))
        .collect()
}

/// CPU time a process has run so far, all threads, in ms (`/proc/<pid>/task/*/schedstat`).
fn cpu_ms(pid: u32) -> Result<f64> {
    let fail = |reason: String| BenchError::Proc {
        pid,
        field: "schedstat",
        reason,
    };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| fail(e.to_string()))?;
    let mut ns: u64 = 0;
    for task in tasks {
        let path = task
            .map_err(|e| fail(e.to_string()))?
            .path()
            .join("schedstat");
        // A thread may exit between listing and reading; it no longer counts.
        let Ok(line) = std::fs::read_to_string(path) else {
            continue;
        };
        ns += line
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| fail(format!("unexpected schedstat line {line:?}")))?;
    }
    Ok(ns as f64 / 1e6)
}

fn cpu_ms_all(pids: &[u32]) -> Result<f64> {
    pids.iter().map(|p| cpu_ms(*p)).sum()
}

/// Waits until the scheduler holds no tasks (every future of the last repetition released).
async fn drained(cluster: &LocalCluster, workload: &'static str) -> Result<()> {
    let start = Instant::now();
    loop {
        let t = cluster.snapshot().await?.tasks;
        let held = t.released + t.waiting + t.queued + t.processing + t.memory + t.erred;
        if held == 0 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(BenchError::Timeout {
                workload,
                what: "forgetting the released tasks",
                secs: 10,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Gathers `futures` and checks that the last one is `expected`.
async fn gather_checked(
    client: &Client,
    futures: &[Future<Value>],
    workload: &'static str,
    expected: Value,
) -> Result<()> {
    let values = client.gather(futures).await?;
    match values.last() {
        Some(v) if *v == expected => Ok(()),
        got => Err(BenchError::Wrong {
            workload,
            got: format!("{got:?}"),
            expected: expected.to_string(),
        }),
    }
}

/// One timed `map` (or `submit` loop) + gather: (seconds to submit, seconds in total).
async fn map_once(client: &Client, n: usize, submit_loop: bool) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let futures: Vec<Future<Value>> = if submit_loop {
        (0..n as i64).map(|i| client.submit(INC, lit(i))).collect()
    } else {
        client.map(INC, (0..n as i64).map(lit))
    };
    let submitted = t0.elapsed().as_secs_f64();
    gather_checked(client, &futures, "map", Value::Int(n as i64)).await?;
    let total = t0.elapsed().as_secs_f64();
    drop(futures);
    Ok((submitted, total))
}

/// `map`: N tiny tasks through `map` and through a `submit` loop; RSS of every process after.
async fn map(cli: &Cli, cluster: &LocalCluster, client: &Client, n: usize) -> Result<Json> {
    let mapped = repeat(cli, cluster, "map", || map_once(client, n, false)).await?;
    let looped = repeat(cli, cluster, "map", || map_once(client, n, true)).await?;
    let rate = |runs: &[(f64, f64)]| -> Vec<f64> { runs.iter().map(|r| n as f64 / r.1).collect() };
    let secs = |runs: &[(f64, f64)], i: usize| -> Vec<f64> {
        runs.iter()
            .map(|r| if i == 0 { r.0 } else { r.1 })
            .collect()
    };
    Ok(json!({
        "bench": "map",
        "cluster": cluster_label(),
        "tasks": n,
        "reps": cli.reps,
        "tasks_per_s": stats(&rate(&mapped.runs)),
        "submit_s": stats(&secs(&mapped.runs, 0)),
        "total_s": stats(&secs(&mapped.runs, 1)),
        "cpu_ms_per_rep": mapped.cpu_json(),
        "submit_loop_tasks_per_s": stats(&rate(&looped.runs)),
        "submit_loop_submit_s": stats(&secs(&looped.runs, 0)),
        "submit_loop_total_s": stats(&secs(&looped.runs, 1)),
        "submit_loop_cpu_ms_per_rep": looped.cpu_json(),
        "target_tasks_per_s": target::MAP_TASKS_PER_S,
        "dask_ref_tasks_per_s": dask_ref::MAP_TASKS_PER_S,
        "rss_after": rss_report(cluster)?,
    }))
}

/// Runs `script` with the Python of `RASK_PYTHON` (else `python3`), `stdin` as its input.
fn python(script: &str, stdin: &[u8]) -> Result<Vec<u8>> {
    let interpreter = PythonConfig::new(None).interpreter;
    let io = |what: &str| {
        let what = format!("{what} {}", interpreter.display());
        move |source| BenchError::Io { what, source }
    };
    let mut child = Command::new(&interpreter)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("starting"))?;
    // The input is small (the results of `python-map`): written before the output is read.
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).map_err(io("writing to"))?;
    }
    let out = child.wait_with_output().map_err(io("waiting for"))?;
    if !out.status.success() {
        return Err(BenchError::Python(format!(
            "{} {}: {}",
            interpreter.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}

/// `inc(i)` for i in 0..n, each cloudpickled as a Python client pickles a call.
fn python_inc_calls(n: usize) -> Result<Vec<PyCall>> {
    let script = format!(
        "import struct, sys, cloudpickle\n\
         def inc(x):\n    return x + 1\n\
         for i in range({n}):\n    b = cloudpickle.dumps((inc, (i,), {{}}))\n    \
         sys.stdout.buffer.write(struct.pack('<I', len(b)) + b)\n"
    );
    let out = bytes::Bytes::from(python(&script, b"")?);
    let mut calls = Vec::with_capacity(n);
    let mut at = 0;
    while at < out.len() {
        let len = out
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b) as usize)
            .filter(|len| at + 4 + len <= out.len())
            .ok_or_else(|| BenchError::Python("the pickled calls are cut short".into()))?;
        calls.push(PyCall {
            call: out.slice(at + 4..at + 4 + len),
            inputs: Vec::new(),
        });
        at += 4 + len;
    }
    Ok(calls)
}

/// One timed `map` of Python calls + gather: (seconds to submit, seconds in total); then checks
/// that the results sum to 1 + 2 + ... + n.
async fn python_map_once(client: &Client, calls: &[PyCall]) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let futures = client.map(CALL, calls.iter().cloned());
    let submitted = t0.elapsed().as_secs_f64();
    let values: Vec<Pickled> = client.gather(&futures).await?;
    let total = t0.elapsed().as_secs_f64();
    drop(futures);
    let mut framed = Vec::new();
    for v in &values {
        framed.extend_from_slice(&(v.0.len() as u32).to_le_bytes());
        framed.extend_from_slice(&v.0);
    }
    let script = "import pickle, struct, sys\n\
        d = sys.stdin.buffer.read(); at = 0; s = 0\n\
        while at < len(d):\n    (n,) = struct.unpack_from('<I', d, at); s += pickle.loads(d[at + 4:at + 4 + n]); at += 4 + n\n\
        print(s)";
    let got = String::from_utf8_lossy(&python(script, &framed)?)
        .trim()
        .to_owned();
    let n = calls.len() as u64;
    let expected = (n * (n + 1) / 2).to_string();
    if got != expected {
        return Err(BenchError::Wrong {
            workload: "python-map",
            got,
            expected,
        });
    }
    Ok((submitted, total))
}

/// `python-map`: Dask's `client.map(inc, range(N))` + gather with a Python `inc`, the tasks run
/// by the workers' Python processes.
async fn python_map(cli: &Cli, cluster: &LocalCluster, client: &Client, n: usize) -> Result<Json> {
    let calls = python_inc_calls(n)?;
    // Each worker starts its Python process at its first call: before measuring.
    let warm = client.map(CALL, calls.iter().take(4 * WORKERS).cloned());
    client.gather(&warm).await?;
    drop(warm);
    drained(cluster, "python-map").await?;
    let runs = repeat(cli, cluster, "python-map", || {
        python_map_once(client, &calls)
    })
    .await?;
    let rate: Vec<f64> = runs.runs.iter().map(|r| n as f64 / r.1).collect();
    let secs = |i: usize| -> Vec<f64> {
        runs.runs
            .iter()
            .map(|r| if i == 0 { r.0 } else { r.1 })
            .collect()
    };
    let versions = rask::python::probe(&PythonConfig::new(None))
        .map_err(|e| BenchError::Python(e.to_string()))?;
    Ok(json!({
        "bench": "python-map",
        "cluster": cluster_label(),
        "python": versions.python,
        "cloudpickle": versions.cloudpickle,
        "tasks": n,
        "reps": cli.reps,
        "tasks_per_s": stats(&rate),
        "submit_s": stats(&secs(0)),
        "total_s": stats(&secs(1)),
        "cpu_ms_per_rep": runs.cpu_json(),
        "target_tasks_per_s": target::PYTHON_MAP_TASKS_PER_S,
        "dask_ref_tasks_per_s": dask_ref::MAP_TASKS_PER_S,
    }))
}

fn cluster_label() -> String {
    format!(
        "LocalCluster {WORKERS} worker processes x {THREADS} thread, scheduler in the bench process"
    )
}

/// RSS of this process (client and scheduler) and of each worker process.
fn rss_report(cluster: &LocalCluster) -> Result<Json> {
    let workers = worker_pids(cluster)
        .into_iter()
        .map(rss_of)
        .collect::<Result<Vec<_>>>()?;
    Ok(json!({
        "bench_process": rss_of(std::process::id())?,
        "workers": workers,
    }))
}

/// One chain of `links` dependent tasks: (seconds to submit, seconds in total).
async fn chain_once(client: &Client, links: usize) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let mut x = client.submit(INC, lit(0));
    for _ in 1..links {
        x = client.submit_with(INC, |d| d.input(&x).into());
    }
    let submitted = t0.elapsed().as_secs_f64();
    gather_checked(
        client,
        std::slice::from_ref(&x),
        "chain",
        Value::Int(links as i64),
    )
    .await?;
    Ok((submitted, t0.elapsed().as_secs_f64()))
}

/// `chain`: a chain of dependent futures; milliseconds per link.
async fn chain(cli: &Cli, cluster: &LocalCluster, client: &Client) -> Result<Json> {
    let links = cli.links.max(1);
    // The tasks the scheduler sent ahead of their inputs in each repetition (speculative
    // assignment): a repetition that ran a link per round trip shows it here.
    let runs = repeat(cli, cluster, "chain", || async {
        let before = cluster.snapshot().await?.tasks_speculated_total;
        let (submitted, total) = chain_once(client, links).await?;
        let after = cluster.snapshot().await?.tasks_speculated_total;
        Ok((submitted, total, after.saturating_sub(before)))
    })
    .await?;
    let per_link: Vec<f64> = runs.runs.iter().map(|r| r.1 * 1e3 / links as f64).collect();
    let submit: Vec<f64> = runs.runs.iter().map(|r| r.0).collect();
    let total: Vec<f64> = runs.runs.iter().map(|r| r.1).collect();
    let speculated: Vec<u64> = runs.runs.iter().map(|r| r.2).collect();
    Ok(json!({
        "bench": "chain",
        "cluster": cluster_label(),
        "links": links,
        "reps": cli.reps,
        "ms_per_link": stats(&per_link),
        "submit_s": stats(&submit),
        "total_s": stats(&total),
        "speculated_per_rep": speculated,
        "cpu_ms_per_rep": runs.cpu_json(),
        "target_ms_per_link": target::CHAIN_MS_PER_LINK,
        "dask_ref_ms_per_link": dask_ref::CHAIN_MS_PER_LINK,
    }))
}

/// bench_d's "independent" graph: `sum(inc(i) for i in 0..n)`, n + 1 tasks.
fn independent_graph(n: usize) -> (Delayed<Value>, i64) {
    let parts: Vec<Delayed<Value>> = (0..n as i64).map(|i| delayed(INC, lit(i))).collect();
    let expected = (1..=n as i64).sum();
    let total = delayed_with(SUM, |d| parts.iter().map(|p| d.input(p).into()).collect());
    (total, expected)
}

/// bench_d's "seed_pattern" graph: `sum(add(inc(x), custom_op(x)) for x in 0..n/3)`.
fn seed_pattern_graph(n: usize) -> (Delayed<Value>, i64) {
    let parts: Vec<Delayed<Value>> = (0..(n / 3) as i64)
        .map(|x| {
            let a = delayed(INC, lit(x));
            let b = delayed(CUSTOM_OP, lit(x));
            delayed_with(ADD, |d| (d.input(&a).into(), d.input(&b).into()))
        })
        .collect();
    let expected = (0..(n / 3) as i64).map(|x| x + 1 + 2 * x * x).sum();
    let total = delayed_with(SUM, |d| parts.iter().map(|p| d.input(p).into()).collect());
    (total, expected)
}

/// Builds a delayed graph and computes it: (build seconds, compute seconds).
async fn delayed_once(
    client: &Client,
    build: impl Fn() -> (Delayed<Value>, i64),
) -> Result<(f64, f64)> {
    let t0 = Instant::now();
    let (root, expected) = build();
    let built = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let future = client.compute(&root);
    gather_checked(
        client,
        std::slice::from_ref(&future),
        "delayed",
        Value::Int(expected),
    )
    .await?;
    let computed = t1.elapsed().as_secs_f64();
    drop(future);
    drop(root);
    Ok((built, computed))
}

/// Build, compute and total milliseconds of repeated delayed runs.
fn delayed_stats(runs: &[(f64, f64)]) -> (Json, Json, Json) {
    let ms = |f: fn(&(f64, f64)) -> f64| -> Vec<f64> { runs.iter().map(|r| f(r) * 1e3).collect() };
    (
        stats(&ms(|r| r.0)),
        stats(&ms(|r| r.1)),
        stats(&ms(|r| r.0 + r.1)),
    )
}

/// `delayed`: the independent graph (with Dask's figure) and the seed pattern.
async fn delayed_graphs(
    cli: &Cli,
    cluster: &LocalCluster,
    client: &Client,
    n: usize,
) -> Result<Json> {
    let ind = repeat(cli, cluster, "delayed", || {
        delayed_once(client, || independent_graph(n))
    })
    .await?;
    let seed = repeat(cli, cluster, "delayed", || {
        delayed_once(client, || seed_pattern_graph(n))
    })
    .await?;
    let (build, compute, total) = delayed_stats(&ind.runs);
    let (s_build, s_compute, s_total) = delayed_stats(&seed.runs);
    Ok(json!({
        "bench": "delayed",
        "cluster": cluster_label(),
        "tasks": n + 1,
        "reps": cli.reps,
        "build_ms": build,
        "compute_ms": compute,
        "total_ms": total,
        "cpu_ms_per_rep": ind.cpu_json(),
        "target_total_ms": target::DELAYED_TOTAL_MS,
        "dask_ref_build_s": dask_ref::DELAYED_BUILD_S,
        "dask_ref_compute_s": dask_ref::DELAYED_COMPUTE_S,
        "seed_pattern": {
            "tasks": 3 * (n / 3) + 1,
            "build_ms": s_build,
            "compute_ms": s_compute,
            "total_ms": s_total,
            "cpu_ms_per_rep": seed.cpu_json(),
        },
    }))
}

// ----- scale ------------------------------------------------------------------------------

/// Bytes of memory per task the client and scheduler may take at 1,000,000 tasks (issue 18).
const SCALE_TARGET_BYTES_PER_TASK: f64 = 400.0;

/// Repetitions of `scale` at one size in each round of [`scale_in_rounds`]: the first of a
/// fresh process pays for its growth (its RSS growth is measured there), the others run as a
/// long-lived client and scheduler would.
const SCALE_REPS_PER_ROUND: usize = 3;

/// `scale` at several sizes: `--reps` rounds, each running every size once in a process of
/// its own ([`SCALE_REPS_PER_ROUND`] repetitions), then a line per size with the rounds' runs
/// together. A machine that speeds up or slows down over the minutes of a run (a shared
/// host's does, by a third) then moves every size's figures alike, not the last size's alone;
/// and each round's RSS growth is that of a fresh process, not one where the size before freed
/// memory for reuse.
fn scale_in_rounds(cli: &Cli, sizes: &[usize]) -> Result<()> {
    let mut lines: Vec<Vec<Json>> = vec![Vec::new(); sizes.len()];
    for round in 1..=cli.reps.max(1) {
        for (n, runs) in sizes.iter().zip(&mut lines) {
            eprintln!("scale: round {round} of {}, {n} tasks", cli.reps.max(1));
            runs.push(scale_in_child(cli, *n)?);
        }
    }
    for runs in lines {
        let mut merged = merge_rounds(&runs);
        merged["reps"] = json!(runs.len() * SCALE_REPS_PER_ROUND);
        merged["rounds"] = json!(runs.len());
        println!("{merged}");
    }
    Ok(())
}

/// The lines of one size's rounds as one line: each `{median, min, max, runs}` with every
/// round's runs, each other number the rounds' median (its rounds' values beside it, under
/// `<name>_runs`, where they differ).
fn merge_rounds(lines: &[Json]) -> Json {
    let Some(first) = lines.first() else {
        return Json::Null;
    };
    match first {
        Json::Object(fields) if fields.contains_key("runs") => {
            let runs: Vec<f64> = lines
                .iter()
                .filter_map(|l| l.get("runs").and_then(Json::as_array))
                .flatten()
                .filter_map(Json::as_f64)
                .collect();
            stats(&runs)
        }
        Json::Object(fields) => {
            let mut out = serde_json::Map::new();
            for (name, value) in fields {
                let at: Vec<Json> = lines
                    .iter()
                    .map(|l| l.get(name).cloned().unwrap_or(Json::Null))
                    .collect();
                if value.is_number() && at.iter().any(|v| v != value) {
                    let values: Vec<f64> = at.iter().filter_map(Json::as_f64).collect();
                    let mut sorted = values.clone();
                    sorted.sort_by(f64::total_cmp);
                    out.insert(name.clone(), json!(round(median_of_sorted(&sorted))));
                    out.insert(format!("{name}_runs"), json!(values));
                } else {
                    out.insert(name.clone(), merge_rounds(&at));
                }
            }
            Json::Object(out)
        }
        other => other.clone(),
    }
}

/// Runs `scale` at one size in a child process (this executable, `--tasks n`,
/// [`SCALE_REPS_PER_ROUND`] repetitions) and returns its line: a process of its own per size
/// and round, so one run's RSS growth does not hide in the memory the run before freed (the
/// allocator keeps it for reuse).
fn scale_in_child(cli: &Cli, n: usize) -> Result<Json> {
    let exe = std::env::current_exe().map_err(BenchError::CurrentExe)?;
    let mut cmd = Command::new(&exe);
    cmd.arg("scale")
        .arg(format!("--tasks={n}"))
        .arg(format!("--reps={SCALE_REPS_PER_ROUND}"))
        .arg(format!("--timeout={}", cli.timeout))
        .arg(format!("--runtime-threads={}", cli.runtime_threads))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if cli.tls {
        cmd.arg("--tls");
    }
    if cli.page {
        cmd.arg("--page");
    }
    let what = format!("{} scale --tasks={n}", exe.display());
    let output = cmd.output().map_err(io_err(what.clone()))?;
    if !output.status.success() {
        return Err(BenchError::Io {
            what,
            source: std::io::Error::other(format!("exited with {}", output.status)),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|l| serde_json::from_str::<Json>(l).ok())
        .ok_or_else(|| BenchError::Io {
            what,
            source: std::io::Error::other("printed no JSON line"),
        })
}

/// This process's `VmRSS` and `VmHWM`, in bytes.
fn own_rss_bytes() -> Result<(f64, f64)> {
    let pid = std::process::id();
    let mib = 1024.0 * 1024.0;
    Ok((proc_mib(pid, "VmRSS")? * mib, proc_mib(pid, "VmHWM")? * mib))
}

/// One `map` + gather of `n` tasks for `scale`: seconds, and this process's RSS before (after
/// resetting its peak), while every future is held and its task in memory, and at its peak.
async fn scale_map_once(client: &Client, n: usize) -> Result<(f64, [f64; 3])> {
    reset_peak_rss(std::process::id())?;
    let (before, _) = own_rss_bytes()?;
    let t0 = Instant::now();
    let futures: Vec<Future<Value>> = client.map(INC, (0..n as i64).map(lit));
    gather_checked(client, &futures, "scale", Value::Int(n as i64)).await?;
    let secs = t0.elapsed().as_secs_f64();
    let (held, peak) = own_rss_bytes()?;
    drop(futures);
    Ok((secs, [before, held, peak]))
}

/// `scale` at one size: `map` + gather and the delayed sum of `n` incs. RSS growth is that of
/// the first `map` repetition, in a fresh process (later ones reuse what the first freed).
async fn scale(cli: &Cli, cluster: &LocalCluster, client: &Client, n: usize) -> Result<Json> {
    let n = n.max(1);
    let mapped = repeat(cli, cluster, "scale", || scale_map_once(client, n)).await?;
    let delayed = repeat(cli, cluster, "scale", || {
        delayed_once(client, || independent_graph(n))
    })
    .await?;
    let map_rate: Vec<f64> = mapped.runs.iter().map(|r| n as f64 / r.0).collect();
    let map_secs: Vec<f64> = mapped.runs.iter().map(|r| r.0).collect();
    let [before, held, peak] = mapped.runs.first().map(|r| r.1).unwrap_or([f64::NAN; 3]);
    let mib = 1024.0 * 1024.0;
    let per_task = |bytes: f64| round(bytes / n as f64);
    let delayed_rate: Vec<f64> = delayed
        .runs
        .iter()
        .map(|r| (n + 1) as f64 / (r.0 + r.1))
        .collect();
    let (build, compute, total) = delayed_stats(&delayed.runs);
    Ok(json!({
        "bench": "scale",
        "cluster": cluster_label(),
        "tasks": n,
        "reps": cli.reps,
        "map": {
            "tasks_per_s": stats(&map_rate),
            "total_s": stats(&map_secs),
            "cpu_ms_per_rep": mapped.cpu_json(),
            "rss_before_mib": round(before / mib),
            "rss_held_mib": round(held / mib),
            "hwm_mib": round(peak / mib),
            "rss_bytes_per_task": per_task(held - before),
            "hwm_bytes_per_task": per_task(peak - before),
        },
        "delayed": {
            "tasks": n + 1,
            "tasks_per_s": stats(&delayed_rate),
            "build_ms": build,
            "compute_ms": compute,
            "total_ms": total,
            "cpu_ms_per_rep": delayed.cpu_json(),
        },
        "target_bytes_per_task": SCALE_TARGET_BYTES_PER_TASK,
        "target": "tasks/s within 25% across sizes; <= 400 bytes per task at 1,000,000",
    }))
}

/// One run of the seed futures pipeline: seconds until every `save` is gathered.
async fn pipeline_once(client: &Client, pairs: usize, step: f64) -> Result<f64> {
    let t0 = Instant::now();
    let saves = jobs::futures_pipeline(client, pairs, step);
    let last = pairs.saturating_sub(1);
    gather_checked(
        client,
        &saves,
        "futures-pipeline",
        jobs::futures_pipeline_expected(last),
    )
    .await?;
    Ok(t0.elapsed().as_secs_f64())
}

/// `futures-pipeline`: makespan of the seed pipeline against the ideal on 2 slots.
async fn pipeline(cli: &Cli, cluster: &LocalCluster, client: &Client) -> Result<Json> {
    let (pairs, step) = (cli.pairs.max(1), cli.step);
    let runs = repeat(cli, cluster, "futures-pipeline", || {
        pipeline_once(client, pairs, step)
    })
    .await?;
    let ideal = pairs as f64 * 4.0 * step / (WORKERS * THREADS) as f64;
    let over: Vec<f64> = runs.runs.iter().map(|s| (s - ideal) * 1e3).collect();
    Ok(json!({
        "bench": "futures-pipeline",
        "cluster": cluster_label(),
        "pairs": pairs,
        "step_s": step,
        "reps": cli.reps,
        "pipeline_s": stats(&runs.runs),
        "ideal_s": round(ideal),
        "overhead_ms": stats(&over),
        "cpu_ms_per_rep": runs.cpu_json(),
    }))
}

// ----- arrays -------------------------------------------------------------------------------

/// Resets the peak RSS (`VmHWM`) of a process, so a workload's peak is its own.
fn reset_peak_rss(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").map_err(|e| BenchError::Proc {
        pid,
        field: "clear_refs",
        reason: e.to_string(),
    })
}

/// Peak RSS since the last reset of the bench process and each worker, and their sum, in MiB.
fn peak_rss_report(cluster: &LocalCluster) -> Result<(Json, f64, f64)> {
    let this = proc_mib(std::process::id(), "VmHWM")?;
    let workers = worker_pids(cluster)
        .into_iter()
        .map(|p| proc_mib(p, "VmHWM"))
        .collect::<Result<Vec<_>>>()?;
    let sum = this + workers.iter().sum::<f64>();
    let max = workers.iter().copied().fold(this, f64::max);
    let json = json!({"bench_process_mib": this, "workers_mib": workers, "sum_mib": round(sum), "max_mib": max});
    Ok((json, sum, max))
}

fn reset_all_peaks(cluster: &LocalCluster) -> Result<()> {
    reset_peak_rss(std::process::id())?;
    worker_pids(cluster)
        .into_iter()
        .try_for_each(reset_peak_rss)
}

fn array_err(e: rask::array::ArrayError) -> BenchError {
    BenchError::Wrong {
        workload: "array",
        got: e.to_string(),
        expected: "a result".into(),
    }
}

/// `array-mean` (800³, chunks 200³) or `array-mean-big` (2000³, auto chunks): seconds from
/// building the graph to the mean, GB/s of generated data, peak RSS of every process.
async fn array_mean(cli: &Cli, cluster: &LocalCluster, client: &Client, big: bool) -> Result<Json> {
    let (n, chunks) = if big {
        (2000, ChunkSpec::Auto)
    } else {
        (cli.array_size, ChunkSpec::Size(cli.array_chunk))
    };
    let workload = if big { "array-mean-big" } else { "array-mean" };
    let elements = n * n * n;
    reset_all_peaks(cluster)?;
    let runs = repeat(cli, cluster, workload, || async {
        let t0 = Instant::now();
        let (mean, nchunks) = jobs::array_mean(client, n, chunks.clone(), 0)
            .await
            .map_err(array_err)?;
        let secs = t0.elapsed().as_secs_f64();
        if !jobs::uniform_mean_plausible(mean, elements) {
            return Err(BenchError::Wrong {
                workload,
                got: mean.to_string(),
                expected: "about 0.5".into(),
            });
        }
        Ok((secs, mean, nchunks))
    })
    .await?;
    let (peak, sum, max) = peak_rss_report(cluster)?;
    // The mean alone would pass on constant data: check the same values' variance, untimed.
    let var = jobs::array_var(client, n, chunks.clone(), 0)
        .await
        .map_err(array_err)?;
    if !jobs::uniform_var_plausible(var, elements) {
        return Err(BenchError::Wrong {
            workload,
            got: format!("variance {var}"),
            expected: "about 1/12, as uniform [0, 1) values".into(),
        });
    }
    let secs: Vec<f64> = runs.runs.iter().map(|r| r.0).collect();
    let gbs: Vec<f64> = secs
        .iter()
        .map(|s| elements as f64 * 8.0 / 1e9 / s)
        .collect();
    let mut line = json!({
        "bench": workload,
        "cluster": cluster_label(),
        "shape": [n, n, n],
        "chunks": runs.runs.first().map(|r| r.2),
        "logical_gib": round(elements as f64 * 8.0 / (1u64 << 30) as f64),
        "reps": cli.reps,
        "wall_s": stats(&secs),
        "gb_per_s": stats(&gbs),
        "results": runs.runs.iter().map(|r| r.1).collect::<Vec<_>>(),
        "variance": var,
        "cpu_ms_per_rep": runs.cpu_json(),
        "peak_rss": peak,
        "peak_rss_sum_mib": round(sum),
        "peak_rss_max_process_mib": max,
    });
    if big {
        line["target_wall_s"] = json!(target::ARRAY_MEAN_BIG_S);
        line["target_peak_rss_per_process_mib"] = json!(target::ARRAY_MEAN_BIG_PEAK_RSS_MIB);
    } else {
        line["target_gb_per_s"] = json!(target::ARRAY_MEAN_GB_S);
        line["target_peak_rss_sum_mib"] = json!(target::ARRAY_MEAN_PEAK_RSS_MIB);
        line["dask_ref_gb_per_s"] = json!(dask_ref::ARRAY_MEAN_GB_S);
        line["dask_ref_peak_rss_mib"] = json!(dask_ref::ARRAY_MEAN_PEAK_RSS_MIB);
    }
    Ok(line)
}

/// `array-linalg`: bench_b's big case, `x.sum(axis=0)` and `(x.dot(x.T + 1) - x.mean()).std()`
/// on a fresh random matrix each repetition (generation included), seconds each.
async fn array_linalg(cli: &Cli, cluster: &LocalCluster, client: &Client) -> Result<Json> {
    let (n, c) = (cli.linalg_size, cli.linalg_chunk);
    reset_all_peaks(cluster)?;
    let mut seed = 0;
    let runs = repeat(cli, cluster, "array-linalg", || {
        seed += 1;
        let seed = seed;
        async move {
            let t0 = Instant::now();
            let (sum0, _) =
                jobs::array_linalg_graphs(n, ChunkSpec::Size(c), seed).map_err(array_err)?;
            let s = sum0.compute(client).await.map_err(array_err)?;
            let sum_s = t0.elapsed().as_secs_f64();
            let t1 = Instant::now();
            let (_, expr) =
                jobs::array_linalg_graphs(n, ChunkSpec::Size(c), seed).map_err(array_err)?;
            let std = expr.compute_scalar(client).await.map_err(array_err)?;
            let expr_s = t1.elapsed().as_secs_f64();
            if !jobs::column_sums_plausible(&s.iter().copied().collect::<Vec<f64>>(), n)
                || !jobs::linalg_std_plausible(std, n)
            {
                return Err(BenchError::Wrong {
                    workload: "array-linalg",
                    got: format!("{} column sums, std {std}", s.len()),
                    expected: format!(
                        "{n} column sums near {} and a std near {:.1} (√(31n/144))",
                        n / 2,
                        (31.0 * n as f64 / 144.0).sqrt()
                    ),
                });
            }
            Ok((sum_s, expr_s, std))
        }
    })
    .await?;
    let (peak, sum, max) = peak_rss_report(cluster)?;
    let small_sum = repeat(cli, cluster, "array-linalg", || {
        small_per_call(client, false)
    })
    .await?;
    let small_expr = repeat(cli, cluster, "array-linalg", || {
        small_per_call(client, true)
    })
    .await?;
    let sum_s: Vec<f64> = runs.runs.iter().map(|r| r.0).collect();
    let expr_s: Vec<f64> = runs.runs.iter().map(|r| r.1).collect();
    // The full product's work (2n³) over the wall time, Dask's work on this expression. rask
    // recognises x.dot(x.T + 1) as a Gram product and does about half of it (docs/arrays.md), so
    // this is an effective rate, above what the cores can do when the rewrite applies.
    let gflops: Vec<f64> = expr_s
        .iter()
        .map(|s| 2.0 * (n as f64).powi(3) / 1e9 / s)
        .collect();
    Ok(json!({
        "bench": "array-linalg",
        "cluster": cluster_label(),
        "shape": [n, n],
        "chunks": [c, c],
        "reps": cli.reps,
        "sum_axis0_s": stats(&sum_s),
        "expr_std_s": stats(&expr_s),
        "expr_std_full_product_gflop_per_s": stats(&gflops),
        "results": runs.runs.iter().map(|r| r.2).collect::<Vec<_>>(),
        "cpu_ms_per_rep": runs.cpu_json(),
        "peak_rss": peak,
        "peak_rss_sum_mib": round(sum),
        "peak_rss_max_process_mib": max,
        "dask_ref_expr_std_s_1_blas_thread": dask_ref::ARRAY_LINALG_EXPR_S,
        "small": {
            "shape": [SMALL_N, SMALL_N],
            "chunks": [SMALL_CHUNK, SMALL_CHUNK],
            "calls_per_rep": SMALL_CALLS,
            "sum_axis0_per_call_ms": stats(&small_sum.runs),
            "expr_std_per_call_ms": stats(&small_expr.runs),
        },
    }))
}

/// bench_b's small case: a 15×15 random matrix in 5×5 chunks, 200 calls per repetition.
const SMALL_N: usize = 15;
const SMALL_CHUNK: usize = 5;
const SMALL_CALLS: usize = 200;

/// Milliseconds per build + compute of `x.sum(axis=0)` (or of the seed expression) on a small
/// matrix, over [`SMALL_CALLS`] calls one after another.
async fn small_per_call(client: &Client, expr: bool) -> Result<f64> {
    let t0 = Instant::now();
    for seed in 0..SMALL_CALLS as u64 {
        let x = rask::array::random(&[SMALL_N, SMALL_N], SMALL_CHUNK, seed).map_err(array_err)?;
        if expr {
            let e = x
                .dot(&(&x.t() + 1.0))
                .and_then(|p| p.sub(&x.mean(None)?))
                .and_then(|d| d.std(None, 0.0))
                .map_err(array_err)?;
            e.compute_scalar(client).await.map_err(array_err)?;
        } else {
            let s = x.sum(Some(0)).map_err(array_err)?;
            s.compute(client).await.map_err(array_err)?;
        }
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3 / SMALL_CALLS as f64)
}

/// The CSV of `dataframe`: `--csv`, or a 5 M-row file generated once beside this binary.
fn dataframe_csv(cli: &Cli) -> Result<PathBuf> {
    if let Some(p) = &cli.csv {
        return Ok(p.clone());
    }
    let path = std::env::current_exe()
        .map_err(BenchError::CurrentExe)?
        .with_file_name("taxi_5000000_seed42.csv");
    if !path.is_file() {
        eprintln!("generating {} (once)", path.display());
        rask::frame::taxi::write_taxi_csv(&path, 5_000_000, 42)?;
    }
    Ok(path)
}

/// `dataframe`: bench_c's workload through the engine: read_csv(blocksize), `len`, groupby-mean.
async fn dataframe(cli: &Cli, cluster: &LocalCluster, client: &Client) -> Result<Json> {
    let csv = dataframe_csv(cli)?;
    let options = rask::frame::ReadCsvOptions {
        blocksize: rask::frame::parse_blocksize(&cli.blocksize)?,
        ..rask::frame::ReadCsvOptions::default()
    };
    let pattern = csv.to_string_lossy().into_owned();
    let runs = repeat(cli, cluster, "dataframe", || {
        let (pattern, options) = (pattern.clone(), &options);
        async move { Ok(rask::frame::taxi::taxi_groupby(client, &pattern, options).await?) }
    })
    .await?;
    let first = runs.runs.first().ok_or(BenchError::Wrong {
        workload: "dataframe",
        got: "no repetition".into(),
        expected: "at least one".into(),
    })?;
    let pick = |f: fn(&rask::frame::taxi::TaxiOutcome) -> f64| -> Vec<f64> {
        runs.runs.iter().map(f).collect()
    };
    let total: Vec<f64> = runs
        .runs
        .iter()
        .map(|r| r.read_s + r.len_s + r.groupby_s)
        .collect();
    let result: serde_json::Map<String, Json> = first
        .means
        .iter()
        .map(|(k, t, d)| (k.to_string(), json!([round6(*t), round6(*d)])))
        .collect();
    let bytes = std::fs::metadata(&csv)
        .map_err(io_err(format!("reading the size of {}", csv.display())))?
        .len();
    Ok(json!({
        "bench": "dataframe",
        "cluster": cluster_label(),
        "csv": csv,
        "csv_mb": round(bytes as f64 / 1e6),
        "blocksize": cli.blocksize,
        "npartitions": first.npartitions,
        "rows": first.rows,
        "reps": cli.reps,
        "read_csv_call_s": stats(&pick(|r| r.read_s)),
        "len_s": stats(&pick(|r| r.len_s)),
        "groupby_s": stats(&pick(|r| r.groupby_s)),
        "total_s": stats(&total),
        "cpu_ms_per_rep": runs.cpu_json(),
        "result": result,
        "target_groupby_s": target::DATAFRAME_GROUPBY_S,
        "target_len_s": target::DATAFRAME_LEN_S,
        "dask_ref_groupby_s": dask_ref::DATAFRAME_GROUPBY_S,
        "dask_ref_len_s": dask_ref::DATAFRAME_LEN_S,
        "polars_ref_groupby_s": dask_ref::POLARS_GROUPBY_S,
    }))
}

/// Six decimals, as bench_c prints its groupby result.
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

// ----- startup ----------------------------------------------------------------------------

/// A port nobody listens on right now (the OS picks it; it is free again once we let go).
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err("binding a probe port"))?;
    Ok(l.local_addr()
        .map_err(io_err("reading a probe port"))?
        .port())
}

/// Whether `GET /health` on `addr` answers 200 with body `ok` (one HTTP/1.1 request).
fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let req = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut reply = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut reply).is_err() {
        return false;
    }
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    head.starts_with("HTTP/1.1 200") && body.trim() == "ok"
}

/// A scheduler process that is killed (by its pid, via `Child`) when dropped.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One scheduler start: (seconds from spawn to `/health` ok, RSS and peak RSS once healthy).
fn startup_once(rask: &Path, timeout: Duration) -> Result<(f64, f64, f64)> {
    let (port, http_port) = (free_port()?, free_port()?);
    let dashboard = SocketAddr::from(([127, 0, 0, 1], http_port));
    let t0 = Instant::now();
    let child = Command::new(rask)
        .args([
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
        ])
        .args(["--dashboard-address", &dashboard.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(io_err(format!("spawning {}", rask.display())))?;
    let mut child = Spawned(child);
    while !health_ok(dashboard) {
        if let Some(status) = child.0.try_wait().map_err(io_err("waiting for rask"))? {
            return Err(BenchError::SchedulerExited(status));
        }
        if t0.elapsed() > timeout {
            return Err(BenchError::Timeout {
                workload: "startup",
                what: "waiting for /health",
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let healthy = t0.elapsed().as_secs_f64();
    let pid = child.0.id();
    Ok((healthy, proc_mib(pid, "VmRSS")?, proc_mib(pid, "VmHWM")?))
}

/// `startup`: `rask scheduler` from spawn to a healthy HTTP API, and its memory then.
fn startup(cli: &Cli, rask: &Path) -> Result<Json> {
    let timeout = Duration::from_secs(cli.timeout);
    let runs = (0..cli.reps)
        .map(|_| startup_once(rask, timeout))
        .collect::<Result<Vec<_>>>()?;
    let ms: Vec<f64> = runs.iter().map(|r| r.0 * 1e3).collect();
    let rss: Vec<f64> = runs.iter().map(|r| r.1).collect();
    let hwm: Vec<f64> = runs.iter().map(|r| r.2).collect();
    Ok(json!({
        "bench": "startup",
        "command": "rask scheduler --host 127.0.0.1 --port P --dashboard-address 127.0.0.1:Q",
        "reps": cli.reps,
        "to_health_ok_ms": stats(&ms),
        "rss_mib": stats(&rss),
        "hwm_mib": stats(&hwm),
        "target_ms": target::STARTUP_MS,
        "target_rss_mib": target::SCHEDULER_RSS_MIB,
        "dask_ref_s": dask_ref::STARTUP_S,
        "dask_ref_rss_mib": dask_ref::SCHEDULER_RSS_MIB,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_merge_into_one_line_with_every_run_and_the_median_of_the_rest() {
        let line = |rate: f64, second: f64, rss: f64| {
            json!({
                "bench": "scale",
                "tasks": 1000,
                "map": {
                    "tasks_per_s": stats(&[rate, second]),
                    "rss_bytes_per_task": rss,
                    "target": 400.0,
                },
            })
        };
        let merged = merge_rounds(&[
            line(10.0, 11.0, 350.0),
            line(30.0, 31.0, 470.0),
            line(20.0, 21.0, 360.0),
        ]);
        assert_eq!(merged["bench"], "scale");
        assert_eq!(merged["tasks"], 1000);
        let map = &merged["map"];
        assert_eq!(
            map["tasks_per_s"]["runs"],
            json!([10.0, 11.0, 30.0, 31.0, 20.0, 21.0])
        );
        assert_eq!(map["tasks_per_s"]["median"], 20.5);
        assert_eq!(map["tasks_per_s"]["min"], 10.0);
        assert_eq!(map["rss_bytes_per_task"], 360.0);
        assert_eq!(map["rss_bytes_per_task_runs"], json!([350.0, 470.0, 360.0]));
        // Equal in every round: kept as it is, with no list beside it.
        assert_eq!(map["target"], 400.0);
        assert!(map.get("target_runs").is_none());
    }
}
