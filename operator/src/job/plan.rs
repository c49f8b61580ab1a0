//! The pure heart of the DaskJob controller: from the validated job, its last status and what
//! exists now, the next status and the steps that bring the world there. Every decision is a
//! function of stored state (the status, the pods, the cluster), so an operator restarted between
//! any two steps decides the same again.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::validate::ValidatedJob;
use crate::conditions::condition;
use crate::crd::{DaskJobStatus, JobStatus};

/// A runner pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What the plan needs of a runner pod.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerView {
    pub name: String,
    pub attempt: u32,
    pub phase: RunnerPhase,
    /// The first terminated container's exit code, reason and message.
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    /// Runs that failed inside this pod (restarted in place with `restartPolicy: OnFailure`).
    pub failed_runs: u32,
    pub started: Option<Timestamp>,
    pub deleting: bool,
}

/// What the plan needs of the job's cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterView {
    /// Owned by this job (a DaskCluster of that name made by someone else is left alone).
    pub owned: bool,
    /// Its status says `Running`: the scheduler is ready.
    pub scheduler_ready: bool,
    pub deleting: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub cluster: Option<ClusterView>,
    pub runners: Vec<RunnerView>,
}

/// A change to make, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Made once, as dask-kubernetes does: afterwards the cluster is the user's and the
    /// autoscaler's to scale (re-applying the job's template would undo their scaling).
    CreateCluster,
    CreateRunner(u32),
    /// Stop a runner that is still running (the deadline passed).
    DeleteRunner(String),
    DeleteCluster,
    /// `ttlSecondsAfterFinished` has passed.
    DeleteJob,
}

impl Step {
    /// Creations happen before the status is written, deletions after it.
    pub fn is_deletion(&self) -> bool {
        matches!(
            self,
            Step::DeleteRunner(_) | Step::DeleteCluster | Step::DeleteJob
        )
    }
}

/// An Event to publish once the status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub status: DaskJobStatus,
    pub steps: Vec<Step>,
    pub notes: Vec<Note>,
    /// When to look again even if nothing changes (a deadline or a TTL).
    pub requeue: Option<Duration>,
}

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        warning,
        reason,
        message,
    }
}

fn until(now: Timestamp, at: Timestamp) -> Duration {
    let left = at.duration_since(now);
    Duration::try_from(left).unwrap_or(Duration::ZERO)
}

