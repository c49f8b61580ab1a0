//! Son of Grid Engine through its commands: `qsub -terse` (the script on stdin), `qstat` (the
//! user's jobs with their state letters, then `qstat -j` for the full name, the rask context and
//! the scheduling information of the rask ones), `qdel`. Times are read with `TZ=UTC`, so no
//! time zone database is needed to turn them into seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{BatchSystem, COMMAND_TIMEOUT, Job, JobRole, JobState, Tag, run};
use crate::providers::ProviderError;
use crate::providers::config::batch::System;

const SYSTEM: &str = "sge";

#[derive(Clone, Debug, Default)]
pub struct Sge;

/// One line of `qstat`'s job list.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    pub id: String,
    pub state: String,
    /// Submission time for waiting jobs, start time for running ones (UTC).
    pub time: Option<f64>,
}

/// `qstat -u USER`'s table (after its two header lines).
pub fn parse_qstat(out: &str) -> Vec<Listed> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 7 || !f[0].chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            Some(Listed {
                id: f[0].to_owned(),
                state: f[4].to_owned(),
                time: utc_seconds(f[5], f[6]),
            })
        })
        .collect()
}

/// `MM/DD/YYYY` and `HH:MM:SS` in UTC as seconds since the epoch.
pub fn utc_seconds(date: &str, time: &str) -> Option<f64> {
    let d: Vec<i64> = date
        .split('/')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let ([m, day, y], [hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64)
}

/// The `key: value` fields of each job in `qstat -j ID,...`, continuation lines joined.
pub fn parse_qstat_j(out: &str) -> Vec<BTreeMap<String, String>> {
    let mut jobs = Vec::new();
    let mut cur: BTreeMap<String, String> = BTreeMap::new();
    let mut last: Option<String> = None;
    for line in out.lines() {
        if line.starts_with("=====") {
            if !cur.is_empty() {
                jobs.push(std::mem::take(&mut cur));
            }
            last = None;
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            if let Some(k) = &last
                && let Some(v) = cur.get_mut(k)
            {
                v.push('\n');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            // `error reason    1:` and `usage    1:` carry a task number.
            let key = k.split_whitespace().collect::<Vec<_>>().join(" ");
            let key = key
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim()
                .to_owned();
            cur.insert(key.clone(), v.trim().to_owned());
            last = Some(key);
        }
    }
    if !cur.is_empty() {
        jobs.push(cur);
    }
    jobs
}

/// How `qacct -j` says a job ended: `exit status 1` or `failed (11: before job), exit status 0`.
pub fn parse_qacct(out: &str) -> Option<String> {
    let field = |k: &str| {
        out.lines()
            .rev()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_owned()))
    };
    let status = field("exit_status")?;
    let code = status.split_whitespace().next().unwrap_or("0");
    match field("failed").filter(|f| !f.starts_with('0')) {
        Some(f) => Some(format!("failed ({f}), exit status {code}")),
        None => Some(format!("exit status {code}")),
    }
}

/// The rask tag in a job's context (`rask_cluster=...,rask_role=...,rask_group=...`).
pub fn parse_context(context: &str) -> Option<Tag> {
    let mut cluster = None;
    let mut role = None;
    let mut group = None;
    for kv in context.split(',') {
        match kv.trim().split_once('=') {
            Some(("rask_cluster", v)) => cluster = Some(v.to_owned()),
            Some(("rask_role", "scheduler")) => role = Some(JobRole::Scheduler),
            Some(("rask_role", "worker")) => role = Some(JobRole::Worker),
            Some(("rask_group", v)) => group = Some(v.to_owned()),
            _ => {}
        }
    }
    Some(Tag {
        cluster: cluster.filter(|c| !c.is_empty())?,
        role: role?,
        group,
    })
}

/// A job's state from its state letters and, when waiting, SGE's first scheduling message.
fn state(letters: &str, details: &BTreeMap<String, String>) -> JobState {
    let first = |k: &str| {
        details
            .get(k)
            .and_then(|v| v.lines().next())
            .map(str::to_owned)
    };
    if letters.contains('E') {
        return JobState::Ending {
            state: format!(
                "in error ({})",
                first("error reason").unwrap_or_else(|| "no reason given".into())
            ),
        };
    }
    if letters.contains('d') {
        return JobState::Ending {
            state: "being deleted".into(),
        };
    }
    if letters.contains('q') && letters.contains('w') {
        let reason = if letters.contains('h') {
            "held".to_owned()
        } else {
            first("scheduling info").unwrap_or_else(|| "waiting for a slot".into())
        };
        return JobState::Pending { reason };
    }
    if letters.contains('r') || letters.contains('t') {
        return JobState::Running;
    }
    JobState::Ending {
        state: format!("in state {letters}"),
    }
}

fn user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .unwrap_or_else(|| "root".into())
}

impl BatchSystem for Sge {
    fn system(&self) -> System {
        System::Sge
    }

