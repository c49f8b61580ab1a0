//! The limits that protect the scheduler from its peers: each case ends in a refusal or a closed
//! connection, and the scheduler keeps serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failure

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use rask_core::Key;
use rask_core::net::{self, Receiver, Sender};
use rask_core::protocol::{
    DEFAULT_MAX_FRAME, Envelope, FromScheduler, TaskError, ToScheduler, encode_frame,
};
use rask_core::task::TaskSpec;
use rask_scheduler::server::{Limits, Scheduler, SchedulerConfig};

async fn start(configure: impl FnOnce(&mut SchedulerConfig)) -> Scheduler {
    let mut config = SchedulerConfig::default();
    configure(&mut config);
    Scheduler::start(config).await.unwrap()
}

async fn raw(s: &Scheduler) -> TcpStream {
    TcpStream::connect(net::strip_scheme(s.address()))
        .await
        .unwrap()
}

/// Waits until the peer closes `stream` (reads to the end); panics after `within`.
async fn expect_closed(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, async {
        loop {
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the scheduler did not close the connection");
    got
}

/// A registered client on the raw protocol.
async fn client(s: &Scheduler) -> (Sender<ToScheduler>, Receiver) {
    let (tx, mut rx) = net::split::<ToScheduler>(raw(s).await, "scheduler".into());
    tx.send(ToScheduler::RegisterClient {
        name: "test".into(),
    });
    let first = recv_one(&mut rx).await;
    assert!(matches!(first, FromScheduler::Welcome { .. }), "{first:?}");
    (tx, rx)
}

/// A registered worker named `name` on the raw protocol (it serves no data).
async fn worker(s: &Scheduler, name: &str) -> (Sender<ToScheduler>, Receiver) {
    worker_with(s, name, Vec::new()).await
}

/// [`worker`] with the function families it says it runs.
async fn worker_with(
    s: &Scheduler,
    name: &str,
    families: Vec<rask_core::FamilyInfo>,
) -> (Sender<ToScheduler>, Receiver) {
    let (tx, mut rx) = net::split::<ToScheduler>(raw(s).await, "scheduler".into());
    tx.send(ToScheduler::RegisterWorker(Box::new(
        rask_core::protocol::WorkerInfo {
            name: name.into(),
            address: "tcp://127.0.0.1:1".into(),
            nthreads: 1,
            memory_limit: 0,
            pid: 1,
            families,
            resources: rask_core::Resources::none(),
        },
    )));
    let first = recv_one(&mut rx).await;
    assert!(matches!(first, FromScheduler::Welcome { .. }), "{first:?}");
    (tx, rx)
}

async fn recv_one(rx: &mut Receiver) -> FromScheduler {
    let batch = tokio::time::timeout(Duration::from_secs(10), rx.recv::<FromScheduler>())
        .await
        .expect("an answer within 10 s")
        .expect("a frame")
        .expect("not closed");
    batch.into_iter().next().expect("a message").msg
}

/// The client is answered: a key it asks for that names no task comes back as an error.
async fn still_answers(tx: &Sender<ToScheduler>, rx: &mut Receiver) {
    tx.send(ToScheduler::UpdateGraph {
        tasks: Vec::new(),
        wanted_tasks: 0,
        wanted: vec![Key::from("nothing-here")],
        more: 0,
    });
    match recv_one(rx).await {
        FromScheduler::KeyErred { failure, .. } => assert_eq!(failure.error, TaskError::UnknownKey),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_over_the_maximum_closes_that_connection_only() {
    let s = start(|c| c.limits.conn.max_frame = 64 << 10).await;
    let (tx, mut rx) = client(&s).await;
    let mut hostile = raw(&s).await;
    // Announces 1 MiB (more than the 64 KiB maximum) and sends a little of it.
    hostile
        .write_all(&(1u64 << 20).to_le_bytes())
        .await
        .unwrap();
    hostile.write_all(&[0u8; 100]).await.unwrap();
    expect_closed(&mut hostile, Duration::from_secs(5)).await;
    // A registered client that sends one too is disconnected as well.
    let (big_tx, mut big_rx) = client(&s).await;
    big_tx.send(ToScheduler::UpdateGraph {
        tasks: Vec::new(),
        wanted_tasks: 0,
        wanted: (0..20_000).map(|i| Key::from(format!("k-{i}"))).collect(),
        more: 0,
    });
    let end = tokio::time::timeout(Duration::from_secs(5), big_rx.recv::<FromScheduler>())
        .await
        .expect("closed within 5 s");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    still_answers(&tx, &mut rx).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_silent_or_half_sent_handshake_is_closed_after_the_timeout() {
    let s = start(|c| c.limits.handshake_timeout = Duration::from_secs(1)).await;
    let started = Instant::now();
    let mut silent = raw(&s).await;
    let mut partial = raw(&s).await;
    // Half a length prefix; and, on a third, a whole prefix with half the registration.
    partial.write_all(&[9, 0, 0]).await.unwrap();
    let (head, _) = encode_frame(
        &[Envelope::new(ToScheduler::RegisterClient {
            name: "slow".into(),
        })],
        DEFAULT_MAX_FRAME,
    )
    .unwrap();
    let mut half = raw(&s).await;
    half.write_all(&head[..head.len() - 2]).await.unwrap();
    for stream in [&mut silent, &mut partial, &mut half] {
        expect_closed(stream, Duration::from_secs(5)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    // A registered client idle for longer than the handshake timeout stays connected.
    let (tx, mut rx) = client(&s).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    still_answers(&tx, &mut rx).await;
    s.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_existing_ones_keep_working() {
    let s = start(|c| c.limits.max_connections = 2).await;
    let (tx1, mut rx1) = client(&s).await;
    let (tx2, rx2) = client(&s).await;
    // The third is told why, then closed.
    let mut third = raw(&s).await;
    let got = expect_closed(&mut third, Duration::from_secs(5)).await;
    let refusal = rask_core::protocol::read_frame::<FromScheduler, _>(&mut &got[..], 1 << 20)
        .await
        .unwrap()
        .unwrap();
    match &refusal[0].msg {
        FromScheduler::Refused { reason, retry } => {
            assert!(reason.contains("2 connections") && reason.contains("--max-connections"));
            assert!(retry);
        }
        other => panic!("unexpected {other:?}"),
    }
    still_answers(&tx1, &mut rx1).await;
    // Once one leaves, a new connection is accepted.
    drop((tx2, rx2));
    let deadline = Instant::now() + Duration::from_secs(5);
    let (tx3, mut rx3) = loop {
        let (tx, mut rx) = net::split::<ToScheduler>(raw(&s).await, "scheduler".into());
        tx.send(ToScheduler::RegisterClient {
            name: "again".into(),
        });
        match recv_one(&mut rx).await {
            FromScheduler::Welcome { .. } => break (tx, rx),
            FromScheduler::Refused { .. } if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    still_answers(&tx3, &mut rx3).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_graph_over_the_task_limit_is_refused_with_the_limit_and_size() {
    let s = start(|c| c.policy.max_graph_tasks = 10).await;
    let (tx, mut rx) = client(&s).await;
    let tasks: Vec<TaskSpec> = (0..11)
        .map(|i| {
            TaskSpec::new(
                format!("t-{i}").into(),
                "seed.inc".into(),
                bytes::Bytes::new(),
                vec![],
            )
        })
        .collect();
    tx.send(ToScheduler::UpdateGraph {
        tasks,
        wanted_tasks: 0,
        wanted: vec![Key::from("t-10")],
        more: 0,
    });
    match recv_one(&mut rx).await {
        FromScheduler::KeyErred { key, failure } => {
            assert_eq!(key, Key::from("t-10"));
            assert_eq!(
                failure.error,
                TaskError::GraphTooLarge { tasks: 11, max: 10 }
            );
            let text = failure.to_string();
            assert!(
                text.contains("11 tasks") && text.contains("limit of 10"),
                "{text}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        s.handle().snapshot().await.unwrap().tasks,
        rask_scheduler::TaskCounts::default()
    );
    still_answers(&tx, &mut rx).await;
    s.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_at_the_backlog_limit() {
    let s = start(|c| c.limits.conn.max_backlog = 4 << 20).await;
    let (tx, mut rx) = client(&s).await;
    let (stuck, _stuck_rx) = client(&s).await;
    // Each update makes the scheduler answer 1,000 errors (keys never asked for before), which
    // the client never reads.
    let started = Instant::now();
    for round in 0.. {
        let clients = s.handle().snapshot().await.unwrap().clients;
        if clients == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stuck client was not disconnected"
        );
        stuck.send(ToScheduler::UpdateGraph {
            tasks: Vec::new(),
            wanted_tasks: 0,
            wanted: (0..1000)
                .map(|i| Key::from(format!("none-{round}-{i}")))
                .collect(),
            more: 0,
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    still_answers(&tx, &mut rx).await;
    s.shutdown().await;
}

#[test]
fn default_limits_are_documented_values() {
    let l = Limits::default();
    assert_eq!(l.conn.max_frame, DEFAULT_MAX_FRAME);
    assert_eq!(l.conn.max_backlog, 1 << 30);
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.handshake_timeout, Duration::from_secs(30));
}

/// A plain HTTP GET on a fresh connection; the status line's code.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = expect_closed(&mut s, Duration::from_secs(5)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn slow_http_clients_are_cut_off_and_do_not_hold_the_api() {
    let s = start(|c| {
        c.dashboard = Some("127.0.0.1:0".parse().unwrap());
        c.limits.http.header_timeout = Duration::from_millis(500);
        c.limits.http.body_timeout = Duration::from_millis(500);
    })
    .await;
    let api = s.dashboard_address().unwrap();
    // Slowloris: headers trickled a byte at a time, never finished.
    let trickler = tokio::spawn(async move {
        let mut t = TcpStream::connect(api).await.unwrap();
        let started = Instant::now();
        for b in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if t.write_all(&[*b]).await.is_err() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a trickling client was never cut off"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        started.elapsed()
    });
    // A body announced and never completed.
    let mut stalled = TcpStream::connect(api).await.unwrap();
    stalled
        .write_all(
            b"POST /api/v1/retire_workers HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"n\"",
        )
        .await
        .unwrap();
    // A connection that sends nothing at all.
    let mut silent = TcpStream::connect(api).await.unwrap();
    // Meanwhile the API answers others.
    for _ in 0..5 {
        let answer = http_get(api, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer =
        String::from_utf8_lossy(&expect_closed(&mut stalled, Duration::from_secs(5)).await)
            .into_owned();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive"), "{answer}");
    expect_closed(&mut silent, Duration::from_secs(5)).await;
    let cut_after = trickler.await.unwrap();
    assert!(cut_after < Duration::from_secs(5), "{cut_after:?}");
    let answer = http_get(api, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    s.shutdown().await;
}

#[tokio::test]
async fn a_worker_silent_past_the_ttl_is_removed_then_its_connection_closed() {
    let s = start(|c| c.policy.worker_ttl_s = 0.3).await;
    let (_tx, mut rx) = worker(&s, "hung").await;
    // No heartbeat: removed within a tick or two of the TTL, told to close, and, as it does
    // not leave, its connection is closed a TTL later.
    let started = Instant::now();
    let reason = loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv::<FromScheduler>()).await {
            Ok(Ok(Some(batch))) => {
                for e in batch {
                    assert!(matches!(e.msg, FromScheduler::Close { .. }), "{:?}", e.msg);
                }
            }
            Ok(Ok(None)) => break "closed".to_owned(),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => panic!("the connection was kept for 10 s"),
        }
    };
    assert!(started.elapsed() < Duration::from_secs(6), "{reason}");
    assert!(s.handle().snapshot().await.unwrap().workers.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn heartbeats_are_acknowledged_only_when_they_ask() {
    let s = start(|_| {}).await;
    let (tx, mut rx) = worker(&s, "beating").await;
    let beat = |ack: bool| {
        ToScheduler::Heartbeat(rask_core::protocol::WorkerLoad {
            memory_bytes: 7,
            ack,
            ..Default::default()
        })
    };
    // Four heartbeats that do not ask, then one that does: one acknowledgement, and nothing else
    // arrives (the scheduler answers in order, so an unasked-for one would come first).
    for _ in 0..4 {
        tx.send(beat(false));
    }
    tx.send(beat(true));
    assert!(matches!(
        recv_one(&mut rx).await,
        FromScheduler::HeartbeatAck
    ));
    let more = tokio::time::timeout(Duration::from_millis(300), rx.recv::<FromScheduler>()).await;
    assert!(more.is_err(), "an answer nobody asked for: {more:?}");
    // The worker is still listed: heartbeats without an answer are heartbeats all the same.
    let snap = s.handle().snapshot().await.unwrap();
    assert_eq!(snap.workers.len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn graph_parts_held_behind_a_backlog_that_does_not_drain_are_taken_up_soon_after() {
    // The scheduler holds a graph part back while the workers have thousands of ready tasks
    // to take, but not for long: a worker that never finishes must not stall the graph, nor
    // the client's later messages, which wait behind the part.
    let s = start(|_| {}).await;
    let (tx, mut rx) = client(&s).await;
    let inc = rask_core::FamilyInfo {
        name: "t".into(),
        version: "1".into(),
        functions: vec!["t.inc".into()],
    };
    let (wtx, _wrx) = worker_with(&s, "slow", vec![inc]).await;
    let (part, parts) = (5_000, 4);
    for p in 0..parts {
        let tasks = (0..part)
            .map(|i| {
                let key = format!("t-{}", p * part + i);
                TaskSpec::new(key.into(), "t.inc".into(), bytes::Bytes::new(), vec![])
            })
            .collect();
        tx.send_apart(vec![Envelope::new(ToScheduler::UpdateGraph {
            tasks,
            wanted_tasks: part as u64,
            wanted: vec![],
            more: ((parts - 1 - p) * part) as u64,
        })]);
    }
    let started = Instant::now();
    let all_in = loop {
        let counts = s.handle().snapshot().await.unwrap().tasks;
        if counts.queued + counts.processing == parts * part {
            break true;
        }
        if started.elapsed() > Duration::from_secs(10) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(all_in, "{:?}", s.handle().snapshot().await.unwrap().tasks);
    // And the client's next message, behind the parts, is answered.
    still_answers(&tx, &mut rx).await;
    drop(wtx);
    s.shutdown().await;
}
