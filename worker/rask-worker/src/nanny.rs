//! The nanny: a worker's supervising parent process (Dask's `Nanny`). `rask worker` runs one by
//! default; it starts the real worker as its child (`rask worker --no-nanny ...`), samples the
//! child's memory, and restarts it:
//!
//! - when the child's resident set goes over the terminate threshold (95% of the memory limit):
//!   it first tells the scheduler why (so a task that keeps doing this fails with that reason),
//!   then kills the child;
//! - when the child dies on its own (a crash, a kill from outside).
//!
//! A child that exits cleanly (the scheduler retired it) ends the nanny too; a signal to the
//! nanny is passed on to the child, which leaves cleanly. The child dies with the nanny
//! ([`die_with_parent`]), so killing the nanny never leaves a worker behind.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use rask_core::net;
use rask_core::protocol::{FromScheduler, ToScheduler};

use crate::memory::MemoryPolicy;
use rask_core::process::process_rss;

/// The environment variable through which a worker learns its nanny's pid.
pub const NANNY_PID_ENV: &str = "RASK_NANNY_PID";

/// How to supervise a worker.
#[derive(Clone, Debug)]
pub struct NannyConfig {
    /// The worker's program and arguments (a worker without a nanny of its own).
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// The scheduler to tell before a kill, and the worker's name there.
    pub scheduler: String,
    pub worker_name: String,
    pub memory: MemoryPolicy,
    /// How often to sample the worker's memory (Dask: 100 ms).
    pub sample_every: Duration,
    /// How long a worker told to leave (a signal) may take before it is killed.
    pub grace: Duration,
    /// For a `tls://` scheduler: the worker's TLS identity, which the nanny shares.
    pub tls: Option<rask_core::tls::TlsConfig>,
}

/// Why the nanny could not supervise.
#[derive(Debug, thiserror::Error)]
pub enum NannyError {
    #[error("cannot start the worker {program}: {source}")]
    Spawn {
        program: PathBuf,
        source: std::io::Error,
    },
    #[error("lost track of the worker process: {0}")]
    Wait(std::io::Error),
}

/// How a supervised worker ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It exited cleanly: closed by the scheduler (retired) or by a signal passed on.
    Exited(Option<i32>),
}

/// Supervises the worker until it exits cleanly or `stop` resolves (then the worker is told to
/// leave and given `grace` to do so).
pub async fn supervise(
    config: NannyConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<Ended, NannyError> {
    tokio::pin!(stop);
    let terminate = config.memory.terminate_bytes();
    let mut restarts: u32 = 0;
    loop {
        let mut child = spawn(&config)?;
        let pid = child.id();
        tracing::info!(worker = %config.worker_name, pid, "nanny started the worker");
        let mut sample = tokio::time::interval(config.sample_every);
        sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let started = tokio::time::Instant::now();
        let restart_reason = loop {
            tokio::select! {
                status = child.wait() => {
                    let status = status.map_err(NannyError::Wait)?;
                    if status.success() {
                        tracing::info!(worker = %config.worker_name, "worker exited; nanny leaving");
                        return Ok(Ended::Exited(status.code()));
                    }
                    break describe(status);
                }
                _ = sample.tick(), if terminate.is_some() => {
                    let (Some(limit), Some(rss)) = (terminate, pid.and_then(|p| process_rss(Some(p)))) else {
                        continue;
                    };
                    if rss <= limit {
                        continue;
                    }
                    let reason = format!(
                        "worker {} used {} of memory, over {:.0}% of its {} limit; the nanny restarted it",
                        config.worker_name,
                        human_bytes(rss),
                        config.memory.fractions.terminate.unwrap_or(1.0) * 100.0,
                        human_bytes(config.memory.limit),
                    );
                    tracing::warn!(worker = %config.worker_name, rss, limit, "{reason}");
                    tell_scheduler(&config, &reason).await;
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    break reason;
                }
                () = &mut stop => {
                    leave(&mut child, config.grace).await;
                    let status = child.try_wait().ok().flatten();
                    return Ok(Ended::Exited(status.and_then(|s| s.code())));
                }
            }
        };
        // A worker that keeps dying at once is restarted more slowly, up to 5 s apart.
        restarts = if started.elapsed() < Duration::from_secs(10) {
            restarts + 1
        } else {
            0
        };
        let delay =
            Duration::from_millis(100 * 2u64.pow(restarts.min(6))).min(Duration::from_secs(5));
        tracing::warn!(worker = %config.worker_name, reason = %restart_reason, ?delay, "restarting the worker");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut stop => return Ok(Ended::Exited(None)),
        }
    }
}

fn spawn(config: &NannyConfig) -> Result<Child, NannyError> {
    Command::new(&config.program)
        .args(&config.args)
        .env(NANNY_PID_ENV, std::process::id().to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| NannyError::Spawn {
            program: config.program.clone(),
            source,
        })
}

/// Asks the worker to leave (SIGTERM: it tells the scheduler, which reschedules its work) and
/// kills it if it has not left after `grace`.
async fn leave(child: &mut Child, grace: Duration) {
    if let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Tells the scheduler the worker is about to be killed and why, and waits (briefly) for it to
/// take note, so the worker's tasks fail with the reason rather than as a mere lost worker.
async fn tell_scheduler(config: &NannyConfig, reason: &str) {
    let notice = async {
        let stream = net::connect(
            &config.scheduler,
            config.tls.as_ref(),
            Duration::from_secs(1),
        )
        .await
        .ok()?;
        let (tx, mut rx) = net::split::<ToScheduler>(stream, config.scheduler.clone());
        tx.send(ToScheduler::WorkerKilled {
            name: config.worker_name.clone(),
            reason: reason.to_owned(),
        });
        match rx
            .recv::<FromScheduler>()
            .await
            .ok()??
            .first()
            .map(|e| &e.msg)
        {
            Some(FromScheduler::Welcome { .. }) => Some(()),
            _ => None,
        }
    };
    if tokio::time::timeout(Duration::from_secs(2), notice)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        tracing::warn!(scheduler = %config.scheduler, "could not tell the scheduler before restarting the worker");
    }
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("the worker exited with status {code}"),
        (None, Some(sig)) => format!("the worker was killed by signal {sig}"),
        _ => "the worker ended".to_owned(),
    }
}

/// `1.90 GiB`, `512.0 MiB`.
pub fn human_bytes(n: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let n = n as f64;
    if n >= GIB {
        format!("{:.2} GiB", n / GIB)
    } else {
        format!("{:.1} MiB", n / MIB)
    }
}

/// For a worker started by a nanny: dies with the nanny (Linux's parent-death signal), and exits
/// at once if the nanny is already gone. Without a nanny (`RASK_NANNY_PID` unset) does nothing.
pub fn die_with_parent() -> Result<(), String> {
    let Ok(value) = std::env::var(NANNY_PID_ENV) else {
        return Ok(());
    };
    let nanny: i32 = value
        .parse()
        .map_err(|_| format!("{NANNY_PID_ENV}={value:?} is not a process id"))?;
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("cannot follow the nanny's lifetime: {e}"))?;
    // The nanny may have died before the death signal was set.
    match rustix::process::getppid() {
        Some(p) if p.as_raw_nonzero().get() == nanny => Ok(()),
        _ => Err(format!("the nanny (pid {nanny}) is gone")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_for_people() {
        assert_eq!(human_bytes(3 << 29), "1.50 GiB");
        assert_eq!(human_bytes(200 << 20), "200.0 MiB");
    }
}
