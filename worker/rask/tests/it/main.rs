//! Integration tests: real schedulers and workers over TCP, workers as child processes where a
//! test kills them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic: that is a failure

mod array;
mod bench;
mod binary;
mod cluster;
mod frame;
mod http_api;
mod memory;
mod progress;
mod python;
mod tls;
mod wire;

use std::time::Duration;

use rask::local::{LocalCluster, LocalClusterConfig};

/// The `rask` binary cargo built for these tests.
pub fn rask_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rask")
}

/// A local cluster of `n` single-thread worker processes with the HTTP API on a free port.
pub async fn process_cluster(n: usize) -> LocalCluster {
    let mut config = LocalClusterConfig::new(n, 1).processes(rask_bin());
    config.dashboard = Some("127.0.0.1:0".parse().unwrap());
    config.worker_env.push(("RUST_LOG".into(), "warn".into()));
    LocalCluster::start(config)
        .await
        .expect("local cluster starts")
}

/// A minimal HTTP/1.1 exchange over a fresh connection: (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the HTTP API");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, rest) = text.split_once("\r\n\r\n").expect("headers end");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
