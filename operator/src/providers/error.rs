//! Why a provider command failed: one error type for the VM and batch providers, whose
//! messages are written for a person (the key, resource, VM, job or API call at fault, and what
//! to do); raw SDK and HTTP dumps go to the log at `RUST_LOG=debug` only.

use std::time::Duration;

/// Why a provider command failed. Every message names the key, resource, VM, job or API call at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
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
    #[error(
        "{provider}: no credentials found (tried: {}); {hint}",
        .tried.join("; ")
    )]
    NoCredentials {
        provider: &'static str,
        /// The sources looked at, in order.
        tried: Vec<String>,
        /// What to set.
        hint: String,
    },
    #[error("{system}: `{command}` failed{}: {message}", exit_suffix(.code))]
    Command {
        /// `slurm`, `sge`.
        system: &'static str,
        command: String,
        code: Option<i32>,
        message: String,
    },
    #[error("{what} within {after:?}:\n{}", .jobs.join("\n"))]
    Jobs {
        what: String,
        after: Duration,
        /// One line (or a few, with the end of its output) per job at fault.
        jobs: Vec<String>,
    },
    #[error("{0}")]
    Scheduler(#[from] crate::scheduler_api::SchedulerApiError),
    #[error("no cluster named {name}: {reason}")]
    NoSuchCluster { name: String, reason: String },
    #[error("{provider} support is not built into this rask-operator (cargo feature `{provider}`)")]
    NotBuilt { provider: &'static str },
    #[error("{cause}\nrolled back: deleted {}", list(.deleted))]
    RolledBack {
        cause: Box<ProviderError>,
        deleted: Vec<String>,
    },
    #[error("{cause}\nrolling back failed ({error}); these may remain: {}; run `rask-operator sweep` to delete them", list(.left))]
    RollbackFailed {
        cause: Box<ProviderError>,
        error: Box<ProviderError>,
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

/// An error and its sources in one line for a person: each cause's message (not its debug
/// dump), first lines only, repeats left out. The full dump belongs in a `debug` log line.
pub fn summary(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        let line = text.lines().next().unwrap_or_default().trim();
        let line: String = line.chars().take(300).collect();
        if !line.is_empty() && !parts.iter().any(|p| p.contains(&line)) {
            parts.push(line);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn exit_suffix(code: &Option<i32>) -> String {
    match code {
        Some(c) => format!(" (exit {c})"),
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

impl From<ProviderError> for crate::backend::BackendError {
    fn from(e: ProviderError) -> Self {
        crate::backend::BackendError::Failed {
            backend: "cloud",
            action: "manage VMs".into(),
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("dispatch failure")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("an error occurred while loading credentials\n(with a second line)")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn a_summary_keeps_each_causes_message_and_no_debug_dump() {
        let e = Outer(Inner(std::io::Error::other("IMDS is disabled")));
        assert_eq!(
            summary(&e),
            "dispatch failure: an error occurred while loading credentials: IMDS is disabled"
        );
    }

    #[test]
    fn missing_credentials_say_what_was_tried_and_what_to_set() {
        let e = ProviderError::NoCredentials {
            provider: "aws",
            tried: vec![
                "environment variables".into(),
                "instance metadata: no answer".into(),
            ],
            hint: "set AWS_PROFILE".into(),
        };
        assert_eq!(
            e.to_string(),
            "aws: no credentials found (tried: environment variables; instance metadata: no answer); set AWS_PROFILE"
        );
    }
}
