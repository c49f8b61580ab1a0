//! What the cloud tests share: a real rask scheduler on this machine standing in for the scheduler
//! VM, real rask workers started for every running worker VM the cloud reports (named after the
//! VM, as user-data would start them), and the commands' options pointed at the scheduler.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rask::scheduler::server::{Scheduler, SchedulerConfig};
use rask::worker::{Worker, WorkerConfig};
use rask_operator::providers::commands::Options;
use tokio::task::JoinHandle;

/// The scheduler the VMs' user-data would start, here a local process-internal one.
pub struct LocalScheduler {
    pub scheduler: Scheduler,
    pub dashboard: String,
}

impl LocalScheduler {
    pub async fn start() -> LocalScheduler {
        let config = SchedulerConfig {
            dashboard: Some("127.0.0.1:0".parse().unwrap()),
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::start(config).await.unwrap();
        let dashboard = format!("http://{}", scheduler.dashboard_address().unwrap());
        LocalScheduler {
            scheduler,
            dashboard,
        }
    }

    /// Names of the workers registered with the scheduler, sorted.
    pub async fn workers(&self) -> Vec<String> {
        crate::env::registered_workers(&self.scheduler).await
    }
}

/// Runs a rask worker for every name `running` returns, and stops those whose VM is gone — what
/// cloud-init and the VM's deletion would do.
pub struct VmBodies {
    task: JoinHandle<()>,
}

impl VmBodies {
    pub fn start<F, Fut>(scheduler_address: String, running: F) -> VmBodies
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Vec<String>> + Send,
    {
        let task = tokio::spawn(async move {
            let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
            loop {
                let names = running().await;
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for n in gone {
                    if let Some(w) = workers.remove(&n) {
                        w.close().await;
                    }
                }
                for n in names {
                    if workers.contains_key(&n) {
                        continue;
                    }
                    let mut wc = WorkerConfig::new(scheduler_address.clone(), n.clone());
                    wc.listen_host = Some("127.0.0.1".into());
                    wc.memory_limit = 1 << 30;
                    match Worker::start(wc, rask::registry()).await {
                        Ok(w) => {
                            workers.insert(n, w);
                        }
                        Err(e) => eprintln!("worker for VM {n} did not start: {e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        VmBodies { task }
    }
}

impl Drop for VmBodies {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Options for the commands: state in `dir`, the scheduler's API at `dashboard`, fast polling.
pub fn options(dir: &Path, dashboard: &str) -> Options {
    let mut o = Options::from_env();
    o.state_dir = dir.join("state");
    let url = dashboard.to_owned();
    o.resolve_url = Some(Arc::new(move |_| Some(url.clone())));
    o.poll = Duration::from_millis(100);
    o.progress = Arc::new(|line| eprintln!("[cloud] {line}"));
    o
}

pub fn write_config(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// A free loopback port.
#[cfg(feature = "aws")]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
