//! Reaching pods through the API server, as clients outside a cluster do: the `proxy`
//! subresource of services and pods (HTTP forwarded to a ready pod behind the service, the
//! service port mapped to its `targetPort`), and `pods/{name}/portforward` over WebSocket (the
//! channel protocol kubectl's and kr8s' port-forwards speak: each frame's first byte is the
//! channel, data on even channels, errors on odd ones, and each channel's first frame is the
//! port as two little-endian bytes).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::error::ApiError;
use crate::selector::LabelSelector;
use crate::shared::{Caller, Shared};
use crate::store::ObjKey;

/// Where a pod listens: its IP and a container port (by number, or by name among its ports).
fn pod_address(pod: &Value, port: &str) -> Result<(String, u16), ApiError> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let ip = pod
        .pointer("/status/podIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("pod {name} has no IP address yet"),
            )
        })?;
    let number = match port.parse::<u16>() {
        Ok(n) => n,
        Err(_) => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
            .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!("pod {name} has no port named {port:?}"))
            })?,
    };
    Ok((ip.to_owned(), number))
}

fn pod_object(shared: &Shared, ns: &str, name: &str) -> Result<Value, ApiError> {
    let state = shared.lock();
    state
        .objects
        .get(&ObjKey {
            resource: "/pods".into(),
            namespace: ns.into(),
            name: name.into(),
        })
        .map(|s| s.obj.clone())
        .ok_or_else(|| ApiError::not_found("", "pods", name))
}

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
        && pod.pointer("/metadata/deletionTimestamp").is_none()
        && pod
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Ready")
                        && c.get("status").and_then(Value::as_str) == Some("True")
                })
            })
}

