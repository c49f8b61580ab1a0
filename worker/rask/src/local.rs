//! A local cluster: a scheduler and workers on this machine, in this process or as child
//! processes (Dask's `LocalCluster`). Tests, `rask run` and the operator's local backend use it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use rask_client::{Client, ClientError};
use rask_core::Registry;
use rask_core::tls::{TlsConfig, TlsError, TlsFiles};
use rask_scheduler::server::{Scheduler, SchedulerConfig};
use rask_scheduler::{SchedulerHandle, Snapshot};
use rask_worker::{Worker, WorkerConfig, WorkerError};

/// Where the workers run.
#[derive(Clone, Debug)]
pub enum Mode {
    /// As tasks of this process, running the functions of the registry given (fast to start;
    /// a crash takes all down).
    InProcess(Registry),
    /// As `rask worker` child processes of this binary.
    Processes { rask_binary: PathBuf },
}

/// How to start a local cluster.
#[derive(Clone, Debug)]
pub struct LocalClusterConfig {
    pub workers: usize,
    pub threads_per_worker: usize,
    /// Per worker, bytes (0: no limit).
    pub memory_limit: u64,
    pub mode: Mode,
    /// Serve the HTTP API here (port 0 allowed).
    pub dashboard: Option<SocketAddr>,
    pub local_directory: PathBuf,
    /// Extra environment for worker processes (e.g. `RUST_LOG`).
    pub worker_env: Vec<(String, String)>,
    /// The scheduler's policy (timeouts, retries).
    pub policy: rask_scheduler::state::Config,
    /// Worker processes run under a nanny (restarted when they die or outgrow their memory);
    /// off by default, so a worker's pid is its own (tests kill and measure them).
    pub nanny: bool,
    /// Mutual TLS everywhere (`tls://` addresses), with one identity for the scheduler, the
    /// workers and the client; `None`: plain TCP.
    pub tls: Option<ClusterTls>,
    /// Who may use the scheduler's HTTP API (docs/security.md).
    pub api_auth: rask_scheduler::http::ApiAuth,
}

/// One TLS identity for a whole local cluster: the files (for worker processes' flags) and
/// what they load into.
#[derive(Clone, Debug)]
pub struct ClusterTls {
    pub files: TlsFiles,
    pub config: TlsConfig,
}

impl ClusterTls {
    pub fn load(files: TlsFiles) -> Result<ClusterTls, TlsError> {
        let config = TlsConfig::load(&files)?;
        Ok(ClusterTls { files, config })
    }
}

impl LocalClusterConfig {
    pub fn new(workers: usize, threads_per_worker: usize) -> Self {
        LocalClusterConfig {
            workers,
            threads_per_worker,
            memory_limit: 0,
            mode: Mode::InProcess(crate::registry()),
            dashboard: None,
            local_directory: std::env::temp_dir(),
            worker_env: Vec::new(),
            policy: rask_scheduler::state::Config::default(),
            nanny: false,
            tls: None,
            api_auth: rask_scheduler::http::ApiAuth::default(),
        }
    }

    /// Runs workers as child processes of `rask_binary`.
    pub fn processes(mut self, rask_binary: impl Into<PathBuf>) -> Self {
        self.mode = Mode::Processes {
            rask_binary: rask_binary.into(),
        };
        self
    }
}

/// Why a local cluster could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot start the scheduler: {0}")]
    Scheduler(std::io::Error),
    #[error("cannot start worker {name}: {source}")]
    Worker { name: String, source: WorkerError },
    #[error("cannot start worker process {name} ({binary}): {source}")]
    Spawn {
        name: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("timed out after {waited:?} waiting for {wanted} workers ({have} connected)")]
    Timeout {
        wanted: usize,
        have: usize,
        waited: Duration,
    },
    #[error("no worker named {0}")]
    NoSuchWorker(String),
    #[error("the scheduler stopped")]
    SchedulerGone,
    #[error(transparent)]
    Client(#[from] ClientError),
}

