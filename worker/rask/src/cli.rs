//! The engine's command line — scheduler, worker, and seed jobs on a cluster — as a library
//! function, so a program with its own function families gets the same commands:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     let registry = rask::registry(); // plus the program's own families
//!     rask::cli::main(registry)
//! }
//! ```
//!
//! Its workers run the functions of that registry, and so do the local clusters it starts (their
//! workers are this same executable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::jobs;
use crate::local::{ClusterTls, LocalCluster, LocalClusterConfig, Mode};
use crate::progress::{self, View};
use rask_array::{ChunkSpec, Grid};
use rask_client::Client;
use rask_core::net::{Scheme, parse_address};
use rask_core::tls::{Role, TlsConfig, TlsFiles, TlsSettings};
use rask_core::units::{parse_bytes, parse_duration};
use rask_core::{Registry, Resources};
use rask_frame as frame;
use rask_scheduler::http::ApiAuth;
use rask_scheduler::server::{DEFAULT_MAX_CONNECTIONS, Scheduler, SchedulerConfig};
use rask_scheduler::state::DEFAULT_MAX_GRAPH_TASKS;
use rask_worker::memory::{MemoryFractions, MemoryPolicy};
use rask_worker::nanny::{self, NannyConfig};
use rask_worker::{Worker, WorkerConfig};

#[derive(Parser)]
#[command(
    name = "rask",
    version,
    about = "rask's chunked compute engine: scheduler, workers and jobs"
)]
struct Cli {
    /// Log lines as JSON objects.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scheduler.
    Scheduler(SchedulerArgs),
    /// Run a worker connected to a scheduler.
    Worker(WorkerArgs),
    /// Run a seed job, on a new local cluster unless --scheduler is given.
    Run(RunArgs),
}

#[derive(Args)]
struct SchedulerArgs {
    /// Interface to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    host: String,
    #[arg(long, default_value_t = 8786)]
    port: u16,
    /// Where to serve the HTTP API and /metrics: `:8787`, `HOST:PORT`, or `none`.
    #[arg(long, default_value = ":8787")]
    dashboard_address: String,
    /// Seconds without a heartbeat before a worker is considered lost.
    #[arg(long, default_value_t = 30.0)]
    worker_ttl: f64,
    /// Write the scheduler's address and dashboard as JSON to this file once listening (as Dask's
    /// `--scheduler-file`), so whoever started it with `--port 0` learns where it is.
    #[arg(long)]
    scheduler_file: Option<PathBuf>,
    /// Fail tasks that no connected worker can run (their function or resources are missing)
    /// after this many seconds; by default they wait for such a worker (Dask's
    /// `distributed.scheduler.no-workers-timeout`).
    #[arg(long, env = "DASK_DISTRIBUTED__SCHEDULER__NO_WORKERS_TIMEOUT")]
    no_workers_timeout: Option<f64>,
    #[command(flatten)]
    limits: ConnLimitArgs,
    /// Most bytes queued for one client or worker that does not read them (`1GiB`); past it
    /// the connection is closed rather than the scheduler's memory growing.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    max_backlog: u64,
    /// Most tasks one graph submitted by a client may have; a larger one is refused whole.
    #[arg(long, default_value_t = DEFAULT_MAX_GRAPH_TASKS)]
    max_graph_tasks: usize,
    /// The HTTP API closes a connection whose request headers have not all arrived within this
    /// long (also how long an idle keep-alive connection stays open): `10s`, `500ms`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    http_header_timeout: Duration,
    /// The HTTP API answers 408 to a request whose body has not all arrived within this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    http_body_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// A file holding the HTTP API's bearer token: a request with `Authorization: Bearer
    /// <token>` is admitted as one with a cluster certificate is (docs/security.md).
    #[arg(long, env = "RASK_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// Open the HTTP API's read-only routes (GET: queries, /metrics, the dashboard) to anyone
    /// when TLS or a token guards it; routes that change the cluster stay guarded.
    #[arg(long)]
    api_read_only_open: bool,
}

/// Mutual TLS on every connection (docs/security.md), with Dask's flags; each falls back to
/// Dask's variable (`DASK_DISTRIBUTED__COMM__TLS__CA_FILE`, and `..__TLS__<ROLE>__CERT` and
/// `__KEY` for the scheduler, worker or client).
#[derive(Args, Clone, Default)]
struct TlsArgs {
    /// The cluster's CA certificate(s), PEM: peers must present a certificate it signed.
    #[arg(long)]
    tls_ca_file: Option<PathBuf>,
    /// This process's certificate, PEM, signed by the CA (it may hold the key too).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// This process's private key, PEM (default: in the --tls-cert file).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Refuse to run without TLS (Dask's `DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION`).
    #[arg(long)]
    require_encryption: bool,
}

impl TlsArgs {
    /// The files the flags and Dask's variables for `role` name, if any.
    fn files(&self, role: Role) -> Result<Option<TlsFiles>, String> {
        self.settings(role).files()
    }

    fn settings(&self, role: Role) -> TlsSettings {
        TlsSettings {
            ca_file: self.tls_ca_file.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            require_encryption: self.require_encryption,
        }
        .with_env(role, |k| std::env::var(k).ok())
    }

