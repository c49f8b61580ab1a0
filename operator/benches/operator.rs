//! Operator benchmark: the `rask-operator` binary (release build) against kube-double served over
//! HTTP, with its simulated kubelet. Prints one JSON line per scenario:
//!
//! - `converge_100_workers`: a DaskCluster with 100 workers applied → all worker pods created and
//!   the cluster `Running` with 100 ready workers (target ≤ 1 s).
//! - `rss_100_clusters`: 100 DaskClusters of 2 workers each reconciled → the operator process's
//!   resident memory (target ≤ 20 MiB).
//!
//! `cargo bench -p rask-operator --bench operator` (builds the release binary first).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark that cannot run should stop loudly

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube_double::{ApiServer, Kubelet, KubeletConfig};
use rask_operator::crd::{ClusterPhase, DaskCluster};
use serde_json::json;

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn cluster(name: &str, replicas: i32) -> DaskCluster {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/rask-cluster.yaml");
    let mut c: DaskCluster = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    c.metadata.name = Some(name.into());
    c.spec.worker.replicas = replicas;
    // No scheduler answers here: leave out the idle check (it would only time out).
    c.spec.idle_timeout = None;
    c.spec.scheduler.service.selector = None;
    c
}

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_running(
    clusters: &Api<DaskCluster>,
    name: &str,
    workers: i32,
    timeout: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(c) = clusters.get(name).await
            && c.status.as_ref().is_some_and(|s| {
                s.phase == Some(ClusterPhase::Running) && s.ready_workers == workers
            })
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    None
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = common::release_binary("rask-operator");
    let api = ApiServer::new();
    for crd in rask_operator::crd::all() {
        api.install_crd(crd).unwrap();
    }
    let _kubelet = Kubelet::start(
        &api,
        KubeletConfig {
            start_delay: Duration::from_millis(1),
            ..KubeletConfig::default()
        },
    );
    let (addr, _server) = api
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster: {{server: 'http://{addr}'}}\nusers:\n- name: bench\n  user: {{}}\ncontexts:\n- name: double\n  context: {{cluster: double, user: bench, namespace: default}}\ncurrent-context: double\n"
        ),
    )
    .unwrap();
    let child = Command::new(&binary)
        .args(["run", "--metrics-address", "127.0.0.1:0"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("rask-operator starts");
    let operator = Operator(child);
    let pid = operator.0.id();
    let client = api.client();
    let clusters: Api<DaskCluster> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Let the operator connect and start its watches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = rss_kib(pid, "VmRSS:");

    // 1. One cluster of 100 workers.
    let t0 = Instant::now();
    clusters
        .create(&PostParams::default(), &cluster("big", 100))
        .await
        .unwrap();
    let converged = wait_running(&clusters, "big", 100, Duration::from_secs(60)).await;
    let elapsed = t0.elapsed();
    let worker_pods = pods
        .list(&ListParams::default().labels("dask.org/cluster-name=big,dask.org/component=worker"))
        .await
        .unwrap()
        .items
        .len();
    println!(
        "{}",
        json!({
            "bench": "converge_100_workers",
            "seconds": converged.map(|d| d.as_secs_f64()),
            "timed_out_after_s": converged.is_none().then_some(elapsed.as_secs_f64()),
            "worker_pods": worker_pods,
            "kubelet_start_delay_ms": 1,
            "target_s": 1.0,
            "note": "from applying the DaskCluster to its status saying Running with 100 ready workers"
        })
    );

    // 2. 100 clusters of 2 workers.
    let t1 = Instant::now();
    for i in 0..100 {
        clusters
            .create(&PostParams::default(), &cluster(&format!("c{i:03}"), 2))
            .await
            .unwrap();
    }
    let mut all = true;
    for i in 0..100 {
        all &= wait_running(&clusters, &format!("c{i:03}"), 2, Duration::from_secs(120))
            .await
            .is_some();
    }
    let settle = t1.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!(
        "{}",
        json!({
            "bench": "rss_100_clusters",
            "clusters": 101,
            "all_running": all,
            "reconciled_in_s": settle.as_secs_f64(),
            "operator_rss_mib": rss_kib(pid, "VmRSS:") as f64 / 1024.0,
            "operator_rss_anon_mib": rss_kib(pid, "RssAnon:") as f64 / 1024.0,
            "operator_rss_file_mib": rss_kib(pid, "RssFile:") as f64 / 1024.0,
            "operator_peak_rss_mib": rss_kib(pid, "VmHWM:") as f64 / 1024.0,
            "operator_idle_rss_mib": idle_rss as f64 / 1024.0,
            "target_rss_mib": 20.0
        })
    );
}
