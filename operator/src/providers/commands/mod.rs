//! The provider commands as functions — `up`, `scale`, `status`, `logs`, `down`, `sweep`,
//! `autoscale`, `job-script` — for VM clusters ([`vm`]) and batch clusters ([`batch`]).
//! `main.rs` parses arguments and prints; tests call these directly with [`Options`] pointing at
//! an emulator or a local batch system.
//!
//! `up` saves the config under the state directory (`$RASK_STATE_DIR`, default
//! `~/.config/rask/clusters/NAME.yaml`) before it creates anything, so the other commands find the
//! cluster by name — also after a crash.

pub mod batch;
pub mod vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::backend::Retirement;
use crate::providers::ProviderError;
use crate::providers::config::{self, ClusterConfig};
use crate::providers::vm::ResolveUrl;
#[cfg(feature = "aws")]
use crate::providers::vm::aws::AwsOptions;
#[cfg(feature = "azure")]
use crate::providers::vm::azure::AzureOptions;

/// Where and how the commands reach things.
#[derive(Clone)]
pub struct Options {
    /// Saved configs of the clusters `up` started.
    pub state_dir: PathBuf,
    #[cfg(feature = "aws")]
    pub aws: AwsOptions,
    #[cfg(feature = "azure")]
    pub azure: AzureOptions,
    /// How the scheduler's HTTP API is reached from here (default: its public IP, or its private
    /// IP with `use_private_ip`).
    pub resolve_url: Option<ResolveUrl>,
    /// Between looks at the cloud or the scheduler while waiting.
    pub poll: Duration,
    pub progress: Arc<dyn Fn(&str) + Send + Sync>,
    /// Batch clusters: the `rask` binary the jobs and a local scheduler run (default: the
    /// config's `rask_bin`, `$RASK_BIN`, beside this binary, or on `PATH`).
    pub rask_bin: Option<PathBuf>,
    /// Batch clusters: the `rask-operator` binary `up` starts in the background to keep the
    /// cluster (default: this very binary).
    pub operator_bin: Option<PathBuf>,
    /// VM clusters with TLS: the directory and party whose certificate the commands present to
    /// the scheduler (default: the client's, in the state directory's `NAME.tls/`, where `up`
    /// put it; the autoscaler on the scheduler VM uses the operator's).
    pub tls_identity: Option<(PathBuf, crate::tls::Role)>,
}

impl Options {
    /// The defaults for a user's machine.
    pub fn from_env() -> Options {
        let state_dir = std::env::var_os("RASK_STATE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME").map(|c| PathBuf::from(c).join("rask/clusters"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/rask/clusters"))
            })
            .unwrap_or_else(|| PathBuf::from(".rask/clusters"));
        Options {
            state_dir,
            #[cfg(feature = "aws")]
            aws: AwsOptions::default(),
            #[cfg(feature = "azure")]
            azure: AzureOptions::default(),
            resolve_url: None,
            poll: Duration::from_secs(2),
            progress: Arc::new(|line| eprintln!("{line}")),
            rask_bin: None,
            operator_bin: None,
            tls_identity: None,
        }
    }
}

/// What kind of cluster a saved name or a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Vm,
    Batch,
}

/// Whether the cluster named `name` (saved, or in `config`) runs on VMs or a batch queue.
pub fn kind_of(opts: &Options, name: &str, config: Option<&Path>) -> Result<Kind, ProviderError> {
    Ok(match find(opts, name, config)?.0 {
        ClusterConfig::Vm(_) => Kind::Vm,
        ClusterConfig::Batch(_) => Kind::Batch,
    })
}

/// Whether a config file describes VMs or a batch queue.
pub fn kind_of_file(path: &Path) -> Result<Kind, ProviderError> {
    Ok(match config::load(path)?.0 {
        ClusterConfig::Vm(_) => Kind::Vm,
        ClusterConfig::Batch(_) => Kind::Batch,
    })
}

/// What `scale` did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScaleReport {
    pub added: Vec<String>,
    pub retired: Retirement,
}

/// What `scale` does to a group, decided from its workers alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScalePlan {
    Add(usize),
    Retire(Vec<String>),
    Nothing,
}

