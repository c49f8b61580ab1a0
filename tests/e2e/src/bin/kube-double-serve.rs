//! `kube-double-serve`: kube-double as a Kubernetes API server on loopback for real clients in
//! other processes (kubectl, dask-kubernetes' KubeCluster through kr8s, `rask-operator run`),
//! with a kubelet that runs Dask's image as the test virtualenv's commands and rask's image as
//! the `rask` binary. Writes a kubeconfig, prints `ready <url>` on stdout, and serves until
//! SIGTERM or Ctrl-C. tests/kubernetes (pytest) starts it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_double::{ApiServer, Kubelet, KubeletConfig, ProcessConfig};

#[derive(Parser)]
#[command(name = "kube-double-serve", about)]
struct Args {
    /// Where to write the kubeconfig that points at the server.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Where to listen (port 0 picks one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// CRD files (YAML, several documents each) to install instead of rask's own: e.g.
    /// dask-kubernetes' CRDs, to test an upgrade from them.
    #[arg(long)]
    crds: Vec<PathBuf>,
    /// Run pods of Dask's image (ghcr.io/dask/dask) as commands of this directory (a
    /// virtualenv's bin/ with `dask` and `python`).
    #[arg(long)]
    dask_bin_dir: Option<PathBuf>,
    /// Run pods of rask's image (rask-dev/rask-worker) as this `rask` binary.
    #[arg(long)]
    rask_bin: Option<PathBuf>,
    /// The kubelet's first CrashLoopBackOff wait, in milliseconds (Kubernetes': 10000).
    #[arg(long, default_value_t = 10_000)]
    restart_backoff_ms: u64,
}

fn read_crds(paths: &[PathBuf]) -> Result<Vec<CustomResourceDefinition>, String> {
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = <serde_json::Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if value.is_null() {
                continue;
            }
            out.push(
                serde_json::from_value(value)
                    .map_err(|e| format!("{}: not a CRD: {e}", path.display()))?,
            );
        }
    }
    Ok(out)
}

fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-double\n  cluster:\n    server: {url}\n\
         contexts:\n- name: kube-double\n  context:\n    cluster: kube-double\n    user: tester\n    namespace: default\n\
         current-context: kube-double\nusers:\n- name: tester\n  user:\n    token: kube-double\n"
    )
}

async fn serve(args: Args) -> Result<(), String> {
    let api = ApiServer::new();
    let crds = if args.crds.is_empty() {
        rask_operator::crd::all()
    } else {
        read_crds(&args.crds)?
    };
    for crd in crds {
        api.install_crd(crd)
            .map_err(|e| format!("cannot install a CRD: {e}"))?;
    }
    let mut processes: Vec<ProcessConfig> = Vec::new();
    if let Some(dir) = args.dask_bin_dir {
        processes.push(rask_e2e::dask_processes(dir));
    }
    if let Some(bin) = args.rask_bin {
        processes.push(
            ProcessConfig::new(rask_e2e::WORKER_IMAGE, bin, rask_e2e::ENTRYPOINT)
                .bind_args(rask_e2e::bind_rask_args)
                .env("RUST_LOG", "info"),
        );
    }
    let kubelet = Kubelet::start(
        &api,
        KubeletConfig {
            processes,
            start_delay: Duration::ZERO,
            restart_backoff: Duration::from_millis(args.restart_backoff_ms),
            ..KubeletConfig::default()
        },
    );
    let (addr, task) = api
        .serve_http(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let url = format!("http://{addr}");
    std::fs::write(&args.kubeconfig, kubeconfig(&url))
        .map_err(|e| format!("cannot write {}: {e}", args.kubeconfig.display()))?;
    println!("ready {url}");
    shutdown().await;
    task.abort();
    drop(kubelet);
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
