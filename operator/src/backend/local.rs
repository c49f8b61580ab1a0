//! The embedded default: a cluster of `rask` child processes on this machine, like Dask's
//! `LocalCluster`. The scheduler listens on a free loopback port and says where in its
//! `--scheduler-file`; each worker is a `rask worker` process named `{cluster}-{group}-worker-{n}`,
//! with its output in `{dir}/{name}.log`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::{
    Backend, BackendError, InstanceState, Retirement, WorkerInstance, retire_then_remove, tail,
};
use crate::clock::now;
use crate::local::certs::tls_args;
use crate::scheduler_api::SchedulerApi;
use crate::spec::WorkerTemplate;
use crate::tls::Role;

const BACKEND: &str = "local";
/// How long a retired worker gets to leave on its own before it is killed (it holds nothing).
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// Everything the local backend needs to run a cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalSpec {
    pub cluster: String,
    /// The `rask` binary: the scheduler's and the workers' program unless they name another.
    pub rask: PathBuf,
    /// The scheduler's program when it is not `rask` (a binary with families of its own).
    pub scheduler_program: Option<PathBuf>,
    /// Worker groups' programs when not `rask`, by group.
    pub programs: BTreeMap<String, PathBuf>,
    /// Logs, the scheduler file and spill directories go here.
    pub dir: PathBuf,
    pub scheduler_env: Vec<(String, String)>,
    pub groups: BTreeMap<String, WorkerTemplate>,
    /// How long the scheduler may take to start.
    pub start_timeout: Duration,
    /// The directory of the cluster's certificates ([`crate::local::certs`]), when its
    /// processes use them: the scheduler listens on `tls://`, every process gets its own
    /// certificate with `--tls-ca-file`, `--tls-cert`, `--tls-key`.
    pub tls: Option<PathBuf>,
}

struct Proc {
    group: String,
    created: f64,
    child: Child,
}

#[derive(Default)]
struct Procs {
    scheduler: Option<Child>,
    workers: BTreeMap<String, Proc>,
    next: u64,
}

pub struct LocalBackend {
    spec: LocalSpec,
    address: String,
    dashboard: String,
    api: SchedulerApi,
    procs: Mutex<Procs>,
}

#[derive(serde::Deserialize)]
struct SchedulerFile {
    address: String,
    dashboard: Option<String>,
}

fn failed(action: impl Into<String>, reason: impl std::fmt::Display) -> BackendError {
    BackendError::Failed {
        backend: BACKEND,
        action: action.into(),
        reason: reason.to_string(),
    }
}

/// The last lines of a log file, to say why a process ended.
pub fn log_tail(path: &Path, lines: usize) -> String {
    tail(&std::fs::read_to_string(path).unwrap_or_default(), lines)
}

