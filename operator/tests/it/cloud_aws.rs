//! The EC2 backend and the cloud commands against moto's EC2 and SSM emulators (`moto_server`,
//! from the test venv: `scripts/test` sets `RASK_MOTO_SERVER`), with a local rask scheduler and
//! workers standing in for what the VMs' user-data starts (with TLS, after fetching their files
//! from moto's Parameter Store with the command their user-data names). API faults (throttling,
//! no capacity, access denied) come from a proxy in front of moto that answers chosen calls with
//! the service's own error documents.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::Filter;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rask_operator::backend::Backend;
use rask_operator::providers::ProviderError;
use rask_operator::providers::commands::{Options, vm as cli};

use crate::cloud_env::{LocalScheduler, VmBodies, free_port, options, write_config};
use crate::env::wait_until;

/// `moto_server` from `RASK_MOTO_SERVER` or the repository's `.venv`; without either the test
/// fails (scripts/test installs it from tests/requirements.txt and sets the variable).
fn moto_bin() -> PathBuf {
    if let Ok(p) = std::env::var("RASK_MOTO_SERVER") {
        return p.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server");
    assert!(
        venv.exists(),
        "RASK_MOTO_SERVER is not set and there is no .venv/bin/moto_server: the EC2 tests need \
         moto's server (scripts/test installs it from tests/requirements.txt and sets the variable)"
    );
    venv
}

struct Moto {
    child: std::process::Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    async fn start() -> Moto {
        let bin = moto_bin();
        let port = free_port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_until("moto_server listens", Duration::from_secs(60), async || {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        moto
    }
}

const REGION: &str = "us-east-1";

async fn ec2(url: &str) -> Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    Client::new(&config)
}

/// An AMI moto knows.
async fn some_ami(c: &Client) -> String {
    c.describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap()
        .images()
        .iter()
        .find_map(|i| i.image_id().map(str::to_owned))
        .expect("moto ships AMIs")
}

fn opts_for(dir: &Path, dashboard: &str, endpoint: &str) -> Options {
    let mut o = options(dir, dashboard);
    o.aws.endpoint_url = Some(endpoint.to_owned());
    o.aws.static_credentials = Some(("testing".into(), "testing".into()));
    o.aws.max_attempts = Some(2);
    o
}

fn config(name: &str, ami: &str, extra: &str) -> String {
    format!(
        "provider: aws
name: {name}
worker:
  replicas: 2
timeouts:
  scheduler_seconds: 20
  workers_seconds: 20
  delete_seconds: 30
tls: false
scheduler:
  ingress_cidrs: [203.0.113.0/24]
ec2:
  region: {REGION}
  ami: {ami}
  instance_type: t3.small
  instance_tags: {{team: data}}
{extra}"
    )
}

fn cluster_filter(name: &str) -> Filter {
    Filter::builder()
        .name("tag:rask:cluster")
        .values(name)
        .build()
}

/// Instances of a cluster that are not terminated: (Name tag, id, role).
async fn instances(c: &Client, cluster: &str) -> Vec<(String, String, String)> {
    let out = c
        .describe_instances()
        .filters(cluster_filter(cluster))
        .send()
        .await
        .unwrap();
    let mut v: Vec<(String, String, String)> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| i.state().and_then(|s| s.name()).map(|s| s.as_str()) != Some("terminated"))
        .map(|i| {
            let tag = |k: &str| {
                i.tags()
                    .iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
                    .unwrap_or_default()
                    .to_owned()
            };
            (
                tag("Name"),
                i.instance_id().unwrap().to_owned(),
                tag("rask:role"),
            )
        })
        .collect();
    v.sort();
    v
}

async fn groups(c: &Client, cluster: &str) -> Vec<aws_sdk_ec2::types::SecurityGroup> {
    c.describe_security_groups()
        .filters(cluster_filter(cluster))
        .send()
        .await
        .unwrap()
        .security_groups()
        .to_vec()
}

/// Worker VMs of `cluster` that run, as the VM bodies see them.
fn running_workers(
    c: Client,
    cluster: &'static str,
) -> impl Fn() -> futures::future::BoxFuture<'static, Vec<String>> {
    move || {
        let c = c.clone();
        Box::pin(async move {
            instances(&c, cluster)
                .await
                .into_iter()
                .filter(|(_, _, role)| role == "worker")
                .map(|(name, _, _)| name)
                .collect()
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_scale_named_down_and_down_against_moto() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = VmBodies::start(
        local.scheduler.address().to_owned(),
        running_workers(c.clone(), "demo"),
    );
    let opts = opts_for(dir.path(), &local.dashboard, &moto.url);
    let path = write_config(
        dir.path(),
        "demo.yaml",
        &config("demo", &ami, "  spot: true\n"),
    );

    // up: security group, scheduler, two workers that joined the scheduler.
    let report = cli::up(&path, &opts).await.unwrap();
    assert_eq!(report.dashboard, local.dashboard);
    assert_eq!(report.workers.len(), 2);
    let mut joined = local.workers().await;
    joined.sort();
    let mut reported = report.workers.clone();
    reported.sort();
    assert_eq!(joined, reported, "up returns only once the workers joined");
    let vms = instances(&c, "demo").await;
    assert_eq!(vms.len(), 3, "{vms:?}");
    let again = cli::up(&path, &opts).await.unwrap_err().to_string();
    assert!(again.contains("cluster demo already exists"), "{again}");
    assert_eq!(
        instances(&c, "demo").await.len(),
        3,
        "a second up touches nothing"
    );
    assert_eq!(vms.iter().filter(|v| v.2 == "scheduler").count(), 1);

    // Tags, spot for workers only, IMDSv2, and user-data naming the VM and the scheduler's
    // private address.
    let described = c
        .describe_instances()
        .filters(cluster_filter("demo"))
        .send()
        .await
        .unwrap();
    let all: Vec<_> = described
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .cloned()
        .collect();
    let scheduler = all
        .iter()
        .find(|i| i.tags().iter().any(|t| t.value() == Some("scheduler")))
        .unwrap();
    let scheduler_ip = scheduler.private_ip_address().unwrap().to_owned();
    for i in &all {
        let tags: BTreeMap<&str, &str> = i
            .tags()
            .iter()
            .filter_map(|t| Some((t.key()?, t.value()?)))
            .collect();
        assert_eq!(tags["rask:cluster"], "demo");
        assert_eq!(tags["team"], "data", "instance_tags are applied");
        let worker = tags["rask:role"] == "worker";
        let spot = i.instance_lifecycle().map(|l| l.as_str().to_owned());
        assert_eq!(
            spot.as_deref() == Some("spot"),
            worker,
            "spot: workers only"
        );
        assert_eq!(
            i.metadata_options()
                .and_then(|m| m.http_tokens())
                .map(|t| t.as_str()),
            Some("required")
        );
        let attr = c
            .describe_instance_attribute()
            .instance_id(i.instance_id().unwrap())
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .unwrap();
        let b64 = attr.user_data().and_then(|u| u.value()).unwrap();
        let text = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        assert!(text.starts_with("#cloud-config"), "{text}");
        if worker {
            assert!(text.contains(&format!("DASK_WORKER_NAME={}\n", tags["Name"])));
            assert!(text.contains(&format!("tcp://{scheduler_ip}:8786")));
        }
        assert!(!text.contains("testing"), "no credentials in user-data");
    }

    // The security group: everything within the group, 8786-8787 from the configured CIDR only.
    let sgs = groups(&c, "demo").await;
    assert_eq!(sgs.len(), 1);
    let sg = &sgs[0];
    let mut cidrs = Vec::new();
    for p in sg.ip_permissions() {
        for r in p.ip_ranges() {
            cidrs.push((r.cidr_ip().unwrap().to_owned(), p.from_port(), p.to_port()));
        }
        for g in p.user_id_group_pairs() {
            assert_eq!(g.group_id(), sg.group_id());
        }
    }
    assert_eq!(
        cidrs,
        vec![("203.0.113.0/24".to_owned(), Some(8786), Some(8787))]
    );

    // scale up: one more worker, verified in the scheduler.
    let r = cli::scale("demo", 3, None, &[], None, &opts).await.unwrap();
    assert_eq!(r.added.len(), 1);
    assert!(local.workers().await.contains(&r.added[0]));
    assert_eq!(instances(&c, "demo").await.len(), 4);

    // status: every VM, all workers joined.
    let s = cli::status("demo", None, &opts).await.unwrap();
    assert_eq!(s.vms.len(), 4);
    assert!(
        s.vms
            .iter()
            .filter(|v| v.vm.group.is_some())
            .all(|v| v.joined)
    );
    assert!(s.to_string().contains(&r.added[0]));

    // scale down by name: the scheduler retires that worker, then its instance is terminated.
    let victim = report.workers[0].clone();
    let msg = cli::scale("demo", 1, None, std::slice::from_ref(&victim), None, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("retires 2, but 1 were named"), "{msg}");
    let r = cli::scale("demo", 2, None, std::slice::from_ref(&victim), None, &opts)
        .await
        .unwrap();
    assert_eq!(r.retired.removed, vec![victim.clone()]);
    let left = instances(&c, "demo").await;
    assert!(!left.iter().any(|v| v.0 == victim), "{left:?}");
    assert_eq!(left.len(), 3);
    wait_until(
        "the retired worker left the scheduler",
        Duration::from_secs(10),
        async || !local.workers().await.contains(&victim),
    )
    .await;

    // logs: the console output EC2 keeps (moto answers a fixed sample).
    let log = cli::logs("demo", Some(&report.workers[1]), None, &opts)
        .await
        .unwrap();
    assert!(log.contains("Linux version"), "{log}");

    // down: nothing tagged remains, and the saved config is gone.
    let deleted = cli::down("demo", None, &opts).await.unwrap();
    assert_eq!(deleted.len(), 4, "{deleted:?}");
    assert!(instances(&c, "demo").await.is_empty());
    assert!(groups(&c, "demo").await.is_empty());
    let again = cli::status("demo", None, &opts).await.unwrap_err();
    assert!(
        matches!(again, ProviderError::NoSuchCluster { .. }),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_killed_midway_is_swept_and_a_live_cluster_is_not() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    // Only the live cluster's workers ever boot.
    let _bodies = VmBodies::start(
        local.scheduler.address().to_owned(),
        running_workers(c.clone(), "live"),
    );
    let opts = opts_for(dir.path(), &local.dashboard, &moto.url);
    let live = write_config(dir.path(), "live.yaml", &config("live", &ami, ""));
    cli::up(&live, &opts).await.unwrap();

    let dead = write_config(dir.path(), "dead.yaml", &config("dead", &ami, ""));
    let task = {
        let opts = opts.clone();
        tokio::spawn(async move { cli::up(&dead, &opts).await })
    };
    wait_until(
        "the second up created its workers",
        Duration::from_secs(30),
        async || instances(&c, "dead").await.len() == 3,
    )
    .await;
    // Killed: no rollback runs.
    task.abort();
    let _ = task.await;
    assert_eq!(instances(&c, "dead").await.len(), 3);
    assert_eq!(groups(&c, "dead").await.len(), 1);

    // A sweep with a grace period spares it (an `up` may still be running)...
    let swept = cli::sweep(None, Duration::from_secs(3600), &opts)
        .await
        .unwrap();
    assert!(swept.iter().all(|s| !s.deleted), "{swept:?}");
    // ...one without deletes the dead cluster's instances and group, and leaves the live one.
    let swept = cli::sweep(None, Duration::ZERO, &opts).await.unwrap();
    let dead_report = swept.iter().find(|s| s.cluster == "dead").unwrap();
    assert!(dead_report.deleted);
    assert_eq!(dead_report.resources.len(), 4);
    assert!(!swept.iter().find(|s| s.cluster == "live").unwrap().deleted);
    assert!(instances(&c, "dead").await.is_empty());
    assert!(groups(&c, "dead").await.is_empty());
    assert_eq!(instances(&c, "live").await.len(), 3);

    cli::down("live", None, &opts).await.unwrap();
    assert!(instances(&c, "live").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_join_fail_up_naming_the_vm_with_its_boot_log_and_roll_back() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    // No VM bodies: the instances run, but no worker ever reaches the scheduler.
    let opts = opts_for(dir.path(), &local.dashboard, &moto.url);
    let text = config("silent", &ami, "").replace("workers_seconds: 20", "workers_seconds: 2");
    let path = write_config(dir.path(), "silent.yaml", &text);
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::RolledBack { .. }), "{msg}");
    assert!(msg.contains("joining the scheduler"), "{msg}");
    assert!(msg.contains("silent-default-"), "names the VM: {msg}");
    assert!(msg.contains("Linux version"), "carries the boot log: {msg}");
    assert!(msg.contains("rolled back: deleted"), "{msg}");
    assert!(instances(&c, "silent").await.is_empty());
    assert!(groups(&c, "silent").await.is_empty());
    assert!(!dir.path().join("state/silent.yaml").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_or_an_unknown_ami_creates_nothing_and_names_the_key() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let opts = opts_for(dir.path(), &local.dashboard, &moto.url);

    let typo = write_config(
        dir.path(),
        "typo.yaml",
        &config("typo", &ami, "  instance_typ: m5.large\n"),
    );
    let msg = cli::up(&typo, &opts).await.unwrap_err().to_string();
    assert!(
        msg.contains("typo.yaml: ec2: unknown field `instance_typ`"),
        "{msg}"
    );

    let bad_ami = write_config(
        dir.path(),
        "ami.yaml",
        &config("ami", "ami-00000000000000000", ""),
    );
    let msg = cli::up(&bad_ami, &opts).await.unwrap_err().to_string();
    assert!(
        msg.contains("ec2.ami: ami-00000000000000000 is not an image in us-east-1"),
        "{msg}"
    );
    assert!(instances(&c, "ami").await.is_empty());
    assert!(groups(&c, "ami").await.is_empty());

    // An API that does not answer is named.
    let mut closed = opts.clone();
    closed.aws.endpoint_url = Some(format!("http://127.0.0.1:{}", free_port()));
    let ok = write_config(dir.path(), "ok.yaml", &config("ok", &ami, ""));
    let err = cli::up(&ok, &closed).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("unreachable at http://127.0.0.1:"),
        "{err}"
    );
}

/// An HTTP proxy in front of moto that answers chosen EC2 actions with an EC2 error document.
struct FaultProxy {
    url: String,
    /// Requests seen per action.
    seen: Arc<Mutex<BTreeMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Fault {
    action: &'static str,
    /// Calls of the action let through first.
    after: usize,
    status: u16,
    code: &'static str,
    message: &'static str,
}

impl FaultProxy {
    async fn start(upstream: String, faults: Vec<Fault>) -> FaultProxy {
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let counts = seen.clone();
        let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (client, upstream, faults, counts) = (
                    client.clone(),
                    upstream.clone(),
                    faults.clone(),
                    counts.clone(),
                );
                tokio::spawn(async move {
                    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (client, upstream, faults, counts) = (
                            client.clone(),
                            upstream.clone(),
                            faults.clone(),
                            counts.clone(),
                        );
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let form = String::from_utf8_lossy(&body).into_owned();
                            // EC2's query protocol names the action in the form, SSM's JSON
                            // protocol in X-Amz-Target.
                            let target = parts
                                .headers
                                .get("x-amz-target")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|t| t.strip_prefix("AmazonSSM."))
                                .map(str::to_owned);
                            let json = target.is_some();
                            let action = target.unwrap_or_else(|| {
                                form.split('&')
                                    .find_map(|kv| kv.strip_prefix("Action="))
                                    .unwrap_or_default()
                                    .to_owned()
                            });
                            let n = {
                                let mut c = counts.lock().unwrap();
                                let n = c.entry(action.clone()).or_default();
                                *n += 1;
                                *n
                            };
                            if let Some(f) =
                                faults.iter().find(|f| f.action == action && n > f.after)
                            {
                                let (doc, kind) = if json {
                                    (
                                        serde_json::json!({"__type": f.code, "message": f.message})
                                            .to_string(),
                                        "application/x-amz-json-1.1",
                                    )
                                } else {
                                    (
                                        format!(
                                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>fault-{n}</RequestID></Response>",
                                            f.code, f.message
                                        ),
                                        "text/xml",
                                    )
                                };
                                return Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(f.status)
                                        .header("content-type", kind)
                                        .body(Full::new(Bytes::from(doc)))
                                        .unwrap(),
                                );
                            }
                            let mut fwd =
                                http::Request::builder().method(parts.method).uri(format!(
                                    "{upstream}{}",
                                    parts
                                        .uri
                                        .path_and_query()
                                        .map(|p| p.as_str())
                                        .unwrap_or("/")
                                ));
                            for (k, v) in parts.headers.iter() {
                                fwd = fwd.header(k, v);
                            }
                            let resp = client
                                .request(fwd.body(Full::new(body)).unwrap())
                                .await
                                .unwrap();
                            let (parts, body) = resp.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            Ok(http::Response::from_parts(parts, Full::new(body)))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FaultProxy { url, seen, task }
    }

    fn count(&self, action: &str) -> usize {
        self.seen.lock().unwrap().get(action).copied().unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_capacity_and_throttling_are_clear_errors_and_up_rolls_back() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = VmBodies::start(
        local.scheduler.address().to_owned(),
        running_workers(c.clone(), "full"),
    );

    // The scheduler's instance is made; the first worker's finds no capacity.
    let proxy = FaultProxy::start(
        moto.url.clone(),
        vec![Fault {
            action: "RunInstances",
            after: 1,
            status: 500,
            code: "InsufficientInstanceCapacity",
            message: "We currently do not have sufficient t3.small capacity in the Availability Zone you requested (us-east-1a).",
        }],
    )
    .await;
    let opts = opts_for(dir.path(), &local.dashboard, &proxy.url);
    let path = write_config(dir.path(), "full.yaml", &config("full", &ami, ""));
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    let ProviderError::RolledBack { cause, deleted } = &err else {
        panic!("{msg}")
    };
    assert!(matches!(**cause, ProviderError::Capacity { .. }), "{msg}");
    assert!(
        msg.contains("no capacity for t3.small us-east-1 (InsufficientInstanceCapacity)"),
        "{msg}"
    );
    assert_eq!(
        deleted.len(),
        2,
        "the scheduler's instance and the group: {msg}"
    );
    assert!(instances(&c, "full").await.is_empty());
    assert!(groups(&c, "full").await.is_empty());
    drop(proxy);

    // Throttled on every RunInstances: retried (the SDK's standard mode), then a clear error.
    let proxy = FaultProxy::start(
        moto.url.clone(),
        vec![Fault {
            action: "RunInstances",
            after: 0,
            status: 503,
            code: "RequestLimitExceeded",
            message: "Request limit exceeded.",
        }],
    )
    .await;
    let opts = opts_for(dir.path(), &local.dashboard, &proxy.url);
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("RunInstances full-scheduler (t3.small): throttled by the API (RequestLimitExceeded) after retrying"), "{msg}");
    assert_eq!(
        proxy.count("RunInstances"),
        2,
        "retried once (max_attempts 2)"
    );
    assert!(
        matches!(err, ProviderError::RolledBack { .. }),
        "the group is deleted: {msg}"
    );
    assert!(groups(&c, "full").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_keeps_the_minimum_on_ec2() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = VmBodies::start(
        local.scheduler.address().to_owned(),
        running_workers(c.clone(), "auto"),
    );
    let opts = opts_for(dir.path(), &local.dashboard, &moto.url);
    let text = config("auto", &ami, "").replace("replicas: 2", "replicas: 0");
    let path = write_config(dir.path(), "auto.yaml", &text);
    let report = cli::up(&path, &opts).await.unwrap();
    assert!(report.workers.is_empty());

    // The loop the scheduler VM runs (`rask-operator autoscale`), on the same backend.
    let backend = cli::attach(&opts, "auto", None).await.unwrap();
    let auto = rask_operator::spec::AutoscalerSpec::validate(
        "default",
        2,
        4,
        Some(0),
        rask_operator::spec::autoscaler::Keys::FILE,
    )
    .unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = {
        let backend_url = backend.scheduler_url();
        assert_eq!(backend_url, local.dashboard);
        tokio::spawn(async move {
            cli::run_autoscaler(&backend, auto, Duration::from_millis(200), stop).await;
        })
    };
    wait_until(
        "the autoscaler brought the minimum of 2 workers",
        Duration::from_secs(30),
        async || local.workers().await.len() == 2,
    )
    .await;
    let workers: Vec<_> = instances(&c, "auto")
        .await
        .into_iter()
        .filter(|v| v.2 == "worker")
        .collect();
    assert_eq!(workers.len(), 2);
    let _ = stop_tx.send(true);
    run.await.unwrap();
    cli::down("auto", None, &opts).await.unwrap();
}

async fn ssm(url: &str) -> aws_sdk_ssm::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    aws_sdk_ssm::Client::new(&config)
}

/// Parameters under `/rask/` (of every cluster): (name, type, rask:cluster tag).
async fn parameters(s: &aws_sdk_ssm::Client) -> Vec<(String, String, String)> {
    let filter = aws_sdk_ssm::types::ParameterStringFilter::builder()
        .key("Path")
        .option("Recursive")
        .values("/rask")
        .build()
        .unwrap();
    let out = s
        .describe_parameters()
        .parameter_filters(filter)
        .max_results(50)
        .send()
        .await
        .unwrap();
    let mut v = Vec::new();
    for p in out.parameters() {
        let name = p.name().unwrap().to_owned();
        let tags = s
            .list_tags_for_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::Parameter)
            .resource_id(&name)
            .send()
            .await
            .unwrap();
        let cluster = tags
            .tag_list()
            .iter()
            .find(|t| t.key() == "rask:cluster")
            .map(|t| t.value().to_owned())
            .unwrap_or_default();
        v.push((
            name,
            p.r#type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default(),
            cluster,
        ));
    }
    v.sort();
    v
}

/// An instance's user-data, decoded.
async fn user_data(c: &Client, id: &str) -> String {
    let attr = c
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
        .send()
        .await
        .unwrap();
    let b64 = attr.user_data().and_then(|u| u.value()).unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The words of the user-data's `vm-tls fetch` command (single-quoted, as rendered), from
/// `vm-tls` on.
fn fetch_command(user_data: &str) -> Vec<String> {
    let line = user_data
        .lines()
        .find(|l| l.contains("'vm-tls' 'fetch'"))
        .unwrap_or_else(|| panic!("no vm-tls fetch in:\n{user_data}"));
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    for ch in line.chars() {
        match (&mut word, ch) {
            (None, '\'') => word = Some(String::new()),
            (Some(w), '\'') => {
                words.push(std::mem::take(w));
                word = None;
            }
            (Some(w), c) => w.push(c),
            (None, _) => {}
        }
    }
    let start = words.iter().position(|w| w == "vm-tls").unwrap();
    words.split_off(start)
}

/// Runs the user-data's fetch command (the real `rask-operator vm-tls fetch`) against moto,
/// writing into `dir` instead of /etc/rask/tls and owned by whoever runs the test.
async fn run_fetch(moto: &str, user_data: &str, dir: &Path) -> Result<(), String> {
    let mut args = fetch_command(user_data);
    let at = |args: &[String], flag: &str| args.iter().position(|a| a == flag).unwrap();
    let d = at(&args, "--dir");
    args[d + 1] = dir.display().to_string();
    let o = at(&args, "--owner");
    args.drain(o..o + 2);
    let w = at(&args, "--wait-seconds");
    args[w + 1] = "20".into();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .args(&args)
        .env("AWS_ENDPOINT_URL", moto)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn files_of(dir: &Path, role: &str) -> rask::core::tls::TlsFiles {
    rask::core::tls::TlsFiles {
        ca_file: dir.join("ca.pem"),
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}-key.pem")),
    }
}

/// What the VMs of a TLS cluster run: for each instance moto reports, the fetch its user-data
/// names, then a scheduler (its HTTP API at `dashboard_port`) or a worker with those files.
struct TlsBodies {
    task: tokio::task::JoinHandle<()>,
    /// Where each VM's files went, by VM name.
    dirs: Arc<Mutex<BTreeMap<String, PathBuf>>>,
    scheduler: Arc<tokio::sync::Mutex<Option<rask::scheduler::server::Scheduler>>>,
}

impl Drop for TlsBodies {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsBodies {
    fn start(
        c: Client,
        moto: String,
        cluster: &'static str,
        root: PathBuf,
        dashboard_port: u16,
    ) -> TlsBodies {
        use rask::scheduler::server::{Scheduler, SchedulerConfig};
        use rask::worker::{Worker, WorkerConfig};
        let dirs: Arc<Mutex<BTreeMap<String, PathBuf>>> = Arc::default();
        let scheduler: Arc<tokio::sync::Mutex<Option<Scheduler>>> = Arc::default();
        let (d, s) = (dirs.clone(), scheduler.clone());
        let task = tokio::spawn(async move {
            let mut workers: BTreeMap<String, Worker> = BTreeMap::new();
            let mut failed: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let vms = instances(&c, cluster).await;
                let gone: Vec<String> = workers
                    .keys()
                    .filter(|n| !vms.iter().any(|v| &v.0 == *n))
                    .cloned()
                    .collect();
                for n in gone {
                    if let Some(w) = workers.remove(&n) {
                        w.close().await;
                    }
                }
                for (name, id, role) in vms {
                    if workers.contains_key(&name) || failed.contains_key(&name) {
                        continue;
                    }
                    if role == "scheduler" && s.lock().await.is_some() {
                        continue;
                    }
                    let text = user_data(&c, &id).await;
                    let dir = root.join(&name);
                    if let Err(e) = run_fetch(&moto, &text, &dir).await {
                        eprintln!("VM {name}: vm-tls fetch failed: {e}");
                        failed.insert(name, e);
                        continue;
                    }
                    d.lock().unwrap().insert(name.clone(), dir.clone());
                    if role == "scheduler" {
                        let tls =
                            rask::core::tls::TlsConfig::load(&files_of(&dir, "scheduler")).unwrap();
                        let config = SchedulerConfig {
                            dashboard: Some(format!("127.0.0.1:{dashboard_port}").parse().unwrap()),
                            tls: Some(tls),
                            ..SchedulerConfig::default()
                        };
                        *s.lock().await = Some(Scheduler::start(config).await.unwrap());
                    } else {
                        let Some(address) = s.lock().await.as_ref().map(|s| s.address().to_owned())
                        else {
                            continue;
                        };
                        let mut wc = WorkerConfig::new(address, name.clone());
                        wc.listen_host = Some("127.0.0.1".into());
                        wc.memory_limit = 1 << 30;
                        wc.tls = Some(
                            rask::core::tls::TlsConfig::load(&files_of(&dir, "worker")).unwrap(),
                        );
                        match Worker::start(wc, rask::registry()).await {
                            Ok(w) => {
                                workers.insert(name, w);
                            }
                            Err(e) => eprintln!("worker for VM {name} did not start: {e}"),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        TlsBodies {
            task,
            dirs,
            scheduler,
        }
    }

    fn dir(&self, vm: &str) -> PathBuf {
        self.dirs.lock().unwrap()[vm].clone()
    }

    async fn workers(&self) -> Vec<String> {
        match &*self.scheduler.lock().await {
            Some(s) => crate::env::registered_workers(s).await,
            None => Vec::new(),
        }
    }
}

/// Creates an instance profile in moto's IAM (RunInstances refuses one that does not exist). A
/// plain query-protocol call: moto routes it by the credential scope and checks no signature.
async fn create_instance_profile(moto: &str, name: &str) {
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let body =
        format!("Action=CreateInstanceProfile&InstanceProfileName={name}&Version=2010-05-08");
    let req = http::Request::post(format!("{moto}/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261206/us-east-1/iam/aws4_request, \
             SignedHeaders=host, Signature=0",
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let text = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        status.is_success(),
        "CreateInstanceProfile: {status} {}",
        String::from_utf8_lossy(&text)
    );
}

fn tls_config(name: &str, ami: &str) -> String {
    config(name, ami, "  iam_instance_profile: rask-vm\n").replace("tls: false\n", "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_keys_live_in_ssm_each_vm_fetches_its_own_and_down_deletes_them() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let s = ssm(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashboard = format!("https://127.0.0.1:{port}");
    create_instance_profile(&moto.url, "rask-vm").await;
    let bodies = TlsBodies::start(
        c.clone(),
        moto.url.clone(),
        "secure",
        dir.path().join("vms"),
        port,
    );
    let opts = opts_for(dir.path(), &dashboard, &moto.url);
    let path = write_config(dir.path(), "secure.yaml", &tls_config("secure", &ami));

    // up: the certificates are made once the scheduler VM runs; every VM fetched its own files
    // and the workers joined over mutual TLS.
    let report = cli::up(&path, &opts).await.unwrap();
    assert_eq!(report.dashboard, dashboard);
    assert!(report.scheduler_address.starts_with("tls://"), "{report}");
    let mut joined = bodies.workers().await;
    joined.sort();
    let mut reported = report.workers.clone();
    reported.sort();
    assert_eq!(joined, reported);
    assert_eq!(joined.len(), 2);

    // Every file is a parameter of the cluster's, tagged with it; keys are SecureString.
    let params = parameters(&s).await;
    let names: Vec<&str> = params.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "/rask/secure/tls/ca.pem",
            "/rask/secure/tls/client-key.pem",
            "/rask/secure/tls/client.pem",
            "/rask/secure/tls/operator-key.pem",
            "/rask/secure/tls/operator.pem",
            "/rask/secure/tls/scheduler-key.pem",
            "/rask/secure/tls/scheduler.pem",
            "/rask/secure/tls/worker-key.pem",
            "/rask/secure/tls/worker.pem",
        ]
    );
    for (name, kind, cluster) in &params {
        assert_eq!(cluster, "secure", "{name}");
        let want = if name.ends_with("-key.pem") {
            "SecureString"
        } else {
            "String"
        };
        assert_eq!(kind, want, "{name}");
    }

    // User-data names where the files are, never what they hold; each VM got only its own role's.
    for (name, id, role) in instances(&c, "secure").await {
        let text = user_data(&c, &id).await;
        assert!(!text.contains("BEGIN"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(
            text.contains("'--aws-ssm-prefix' '/rask/secure/tls'"),
            "{text}"
        );
        let vm_dir = bodies.dir(&name);
        let mut files: Vec<String> = std::fs::read_dir(&vm_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            [
                "ca.pem".to_owned(),
                format!("{role}-key.pem"),
                format!("{role}.pem")
            ],
            "{name}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&vm_dir.join(format!("{role}-key.pem"))), 0o600);
            assert_eq!(mode(&vm_dir), 0o700);
        }
    }
    // Workers joined with the worker's certificate: the scheduler's private address is tls://.
    let worker_vm = instances(&c, "secure")
        .await
        .into_iter()
        .find(|v| v.2 == "worker")
        .unwrap();
    assert!(user_data(&c, &worker_vm.1).await.contains("worker 'tls://"));

    // The user keeps the CA and the client's certificate and key, nothing else.
    let saved = report.certificates.clone().unwrap();
    assert_eq!(saved, dir.path().join("state/secure.tls"));
    let mut kept: Vec<String> = std::fs::read_dir(&saved)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["ca.pem", "client-key.pem", "client.pem"]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(saved.join("client-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The scheduler's API admits the saved client certificate and refuses another cluster's.
    use rask_operator::scheduler_api::SchedulerApi;
    let ca = std::fs::read_to_string(saved.join("ca.pem")).unwrap();
    let api = |cert: &str, key: &str| {
        SchedulerApi::with_tls(&ca, cert, key, Duration::from_secs(5)).unwrap()
    };
    let mine = api(
        &std::fs::read_to_string(saved.join("client.pem")).unwrap(),
        &std::fs::read_to_string(saved.join("client-key.pem")).unwrap(),
    );
    assert_eq!(mine.get_workers(&dashboard).await.unwrap().len(), 2);
    let other = rask_operator::tls::ClusterCerts::generate(
        "other",
        &rask_operator::tls::local_names(),
        rask_operator::clock::now() as i64,
    )
    .unwrap();
    let theirs = api(&other.client.cert_pem, &other.client.key_pem);
    assert!(theirs.get_workers(&dashboard).await.is_err());

    // scale and status reach the scheduler with the saved client certificate.
    let r = cli::scale("secure", 3, None, &[], None, &opts)
        .await
        .unwrap();
    assert_eq!(r.added.len(), 1);
    assert!(bodies.workers().await.contains(&r.added[0]));
    let st = cli::status("secure", None, &opts).await.unwrap();
    assert_eq!(st.scheduler_error, None, "{st}");
    assert!(
        st.vms
            .iter()
            .filter(|v| v.vm.group.is_some())
            .all(|v| v.joined),
        "{st}"
    );
    // Without them: the VMs, and why the scheduler was not asked; scale is a clear error.
    let mut elsewhere = opts.clone();
    elsewhere.tls_identity = Some((dir.path().join("nowhere"), rask_operator::tls::Role::Client));
    let st = cli::status("secure", None, &elsewhere).await.unwrap();
    assert_eq!(st.vms.len(), 4);
    let msg = st.scheduler_error.unwrap();
    assert!(msg.contains("cluster secure has TLS"), "{msg}");
    let msg = cli::scale("secure", 1, None, &[], None, &elsewhere)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("cluster secure has TLS, but its client certificate is not here"),
        "{msg}"
    );
    assert!(msg.contains("vm-tls fetch --role client"), "{msg}");

    // A fetch from a path that holds nothing says what is missing, and writes nothing.
    let nowhere = dir.path().join("nothing");
    let msg = cli::fetch_tls(
        &rask_operator::providers::vm::secrets::SecretStore::AwsSsm {
            region: REGION.into(),
            prefix: "/rask/nothing/tls".into(),
        },
        &[rask_operator::tls::Role::Worker],
        &nowhere,
        None,
        Duration::ZERO,
        &opts,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("SSM Parameter Store (us-east-1) has no parameters /rask/nothing/tls/ca.pem"),
        "{msg}"
    );
    assert!(!nowhere.exists());

    // sweep spares the live cluster's parameters and deletes those of a cluster that is gone.
    s.put_parameter()
        .name("/rask/ghost/tls/ca.pem")
        .value("x")
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .send()
        .await
        .unwrap();
    let swept = cli::sweep(None, Duration::ZERO, &opts).await.unwrap();
    let ghost = swept.iter().find(|s| s.cluster == "ghost").unwrap();
    assert!(ghost.deleted, "{swept:?}");
    assert!(
        !swept
            .iter()
            .find(|s| s.cluster == "secure")
            .unwrap()
            .deleted
    );
    assert_eq!(parameters(&s).await.len(), 9);

    // down: the parameters go with the VMs, and the saved certificates with the config.
    let deleted = cli::down("secure", None, &opts).await.unwrap();
    assert_eq!(
        deleted.iter().filter(|r| r.kind == "parameter").count(),
        9,
        "{deleted:?}"
    );
    assert!(parameters(&s).await.is_empty());
    assert!(instances(&c, "secure").await.is_empty());
    assert!(!saved.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_store_that_fails_is_named_and_up_leaves_nothing() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let s = ssm(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    create_instance_profile(&moto.url, "rask-vm").await;

    // Parameter Store unreachable: named with its region before anything is made.
    let mut opts = opts_for(dir.path(), &local.dashboard, &moto.url);
    opts.aws.ssm_endpoint_url = Some(format!("http://127.0.0.1:{}", free_port()));
    let path = write_config(dir.path(), "vault.yaml", &tls_config("vault", &ami));
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::Unreachable { .. }), "{msg}");
    assert!(msg.contains("(SSM Parameter Store, us-east-1)"), "{msg}");
    assert!(msg.contains("unreachable at http://127.0.0.1:"), "{msg}");
    assert!(instances(&c, "vault").await.is_empty());
    assert!(groups(&c, "vault").await.is_empty());

    // Refused after two files were stored: the files, the scheduler's VM and the group are
    // deleted again.
    let proxy = FaultProxy::start(
        moto.url.clone(),
        vec![Fault {
            action: "PutParameter",
            after: 2,
            status: 400,
            code: "AccessDeniedException",
            message: "User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ssm:PutParameter",
        }],
    )
    .await;
    let opts = opts_for(dir.path(), &local.dashboard, &proxy.url);
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    let ProviderError::RolledBack { cause, deleted } = &err else {
        panic!("{msg}")
    };
    assert!(
        matches!(**cause, ProviderError::Unauthorized { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("PutParameter /rask/vault/tls/scheduler-key.pem (SSM Parameter Store, us-east-1): not authorized (AccessDeniedException)"),
        "{msg}"
    );
    assert_eq!(
        deleted
            .iter()
            .filter(|d| d.starts_with("parameter /rask/vault/tls/"))
            .count(),
        2,
        "{msg}"
    );
    assert_eq!(proxy.count("PutParameter"), 3);
    assert!(parameters(&s).await.is_empty());
    assert!(instances(&c, "vault").await.is_empty());
    assert!(groups(&c, "vault").await.is_empty());
    assert!(!dir.path().join("state/vault.yaml").exists());
    assert!(!dir.path().join("state/vault.tls").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_on_a_tls_scheduler_vm_uses_the_operators_certificate() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashboard = format!("https://127.0.0.1:{port}");
    create_instance_profile(&moto.url, "rask-vm").await;
    let bodies = TlsBodies::start(
        c.clone(),
        moto.url.clone(),
        "tlsauto",
        dir.path().join("vms"),
        port,
    );
    let opts = opts_for(dir.path(), &dashboard, &moto.url);
    let text = tls_config("tlsauto", &ami).replace("replicas: 2", "replicas: 0")
        + "autoscaling: {minimum: 2, maximum: 4}\n";
    let path = write_config(dir.path(), "tlsauto.yaml", &text);
    let report = cli::up(&path, &opts).await.unwrap();
    assert!(report.workers.is_empty());

    // The scheduler VM fetched the operator's files beside its own.
    let vm_dir = bodies.dir("tlsauto-scheduler");
    for f in [
        "ca.pem",
        "scheduler.pem",
        "operator.pem",
        "operator-key.pem",
    ] {
        assert!(vm_dir.join(f).is_file(), "{f}");
    }
    assert!(!vm_dir.join("client-key.pem").exists());

    // What its user-data runs: `autoscale /etc/rask/cluster.yaml --scheduler-url
    // https://127.0.0.1:8787 --tls-dir /etc/rask/tls`, here with the VM's directory.
    let mut on_vm = opts.clone();
    on_vm.state_dir = dir.path().join("vm-state");
    on_vm.tls_identity = Some((vm_dir.clone(), rask_operator::tls::Role::Operator));
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let run = {
        let (path, url) = (path.clone(), dashboard.clone());
        tokio::spawn(async move {
            cli::autoscale(&path, &url, Duration::from_millis(200), &on_vm, stop).await
        })
    };
    wait_until(
        "the autoscaler brought the minimum of 2 workers over TLS",
        Duration::from_secs(30),
        async || bodies.workers().await.len() == 2,
    )
    .await;
    let _ = stop_tx.send(true);
    run.await.unwrap().unwrap();

    // Without a certificate of the cluster the autoscaler cannot start.
    let mut stranger = opts.clone();
    stranger.tls_identity = Some((
        dir.path().join("vms/none"),
        rask_operator::tls::Role::Operator,
    ));
    let (_tx, stop) = tokio::sync::watch::channel(false);
    let msg = cli::autoscale(
        &path,
        &dashboard,
        Duration::from_millis(200),
        &stranger,
        stop,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("its operator certificate is not here"),
        "{msg}"
    );
    cli::down("tlsauto", None, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_up_killed_after_storing_its_keys_is_swept_with_them() {
    let moto = Moto::start().await;
    let c = ec2(&moto.url).await;
    let s = ssm(&moto.url).await;
    let ami = some_ami(&c).await;
    let dir = tempfile::tempdir().unwrap();
    create_instance_profile(&moto.url, "rask-vm").await;
    // No VM bodies: the scheduler never answers, so `up` waits after storing the keys.
    let port = free_port();
    let opts = opts_for(dir.path(), &format!("https://127.0.0.1:{port}"), &moto.url);
    let path = write_config(dir.path(), "lost.yaml", &tls_config("lost", &ami));
    let task = {
        let opts = opts.clone();
        tokio::spawn(async move { cli::up(&path, &opts).await })
    };
    wait_until(
        "the up stored the cluster's nine files",
        Duration::from_secs(30),
        async || parameters(&s).await.len() == 9,
    )
    .await;
    // Killed: no rollback runs.
    task.abort();
    let _ = task.await;
    assert_eq!(instances(&c, "lost").await.len(), 1);

    let swept = cli::sweep(None, Duration::ZERO, &opts).await.unwrap();
    let lost = swept.iter().find(|s| s.cluster == "lost").unwrap();
    assert!(lost.deleted, "{swept:?}");
    let kinds: Vec<&str> = lost.resources.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "parameter").count(),
        9,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last(),
        Some(&"parameter"),
        "secrets go last: {kinds:?}"
    );
    assert!(parameters(&s).await.is_empty());
    assert!(instances(&c, "lost").await.is_empty());
    assert!(groups(&c, "lost").await.is_empty());
}