fn plus(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

fn set_condition(list: &mut Vec<Condition>, c: Condition) {
    match list.iter_mut().find(|x| x.type_ == c.type_) {
        Some(x) => *x = c,
        None => list.push(c),
    }
}

pub fn plan(v: &ValidatedJob, previous: &DaskJobStatus, o: &Observed, now: Timestamp) -> Plan {
    let g = v.generation;
    let prev = &previous.conditions;
    let mut status = DaskJobStatus {
        cluster_name: Some(v.cluster_name.clone()),
        observed_generation: Some(g),
        ..previous.clone()
    };
    set_condition(
        &mut status.conditions,
        condition(prev, "Valid", true, "Valid", "the spec is valid".into(), g),
    );
    let mut notes = Vec::new();
    if previous.job_status.is_some_and(JobStatus::is_finished) {
        return finished(v, status, o, now, notes);
    }
    if o.cluster.is_some_and(|c| !c.owned) {
        let message = format!(
            "a DaskCluster named {} exists and does not belong to this job; delete or rename it",
            v.cluster_name
        );
        let cond = condition(
            prev,
            "ClusterReady",
            false,
            "ClusterConflict",
            message.clone(),
            g,
        );
        if !prev.iter().any(|c| c.reason == "ClusterConflict") {
            notes.push(note(true, "ClusterConflict", message));
        }
        set_condition(&mut status.conditions, cond);
        status.job_status.get_or_insert(JobStatus::JobCreated);
        return Plan {
            status,
            steps: Vec::new(),
            notes,
            requeue: Some(Duration::from_secs(30)),
        };
    }

    // Attempts (runner pods) run one after another: attempt n exists only once n pods failed.
    // With `OnFailure` the current attempt's failures are restarts in place, counted too.
    let counted = previous.failed.unwrap_or(0).max(0).unsigned_abs();
    let attempt = o
        .runners
        .iter()
        .filter(|r| r.phase == RunnerPhase::Failed)
        .map(|r| r.attempt + 1)
        .max()
        .unwrap_or(0);
    let current = o
        .runners
        .iter()
        .find(|r| r.attempt == attempt && !r.deleting);
    let in_place = current.map_or(0, |r| r.failed_runs);
    let failures = (attempt + in_place).max(counted);
    let last_failed = current.filter(|r| r.failed_runs > 0).or_else(|| {
        o.runners
            .iter()
            .filter(|r| r.phase == RunnerPhase::Failed)
            .max_by_key(|r| r.attempt)
    });
    if failures > counted {
        status.failed = Some(i32::try_from(failures).unwrap_or(i32::MAX));
        status.exit_code = last_failed.and_then(|r| r.exit_code);
    }
    let succeeded = o.runners.iter().find(|r| r.phase == RunnerPhase::Succeeded);
    let deadline = v.deadline.zip(v.created).map(|(d, c)| plus(c, d));

    // The runner that ends the job is its latest attempt (nothing runs after a success).
    let final_runner = o
        .runners
        .iter()
        .max_by_key(|r| r.attempt)
        .map(|r| r.name.clone());
    let outcome = if let Some(r) = succeeded {
        Some((
            JobStatus::Successful,
            "Succeeded",
            format!("the runner pod {} exited 0", r.name),
        ))
    } else if deadline.is_some_and(|d| now >= d) {
        let secs = v.deadline.map(|d| d.as_secs()).unwrap_or(0);
        Some((
            JobStatus::Failed,
            "DeadlineExceeded",
            format!("the job was active longer than spec.activeDeadlineSeconds ({secs} s)"),
        ))
    } else if failures >= v.max_attempts {
        let why = last_failed.map(describe_failure).unwrap_or_default();
        Some((
            JobStatus::Failed,
            "BackoffLimitExceeded",
            format!(
                "{why}; {failures} of {} attempts failed (spec.backoffLimit {})",
                v.max_attempts,
                v.max_attempts - 1
            ),
        ))
    } else {
        None
    };
    if let Some((outcome, reason, message)) = outcome {
        status.job_status = Some(outcome);
        status.end_time = Some(Time(now));
        if let Some(name) = final_runner {
            status.job_runner_pod_name = Some(name);
        }
        if outcome == JobStatus::Failed {
            status.exit_code = last_failed.and_then(|r| r.exit_code).or(status.exit_code);
        }
        let (type_, warning) = if outcome == JobStatus::Successful {
            ("Complete", false)
        } else {
            ("Failed", true)
        };
        set_condition(
            &mut status.conditions,
            condition(prev, type_, true, reason, message.clone(), g),
        );
        notes.push(note(warning, state_reason(outcome), message));
        return finished(v, status, o, now, notes);
    }

    // Still going: the cluster, then the current attempt's runner once the scheduler is ready.
    if failures > counted
        && let Some(r) = last_failed
    {
        notes.push(note(
            true,
            "RunnerFailed",
            format!(
                "{}; retrying ({} of {} attempts failed)",
                describe_failure(r),
                failures,
                v.max_attempts
            ),
        ));
    }
    let mut steps = Vec::new();
    if o.cluster.is_none() {
        steps.push(Step::CreateCluster);
    }
    let cluster_ready = o.cluster.is_some_and(|c| c.scheduler_ready && !c.deleting);
    let ready = match (o.cluster, cluster_ready) {
        (_, true) => condition(
            prev,
            "ClusterReady",
            true,
            "SchedulerReady",
            "the cluster's scheduler is ready".into(),
            g,
        ),
        (Some(_), false) => condition(
            prev,
            "ClusterReady",
            false,
            "SchedulerNotReady",
            format!("waiting for DaskCluster {}'s scheduler", v.cluster_name),
            g,
        ),
        (None, false) => condition(
            prev,
            "ClusterReady",
            false,
            "Creating",
            format!("creating DaskCluster {}", v.cluster_name),
            g,
        ),
    };
    set_condition(&mut status.conditions, ready);
    if cluster_ready && current.is_none() {
        steps.push(Step::CreateRunner(attempt));
    }
    let running = current.filter(|r| r.phase == RunnerPhase::Running);
    let next = if running.is_some() || previous.job_status == Some(JobStatus::Running) {
        JobStatus::Running
    } else if o.cluster.is_some() {
        JobStatus::ClusterCreated
    } else {
        JobStatus::JobCreated
    };
    if let Some(r) = running
        && status.start_time.is_none()
    {
        status.start_time = Some(Time(r.started.unwrap_or(now)));
    }
    if previous.job_status != Some(next) {
        let message = match (next, running) {
            (JobStatus::Running, Some(r)) => format!("the runner pod {} is running", r.name),
            (JobStatus::ClusterCreated, _) => format!("created DaskCluster {}", v.cluster_name),
            _ => format!("creating DaskCluster {}", v.cluster_name),
        };
        notes.push(note(false, state_reason(next), message));
    }
    status.job_status = Some(next);
    if current.is_some() || steps.contains(&Step::CreateRunner(attempt)) {
        status.job_runner_pod_name = Some(crate::names::job_runner_name(&v.name, attempt));
    }
    Plan {
        status,
        steps,
        notes,
        requeue: deadline.map(|d| until(now, d)),
    }
}

/// A finished job: stop what still runs, remove the cluster (unless kept), then the job itself
/// once its TTL has passed.
fn finished(
    v: &ValidatedJob,
    status: DaskJobStatus,
    o: &Observed,
    now: Timestamp,
    notes: Vec<Note>,
) -> Plan {
    let mut steps: Vec<Step> = o
        .runners
        .iter()
        .filter(|r| !r.deleting && matches!(r.phase, RunnerPhase::Pending | RunnerPhase::Running))
        .map(|r| Step::DeleteRunner(r.name.clone()))
        .collect();
    let keep = status.job_status == Some(JobStatus::Failed) && v.keep_cluster_on_failure;
    if !keep && o.cluster.is_some_and(|c| c.owned && !c.deleting) {
        steps.push(Step::DeleteCluster);
    }
    let mut requeue = None;
    if let (Some(ttl), Some(end)) = (v.ttl_after_finished, &status.end_time) {
        let at = plus(end.0, ttl);
        if now >= at {
            steps.push(Step::DeleteJob);
        } else {
            requeue = Some(until(now, at));
        }
    }
    Plan {
        status,
        steps,
        notes,
        requeue,
    }
}

fn state_reason(s: JobStatus) -> &'static str {
    match s {
        JobStatus::JobCreated => "JobCreated",
        JobStatus::ClusterCreated => "ClusterCreated",
        JobStatus::Running => "Running",
        JobStatus::Successful => "Successful",
        JobStatus::Failed => "Failed",
    }
}

