//! A batch cluster's file (`provider: slurm`, `sge` or `pbs`): the scheduler where `up` runs or
//! as its own job, each worker group as batch jobs, and the queue's section, whose keys are
//! dask-jobqueue's `SLURMCluster` / `SGECluster` / `PBSCluster` keys where they mean the same.
//! [`validate`] settles every default into a [`BatchCluster`]: sizes and walltimes as numbers,
//! the workers' lifetime inside the walltime, and each group's job as a [`JobTemplate`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{
    AutoscalingConfig, ClusterConfig, ProviderName, Timeouts, TimeoutsConfig, bad, check_name,
    env_vars,
};
use crate::providers::ProviderError;
use crate::spec::walltime::parse_duration;
use crate::spec::{AutoscalerSpec, ByteSize, MemoryLimit, Walltime, WorkerTemplate};

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    pub provider: ProviderName,
    pub name: String,
    #[serde(default)]
    pub scheduler: SchedulerConfig,
    /// dask-jobqueue's `scheduler_options`, and where the scheduler runs.
    #[serde(default)]
    pub scheduler_options: SchedulerOptions,
    #[serde(default)]
    pub worker: GroupConfig,
    #[serde(default)]
    pub worker_groups: BTreeMap<String, GroupConfig>,
    #[serde(default)]
    pub autoscaling: Option<AutoscalingConfig>,
    #[serde(default)]
    pub timeouts: TimeoutsConfig,
    #[serde(default)]
    pub slurm: Option<JobqueueConfig>,
    #[serde(default)]
    pub sge: Option<JobqueueConfig>,
    #[serde(default)]
    pub pbs: Option<JobqueueConfig>,
    /// Mutual TLS between the scheduler, the workers, clients and rask-operator (default
    /// `true`); `false`: plain TCP.
    pub tls: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// Where the scheduler runs and how it listens.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerOptions {
    /// `local`: a process on the machine `up` runs on (default); `job`: its own batch job.
    pub location: Option<SchedulerLocation>,
    /// The IP address it listens on and workers reach it at (default: the `interface`'s
    /// address, else this host's name).
    pub host: Option<String>,
    /// Its port (default: any free port where `up` runs, 8786 in a job).
    pub port: Option<u16>,
    /// Its HTTP API and dashboard: `:PORT` or `HOST:PORT` (default: any free port where `up`
    /// runs, `:8787` in a job).
    pub dashboard_address: Option<String>,
    /// The network interface whose address it listens on (`ib0`).
    pub interface: Option<String>,
    /// Walltime of the scheduler's job (default: the workers').
    pub walltime: Option<String>,
    /// Cores and memory of the scheduler's job (default: 1 core, no memory request).
    pub cores: Option<u32>,
    pub memory: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SchedulerLocation {
    #[default]
    Local,
    Job,
}

/// A worker group: how many jobs `up` submits, their environment, and the job keys it sets
/// differently from the queue's section.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Jobs `up` submits (default 1 for the default group, 0 for others).
    pub replicas: Option<u32>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub queue: Option<String>,
    pub cores: Option<u32>,
    pub memory: Option<String>,
    pub processes: Option<u32>,
    pub walltime: Option<String>,
    #[serde(default)]
    pub job_extra_directives: Vec<String>,
}

