//! DaskJob's life against the double: cluster, runner, success or retries and failure, deadline,
//! TTL, invalid specs, and an operator restarted between any two steps.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube_double::KubeletConfig;
use rask_operator::crd::{DaskCluster, DaskJob, DaskJobStatus, JobStatus};

use crate::env::{Env, example, wait_until};

const T: Duration = Duration::from_secs(20);
/// Runner images the double's kubelet completes (exit 0) or crashes (exit 1).
const OK_IMAGE: &str = "example/job-ok:1";
const CRASH_IMAGE: &str = "example/job-crash:1";

async fn env() -> Env {
    Env::with_kubelet(KubeletConfig {
        complete_images: vec!["job-ok".into()],
        crash_images: vec!["job-crash".into()],
        run_time: Duration::from_millis(300),
        ..KubeletConfig::default()
    })
    .await
}

fn job(image: &str) -> DaskJob {
    let mut j: DaskJob = example("daskjob.yaml");
    j.metadata.namespace = Some("default".into());
    j.spec.job.spec.containers[0].image = Some(image.into());
    j
}

fn jobs(env: &Env) -> Api<DaskJob> {
    Api::namespaced(env.client.clone(), "default")
}

async fn status(env: &Env) -> DaskJobStatus {
    jobs(env)
        .get("simple-job")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

async fn runner_pods(env: &Env) -> Vec<Pod> {
    let lp = ListParams::default().labels("dask.org/component=job-runner");
    env.pods().list(&lp).await.unwrap().items
}

/// The reasons of the Events about DaskJob `name`, one per occurrence (a repeated Event is one
/// object with a series count).
async fn event_reasons(env: &Env, name: &str) -> Vec<String> {
    let events: Api<Event> = Api::namespaced(env.client.clone(), "default");
    let mut reasons = Vec::new();
    for e in events.list(&ListParams::default()).await.unwrap().items {
        let about = e.regarding.as_ref();
        if about.and_then(|r| r.kind.as_deref()) != Some("DaskJob")
            || about.and_then(|r| r.name.as_deref()) != Some(name)
        {
            continue;
        }
        let times = e.series.as_ref().map(|s| s.count).unwrap_or(1).max(1);
        for _ in 0..times {
            reasons.extend(e.reason.clone());
        }
    }
    reasons
}

async fn cluster_exists(env: &Env) -> bool {
    env.clusters()
        .get_opt("simple-job")
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn a_job_runs_on_its_own_cluster_which_goes_when_it_succeeds_then_the_ttl_removes_it() {
    let env = env().await;
    let mut j = job(OK_IMAGE);
    j.spec.ttl_seconds_after_finished = Some(1);
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    wait_until("the runner pod exists", T, async || {
        !runner_pods(&env).await.is_empty()
    })
    .await;
    // The runner starts only once the cluster's scheduler is ready.
    let cluster: DaskCluster = env.clusters().get("simple-job").await.unwrap();
    let owner = &cluster.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("DaskJob", "simple-job")
    );
    let runner = env.pods().get("simple-job-runner").await.unwrap();
    let spec = runner.spec.unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
    assert!(spec.containers[0].env.as_ref().unwrap().iter().any(|e| {
        e.name == "DASK_SCHEDULER_ADDRESS"
            && e.value.as_deref()
                == Some("tcp://simple-job-scheduler.default.svc.cluster.local:8786")
    }));
    // The status as it was when the job succeeded: with a TTL of 1 s the job itself may be gone
    // by the time a second read would run.
    let mut st = DaskJobStatus::default();
    wait_until("the job is Successful", T, async || {
        st = status(&env).await;
        st.job_status == Some(JobStatus::Successful)
    })
    .await;
    assert_eq!(st.cluster_name.as_deref(), Some("simple-job"));
    assert_eq!(st.job_runner_pod_name.as_deref(), Some("simple-job-runner"));
    assert!(st.start_time.is_some() && st.end_time.is_some(), "{st:?}");
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Complete" && c.status == "True")
    );
    wait_until("the cluster is deleted", T, async || {
        !cluster_exists(&env).await
    })
    .await;
    let reasons = event_reasons(&env, "simple-job").await;
    for want in [
        "JobCreated",
        "ClusterCreated",
        "RunnerCreated",
        "Successful",
        "ClusterDeleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == want),
            "no {want} event in {reasons:?}"
        );
    }
    wait_until("the TTL deletes the job", T, async || {
        jobs(&env).get_opt("simple-job").await.unwrap().is_none()
    })
    .await;
    assert!(runner_pods(&env).await.is_empty(), "its pods go with it");
    env.shutdown().await;
}

