//! Mutual TLS on real clusters (worker processes started with `--tls-ca-file`, `--tls-cert`,
//! `--tls-key`): work and peer transfers over `tls://`, and processes without the cluster's
//! certificate refused everywhere — the scheduler's port, workers' data servers, the HTTP API.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rask::certs::ThrowawayCa;
use rask::core::net::{self, PeerPool};
use rask::core::tls::{TlsConfig, TlsFiles};
use rask::local::{LocalCluster, LocalClusterConfig};
use rask::scheduler::http::ApiAuth;
use rask::seed::{self, lit};
use rask::worker::{Worker, WorkerConfig};
use rask::{Value, client::Client};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::rask_bin;

/// A cluster of `n` worker processes on `tls://`, its HTTP API on HTTPS, guarded by `auth`.
async fn tls_cluster(n: usize, auth: ApiAuth) -> (LocalCluster, ThrowawayCa, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ThrowawayCa::new("cluster CA").unwrap();
    let mut config = LocalClusterConfig::new(n, 1).processes(rask_bin());
    config.dashboard = Some("127.0.0.1:0".parse().unwrap());
    config.worker_env.push(("RUST_LOG".into(), "warn".into()));
    config.tls = Some(ca.cluster_tls(dir.path(), "member").unwrap());
    config.api_auth = auth;
    let cluster = LocalCluster::start(config)
        .await
        .expect("TLS cluster starts");
    (cluster, ca, dir)
}

/// An identity from another CA that trusts the cluster's CA: only the cluster's check of its
/// certificate can keep it out.
fn intruder(cluster_ca: &ThrowawayCa, dir: &Path) -> TlsConfig {
    let other = ThrowawayCa::new("intruder CA").unwrap();
    let files = other.write_member(dir, "intruder").unwrap();
    let trusted = dir.join("cluster-ca.pem");
    std::fs::write(&trusted, cluster_ca.pem()).unwrap();
    TlsConfig::load(&TlsFiles {
        ca_file: trusted,
        ..files
    })
    .unwrap()
}

