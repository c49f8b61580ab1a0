//! Clusters on cloud VMs (AWS EC2, Azure) from a config file: the file ([`config`]), what each VM
//! boots with ([`userdata`]), and the commands `up`, `scale`, `status`, `logs`, `down`, `sweep`
//! and `autoscale` ([`cli`]). The VMs themselves are managed by [`crate::backend::cloud`] through
//! one provider per cloud.

pub mod cli;
pub mod config;
pub mod userdata;

use std::time::Duration;

/// Why a cloud command failed. Every message names the key, resource, VM or API call at fault.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{}{key}: {message}", if file.is_empty() { String::new() } else { format!("{file}: ") })]
    Config {
        file: String,
        key: String,
        message: String,
    },
    #[error("{provider} {action}: the API is unreachable at {endpoint}: {reason}")]
    Unreachable {
        provider: &'static str,
        action: String,
        endpoint: String,
        reason: String,
    },
    #[error("{provider} {action}: throttled by the API ({code}) after retrying: {message}")]
    Throttled {
        provider: &'static str,
        action: String,
        code: String,
        message: String,
    },
    #[error("{provider} {action}: no capacity for {what} ({code}): {message}")]
    Capacity {
        provider: &'static str,
        action: String,
        what: String,
        code: String,
        message: String,
    },
    #[error("{provider} {action}: not authorized ({code}): {message}")]
    Unauthorized {
        provider: &'static str,
        action: String,
        code: String,
        message: String,
    },
    #[error("{provider} {action} failed ({code}): {message}")]
    Api {
        provider: &'static str,
        action: String,
        code: String,
        message: String,
    },
    #[error("{what} did not happen within {after:?}{}", boot_log_suffix(.boot_log))]
    Timeout {
        what: String,
        after: Duration,
        /// The boot (console) log of the VM at fault, when there is one.
        boot_log: Option<String>,
    },
    #[error("VM {name} ({id}) failed: {reason}{}", boot_log_suffix(.boot_log))]
    VmFailed {
        name: String,
        id: String,
        reason: String,
        boot_log: Option<String>,
    },
    #[error("{0}")]
    Scheduler(#[from] crate::scheduler_api::SchedulerApiError),
    #[error("no cluster named {name}: {reason}")]
    NoSuchCluster { name: String, reason: String },
    #[error("{provider} support is not built into this rask-operator (cargo feature `{provider}`)")]
    NotBuilt { provider: &'static str },
    #[error("{cause}\nrolled back: deleted {}", list(.deleted))]
    RolledBack {
        cause: Box<CloudError>,
        deleted: Vec<String>,
    },
    #[error("{cause}\nrolling back failed ({error}); these may remain: {}; run `rask-operator sweep` to delete them", list(.left))]
    RollbackFailed {
        cause: Box<CloudError>,
        error: Box<CloudError>,
        left: Vec<String>,
    },
    #[error("{0}")]
    Other(String),
}

fn boot_log_suffix(log: &Option<String>) -> String {
    match log {
        Some(l) if !l.trim().is_empty() => format!("\nits boot log ends:\n{l}"),
        Some(_) => "\nits boot log is empty so far".into(),
        None => String::new(),
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "nothing".into()
    } else {
        items.join(", ")
    }
}

impl From<CloudError> for crate::backend::BackendError {
    fn from(e: CloudError) -> Self {
        crate::backend::BackendError::Failed {
            backend: "cloud",
            action: "manage VMs".into(),
            reason: e.to_string(),
        }
    }
}

/// The last `lines` lines of a text.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