/// dask-jobqueue's keys for SLURM, SGE and PBS (each system uses those it has).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobqueueConfig {
    /// `#SBATCH -p`, `#$ -q`, `#PBS -q`.
    pub queue: Option<String>,
    /// SLURM `-A`, PBS `-A`.
    pub account: Option<String>,
    /// SGE `-P`.
    pub project: Option<String>,
    /// Default `00:30:00`, as dask-jobqueue.
    pub walltime: Option<String>,
    /// Cores of each job (default 1); threads per worker are `cores / processes`.
    pub cores: Option<u32>,
    /// Memory of each job (`16GB`); each worker's limit is `memory / processes`.
    pub memory: Option<String>,
    /// Worker processes per job (default 1).
    pub processes: Option<u32>,
    /// SLURM: `--cpus-per-task` instead of `cores`.
    pub job_cpu: Option<u32>,
    /// SLURM: `--mem` instead of `memory`.
    pub job_mem: Option<String>,
    /// SGE and PBS `-l` (PBS default `select=1:ncpus=CORES:mem=MEMORY`).
    pub resource_spec: Option<String>,
    #[serde(default)]
    pub job_extra_directives: Vec<String>,
    /// Directive lines containing any of these are left out (not the extra ones).
    #[serde(default)]
    pub job_directives_skip: Vec<String>,
    /// Shell lines run before the workers start (`module load ...`, `source env/bin/activate`).
    #[serde(default)]
    pub job_script_prologue: Vec<String>,
    /// Shell lines run after the workers ended.
    #[serde(default)]
    pub job_script_epilogue: Vec<String>,
    /// The network interface the workers listen on (`ib0`); default: the node's name.
    pub interface: Option<String>,
    /// Where workers spill (default: the node's temporary directory).
    pub local_directory: Option<String>,
    /// Where the jobs' output files go (default: the state directory's `NAME-logs`).
    pub log_directory: Option<String>,
    /// Default `#!/usr/bin/env bash`.
    pub shebang: Option<String>,
    /// More `rask worker` arguments. dask-jobqueue's `--lifetime`, `--lifetime-stagger` and
    /// `--lifetime-restart` are understood here (rask-operator retires the worker).
    #[serde(default)]
    pub worker_extra_args: Vec<String>,
    /// A worker is retired gracefully this long after its job started (default: the walltime
    /// less a margin of a tenth of it, between 10 s and 10 min).
    pub lifetime: Option<String>,
    /// Each worker's lifetime is moved by up to this much either way, so workers of jobs that
    /// started together do not all leave at once (default: half the margin).
    pub lifetime_stagger: Option<String>,
    /// The `rask` binary on the compute nodes (default: the one `rask-operator` finds here; a
    /// shared filesystem is assumed, as with dask-jobqueue's `python`).
    pub rask_bin: Option<String>,
}

/// Which batch system runs the jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Slurm,
    Sge,
    /// Job scripts only: no PBS server runs here to test against.
    Pbs,
}

impl System {
    pub fn name(self) -> ProviderName {
        match self {
            System::Slurm => ProviderName::Slurm,
            System::Sge => ProviderName::Sge,
            System::Pbs => ProviderName::Pbs,
        }
    }
}

/// A cluster on a batch queue, every default settled.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchCluster {
    pub name: String,
    pub system: System,
    pub scheduler: SchedulerSettings,
    pub groups: BTreeMap<String, JobTemplate>,
    pub autoscaling: Option<AutoscalerSpec>,
    pub timeouts: Timeouts,
    /// Where the jobs' output files go; `None`: the state directory's `NAME-logs`.
    pub log_directory: Option<PathBuf>,
    /// The `rask` binary on the compute nodes; `None`: the one found where `up` runs.
    pub rask_bin: Option<String>,
    /// Mutual TLS with the cluster's own certificates (the default), or plain TCP.
    pub tls: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerSettings {
    pub env: Vec<(String, String)>,
    pub location: SchedulerLocation,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub dashboard_address: Option<String>,
    pub interface: Option<String>,
    /// The scheduler's own job, when it runs in one.
    pub job: JobResources,
}

/// What one job asks the batch system for.
#[derive(Clone, Debug, PartialEq)]
pub struct JobResources {
    pub queue: Option<String>,
    pub account: Option<String>,
    pub project: Option<String>,
    pub walltime: Walltime,
    /// CPUs requested (SLURM `--cpus-per-task`, PBS `ncpus`).
    pub cpus: u32,
    /// Memory requested (SLURM `--mem`, PBS `mem`); `None`: none asked for.
    pub memory: Option<ByteSize>,
    /// SLURM `--mem` written as given (`job_mem`), instead of `memory`.
    pub job_mem: Option<String>,
    pub resource_spec: Option<String>,
    pub extra_directives: Vec<String>,
    pub directives_skip: Vec<String>,
    pub prologue: Vec<String>,
    pub epilogue: Vec<String>,
    pub shebang: String,
}

