//! Batch clusters on a real single-node SLURM (slurmctld and slurmd from Debian's slurm-wlm with
//! munge, started on loopback by scripts/hpc-peers): `up` computing the seed's array mean, the
//! autoscaler going 1 → 3 → 1 under a burst, a worker job cancelled mid-computation, workers
//! replaced before a short walltime without losing a result, held jobs reported with their reason
//! and never flooding past the maximum, the scheduler as its own job, `down` and `sweep`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rask::Value;
use rask::client::{Client, Future};
use rask::seed::{self, lit};
use rask_operator::providers::ProviderError;
use rask_operator::providers::commands::batch;

use crate::batch_env::{config, connect, down_guard, queued, rask_run};
use crate::env::wait_until;

const SLURM: &str = "slurm";

fn setup(
    name: &str,
) -> (
    tempfile::TempDir,
    rask_operator::providers::commands::Options,
) {
    crate::batch_env::setup(SLURM, name)
}

fn stamps(client: &Client, n: i64, seconds: f64) -> Vec<Future<Value>> {
    client.map(
        seed::STAMP,
        (0..n).map(|i| seed::Stamp { x: lit(i), seconds }),
    )
}

fn check_stamps(values: &[Value]) {
    for (i, v) in values.iter().enumerate() {
        assert_eq!(v.as_list().unwrap()[0], Value::Int(i as i64), "result {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_two_workers_computes_the_array_mean_and_down_leaves_no_job() {
    let (dir, opts) = setup("t-mean");
    let path = config(dir.path(), SLURM, "t-mean", 2, "", "");
    let _down = down_guard("t-mean", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert_eq!(report.workers.len(), 2, "{report}");
    assert!(report.scheduler_runs_as.starts_with("process "), "{report}");
    let jobs = queued(SLURM, "t-mean");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|(_, s)| s == "RUNNING"), "{jobs:?}");

    // TLS by default: the cluster's certificates on the shared filesystem, keys 0600 in a
    // directory only the user enters; a plain TCP client and a plain HTTP request are refused.
    let tls = report.certificates.clone().expect("TLS is the default");
    assert_eq!(tls, opts.state_dir.join("t-mean-tls"));
    assert!(report.scheduler.address.starts_with("tls://"), "{report}");
    assert!(
        report.scheduler.dashboard.starts_with("https://"),
        "{report}"
    );
    crate::batch_env::assert_private(&tls);
    crate::batch_env::assert_plain_refused(&report).await;

    // The seed's random((N,)*3).mean(), on SLURM and on a local cluster: the same number.
    let args = ["--size", "120", "--chunk", "40"];
    let on_slurm = rask_run("array-mean", &report, &args);
    assert_eq!(on_slurm["ok"], true, "{on_slurm}");
    let out = std::process::Command::new(crate::local_backend::rask_bin())
        .args(["run", "array-mean", "--json"])
        .args(args)
        .env_remove("DASK_SCHEDULER_ADDRESS")
        .output()
        .unwrap();
    let local: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().last().unwrap()).unwrap();
    let (a, b) = (
        on_slurm["result"].as_f64().unwrap(),
        local["result"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-12, "{a} on SLURM, {b} locally");

    let status = batch::status("t-mean", None, &opts)
        .await
        .unwrap()
        .to_string();
    assert_eq!(status.matches(" running ").count(), 2, "{status}");
    assert_eq!(status.matches(" 1/1").count(), 2, "{status}");
    let (worker, job) = &report.workers[0];
    let logs = batch::logs("t-mean", Some(job), None, &opts).await.unwrap();
    assert!(logs.contains(&format!("{worker}-{job}.out")), "{logs}");
    assert!(
        batch::logs("t-mean", None, None, &opts)
            .await
            .unwrap()
            .contains("scheduler")
    );

    // scale: one more job, waited for until its worker joined; then that one retired by name.
    let more = batch::scale("t-mean", 3, None, &[], None, &opts)
        .await
        .unwrap();
    assert_eq!(more.added.len(), 1, "{more:?}");
    assert_eq!(queued(SLURM, "t-mean").len(), 3);
    let less = batch::scale("t-mean", 2, None, &more.added, None, &opts)
        .await
        .unwrap();
    assert_eq!(less.retired.removed, more.added, "{less:?}");
    wait_until(
        "the retired worker's job is gone",
        Duration::from_secs(30),
        async || queued(SLURM, "t-mean").len() == 2,
    )
    .await;
    let wrong = batch::scale(
        "t-mean",
        1,
        None,
        &["t-mean-default-nope".to_owned()],
        None,
        &opts,
    )
    .await
    .unwrap_err();
    assert!(
        wrong
            .to_string()
            .contains("has no worker t-mean-default-nope"),
        "{wrong}"
    );

    let deleted = batch::down("t-mean", None, &opts).await.unwrap();
    assert!(
        deleted.iter().any(|d| d.starts_with("keeper process ")),
        "{deleted:?}"
    );
    assert!(
        deleted.iter().any(|d| d.starts_with("scheduler process ")),
        "{deleted:?}"
    );
    assert_eq!(
        deleted.iter().filter(|d| d.starts_with("job ")).count(),
        2,
        "{deleted:?}"
    );
    assert!(queued(SLURM, "t-mean").is_empty());
    assert!(
        deleted
            .iter()
            .any(|d| d.starts_with("certificates and keys in ")),
        "{deleted:?}"
    );
    assert!(!tls.exists(), "down left the keys in {}", tls.display());
    assert!(!opts.state_dir.join("t-mean.yaml").exists());
    assert!(!opts.state_dir.join("t-mean.state.json").exists());
    let again = batch::status("t-mean", None, &opts).await.unwrap_err();
    assert!(
        matches!(again, ProviderError::NoSuchCluster { .. }),
        "{again}"
    );
}

/// `tls: false`: plain TCP and HTTP, no certificates made; `status`, `scale` and `down` work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_false_runs_the_cluster_over_plain_tcp() {
    let (dir, opts) = setup("t-plain");
    let path = config(dir.path(), SLURM, "t-plain", 1, "tls: false", "");
    let _down = down_guard("t-plain", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert!(report.certificates.is_none(), "{report}");
    assert!(report.scheduler.address.starts_with("tcp://"), "{report}");
    assert!(
        report.scheduler.dashboard.starts_with("http://"),
        "{report}"
    );
    assert!(!opts.state_dir.join("t-plain-tls").exists());
    let client = Client::connect(&report.scheduler.address).await.unwrap();
    let values = client.gather(&stamps(&client, 4, 0.0)).await.unwrap();
    check_stamps(&values);
    drop(client);
    let status = batch::status("t-plain", None, &opts)
        .await
        .unwrap()
        .to_string();
    assert_eq!(status.matches(" 1/1").count(), 1, "{status}");
    batch::down("t-plain", None, &opts).await.unwrap();
    assert!(queued(SLURM, "t-plain").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_goes_from_one_to_three_and_back_to_one_under_a_burst() {
    let (dir, opts) = setup("t-auto");
    let path = config(
        dir.path(),
        SLURM,
        "t-auto",
        1,
        "autoscaling: {minimum: 1, maximum: 3, scale_down_stabilization_seconds: 3}",
        "",
    );
    let _down = down_guard("t-auto", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert_eq!(report.workers.len(), 1);
    let manual = batch::scale("t-auto", 3, None, &[], None, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        manual.contains("t-auto/default is autoscaled between 1 and 3 workers"),
        "{manual}"
    );

    // Count the cluster's jobs in the queue every 100 ms.
    let counts = Arc::new(Mutex::new(Vec::<usize>::new()));
    let sampler = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                let n = tokio::task::spawn_blocking(|| queued(SLURM, "t-auto").len())
                    .await
                    .unwrap();
                counts.lock().unwrap().push(n);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let client = connect(&report).await;
    let futures = stamps(&client, 160, 0.1);
    let values = client.gather(&futures).await.unwrap();
    check_stamps(&values);
    drop(futures);
    wait_until(
        "the cluster is back to one worker job",
        Duration::from_secs(90),
        async || {
            let c = counts.lock().unwrap();
            c.len() > 5 && c[c.len() - 5..].iter().all(|n| *n == 1)
        },
    )
    .await;
    sampler.abort();
    let counts = counts.lock().unwrap().clone();
    let peak = counts.iter().copied().max().unwrap();
    assert_eq!(peak, 3, "the burst should reach the maximum: {counts:?}");
    assert_eq!(counts[0], 1, "{counts:?}");
    let at_peak = counts.iter().position(|n| *n == 3).unwrap();
    assert!(counts[at_peak..].contains(&1), "{counts:?}");
    batch::down("t-auto", None, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_job_cancelled_with_scancel_mid_job_leaves_the_results_correct() {
    let (dir, opts) = setup("t-cancel");
    // Scheduler and workers on the addresses of an interface (as `ib0` on a real cluster).
    let path = config(dir.path(), SLURM, "t-cancel", 2, "", "  interface: lo\n");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "scheduler_options:\n  host: 127.0.0.1\n",
        "scheduler_options:\n  interface: lo\n",
    );
    std::fs::write(&path, text).unwrap();
    let _down = down_guard("t-cancel", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert!(
        report.scheduler.address.starts_with("tls://127.0.0.1:"),
        "{report}"
    );
    let client = connect(&report).await;
    let futures = stamps(&client, 120, 0.05);
    // Some results exist on both workers when one of them goes.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, job) = &report.workers[0];
    let out = std::process::Command::new("scancel")
        .arg(job)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values = client.gather(&futures).await.unwrap();
    check_stamps(&values);
    assert_eq!(queued(SLURM, "t-cancel").len(), 1);
    batch::down("t-cancel", None, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_walltime_replaces_workers_before_it_ends_without_losing_results() {
    let (dir, opts) = setup("t-wall");
    // SLURM counts walltimes in minutes: one minute, and a lifetime of 12 ± 2 s.
    let path = config(
        dir.path(),
        SLURM,
        "t-wall",
        2,
        "",
        "  lifetime: 12s\n  lifetime_stagger: 2s\n",
    )
    .to_owned();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("walltime: '00:10:00'", "walltime: '00:01:00'");
    std::fs::write(&path, text).unwrap();
    let _down = down_guard("t-wall", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    let first: BTreeSet<String> = report.workers.iter().map(|(w, _)| w.clone()).collect();

    let client = connect(&report).await;
    let futures = stamps(&client, 40, 0.0);
    let before = client.gather(&futures).await.unwrap();
    check_stamps(&before);

    // Both workers retire at their lifetime; a replacement joins first, and the results move.
    let b = batch::attach(&opts, "t-wall", None).await.unwrap();
    wait_until(
        "both first workers replaced",
        Duration::from_secs(45),
        async || {
            let names: BTreeSet<String> = b
                .api
                .get_workers(&b.scheduler.dashboard)
                .await
                .map(|ws| ws.into_iter().map(|w| w.name).collect())
                .unwrap_or_default();
            names.len() == 2 && names.is_disjoint(&first)
        },
    )
    .await;
    let after = client.gather(&futures).await.unwrap();
    assert_eq!(
        after, before,
        "every result is the one first computed: none was lost"
    );
    let keeper = std::fs::read_to_string(dir.path().join("logs/t-wall-keeper.log")).unwrap();
    assert!(
        keeper.matches("reached its lifetime").count() >= 2,
        "{keeper}"
    );
    assert!(
        keeper.contains("its results moved to other workers"),
        "{keeper}"
    );
    batch::down("t-wall", None, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_job_is_reported_with_its_reason_and_up_cancels_what_it_submitted() {
    let (dir, opts) = setup("t-held");
    let path = config(
        dir.path(),
        SLURM,
        "t-held",
        1,
        "",
        "  job_extra_directives: [--hold]\n",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("workers_seconds: 90", "workers_seconds: 4");
    std::fs::write(&path, text).unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut opts = opts;
    {
        let lines = lines.clone();
        opts.progress = Arc::new(move |l| lines.lock().unwrap().push(l.to_owned()));
    }
    let _down = down_guard("t-held", &opts);
    let err = batch::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::RolledBack { .. }), "{msg}");
    assert!(
        msg.contains("worker jobs did not join the scheduler within"),
        "{msg}"
    );
    assert!(
        msg.contains("pending for") && msg.contains(": JobHeldUser"),
        "{msg}"
    );
    assert!(msg.contains("rolled back: deleted job "), "{msg}");
    assert!(msg.contains("scheduler process "), "{msg}");
    let said = lines.lock().unwrap().join("\n");
    assert!(said.contains("is still pending: JobHeldUser"), "{said}");
    assert!(queued(SLURM, "t-held").is_empty());
    assert!(
        !opts.state_dir.join("t-held.yaml").exists(),
        "a failed up saves nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_never_submits_past_the_maximum_while_jobs_wait() {
    let (dir, opts) = setup("t-flood");
    let path = config(
        dir.path(),
        SLURM,
        "t-flood",
        1,
        "worker_groups:\n  held: {replicas: 0, job_extra_directives: [--hold]}\nautoscaling: {minimum: 0, maximum: 3, worker_group: held}",
        "",
    );
    let _down = down_guard("t-flood", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    let client = connect(&report).await;
    // Work for minutes on the one worker that runs: the scheduler wants many more.
    let futures = stamps(&client, 400, 0.5);
    let mut most = 0;
    for _ in 0..40 {
        let held = queued(SLURM, "t-flood")
            .into_iter()
            .filter(|(n, _)| n.starts_with("t-flood-held-"))
            .count();
        most = most.max(held);
        assert!(held <= 3, "{held} held jobs: more than the maximum of 3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(most, 3);
    let status = batch::status("t-flood", None, &opts)
        .await
        .unwrap()
        .to_string();
    assert_eq!(
        status.matches("pending (JobHeldUser)").count(),
        3,
        "{status}"
    );
    let keeper = std::fs::read_to_string(dir.path().join("logs/t-flood-keeper.log")).unwrap();
    assert!(keeper.contains("job still pending"), "{keeper}");
    assert!(keeper.contains("JobHeldUser"), "{keeper}");
    drop(futures);
    batch::down("t-flood", None, &opts).await.unwrap();
    assert!(queued(SLURM, "t-flood").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_runs_as_its_own_job() {
    let (dir, opts) = setup("t-sjob");
    let path = config(dir.path(), SLURM, "t-sjob", 1, "", "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "scheduler_options:\n  host: 127.0.0.1\n",
        "scheduler_options:\n  location: job\n  host: 127.0.0.1\n  port: 0\n  dashboard_address: '127.0.0.1:0'\n",
    );
    std::fs::write(&path, text).unwrap();
    let _down = down_guard("t-sjob", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert!(report.scheduler_runs_as.starts_with("job "), "{report}");
    let names: Vec<String> = queued(SLURM, "t-sjob")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"t-sjob-scheduler".to_owned()), "{names:?}");
    // Its job's scheduler has the cluster's certificate too.
    assert!(report.scheduler.address.starts_with("tls://"), "{report}");
    let delayed = rask_run("delayed", &report, &[]);
    assert_eq!(delayed["result"], 131, "{delayed}");
    let logs = batch::logs("t-sjob", None, None, &opts).await.unwrap();
    assert!(logs.contains("t-sjob-scheduler-"), "{logs}");
    batch::down("t-sjob", None, &opts).await.unwrap();
    assert!(queued(SLURM, "t-sjob").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_cancels_jobs_of_clusters_that_are_not_live_and_keeps_live_ones() {
    let (dir, opts) = setup("t-live");
    let live = config(dir.path(), SLURM, "t-live", 1, "", "");
    let _down = down_guard("t-live", &opts);
    batch::up(&live, &opts).await.unwrap();
    // What a crashed `up` or keeper leaves: a tagged job whose cluster has no scheduler.
    let ghost = config(dir.path(), SLURM, "t-ghost", 1, "", "");
    let out = std::process::Command::new("sbatch")
        .args([
            "--comment=rask:cluster=t-ghost,role=worker,group=default",
            "-J",
            "t-ghost-default-0",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 300",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(queued(SLURM, "t-ghost").len(), 1);

    let young = batch::sweep(Some(&ghost), Duration::from_secs(600), &opts)
        .await
        .unwrap();
    let g = young.iter().find(|s| s.cluster == "t-ghost").unwrap();
    assert!(!g.deleted && g.why.contains("less than"), "{g:?}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let swept = batch::sweep(Some(&ghost), Duration::from_secs(2), &opts)
        .await
        .unwrap();
    let g = swept.iter().find(|s| s.cluster == "t-ghost").unwrap();
    assert!(g.deleted, "{g:?}");
    assert_eq!(g.jobs.len(), 1);
    let l = swept.iter().find(|s| s.cluster == "t-live").unwrap();
    assert!(!l.deleted && l.why == "its scheduler answers", "{l:?}");
    wait_until(
        "the ghost's job is gone",
        Duration::from_secs(30),
        async || queued(SLURM, "t-ghost").is_empty(),
    )
    .await;
    assert_eq!(queued(SLURM, "t-live").len(), 1);
    batch::down("t-live", None, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_at_start_is_reported_with_how_its_job_ended() {
    let (dir, mut opts) = setup("t-fail");
    let wrapper = crate::local_backend::failing_worker_rask(dir.path());
    opts.rask_bin = Some(wrapper);
    let path = config(dir.path(), SLURM, "t-fail", 1, "", "");
    let _down = down_guard("t-fail", &opts);
    let err = batch::up(&path, &opts).await.unwrap_err().to_string();
    assert!(
        err.contains("worker jobs ended before joining the scheduler"),
        "{err}"
    );
    assert!(
        err.contains("ended (FAILED (NonZeroExitCode), exit code 3:0) before its worker joined"),
        "{err}"
    );
    assert!(
        err.contains("libcuda.so.1: cannot open shared object file"),
        "{err}"
    );
    assert!(err.contains(".err ends:"), "{err}");

    // An interface this machine does not have is named before anything is submitted.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "scheduler_options:\n  host: 127.0.0.1\n",
        "scheduler_options:\n  interface: nosuchif0\n",
    );
    std::fs::write(&path, text).unwrap();
    let err = batch::up(&path, &opts).await.unwrap_err().to_string();
    assert!(
        err.contains("scheduler_options.interface: nosuchif0 has no IPv4 address on this machine"),
        "{err}"
    );
    assert!(queued(SLURM, "t-fail").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_scheduler_dies_the_jobs_end_and_the_keeper_gives_up() {
    let (dir, opts) = setup("t-lost");
    let path = config(dir.path(), SLURM, "t-lost", 2, "", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("scheduler_seconds: 60", "scheduler_seconds: 3");
    std::fs::write(&path, text).unwrap();
    let _down = down_guard("t-lost", &opts);
    batch::up(&path, &opts).await.unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(opts.state_dir.join("t-lost.state.json")).unwrap(),
    )
    .unwrap();
    let pid = state["scheduler_pid"].as_u64().unwrap().to_string();
    // The scheduler dies (as when the machine it ran on goes away).
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_until(
        "the cluster's jobs ended",
        Duration::from_secs(60),
        async || queued(SLURM, "t-lost").is_empty(),
    )
    .await;
    let log = dir.path().join("logs/t-lost-keeper.log");
    wait_until("the keeper gave up", Duration::from_secs(30), async || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("has not answered for")
    })
    .await;
    let status = batch::status("t-lost", None, &opts)
        .await
        .unwrap()
        .to_string();
    assert!(status.contains("which is not running"), "{status}");
    assert!(
        status.contains("is not running: start it again with `rask-operator keep t-lost &`"),
        "{status}"
    );
    batch::down("t-lost", None, &opts).await.unwrap();
    assert!(!opts.state_dir.join("t-lost.yaml").exists());
}