impl LocalBackend {
    /// Starts the scheduler and waits until it says where it listens. Workers are added with
    /// [`Backend::add_workers`].
    pub async fn start(spec: LocalSpec) -> Result<LocalBackend, BackendError> {
        std::fs::create_dir_all(&spec.dir)
            .map_err(|e| failed(format!("create {}", spec.dir.display()), e))?;
        let api = match &spec.tls {
            Some(tls) => operator_api(tls)?,
            None => SchedulerApi::new(API_TIMEOUT),
        };
        let file = spec.dir.join("scheduler.json");
        let _ = std::fs::remove_file(&file);
        let log = spec.dir.join("scheduler.log");
        let program = spec
            .scheduler_program
            .as_ref()
            .unwrap_or(&spec.rask)
            .clone();
        let mut cmd = Command::new(&program);
        cmd.args(scheduler_args(&spec, &file))
            .envs(spec.scheduler_env.iter().cloned());
        let mut child = spawn(cmd, &log, "start the scheduler", &program)?;
        let deadline = Instant::now() + spec.start_timeout;
        let found = loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(f) = serde_json::from_str::<SchedulerFile>(&text)
            {
                break f;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failed(
                    "start the scheduler",
                    format!("it exited ({status}):\n{}", log_tail(&log, 20)),
                ));
            }
            if Instant::now() > deadline {
                let _ = child.start_kill();
                return Err(BackendError::Timeout {
                    backend: BACKEND,
                    what: format!(
                        "the scheduler writing {} (log {})",
                        file.display(),
                        log.display()
                    ),
                    after: spec.start_timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let dashboard = found.dashboard.ok_or_else(|| {
            failed(
                "start the scheduler",
                "it serves no HTTP API (no dashboard address in its scheduler file)",
            )
        })?;
        Ok(LocalBackend {
            address: found.address,
            dashboard,
            api,
            procs: Mutex::new(Procs {
                scheduler: Some(child),
                ..Procs::default()
            }),
            spec,
        })
    }

    /// The scheduler's TCP address (`tcp://127.0.0.1:PORT`).
    pub fn scheduler_address(&self) -> &str {
        &self.address
    }

    /// The client of the scheduler's HTTP API (HTTPS with the operator's certificate, for a
    /// cluster with TLS).
    pub fn api(&self) -> &SchedulerApi {
        &self.api
    }

    /// The cluster's certificates, when its processes use them.
    pub fn tls(&self) -> Option<&Path> {
        self.spec.tls.as_deref()
    }

    /// Where the processes' logs are.
    pub fn dir(&self) -> &Path {
        &self.spec.dir
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.spec.dir.join(format!("{name}.log"))
    }

    /// The operating-system process id of a worker, for tests that kill one.
    pub fn worker_pid(&self, name: &str) -> Option<u32> {
        self.lock().workers.get(name).and_then(|p| p.child.id())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Procs> {
        self.procs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the named workers' processes out of the table, waits for each to leave on its own
    /// (retired workers are closed by the scheduler), and kills those that do not.
    async fn remove(&self, names: Vec<String>) -> Result<(), BackendError> {
        let taken: Vec<(String, Child)> = {
            let mut procs = self.lock();
            names
                .iter()
                .filter_map(|n| procs.workers.remove(n).map(|p| (n.clone(), p.child)))
                .collect()
        };
        let waits = taken.into_iter().map(|(name, mut child)| async move {
            if tokio::time::timeout(EXIT_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::info!(worker = %name, "retired worker did not exit; killing it");
                let _ = child.kill().await;
            }
        });
        futures::future::join_all(waits).await;
        Ok(())
    }
}

/// How long a call to the scheduler's HTTP API may take (retirement waits for data to move).
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// The operator's HTTPS client of a local cluster's scheduler: the cluster's CA and the
/// operator's certificate, from the cluster's certificates directory.
fn operator_api(tls: &Path) -> Result<SchedulerApi, BackendError> {
    let action = "reach the scheduler's HTTP API over TLS";
    let read = |f: String| {
        let path = tls.join(f);
        std::fs::read_to_string(&path)
            .map_err(|e| failed(action, format!("cannot read {}: {e}", path.display())))
    };
    SchedulerApi::with_tls(
        &read(crate::tls::CA_FILE.into())?,
        &read(Role::Operator.cert_file())?,
        &read(Role::Operator.key_file())?,
        API_TIMEOUT,
    )
    .map_err(|e| failed(action, format!("{e} (certificates in {})", tls.display())))
}

/// The scheduler's command line (after the program), writing where it listens to `file`. With
/// its certificate it listens on `tls://` (and serves its HTTP API over HTTPS).
fn scheduler_args(spec: &LocalSpec, file: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = ["scheduler", "--host", "127.0.0.1", "--port", "0"]
        .into_iter()
        .chain(["--dashboard-address", "127.0.0.1:0", "--scheduler-file"])
        .map(Into::into)
        .collect();
    args.push(file.into());
    if let Some(tls) = &spec.tls {
        args.extend(tls_args(tls, Role::Scheduler));
    }
    args
}

fn spawn(mut cmd: Command, log: &Path, action: &str, bin: &Path) -> Result<Child, BackendError> {
    let out = std::fs::File::create(log)
        .map_err(|e| failed(action, format!("cannot create {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| failed(action, format!("cannot open {}: {e}", log.display())))?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(action, format!("cannot run {}: {e}", bin.display())))
}

impl Backend for LocalBackend {
    fn scheduler_url(&self) -> String {
        self.dashboard.clone()
    }

    async fn list_workers(&self, group: &str) -> Result<Vec<WorkerInstance>, BackendError> {
        let mut procs = self.lock();
        let mut gone = Vec::new();
        for (name, p) in procs.workers.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                gone.push((name.clone(), status));
            }
        }
        for (name, status) in gone {
            procs.workers.remove(&name);
            tracing::warn!(
                worker = %name,
                %status,
                log = %self.log_path(&name).display(),
                "worker process exited"
            );
        }
        Ok(procs
            .workers
            .iter()
            .filter(|(_, p)| p.group == group)
            .map(|(name, p)| WorkerInstance {
                name: name.clone(),
                created: p.created,
                state: InstanceState::Running,
            })
            .collect())
    }

    async fn add_workers(&self, group: &str, n: usize) -> Result<Vec<String>, BackendError> {
        let template = self.spec.groups.get(group).ok_or_else(|| {
            failed(
                format!("add workers to {group}"),
                super::no_group(&self.spec.cluster, group, self.spec.groups.keys()),
            )
        })?;
        let spill = self.spec.dir.join("spill");
        std::fs::create_dir_all(&spill)
            .map_err(|e| failed(format!("create {}", spill.display()), e))?;
        let mut added = Vec::with_capacity(n);
        for _ in 0..n {
            let name = {
                let mut procs = self.lock();
                procs.next += 1;
                format!("{}-{group}-worker-{}", self.spec.cluster, procs.next)
            };
            let program = self.spec.programs.get(group).unwrap_or(&self.spec.rask);
            let mut cmd = Command::new(program);
            cmd.arg("worker")
                .arg(&self.address)
                .args(["--name", &name])
                .args(template.args())
                .args(["--listen-host", "127.0.0.1", "--local-directory"])
                .arg(&spill)
                .args(
                    self.spec
                        .tls
                        .as_deref()
                        .map(|t| tls_args(t, Role::Worker))
                        .unwrap_or_default(),
                )
                .envs(template.env.iter().cloned())
                .env("DASK_SCHEDULER_ADDRESS", &self.address)
                .env("DASK_WORKER_NAME", &name)
                .env("DASK_CLUSTER_NAME", &self.spec.cluster);
            let child = spawn(
                cmd,
                &self.log_path(&name),
                &format!("start worker {name}"),
                program,
            )?;
            self.lock().workers.insert(
                name.clone(),
                Proc {
                    group: group.to_owned(),
                    created: now(),
                    child,
                },
            );
            added.push(name);
        }
        Ok(added)
    }

    async fn retire_workers(
        &self,
        group: &str,
        names: &[String],
    ) -> Result<Retirement, BackendError> {
        let ours: Vec<String> = {
            let procs = self.lock();
            names
                .iter()
                .filter(|n| procs.workers.get(*n).is_some_and(|p| p.group == group))
                .cloned()
                .collect()
        };
        retire_then_remove(&self.api, &self.dashboard, &ours, |retired| {
            self.remove(retired)
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), BackendError> {
        let (workers, scheduler) = {
            let mut procs = self.lock();
            (std::mem::take(&mut procs.workers), procs.scheduler.take())
        };
        for (_, mut p) in workers {
            let _ = p.child.kill().await;
        }
        if let Some(mut s) = scheduler {
            let _ = s.kill().await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(tls: Option<PathBuf>) -> LocalSpec {
        LocalSpec {
            cluster: "t".into(),
            rask: "rask".into(),
            scheduler_program: None,
            programs: BTreeMap::new(),
            dir: "/d".into(),
            scheduler_env: Vec::new(),
            groups: BTreeMap::new(),
            start_timeout: Duration::from_secs(1),
            tls,
        }
    }

    fn args(spec: &LocalSpec) -> Vec<String> {
        scheduler_args(spec, Path::new("/d/scheduler.json"))
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_scheduler_listens_on_tls_with_its_own_certificate() {
        assert_eq!(
            args(&spec(None)).join(" "),
            "scheduler --host 127.0.0.1 --port 0 --dashboard-address 127.0.0.1:0 \
             --scheduler-file /d/scheduler.json"
        );
        assert_eq!(
            args(&spec(Some("/d/tls".into()))).join(" "),
            "scheduler --host 127.0.0.1 --port 0 --dashboard-address 127.0.0.1:0 \
             --scheduler-file /d/scheduler.json --tls-ca-file /d/tls/ca.pem \
             --tls-cert /d/tls/scheduler.pem --tls-key /d/tls/scheduler-key.pem"
        );
    }
}