    async fn submit(&self, script: &str) -> Result<String, ProviderError> {
        let out = run(
            SYSTEM,
            "qsub",
            &["-terse"],
            &[],
            Some(script),
            COMMAND_TIMEOUT,
        )
        .await?;
        // An array job would answer `ID.1-N:1`; rask submits single jobs.
        let id = out.trim().split('.').next().unwrap_or_default().to_owned();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
            return Err(ProviderError::Command {
                system: SYSTEM,
                command: "qsub -terse".into(),
                code: Some(0),
                message: format!("no job id in its answer {:?}", out.trim()),
            });
        }
        Ok(id)
    }

    async fn jobs(&self, cluster: Option<&str>) -> Result<Vec<Job>, ProviderError> {
        let user = user();
        let env = [("TZ", "UTC")];
        let listed =
            parse_qstat(&run(SYSTEM, "qstat", &["-u", &user], &env, None, COMMAND_TIMEOUT).await?);
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
        // A job may end between the two calls: `qstat -j` then fails for it alone, so a failure
        // is retried once with the jobs still listed.
        let details = match run(
            SYSTEM,
            "qstat",
            &["-j", &ids.join(",")],
            &env,
            None,
            COMMAND_TIMEOUT,
        )
        .await
        {
            Ok(out) => out,
            Err(_) => {
                let again = parse_qstat(
                    &run(SYSTEM, "qstat", &["-u", &user], &env, None, COMMAND_TIMEOUT).await?,
                );
                let ids: Vec<&str> = again.iter().map(|l| l.id.as_str()).collect();
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                run(
                    SYSTEM,
                    "qstat",
                    &["-j", &ids.join(",")],
                    &env,
                    None,
                    COMMAND_TIMEOUT,
                )
                .await?
            }
        };
        let by_id: BTreeMap<String, BTreeMap<String, String>> = parse_qstat_j(&details)
            .into_iter()
            .filter_map(|d| Some((d.get("job_number")?.clone(), d)))
            .collect();
        let mut out = Vec::new();
        for l in listed {
            let Some(d) = by_id.get(&l.id) else { continue };
            let Some(tag) = d.get("context").and_then(|c| parse_context(c)) else {
                continue;
            };
            if cluster.is_some_and(|c| tag.cluster != c) {
                continue;
            }
            let state = state(&l.state, d);
            let running = state == JobState::Running;
            out.push(Job {
                id: l.id.clone(),
                name: d.get("job_name").cloned().unwrap_or_default(),
                tag,
                state,
                submitted: if running { None } else { l.time },
                started: if running { l.time } else { None },
            });
        }
        Ok(out)
    }

    async fn cancel(&self, ids: &[String]) -> Result<(), ProviderError> {
        if ids.is_empty() {
            return Ok(());
        }
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        match run(SYSTEM, "qdel", &args, &[], None, COMMAND_TIMEOUT).await {
            Ok(_) => Ok(()),
            // Jobs that already ended are what qdel was for.
            Err(ProviderError::Command { message, .. }) if message.contains("does not exist") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn ended(&self, id: &str) -> Option<String> {
        let out = run(
            SYSTEM,
            "qacct",
            &["-j", id],
            &[],
            None,
            std::time::Duration::from_secs(15),
        )
        .await
        .ok()?;
        parse_qacct(&out)
    }

    fn output_files(&self, job: &Job, log_dir: &Path) -> Vec<PathBuf> {
        vec![log_dir.join(format!("{}.o{}", job.name, job.id))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qstat_lists_and_details() {
        let list = "\
job-ID  prior   name       user         state submit/start at     queue                          slots ja-task-ID
-----------------------------------------------------------------------------------------------------------------
      6 0.50000 hpc-schedu root         r     12/04/2026 17:15:18 all.q@vm                           1
      5 0.00000 hpc-defaul root         hqw   12/04/2026 17:15:16                                    1
";
        let l = parse_qstat(list);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].state, "r");
        assert_eq!(l[0].time, Some(1_796_404_518.0));
        let details = "\
==============================================================
job_number:                 5
job_name:                   hpc-default-1a2b3c4d
context:                    rask_cluster=hpc,rask_role=worker,rask_group=default
scheduling info:            queue instance \"all.q@vm\" dropped because it is temporarily not available
                            All queues dropped because of overload or full
==============================================================
job_number:                 7
job_name:                   other
error reason    1:          12/04/2026 16:43:48 [0:1042]: gid of user root (0) less than minimum
";
        let d = parse_qstat_j(details);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0]["job_name"], "hpc-default-1a2b3c4d");
        let tag = parse_context(&d[0]["context"]).unwrap();
        assert_eq!(tag.group.as_deref(), Some("default"));
        assert_eq!(
            state("qw", &d[0]),
            JobState::Pending {
                reason:
                    "queue instance \"all.q@vm\" dropped because it is temporarily not available"
                        .into()
            }
        );
        assert_eq!(
            state("hqw", &d[0]),
            JobState::Pending {
                reason: "held".into()
            }
        );
        assert!(
            matches!(state("Eqw", &d[1]), JobState::Ending { state } if state.contains("less than minimum"))
        );
        assert_eq!(state("r", &d[1]), JobState::Running);
        assert_eq!(parse_context("team=x"), None);
    }

    #[test]
    fn how_a_job_ended() {
        let ok = "qname        all.q\nfailed       0    \nexit_status  1                   \n";
        assert_eq!(parse_qacct(ok).as_deref(), Some("exit status 1"));
        let failed = "failed       11  : before job\nexit_status  0\n";
        assert_eq!(
            parse_qacct(failed).as_deref(),
            Some("failed (11  : before job), exit status 0")
        );
        assert_eq!(parse_qacct("error: job id 9 not found"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc_seconds("01/01/1970", "00:00:00"), Some(0.0));
        assert_eq!(utc_seconds("02/29/2024", "12:00:00"), Some(1_709_208_000.0));
        assert_eq!(utc_seconds("2024-02-29", "12:00:00"), None);
    }
}
