//! A cluster's config file: which provider, the cluster (scheduler, worker groups, autoscaling
//! bounds, timeouts) and the provider's section, whose keys follow dask-cloudprovider (VMs) or
//! dask-jobqueue (batch queues) where they mean the same. Reading is strict — an unknown key or a
//! bad value is an error that names the key — and validation settles every default into typed
//! values ([`vm::CloudCluster`], [`batch::BatchCluster`]), so no provider reads the raw file.

pub mod batch;
pub mod vm;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ProviderError;
use crate::spec::autoscaler::{AutoscalerSpec, Keys};
use crate::spec::worker::is_env_name;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Aws,
    Azure,
    Slurm,
    Sge,
    Pbs,
}

impl ProviderName {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderName::Aws => "aws",
            ProviderName::Azure => "azure",
            ProviderName::Slurm => "slurm",
            ProviderName::Sge => "sge",
            ProviderName::Pbs => "pbs",
        }
    }
}

/// A validated cluster file: VMs or batch jobs.
#[derive(Clone, Debug, PartialEq)]
pub enum ClusterConfig {
    Vm(vm::CloudCluster),
    Batch(batch::BatchCluster),
}

impl ClusterConfig {
    pub fn name(&self) -> &str {
        match self {
            ClusterConfig::Vm(c) => &c.name,
            ClusterConfig::Batch(c) => &c.name,
        }
    }

    pub fn provider(&self) -> ProviderName {
        match self {
            ClusterConfig::Vm(c) => c.provider.name(),
            ClusterConfig::Batch(c) => c.system.name(),
        }
    }
}

/// The `autoscaling:` section, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalingConfig {
    pub minimum: u32,
    pub maximum: u32,
    /// Group to scale (default: `default`, the `worker:` group).
    pub worker_group: Option<String>,
    /// Scale down only to the highest target seen over this many seconds (default 30).
    pub scale_down_stabilization_seconds: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// How long the scheduler may take from creation to answering (default 600).
    pub scheduler_seconds: Option<u64>,
    /// How long new workers may take from creation to appearing in the scheduler (default 600).
    pub workers_seconds: Option<u64>,
    /// How long deleting resources may take (default 600).
    pub delete_seconds: Option<u64>,
    /// Batch queues: jobs pending longer than this are reported with the batch system's reason
    /// (default 60).
    pub pending_seconds: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timeouts {
    pub scheduler: Duration,
    pub workers: Duration,
    pub delete: Duration,
    pub pending: Duration,
}

/// The default group's name: the `worker:` section.
pub const DEFAULT_GROUP: &str = "default";
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Reads and validates a config file. Errors name the file and the key.
pub fn load(path: &Path) -> Result<(ClusterConfig, String), ProviderError> {
    let text = std::fs::read_to_string(path).map_err(|e| ProviderError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let cluster = parse(&text).map_err(|e| in_file(e, path))?;
    Ok((cluster, text))
}

/// Names the file in a config error.
pub fn in_file(e: ProviderError, path: &Path) -> ProviderError {
    match e {
        ProviderError::Config { key, message, .. } => ProviderError::Config {
            file: path.display().to_string(),
            key,
            message,
        },
        other => other,
    }
}

/// Whether a YAML document names a provider (a top-level `provider:` key): `up` runs such a file
/// on VMs or batch jobs, any other as a local manifest.
pub fn names_provider(text: &str) -> bool {
    serde_yaml::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("provider").cloned())
        .is_some()
}

/// Deserializes the file strictly; serde's message becomes a key and a message.
pub(crate) fn read<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ProviderError> {
    serde_yaml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml_ng says `path: message at line L column C`; the path is the key.
        let (key, message) = match msg.split_once(": ") {
            Some((k, m)) if !k.contains(' ') => (k.to_owned(), m.to_owned()),
            _ => ("(file)".to_owned(), msg),
        };
        bad(key, message)
    })
}

/// Parses and validates config text (the file name is filled in by [`load`]).
pub fn parse(text: &str) -> Result<ClusterConfig, ProviderError> {
    #[derive(Deserialize)]
    struct Head {
        provider: ProviderName,
    }
    let head: Head = read(text)?;
    match head.provider {
        ProviderName::Aws | ProviderName::Azure => {
            Ok(ClusterConfig::Vm(vm::validate(read(text)?)?))
        }
        ProviderName::Slurm | ProviderName::Sge | ProviderName::Pbs => {
            Ok(ClusterConfig::Batch(batch::validate(read(text)?)?))
        }
    }
}