#[tokio::test]
async fn a_tls_cluster_computes_a_map_and_moves_data_between_workers() {
    let (cluster, _ca, _dir) = tls_cluster(2, ApiAuth::default()).await;
    assert!(cluster.scheduler_address().starts_with("tls://127.0.0.1:"));
    let client = cluster.client().await.unwrap();
    let futures = client.map(seed::INC, (0..200i64).map(lit));
    let values = client.gather(&futures).await.unwrap();
    assert_eq!(values, (1..=200).map(Value::Int).collect::<Vec<_>>());
    let before = cluster.snapshot().await.unwrap();
    assert_eq!(before.workers.len(), 2);
    for w in &before.workers {
        assert!(w.address.starts_with("tls://"), "{}", w.address);
        assert!(
            w.keys > 0,
            "both workers hold results: {} holds none",
            w.name
        );
    }
    // One task over every result: whichever worker runs it fetches the other's over TLS.
    let total = client.submit_with(seed::SUM, |d| {
        futures.iter().map(|f| d.input(f).into()).collect()
    });
    assert_eq!(total.result().await.unwrap(), Value::Int((1..=200).sum()));
    let moved = cluster.snapshot().await.unwrap().transfer_bytes_total;
    assert!(
        moved > before.transfer_bytes_total,
        "no data moved between workers"
    );
    // A result over the inline limit: the client fetches it from the worker's data server.
    let big = client.submit(
        seed::BYTES,
        seed::MakeBytes {
            n: 3_000_000,
            fill: 9,
        },
    );
    match big.result().await.unwrap() {
        Value::Bytes(b) => assert!(b.len() == 3_000_000 && b.iter().all(|&x| x == 9)),
        other => panic!("unexpected {other:?}"),
    }
    drop(client);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_process_without_the_cluster_certificate_cannot_submit_fetch_or_join() {
    let (cluster, ca, _dir) = tls_cluster(1, ApiAuth::default()).await;
    let address = cluster.scheduler_address().to_owned();
    // A result held by the worker, to try to fetch it.
    let member = cluster.client().await.unwrap();
    let held = member.submit(seed::INC, lit(41));
    assert_eq!(held.result().await.unwrap(), Value::Int(42));
    let worker_address = cluster.snapshot().await.unwrap().workers[0].address.clone();

    // No certificate: a tls:// address is refused before connecting, and plain TCP to the TLS
    // port gets nothing but a closed connection.
    let err = Client::connect(&address).await.err().unwrap().to_string();
    assert!(err.contains("--tls-cert"), "{err}");
    let plain = address.replace("tls://", "tcp://");
    assert!(Client::connect(&plain).await.is_err());

    // A certificate from another CA: refused by the scheduler, by the worker's data server,
    // and as a worker.
    let other_dir = tempfile::tempdir().unwrap();
    let intruder = intruder(&ca, other_dir.path());
    let err = Client::connect_with(&address, Some(intruder.clone()))
        .await
        .err()
        .expect("the scheduler refuses a foreign certificate")
        .to_string();
    assert!(err.contains(&address), "{err}");
    let pool = PeerPool::new(Some(intruder.clone()));
    let key = held.key().clone();
    assert!(
        pool.get_data(&worker_address, vec![key.clone()])
            .await
            .is_err(),
        "the worker's data server gave a result to a foreign certificate"
    );
    assert!(
        PeerPool::new(None)
            .get_data(&worker_address.replace("tls://", "tcp://"), vec![key])
            .await
            .is_err(),
        "the worker's data server answered plain TCP"
    );
    let mut wc = WorkerConfig::new(&address, "intruder");
    wc.connect_timeout = Duration::from_secs(5);
    wc.listen_host = Some("127.0.0.1".into());
    wc.tls = Some(intruder);
    assert!(
        Worker::start(wc, rask::registry()).await.is_err(),
        "a worker with a foreign certificate joined"
    );
    let after = cluster.snapshot().await.unwrap();
    assert_eq!(after.workers.len(), 1);
    assert_eq!(after.clients, 1, "only the member's client is connected");
    drop(member);
    cluster.shutdown().await;
}

/// An HTTP/1.1 exchange over `stream`: (status, body).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> (u16, String) {
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: rask\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify; what was read is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("HTTP answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (head, rest) = text.split_once("\r\n\r\n").expect("headers end");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        crate::dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

/// An HTTPS client that trusts the cluster's CA but has no certificate.
async fn https_without_certificate(
    ca: &ThrowawayCa,
    addr: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the API admits a TLS client without a certificate to the handshake")
}

#[tokio::test]
async fn retire_workers_over_https_needs_the_cluster_certificate_or_the_token() {
    let auth = ApiAuth {
        token: Some("t0k3n".into()),
        read_only_open: false,
    };
    let (cluster, ca, dir) = tls_cluster(2, auth).await;
    let api = cluster.dashboard_address().unwrap();
    let retire = "/api/v1/retire_workers";
    let one = r#"{"n": 1}"#;

    let anon = async || https_without_certificate(&ca, api).await;
    let (status, body) = exchange(anon().await, "POST", retire, one, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client certificate"), "{body}");
    let (status, body) = exchange(anon().await, "POST", retire, one, Some("Bearer guess")).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = exchange(anon().await, "GET", "/metrics", "", None).await;
    assert_eq!(
        status, 401,
        "read-only routes are closed without --api-read-only-open"
    );
    let (status, body) = exchange(anon().await, "GET", "/health", "", None).await;
    assert_eq!((status, body.as_str()), (200, "ok"), "probes still work");
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 2);

    // Plain HTTP to the HTTPS port gets no answer.
    let mut plain = tokio::net::TcpStream::connect(api).await.unwrap();
    plain
        .write_all(b"POST /api/v1/retire_workers HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\n{\"n\": 1}")
        .await
        .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("200 OK"));

    // The token works...
    let (status, body) = exchange(anon().await, "POST", retire, one, Some("Bearer t0k3n")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 1);
    // ...and so does the cluster's certificate, without a token.
    let member = rask::local::ClusterTls::load(
        ThrowawayCa::write_member(&ca, dir.path(), "operator").unwrap(),
    )
    .unwrap();
    let stream = net::connect(
        &format!("tls://{api}"),
        Some(&member.config),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (status, body) = exchange(stream, "GET", "/api/v1/get_workers", "", None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""num_workers":1"#), "{body}");
    // A certificate from another CA is refused at the handshake.
    let other = intruder(&ca, tempfile::tempdir().unwrap().path());
    let refused = async move {
        let s = net::connect(
            &format!("tls://{api}"),
            Some(&other),
            Duration::from_secs(10),
        )
        .await?;
        let (status, _) = exchange(s, "POST", retire, one, None).await;
        Ok::<u16, std::io::Error>(status)
    };
    match tokio::time::timeout(Duration::from_secs(30), tokio::spawn(refused)).await {
        Ok(Ok(Ok(status))) => panic!("a foreign certificate got an answer: {status}"),
        Ok(Ok(Err(_))) | Ok(Err(_)) => {} // an error, or a panic on no status line
        Err(_) => panic!("hung"),
    }
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 1);
    cluster.shutdown().await;
}

#[test]
fn the_command_line_names_what_is_wrong_with_its_tls_settings() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(rask_bin())
            .args(args)
            .env_remove("DASK_DISTRIBUTED__COMM__TLS__CA_FILE")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let sched = ["scheduler", "--port", "0", "--dashboard-address", "none"];
    let missing = dir.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    let err = run(&[
        &sched[..],
        &["--tls-ca-file", missing, "--tls-cert", missing],
    ]
    .concat());
    assert!(
        err.contains("TLS CA file") && err.contains("missing.pem"),
        "{err}"
    );
    let err = run(&[&sched[..], &["--tls-cert", missing]].concat());
    assert!(err.contains("--tls-ca-file"), "{err}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();
    let garbage = garbage.to_str().unwrap();
    let err = run(&[
        &sched[..],
        &["--tls-ca-file", garbage, "--tls-cert", garbage],
    ]
    .concat());
    assert!(err.contains("garbage.pem holds no certificate"), "{err}");
    let err = run(&[
        "worker",
        "tls://127.0.0.1:1",
        "--no-nanny",
        "--no-dashboard",
    ]);
    assert!(
        err.contains("tls:// address") && err.contains("--tls-cert"),
        "{err}"
    );
    let err = run(&[
        "worker",
        "tcp://127.0.0.1:1",
        "--no-nanny",
        "--no-dashboard",
        "--require-encryption",
    ]);
    assert!(err.contains("encryption is required"), "{err}");
}
