//! Pods that really run: processes on their own loopback address, `$(VAR)` expansion, Service
//! names resolved to pod IPs, readiness probes, exit codes, logs, and deletion by signal.
//! `/bin/sh` stands in for an image's entrypoint.

use crate::support::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube_double::{ApiServer, Kubelet, KubeletConfig, ProcessConfig};
use serde_json::json;
use std::time::{Duration, Instant};

const IMAGE: &str = "example/shell:1";

fn kubelet(server: &ApiServer) -> Kubelet {
    let processes = ProcessConfig::new("example/shell", "/bin/sh", "/bin/sh")
        .bind_args(|argv, ip| {
            for a in argv.iter_mut() {
                *a = a.replace("@IP@", ip);
            }
        })
        .env("FROM_CONFIG", "yes");
    Kubelet::start(
        server,
        KubeletConfig {
            processes: vec![processes],
            ..KubeletConfig::default()
        },
    )
}

fn shell_pod(name: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": IMAGE, "args": ["-c", script]}]}
    });
    if let Some(obj) = extra.as_object() {
        for (k, val) in obj {
            v["spec"]["containers"][0][k] = val.clone();
        }
    }
    serde_json::from_value(v).unwrap()
}

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn wait_for(pods: &Api<Pod>, name: &str, what: &str, f: impl Fn(&Pod) -> bool) -> Pod {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(p) = pods.get(name).await
            && f(&p)
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {name} {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn terminated(p: &Pod) -> (i32, String) {
    let cs = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let t = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    (t.exit_code, t.reason.clone().unwrap_or_default())
}

#[tokio::test]
async fn a_pod_runs_as_a_process_on_its_own_address_and_its_exit_code_is_reported() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let script = "echo \"hello $(GREETING) from $HOSTNAME on @IP@ config=$FROM_CONFIG\"; echo oops >&2; exit 3";
    let pod = shell_pod(
        "job",
        script,
        json!({"env": [{"name": "GREETING", "value": "world"}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "job", "failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p), (3, "Error".into()));
    let ip = p.status.unwrap().pod_ip.unwrap();
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "{ip}");
    let logs = kubelet.logs("default", "job");
    assert!(
        logs.contains(&format!("hello world from job on {ip} config=yes")),
        "{logs}"
    );
    assert!(logs.contains("oops"), "{logs}");

    pods.create(
        &PostParams::default(),
        &shell_pod("ok", "exit 0", json!({})),
    )
    .await
    .unwrap();
    let p = wait_for(&pods, "ok", "succeeded", |p| phase(p) == "Succeeded").await;
    assert_eq!(terminated(&p), (0, "Completed".into()));
}

#[tokio::test]
async fn a_secret_volume_is_files_at_its_mount_path_and_the_pod_waits_for_the_secret() {
    use k8s_openapi::api::core::v1::Secret;
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let secrets: Api<Secret> = Api::namespaced(server.client(), "default");
    let mut pod = shell_pod(
        "reader",
        "cat /etc/certs/ca.pem; echo; cat \"$KEY\"; echo; stat -c %a /etc/certs/key.pem",
        json!({"env": [{"name": "KEY", "value": "/etc/certs/key.pem"}],
               "volumeMounts": [{"name": "certs", "mountPath": "/etc/certs", "readOnly": true}]}),
    );
    pod.spec.as_mut().unwrap().volumes = Some(
        serde_json::from_value(json!([{"name": "certs", "secret": {
            "secretName": "certs",
            "items": [{"key": "ca.pem", "path": "ca.pem"}, {"key": "key.pem", "path": "key.pem", "mode": 0o600}]
        }}]))
        .unwrap(),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // Without its Secret the pod does not start.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(phase(&pods.get("reader").await.unwrap()), "Pending");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "certs"},
        "stringData": {"ca.pem": "THE-CA", "key.pem": "THE-KEY"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    wait_for(&pods, "reader", "succeeded", |p| phase(p) == "Succeeded").await;
    let logs = kubelet.logs("default", "reader");
    assert!(
        logs.contains("THE-CA") && logs.contains("THE-KEY") && logs.contains("600"),
        "{logs}"
    );
}

#[tokio::test]
async fn an_https_probe_asks_over_tls_without_checking_the_certificate() {
    let server = ApiServer::new();
    let _kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = shell_pod(
        "secure",
        "sleep 30",
        json!({"ports": [{"name": "https", "containerPort": 8443}],
               "readinessProbe": {"httpGet": {"port": "https", "path": "/health", "scheme": "HTTPS"},
                                  "periodSeconds": 1}}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "secure", "runs", |p| phase(p) == "Running").await;
    let ip = p.status.unwrap().pod_ip.unwrap();
    // A self-signed certificate nobody trusts: the kubelet's probes do not check it.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["server".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 8443))
        .await
        .unwrap();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            // A plain request would fail the handshake here.
            let Ok(mut s) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.1"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            let _ = s.shutdown().await;
        }
    });
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    wait_for(&pods, "secure", "is ready", ready).await;
    served.abort();
    pods.delete("secure", &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_command_the_image_does_not_have_fails_to_start() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = shell_pod(
        "bad",
        "exit 0",
        json!({"command": ["/usr/bin/no-such-tool"]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "bad", "failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p), (128, "StartError".into()));
    let logs = kubelet.logs("default", "bad");
    assert!(
        logs.contains("\"/usr/bin/no-such-tool\": executable file not found"),
        "{logs}"
    );
}

#[tokio::test]
async fn readiness_follows_the_http_probe_against_the_pod_ip() {
    let server = ApiServer::new();
    let _kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = shell_pod(
        "web",
        "sleep 30",
        json!({"ports": [{"name": "http", "containerPort": 8080}],
               "readinessProbe": {"httpGet": {"port": "http", "path": "/health"}, "periodSeconds": 1}}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "web", "runs", |p| phase(p) == "Running").await;
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    assert!(!ready(&p), "nothing answers the probe yet");
    let ip = p.status.unwrap().pod_ip.unwrap();
    // Answer the probe in the pod's place.
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 8080))
        .await
        .unwrap();
    let served = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let n = s.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.1"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
        }
    });
    wait_for(&pods, "web", "is ready", ready).await;
    served.abort();
    pods.delete("web", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn service_names_resolve_to_the_selected_pods_ip_and_target_port() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let services: Api<Service> = Api::namespaced(server.client(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
        "spec": {"selector": {"app": "db"}, "ports": [{"port": 80, "targetPort": "pg"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    // The client starts first: it waits for the Service to have a pod.
    let client = shell_pod(
        "client",
        "echo \"$ADDR\"",
        json!({"env": [{"name": "ADDR", "value": "tcp://db.default.svc.cluster.local:80"}]}),
    );
    pods.create(&PostParams::default(), &client).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(phase(&pods.get("client").await.unwrap()), "Pending");
    let db = shell_pod(
        "db",
        "sleep 30",
        json!({"ports": [{"name": "pg", "containerPort": 5432}]}),
    );
    pods.create(&PostParams::default(), &db).await.unwrap();
    let db_ip = wait_for(&pods, "db", "runs", |p| phase(p) == "Running")
        .await
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    wait_for(&pods, "client", "succeeded", |p| phase(p) == "Succeeded").await;
    let logs = kubelet.logs("default", "client");
    assert!(logs.contains(&format!("tcp://{db_ip}:5432")), "{logs}");
    assert_eq!(
        kubelet.resolver().rewrite("http://db.default.svc:80/x"),
        format!("http://{db_ip}:5432/x")
    );
    assert_eq!(
        kubelet
            .resolver()
            .rewrite("tcp://nothing.default.svc.cluster.local:1"),
        "tcp://nothing.default.svc.cluster.local:1",
        "a Service without pods is left as written"
    );
}

#[tokio::test]
async fn a_port_forward_reaches_the_services_pod_from_loopback() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let services: Api<Service> = Api::namespaced(server.client(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 7000}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let forward = kubelet
        .resolver()
        .port_forward("default", "echo", 80)
        .unwrap();
    let local = forward.local_addr();
    assert!(local.ip().is_loopback(), "{local}");
    // No pod yet: the connection is closed at once.
    let mut early = tokio::net::TcpStream::connect(local).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(early.read(&mut buf).await.unwrap_or(0), 0);
    let pod = shell_pod(
        "echo",
        "sleep 30",
        json!({"ports": [{"containerPort": 7000}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ip = wait_for(&pods, "echo", "runs", |p| phase(p) == "Running")
        .await
        .status
        .unwrap()
        .pod_ip
        .unwrap();
    // Serve in the pod's place.
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 7000))
        .await
        .unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
    });
    let mut s = tokio::net::TcpStream::connect(local).await.unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"hello");
    drop(forward);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::net::TcpStream::connect(local).await.is_err(),
        "the forward stops when dropped"
    );
}

#[tokio::test]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let polite = "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.05; done";
    let stubborn = "trap '' TERM; echo up; while true; do sleep 0.05; done";
    for (name, script) in [("polite", polite), ("stubborn", stubborn)] {
        pods.create(&PostParams::default(), &shell_pod(name, script, json!({})))
            .await
            .unwrap();
    }
    for name in ["polite", "stubborn"] {
        wait_for(&pods, name, "runs", |p| phase(p) == "Running").await;
        eventually("the script is up", || async {
            kubelet.logs("default", name).contains("up").then_some(())
        })
        .await;
    }
    let grace = DeleteParams {
        grace_period_seconds: Some(1),
        ..DeleteParams::default()
    };
    let t0 = Instant::now();
    pods.delete("polite", &grace).await.unwrap();
    pods.delete("stubborn", &grace).await.unwrap();
    eventually("polite is gone", || async {
        pods.get_opt("polite")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let polite_took = t0.elapsed();
    eventually("stubborn is gone", || async {
        pods.get_opt("stubborn")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let stubborn_took = t0.elapsed();
    assert!(kubelet.logs("default", "polite").contains("got TERM"));
    assert!(polite_took < Duration::from_millis(900), "{polite_took:?}");
    assert!(
        stubborn_took >= Duration::from_secs(1),
        "killed only after the grace period: {stubborn_took:?}"
    );
}

#[tokio::test]
async fn killing_a_never_restarted_process_pod_fails_it_with_137() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &shell_pod("victim", "sleep 30", json!({})),
    )
    .await
    .unwrap();
    wait_for(&pods, "victim", "runs", |p| phase(p) == "Running").await;
    kubelet.kill("default", "victim").await.unwrap();
    let p = wait_for(&pods, "victim", "failed", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&p).0, 137);
}

#[tokio::test]
async fn a_pod_that_names_its_own_service_reaches_itself() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let services: Api<Service> = Api::namespaced(server.client(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "me"},
        "spec": {"selector": {"app": "me"}, "ports": [{"port": 8786}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let pod = shell_pod(
        "me",
        "echo \"$SELF\"",
        json!({"env": [{"name": "SELF", "value": "tcp://me.default.svc.cluster.local:8786"}]}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "me", "succeeded", |p| phase(p) == "Succeeded").await;
    let ip = p.status.unwrap().pod_ip.unwrap();
    let logs = kubelet.logs("default", "me");
    assert!(logs.contains(&format!("tcp://{ip}:8786")), "{logs}");
}

#[tokio::test]
async fn readiness_follows_a_tcp_probe() {
    let server = ApiServer::new();
    let _kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let pod = shell_pod(
        "tcp",
        "sleep 30",
        json!({"ports": [{"containerPort": 9090}],
               "readinessProbe": {"tcpSocket": {"port": 9090}, "periodSeconds": 1}}),
    );
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let p = wait_for(&pods, "tcp", "runs", |p| phase(p) == "Running").await;
    assert!(!ready(&p));
    let ip = p.status.unwrap().pod_ip.unwrap();
    let _listener = tokio::net::TcpListener::bind((ip.as_str(), 9090))
        .await
        .unwrap();
    wait_for(&pods, "tcp", "is ready", ready).await;
    pods.delete("tcp", &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn on_failure_restarts_a_failed_container_in_place_keeping_the_previous_log() {
    let server = ApiServer::new();
    let processes = ProcessConfig::new("example/shell", "/bin/sh", "/bin/sh");
    let _kubelet = Kubelet::start(
        &server,
        KubeletConfig {
            processes: vec![processes],
            restart_backoff: Duration::from_millis(100),
            ..KubeletConfig::default()
        },
    );
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    // Fails twice (the marker file counts runs), then succeeds.
    let dir = std::env::temp_dir().join(format!("kd-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join("runs");
    let script = format!(
        "echo run >> {m}; n=$(wc -l < {m}); echo \"run $n\"; [ \"$n\" -ge 3 ]",
        m = marker.display()
    );
    let mut pod = shell_pod("flaky", &script, json!({}));
    pod.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let p = wait_for(&pods, "flaky", "succeeded", |p| phase(p) == "Succeeded").await;
    let cs = &p.status.unwrap().container_statuses.unwrap()[0];
    assert_eq!(cs.restart_count, 2);
    let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(last.exit_code, 1);
    let lp = kube::api::LogParams::default();
    assert_eq!(pods.logs("flaky", &lp).await.unwrap(), "run 3\n");
    let previous = kube::api::LogParams {
        previous: true,
        ..Default::default()
    };
    assert_eq!(pods.logs("flaky", &previous).await.unwrap(), "run 2\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn logs_are_served_and_followed_through_the_api() {
    use futures::AsyncBufReadExt;
    let server = ApiServer::new();
    let _kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &shell_pod(
            "talker",
            "echo one; sleep 0.5; echo two; sleep 0.5; echo three",
            json!({}),
        ),
    )
    .await
    .unwrap();
    wait_for(&pods, "talker", "runs", |p| phase(p) == "Running").await;
    let follow = kube::api::LogParams {
        follow: true,
        ..Default::default()
    };
    let mut lines = pods.log_stream("talker", &follow).await.unwrap().lines();
    let mut got = Vec::new();
    while let Some(line) = futures::StreamExt::next(&mut lines).await {
        got.push(line.unwrap());
    }
    assert_eq!(
        got,
        ["one", "two", "three"],
        "followed until the container exited"
    );
    let tail = kube::api::LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    assert_eq!(pods.logs("talker", &tail).await.unwrap(), "three\n");
    let wrong = kube::api::LogParams {
        container: Some("nope".into()),
        ..Default::default()
    };
    let err = api_error(pods.logs("talker", &wrong).await);
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("container nope is not valid"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn evicting_a_process_pod_kills_it_and_fails_it() {
    let server = ApiServer::new();
    let kubelet = kubelet(&server);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let mut pod = shell_pod("evictee", "sleep 30", json!({}));
    pod.spec.as_mut().unwrap().restart_policy = Some("Always".into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_for(&pods, "evictee", "runs", |p| phase(p) == "Running").await;
    let started = Instant::now();
    kubelet.evict("default", "evictee").await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "killed, not waited for"
    );
    let p = pods.get("evictee").await.unwrap();
    assert_eq!(phase(&p), "Failed");
    assert_eq!(p.status.unwrap().reason.as_deref(), Some("Evicted"));
}