/// One worker group's jobs.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTemplate {
    /// Jobs `up` submits.
    pub replicas: u32,
    pub job: JobResources,
    /// Worker processes per job.
    pub processes: u32,
    /// How each worker process starts (threads `cores / processes`, memory `memory / processes`).
    pub worker: WorkerTemplate,
    pub interface: Option<String>,
    pub local_directory: Option<String>,
    /// More `rask worker` arguments, passed as given.
    pub extra_args: Vec<String>,
    pub lifetime: Lifetime,
}

/// When a worker is retired before its job's walltime ends it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    pub after: Duration,
    pub stagger: Duration,
    /// Replace a retired worker with a new job (dask-jobqueue's `--lifetime-restart`); without
    /// it, the autoscaler's minimum still brings replacements.
    pub restart: bool,
}

impl Lifetime {
    /// This job's lifetime: `after` moved by a fraction of `stagger` in −1..=1 that the job's
    /// name fixes, so every look at the same job gives the same deadline.
    pub fn for_job(&self, job_name: &str) -> Duration {
        let h = job_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let unit = (h % 2001) as f64 / 1000.0 - 1.0;
        let shift = self.stagger.as_secs_f64() * unit;
        Duration::from_secs_f64((self.after.as_secs_f64() + shift).max(0.0))
    }
}

const DEFAULT_WALLTIME: &str = "00:30:00";

fn walltime(key: &str, text: &str) -> Result<Walltime, ProviderError> {
    Walltime::parse(text).map_err(|e| bad(key, e))
}

fn size(key: &str, text: &str) -> Result<ByteSize, ProviderError> {
    ByteSize::parse(text).map_err(|e| bad(key, e))
}

/// One shell-safe directive or prologue line: no newline, which would end it early.
fn lines(key: &str, items: &[String]) -> Result<Vec<String>, ProviderError> {
    for (i, l) in items.iter().enumerate() {
        if l.contains('\n') || l.contains('\r') {
            return Err(bad(format!("{key}[{i}]"), "must be one line"));
        }
    }
    Ok(items.to_vec())
}

/// The lifetime flags of dask-jobqueue's `worker_extra_args`, taken out; the rest stays.
struct ExtraArgs {
    lifetime: Option<String>,
    stagger: Option<String>,
    restart: bool,
    rest: Vec<String>,
}

fn split_extra_args(section: &str, args: &[String]) -> Result<ExtraArgs, ProviderError> {
    let key = format!("{section}.worker_extra_args");
    let mut out = ExtraArgs {
        lifetime: None,
        stagger: None,
        restart: false,
        rest: Vec::new(),
    };
    let mut it = args.iter().enumerate();
    while let Some((i, a)) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (a.as_str(), None),
        };
        let slot = match flag {
            "--lifetime" => &mut out.lifetime,
            "--lifetime-stagger" => &mut out.stagger,
            "--lifetime-restart" => {
                out.restart = true;
                continue;
            }
            _ => {
                if a.contains('\n') {
                    return Err(bad(format!("{key}[{i}]"), "must be one line"));
                }
                out.rest.push(a.clone());
                continue;
            }
        };
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .map(|(_, v)| v.clone())
                .ok_or_else(|| bad(format!("{key}[{i}]"), format!("{flag} needs a value")))?,
        };
        *slot = Some(value);
    }
    Ok(out)
}

/// The default margin between a worker's lifetime and its job's walltime: a tenth of the
/// walltime, at least 10 s and at most 10 min.
fn margin(walltime: Duration) -> Duration {
    (walltime / 10).clamp(Duration::from_secs(10), Duration::from_secs(600))
}

