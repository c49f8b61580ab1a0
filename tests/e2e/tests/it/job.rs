//! DaskJobs whose runner is `rask run`: success with the cluster deleted and the TTL honoured, a
//! failing runner retried up to its backoff limit, a command the image lacks, a worker killed
//! mid-job, an operator restarted throughout. The example job's command lives in
//! examples/rask-job.yaml alone: swapping the job there needs no change here.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use rask_e2e::{E2e, example};
use rask_operator::crd::{DaskJob, DaskJobStatus, JobStatus};

const T: Duration = Duration::from_secs(60);

/// `examples/rask-job.yaml` (its runner: `rask run delayed`) named `name`.
fn job(name: &str) -> DaskJob {
    let mut j: DaskJob = example("rask-job.yaml").unwrap();
    j.metadata.name = Some(name.into());
    j.spec.cluster.spec.scheduler.service.selector = Some(
        [
            ("dask.org/cluster-name".to_owned(), name.to_owned()),
            ("dask.org/component".to_owned(), "scheduler".to_owned()),
        ]
        .into(),
    );
    j
}

fn args(a: &[&str]) -> Option<Vec<String>> {
    Some(a.iter().map(|s| (*s).to_owned()).collect())
}

async fn status(e2e: &E2e, name: &str) -> DaskJobStatus {
    e2e.jobs()
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|j| j.status)
        .unwrap_or_default()
}

async fn finished(e2e: &E2e, name: &str) -> bool {
    status(e2e, name)
        .await
        .job_status
        .is_some_and(JobStatus::is_finished)
}

async fn pods_of(e2e: &E2e, cluster: &str) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("dask.org/cluster-name={cluster}"));
    e2e.pods().list(&lp).await.unwrap().items
}

#[tokio::test]
async fn the_example_job_succeeds_on_its_cluster_then_the_cluster_and_after_the_ttl_the_job_go() {
    let e2e = E2e::start().await;
    let mut j = job("rask-job");
    j.spec.ttl_seconds_after_finished = Some(2);
    e2e.jobs().create(&PostParams::default(), &j).await.unwrap();
    e2e.wait_until("the job ends", T, async || finished(&e2e, "rask-job").await)
        .await;
    let st = status(&e2e, "rask-job").await;
    assert_eq!(
        st.job_status,
        Some(JobStatus::Successful),
        "{st:?}\n{}",
        e2e.kubelet.all_logs()
    );
    // `rask run` checks its own result (a wrong one exits 1), so Successful means correct; its
    // last line names the scheduler it used: the cluster's, at its pod's address.
    let logs = e2e.kubelet.logs("default", "rask-job-runner");
    let on = format!("on {}://127.", e2e.scheme());
    assert!(logs.contains(&on), "{on} in {logs}");
    e2e.wait_until("the cluster and its pods are gone", T, async || {
        e2e.clusters().get_opt("rask-job").await.unwrap().is_none()
            && pods_of(&e2e, "rask-job").await.iter().all(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("dask.org/component"))
                    .map(String::as_str)
                    == Some("job-runner")
            })
    })
    .await;
    let end = st.end_time.unwrap().0;
    e2e.wait_until("the TTL deletes the job", T, async || {
        e2e.jobs().get_opt("rask-job").await.unwrap().is_none()
    })
    .await;
    let waited = k8s_openapi::jiff::Timestamp::now().duration_since(end);
    assert!(
        waited.as_secs_f64() >= 1.0,
        "deleted {waited:?} after the end, before its TTL"
    );
    e2e.shutdown().await;
}

