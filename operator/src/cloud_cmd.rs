//! The cloud cluster subcommands of `rask-operator` (`scale`, `status`, `logs`, `down`, `sweep`,
//! `autoscale`) and `up` for files with a top-level `provider:` key: argument parsing and printing
//! around [`rask_operator::cloud::cli`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rask_operator::providers::ProviderError;
use rask_operator::providers::commands::{Options, vm as cli};

#[derive(Subcommand)]
pub enum CloudCommand {
    /// Set the number of workers of a cloud cluster: new VMs are waited for until their workers
    /// joined the scheduler; removed ones are retired through the scheduler first.
    Scale {
        /// The cluster's name (the config's `name:`).
        name: String,
        /// Workers wanted in the group.
        workers: usize,
        /// Worker group (default: `default`, the config's `worker:`).
        #[arg(long)]
        group: Option<String>,
        /// When scaling down, retire these worker VMs instead of the newest (repeatable).
        #[arg(long = "retire")]
        retire: Vec<String>,
        /// The cluster's config file, when `up` did not run on this machine.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show a cloud cluster's VMs and whether each worker has joined the scheduler.
    Status {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the boot (serial console) log of the scheduler VM, or of the VM named.
    Logs {
        name: String,
        /// A VM name or id (default: the scheduler's).
        vm: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete every resource tagged with the cluster.
    Down {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete resources tagged with a cluster that is not live (no running scheduler VM marked
    /// ready), in the places of the saved clusters or of `--config`.
    Sweep {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Spare clusters with resources younger than this (an `up` may still be running).
        #[arg(long, default_value_t = 1800)]
        grace_seconds: u64,
    },
    /// Run a cloud cluster's autoscaler (what the scheduler VM runs when `autoscaling` is set).
    Autoscale {
        config: PathBuf,
        /// The scheduler's HTTP API.
        #[arg(long, default_value = "http://127.0.0.1:8787")]
        scheduler_url: String,
        /// Seconds between looks at the scheduler.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

fn finish(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn text(e: ProviderError) -> String {
    e.to_string()
}

/// Whether `file` describes a cloud cluster (a top-level `provider:` key).
pub fn is_cloud_file(file: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(rask_operator::providers::config::names_provider(&text))
}

/// `up FILE` for a cloud config. Interrupted, it says how to delete what was made.
pub fn up(file: &Path, signal: impl Future<Output = ()>) -> ExitCode {
    finish(runtime().and_then(|rt| {
        rt.block_on(async {
            let opts = Options::from_env();
            tokio::select! {
                r = cli::up(file, &opts) => {
                    let report = r.map_err(text)?;
                    println!("{report}");
                    Ok(())
                }
                _ = signal => Err(format!(
                    "interrupted: what was created so far stays; delete it with `rask-operator down NAME` \
                     (the config is saved in {}) or `rask-operator sweep`",
                    opts.state_dir.display()
                )),
            }
        })
    }))
}

pub fn run(cmd: CloudCommand, signal: impl Future<Output = ()> + Send + 'static) -> ExitCode {
    let opts = Options::from_env();
    finish(runtime().and_then(|rt| {
        rt.block_on(async move {
            match cmd {
                CloudCommand::Scale {
                    name,
                    workers,
                    group,
                    retire,
                    config,
                } => {
                    let r = cli::scale(&name, workers, group.as_deref(), &retire, config.as_deref(), &opts)
                        .await
                        .map_err(text)?;
                    for w in &r.added {
                        println!("added {w} (joined the scheduler)");
                    }
                    for w in &r.retired.removed {
                        println!("retired and deleted {w}");
                    }
                    for w in &r.retired.kept {
                        println!("kept {w}: the scheduler would not retire it (its results have nowhere to go)");
                    }
                    if r.added.is_empty() && r.retired.removed.is_empty() && r.retired.kept.is_empty() {
                        println!("{name} already has {workers} workers");
                    }
                    Ok(())
                }
                CloudCommand::Status { name, config } => {
                    print!("{}", cli::status(&name, config.as_deref(), &opts).await.map_err(text)?);
                    Ok(())
                }
                CloudCommand::Logs { name, vm, config } => {
                    print!(
                        "{}",
                        cli::logs(&name, vm.as_deref(), config.as_deref(), &opts)
                            .await
                            .map_err(text)?
                    );
                    Ok(())
                }
                CloudCommand::Down { name, config } => {
                    let deleted = cli::down(&name, config.as_deref(), &opts).await.map_err(text)?;
                    for r in &deleted {
                        println!("deleted {r}");
                    }
                    println!("{name}: {} resources deleted", deleted.len());
                    Ok(())
                }
                CloudCommand::Sweep {
                    config,
                    grace_seconds,
                } => {
                    let swept = cli::sweep(config.as_deref(), Duration::from_secs(grace_seconds), &opts)
                        .await
                        .map_err(text)?;
                    if swept.is_empty() {
                        println!("nothing tagged with a rask cluster");
                    }
                    for s in swept {
                        let what: Vec<String> = s.resources.iter().map(|r| r.to_string()).collect();
                        let verb = if s.deleted { "deleted" } else { "kept" };
                        println!("{}: {verb} ({}): {}", s.cluster, s.why, what.join(", "));
                    }
                    Ok(())
                }
                CloudCommand::Autoscale {
                    config,
                    scheduler_url,
                    interval,
                } => {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    tokio::spawn(async move {
                        signal.await;
                        let _ = tx.send(true);
                    });
                    let interval = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
                    cli::autoscale(&config, &scheduler_url, interval, &opts, rx)
                        .await
                        .map_err(text)
                }
            }
        })
    }))
}