    /// The loaded identity for `role`, if TLS is configured.
    fn load(&self, role: Role) -> Result<Option<ClusterTls>, String> {
        match self.files(role)? {
            Some(files) => ClusterTls::load(files).map(Some).map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }

    /// Checks that `address` (`flag` names where it came from) goes with the TLS settings: a
    /// `tls://` address needs a certificate; a plain one is refused when encryption is
    /// required.
    fn check_address(&self, role: Role, flag: &str, address: &str, tls: bool) -> CliResult {
        match parse_address(address).0 {
            Scheme::Tls if !tls => Err(format!(
                "{flag} {address} is a tls:// address: pass --tls-ca-file, --tls-cert and --tls-key"
            )),
            Scheme::Tcp if self.settings(role).require_encryption => Err(format!(
                "{flag} {address} is not a tls:// address, and encryption is required"
            )),
            _ => Ok(()),
        }
    }
}

/// The HTTP API's bearer token from `path`: its first line, trimmed; an empty one is an error.
fn read_api_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --api-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "--api-token-file {} holds no token (its first line is empty)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// Limits of the scheduler's port and of workers' data servers alike (docs/operations.md).
#[derive(Args)]
struct ConnLimitArgs {
    /// Largest message frame accepted (`1GiB`, `256MiB`); a peer announcing a larger one is
    /// disconnected before any of it is read.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    max_frame: u64,
    /// Most connections open at once; more are refused as they arrive. Default: 10,000, or the
    /// open-file limit less 64 if that is lower.
    #[arg(long)]
    max_connections: Option<usize>,
    /// A new connection must send its first message within this long, or it is closed (Dask's
    /// `distributed.comm.timeouts.connect`): `30s`, `500ms`.
    #[arg(
        long,
        env = "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT",
        default_value = "30s",
        value_parser = parse_duration
    )]
    handshake_timeout: Duration,
}

impl ConnLimitArgs {
    /// Refuses limits that would turn every peer away.
    fn check(&self) -> Result<(), String> {
        if self.max_frame < MIN_FRAME {
            return Err(format!(
                "--max-frame {} is below the smallest useful frame, {MIN_FRAME} bytes",
                self.max_frame
            ));
        }
        if self.max_connections == Some(0) {
            return Err("--max-connections must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--handshake-timeout must be longer than 0".into());
        }
        Ok(())
    }
}

/// The smallest `--max-frame`: registrations and small requests must fit.
const MIN_FRAME: u64 = 64 << 10;

/// File descriptors a process needs beside its connections (listeners, spill files, logs).
const FD_RESERVE: u64 = 64;

impl ConnLimitArgs {
    /// `--max-connections`, or the default fitted to the open-file limit. Warns when a value
    /// given is over that limit: past it, connections fail to be accepted before the connection
    /// limit says why.
    fn max_connections(&self) -> usize {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        match self.max_connections {
            Some(n) => {
                if let Some(warning) = fd_shortfall(soft, n) {
                    tracing::warn!("{warning}");
                }
                n
            }
            None => default_max_connections(soft),
        }
    }
}

/// 10,000 connections, fewer if the open-file limit `soft` (`None`: unlimited) allows fewer.
fn default_max_connections(soft: Option<u64>) -> usize {
    let fitting = soft.map_or(u64::MAX, |s| s.saturating_sub(FD_RESERVE).max(1));
    DEFAULT_MAX_CONNECTIONS.min(usize::try_from(fitting).unwrap_or(usize::MAX))
}

/// What is wrong with an open-file limit of `soft` (`None`: unlimited) for `max_connections`.
fn fd_shortfall(soft: Option<u64>, max_connections: usize) -> Option<String> {
    let needed = max_connections as u64 + FD_RESERVE;
    let soft = soft?;
    (soft < needed).then(|| {
        format!(
            "the open-file limit ({soft}) is below --max-connections ({max_connections}) plus \
             {FD_RESERVE}: connections past it are not accepted (\"too many open files\"); \
             raise it (ulimit -n {needed}) or lower --max-connections"
        )
    })
}