fn describe_failure(r: &RunnerView) -> String {
    let code = r
        .exit_code
        .map(|c| format!("exit code {c}"))
        .unwrap_or_else(|| "no exit code".into());
    match &r.reason {
        Some(reason) => format!("the runner pod {} failed ({code}, {reason})", r.name),
        None => format!("the runner pod {} failed ({code})", r.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::build::tests::fixture;
    use crate::job::validate::validate;

    const T0: i64 = 1_800_000_000;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(T0 + s).unwrap()
    }

    fn job(edit: impl FnOnce(&mut crate::crd::DaskJob)) -> ValidatedJob {
        let mut j = fixture();
        j.metadata.creation_timestamp = Some(Time(at(0)));
        edit(&mut j);
        validate(&j).unwrap()
    }

    fn cluster(ready: bool) -> Option<ClusterView> {
        Some(ClusterView {
            owned: true,
            scheduler_ready: ready,
            deleting: false,
        })
    }

    fn runner(attempt: u32, phase: RunnerPhase, exit_code: Option<i32>) -> RunnerView {
        RunnerView {
            name: crate::names::job_runner_name("simple-job", attempt),
            attempt,
            phase,
            exit_code,
            reason: exit_code.map(|_| "Error".into()),
            failed_runs: u32::from(phase == RunnerPhase::Failed),
            started: Some(at(1)),
            deleting: false,
        }
    }

    fn status_of(s: JobStatus) -> DaskJobStatus {
        DaskJobStatus {
            job_status: Some(s),
            ..DaskJobStatus::default()
        }
    }

    #[test]
    fn a_new_job_creates_its_cluster_then_the_runner_once_the_scheduler_is_ready() {
        let v = job(|_| {});
        let p = plan(&v, &DaskJobStatus::default(), &Observed::default(), at(1));
        assert_eq!(p.status.job_status, Some(JobStatus::JobCreated));
        assert_eq!(p.steps, vec![Step::CreateCluster]);
        assert_eq!(p.status.cluster_name.as_deref(), Some("simple-job"));
        assert_eq!(p.status.job_runner_pod_name, None, "no runner yet");

        let o = Observed {
            cluster: cluster(false),
            runners: vec![],
        };
        let p = plan(&v, &p.status, &o, at(2));
        assert_eq!(p.status.job_status, Some(JobStatus::ClusterCreated));
        assert_eq!(p.steps, vec![], "no runner before the scheduler is ready");
        assert_eq!(p.notes[0].reason, "ClusterCreated");

        let o = Observed {
            cluster: cluster(true),
            runners: vec![],
        };
        let p = plan(&v, &p.status, &o, at(3));
        assert_eq!(p.steps, vec![Step::CreateRunner(0)]);
        assert_eq!(
            p.status.job_runner_pod_name.as_deref(),
            Some("simple-job-runner")
        );

        // The runner exists (pending): it is not created again.
        let o = Observed {
            cluster: cluster(true),
            runners: vec![runner(0, RunnerPhase::Pending, None)],
        };
        let again = plan(&v, &p.status, &o, at(4));
        assert_eq!(again.steps, vec![]);

        let o = Observed {
            cluster: cluster(true),
            runners: vec![runner(0, RunnerPhase::Running, None)],
        };
        let p = plan(&v, &again.status, &o, at(5));
        assert_eq!(p.status.job_status, Some(JobStatus::Running));
        assert_eq!(p.status.start_time, Some(Time(at(1))));
        assert!(p.notes.iter().any(|n| n.reason == "Running"));
    }

    #[test]
    fn success_records_the_end_and_deletes_the_cluster_then_the_job_after_its_ttl() {
        let v = job(|j| j.spec.ttl_seconds_after_finished = Some(10));
        let o = Observed {
            cluster: cluster(true),
            runners: vec![runner(0, RunnerPhase::Succeeded, None)],
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(20));
        assert_eq!(p.status.job_status, Some(JobStatus::Successful));
        assert_eq!(p.status.end_time, Some(Time(at(20))));
        assert_eq!(p.steps, vec![Step::DeleteCluster]);
        assert_eq!(p.requeue, Some(Duration::from_secs(10)));
        assert!(
            p.status
                .conditions
                .iter()
                .any(|c| c.type_ == "Complete" && c.reason == "Succeeded")
        );
        // Restarted before the cluster went: the same deletion; no second Successful event.
        let again = plan(&v, &p.status, &o, at(25));
        assert_eq!(again.steps, vec![Step::DeleteCluster]);
        assert!(again.notes.is_empty());
        assert_eq!(again.status, p.status);
        let gone = Observed {
            cluster: None,
            runners: o.runners.clone(),
        };
        assert_eq!(plan(&v, &p.status, &gone, at(29)).steps, vec![]);
        assert_eq!(
            plan(&v, &p.status, &gone, at(30)).steps,
            vec![Step::DeleteJob]
        );
    }

    #[test]
    fn a_failed_runner_is_replaced_until_the_backoff_limit_then_the_job_fails_with_its_exit_code() {
        let v = job(|j| j.spec.backoff_limit = Some(2));
        let mut runners = vec![runner(0, RunnerPhase::Failed, Some(3))];
        let o = Observed {
            cluster: cluster(true),
            runners: runners.clone(),
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(5));
        assert_eq!(p.steps, vec![Step::CreateRunner(1)]);
        assert_eq!((p.status.failed, p.status.exit_code), (Some(1), Some(3)));
        assert_eq!(p.status.job_status, Some(JobStatus::Running));
        assert_eq!(p.notes[0].reason, "RunnerFailed");
        assert!(
            p.notes[0].message.contains("exit code 3"),
            "{}",
            p.notes[0].message
        );
        // The same observation again (a restart): nothing new is counted or created twice.
        runners.push(runner(1, RunnerPhase::Pending, None));
        let o = Observed {
            cluster: cluster(true),
            runners: runners.clone(),
        };
        let p2 = plan(&v, &p.status, &o, at(6));
        assert_eq!(p2.steps, vec![]);
        assert_eq!(p2.status.failed, Some(1));
        assert!(p2.notes.is_empty());

        runners[1].phase = RunnerPhase::Failed;
        runners[1].exit_code = Some(4);
        runners.push(runner(2, RunnerPhase::Failed, Some(5)));
        let o = Observed {
            cluster: cluster(true),
            runners,
        };
        let p3 = plan(&v, &p2.status, &o, at(9));
        assert_eq!(p3.status.job_status, Some(JobStatus::Failed));
        assert_eq!((p3.status.failed, p3.status.exit_code), (Some(3), Some(5)));
        assert_eq!(
            p3.status.job_runner_pod_name.as_deref(),
            Some("simple-job-runner-2")
        );
        assert_eq!(p3.steps, vec![Step::DeleteCluster]);
        let failed = p3
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == "Failed")
            .unwrap();
        assert_eq!(failed.reason, "BackoffLimitExceeded");
        assert!(
            failed.message.contains("3 of 3 attempts failed"),
            "{}",
            failed.message
        );
    }

    #[test]
    fn a_runner_restarted_in_place_fails_the_job_past_the_backoff_limit() {
        let v = job(|j| {
            j.spec.backoff_limit = Some(2);
            j.spec.job.spec.restart_policy = Some("OnFailure".into());
        });
        let restarted = |failed_runs| RunnerView {
            phase: RunnerPhase::Running,
            failed_runs,
            exit_code: Some(7),
            ..runner(0, RunnerPhase::Running, None)
        };
        let o = Observed {
            cluster: cluster(true),
            runners: vec![restarted(2)],
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(5));
        assert_eq!(p.status.job_status, Some(JobStatus::Running));
        assert_eq!((p.status.failed, p.status.exit_code), (Some(2), Some(7)));
        assert_eq!(p.steps, vec![], "the kubelet restarts it: no new pod");
        let o = Observed {
            cluster: cluster(true),
            runners: vec![restarted(3)],
        };
        let p = plan(&v, &p.status, &o, at(6));
        assert_eq!(p.status.job_status, Some(JobStatus::Failed));
        assert_eq!(
            p.steps,
            vec![
                Step::DeleteRunner("simple-job-runner".into()),
                Step::DeleteCluster
            ],
            "the restarting runner is stopped"
        );
        // Evicted after two restarts: attempt 1 is a new pod, and the count goes on.
        let mut evicted = restarted(2);
        evicted.phase = RunnerPhase::Failed;
        let o = Observed {
            cluster: cluster(true),
            runners: vec![evicted],
        };
        let v = job(|j| {
            j.spec.backoff_limit = Some(5);
            j.spec.job.spec.restart_policy = Some("OnFailure".into());
        });
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(7));
        assert_eq!(p.steps, vec![Step::CreateRunner(1)]);
    }

    #[test]
    fn a_failed_job_can_keep_its_cluster() {
        let v = job(|j| j.spec.keep_cluster_on_failure = Some(true));
        let o = Observed {
            cluster: cluster(true),
            runners: vec![runner(0, RunnerPhase::Failed, Some(1))],
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(5));
        assert_eq!(p.status.job_status, Some(JobStatus::Failed));
        assert_eq!(p.steps, vec![]);
    }

    #[test]
    fn the_deadline_stops_the_runner_and_fails_the_job() {
        let v = job(|j| {
            j.spec.active_deadline_seconds = Some(60);
            j.spec.backoff_limit = Some(1);
        });
        let o = Observed {
            cluster: cluster(true),
            runners: vec![
                runner(0, RunnerPhase::Failed, Some(1)),
                runner(1, RunnerPhase::Running, None),
            ],
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(61));
        assert_eq!(
            p.status.job_runner_pod_name.as_deref(),
            Some("simple-job-runner-1")
        );
        assert_eq!(
            p.steps,
            vec![
                Step::DeleteRunner("simple-job-runner-1".into()),
                Step::DeleteCluster
            ]
        );
        let v = job(|j| j.spec.active_deadline_seconds = Some(60));
        let o = Observed {
            cluster: cluster(true),
            runners: vec![runner(0, RunnerPhase::Running, None)],
        };
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(30));
        assert_eq!(p.requeue, Some(Duration::from_secs(30)));
        let p = plan(&v, &status_of(JobStatus::Running), &o, at(60));
        assert_eq!(p.status.job_status, Some(JobStatus::Failed));
        assert_eq!(
            p.steps,
            vec![
                Step::DeleteRunner("simple-job-runner".into()),
                Step::DeleteCluster
            ]
        );
        assert!(
            p.status
                .conditions
                .iter()
                .any(|c| c.reason == "DeadlineExceeded")
        );
    }

    #[test]
    fn a_cluster_of_the_same_name_that_is_not_the_jobs_is_left_alone() {
        let v = job(|_| {});
        let o = Observed {
            cluster: Some(ClusterView {
                owned: false,
                scheduler_ready: true,
                deleting: false,
            }),
            runners: vec![],
        };
        let p = plan(&v, &DaskJobStatus::default(), &o, at(1));
        assert_eq!(p.steps, vec![]);
        assert!(
            p.status
                .conditions
                .iter()
                .any(|c| c.reason == "ClusterConflict")
        );
        assert_eq!(p.notes[0].reason, "ClusterConflict");
    }
}
