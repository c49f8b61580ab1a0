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
    /// `--resources`: what the workers offer to tasks that ask for resources (Dask's worker
    /// resources, `GPU=1,MEM=8e9`), checked by [`parse_resources`].
    pub resources: Option<String>,
}

impl Default for WorkerTemplate {
    fn default() -> Self {
        WorkerTemplate {
            nthreads: None,
            memory_limit: MemoryLimit::Auto,
            env: Vec::new(),
            resources: None,
        }
    }
}

/// Checks a `--resources` value as `rask worker` reads it (`NAME=AMOUNT`, separated by commas or
/// spaces, each name once, amounts non-negative numbers) and writes it in one form.
pub fn parse_resources(text: &str) -> Result<String, String> {
    let mut items: Vec<(String, f64)> = Vec::new();
    for item in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let Some((name, amount)) = item.split_once('=') else {
            return Err(format!(
                "{item:?} is not NAME=AMOUNT (e.g. \"GPU=1,MEM=8e9\")"
            ));
        };
        let name = name.trim();
        let amount: f64 = match amount.trim().parse() {
            Ok(a) if f64::is_finite(a) && a >= 0.0 && !name.is_empty() => a,
            _ => return Err(format!("{item:?}: the amount is not a non-negative number")),
        };
        if items.iter().any(|(n, _)| n == name) {
            return Err(format!("resource {name} is given twice"));
        }
        items.push((name.to_owned(), amount));
    }
    if items.is_empty() {
        return Err("no resource given (e.g. \"GPU=1\")".to_owned());
    }
    Ok(items
        .iter()
        .map(|(n, a)| format!("{n}={a}"))
        .collect::<Vec<_>>()
        .join(","))
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
        if let Some(r) = &self.resources {
            out.extend(["--resources".to_owned(), r.clone()]);
        }
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
            resources: Some("GPU=1".into()),
        };
        assert_eq!(
            t.args(),
            [
                "--nthreads",
                "2",
                "--memory-limit",
                "1073741824",
                "--resources",
                "GPU=1"
            ]
        );
        assert_eq!(WorkerTemplate::default().args(), ["--memory-limit", "auto"]);
        assert!(is_env_name("OMP_NUM_THREADS") && !is_env_name("1X") && !is_env_name("A-B"));
    }

    #[test]
    fn resources_as_rask_worker_reads_them() {
        assert_eq!(
            parse_resources("GPU=1, MEM=8e9").unwrap(),
            "GPU=1,MEM=8000000000"
        );
        assert_eq!(parse_resources("GPU=2 TPU=0.5").unwrap(), "GPU=2,TPU=0.5");
        for bad in ["GPU", "GPU=lots", "GPU=-1", "=1", "GPU=1,GPU=2", ""] {
            assert!(parse_resources(bad).is_err(), "{bad:?}");
        }
        assert!(parse_resources("GPU").unwrap_err().contains("NAME=AMOUNT"));
    }
}