enum LocalWorker {
    InProcess(Worker),
    Process(Child),
}

impl LocalWorker {
    /// Waits up to `grace` for a worker that was told to leave; a process still running then is
    /// killed, so no child outlives the cluster.
    async fn await_exit(self, grace: Duration) {
        match self {
            LocalWorker::InProcess(w) => {
                let _ = tokio::time::timeout(grace, w.wait()).await;
            }
            LocalWorker::Process(mut c) => {
                if tokio::time::timeout(grace, c.wait()).await.is_err() {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
            }
        }
    }
}

/// A running local cluster. Dropping it stops the workers.
pub struct LocalCluster {
    config: LocalClusterConfig,
    scheduler: Scheduler,
    workers: Vec<(String, LocalWorker)>,
    next_worker: usize,
}

impl LocalCluster {
    /// `workers` in-process workers with `threads` threads each.
    pub async fn new(workers: usize, threads: usize) -> Result<LocalCluster, LocalError> {
        Self::start(LocalClusterConfig::new(workers, threads)).await
    }

    pub async fn start(config: LocalClusterConfig) -> Result<LocalCluster, LocalError> {
        let sched_config = SchedulerConfig {
            dashboard: config.dashboard,
            policy: config.policy.clone(),
            tls: config.tls.as_ref().map(|t| t.config.clone()),
            api_auth: config.api_auth.clone(),
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::start(sched_config)
            .await
            .map_err(LocalError::Scheduler)?;
        let mut cluster = LocalCluster {
            config,
            scheduler,
            workers: Vec::new(),
            next_worker: 0,
        };
        for _ in 0..cluster.config.workers {
            cluster.add_worker().await?;
        }
        cluster
            .wait_for_workers(cluster.config.workers, Duration::from_secs(30))
            .await?;
        Ok(cluster)
    }

    pub fn scheduler_address(&self) -> &str {
        self.scheduler.address()
    }

    pub fn dashboard_address(&self) -> Option<SocketAddr> {
        self.scheduler.dashboard_address()
    }

    pub fn handle(&self) -> SchedulerHandle {
        self.scheduler.handle()
    }

    pub async fn client(&self) -> Result<Client, LocalError> {
        let tls = self.config.tls.as_ref().map(|t| t.config.clone());
        Ok(Client::connect_with(self.scheduler.address(), tls).await?)
    }

    /// Names of the workers this cluster started and has not stopped.
    pub fn worker_names(&self) -> Vec<String> {
        self.workers.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Starts one more worker; returns its name. It registers asynchronously (see
    /// [`LocalCluster::wait_for_workers`]) when it runs as a process.
    pub async fn add_worker(&mut self) -> Result<String, LocalError> {
        let name = format!("local-{}", self.next_worker);
        self.next_worker += 1;
        let w = match &self.config.mode {
            Mode::InProcess(registry) => {
                let mut wc = WorkerConfig::new(self.scheduler.address(), name.clone());
                wc.nthreads = self.config.threads_per_worker;
                wc.memory_limit = self.config.memory_limit;
                wc.local_directory = self.config.local_directory.clone();
                wc.listen_host = Some("127.0.0.1".into());
                wc.tls = self.config.tls.as_ref().map(|t| t.config.clone());
                // Workers in this process share its memory: only the store's own budget (the
                // target) applies, not the process-wide spill/pause thresholds.
                wc.memory = rask_worker::memory::MemoryFractions {
                    spill: None,
                    pause: None,
                    terminate: None,
                    ..rask_worker::memory::MemoryFractions::default()
                };
                let worker = Worker::start(wc, registry.clone())
                    .await
                    .map_err(|source| LocalError::Worker {
                        name: name.clone(),
                        source,
                    })?;
                LocalWorker::InProcess(worker)
            }
            Mode::Processes { rask_binary } => {
                let mut cmd = Command::new(rask_binary);
                cmd.arg("worker")
                    .arg(self.scheduler.address())
                    .args(["--name", &name])
                    .args(["--nthreads", &self.config.threads_per_worker.to_string()])
                    .args(["--memory-limit", &self.config.memory_limit.to_string()])
                    .arg("--local-directory")
                    .arg(&self.config.local_directory)
                    .args(["--listen-host", "127.0.0.1"])
                    // Its dashboard (/health, /metrics) on a free port of this machine only,
                    // as its data port.
                    .args(["--dashboard-address", "127.0.0.1:0"])
                    .arg(if self.config.nanny {
                        "--nanny"
                    } else {
                        "--no-nanny"
                    })
                    .args(self.config.tls.iter().flat_map(|t| {
                        [
                            "--tls-ca-file".as_ref(),
                            t.files.ca_file.as_os_str(),
                            "--tls-cert".as_ref(),
                            t.files.cert.as_os_str(),
                            "--tls-key".as_ref(),
                            t.files.key.as_os_str(),
                        ]
                    }))
                    .env_remove("DASK_SCHEDULER_ADDRESS")
                    .env_remove("DASK_WORKER_NAME")
                    .envs(self.config.worker_env.iter().map(|(k, v)| (k, v)))
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                // Polars (dataframe tasks) sizes its thread pool once per process from this
                // variable; by default it takes every core, so workers sharing a machine would
                // oversubscribe it. Give each worker its own share unless told otherwise.
                if std::env::var_os("POLARS_MAX_THREADS").is_none() {
                    let threads = self.config.threads_per_worker.max(1).to_string();
                    cmd.env("POLARS_MAX_THREADS", threads);
                }
                cmd.envs(self.config.worker_env.iter().map(|(k, v)| (k, v)));
                let child = cmd.spawn().map_err(|source| LocalError::Spawn {
                    name: name.clone(),
                    binary: rask_binary.clone(),
                    source,
                })?;
                LocalWorker::Process(child)
            }
        };
        self.workers.push((name.clone(), w));
        Ok(name)
    }

    /// Waits until at least `n` workers are registered with the scheduler.
    pub async fn wait_for_workers(&self, n: usize, timeout: Duration) -> Result<(), LocalError> {
        let start = Instant::now();
        loop {
            let have = self.snapshot().await?.workers.len();
            if have >= n {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(LocalError::Timeout {
                    wanted: n,
                    have,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn snapshot(&self) -> Result<Snapshot, LocalError> {
        self.scheduler
            .handle()
            .snapshot()
            .await
            .map_err(|_| LocalError::SchedulerGone)
    }

    /// The OS process id of a worker (its own for process workers, this process's otherwise).
    pub fn worker_pid(&self, name: &str) -> Option<u32> {
        self.workers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, w)| match w {
                LocalWorker::InProcess(_) => Some(std::process::id()),
                LocalWorker::Process(c) => c.id(),
            })
    }

    /// Kills a worker without warning (SIGKILL for a process), as a crash would.
    pub async fn kill_worker(&mut self, name: &str) -> Result<(), LocalError> {
        let i = self
            .workers
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| LocalError::NoSuchWorker(name.into()))?;
        let (_, w) = self.workers.remove(i);
        match w {
            LocalWorker::InProcess(w) => drop(w),
            LocalWorker::Process(mut c) => {
                let _ = c.start_kill();
                let _ = c.wait().await;
            }
        }
        Ok(())
    }

    /// Forgets a worker that the scheduler retired (it exits on its own); reaps its process.
    pub async fn forget_worker(&mut self, name: &str) -> Result<(), LocalError> {
        let i = self
            .workers
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| LocalError::NoSuchWorker(name.into()))?;
        let (_, w) = self.workers.remove(i);
        w.await_exit(Duration::from_secs(10)).await;
        Ok(())
    }

    /// Stops the workers and the scheduler.
    pub async fn shutdown(mut self) {
        let workers = std::mem::take(&mut self.workers);
        self.scheduler.shutdown().await;
        for (_, w) in workers {
            w.await_exit(Duration::from_secs(5)).await;
        }
    }
}
