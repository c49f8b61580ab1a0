//! Stages 1 and 5: what exists for a DaskJob (its cluster and runner pods), and writing its status.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::plan::{ClusterView, Observed, RunnerPhase, RunnerView};
use super::validate::ValidatedJob;
use crate::conditions::condition;
use crate::context::Context;
use crate::crd::{ClusterPhase, DaskCluster, DaskJob, DaskJobStatus};
use crate::error::{Error, Invalid};
use crate::names::{
    ANNOTATION_RUNNER_ATTEMPT, COMPONENT_JOB_RUNNER, LABEL_CLUSTER, LABEL_COMPONENT,
};

/// Reads the job's cluster and its runner pods from the API server (not a cache, so a pod the
/// previous reconcile created is never created twice).
pub async fn observe(ctx: &Context, v: &ValidatedJob) -> Result<Observed, Error> {
    let clusters: Api<DaskCluster> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &v.namespace);
    let cluster = clusters
        .get_opt(&v.cluster_name)
        .await?
        .map(|c| ClusterView {
            owned: c.owner_references().iter().any(|o| o.uid == v.owner.uid),
            scheduler_ready: c.status.as_ref().and_then(|s| s.phase) == Some(ClusterPhase::Running),
            deleting: c.metadata.deletion_timestamp.is_some(),
        });
    let listed = pods
        .list(&ListParams::default().labels(&format!(
            "{LABEL_CLUSTER}={},{LABEL_COMPONENT}={COMPONENT_JOB_RUNNER}",
            v.cluster_name
        )))
        .await?;
    let runners = listed
        .items
        .iter()
        .filter(|p| p.owner_references().iter().any(|o| o.uid == v.owner.uid))
        .filter_map(runner_view)
        .collect();
    Ok(Observed { cluster, runners })
}

/// A runner pod as the plan sees it; pods without an attempt annotation are not the job's.
pub fn runner_view(p: &Pod) -> Option<RunnerView> {
    let attempt = p
        .annotations()
        .get(ANNOTATION_RUNNER_ATTEMPT)?
        .parse()
        .ok()?;
    let status = p.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => RunnerPhase::Running,
        Some("Succeeded") => RunnerPhase::Succeeded,
        Some("Failed") => RunnerPhase::Failed,
        _ => RunnerPhase::Pending,
    };
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    // The latest failure: a container that ended non-zero, or (restarted in place, with
    // `OnFailure`) the last run of one that did.
    let ended = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
        c.state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .filter(|t| t.exit_code != 0)
    };
    let last = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
        c.last_state
            .as_ref()
            .and_then(|s| s.terminated.clone())
            .filter(|t| t.exit_code != 0)
    };
    let terminated = containers
        .iter()
        .find_map(ended)
        .or_else(|| containers.iter().find_map(last));
    // Runs of the runner's containers that failed inside this pod: each restart followed a
    // failure, and one that ended and was not restarted yet (or waits to be) is one more.
    let failed_runs = containers
        .iter()
        .map(|c| {
            let waiting_after_failure = c
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
            let restarts = u32::try_from(c.restart_count).unwrap_or(0);
            restarts + u32::from(ended(c).is_some() || waiting_after_failure)
        })
        .max()
        .unwrap_or(0);
    let terminated = terminated.as_ref();
    let reason = terminated
        .and_then(|t| match (&t.reason, &t.message) {
            (Some(r), Some(m)) => Some(format!("{r}: {m}")),
            (r, m) => r.clone().or(m.clone()),
        })
        .or_else(|| status.and_then(|s| s.reason.clone()));
    Some(RunnerView {
        name: p.name_any(),
        attempt,
        phase,
        exit_code: terminated.map(|t| t.exit_code),
        reason,
        failed_runs,
        started: status.and_then(|s| s.start_time.as_ref()).map(|t| t.0),
        deleting: p.metadata.deletion_timestamp.is_some(),
    })
}

/// The status of a job whose spec cannot be run.
pub fn invalid_status(previous: &DaskJobStatus, j: &DaskJob, invalid: &Invalid) -> DaskJobStatus {
    let g = j.metadata.generation.unwrap_or(0);
    let mut conditions: Vec<_> = previous
        .conditions
        .iter()
        .filter(|c| c.type_ != "Valid")
        .cloned()
        .collect();
    conditions.insert(
        0,
        condition(
            &previous.conditions,
            "Valid",
            false,
            "InvalidSpec",
            invalid.problems.join("; "),
            g,
        ),
    );
    DaskJobStatus {
        observed_generation: Some(g),
        conditions,
        ..previous.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_failed_runner_pod_reads_as_its_attempt_exit_code_and_reason() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "j-runner-1", "annotations": {ANNOTATION_RUNNER_ATTEMPT: "1"}},
            "status": {"phase": "Failed", "startTime": "2026-11-25T20:00:00Z", "containerStatuses": [{
                "name": "job", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 128, "reason": "StartError",
                          "message": "exec: \"python\": executable file not found in $PATH"}}}]}
        }))
        .unwrap();
        let r = runner_view(&pod).unwrap();
        assert_eq!(
            (r.attempt, r.phase, r.exit_code),
            (1, RunnerPhase::Failed, Some(128))
        );
        assert!(
            r.reason
                .unwrap()
                .starts_with("StartError: exec: \"python\"")
        );
        assert!(r.started.is_some());
        assert_eq!(r.failed_runs, 1);
        let mut other = pod.clone();
        other.metadata.annotations = None;
        assert_eq!(
            runner_view(&other),
            None,
            "a pod without an attempt is not a runner"
        );
    }

    #[test]
    fn a_runner_restarted_in_place_counts_its_failed_runs() {
        let pod = |state: serde_json::Value, restarts: i32| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "j-runner", "annotations": {ANNOTATION_RUNNER_ATTEMPT: "0"}},
                "status": {"phase": "Running", "containerStatuses": [{
                    "name": "job", "image": "x", "imageID": "", "ready": false,
                    "restartCount": restarts, "state": state,
                    "lastState": {"terminated": {"exitCode": 3, "reason": "Error"}}}]}
            }))
            .unwrap()
        };
        let backing_off =
            runner_view(&pod(json!({"waiting": {"reason": "CrashLoopBackOff"}}), 1)).unwrap();
        assert_eq!(
            (
                backing_off.phase,
                backing_off.failed_runs,
                backing_off.exit_code
            ),
            (RunnerPhase::Running, 2, Some(3))
        );
        let running_again = runner_view(&pod(json!({"running": {}}), 2)).unwrap();
        assert_eq!(running_again.failed_runs, 2);
    }
}
