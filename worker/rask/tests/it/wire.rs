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