#[tokio::test]
async fn a_failing_runner_is_retried_up_to_the_backoff_limit_then_the_job_fails() {
    let env = env().await;
    let mut j = job(CRASH_IMAGE);
    j.spec.backoff_limit = Some(2);
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    wait_until("the job Failed", T, async || {
        status(&env).await.job_status == Some(JobStatus::Failed)
    })
    .await;
    let st = status(&env).await;
    assert_eq!((st.failed, st.exit_code), (Some(3), Some(1)), "{st:?}");
    assert_eq!(
        st.job_runner_pod_name.as_deref(),
        Some("simple-job-runner-2")
    );
    let failed = st.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert_eq!(failed.reason, "BackoffLimitExceeded");
    assert!(failed.message.contains("exit code 1"), "{}", failed.message);
    let mut names: Vec<String> = runner_pods(&env)
        .await
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "simple-job-runner",
            "simple-job-runner-1",
            "simple-job-runner-2"
        ]
    );
    wait_until("the cluster is deleted", T, async || {
        !cluster_exists(&env).await
    })
    .await;
    let reasons = event_reasons(&env, "simple-job").await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "RunnerFailed").count(),
        2,
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r == "Failed"), "{reasons:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_can_keep_its_cluster_for_debugging() {
    let env = env().await;
    let mut j = job(CRASH_IMAGE);
    j.spec.keep_cluster_on_failure = Some(true);
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    wait_until("the job Failed", T, async || {
        status(&env).await.job_status == Some(JobStatus::Failed)
    })
    .await;
    assert_eq!(status(&env).await.failed, Some(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(cluster_exists(&env).await, "the cluster is kept");
    env.shutdown().await;
}

#[tokio::test]
async fn the_deadline_stops_the_runner_and_fails_the_job() {
    let env = env().await;
    // The dask image runs until stopped in the double.
    let mut j = job("ghcr.io/dask/dask:latest");
    j.spec.active_deadline_seconds = Some(4);
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    // The deadline counts from the job's creation. On a loaded machine the runner can take most
    // of it to start, so a poll may never see the job Running: wait for the end, then check
    // that the runner was made.
    wait_until("the job Failed", T, async || {
        status(&env).await.job_status == Some(JobStatus::Failed)
    })
    .await;
    let st = status(&env).await;
    assert!(
        st.conditions.iter().any(|c| c.reason == "DeadlineExceeded"),
        "{st:?}"
    );
    assert!(
        st.job_runner_pod_name.is_some(),
        "the runner was made: {st:?}"
    );
    wait_until("the runner and the cluster are gone", T, async || {
        runner_pods(&env).await.is_empty() && !cluster_exists(&env).await
    })
    .await;
    env.shutdown().await;
}

#[tokio::test]
async fn an_invalid_job_says_why_and_runs_once_fixed() {
    let env = env().await;
    let mut j = job(OK_IMAGE);
    j.spec.job.spec.restart_policy = Some("Always".into());
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    wait_until("the status says why", T, async || {
        status(&env).await.conditions.iter().any(|c| {
            c.type_ == "Valid"
                && c.status == "False"
                && c.message.contains("spec.job.spec.restartPolicy")
        })
    })
    .await;
    assert!(
        event_reasons(&env, "simple-job")
            .await
            .iter()
            .any(|r| r == "InvalidSpec")
    );
    assert!(
        !cluster_exists(&env).await,
        "nothing is created for an invalid job"
    );
    let fix = serde_json::json!({"spec": {"job": {"spec": {"restartPolicy": "Never"}}}});
    jobs(&env)
        .patch("simple-job", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    wait_until("the fixed job is Successful", T, async || {
        status(&env).await.job_status == Some(JobStatus::Successful)
    })
    .await;
    let st = status(&env).await;
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == "Valid" && c.status == "True")
    );
    env.shutdown().await;
}

#[tokio::test]
async fn an_operator_restarted_between_steps_converges_to_the_same_end() {
    let mut env = env().await;
    env.kill_operator().await;
    let mut j = job(CRASH_IMAGE);
    j.spec.backoff_limit = Some(1);
    jobs(&env).create(&PostParams::default(), &j).await.unwrap();
    // Start it, let it get part of the way, kill it; many times, at different points.
    for wait_ms in [5u64, 10, 20, 30, 40, 60, 80, 100, 150] {
        env.start_operator();
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        env.kill_operator().await;
    }
    env.start_operator();
    wait_until("the job Failed", T, async || {
        status(&env).await.job_status == Some(JobStatus::Failed)
    })
    .await;
    wait_until("the cluster is deleted", T, async || {
        !cluster_exists(&env).await
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = status(&env).await;
    assert_eq!((st.failed, st.exit_code), (Some(2), Some(1)), "{st:?}");
    assert_eq!(
        runner_pods(&env).await.len(),
        2,
        "one pod per attempt, none twice"
    );
    assert!(
        !cluster_exists(&env).await,
        "not created again after the end"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn the_jobs_cluster_is_made_once_so_scaling_it_sticks() {
    let env = env().await;
    jobs(&env)
        .create(&PostParams::default(), &job("ghcr.io/dask/dask:latest"))
        .await
        .unwrap();
    wait_until("the job is Running", T, async || {
        status(&env).await.job_status == Some(JobStatus::Running)
    })
    .await;
    let scale = serde_json::json!({"spec": {"replicas": 3}});
    env.clusters()
        .patch_scale("simple-job", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();
    // Make the job reconcile again: its cluster keeps the new size.
    let touch = serde_json::json!({"metadata": {"annotations": {"touched": "yes"}}});
    jobs(&env)
        .patch("simple-job", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    wait_until("3 workers", T, async || {
        env.worker_pods("simple-job").await.len() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let c: DaskCluster = env.clusters().get("simple-job").await.unwrap();
    assert_eq!(c.spec.worker.replicas, 3);
    env.shutdown().await;
}
