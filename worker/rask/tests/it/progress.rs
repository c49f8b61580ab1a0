//! Following progress (`Client::follow`): the scheduler's reports on real clusters, and
//! `rask run`'s progress lines when stderr is not a terminal.

use std::time::Duration;

use rask::client::ClientError;
use rask::client::delayed::{delayed, delayed_with};
use rask::local::LocalCluster;
use rask::seed::{self, lit};
use rask::{Value, jobs};

/// Bounds a wait that should end: a hang is a failure, not a stuck test run.
async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 60 s"))
}

#[tokio::test]
async fn following_futures_counts_their_prefixes_until_all_are_in_memory() {
    let cluster = LocalCluster::new(2, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    // Long enough that the follow, sent after the graph, finds the sum still to run.
    let leaves = jobs::burst(&client, 40, 0.05);
    let total = client.submit_with(seed::SUM, |d| {
        leaves.iter().map(|f| d.input(f).into()).collect()
    });
    let mut progress = client
        .follow_futures(std::slice::from_ref(&total))
        .await
        .unwrap();
    let first = progress.snapshot();
    assert!(first.reports >= 1);
    assert_eq!(first.total(), 41, "{first:?}");
    let names: Vec<&str> = first.prefixes.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["sum", "sleep"]);
    let last = within("the follow's end", progress.wait()).await.unwrap();
    assert!(last.done);
    assert_eq!((last.memory(), last.erred(), last.total()), (41, 0, 41));
    assert_eq!(total.result().await.unwrap(), Value::Int((0..40).sum()));
    // Reports only ever move forward here: nothing was lost or recomputed.
    assert!(last.reports >= 2);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_failure_counts_as_erred_and_ends_the_follow() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let bad = delayed(seed::FAIL, "boom".to_owned());
    let after = delayed_with(seed::INC, |d| d.input(&bad).into());
    // Followed from the graph's own frame: both tasks are counted however fast they fail.
    let mut progress = client.follow_submissions();
    let f = client.compute(&after);
    let last = within("the follow's end", progress.wait()).await.unwrap();
    assert!(last.done);
    assert_eq!(
        (last.erred(), last.memory(), last.total()),
        (2, 0, 2),
        "{last:?}"
    );
    assert!(matches!(f.result().await, Err(ClientError::Task(_))));
    cluster.shutdown().await;
}

#[tokio::test]
async fn following_an_unknown_key_is_an_error_naming_it() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let err = client
        .follow(vec!["nothing-such-1".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::UnknownKeys(_)), "{err:?}");
    assert!(err.to_string().contains("nothing-such-1"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_submissions_follow_takes_every_graph_sent_after_it() {
    let cluster = LocalCluster::new(2, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut progress = client.follow_submissions();
    assert_eq!(progress.snapshot().reports, 0);
    assert_eq!(jobs::seed_delayed(&client).await.unwrap(), 131);
    let first = within("the delayed graph's end", progress.wait())
        .await
        .unwrap();
    assert_eq!(first.total(), 19, "{first:?}");
    let inc = client.submit(seed::INC, lit(41));
    assert_eq!(inc.result().await.unwrap(), Value::Int(42));
    // The second submission joins the same follow: its report comes, then the follow is done
    // again.
    let last = within("the second submission's report", async {
        loop {
            let s = progress.changed().await.unwrap();
            if s.done && s.total() == 20 {
                return s;
            }
        }
    })
    .await;
    assert_eq!(last.memory(), 20);
    let incs = last.prefixes.iter().find(|p| p.name == "inc").unwrap();
    assert_eq!((incs.memory, incs.total()), (7, 7));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_lost_scheduler_ends_the_follow_with_an_error() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let client = cluster.client().await.unwrap();
    let slow = client.submit(
        seed::SLEEP,
        seed::Sleep {
            seconds: 30.0,
            value: lit(1),
        },
    );
    let mut progress = client
        .follow_futures(std::slice::from_ref(&slow))
        .await
        .unwrap();
    cluster.shutdown().await;
    let err = within("the loss", progress.wait()).await.unwrap_err();
    assert!(matches!(err, ClientError::Lost(_)), "{err:?}");
}

/// `rask run` with stderr to a pipe: plain progress lines, and the result as ever.
#[test]
fn rask_run_off_a_terminal_prints_plain_progress_lines_and_the_result() {
    let out = std::process::Command::new(crate::rask_bin())
        .args(["run", "delayed", "--in-process", "--workers", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" = 131"), "{stdout}");
    for line in [
        "sum: 1/1 tasks in memory, 0 erred",
        "add: 6/6 tasks in memory, 0 erred",
        "inc: 6/6 tasks in memory, 0 erred",
        "custom_op: 6/6 tasks in memory, 0 erred",
    ] {
        assert!(
            stderr.lines().any(|l| l == line),
            "no {line:?} in:\n{stderr}"
        );
    }
    // No terminal: no bar's escape sequences.
    assert!(!stderr.contains('\u{1b}'), "{stderr}");

    let quiet = std::process::Command::new(crate::rask_bin())
        .args([
            "run",
            "delayed",
            "--in-process",
            "--workers",
            "1",
            "--no-progress",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&quiet.stderr);
    assert!(quiet.status.success(), "{stderr}");
    assert!(!stderr.contains("tasks in memory"), "{stderr}");
    assert!(String::from_utf8_lossy(&quiet.stdout).contains(" = 131"));
}