#[derive(Args)]
struct WorkerArgs {
    /// Scheduler address, e.g. tcp://scheduler:8786.
    #[arg(env = "DASK_SCHEDULER_ADDRESS")]
    scheduler: String,
    /// Unique worker name (default: host name and process id).
    #[arg(long, env = "DASK_WORKER_NAME")]
    name: Option<String>,
    /// Threads executing tasks (default: the machine's cores).
    #[arg(long)]
    nthreads: Option<usize>,
    /// Results kept in memory before spilling to disk: `4GiB`, `auto` (the machine's memory times
    /// this worker's share of the cores), `0` (no limit).
    #[arg(long, default_value = "auto")]
    memory_limit: String,
    /// Directory for spill files.
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    local_directory: PathBuf,
    /// Interface to serve data to peers on.
    #[arg(long)]
    listen_host: Option<String>,
    /// Port to serve data to peers on (0: any).
    #[arg(long, default_value_t = 0)]
    worker_port: u16,
    /// Host name or IP peers should use to reach this worker.
    #[arg(long)]
    contact_host: Option<String>,
    /// Resources this worker offers to tasks that ask for them, as Dask's: `"GPU=1,MEM=8e9"`.
    #[arg(long, env = "DASK_DISTRIBUTED__WORKER__RESOURCES", value_parser = parse_resources)]
    resources: Option<Resources>,
    /// Run the worker under a nanny, a parent process that restarts it when it dies or when its
    /// memory goes over the terminate threshold: the default, as Dask's.
    #[arg(long, overrides_with = "no_nanny")]
    nanny: bool,
    /// Run the worker in this process, without a nanny.
    #[arg(long, overrides_with = "nanny")]
    no_nanny: bool,
    /// Where to serve the worker's /health and /metrics (Dask's `dask_worker_*` families):
    /// `:8789`, `HOST:PORT`, `:0` (any free port, the default, as Dask's), or `none`.
    #[arg(long, default_value = ":0")]
    dashboard_address: String,
    /// Serve the worker's dashboard: the default, as Dask's.
    #[arg(long, overrides_with = "no_dashboard")]
    dashboard: bool,
    /// Serve no dashboard (no /health, no /metrics) for this worker.
    #[arg(long, overrides_with = "dashboard")]
    no_dashboard: bool,
    /// The Python interpreter that runs users' Python functions (the `python` family; it needs
    /// cloudpickle). Default: python3 on PATH.
    #[arg(long, env = rask_python::PYTHON_ENV)]
    python: Option<PathBuf>,
    #[command(flatten)]
    limits: ConnLimitArgs,
    #[command(flatten)]
    tls: TlsArgs,
}

impl WorkerArgs {
    /// Where the worker serves its dashboard, if anywhere.
    fn dashboard(&self) -> Result<Option<SocketAddr>, String> {
        // The two flags override each other: at most one is set, the last given.
        if self.no_dashboard && !self.dashboard {
            return Ok(None);
        }
        parse_dashboard(&self.dashboard_address)
    }
}

fn parse_resources(s: &str) -> Result<Resources, String> {
    Resources::parse(s).map_err(|e| e.to_string())
}

#[derive(Clone, Copy, ValueEnum)]
enum Job {
    /// The seed notebook's delayed graph: sum of add(inc(x), custom_op(x)) for x in 0..6 (= 131).
    Delayed,
    /// The seed notebook's futures pipeline: load → process1 → process2 → save over input pairs.
    Futures,
    /// Waves of short independent tasks with pauses between them: the load an autoscaler follows.
    Burst,
    /// `random((N, N, N), chunks=C).mean()` (--size, default 800; --chunk, default 200).
    ArrayMean,
    /// On a random N×N matrix x: `x.sum(axis=0)` and `(x.dot(x.T + 1) - x.mean()).std()`
    /// (--size, default 2000; --chunk, default 1000).
    ArrayLinalg,
    /// The seed's dataframe job: read_csv(--path, --blocksize), len, mean total_amount and
    /// trip_distance by payment_type.
    TaxiGroupby,
    /// Write a seeded synthetic taxi CSV (--out, --rows, --seed); needs no cluster.
    GenTaxi,
}

#[derive(Args)]
struct RunArgs {
    job: Job,
    /// Use this scheduler instead of starting a local cluster (a DaskJob's runner gets it from
    /// `DASK_SCHEDULER_ADDRESS`).
    #[arg(long, env = "DASK_SCHEDULER_ADDRESS")]
    scheduler: Option<String>,
    /// Workers of the local cluster.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads per worker of the local cluster.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Run the local cluster's workers inside this process instead of as child processes.
    #[arg(long)]
    in_process: bool,
    /// Futures job: number of (src, dst) pairs.
    #[arg(long, default_value_t = 50)]
    pairs: usize,
    /// Futures job: seconds each step takes.
    #[arg(long, default_value_t = 0.2)]
    step: f64,
    /// Burst job: tasks per wave.
    #[arg(long, default_value_t = 2000)]
    tasks: usize,
    /// Burst job: seconds each task takes.
    #[arg(long, default_value_t = 0.05)]
    task_seconds: f64,
    /// Burst job: number of waves.
    #[arg(long, default_value_t = 1)]
    waves: usize,
    /// Burst job: seconds of quiet between waves.
    #[arg(long, default_value_t = 0.0)]
    pause: f64,
    /// Array jobs: length of each dimension.
    #[arg(long)]
    size: Option<usize>,
    /// Array jobs: chunk length per dimension (`250`), per dimension (`250,100`) or `auto`.
    #[arg(long)]
    chunk: Option<String>,
    /// Taxi jobs: the CSV file or glob to read.
    #[arg(long)]
    path: Option<String>,
    /// taxi-groupby: bytes per partition (`64MB`, `none` for one partition per file).
    #[arg(long, default_value = "64MB")]
    blocksize: String,
    /// taxi-groupby: the field separator (one ASCII character; `\t` or `tab` for a tab).
    #[arg(long, default_value = ",")]
    sep: String,
    /// gen-taxi: the file to write.
    #[arg(long)]
    out: Option<PathBuf>,
    /// gen-taxi: rows to write (the reference file has 5,000,000).
    #[arg(long, default_value_t = 5_000_000)]
    rows: u64,
    /// Random seed (array jobs: of the random array, default 0; gen-taxi: of the rows, default 42).
    #[arg(long)]
    seed: Option<u64>,
    /// Print one JSON line with the result and timings.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: TlsArgs,
    /// Show no progress. Otherwise stderr shows a bar per task prefix on a terminal, and a line
    /// per prefix every few seconds (`inc: 120/400 tasks in memory, 0 erred`) when it is not.
    #[arg(long)]
    no_progress: bool,
}

