//! Batch clusters on a real single-node Son of Grid Engine (Debian's gridengine-master, -exec and
//! -client, started on loopback by scripts/hpc-peers): `up` computing the seed's array mean,
//! `status`, `logs` and `down`, and a held job reported with its reason.

use rask_operator::providers::ProviderError;
use rask_operator::providers::commands::batch;

use crate::batch_env::{config, down_guard, queued, rask_run};

const SGE: &str = "sge";

fn setup(
    name: &str,
) -> (
    tempfile::TempDir,
    rask_operator::providers::commands::Options,
) {
    crate::batch_env::setup(SGE, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_computes_the_array_mean_and_down_leaves_no_job_on_grid_engine() {
    let (dir, opts) = setup("t-sge");
    let path = config(dir.path(), SGE, "t-sge", 2, "", "");
    let _down = down_guard("t-sge", &opts);
    let report = batch::up(&path, &opts).await.unwrap();
    assert_eq!(report.workers.len(), 2, "{report}");
    let jobs = queued(SGE, "t-sge");
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    assert!(jobs.iter().all(|(_, s)| s == "r" || s == "t"), "{jobs:?}");

    let tls = report.certificates.clone().expect("TLS is the default");
    assert!(report.scheduler.address.starts_with("tls://"), "{report}");
    crate::batch_env::assert_private(&tls);
    crate::batch_env::assert_plain_refused(&report).await;
    let mean = rask_run("array-mean", &report, &["--size", "120", "--chunk", "40"]);
    assert_eq!(mean["ok"], true, "{mean}");
    let status = batch::status("t-sge", None, &opts)
        .await
        .unwrap()
        .to_string();
    assert_eq!(status.matches(" running ").count(), 2, "{status}");
    assert_eq!(status.matches(" 1/1").count(), 2, "{status}");
    let (worker, job) = &report.workers[0];
    let logs = batch::logs("t-sge", Some(worker), None, &opts)
        .await
        .unwrap();
    assert!(logs.contains(&format!("{worker}.o{job}")), "{logs}");

    let deleted = batch::down("t-sge", None, &opts).await.unwrap();
    assert_eq!(
        deleted.iter().filter(|d| d.starts_with("job ")).count(),
        2,
        "{deleted:?}"
    );
    assert!(queued(SGE, "t-sge").is_empty());
    assert!(!tls.exists(), "down left the keys in {}", tls.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_grid_engine_job_is_reported_and_cancelled_by_up() {
    let (dir, opts) = setup("t-sgeheld");
    let path = config(
        dir.path(),
        SGE,
        "t-sgeheld",
        1,
        "",
        "  job_extra_directives: [-h]\n",
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("workers_seconds: 90", "workers_seconds: 4");
    std::fs::write(&path, text).unwrap();
    let _down = down_guard("t-sgeheld", &opts);
    let err = batch::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::RolledBack { .. }), "{msg}");
    assert!(msg.contains(": held"), "{msg}");
    assert!(
        queued(SGE, "t-sgeheld").is_empty(),
        "{:?}",
        queued(SGE, "t-sgeheld")
    );
}