#[tokio::test]
async fn failing_runners_are_retried_to_the_backoff_limit_and_the_exit_code_is_reported() {
    let e2e = E2e::start().await;
    // `rask run` of a job that does not exist: the runner exits 2 (a usage error).
    let mut failing = job("fails");
    failing.spec.backoff_limit = Some(1);
    failing.spec.job.spec.containers[0].args = args(&["run", "no-such-job"]);
    failing.spec.cluster.spec.worker.replicas = 1;
    // A command the image does not have: the container cannot start (exit code 128).
    let mut missing = job("no-command");
    missing.spec.backoff_limit = Some(0);
    missing.spec.job.spec.containers[0].command = args(&["python"]);
    missing.spec.cluster.spec.worker.replicas = 1;
    for j in [&failing, &missing] {
        e2e.jobs().create(&PostParams::default(), j).await.unwrap();
    }
    e2e.wait_until("both jobs end", T, async || {
        finished(&e2e, "fails").await && finished(&e2e, "no-command").await
    })
    .await;
    let st = status(&e2e, "fails").await;
    assert_eq!(st.job_status, Some(JobStatus::Failed));
    assert_eq!((st.failed, st.exit_code), (Some(2), Some(2)), "{st:?}");
    assert_eq!(st.job_runner_pod_name.as_deref(), Some("fails-runner-1"));
    assert!(
        e2e.kubelet
            .logs("default", "fails-runner")
            .contains("no-such-job")
    );
    let st = status(&e2e, "no-command").await;
    assert_eq!(
        (st.job_status, st.failed, st.exit_code),
        (Some(JobStatus::Failed), Some(1), Some(128)),
        "{st:?}"
    );
    let failed = st.conditions.iter().find(|c| c.type_ == "Failed").unwrap();
    assert!(
        failed
            .message
            .contains("\"python\": executable file not found"),
        "{}",
        failed.message
    );
    e2e.wait_until("both clusters are deleted", T, async || {
        e2e.clusters()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    })
    .await;
    e2e.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_still_gives_a_correct_result() {
    let e2e = E2e::start().await;
    let mut j = job("resilient");
    // The futures pipeline checks every result itself and exits non-zero on a wrong one.
    j.spec.job.spec.containers[0].args = args(&[
        "run",
        "futures",
        "--scheduler",
        "$(DASK_SCHEDULER_ADDRESS)",
        "--pairs",
        "24",
        "--step",
        "0.05",
    ]);
    j.spec.backoff_limit = Some(0);
    e2e.jobs().create(&PostParams::default(), &j).await.unwrap();
    e2e.wait_until("the runner runs", T, async || {
        status(&e2e, "resilient").await.job_status == Some(JobStatus::Running)
    })
    .await;
    // Let work land on the workers, then kill one of them (SIGKILL: its results are lost).
    tokio::time::sleep(Duration::from_millis(700)).await;
    let victim = pods_of(&e2e, "resilient")
        .await
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("dask.org/component"))
                .map(String::as_str)
                == Some("worker")
        })
        .find_map(|p| p.metadata.name)
        .unwrap();
    assert!(
        !finished(&e2e, "resilient").await,
        "the job ended before a worker could be killed"
    );
    e2e.kubelet.kill("default", &victim).await.unwrap();
    e2e.wait_until("the job ends", T, async || {
        finished(&e2e, "resilient").await
    })
    .await;
    let st = status(&e2e, "resilient").await;
    assert_eq!(
        st.job_status,
        Some(JobStatus::Successful),
        "{st:?}\n{}",
        e2e.kubelet.all_logs()
    );
    let killed = e2e.pods().get_opt(&victim).await.unwrap();
    assert!(killed.is_none_or(|p| p.status.and_then(|s| s.phase).as_deref() == Some("Failed")));
    e2e.shutdown().await;
}

