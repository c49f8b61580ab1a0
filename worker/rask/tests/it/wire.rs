//! Malformed and hostile input on the wire closes that connection and nothing else.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rask::core::protocol::{DEFAULT_MAX_FRAME, Envelope, ToScheduler, encode_frame};
use rask::local::LocalCluster;

fn host_port(addr: &str) -> &str {
    addr.trim_start_matches("tcp://")
}

/// Sends raw bytes and expects the peer to close the connection.
async fn send_and_expect_close(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(host_port(addr)).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let _ = s.shutdown().await;
    let mut buf = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the peer closes the connection");
}

#[tokio::test]
async fn garbage_and_oversized_frames_do_not_hurt_the_scheduler_or_workers() {
    let cluster = LocalCluster::new(1, 1).await.unwrap();
    let sched = cluster.scheduler_address().to_owned();
    // A length prefix announcing 2^63 bytes.
    send_and_expect_close(&sched, &(1u64 << 63).to_le_bytes()).await;
    // A plausible length, then garbage.
    let mut junk = 16u64.to_le_bytes().to_vec();
    junk.extend_from_slice(&[0xff; 16]);
    send_and_expect_close(&sched, &junk).await;
    // A valid frame whose first message is not a registration.
    let (head, _) = encode_frame(
        &[Envelope::new(ToScheduler::ReleaseKeys { keys: vec![] })],
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    send_and_expect_close(&sched, &head).await;
    // A truncated frame.
    send_and_expect_close(&sched, &head[..head.len() - 1]).await;
    // The same at a worker's data port.
    let worker_addr = cluster.snapshot().await.unwrap().workers[0].address.clone();
    send_and_expect_close(&worker_addr, &(1u64 << 63).to_le_bytes()).await;
    send_and_expect_close(&worker_addr, &junk).await;

    // Everything still works.
    let client = cluster.client().await.unwrap();
    assert_eq!(
        client
            .submit(rask::seed::INC, rask::seed::lit(41))
            .result()
            .await
            .unwrap(),
        rask::Value::Int(42)
    );
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 1);
    cluster.shutdown().await;
}

/// `rask scheduler` with `args` on a free port; the child and its address (`host:port`).
async fn scheduler_process(
    args: &[&str],
    env: &[(&str, &str)],
) -> (tokio::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scheduler.json");
    let child = tokio::process::Command::new(crate::rask_bin())
        .args(["scheduler", "--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "none", "--scheduler-file"])
        .arg(&file)
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let address = loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            break host_port(v["address"].as_str().unwrap()).to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no scheduler file");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    (child, address, dir)
}

async fn closed_within(s: &mut TcpStream, secs: u64) -> bool {
    let mut buf = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(secs),
        s.read_to_end(&mut buf),
    )
    .await
    .is_ok()
}

#[tokio::test]
async fn the_scheduler_s_limit_flags_and_dask_s_connect_timeout_variable_apply() {
    // Dask's variable sets the handshake timeout; the flag sets the connection limit.
    let (mut child, addr, _dir) = scheduler_process(
        &["--max-connections", "1"],
        &[("DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT", "2s")],
    )
    .await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    // The one slot is taken: a second connection is refused at once.
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert!(closed_within(&mut second, 5).await);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert!(closed_within(&mut silent, 10).await);
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    child.kill().await.unwrap();

    // A frame over --max-frame closes the connection.
    let (mut child, addr, _dir) = scheduler_process(&["--max-frame", "64KiB"], &[]).await;
    let mut big = TcpStream::connect(&addr).await.unwrap();
    big.write_all(&(65u64 << 10).to_le_bytes()).await.unwrap();
    assert!(closed_within(&mut big, 5).await);
    child.kill().await.unwrap();
}

#[test]
fn limit_flags_that_would_refuse_every_peer_are_errors() {
    for (args, expected) in [
        (&["--max-frame", "100"][..], "--max-frame 100 is below"),
        (
            &["--max-connections", "0"][..],
            "--max-connections must be at least 1",
        ),
        (
            &["--handshake-timeout", "0s"][..],
            "--handshake-timeout must be longer than 0",
        ),
        (&["--handshake-timeout", "soon"][..], "not a duration"),
        (
            &["--max-graph-tasks", "0"][..],
            "--max-graph-tasks must be at least 1",
        ),
    ] {
        let out = std::process::Command::new(crate::rask_bin())
            .args(["scheduler", "--port", "0", "--dashboard-address", "none"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
