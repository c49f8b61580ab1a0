//! One worker-group template for every backend that starts `rask worker` itself (local
//! processes, VMs, batch jobs): threads, a typed memory limit and the environment, settled once.

use super::quantity::MemoryLimit;

/// How each worker of a group is started.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerTemplate {
    /// `--nthreads`; `None`: the machine's (or the job's) cores.
    pub nthreads: Option<usize>,
    pub memory_limit: MemoryLimit,
    /// Extra environment, in order.
    pub env: Vec<(String, String)>,
}

impl Default for WorkerTemplate {
    fn default() -> Self {
        WorkerTemplate {
            nthreads: None,
            memory_limit: MemoryLimit::Auto,
            env: Vec::new(),
        }
    }
}

impl WorkerTemplate {
    /// `rask worker`'s flags for this template, after the scheduler's address: `--nthreads N`
    /// (when set) and `--memory-limit BYTES`.
    pub fn args(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.nthreads {
            out.extend(["--nthreads".to_owned(), n.to_string()]);
        }
        out.extend(["--memory-limit".to_owned(), self.memory_limit.arg()]);
        out
    }
}

/// Whether `name` can be an environment variable's name (letters, digits, `_`; not starting
/// with a digit).
pub fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ByteSize;

    #[test]
    fn flags() {
        let t = WorkerTemplate {
            nthreads: Some(2),
            memory_limit: MemoryLimit::Bytes(ByteSize(1 << 30)),
            env: vec![],
        };
        assert_eq!(
            t.args(),
            ["--nthreads", "2", "--memory-limit", "1073741824"]
        );
        assert_eq!(WorkerTemplate::default().args(), ["--memory-limit", "auto"]);
        assert!(is_env_name("OMP_NUM_THREADS") && !is_env_name("1X") && !is_env_name("A-B"));
    }
}
