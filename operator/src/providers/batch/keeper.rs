//! What keeps a batch cluster after `up` returned (`rask-operator keep NAME`, started by `up` in
//! the background): every interval it
//!
//! 1. retires workers whose job nears its walltime — at the job's lifetime (staggered), a
//!    replacement job is submitted first where the group needs one, and once the replacement
//!    joined (or halfway to the walltime at the latest) the old worker is retired through the
//!    scheduler, which moves its results to the others, and only then is its job cancelled;
//! 2. reports jobs pending longer than `timeouts.pending_seconds` with the batch system's reason;
//! 3. runs the autoscaler's step for the `autoscaling:` group (pending jobs count as workers, so
//!    a waiting queue is never flooded past `maximum`);
//! 4. cancels the cluster's jobs and ends when the scheduler has not answered for a minute (or
//!    `timeouts.scheduler_seconds`, when shorter).
//!
//! The choices are pure functions ([`due`], [`needs_replacement`]); the loop around them is
//! thin.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use super::{BatchBackend, BatchSystem, Job, JobRole, JobState};
use crate::autoscaler::driver;
use crate::autoscaler::policy::Policy;
use crate::backend::Backend;
use crate::clock::now;
use crate::providers::ProviderError;
use crate::providers::config::batch::BatchCluster;

/// How long the scheduler may stay silent before the cluster is given up: a minute, or the
/// scheduler's start timeout when that is shorter.
pub fn scheduler_lost_after(cluster: &BatchCluster) -> Duration {
    cluster.timeouts.scheduler.min(Duration::from_secs(60))
}

/// A running worker job past its lifetime.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    pub job: String,
    pub group: String,
    /// When it must be retired at the latest (halfway from its lifetime to its walltime), in
    /// seconds since the epoch.
    pub hard_deadline: f64,
}

/// The running worker jobs whose (staggered) lifetime has passed at `now`.
pub fn due(cluster: &BatchCluster, jobs: &[Job], now: f64) -> Vec<Due> {
    jobs.iter()
        .filter(|j| j.tag.role == JobRole::Worker && j.state == JobState::Running)
        .filter_map(|j| {
            let group = j.tag.group.clone()?;
            let g = cluster.groups.get(&group)?;
            let started = j.started?;
            let life = g.lifetime.for_job(&j.name).as_secs_f64();
            let wall = g.job.walltime.duration().as_secs_f64();
            (now >= started + life).then(|| Due {
                job: j.name.clone(),
                hard_deadline: started + life + (wall - life) / 2.0,
                group,
            })
        })
        .collect()
}

/// Whether retiring a worker job of `group` calls for a replacement: always in a group of fixed
/// size (it keeps its size) and with `--lifetime-restart`; in the autoscaled group only when the
/// others would fall below the autoscaler's minimum (the autoscaler adds more when there is
/// work).
pub fn needs_replacement(cluster: &BatchCluster, group: &str, others: usize) -> bool {
    let Some(g) = cluster.groups.get(group) else {
        return false;
    };
    match &cluster.autoscaling {
        Some(a) if a.group == group => g.lifetime.restart || others < a.settings.minimum,
        _ => true,
    }
}

#[derive(Clone, Debug)]
struct Retiring {
    group: String,
    workers: Vec<String>,
    replacement: Vec<String>,
    hard_deadline: f64,
    done: bool,
}

/// The keeper's memory between looks.
pub struct Keeper<S: BatchSystem> {
    pub backend: Arc<BatchBackend<S>>,
    pub interval: Duration,
    policy: Option<(String, Policy)>,
    retiring: BTreeMap<String, Retiring>,
    /// Pending jobs already reported, with the reason reported.
    reported: BTreeMap<String, String>,
    last_answer: f64,
}