/// The plan for scaling `cluster/group` to `n` workers: add the missing ones, or retire the
/// newest (`newest_first` is the group's workers, newest first) or those `named`, which must be
/// exactly as many as the workers to go and all in the group.
pub fn scale_plan(
    cluster: &str,
    group: &str,
    newest_first: &[String],
    n: usize,
    named: &[String],
) -> Result<ScalePlan, ProviderError> {
    let now = newest_first.len();
    if !named.is_empty() && named.len() + n != now {
        return Err(ProviderError::Other(format!(
            "scaling {cluster}/{group} from {now} to {n} workers retires {}, but {} were named to retire",
            now.saturating_sub(n),
            named.len()
        )));
    }
    if let Some(w) = named.iter().find(|w| !newest_first.contains(w)) {
        return Err(ProviderError::Other(format!(
            "cluster {cluster} has no worker {w} in group {group}"
        )));
    }
    Ok(if n > now {
        ScalePlan::Add(n - now)
    } else if n == now {
        ScalePlan::Nothing
    } else if named.is_empty() {
        ScalePlan::Retire(newest_first[..now - n].to_vec())
    } else {
        ScalePlan::Retire(named.to_vec())
    })
}

pub(crate) fn saved_path(opts: &Options, name: &str) -> PathBuf {
    opts.state_dir.join(format!("{name}.yaml"))
}

/// The config `up` saved for `name`.
fn load_saved(opts: &Options, name: &str) -> Result<(ClusterConfig, String), ProviderError> {
    let path = saved_path(opts, name);
    if !path.exists() {
        return Err(ProviderError::NoSuchCluster {
            name: name.to_owned(),
            reason: format!(
                "no saved config at {} (`up` saves one there; on another machine pass --config FILE)",
                path.display()
            ),
        });
    }
    config::load(&path)
}

/// The cluster named `name`, from `config` when given, else from the saved configs.
pub(crate) fn find(
    opts: &Options,
    name: &str,
    config: Option<&Path>,
) -> Result<(ClusterConfig, String), ProviderError> {
    match config {
        Some(path) => {
            let (c, text) = config::load(path)?;
            if c.name() != name {
                return Err(ProviderError::Other(format!(
                    "{} describes cluster {}, not {name}",
                    path.display(),
                    c.name()
                )));
            }
            Ok((c, text))
        }
        None => load_saved(opts, name),
    }
}

/// Saves the config text before `up` creates anything; refuses a name already saved.
pub(crate) fn save(opts: &Options, name: &str, text: &str) -> Result<PathBuf, ProviderError> {
    let saved = saved_path(opts, name);
    if saved.exists() {
        return Err(ProviderError::Other(format!(
            "cluster {name} already exists (its config is saved at {}): `rask-operator status {name}` \
             shows it, `rask-operator down {name}` deletes it",
            saved.display()
        )));
    }
    std::fs::create_dir_all(&opts.state_dir).map_err(|e| ProviderError::Read {
        path: opts.state_dir.display().to_string(),
        reason: format!("cannot create it: {e}"),
    })?;
    std::fs::write(&saved, text).map_err(|e| ProviderError::Read {
        path: saved.display().to_string(),
        reason: format!("cannot write it: {e}"),
    })?;
    Ok(saved)
}

/// The saved configs, each read (a file that no longer reads is an error naming it).
pub(crate) fn saved_clusters(opts: &Options) -> Result<Vec<ClusterConfig>, ProviderError> {
    let entries = std::fs::read_dir(&opts.state_dir).map_err(|e| ProviderError::Read {
        path: opts.state_dir.display().to_string(),
        reason: format!("{e} (no saved clusters: pass --config FILE to say where to sweep)"),
    })?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            out.push(config::load(&path)?.0);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_plans() {
        let w = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let now = w(&["c", "b", "a"]);
        let table: [(usize, Vec<String>, Result<ScalePlan, &str>); 6] = [
            (5, vec![], Ok(ScalePlan::Add(2))),
            (3, vec![], Ok(ScalePlan::Nothing)),
            (1, vec![], Ok(ScalePlan::Retire(w(&["c", "b"])))),
            (2, w(&["a"]), Ok(ScalePlan::Retire(w(&["a"])))),
            (1, w(&["a"]), Err("retires 2, but 1 were named")),
            (2, w(&["z"]), Err("has no worker z in group g")),
        ];
        for (n, named, want) in table {
            let got = scale_plan("x", "g", &now, n, &named);
            match (got, want) {
                (Ok(p), Ok(w)) => assert_eq!(p, w, "{n} {named:?}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{e}"),
                (got, want) => panic!("{n} {named:?}: {got:?}, wanted {want:?}"),
            }
        }
    }
}