#[tokio::test]
async fn an_operator_stopped_and_started_throughout_a_job_ends_it_the_same_way() {
    let mut e2e = E2e::start().await;
    let j = job("restarted");
    e2e.jobs().create(&PostParams::default(), &j).await.unwrap();
    // Killed and started again every 1 to 15 ms: between any two of its steps, sooner or later.
    let mut restarts = 0;
    for pause in [1u64, 3, 7, 15].into_iter().cycle() {
        if finished(&e2e, "restarted").await {
            break;
        }
        e2e.kill_operator().await;
        restarts += 1;
        e2e.start_operator();
        tokio::time::sleep(Duration::from_millis(pause)).await;
        assert!(
            restarts < 500,
            "no end after {restarts} restarts\n{}",
            e2e.kubelet.all_logs()
        );
    }
    let st = status(&e2e, "restarted").await;
    assert_eq!(
        st.job_status,
        Some(JobStatus::Successful),
        "{st:?}\n{}",
        e2e.kubelet.all_logs()
    );
    assert_eq!(st.failed, None);
    assert!(
        e2e.kubelet
            .logs("default", "restarted-runner")
            .contains(&format!("on {}://127.", e2e.scheme()))
    );
    let runners: Vec<String> = pods_of(&e2e, "restarted")
        .await
        .into_iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("dask.org/component"))
                .map(String::as_str)
                == Some("job-runner")
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        runners,
        ["restarted-runner"],
        "one runner, never made twice"
    );
    e2e.wait_until("the cluster is deleted", T, async || {
        e2e.clusters().get_opt("restarted").await.unwrap().is_none()
    })
    .await;
    eprintln!("{restarts} operator restarts");
    e2e.shutdown().await;
}

#[tokio::test]
async fn the_custom_worker_example_job_runs_users_functions_and_checks_them() {
    // examples/custom-worker/job.yaml: scheduler and workers are `custom-worker` (rask with the
    // example's `words` family), the runner `wordcount`, which exits 1 on a wrong count.
    let e2e = E2e::start().await;
    let j: DaskJob = example("custom-worker/job.yaml").unwrap();
    e2e.jobs().create(&PostParams::default(), &j).await.unwrap();
    e2e.wait_until("the job ends", T, async || {
        finished(&e2e, "wordcount").await
    })
    .await;
    let st = status(&e2e, "wordcount").await;
    assert_eq!(
        st.job_status,
        Some(JobStatus::Successful),
        "{st:?}\n{}",
        e2e.kubelet.all_logs()
    );
    let logs = e2e.kubelet.logs("default", "wordcount-runner");
    assert!(
        logs.contains("ok: the counts match a count done here"),
        "{logs}"
    );
    e2e.shutdown().await;
}

#[tokio::test]
async fn the_python_job_example_runs_its_script_on_the_worker_image() {
    // examples/python-job.yaml: the runner is `python3 -c <script>` on the worker image, which
    // computes the seed's delayed graph with its own Python functions (the workers run them) and
    // a rask.array mean, and exits 1 when a result is wrong.
    let e2e = E2e::start().await;
    let j: DaskJob = example("python-job.yaml").unwrap();
    e2e.jobs().create(&PostParams::default(), &j).await.unwrap();
    e2e.wait_until("the job ends", T, async || {
        finished(&e2e, "python-job").await
    })
    .await;
    let st = status(&e2e, "python-job").await;
    assert_eq!(
        st.job_status,
        Some(JobStatus::Successful),
        "{st:?}\n{}",
        e2e.kubelet.all_logs()
    );
    let logs = e2e.kubelet.logs("default", "python-job-runner");
    assert!(
        logs.contains("delayed: total 131, parts [1, 4, 11, 22, 37, 56]"),
        "{logs}"
    );
    // The script's `Client(os.environ["DASK_SCHEDULER_ADDRESS"])` went over TLS (by default),
    // with the users' certificate from Dask's variables the operator set.
    let runner = e2e.pods().get("python-job-runner").await.unwrap();
    let env: std::collections::BTreeMap<String, String> = runner.spec.unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect();
    let scheme = format!("{}://", e2e.scheme());
    assert!(
        env["DASK_SCHEDULER_ADDRESS"].starts_with(&scheme),
        "{env:?}"
    );
    assert_eq!(
        env.contains_key("DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"),
        e2e.tls,
        "{env:?}"
    );
    assert!(logs.contains("ok: the results match"), "{logs}");
    e2e.shutdown().await;
}
