//! What real clients (kubectl, kr8s) need from a server beyond objects: discovery with short
//! names, `/openapi/v3` for validation, strict field validation, and reaching pods: a service's
//! `proxy` and a pod's `portforward` over WebSocket.

use crate::support::*;
use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use kube_double::{ApiServer, Kubelet, KubeletConfig, ProcessConfig};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn get_json(client: &kube::Client, path: &str) -> Value {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    client.request::<Value>(req).await.unwrap()
}

#[tokio::test]
async fn discovery_names_short_names_and_categories() {
    let server = ApiServer::new();
    let client = server.client();
    let core = get_json(&client, "/api/v1").await;
    let pods = core["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods")
        .unwrap();
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["categories"], json!(["all"]));
    assert!(
        core["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "pods/log")
    );
}

#[tokio::test]
async fn openapi_v3_says_patches_take_field_validation_and_strict_refuses_unknown_fields() {
    let server = server();
    let client = server.client();
    let index = get_json(&client, "/openapi/v3").await;
    let url = index["paths"]["apis/test.kube-double.dev/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        url.starts_with("/openapi/v3/apis/test.kube-double.dev/v1?hash="),
        "{url}"
    );
    let doc = get_json(&client, &url).await;
    let item = &doc["paths"]["/apis/test.kube-double.dev/v1/namespaces/{namespace}/widgets/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Widget");
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    assert!(
        doc["components"]["schemas"]["dev.kube-double.test.v1.Widget"]["properties"]["spec"]
            .is_object()
    );

    let mut w = serde_json::to_value(widget("strict", 1)).unwrap();
    w["spec"]["colour"] = json!("red");
    let body = serde_json::to_vec(&w).unwrap();
    let post = |query: &str| {
        http::Request::post(format!(
            "/apis/test.kube-double.dev/v1/namespaces/default/widgets{query}"
        ))
        .header("content-type", "application/json")
        .body(body.clone())
        .unwrap()
    };
    let err = client
        .request::<Value>(post("?fieldValidation=Strict"))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("{err}")
    };
    assert_eq!(s.code, 400);
    assert!(
        s.message.contains("unknown field \"spec.colour\""),
        "{}",
        s.message
    );
    let created: Value = client.request(post("")).await.unwrap();
    assert!(
        created["spec"].get("colour").is_none(),
        "pruned without Strict"
    );
}

fn process_kubelet(server: &ApiServer) -> Kubelet {
    Kubelet::start(
        server,
        KubeletConfig {
            processes: vec![ProcessConfig::new("example/shell", "/bin/sh", "/bin/sh")],
            ..KubeletConfig::default()
        },
    )
}

/// A pod that sleeps, and its IP once it runs: the test listens there for it.
async fn sleeper(pods: &Api<Pod>, name: &str, port: i32) -> String {
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "example/shell:1",
                 "args": ["-c", "sleep 30"], "ports": [{"name": "web", "containerPort": port}]}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("the pod to run", || async {
        pods.get(name)
            .await
            .ok()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .and_then(|p| p.status.and_then(|s| s.pod_ip))
    })
    .await
}

#[tokio::test]
async fn a_service_proxy_reaches_a_ready_pod_on_its_target_port() {
    let server = ApiServer::new();
    let _kubelet = process_kubelet(&server);
    let client = server.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let ip = sleeper(&pods, "web", 18080).await;
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 18080))
        .await
        .unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let first = head.lines().next().unwrap_or_default().to_owned();
        let body = format!("you asked {first}");
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(answer.as_bytes()).await.unwrap();
    });
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "front"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
    }))
    .unwrap();
    services.create(&PostParams::default(), &svc).await.unwrap();
    let req = http::Request::get("/api/v1/namespaces/default/services/front:http/proxy/health?x=1")
        .body(Vec::new())
        .unwrap();
    let text = client.request_text(req).await.unwrap();
    assert_eq!(text, "you asked GET /health?x=1 HTTP/1.1");
    let missing = http::Request::get("/api/v1/namespaces/default/services/nope/proxy/")
        .body(Vec::new())
        .unwrap();
    let err = client.request_text(missing).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404));
}

#[tokio::test]
async fn a_port_forward_carries_bytes_both_ways_over_websocket() {
    let server = ApiServer::new();
    let _kubelet = process_kubelet(&server);
    let (addr, _task) = server
        .serve_http("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let ip = sleeper(&pods, "echo", 19090).await;
    let listener = tokio::net::TcpListener::bind((ip.as_str(), 19090))
        .await
        .unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let mut reply = b"echo: ".to_vec();
        reply.extend_from_slice(&buf[..n]);
        s.write_all(&reply).await.unwrap();
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let url = format!("ws://{addr}/api/v1/namespaces/default/pods/echo/portforward?ports=19090");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    // Each channel announces the port first (little-endian).
    let port = 19090u16.to_le_bytes();
    for channel in [0u8, 1] {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            panic!("no port announcement")
        };
        assert_eq!(b.as_ref(), [channel, port[0], port[1]]);
    }
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    let Some(Ok(Message::Binary(b))) = reply else {
        panic!("no reply: {reply:?}")
    };
    assert_eq!(b.as_ref(), b"\x00echo: ping");
}