/// Runs the command line with the function families of `registry`.
pub fn main(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(cli.log_json, default_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Scheduler(a) => scheduler(a).await,
            Command::Worker(a) => worker(a, registry).await,
            Command::Run(a) => run(a, registry).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

type CliResult = Result<(), String>;

/// `:8787` → all interfaces; `HOST:PORT`; a bare port; `none` → no HTTP server.
fn parse_dashboard(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(None);
    }
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.parse::<u16>().is_ok() {
        format!("0.0.0.0:{s}")
    } else {
        s.to_owned()
    };
    full.parse()
        .map(Some)
        .map_err(|_| format!("--dashboard-address {s:?} is not `:PORT`, `HOST:PORT` or `none`"))
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

async fn scheduler(a: SchedulerArgs) -> CliResult {
    let listen: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .map_err(|_| format!("--host {:?} is not an IP address", a.host))?;
    let mut config = SchedulerConfig {
        listen,
        dashboard: parse_dashboard(&a.dashboard_address)?,
        ..SchedulerConfig::default()
    };
    config.policy.worker_ttl_s = a.worker_ttl;
    a.limits.check()?;
    if a.max_graph_tasks == 0 {
        return Err("--max-graph-tasks must be at least 1".into());
    }
    if a.http_header_timeout.is_zero() || a.http_body_timeout.is_zero() {
        return Err("--http-header-timeout and --http-body-timeout must be longer than 0".into());
    }
    config.policy.max_graph_tasks = a.max_graph_tasks;
    config.limits.conn.max_frame = a.limits.max_frame;
    config.limits.conn.max_backlog = a.max_backlog;
    config.limits.max_connections = a.limits.max_connections();
    config.limits.handshake_timeout = a.limits.handshake_timeout;
    config.limits.http.header_timeout = a.http_header_timeout;
    config.limits.http.body_timeout = a.http_body_timeout;
    if let Some(t) = a.no_workers_timeout {
        if !(t.is_finite() && t >= 0.0) {
            return Err(format!(
                "--no-workers-timeout {t} is not a number of seconds ≥ 0"
            ));
        }
        config.policy.no_workers_timeout_s = Some(t);
    }
    if listen.ip().is_unspecified() {
        config.advertise_host = Some(hostname_ip());
    }
    config.tls = a.tls.load(Role::Scheduler)?.map(|t| t.config);
    config.api_auth = ApiAuth {
        token: a
            .api_token_file
            .as_deref()
            .map(read_api_token)
            .transpose()?,
        read_only_open: a.api_read_only_open,
    };
    let web = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let s = Scheduler::start(config).await.map_err(|e| e.to_string())?;
    eprintln!("scheduler at {}", s.address());
    if let Some(d) = s.dashboard_address() {
        eprintln!("dashboard (HTTP API, /metrics) at {web}://{d}");
    }
    if let Some(path) = &a.scheduler_file {
        write_scheduler_file(path, s.address(), s.dashboard_address(), web)?;
    }
    let sig = shutdown_signal().await;
    tracing::info!(signal = sig, "shutting down");
    s.shutdown().await;
    Ok(())
}

/// Writes `{"address": ..., "dashboard": ...}` atomically (a temporary file renamed into place),
/// so a reader never sees half of it.
fn write_scheduler_file(
    path: &std::path::Path,
    address: &str,
    dashboard: Option<SocketAddr>,
    web: &str,
) -> CliResult {
    let body = json!({
        "type": "Scheduler",
        "address": address,
        "dashboard": dashboard.map(|d| format!("{web}://{d}")),
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write --scheduler-file {}: {e}", path.display()))
}

/// The address to advertise when listening on all interfaces: this host's name.
fn hostname_ip() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

async fn worker(a: WorkerArgs, registry: Registry) -> CliResult {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let nthreads = a.nthreads.unwrap_or(cores);
    let memory_limit = if a.memory_limit.trim().eq_ignore_ascii_case("auto") {
        // As Dask: the machine's memory in proportion to this worker's share of the cores, so
        // several workers on one machine do not each claim all of it.
        let share = (nthreads as f64 / cores as f64).min(1.0);
        (machine_memory() as f64 * share) as u64
    } else {
        parse_bytes(&a.memory_limit).map_err(|e| format!("--memory-limit: {e}"))?
    };
    let fractions =
        MemoryFractions::from_env(|k| std::env::var(k).ok()).map_err(|e| e.to_string())?;
    let name = a
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", hostname_ip(), std::process::id()));
    let dashboard = a.dashboard()?;
    a.limits.check()?;
    let tls = a.tls.load(Role::Worker)?;
    a.tls.check_address(
        Role::Worker,
        "the scheduler address",
        &a.scheduler,
        tls.is_some(),
    )?;
    if a.nanny || !a.no_nanny {
        return supervise(&a, name, nthreads, memory_limit, fractions, dashboard, tls).await;
    }
    nanny::die_with_parent()?;
    let mut registry = registry;
    let interpreter = a.python.clone();
    let python = tokio::task::spawn_blocking(move || python_family(interpreter))
        .await
        .map_err(|e| format!("probing the Python interpreter: {e}"))?;
    registry
        .register(python)
        .map_err(|e| format!("cannot add the python function family: {e}"))?;
    let mut config = WorkerConfig::new(a.scheduler, name);
    config.nthreads = nthreads;
    config.memory_limit = memory_limit;
    config.memory = fractions;
    config.local_directory = a.local_directory;
    config.listen_host = a.listen_host;
    config.port = a.worker_port;
    config.advertise_host = a.contact_host;
    config.resources = a.resources.unwrap_or_default();
    config.dashboard = dashboard;
    config.data_limits.max_frame = a.limits.max_frame;
    config.data_limits.max_connections = a.limits.max_connections();
    config.data_limits.handshake_timeout = a.limits.handshake_timeout;
    config.tls = tls.map(|t| t.config);
    let w = Worker::start(config, registry)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(d) = w.dashboard_address() {
        eprintln!("worker dashboard (/health, /metrics) at http://{d}");
    }
    let signal = async {
        let sig = shutdown_signal().await;
        tracing::info!(signal = sig, "worker leaving");
    };
    w.run_until(signal).await.map_err(|e| e.to_string())
}

/// The `python` family with the interpreter of `--python`: probed once here, so the family's
/// version names its Python and cloudpickle versions. An interpreter that cannot run tasks leaves
/// the worker running its other families; its Python tasks fail saying why.
fn python_family(interpreter: Option<PathBuf>) -> rask_core::Family {
    let config = rask_python::PythonConfig::new(interpreter);
    let versions = match rask_python::probe(&config) {
        Ok(v) => {
            tracing::info!(interpreter = %config.interpreter.display(), python = %v.python, cloudpickle = %v.cloudpickle, "Python functions run here");
            Some(v)
        }
        Err(e) => {
            tracing::warn!(error = %e, "Python functions cannot run on this worker");
            None
        }
    };
    rask_python::family(config, versions.as_ref())
}

/// `rask worker` with a nanny: this process supervises a worker started from this same
/// executable with the settings resolved here (its name and memory limit stay the same across
/// restarts).
async fn supervise(
    a: &WorkerArgs,
    name: String,
    nthreads: usize,
    memory_limit: u64,
    fractions: MemoryFractions,
    dashboard: Option<SocketAddr>,
    tls: Option<ClusterTls>,
) -> CliResult {
    let program = std::env::current_exe()
        .map_err(|e| format!("cannot find this executable to start the worker: {e}"))?;
    let mut args: Vec<std::ffi::OsString> = vec!["worker".into(), a.scheduler.clone().into()];
    let mut flag = |k: &str, v: std::ffi::OsString| {
        args.push(k.into());
        args.push(v);
    };
    flag("--name", name.clone().into());
    flag("--nthreads", nthreads.to_string().into());
    flag("--memory-limit", memory_limit.to_string().into());
    flag("--local-directory", a.local_directory.clone().into());
    flag("--worker-port", a.worker_port.to_string().into());
    if let Some(h) = &a.listen_host {
        flag("--listen-host", h.into());
    }
    if let Some(h) = &a.contact_host {
        flag("--contact-host", h.into());
    }
    if let Some(r) = &a.resources {
        flag("--resources", r.to_string().into());
    }
    if let Some(p) = &a.python {
        flag("--python", p.clone().into());
    }
    // The TLS files as resolved here (flags or Dask's variables), so the worker loads the same.
    if let Some(t) = &tls {
        flag("--tls-ca-file", t.files.ca_file.clone().into());
        flag("--tls-cert", t.files.cert.clone().into());
        flag("--tls-key", t.files.key.clone().into());
    }
    match dashboard {
        Some(addr) => flag("--dashboard-address", addr.to_string().into()),
        None => args.push("--no-dashboard".into()),
    }
    args.extend([
        "--max-frame".into(),
        a.limits.max_frame.to_string().into(),
        "--max-connections".into(),
        a.limits.max_connections().to_string().into(),
        "--handshake-timeout".into(),
        a.limits.handshake_timeout.as_secs_f64().to_string().into(),
    ]);
    args.push("--no-nanny".into());
    let config = NannyConfig {
        program,
        args,
        scheduler: a.scheduler.clone(),
        worker_name: name,
        memory: MemoryPolicy::new(memory_limit, fractions),
        sample_every: std::time::Duration::from_millis(100),
        grace: std::time::Duration::from_secs(30),
        tls: tls.map(|t| t.config),
    };
    let stop = async {
        let sig = shutdown_signal().await;
        tracing::info!(signal = sig, "nanny passing the signal on to the worker");
    };
    nanny::supervise(config, stop)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The array jobs' size and chunks: the flags, or the job's defaults; bad chunks are an error
/// naming the flag.
fn array_size(a: &RunArgs, size: usize, chunk: &str) -> Result<(usize, ChunkSpec), String> {
    let spec: ChunkSpec = a
        .chunk
        .as_deref()
        .unwrap_or(chunk)
        .parse()
        .map_err(|e| format!("--chunk: {e}"))?;
    if matches!(spec, ChunkSpec::Size(0)) {
        return Err("--chunk: chunks must be at least 1 long".into());
    }
    Ok((a.size.unwrap_or(size), spec))
}

/// `rask run gen-taxi`: writes the file here, without a cluster.
fn gen_taxi(a: &RunArgs) -> CliResult {
    let out = a
        .out
        .as_deref()
        .ok_or("gen-taxi needs --out FILE (where to write the CSV)")?;
    let t0 = Instant::now();
    let bytes = frame::taxi::write_taxi_csv(out, a.rows, a.seed.unwrap_or(42))
        .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let line = json!({"job": "gen-taxi", "path": out, "rows": a.rows, "seed": a.seed.unwrap_or(42), "bytes": bytes, "wall_s": secs});
        println!("{line}");
    } else {
        println!(
            "wrote {} rows ({:.1} MB) to {} in {secs:.2} s",
            a.rows,
            bytes as f64 / 1e6,
            out.display()
        );
    }
    Ok(())
}

async fn run(a: RunArgs, registry: Registry) -> CliResult {
    if matches!(a.job, Job::GenTaxi) {
        return gen_taxi(&a);
    }
    // Check the job's own arguments before starting a cluster for it.
    let taxi_input = match a.job {
        Job::TaxiGroupby => {
            let path = a.path.clone().ok_or(
                "taxi-groupby needs --path GLOB (CSV files; make one with `rask run gen-taxi`)",
            )?;
            let options = frame::ReadCsvOptions {
                blocksize: frame::parse_blocksize(&a.blocksize)
                    .map_err(|e| format!("--blocksize: {e}"))?,
                sep: frame::parse_sep(&a.sep).map_err(|e| format!("--sep: {e}"))?,
                ..frame::ReadCsvOptions::default()
            };
            Some((path, options))
        }
        _ => None,
    };
    // Bad array flags fail before a cluster starts.
    let array_args = match a.job {
        Job::ArrayMean => Some(array_size(&a, 800, "200")?),
        Job::ArrayLinalg => Some(array_size(&a, 2000, "1000")?),
        _ => None,
    };
    if let Some((n, spec)) = &array_args {
        let ndim = if matches!(a.job, Job::ArrayMean) {
            3
        } else {
            2
        };
        Grid::new(&vec![*n; ndim], spec, 8).map_err(|e| format!("--chunk: {e}"))?;
    }
    let tls = a.tls.load(Role::Client)?;
    let t0 = Instant::now();
    let (cluster, client) = match &a.scheduler {
        Some(addr) => {
            a.tls
                .check_address(Role::Client, "--scheduler", addr, tls.is_some())?;
            let tls: Option<TlsConfig> = tls.map(|t| t.config);
            (
                None,
                Client::connect_with(addr, tls)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
        None => {
            let mut config = LocalClusterConfig::new(a.workers, a.threads);
            config.mode = Mode::InProcess(registry);
            config.tls = tls;
            let log = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
            config.worker_env.push(("RUST_LOG".into(), log));
            if !a.in_process {
                let exe = std::env::current_exe()
                    .map_err(|e| format!("cannot find the rask binary to start workers: {e}"))?;
                // Workers are this very executable, so they carry the same families.
                config = config.processes(exe);
            }
            let cluster = LocalCluster::start(config)
                .await
                .map_err(|e| e.to_string())?;
            let client = cluster.client().await.map_err(|e| e.to_string())?;
            (Some(cluster), client)
        }
    };
    let startup_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let view = View::start(
        client.follow_submissions(),
        progress::Mode::detect(a.no_progress),
    );
    let outcome = run_job(&a, &client, array_args, taxi_input, t1).await;
    view.finish(outcome.is_ok()).await;
    let outcome = outcome?;
    let compute_s = t1.elapsed().as_secs_f64();
    drop(client);
    if let Some(c) = cluster {
        c.shutdown().await;
    }
    let (mut line, human, ok) = outcome;
    if a.json {
        line["startup_s"] = json!(startup_s);
        line["compute_s"] = json!(compute_s);
        line["wall_s"] = json!(t0.elapsed().as_secs_f64());
        line["workers"] = json!(a.workers);
        line["threads"] = json!(a.threads);
        line["scheduler"] = json!(a.scheduler.as_deref().unwrap_or("local"));
        println!("{line}");
    } else {
        let place = match &a.scheduler {
            Some(s) => format!("on {s}"),
            None => format!(
                "on a local cluster of {} workers × {} threads",
                a.workers, a.threads
            ),
        };
        println!("{human}\n{place}: started in {startup_s:.3} s, computed in {compute_s:.3} s");
    }
    if ok {
        Ok(())
    } else {
        Err("the job's result is wrong".into())
    }
}

/// What a job printed and whether its result is right: (the JSON line, the human lines, ok).
type JobOutcome = (serde_json::Value, String, bool);

/// Runs the job of `a` on `client`'s cluster.
async fn run_job(
    a: &RunArgs,
    client: &Client,
    array_args: Option<(usize, ChunkSpec)>,
    taxi_input: Option<(String, frame::ReadCsvOptions)>,
    t1: Instant,
) -> Result<JobOutcome, String> {
    Ok(match a.job {
        Job::Delayed => {
            let total = jobs::seed_delayed(client)
                .await
                .map_err(|e| e.to_string())?;
            let ok = total == 131;
            let line = json!({"job": "delayed", "result": total, "expected": 131, "ok": ok});
            let human = format!("sum(add(inc(x), custom_op(x)) for x in 0..6) = {total}");
            (line, human, ok)
        }
        Job::Futures => {
            let saves = jobs::futures_pipeline(client, a.pairs, a.step);
            let mut wrong = Vec::new();
            let mut last = serde_json::Value::Null;
            for (i, f) in saves.iter().enumerate() {
                let v = f.result().await.map_err(|e| e.to_string())?;
                if v != jobs::futures_pipeline_expected(i) {
                    wrong.push(i);
                }
                last = json!(v.to_string());
            }
            let ok = wrong.is_empty();
            let ideal = a.pairs as f64 * 4.0 * a.step / (a.workers * a.threads).max(1) as f64;
            let line = json!({"job": "futures", "pairs": a.pairs, "step_s": a.step, "last": last, "wrong": wrong, "ok": ok, "ideal_s": ideal});
            let human = format!("saved {} pairs; last = {last}", a.pairs);
            (line, human, ok)
        }
        Job::Burst => {
            let mut wrong = 0;
            for wave in 0..a.waves {
                if wave > 0 && a.pause > 0.0 {
                    tokio::time::sleep(std::time::Duration::from_secs_f64(a.pause)).await;
                }
                let t = Instant::now();
                let futures = jobs::burst(client, a.tasks, a.task_seconds);
                wrong += jobs::burst_wrong(&futures)
                    .await
                    .map_err(|e| e.to_string())?
                    .len();
                if !a.json {
                    eprintln!(
                        "wave {}/{}: {} tasks of {} s done in {:.1} s",
                        wave + 1,
                        a.waves,
                        a.tasks,
                        a.task_seconds,
                        t.elapsed().as_secs_f64()
                    );
                }
            }
            let ok = wrong == 0;
            let line = json!({"job": "burst", "tasks": a.tasks, "waves": a.waves, "task_s": a.task_seconds, "wrong": wrong, "ok": ok});
            let human = format!(
                "{} waves of {} tasks: {} results, {wrong} wrong",
                a.waves,
                a.tasks,
                a.waves * a.tasks
            );
            (line, human, ok)
        }
        Job::ArrayMean => {
            let (n, spec) = array_args.ok_or("array job without sizes")?;
            let (mean, chunks) = jobs::array_mean(client, n, spec, a.seed.unwrap_or(0))
                .await
                .map_err(|e| e.to_string())?;
            let elements = n.pow(3);
            let ok = jobs::uniform_mean_plausible(mean, elements);
            let secs = t1.elapsed().as_secs_f64();
            let gb_s = elements as f64 * 8.0 / 1e9 / secs;
            let line = json!({"job": "array-mean", "size": n, "chunks": chunks, "result": mean, "gb_per_s": gb_s, "ok": ok});
            let human = format!(
                "random(({n}, {n}, {n})).mean() = {mean} over {chunks} chunks; {:.2} GiB generated at {gb_s:.2} GB/s",
                elements as f64 * 8.0 / (1u64 << 30) as f64
            );
            (line, human, ok)
        }
        Job::ArrayLinalg => {
            let (n, spec) = array_args.ok_or("array job without sizes")?;
            let (sum0, expr) = jobs::array_linalg_graphs(n, spec, a.seed.unwrap_or(0))
                .map_err(|e| e.to_string())?;
            let ts = Instant::now();
            let s = sum0.compute(client).await.map_err(|e| e.to_string())?;
            let sum_s = ts.elapsed().as_secs_f64();
            let te = Instant::now();
            let std = expr
                .compute_scalar(client)
                .await
                .map_err(|e| e.to_string())?;
            let expr_s = te.elapsed().as_secs_f64();
            let head: Vec<f64> = s.iter().take(4).copied().collect();
            // Each column sum of n uniform values is near n / 2.
            let ok = s.len() == n
                && s.iter()
                    .all(|v| (v - n as f64 / 2.0).abs() <= 6.0 * (n as f64 / 12.0).sqrt())
                && std.is_finite();
            let line = json!({"job": "array-linalg", "size": n, "sum_axis0_head": head, "sum_axis0_s": sum_s, "expr_std": std, "expr_s": expr_s, "ok": ok});
            let human = format!(
                "x = random(({n}, {n})): x.sum(axis=0)[:4] = {head:?} ({sum_s:.3} s)\n(x.dot(x.T + 1) - x.mean()).std() = {std} ({expr_s:.3} s)"
            );
            (line, human, ok)
        }
        Job::TaxiGroupby => {
            let (path, options) = taxi_input.ok_or("taxi-groupby without --path")?;
            let r = frame::taxi::taxi_groupby(client, &path, &options)
                .await
                .map_err(|e| e.to_string())?;
            let result: serde_json::Map<String, serde_json::Value> = r
                .means
                .iter()
                .map(|(k, t, d)| (k.to_string(), json!([t, d])))
                .collect();
            let ok = r.rows > 0 && !r.means.is_empty();
            let line = json!({"job": "taxi-groupby", "path": path, "blocksize": a.blocksize, "sep": a.sep,
                "npartitions": r.npartitions, "rows": r.rows, "read_csv_s": r.read_s,
                "len_s": r.len_s, "groupby_s": r.groupby_s, "result": result, "ok": ok});
            let mut human = format!(
                "{} rows in {} partitions (len {:.3} s); mean by payment_type ({:.3} s):\n",
                r.rows, r.npartitions, r.len_s, r.groupby_s
            );
            human.push_str("payment_type  total_amount  trip_distance\n");
            for (k, t, d) in &r.means {
                human.push_str(&format!("{k:>12}  {t:>12.6}  {d:>13.6}\n"));
            }
            (line, human.trim_end().to_owned(), ok)
        }
        Job::GenTaxi => unreachable!("gen-taxi returned before starting a cluster"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_file_limit_below_the_connection_limit_is_named() {
        let w = fd_shortfall(Some(1024), 10_000).unwrap();
        assert!(w.contains("(1024)") && w.contains("(10000)") && w.contains("ulimit -n 10064"));
        assert_eq!(fd_shortfall(Some(1_048_576), 10_000), None);
        assert_eq!(fd_shortfall(None, 10_000), None);
        // Without the flag, the default fits the limit.
        assert_eq!(default_max_connections(Some(1024)), 960);
        assert_eq!(default_max_connections(Some(1_048_576)), 10_000);
        assert_eq!(default_max_connections(None), 10_000);
        assert_eq!(default_max_connections(Some(10)), 1);
    }

    fn run_args(job: Job, size: Option<usize>, chunk: Option<&str>) -> RunArgs {
        let mut a = match Cli::parse_from(["rask", "run", "delayed"]).command {
            Command::Run(a) => a,
            _ => unreachable!(),
        };
        a.job = job;
        a.size = size;
        a.chunk = chunk.map(str::to_owned);
        a
    }

    #[test]
    fn array_flags_default_and_bad_chunks_name_the_flag() {
        let (n, spec) = array_size(&run_args(Job::ArrayMean, None, None), 800, "200").unwrap();
        assert_eq!((n, spec), (800, ChunkSpec::Size(200)));
        let (_, spec) = array_size(
            &run_args(Job::ArrayMean, Some(2000), Some("auto")),
            800,
            "200",
        )
        .unwrap();
        assert_eq!(spec, ChunkSpec::Auto);
        for bad in ["x", "0", "-3", ""] {
            let e = array_size(&run_args(Job::ArrayMean, None, Some(bad)), 800, "200").unwrap_err();
            assert!(e.starts_with("--chunk"), "{bad:?}: {e}");
        }
    }

    fn worker_args(flags: &[&str]) -> WorkerArgs {
        let argv = ["rask", "worker", "tcp://10.0.0.1:8786"]
            .iter()
            .chain(flags)
            .copied();
        match Cli::parse_from(argv).command {
            Command::Worker(a) => a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn worker_dashboard_flags_are_dasks() {
        assert_eq!(
            worker_args(&[]).dashboard().unwrap(),
            Some("0.0.0.0:0".parse().unwrap()),
            "on, any free port, by default"
        );
        assert_eq!(
            worker_args(&["--dashboard-address", ":8789"])
                .dashboard()
                .unwrap(),
            Some("0.0.0.0:8789".parse().unwrap())
        );
        assert_eq!(worker_args(&["--no-dashboard"]).dashboard().unwrap(), None);
        assert_eq!(
            worker_args(&["--no-dashboard", "--dashboard"])
                .dashboard()
                .unwrap(),
            Some("0.0.0.0:0".parse().unwrap()),
            "the last of the two wins"
        );
        assert_eq!(
            worker_args(&["--dashboard-address", "none"])
                .dashboard()
                .unwrap(),
            None
        );
        let bad = worker_args(&["--dashboard-address", "here"]).dashboard();
        assert!(bad.unwrap_err().contains("--dashboard-address"));
    }

    #[test]
    fn dashboard_addresses() {
        assert_eq!(
            parse_dashboard(":8787").unwrap(),
            Some("0.0.0.0:8787".parse().unwrap())
        );
        assert_eq!(
            parse_dashboard("127.0.0.1:9").unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        assert_eq!(
            parse_dashboard("8788").unwrap(),
            Some("0.0.0.0:8788".parse().unwrap())
        );
        assert_eq!(parse_dashboard("none").unwrap(), None);
        assert!(
            parse_dashboard("nowhere:x")
                .unwrap_err()
                .contains("--dashboard-address")
        );
    }
}