fn lifetime(
    section: &str,
    q: &JobqueueConfig,
    extra: &ExtraArgs,
    walltime: Walltime,
    group_key: &str,
) -> Result<Lifetime, ProviderError> {
    let given = |key: &str, own: &Option<String>, flag: &Option<String>| {
        let (key, text) = match (own, flag) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    format!("{section}.{key}"),
                    format!("given twice (also in {section}.worker_extra_args)"),
                ));
            }
            (Some(t), None) => (format!("{section}.{key}"), t),
            (None, Some(t)) => (format!("{section}.worker_extra_args"), t),
            (None, None) => return Ok(None),
        };
        parse_duration(text).map(Some).map_err(|e| bad(key, e))
    };
    let wall = walltime.duration();
    let m = margin(wall);
    let after = given("lifetime", &q.lifetime, &extra.lifetime)?.unwrap_or(wall.saturating_sub(m));
    let stagger =
        given("lifetime_stagger", &q.lifetime_stagger, &extra.stagger)?.unwrap_or_else(|| {
            if q.lifetime.is_some() || extra.lifetime.is_some() {
                Duration::ZERO
            } else {
                m / 2
            }
        });
    if after.is_zero() {
        return Err(bad(
            format!("{section}.lifetime"),
            "must be longer than zero",
        ));
    }
    if after + stagger >= wall {
        return Err(bad(
            format!("{section}.lifetime"),
            format!(
                "{:?} plus lifetime_stagger {:?} must end before the walltime {walltime} of \
                 {group_key}: the worker must be retired before the batch system kills its job",
                after, stagger
            ),
        ));
    }
    Ok(Lifetime {
        after,
        stagger,
        restart: extra.restart,
    })
}