/// The address behind `service[:port]` in `ns`: a ready pod the service selects (by name, for
/// the same one each time) and the port the service port targets there.
fn service_address(shared: &Shared, ns: &str, service: &str) -> Result<(String, u16), ApiError> {
    let (name, port) = service.split_once(':').unwrap_or((service, ""));
    let state = shared.lock();
    let svc = state
        .objects
        .get(&ObjKey {
            resource: "/services".into(),
            namespace: ns.into(),
            name: name.into(),
        })
        .map(|s| s.obj.clone())
        .ok_or_else(|| ApiError::not_found("", "services", name))?;
    let ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let chosen = if port.is_empty() {
        ports.first().copied()
    } else {
        ports.iter().copied().find(|p| {
            p.get("name").and_then(Value::as_str) == Some(port)
                || p.get("port")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    .as_deref()
                    == Some(port)
        })
    }
    .ok_or_else(|| {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{service}\""),
        )
    })?;
    let target = match chosen.get("targetPort") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => chosen
            .get("port")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .to_string(),
    };
    let selector: Vec<String> = svc
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    let no_endpoints = || {
        ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{name}\""),
        )
    };
    if selector.is_empty() {
        return Err(no_endpoints());
    }
    let selector = LabelSelector::parse(&selector.join(","))?;
    let pod = state
        .objects
        .iter()
        .filter(|(k, _)| k.resource == "/pods" && k.namespace == ns)
        .map(|(_, s)| s.obj.clone())
        .find(|p| selector.matches(p) && is_ready(p))
        .ok_or_else(no_endpoints)?;
    drop(state);
    pod_address(&pod, &target)
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// `{services|pods}/{name[:port]}/proxy/{rest}`: the request forwarded over HTTP to the pod,
/// its answer returned as it is.
pub(crate) async fn forward(
    shared: &Arc<Shared>,
    resource: &str,
    ns: &str,
    target: &str,
    rest: &str,
    parts: &::http::request::Parts,
    body: Bytes,
) -> Result<::http::Response<Body>, ApiError> {
    let (ip, port) = if resource == "services" {
        service_address(shared, ns, target)?
    } else {
        let (name, port) = target.split_once(':').unwrap_or((target, "80"));
        pod_address(&pod_object(shared, ns, name)?, port)?
    };
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let uri = format!("http://{ip}:{port}/{rest}{query}");
    let mut req = ::http::Request::builder()
        .method(parts.method.clone())
        .uri(&uri);
    for (k, v) in &parts.headers {
        if !matches!(
            k.as_str(),
            "host" | "authorization" | "connection" | "upgrade"
        ) {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| ApiError::bad_request(format!("cannot proxy to {uri}: {e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| ApiError::new(504, "Timeout", format!("{uri} did not answer in 30 s")))?
        .map_err(|e| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("error trying to reach service: {e}"),
            )
        })?;
    let (head, body) = answer.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::new(503, "ServiceUnavailable", format!("reading {uri}: {e}")))?;
    Ok(::http::Response::from_parts(
        head,
        Full::new(bytes).boxed_unsync(),
    ))
}

/// Whether `req` asks to port-forward (`GET .../pods/{name}/portforward` with an Upgrade).
pub(crate) fn is_portforward<B>(req: &::http::Request<B>) -> bool {
    req.uri().path().ends_with("/portforward")
        && req
            .headers()
            .get(::http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers a port-forward upgrade: `101 Switching Protocols`, then each WebSocket frame on data
/// channel 0 goes to a TCP connection to the pod's port and what comes back returns on it; a
/// failure to connect is reported on error channel 1 (as the kubelet reports it).
pub(crate) fn portforward(
    shared: Arc<Shared>,
    caller: &Caller,
    req: ::http::Request<hyper::body::Incoming>,
) -> ::http::Response<Body> {
    let error = |e: &ApiError| {
        let bytes = serde_json::to_vec(&e.to_status()).unwrap_or_default();
        ::http::Response::builder()
            .status(e.code)
            .header(::http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(bytes)).boxed_unsync())
            .unwrap_or_default()
    };
    let segs: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let ["api", "v1", "namespaces", ns, "pods", name, "portforward"] = segs.as_slice() else {
        return error(&ApiError::no_route());
    };
    // Opening a port-forward is `create` on pods/portforward, WebSocket or not (Kubernetes
    // checks `create` for WebSocket upgrades too since 1.31).
    let pods = shared.lock().find_type("", "v1", "pods");
    let access = shared.authenticate(caller, req.headers()).and_then(|who| {
        let ty = pods.ok_or_else(ApiError::no_route)?;
        shared.authorize(
            &who,
            &ty,
            "create",
            Some(*ns),
            Some(*name),
            Some("portforward"),
        )
    });
    if let Err(e) = access {
        return error(&e);
    }
    let port: Option<String> = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "ports")
            .map(|(_, v)| v.split(',').next().unwrap_or_default().to_owned())
    });
    let Some(port) = port.filter(|p| p.parse::<u16>().is_ok()) else {
        return error(&ApiError::bad_request(
            "a port-forward needs one port: ?ports=NUMBER",
        ));
    };
    let address = pod_object(&shared, ns, name).and_then(|p| pod_address(&p, &port));
    let address = match address {
        Ok(a) => a,
        Err(e) => return error(&e),
    };
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return error(&ApiError::bad_request("missing Sec-WebSocket-Key"));
    };
    let protocol = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .map(str::trim)
                .find(|p| p.starts_with("v4.channel.k8s.io") || p.contains("portforward"))
                .map(str::to_owned)
        });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let number: u16 = port.parse().unwrap_or_default();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("port-forward upgrade failed: {e}");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        bridge(ws, address, number).await;
    });
    let mut answer = ::http::Response::builder()
        .status(101)
        .header(::http::header::CONNECTION, "Upgrade")
        .header(::http::header::UPGRADE, "websocket")
        .header("sec-websocket-accept", accept);
    if let Some(p) = protocol {
        answer = answer.header("sec-websocket-protocol", p);
    }
    answer
        .body(Full::new(Bytes::new()).boxed_unsync())
        .unwrap_or_default()
}

async fn bridge<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    (ip, port): (String, u16),
    number: u16,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut tx, mut rx) = ws.split();
    let [lo, hi] = number.to_le_bytes();
    for channel in [0u8, 1] {
        if tx
            .send(Message::Binary(Bytes::from(vec![channel, lo, hi])))
            .await
            .is_err()
        {
            return;
        }
    }
    let stream = match tokio::net::TcpStream::connect((ip.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => {
            let mut frame = vec![1u8];
            frame.extend_from_slice(
                format!(
                    "error forwarding port {port} to pod: failed to connect to {ip}:{port}: {e}"
                )
                .as_bytes(),
            );
            let _ = tx.send(Message::Binary(Bytes::from(frame))).await;
            let _ = tx.close().await;
            return;
        }
    };
    let (mut tcp_rx, mut tcp_tx) = stream.into_split();
    let upstream = async {
        while let Some(Ok(msg)) = rx.next().await {
            match msg {
                Message::Binary(data)
                    if data.first() == Some(&0)
                        && data.len() > 1
                        && tcp_tx.write_all(&data[1..]).await.is_err() =>
                {
                    break;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = tcp_tx.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match tcp_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut frame = Vec::with_capacity(n + 1);
                    frame.push(0u8);
                    frame.extend_from_slice(&buf[..n]);
                    if tx.send(Message::Binary(Bytes::from(frame))).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.close().await;
    };
    // Either side closing ends the forward.
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}
