//! Operator benchmark: the `rask-operator` binary against kube-double served over
//! HTTP, with its simulated kubelet. Prints one JSON line per scenario:
//!
//! - `converge_100_workers`: a DaskCluster with 100 workers applied → all worker pods created and
//!   the cluster `Running` with 100 ready workers (target ≤ 1 s).
//! - `rss_100_clusters`: 100 DaskClusters of 2 workers each reconciled → the operator process's
//!   resident memory (target ≤ 20 MiB).
//!
//! `cargo bench -p rask-operator --bench operator` builds the binary as the operator image does
//! (`cargo build --profile operator`) first; `OPERATOR_PROFILE=release` measures the release
//! build instead.

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

/// The process's resident memory by where it lives, in MiB, from `/proc/{pid}/smaps`:
///
/// - `binary_code`: the executable's code;
/// - `binary_read_only`: its other file-backed pages: read-only data, unwind tables, and the
///   relocation table the dynamic loader reads at start;
/// - `binary_written`: its pages the process wrote (the loader's relocations, statics), now
///   anonymous copies;
/// - `heap_and_anonymous`, `shared_libraries` (libc and the loader) and `stacks`.
fn rss_by_mapping(pid: u32, binary: &std::path::Path) -> serde_json::Value {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let binary = std::fs::canonicalize(binary).unwrap_or_else(|_| binary.to_path_buf());
    let binary = binary.to_string_lossy();
    let mut kib = std::collections::BTreeMap::<&str, u64>::new();
    // Where the current mapping's file-backed and anonymous pages go.
    let mut region = ("", "");
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        let value = |mut f: std::str::SplitWhitespace| f.next().and_then(|v| v.parse().ok());
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            region = if path == binary {
                let file = if perms.contains('x') {
                    "binary_code"
                } else {
                    "binary_read_only"
                };
                (file, "binary_written")
            } else if path.starts_with('/') {
                ("shared_libraries", "shared_libraries")
            } else if path.starts_with("[stack") {
                ("stacks", "stacks")
            } else {
                ("heap_and_anonymous", "heap_and_anonymous")
            };
        } else if first == "Rss:" {
            *kib.entry(region.0).or_default() += value(fields).unwrap_or(0);
        } else if first == "Anonymous:" {
            // Counted in Rss above: move it from the file's share to the written one.
            let anon = value(fields).unwrap_or(0);
            let file = kib.entry(region.0).or_default();
            *file = file.saturating_sub(anon);
            *kib.entry(region.1).or_default() += anon;
        }
    }
    kib.into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                json!((v as f64 / 1024.0 * 100.0).round() / 100.0),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
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
    // The image's build (`[profile.operator]`) unless asked for another, e.g. `release`.
    let profile = std::env::var("OPERATOR_PROFILE").unwrap_or_else(|_| "operator".into());
    let binary = common::built_binary("rask-operator", &profile);
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
            "profile": profile,
            "clusters": 101,
            "all_running": all,
            "reconciled_in_s": settle.as_secs_f64(),
            "operator_rss_mib": rss_kib(pid, "VmRSS:") as f64 / 1024.0,
            "operator_rss_anon_mib": rss_kib(pid, "RssAnon:") as f64 / 1024.0,
            "operator_rss_file_mib": rss_kib(pid, "RssFile:") as f64 / 1024.0,
            "operator_peak_rss_mib": rss_kib(pid, "VmHWM:") as f64 / 1024.0,
            "operator_idle_rss_mib": idle_rss as f64 / 1024.0,
            "operator_rss_by_mapping_mib": rss_by_mapping(pid, &binary),
            "target_rss_mib": 20.0
        })
    );
}
