//! SLURM through its commands: `sbatch` (the script on stdin), `squeue` (the user's jobs, with
//! times as seconds since the epoch and the pending reason), `scancel`. rask's jobs are those
//! whose comment is a rask [`Tag`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{BatchSystem, COMMAND_TIMEOUT, Job, JobState, Tag, run};
use crate::providers::ProviderError;
use crate::providers::config::batch::System;

const SYSTEM: &str = "slurm";
/// Job states that still hold (or will hold) resources.
const ACTIVE: &str = "PENDING,CONFIGURING,RUNNING,SUSPENDED,COMPLETING,RESIZING,REQUEUED,REQUEUE_HOLD,REQUEUE_FED,SIGNALING,STAGE_OUT,STOPPED";

#[derive(Clone, Debug, Default)]
pub struct Slurm;

/// One `squeue -o '%i|%j|%T|%V|%S|%r|%k'` line; the comment comes last, so a `|` in it stays.
pub fn parse_squeue(out: &str) -> Vec<Job> {
    out.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.trim().splitn(7, '|').collect();
            let [id, name, state, submitted, started, reason, comment] = f.as_slice() else {
                return None;
            };
            let tag = Tag::parse_comment(comment)?;
            let time = |t: &str| t.trim().parse::<f64>().ok();
            let state = match *state {
                "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" => JobState::Pending {
                    reason: reason.trim().to_owned(),
                },
                "RUNNING" | "CONFIGURING" => JobState::Running,
                other => JobState::Ending {
                    state: other.to_lowercase(),
                },
            };
            Some(Job {
                id: id.trim().to_owned(),
                name: name.trim().to_owned(),
                tag,
                started: if state == JobState::Running {
                    time(started)
                } else {
                    None
                },
                state,
                submitted: time(submitted),
            })
        })
        .collect()
}

/// How `scontrol -o show job` says a job ended: `FAILED (NonZeroExitCode), exit code 3:0`.
pub fn parse_scontrol_end(out: &str) -> Option<String> {
    let field = |k: &str| {
        out.split_whitespace()
            .find_map(|f| f.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
    };
    let state = field("JobState")?;
    let mut s = state.to_owned();
    if let Some(r) = field("Reason").filter(|r| *r != "None") {
        s.push_str(&format!(" ({r})"));
    }
    if let Some(c) = field("ExitCode") {
        s.push_str(&format!(", exit code {c}"));
    }
    Some(s)
}

/// `Submitted batch job 123` or `--parsable`'s `123[;cluster]`.
fn parse_sbatch(out: &str) -> Option<String> {
    let t = out.trim();
    let id = t.strip_prefix("Submitted batch job ").unwrap_or(t);
    let id = id.split(';').next()?.trim();
    (!id.is_empty() && id.chars().all(|c| c.is_ascii_digit())).then(|| id.to_owned())
}

impl BatchSystem for Slurm {
    fn system(&self) -> System {
        System::Slurm
    }

    async fn submit(&self, script: &str) -> Result<String, ProviderError> {
        let out = run(
            SYSTEM,
            "sbatch",
            &["--parsable"],
            &[],
            Some(script),
            COMMAND_TIMEOUT,
        )
        .await?;
        parse_sbatch(&out).ok_or_else(|| ProviderError::Command {
            system: SYSTEM,
            command: "sbatch --parsable".into(),
            code: Some(0),
            message: format!("no job id in its answer {:?}", out.trim()),
        })
    }

    async fn jobs(&self, cluster: Option<&str>) -> Result<Vec<Job>, ProviderError> {
        let out = run(
            SYSTEM,
            "squeue",
            &[
                "--me",
                "--noheader",
                "-t",
                ACTIVE,
                "-o",
                "%i|%j|%T|%V|%S|%r|%k",
            ],
            &[("SLURM_TIME_FORMAT", "%s")],
            None,
            COMMAND_TIMEOUT,
        )
        .await?;
        Ok(parse_squeue(&out)
            .into_iter()
            .filter(|j| cluster.is_none_or(|c| j.tag.cluster == c))
            .collect())
    }

    async fn cancel(&self, ids: &[String]) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        // scancel says nothing, and succeeds, for jobs that already ended.
        run(SYSTEM, "scancel", &args, &[], None, COMMAND_TIMEOUT).await?;
        Ok(())
    }

    async fn ended(&self, id: &str) -> Option<String> {
        // sacct needs accounting (slurmdbd); scontrol remembers jobs for MinJobAge seconds.
        let timeout = Duration::from_secs(15);
        if let Ok(out) = run(
            SYSTEM,
            "sacct",
            &["-n", "-P", "-X", "-j", id, "-o", "State,ExitCode"],
            &[],
            None,
            timeout,
        )
        .await
            && let Some(line) = out.lines().find(|l| !l.trim().is_empty())
            && let Some((state, code)) = line.split_once('|')
        {
            return Some(format!("{state}, exit code {code}"));
        }
        let out = run(
            SYSTEM,
            "scontrol",
            &["-o", "show", "job", id],
            &[],
            None,
            timeout,
        )
        .await
        .ok()?;
        parse_scontrol_end(&out)
    }

    fn output_files(&self, job: &Job, log_dir: &Path) -> Vec<PathBuf> {
        ["out", "err"]
            .iter()
            .map(|ext| log_dir.join(format!("{}-{}.{ext}", job.name, job.id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::batch::JobRole;

    #[test]
    fn squeue_lines_become_jobs_and_others_jobs_are_left_out() {
        let out = "\
12|hpc-default-1a2b3c4d|PENDING|1796404400|N/A|JobHeldUser|rask:cluster=hpc,role=worker,group=default
13|hpc-scheduler|RUNNING|1796404400|1796404401|None|rask:cluster=hpc,role=scheduler
14|analysis|RUNNING|1796404400|1796404401|None|(null)
15|hpc-default-5e6f7a8b|COMPLETING|1796404400|1796404401|None|rask:cluster=hpc,role=worker,group=default
16|odd|RUNNING|1|2|None|my|comment|with|bars
";
        let jobs = parse_squeue(out);
        assert_eq!(jobs.len(), 3);
        assert_eq!(
            jobs[0].state,
            JobState::Pending {
                reason: "JobHeldUser".into()
            }
        );
        assert_eq!(jobs[0].started, None);
        assert_eq!(jobs[0].tag.group.as_deref(), Some("default"));
        assert_eq!(jobs[1].tag.role, JobRole::Scheduler);
        assert_eq!(jobs[1].started, Some(1796404401.0));
        assert_eq!(
            jobs[2].state,
            JobState::Ending {
                state: "completing".into()
            }
        );
    }

    #[test]
    fn how_a_job_ended() {
        let out = "JobId=81 JobName=wrap JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:00";
        assert_eq!(
            parse_scontrol_end(out).as_deref(),
            Some("FAILED (NonZeroExitCode), exit code 3:0")
        );
        assert_eq!(
            parse_scontrol_end("JobId=2 JobState=TIMEOUT Reason=None ExitCode=0:15").as_deref(),
            Some("TIMEOUT, exit code 0:15")
        );
        assert_eq!(
            parse_scontrol_end("slurm_load_jobs error: Invalid job id"),
            None
        );
    }

    #[test]
    fn sbatch_answers() {
        assert_eq!(parse_sbatch("42\n"), Some("42".into()));
        assert_eq!(parse_sbatch("42;cluster2\n"), Some("42".into()));
        assert_eq!(parse_sbatch("Submitted batch job 7\n"), Some("7".into()));
        assert_eq!(parse_sbatch("sbatch: error: x"), None);
    }
}