impl<S: BatchSystem> Keeper<S> {
    pub fn new(backend: Arc<BatchBackend<S>>, interval: Duration) -> Self {
        let policy = backend
            .cluster
            .autoscaling
            .as_ref()
            .map(|a| (a.group.clone(), Policy::new(a.settings.clone())));
        Keeper {
            backend,
            interval,
            policy,
            retiring: BTreeMap::new(),
            reported: BTreeMap::new(),
            last_answer: now(),
        }
    }

    /// Looks every interval until `stop` turns true, or until the scheduler is lost (then the
    /// cluster's jobs are cancelled and the error says so).
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), ProviderError> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
            if let Err(e) = self.step().await {
                if matches!(e, ProviderError::NoSuchCluster { .. }) {
                    return Err(e);
                }
                tracing::warn!(error = %e, "keeping the cluster: this look failed; trying again");
            }
        }
    }

    /// One look.
    pub async fn step(&mut self) -> Result<(), ProviderError> {
        let b = self.backend.clone();
        let t = now();
        let known: Option<BTreeSet<String>> = match b.api.get_workers(&b.scheduler.dashboard).await
        {
            Ok(ws) => {
                self.last_answer = t;
                Some(ws.into_iter().map(|w| w.name).collect())
            }
            Err(e) => {
                let silent = t - self.last_answer;
                tracing::warn!(error = %e, silent_s = silent as u64, "the scheduler does not answer");
                if silent >= scheduler_lost_after(&b.cluster).as_secs_f64() {
                    let _ = b.delete_cluster().await;
                    return Err(ProviderError::NoSuchCluster {
                        name: b.cluster.name.clone(),
                        reason: format!(
                            "its scheduler at {} has not answered for {silent:.0} s: the cluster's \
                             jobs were cancelled",
                            b.scheduler.dashboard
                        ),
                    });
                }
                None
            }
        };
        let jobs = b.worker_jobs().await?;
        self.report_pending(&jobs, t);
        if let Some(known) = &known {
            self.retire_due(&jobs, known, t).await?;
        }
        if let Some((group, policy)) = &mut self.policy {
            let s = driver::step(&*b, &b.api, group, policy).await;
            let changed = match &s.outcome {
                Ok(driver::Outcome::Added(n)) => !n.is_empty(),
                Ok(driver::Outcome::Retired(r)) => !r.removed.is_empty() || !r.kept.is_empty(),
                Ok(driver::Outcome::Held) => false,
                Err(_) => true,
            };
            if changed {
                tracing::info!(
                    group = %group,
                    current = s.current,
                    target = ?s.target,
                    decision = s.decision.reason(),
                    outcome = ?s.outcome,
                    "autoscaler step"
                );
            }
        }
        Ok(())
    }

    fn report_pending(&mut self, jobs: &[Job], t: f64) {
        let pending_after = self.backend.cluster.timeouts.pending.as_secs_f64();
        let mut still = BTreeMap::new();
        for j in jobs {
            let JobState::Pending { reason } = &j.state else {
                continue;
            };
            let waited = j.submitted.map_or(0.0, |s| t - s);
            if waited < pending_after {
                continue;
            }
            if self.reported.get(&j.id) != Some(reason) {
                tracing::warn!(
                    job = %j.id,
                    name = %j.name,
                    reason = %reason,
                    waited_s = waited as u64,
                    "job still pending"
                );
            }
            still.insert(j.id.clone(), reason.clone());
        }
        self.reported = still;
    }

    async fn retire_due(
        &mut self,
        jobs: &[Job],
        known: &BTreeSet<String>,
        t: f64,
    ) -> Result<(), ProviderError> {
        let b = self.backend.clone();
        let present: BTreeSet<&str> = jobs.iter().map(|j| j.name.as_str()).collect();
        self.retiring
            .retain(|job, _| present.contains(job.as_str()));
        for d in due(&b.cluster, jobs, t) {
            if self.retiring.contains_key(&d.job) {
                continue;
            }
            let processes = b.cluster.groups.get(&d.group).map_or(1, |g| g.processes);
            let workers = BatchBackend::<S>::worker_names(&d.job, processes);
            let others = jobs
                .iter()
                .filter(|j| {
                    j.tag.group.as_deref() == Some(d.group.as_str())
                        && !matches!(j.state, JobState::Ending { .. })
                        && j.name != d.job
                        && !self.retiring.contains_key(&j.name)
                })
                .count()
                * processes as usize;
            let replacement = if needs_replacement(&b.cluster, &d.group, others) {
                let made = b.submit_workers(&d.group, processes as usize).await?;
                made.into_iter().flat_map(|(_, w)| w).collect()
            } else {
                Vec::new()
            };
            tracing::info!(
                job = %d.job,
                group = %d.group,
                replacement = ?replacement,
                "worker job reached its lifetime: retiring it before its walltime"
            );
            self.retiring.insert(
                d.job.clone(),
                Retiring {
                    group: d.group,
                    workers,
                    replacement,
                    hard_deadline: d.hard_deadline,
                    done: false,
                },
            );
        }
        for (job, r) in self.retiring.iter_mut() {
            if r.done {
                continue;
            }
            let replaced = r.replacement.iter().all(|w| known.contains(w));
            let late = t >= r.hard_deadline;
            if !replaced && !late {
                continue;
            }
            let retirement = b
                .retire_workers(&r.group, &r.workers)
                .await
                .map_err(|e| ProviderError::Other(e.to_string()))?;
            if retirement.kept.is_empty() {
                tracing::info!(job = %job, workers = ?retirement.removed, "retired; its results moved to other workers");
                r.done = true;
            } else if late {
                tracing::warn!(
                    job = %job,
                    workers = ?retirement.kept,
                    "the scheduler would not retire these workers (their results have nowhere to \
                     go) and the walltime is near: cancelling the job; its results will be \
                     recomputed"
                );
                b.cancel_workers(&r.workers).await?;
                r.done = true;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::batch::Tag;
    use crate::providers::config::batch::parse;

    fn job(name: &str, group: &str, state: JobState, started: Option<f64>) -> Job {
        Job {
            id: name.into(),
            name: name.into(),
            tag: Tag {
                cluster: "hpc".into(),
                role: JobRole::Worker,
                group: Some(group.into()),
            },
            state,
            submitted: Some(0.0),
            started,
        }
    }

    const FILE: &str = "provider: slurm\nname: hpc\nslurm: {walltime: '00:10:00', lifetime: 5m}\nworker_groups:\n  auto: {}\nautoscaling: {minimum: 1, maximum: 3, worker_group: auto}\n";

    #[test]
    fn jobs_are_due_at_their_lifetime_and_must_go_halfway_to_the_walltime() {
        let c = parse(FILE).unwrap();
        let jobs = [
            job("a", "default", JobState::Running, Some(1000.0)),
            job("b", "default", JobState::Running, Some(1200.0)),
            job(
                "c",
                "default",
                JobState::Pending {
                    reason: "Priority".into(),
                },
                None,
            ),
        ];
        assert!(due(&c, &jobs, 1299.0).is_empty());
        let d = due(&c, &jobs, 1300.0);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].job, "a");
        // Lifetime 300 s, walltime 600 s: at the latest 450 s after the start.
        assert_eq!(d[0].hard_deadline, 1450.0);
        assert_eq!(due(&c, &jobs, 1500.0).len(), 2);
    }

    #[test]
    fn replacements_keep_fixed_groups_and_the_autoscalers_minimum() {
        let c = parse(FILE).unwrap();
        let table = [
            ("default", 0, true),
            ("default", 5, true),
            ("auto", 0, true),
            ("auto", 1, false),
            ("nope", 0, false),
        ];
        for (group, others, want) in table {
            assert_eq!(
                needs_replacement(&c, group, others),
                want,
                "{group} {others}"
            );
        }
        let restart = parse(&FILE.replace(
            "lifetime: 5m}",
            "lifetime: 5m, worker_extra_args: [--lifetime-restart]}",
        ))
        .unwrap();
        assert!(needs_replacement(&restart, "auto", 2));
    }
}