/// Settles names and defaults, and checks every value.
pub fn validate(file: BatchFile) -> Result<BatchCluster, ProviderError> {
    check_name("name", &file.name, 30)?;
    let (system, section, q) = match file.provider {
        ProviderName::Slurm => (System::Slurm, "slurm", file.slurm.clone()),
        ProviderName::Sge => (System::Sge, "sge", file.sge.clone()),
        ProviderName::Pbs => (System::Pbs, "pbs", file.pbs.clone()),
        other => {
            return Err(bad(
                "provider",
                format!("{} is a cloud, not a batch queue", other.as_str()),
            ));
        }
    };
    for (other, given) in [
        ("slurm", file.slurm.is_some()),
        ("sge", file.sge.is_some()),
        ("pbs", file.pbs.is_some()),
    ] {
        if given && other != section {
            return Err(bad(other, format!("given, but provider is {section}")));
        }
    }
    let q = q.unwrap_or_default();
    let key = |k: &str| format!("{section}.{k}");
    // Keys a system does not have are refused rather than ignored.
    let not_here: &[(&str, bool)] = match system {
        System::Slurm => &[
            ("project", q.project.is_some()),
            ("resource_spec", q.resource_spec.is_some()),
        ],
        System::Sge => &[
            ("account", q.account.is_some()),
            ("job_cpu", q.job_cpu.is_some()),
            ("job_mem", q.job_mem.is_some()),
        ],
        System::Pbs => &[
            ("project", q.project.is_some()),
            ("job_cpu", q.job_cpu.is_some()),
            ("job_mem", q.job_mem.is_some()),
        ],
    };
    if let Some((k, _)) = not_here.iter().find(|(_, given)| *given) {
        return Err(bad(
            key(k),
            format!("is not a {section} key (dask-jobqueue's {section} section has no {k})"),
        ));
    }
    let wall = walltime(
        &key("walltime"),
        q.walltime.as_deref().unwrap_or(DEFAULT_WALLTIME),
    )?;
    let cores = q.cores.unwrap_or(1);
    if cores == 0 {
        return Err(bad(key("cores"), "must be at least 1"));
    }
    if q.job_cpu == Some(0) {
        return Err(bad(key("job_cpu"), "must be at least 1"));
    }
    let memory = q
        .memory
        .as_deref()
        .map(|m| size(&key("memory"), m))
        .transpose()?;
    if let Some(m) = &q.job_mem
        && (m.trim().is_empty() || m.contains(char::is_whitespace))
    {
        return Err(bad(
            key("job_mem"),
            format!("{m:?} is not a SLURM memory size"),
        ));
    }
    let processes = q.processes.unwrap_or(1);
    if processes == 0 {
        return Err(bad(key("processes"), "must be at least 1"));
    }
    let shebang = q
        .shebang
        .clone()
        .unwrap_or_else(|| "#!/usr/bin/env bash".into());
    if !shebang.starts_with("#!") || shebang.contains('\n') {
        return Err(bad(key("shebang"), format!("{shebang:?} is not a #! line")));
    }
    for (k, v) in [
        ("queue", &q.queue),
        ("account", &q.account),
        ("project", &q.project),
        ("resource_spec", &q.resource_spec),
        ("interface", &q.interface),
    ] {
        if let Some(v) = v
            && (v.trim().is_empty() || v.contains(char::is_whitespace))
        {
            return Err(bad(key(k), format!("{v:?} must be one word")));
        }
    }
    for (k, v) in [
        ("local_directory", &q.local_directory),
        ("log_directory", &q.log_directory),
        ("rask_bin", &q.rask_bin),
    ] {
        if let Some(v) = v
            && (v.trim().is_empty() || v.contains('\n'))
        {
            return Err(bad(key(k), format!("{v:?} is not a path")));
        }
    }
    let extra = split_extra_args(section, &q.worker_extra_args)?;
    let base = JobResources {
        queue: q.queue.clone(),
        account: q.account.clone(),
        project: q.project.clone(),
        walltime: wall,
        cpus: q.job_cpu.unwrap_or(cores),
        memory,
        job_mem: q.job_mem.clone(),
        resource_spec: q.resource_spec.clone(),
        extra_directives: lines(&key("job_extra_directives"), &q.job_extra_directives)?,
        directives_skip: q.job_directives_skip.clone(),
        prologue: lines(&key("job_script_prologue"), &q.job_script_prologue)?,
        epilogue: lines(&key("job_script_epilogue"), &q.job_script_epilogue)?,
        shebang,
    };

    let mut groups = BTreeMap::new();
    for (name, gkey, g, default_replicas) in super::groups(file.worker, file.worker_groups)? {
        let gcores = g.cores.unwrap_or(cores);
        if gcores == 0 {
            return Err(bad(format!("{gkey}.cores"), "must be at least 1"));
        }
        let gprocesses = g.processes.unwrap_or(processes);
        if gprocesses == 0 {
            return Err(bad(format!("{gkey}.processes"), "must be at least 1"));
        }
        if gprocesses > gcores {
            return Err(bad(
                format!("{gkey}.processes"),
                format!(
                    "{gprocesses} worker processes cannot share {gcores} cores (each needs a thread)"
                ),
            ));
        }
        let gmemory = match &g.memory {
            Some(m) => Some(size(&format!("{gkey}.memory"), m)?),
            None => memory,
        };
        let gwall = match &g.walltime {
            Some(w) => walltime(&format!("{gkey}.walltime"), w)?,
            None => wall,
        };
        if let Some(v) = &g.queue
            && (v.trim().is_empty() || v.contains(char::is_whitespace))
        {
            return Err(bad(
                format!("{gkey}.queue"),
                format!("{v:?} must be one word"),
            ));
        }
        let mut job = base.clone();
        job.walltime = gwall;
        if g.cores.is_some() {
            job.cpus = gcores;
        }
        job.memory = gmemory;
        if g.queue.is_some() {
            job.queue = g.queue.clone();
        }
        job.extra_directives.extend(lines(
            &format!("{gkey}.job_extra_directives"),
            &g.job_extra_directives,
        )?);
        let worker = WorkerTemplate {
            nthreads: Some((gcores / gprocesses) as usize),
            memory_limit: match gmemory {
                Some(m) => MemoryLimit::Bytes(m.split(gprocesses)),
                None => MemoryLimit::Auto,
            },
            env: env_vars(&format!("{gkey}.env"), g.env)?,
            resources: None,
        };
        groups.insert(
            name,
            JobTemplate {
                replicas: g.replicas.unwrap_or(default_replicas),
                lifetime: lifetime(section, &q, &extra, gwall, &gkey)?,
                job,
                processes: gprocesses,
                worker,
                interface: q.interface.clone(),
                local_directory: q.local_directory.clone(),
                extra_args: extra.rest.clone(),
            },
        );
    }
    let autoscaling = super::autoscaling(file.autoscaling, groups.keys())?;

    let o = file.scheduler_options;
    if let Some(h) = &o.host
        && h.parse::<std::net::IpAddr>().is_err()
    {
        return Err(bad(
            "scheduler_options.host",
            format!("{h:?} is not an IP address"),
        ));
    }
    if let Some(i) = &o.interface
        && (i.is_empty() || i.contains(char::is_whitespace))
    {
        return Err(bad(
            "scheduler_options.interface",
            format!("{i:?} is not an interface name"),
        ));
    }
    if let Some(d) = &o.dashboard_address
        && !valid_dashboard(d)
    {
        return Err(bad(
            "scheduler_options.dashboard_address",
            format!("{d:?} is not `:PORT` or `HOST:PORT`"),
        ));
    }
    let mut sjob = base.clone();
    sjob.cpus = o.cores.unwrap_or(1);
    if sjob.cpus == 0 {
        return Err(bad("scheduler_options.cores", "must be at least 1"));
    }
    sjob.memory = o
        .memory
        .as_deref()
        .map(|m| size("scheduler_options.memory", m))
        .transpose()?;
    sjob.job_mem = None;
    // The workers' extra directives (GPUs, node features) are not the scheduler's.
    sjob.extra_directives = Vec::new();
    if let Some(w) = &o.walltime {
        sjob.walltime = walltime("scheduler_options.walltime", w)?;
    }
    let location = o.location.unwrap_or_default();
    Ok(BatchCluster {
        name: file.name,
        system,
        scheduler: SchedulerSettings {
            env: env_vars("scheduler.env", file.scheduler.env)?,
            location,
            host: o.host,
            port: o.port,
            dashboard_address: o.dashboard_address,
            interface: o.interface,
            job: sjob,
        },
        groups,
        autoscaling,
        timeouts: super::timeouts(file.timeouts)?,
        log_directory: q.log_directory.map(PathBuf::from),
        rask_bin: q.rask_bin,
        tls: file.tls.unwrap_or(true),
    })
}

