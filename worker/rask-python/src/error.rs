//! Why Python calls cannot run.

use crate::config::PYTHON_ENV;

/// Why Python calls cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error(
        "Python interpreter {interpreter:?} not found: give `rask worker --python PATH` or set {PYTHON_ENV}"
    )]
    NotFound { interpreter: String },
    #[error("cannot start Python interpreter {interpreter:?}: {source}")]
    Spawn {
        interpreter: String,
        source: std::io::Error,
    },
    /// It started, and said why it cannot run tasks (cloudpickle is missing...).
    #[error("Python interpreter {interpreter:?} cannot run tasks: {reason}")]
    Unusable { interpreter: String, reason: String },
    #[error("the Python process (pid {pid}, {interpreter}) {status}: {reason}{}", stderr_suffix(.stderr))]
    Died {
        pid: u32,
        interpreter: String,
        /// `exited with status 3`, `was killed by signal 11 (SIGSEGV)`.
        status: String,
        /// What the worker saw.
        reason: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!("; the end of its stderr:\n{stderr}")
    }
}
