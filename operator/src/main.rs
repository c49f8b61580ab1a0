//! `rask-operator`: the controller and the cluster commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cloud_cmd;

/// jemalloc, built to purge freed pages at once (`JEMALLOC_SYS_WITH_MALLOC_CONF` in
/// `.cargo/config.toml`): the operator's RSS after a burst of reconciles is then its live heap,
/// not what glibc's malloc kept. Only this binary: the engine keeps the system allocator.
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "rask-operator",
    version,
    about = "Kubernetes operator for Dask's custom resources, and clusters on cloud VMs and batch queues"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers (in-cluster config, or the current kubeconfig context).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long)]
        namespace: Option<String>,
        /// Where to serve /health and /metrics.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_address: std::net::SocketAddr,
        /// Log JSON lines.
        #[arg(long)]
        log_json: bool,
        /// Where schedulers' HTTP API is reached, `{cluster}` and `{namespace}` filled in. The
        /// default is the scheduler Service's in-cluster name. An operator outside the cluster
        /// can go through the API server's service proxy, e.g. with `kubectl proxy --port 8001`:
        /// http://127.0.0.1:8001/api/v1/namespaces/{namespace}/services/{cluster}-scheduler:8787/proxy
        #[arg(long, default_value = rask_operator::names::SCHEDULER_URL_TEMPLATE)]
        scheduler_url: String,
        /// Have rask pods use their cluster's certificates (the default): mounted from the
        /// Secret NAME-tls, Dask's TLS settings, `tls://` addresses, the scheduler's API over
        /// HTTPS. The Secret is made either way (unless the DaskCluster's
        /// `kubernetes.dask.org/tls` annotation is "false", which also means plain TCP).
        /// `--cluster-tls=false` or RASK_CLUSTER_TLS=false turns it off, as does --no-cluster-tls.
        #[arg(
            long,
            env = "RASK_CLUSTER_TLS",
            value_name = "BOOL",
            num_args = 0..=1,
            require_equals = true,
            default_value_t = true,
            default_missing_value = "true",
            value_parser = clap::builder::BoolishValueParser::new(),
        )]
        cluster_tls: bool,
        /// Rask pods use plain TCP and the scheduler's API plain HTTP, as Dask's pods do (wins
        /// over --cluster-tls and RASK_CLUSTER_TLS).
        #[arg(long)]
        no_cluster_tls: bool,
    },
    /// Start the cluster a file describes. A cluster config (a top-level `provider:` key: aws,
    /// azure on VMs; slurm, sge as batch jobs) starts it and prints its scheduler address and
    /// dashboard URL. A manifest of
    /// Dask resources runs its DaskCluster or DaskJob on this machine (the local backend): the
    /// scheduler and workers as `rask` processes, scaled by the file's DaskAutoscalers; a DaskJob
    /// ends with its runner, a DaskCluster at Ctrl-C or its idleTimeout.
    Up {
        /// A cluster config, or a YAML file of Dask resources (as for `kubectl apply -f`).
        file: std::path::PathBuf,
        /// The `rask` binary to start (default: $RASK_BIN, beside this binary, or on PATH).
        #[arg(long)]
        rask_bin: Option<std::path::PathBuf>,
        /// Where the processes' logs and spill files go (default: a new temporary directory).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// Seconds between the autoscalers' looks at the scheduler.
        #[arg(long, default_value_t = 1.0)]
        poll: f64,
        /// Local backend: show no progress. Otherwise stderr shows a spinner or bar for the step
        /// under way (scheduler starting, workers registering, job running) on a terminal, and
        /// plain timestamped lines when it is not one.
        #[arg(long)]
        no_progress: bool,
        /// Local clusters: plain TCP. By default the scheduler, workers and job runner use the
        /// cluster's certificates (DIR/tls, made unless the file's `kubernetes.dask.org/tls` is
        /// "false", which also means plain TCP) and the scheduler listens on tls://.
        #[arg(long)]
        no_tls: bool,
        /// Local clusters: use the cluster's certificates. The default; accepted so that
        /// scripts written for earlier versions keep working.
        #[arg(long, conflicts_with = "no_tls")]
        tls: bool,
    },
    /// Print the CustomResourceDefinitions as YAML, or write them as the files of `crds/`.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
        /// Also write the Markdown field reference to this file (docs/crd-reference.md).
        #[arg(long)]
        reference: Option<std::path::PathBuf>,
    },
    #[command(flatten)]
    Cloud(cloud_cmd::CloudCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            namespace,
            metrics_address,
            log_json,
            scheduler_url,
            cluster_tls,
            no_cluster_tls,
        } => {
            let cluster_tls = cluster_tls && !no_cluster_tls;
            init_logging(log_json);
            // One thread: the controllers wait on the API server, not the CPU, and every
            // extra thread brings its own malloc arena (memory freed there is kept there).
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(namespace, metrics_address, scheduler_url, cluster_tls)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Up {
            file,
            rask_bin,
            dir,
            poll,
            no_progress,
            no_tls,
            tls,
        } => {
            match cloud_cmd::is_cloud_file(&file) {
                Ok(true) if tls || no_tls => {
                    eprintln!(
                        "error: --{} is for local clusters (a file of Dask resources); {} is a cluster config",
                        if tls { "tls" } else { "no-tls" },
                        file.display()
                    );
                    return ExitCode::FAILURE;
                }
                Ok(true) => {
                    init_cli_logging();
                    return cloud_cmd::up(&file, shutdown_signal());
                }
                Ok(false) => {}
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            init_logging(false);
            let opts = rask_operator::local::UpOptions {
                rask: rask_bin,
                dir,
                poll: std::time::Duration::from_secs_f64(poll.clamp(0.05, 3600.0)),
                progress: rask_operator::local::ProgressMode::detect(no_progress),
                tls: !no_tls,
                ..Default::default()
            };
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
            let outcome = runtime.block_on(async {
                let plan = rask_operator::local::load(&file)?;
                rask_operator::local::up(plan, opts, shutdown_signal()).await
            });
            match outcome {
                Ok(report) if report.succeeded => ExitCode::SUCCESS,
                Ok(report) => ExitCode::from(
                    report
                        .exit_code
                        .and_then(|c| u8::try_from(c).ok())
                        .filter(|c| *c != 0)
                        .unwrap_or(1),
                ),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Cloud(cmd) => {
            if matches!(
                cmd,
                cloud_cmd::CloudCommand::Autoscale { .. } | cloud_cmd::CloudCommand::Keep { .. }
            ) {
                init_logging(false);
            } else {
                init_cli_logging();
            }
            cloud_cmd::run(cmd, shutdown_signal())
        }
        Command::Crds { out_dir, reference } => match crds(out_dir, reference) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn crds(
    out_dir: Option<std::path::PathBuf>,
    reference: Option<std::path::PathBuf>,
) -> Result<(), String> {
    let render = |e: serde_yaml::Error| format!("cannot render the CRDs: {e}");
    if let Some(path) = reference {
        let md = rask_operator::crd::reference::markdown(&rask_operator::crd::all());
        std::fs::write(&path, md).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
        if out_dir.is_none() {
            return Ok(());
        }
    }
    let Some(dir) = out_dir else {
        print!("{}", rask_operator::crd::all_yaml().map_err(render)?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (file, content) in rask_operator::crd::files().map_err(render)? {
        let path = dir.join(file);
        std::fs::write(&path, content)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    // Colours only for a person at a terminal, not in files and log pipelines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    log_panics();
}

/// The provider commands' log: warnings only unless `RUST_LOG` says more (`RUST_LOG=debug` shows
/// the full errors of cloud SDKs and batch commands that the messages summarise).
fn init_cli_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// Reports a panic through the log as well (a JSON line with `--log-json`, where log pipelines
/// look), then as Rust does on stderr. The operator image aborts on panic (Cargo.toml's
/// `operator` profile): the process ends and Kubernetes restarts it.
fn log_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panicked; the process exits");
        default_hook(info);
    }));
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(
    namespace: Option<String>,
    metrics_address: std::net::SocketAddr,
    scheduler_url: String,
    cluster_tls: bool,
) -> Result<(), String> {
    use std::sync::Arc;

    use rask_operator::context::Context;
    use rask_operator::metrics::Metrics;
    use rask_operator::run::{Scope, controllers, serve_http};

    let client = kube::Client::try_default().await.map_err(|e| {
        format!("cannot reach the Kubernetes API (in-cluster config or kubeconfig): {e}")
    })?;
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let (bound, server) = serve_http(metrics_address, metrics.clone(), stopped())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(address = %bound, "serving /health and /metrics");
    let scope = match namespace {
        Some(ns) => Scope::Namespace(ns),
        None => Scope::AllNamespaces,
    };
    tracing::info!(?scope, "starting controllers");
    let template = scheduler_url;
    let url = move |cluster: &str, namespace: &str| {
        rask_operator::names::scheduler_url(&template, cluster, namespace)
    };
    let ctx = Arc::new(
        Context::new(client, metrics)
            .with_scheduler_url(Arc::new(url))
            .with_cluster_tls(cluster_tls),
    );
    let signal = async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    };
    controllers(ctx, scope, signal).await;
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use clap::Parser;

    /// `run`'s TLS setting from its command line (RASK_CLUSTER_TLS unset).
    fn cluster_tls(args: &[&str]) -> Result<bool, String> {
        let argv = ["rask-operator", "run"].iter().chain(args);
        match super::Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .command
        {
            super::Command::Run {
                cluster_tls,
                no_cluster_tls,
                ..
            } => Ok(cluster_tls && !no_cluster_tls),
            _ => Err("not run".into()),
        }
    }

    #[test]
    fn cluster_tls_is_on_unless_turned_off() {
        if std::env::var_os("RASK_CLUSTER_TLS").is_some() {
            return; // the variable decides the default: the cases below assume it unset
        }
        assert_eq!(cluster_tls(&[]), Ok(true));
        assert_eq!(cluster_tls(&["--cluster-tls"]), Ok(true));
        assert_eq!(cluster_tls(&["--cluster-tls=true"]), Ok(true));
        assert_eq!(cluster_tls(&["--cluster-tls=false"]), Ok(false));
        assert_eq!(cluster_tls(&["--cluster-tls=off"]), Ok(false));
        assert_eq!(cluster_tls(&["--no-cluster-tls"]), Ok(false));
        assert_eq!(
            cluster_tls(&["--cluster-tls", "--no-cluster-tls"]),
            Ok(false)
        );
        let err = cluster_tls(&["--cluster-tls=maybe"]).unwrap_err();
        assert!(err.contains("maybe"), "{err}");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_panic_is_logged_as_a_json_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        super::log_panics();
        let caught = std::panic::catch_unwind(|| panic!("cache out of sync"));
        let _ = std::panic::take_hook();
        assert!(caught.is_err());
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "ERROR", "{text}");
        assert_eq!(line["fields"]["message"], "panicked; the process exits");
        let panic = line["fields"]["panic"].as_str().unwrap();
        assert!(panic.contains("cache out of sync"), "{panic}");
        assert!(panic.contains("main.rs"), "the location: {panic}");
    }
}
