//! The provider cluster subcommands of `rask-operator` (`scale`, `status`, `logs`, `down`,
//! `sweep`, `autoscale`, `keep`, `job-script`) and `up` for files with a top-level `provider:`
//! key: argument parsing and printing around [`rask_operator::providers::commands`], which
//! holds one function per command for VM clusters and one for batch clusters.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use rask_operator::providers::ProviderError;
use rask_operator::providers::batch::JobRole;
use rask_operator::providers::commands::{self, Kind, Options, ScaleReport, batch, vm as cli};

#[derive(Subcommand)]
pub enum CloudCommand {
    /// Set the number of workers of a VM or batch cluster: new VMs or jobs are waited for until
    /// their workers joined the scheduler; removed ones are retired through the scheduler first.
    Scale {
        /// The cluster's name (the config's `name:`).
        name: String,
        /// Workers wanted in the group.
        workers: usize,
        /// Worker group (default: `default`, the config's `worker:`).
        #[arg(long)]
        group: Option<String>,
        /// When scaling down, retire these workers instead of the newest (repeatable).
        #[arg(long = "retire")]
        retire: Vec<String>,
        /// The cluster's config file, when `up` did not run on this machine.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Show a cluster's VMs or jobs (a pending job with the batch system's reason) and whether
    /// each worker has joined the scheduler.
    Status {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the boot (serial console) log of the scheduler VM or of the VM named; on a batch
    /// queue the scheduler's log, `keeper`'s, or a job's output files.
    Logs {
        name: String,
        /// A VM name or id; a job id, job name, worker name or `keeper` (default: the
        /// scheduler's).
        vm: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete every resource tagged with the cluster, or cancel every job of it.
    Down {
        name: String,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Delete resources tagged with a cluster that is not live (no running scheduler VM marked
    /// ready), and cancel the jobs of clusters whose scheduler does not answer, in the places and
    /// batch systems of the saved clusters or of `--config`.
    Sweep {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Spare clusters with resources or jobs younger than this (an `up` may still be
        /// running).
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
        /// With TLS: the directory holding the cluster's CA and the operator's certificate and
        /// key (`vm-tls fetch --role operator` puts them there).
        #[arg(long)]
        tls_dir: Option<PathBuf>,
    },
    /// A VM cluster's certificates in its cloud's secret store.
    VmTls {
        #[command(subcommand)]
        cmd: VmTlsCommand,
    },
    /// Keep a batch cluster (what `up` leaves running in the background): retire workers before
    /// their walltime and replace them, report jobs pending too long, autoscale, and cancel the
    /// jobs if the scheduler is gone.
    Keep {
        name: String,
        /// Seconds between looks.
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
    /// Print the job script `up` submits for a worker of a SLURM, SGE or PBS cluster (or, with
    /// --scheduler-job, for its scheduler), like dask-jobqueue's `job_script()`.
    JobScript {
        /// The cluster's config file (`provider: slurm`, `sge` or `pbs`).
        config: PathBuf,
        /// Worker group (default: `default`, the config's `worker:`).
        #[arg(long)]
        group: Option<String>,
        /// The job's name (default: CLUSTER-GROUP-XXXXXXXX, as `up` names jobs).
        #[arg(long)]
        name: Option<String>,
        /// The scheduler's address (default: the running cluster's, else
        /// scheduler_options.host:port).
        #[arg(long)]
        scheduler: Option<String>,
        /// The scheduler's job script instead (scheduler_options.location: job).
        #[arg(long)]
        scheduler_job: bool,
    },
}

#[derive(Subcommand)]
pub enum VmTlsCommand {
    /// Write the CA and the certificates and keys of the roles named, from the cluster's secret
    /// store, into a directory (0700; keys 0600): what each VM runs at boot with its instance
    /// profile, and what a user runs on another machine than the one `up` ran on (`--role
    /// client`). No secret is given on the command line: only where the files are.
    Fetch {
        /// AWS: the cluster's region.
        #[arg(
            long,
            requires = "aws_ssm_prefix",
            conflicts_with = "azure_key_vault_url"
        )]
        aws_region: Option<String>,
        /// AWS: the cluster's SSM Parameter Store path, `/rask/CLUSTER/tls`.
        #[arg(long, requires = "aws_region")]
        aws_ssm_prefix: Option<String>,
        /// Azure: the cluster's Key Vault, `https://NAME.vault.azure.net`.
        #[arg(
            long,
            requires = "azure_identity",
            required_unless_present = "aws_region"
        )]
        azure_key_vault_url: Option<String>,
        /// Azure: the resource id of the user-assigned managed identity to read the vault with
        /// (the VM's instance metadata service gives its token).
        #[arg(long, requires = "azure_key_vault_url")]
        azure_identity: Option<String>,
        /// Azure: the instance metadata service (default `http://169.254.169.254`).
        #[arg(long, hide = true)]
        azure_imds_endpoint: Option<String>,
        /// scheduler, worker, operator or client (repeatable).
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Where to write the files.
        #[arg(long)]
        dir: PathBuf,
        /// UID:GID to give the directory and files to (when run as root for another user).
        #[arg(long)]
        owner: Option<String>,
        /// Wait this long for files not stored yet (the scheduler's are stored once its VM
        /// runs).
        #[arg(long, default_value_t = 0)]
        wait_seconds: u64,
    },
}

/// `UID:GID`, numbers.
fn parse_owner(s: &str) -> Result<(u32, u32), String> {
    s.split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| format!("--owner {s:?}: not UID:GID (numbers, e.g. 1000:1000)"))
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

/// Whether `file` describes a VM or batch cluster (a top-level `provider:` key).
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
            let up = async {
                match commands::kind_of_file(file)? {
                    Kind::Vm => cli::up(file, &opts).await.map(|r| r.to_string()),
                    Kind::Batch => batch::up(file, &opts).await.map(|r| r.to_string()),
                }
            };
            tokio::select! {
                r = up => {
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
                    let kind = commands::kind_of(&opts, &name, config.as_deref()).map_err(text)?;
                    let r: ScaleReport = match kind {
                        Kind::Vm => cli::scale(&name, workers, group.as_deref(), &retire, config.as_deref(), &opts).await,
                        Kind::Batch => batch::scale(&name, workers, group.as_deref(), &retire, config.as_deref(), &opts).await,
                    }
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
                    let kind = commands::kind_of(&opts, &name, config.as_deref()).map_err(text)?;
                    let out = match kind {
                        Kind::Vm => cli::status(&name, config.as_deref(), &opts).await.map(|s| s.to_string()),
                        Kind::Batch => batch::status(&name, config.as_deref(), &opts).await.map(|s| s.to_string()),
                    };
                    print!("{}", out.map_err(text)?);
                    Ok(())
                }
                CloudCommand::Logs { name, vm, config } => {
                    let kind = commands::kind_of(&opts, &name, config.as_deref()).map_err(text)?;
                    let out = match kind {
                        Kind::Vm => cli::logs(&name, vm.as_deref(), config.as_deref(), &opts).await,
                        Kind::Batch => batch::logs(&name, vm.as_deref(), config.as_deref(), &opts).await,
                    };
                    print!("{}", out.map_err(text)?);
                    Ok(())
                }
                CloudCommand::Down { name, config } => {
                    let kind = commands::kind_of(&opts, &name, config.as_deref()).map_err(text)?;
                    let deleted: Vec<String> = match kind {
                        Kind::Vm => cli::down(&name, config.as_deref(), &opts)
                            .await
                            .map(|d| d.iter().map(|r| r.to_string()).collect()),
                        Kind::Batch => batch::down(&name, config.as_deref(), &opts).await,
                    }
                    .map_err(text)?;
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
                    let grace = Duration::from_secs(grace_seconds);
                    // (cluster, deleted, why, what) for VMs and for jobs alike.
                    let mut lines: Vec<(String, bool, String, Vec<String>)> = Vec::new();
                    let kind = config.as_deref().map(commands::kind_of_file).transpose().map_err(text)?;
                    if kind != Some(Kind::Batch) {
                        for s in cli::sweep(config.as_deref(), grace, &opts).await.map_err(text)? {
                            let what = s.resources.iter().map(|r| r.to_string()).collect();
                            lines.push((s.cluster, s.deleted, s.why, what));
                        }
                    }
                    if kind != Some(Kind::Vm) {
                        for s in batch::sweep(config.as_deref(), grace, &opts).await.map_err(text)? {
                            lines.push((s.cluster, s.deleted, s.why, s.jobs));
                        }
                    }
                    if lines.is_empty() {
                        println!("nothing tagged with a rask cluster");
                    }
                    for (cluster, deleted, why, what) in lines {
                        let verb = if deleted { "deleted" } else { "kept" };
                        println!("{cluster}: {verb} ({why}): {}", what.join(", "));
                    }
                    Ok(())
                }
                CloudCommand::Autoscale {
                    config,
                    scheduler_url,
                    interval,
                    tls_dir,
                } => {
                    let mut opts = opts;
                    opts.tls_identity = tls_dir.map(|d| (d, rask_operator::tls::Role::Operator));
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
                CloudCommand::VmTls {
                    cmd:
                        VmTlsCommand::Fetch {
                            aws_region,
                            aws_ssm_prefix,
                            azure_key_vault_url,
                            azure_identity,
                            azure_imds_endpoint,
                            roles,
                            dir,
                            owner,
                            wait_seconds,
                        },
                } => {
                    let roles = roles
                        .iter()
                        .map(|r| rask_operator::providers::vm::secrets::parse_role(r))
                        .collect::<Result<Vec<_>, _>>()?;
                    let owner = owner.as_deref().map(parse_owner).transpose()?;
                    use rask_operator::providers::vm::secrets::SecretStore;
                    let store = match (aws_region, aws_ssm_prefix, azure_key_vault_url, azure_identity) {
                        (Some(region), Some(prefix), None, None) => SecretStore::AwsSsm {
                            region,
                            prefix: prefix.trim_end_matches('/').to_owned(),
                        },
                        (None, None, Some(url), Some(identity)) => SecretStore::AzureKeyVault {
                            url: url.trim_end_matches('/').to_owned(),
                            identity,
                        },
                        _ => {
                            return Err("give --aws-region and --aws-ssm-prefix, or \
                                        --azure-key-vault-url and --azure-identity"
                                .to_owned());
                        }
                    };
                    #[cfg(feature = "azure")]
                    let opts = {
                        let mut o = opts;
                        o.azure.imds_endpoint = azure_imds_endpoint;
                        o
                    };
                    #[cfg(not(feature = "azure"))]
                    let _ = azure_imds_endpoint;
                    let written = cli::fetch_tls(&store, &roles, &dir, owner, Duration::from_secs(wait_seconds), &opts)
                        .await
                        .map_err(text)?;
                    for p in written {
                        println!("wrote {}", p.display());
                    }
                    Ok(())
                }
                CloudCommand::Keep { name, interval } => {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    tokio::spawn(async move {
                        signal.await;
                        let _ = tx.send(true);
                    });
                    let interval = Duration::from_secs_f64(interval.clamp(0.05, 3600.0));
                    batch::keep(&name, interval, &opts, rx).await.map_err(text)
                }
                CloudCommand::JobScript {
                    config,
                    group,
                    name,
                    scheduler,
                    scheduler_job,
                } => {
                    let role = if scheduler_job { JobRole::Scheduler } else { JobRole::Worker };
                    print!(
                        "{}",
                        batch::job_script(&config, group.as_deref(), role, name.as_deref(), scheduler.as_deref(), &opts)
                            .map_err(text)?
                    );
                    Ok(())
                }
            }
        })
    }))
}