fn valid_dashboard(d: &str) -> bool {
    let port = match d.rsplit_once(':') {
        Some((host, port)) => {
            if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
                return false;
            }
            port
        }
        None => d,
    };
    port.parse::<u16>().is_ok()
}

/// Parses a batch cluster's config text; a VM cluster's is an error naming `provider`.
pub fn parse(text: &str) -> Result<BatchCluster, ProviderError> {
    match super::parse(text)? {
        ClusterConfig::Batch(c) => Ok(c),
        ClusterConfig::Vm(c) => Err(bad(
            "provider",
            format!(
                "{} is a cloud, not a batch queue",
                c.provider.name().as_str()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::config::DEFAULT_GROUP;

    const SLURM: &str = "
provider: slurm
name: hpc
slurm:
  queue: debug
  walltime: '01:00:00'
  cores: 4
  memory: 16GB
";

    fn err(text: &str) -> (String, String) {
        match parse(text) {
            Err(ProviderError::Config { key, message, .. }) => (key, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn tls_is_on_unless_the_file_says_false() {
        assert!(parse(SLURM).unwrap().tls);
        assert!(!parse(&format!("{SLURM}tls: false\n")).unwrap().tls);
        assert!(parse(&format!("{SLURM}tls: true\n")).unwrap().tls);
        let e = parse(&format!("{SLURM}tls: maybe\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls") || e.contains("maybe"), "{e}");
    }

    #[test]
    fn jobqueue_keys_settle_into_jobs_and_workers() {
        let c = parse(SLURM).unwrap();
        assert_eq!(c.system, System::Slurm);
        let g = &c.groups[DEFAULT_GROUP];
        assert_eq!(g.replicas, 1);
        assert_eq!(g.job.cpus, 4);
        assert_eq!(g.job.memory, Some(ByteSize(16_000_000_000)));
        assert_eq!(g.worker.nthreads, Some(4));
        assert_eq!(
            g.worker.memory_limit,
            MemoryLimit::Bytes(ByteSize(16_000_000_000))
        );
        // One hour: a margin of 6 minutes, staggered by up to 3 either way.
        assert_eq!(g.lifetime.after, Duration::from_secs(3240));
        assert_eq!(g.lifetime.stagger, Duration::from_secs(180));
        assert_eq!(c.scheduler.location, SchedulerLocation::Local);
        assert_eq!(c.timeouts.pending, Duration::from_secs(60));
    }

    #[test]
    fn processes_split_a_jobs_cores_and_memory() {
        let c = parse(&format!("{SLURM}  processes: 2\n")).unwrap();
        let g = &c.groups[DEFAULT_GROUP];
        assert_eq!(g.processes, 2);
        assert_eq!(g.worker.nthreads, Some(2));
        assert_eq!(
            g.worker.memory_limit,
            MemoryLimit::Bytes(ByteSize(8_000_000_000))
        );
    }

    #[test]
    fn lifetime_flags_of_worker_extra_args_are_understood() {
        let c = parse(&format!(
            "{SLURM}  worker_extra_args: [--lifetime, 50m, --lifetime-stagger=4m, --lifetime-restart, --resources, GPU=1]\n"
        ))
        .unwrap();
        let g = &c.groups[DEFAULT_GROUP];
        assert_eq!(g.lifetime.after, Duration::from_secs(3000));
        assert_eq!(g.lifetime.stagger, Duration::from_secs(240));
        assert!(g.lifetime.restart);
        assert_eq!(g.extra_args, ["--resources", "GPU=1"]);
        // Staggered deadlines stay within the bounds and are fixed per job.
        for job in ["a", "b", "hpc-default-1a2b3c4d"] {
            let t = g.lifetime.for_job(job);
            assert!(t >= Duration::from_secs(2760) && t <= Duration::from_secs(3240));
            assert_eq!(t, g.lifetime.for_job(job));
        }
    }

    #[test]
    fn groups_override_the_job_keys() {
        let c = parse(&format!(
            "{SLURM}worker_groups:\n  big: {{cores: 8, memory: 64GiB, queue: bigmem, walltime: '02:00:00', job_extra_directives: [--gres=gpu:1]}}\n"
        ))
        .unwrap();
        let g = &c.groups["big"];
        assert_eq!(g.replicas, 0);
        assert_eq!(g.job.cpus, 8);
        assert_eq!(g.job.queue.as_deref(), Some("bigmem"));
        assert_eq!(g.job.walltime.hms(), "02:00:00");
        assert_eq!(g.job.extra_directives, ["--gres=gpu:1"]);
        assert_eq!(c.groups[DEFAULT_GROUP].job.queue.as_deref(), Some("debug"));
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            (SLURM.replace("16GB", "lots"), "slurm.memory"),
            (SLURM.replace("'01:00:00'", "soon"), "slurm.walltime"),
            (SLURM.replace("cores: 4", "cores: 0"), "slurm.cores"),
            (format!("{SLURM}  processes: 8\n"), "worker.processes"),
            (format!("{SLURM}  project: p\n"), "slurm.project"),
            (format!("{SLURM}  lifetime: 2h\n"), "slurm.lifetime"),
            (
                format!("{SLURM}  lifetime: 50m\n  worker_extra_args: [--lifetime, 40m]\n"),
                "slurm.lifetime",
            ),
            (
                format!("{SLURM}  worker_extra_args: [--lifetime]\n"),
                "slurm.worker_extra_args[0]",
            ),
            (
                format!("{SLURM}  job_extra_directives: [\"--x\\n#SBATCH --y\"]\n"),
                "slurm.job_extra_directives[0]",
            ),
            (
                SLURM.replace("queue: debug", "queue: two words"),
                "slurm.queue",
            ),
            (format!("{SLURM}sge: {{}}\n"), "sge"),
            (
                format!("{SLURM}scheduler_options: {{host: login1}}\n"),
                "scheduler_options.host",
            ),
            (
                format!("{SLURM}scheduler_options: {{location: moon}}\n"),
                "scheduler_options.location",
            ),
            (
                format!("{SLURM}scheduler_options: {{dashboard_address: 'x:y'}}\n"),
                "scheduler_options.dashboard_address",
            ),
            (
                format!("{SLURM}timeouts: {{pending_seconds: 0}}\n"),
                "timeouts.pending_seconds",
            ),
            (
                format!("{SLURM}autoscaling: {{minimum: 3, maximum: 1}}\n"),
                "autoscaling.minimum",
            ),
            (format!("{SLURM}worker: {{nthreads: 2}}\n"), "worker"),
            (
                "provider: sge\nname: x\nsge: {account: a}\n".to_owned(),
                "sge.account",
            ),
        ];
        for (text, want) in cases {
            let (key, message) = err(&text);
            assert_eq!(key, want, "{message}");
        }
    }

    #[test]
    fn a_cloud_file_is_not_a_batch_file() {
        let (key, _) = err("provider: aws\nname: x\ntls: false\nec2: {region: r, ami: ami-1}\n");
        assert_eq!(key, "provider");
    }
}
