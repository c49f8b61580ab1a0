//! `kube-double-serve`: kube-double as a Kubernetes API server on loopback for real clients in
//! other processes (kubectl, dask-kubernetes' KubeCluster through kr8s, `rask-operator run`),
//! with a kubelet that runs Dask's image as the test virtualenv's commands and rask's image as
//! the `rask` binary. Writes a kubeconfig, prints `ready <url>` on stdout, and serves until
//! SIGTERM or Ctrl-C. tests/dropin (pytest) starts it.
//!
//! With `--rbac-from` it enforces RBAC: the file's ServiceAccounts, Roles, ClusterRoles and
//! bindings (e.g. `helm template` of charts/rask-operator) are created, the kubeconfig's own user
//! stays the administrator, and `--service-account NS/NAME` writes a second kubeconfig
//! (`--service-account-kubeconfig`) whose token is that ServiceAccount's, for the operator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_double::{ApiServer, Authorization, Kubelet, KubeletConfig, Options, ProcessConfig};

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
    /// Enforce RBAC, with the ServiceAccounts, Roles, ClusterRoles, RoleBindings and
    /// ClusterRoleBindings of this YAML file (other kinds in it are ignored).
    #[arg(long)]
    rbac_from: Option<PathBuf>,
    /// A ServiceAccount (NAMESPACE/NAME) to write a kubeconfig for.
    #[arg(long, requires = "service_account_kubeconfig")]
    service_account: Option<String>,
    /// Where to write the ServiceAccount's kubeconfig.
    #[arg(long, requires = "service_account")]
    service_account_kubeconfig: Option<PathBuf>,
}

/// Creates the RBAC objects and ServiceAccounts of a YAML file through the administrator's
/// client, as `helm install` would; returns how many.
async fn create_rbac(api: &ApiServer, path: &PathBuf) -> Result<usize, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let objects =
        rask_e2e::chart::parse_yaml(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    rask_e2e::chart::create(&api.client(), &objects)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))
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

/// A kubeconfig for `url` whose user presents `token` (`kube-double`: the administrator).
fn kubeconfig(url: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kube-double\n  cluster:\n    server: {url}\n\
         contexts:\n- name: kube-double\n  context:\n    cluster: kube-double\n    user: tester\n    namespace: default\n\
         current-context: kube-double\nusers:\n- name: tester\n  user:\n    token: {token}\n"
    )
}

async fn serve(args: Args) -> Result<(), String> {
    let authorization = if args.rbac_from.is_some() {
        Authorization::Rbac
    } else {
        Authorization::AlwaysAllow
    };
    let api = ApiServer::with_options(Options {
        authorization,
        ..Options::default()
    });
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
    // With RBAC, the kubeconfig's tools (kubectl, kr8s) get the insecure port: kubectl sends no
    // token over plain HTTP, and they stand for the cluster's administrator. The ServiceAccount's
    // kubeconfig points at a port where a request without a token is anonymous, so a client
    // under test that dropped its token would be refused, not trusted.
    let listened = if args.rbac_from.is_some() {
        api.serve_insecure_port(args.listen).await
    } else {
        api.serve_http(args.listen).await
    };
    let (addr, task) = listened.map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let url = format!("http://{addr}");
    if let Some(path) = &args.rbac_from {
        create_rbac(&api, path).await?;
    }
    let mut authenticated = None;
    if let (Some(account), Some(path)) = (&args.service_account, &args.service_account_kubeconfig) {
        let (ns, name) = account
            .split_once('/')
            .ok_or_else(|| format!("--service-account {account:?}: NAMESPACE/NAME"))?;
        let (addr, task) = api
            .serve_http(std::net::SocketAddr::new(args.listen.ip(), 0))
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen.ip()))?;
        authenticated = Some(task);
        let token = api.service_account_token(ns, name);
        std::fs::write(path, kubeconfig(&format!("http://{addr}"), &token))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    std::fs::write(&args.kubeconfig, kubeconfig(&url, "kube-double"))
        .map_err(|e| format!("cannot write {}: {e}", args.kubeconfig.display()))?;
    println!("ready {url}");
    shutdown().await;
    task.abort();
    if let Some(task) = authenticated {
        task.abort();
    }
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
