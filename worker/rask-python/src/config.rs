//! Which interpreter runs the calls, what it reports, and where its output goes.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// The version of [`crate::PyCall`] and of the runner's protocol; the family's version starts with it.
pub const VERSION: &str = "1";
/// The environment variable naming the interpreter when `--python` is not given.
pub const PYTHON_ENV: &str = "RASK_PYTHON";

/// Which interpreter runs the calls, and where their output goes.
#[derive(Clone)]
pub struct PythonConfig {
    /// The Python to start: `rask worker --python`, else `$RASK_PYTHON`, else `python3`.
    pub interpreter: PathBuf,
    pub(crate) output: Output,
}

/// What a process of the pool printed: one line of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLine<'a> {
    pub pid: u32,
    pub stream: Stream,
    /// Without its newline; a very long line comes in pieces.
    pub line: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub(crate) type Output = Arc<dyn Fn(&OutputLine<'_>) + Send + Sync>;

impl PythonConfig {
    /// `interpreter`, else `$RASK_PYTHON`, else `python3` (found on `PATH`).
    pub fn new(interpreter: Option<PathBuf>) -> Self {
        let interpreter = interpreter
            .or_else(|| std::env::var_os(PYTHON_ENV).map(PathBuf::from))
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("python3"));
        PythonConfig {
            interpreter,
            output: Arc::new(log_line),
        }
    }

    /// Sends the processes' output to `f` instead of the worker's log.
    pub fn with_output(mut self, f: impl Fn(&OutputLine<'_>) + Send + Sync + 'static) -> Self {
        self.output = Arc::new(f);
        self
    }
}

impl fmt::Debug for PythonConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PythonConfig({})", self.interpreter.display())
    }
}

fn log_line(l: &OutputLine<'_>) {
    match l.stream {
        Stream::Stdout => {
            tracing::info!(target: "rask_python::user", pid = l.pid, "stdout: {}", l.line)
        }
        Stream::Stderr => {
            tracing::info!(target: "rask_python::user", pid = l.pid, "stderr: {}", l.line)
        }
    }
}

/// The interpreter's versions, as its processes report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// `3.11`.
    pub python: String,
    /// cloudpickle's full version, `3.1.3`.
    pub cloudpickle: String,
    /// The rask package the calls unpickle against (clients pickle rask's helpers by reference):
    /// its version and a digest of its `rask._deps`, `0.1.0@3f2a9c01b2d4`; `None` where the
    /// interpreter has no rask package (the runner's own stand-in `rask._deps` is used).
    pub rask: Option<String>,
}

impl Versions {
    /// The family's version: `1+py3.11+cloudpickle3+rask0.1.0@3f2a9c01b2d4` (`+norask` without a
    /// rask package).
    pub fn family_version(&self) -> String {
        let major = self
            .cloudpickle
            .split('.')
            .next()
            .unwrap_or(&self.cloudpickle);
        let rask = match &self.rask {
            Some(r) => format!("rask{r}"),
            None => "norask".to_owned(),
        };
        format!("{VERSION}+py{}+cloudpickle{major}+{rask}", self.python)
    }
}