pub(crate) fn bad(key: impl Into<String>, message: impl Into<String>) -> ProviderError {
    ProviderError::Config {
        file: String::new(),
        key: key.into(),
        message: message.into(),
    }
}

/// A cluster, group or VM name: lowercase letters, digits and `-`, starting with a letter.
pub(crate) fn check_name(key: &str, value: &str, max: usize) -> Result<(), ProviderError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && !value.ends_with('-')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(bad(
            key,
            format!(
                "{value:?} is not a valid name: 1 to {max} lowercase letters, digits or '-', \
                 starting with a letter and not ending with '-'"
            ),
        ))
    }
}

/// Environment variable names of `env` (at `key`), as a list in order.
pub(crate) fn env_vars(
    key: &str,
    env: BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, ProviderError> {
    for name in env.keys() {
        if !is_env_name(name) {
            return Err(bad(
                format!("{key}.{name}"),
                "not an environment variable name (letters, digits and '_')",
            ));
        }
    }
    Ok(env.into_iter().collect())
}

pub(crate) fn required(key: &str, value: Option<String>) -> Result<String, ProviderError> {
    match value {
        Some(v) if !v.trim().is_empty() => Ok(v),
        Some(_) => Err(bad(key, "must not be empty")),
        None => Err(bad(key, "is required")),
    }
}

fn seconds(key: &str, value: Option<u64>, default: Duration) -> Result<Duration, ProviderError> {
    match value {
        None => Ok(default),
        Some(0) => Err(bad(key, "must be at least 1 second")),
        Some(s) => Ok(Duration::from_secs(s)),
    }
}

pub(crate) fn timeouts(t: TimeoutsConfig) -> Result<Timeouts, ProviderError> {
    Ok(Timeouts {
        scheduler: seconds(
            "timeouts.scheduler_seconds",
            t.scheduler_seconds,
            DEFAULT_TIMEOUT,
        )?,
        workers: seconds(
            "timeouts.workers_seconds",
            t.workers_seconds,
            DEFAULT_TIMEOUT,
        )?,
        delete: seconds("timeouts.delete_seconds", t.delete_seconds, DEFAULT_TIMEOUT)?,
        pending: seconds(
            "timeouts.pending_seconds",
            t.pending_seconds,
            Duration::from_secs(60),
        )?,
    })
}

/// The `autoscaling:` section checked against the file's groups.
pub(crate) fn autoscaling<'a>(
    a: Option<AutoscalingConfig>,
    groups: impl Iterator<Item = &'a String> + Clone,
) -> Result<Option<AutoscalerSpec>, ProviderError> {
    let Some(a) = a else { return Ok(None) };
    let group = a.worker_group.unwrap_or_else(|| DEFAULT_GROUP.into());
    if !groups.clone().any(|g| *g == group) {
        return Err(bad(
            "autoscaling.worker_group",
            format!(
                "no worker group {group:?} (the groups are: {})",
                groups.cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    let window = a
        .scale_down_stabilization_seconds
        .map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    AutoscalerSpec::validate(
        group,
        i64::from(a.minimum),
        i64::from(a.maximum),
        window,
        Keys::FILE,
    )
    .map(Some)
    .map_err(|e| bad(e.key, e.message))
}

/// The groups of a file: the default one (`worker:`, one replica unless said) and the named ones
/// (`worker_groups:`, none unless said), with the key each is written at.
pub(crate) fn groups<G>(
    worker: G,
    worker_groups: BTreeMap<String, G>,
) -> Result<Vec<(String, String, G, u32)>, ProviderError> {
    if worker_groups.contains_key(DEFAULT_GROUP) {
        return Err(bad(
            "worker_groups.default",
            "is the name of the `worker:` group; give this group another name",
        ));
    }
    let mut out = vec![(DEFAULT_GROUP.to_owned(), "worker".to_owned(), worker, 1)];
    for (name, g) in worker_groups {
        let key = format!("worker_groups.{name}");
        check_name(&key, &name, 16)?;
        out.push((name, key, g, 0));
    }
    Ok(out)
}
