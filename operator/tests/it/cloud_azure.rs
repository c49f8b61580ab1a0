//! The Azure backend and the cloud commands against the local ARM stub (`arm_stub.rs`), with a
//! local rask scheduler and workers standing in for what the VMs' custom data starts. With TLS,
//! each VM's stand-in first runs the fetch its custom data names (the real `rask-operator
//! vm-tls fetch`, as the VM's managed identity, against the stub's Key Vault and metadata
//! service), then starts with those files.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use rask_operator::providers::ProviderError;
use rask_operator::providers::commands::{Options, vm as cli};
use serde_json::Value;

use crate::arm_stub::{ArmStub, Fault, FaultKind, GROUP, SUBSCRIPTION, TOKEN};
use crate::cloud_env::{LocalScheduler, VmBodies, options, write_config};
use crate::env::wait_until;

fn opts_for(dir: &Path, dashboard: &str, stub: &ArmStub) -> Options {
    let mut o = options(dir, dashboard);
    o.azure.endpoint = Some(stub.url.clone());
    o.azure.token = Some(TOKEN.into());
    o.azure.poll = Some(Duration::from_millis(20));
    // The stub's HTTPS side (its Key Vaults) has a self-signed certificate.
    o.azure.root_certificates = vec![stub.ca.clone()];
    o
}

fn config(name: &str, extra: &str) -> String {
    format!(
        "provider: azure
name: {name}
tls: false
worker:
  replicas: 2
timeouts:
  scheduler_seconds: 20
  workers_seconds: 20
  delete_seconds: 30
scheduler:
  ingress_cidrs: [203.0.113.0/24]
azure:
  location: westeurope
  resource_group: {GROUP}
  subscription_id: {SUBSCRIPTION}
  vnet: vnet-test
  subnet: default
  vm_size: Standard_D2s_v3
  ssh_public_key: ssh-ed25519 AAAATEST rask-test
{extra}"
    )
}

fn bodies(stub: &ArmStub, local: &LocalScheduler, cluster: &'static str) -> VmBodies {
    let h = stub.handle();
    VmBodies::start(local.scheduler.address().to_owned(), move || {
        let h = h.clone();
        async move { h.running_workers(cluster) }
    })
}

fn custom_data(vm: &Value) -> String {
    let b64 = vm["properties"]["osProfile"]["customData"]
        .as_str()
        .unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_scale_named_down_and_down_against_the_arm_stub() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = bodies(&stub, &local, "demo");
    let opts = opts_for(dir.path(), &local.dashboard, &stub);
    let path = write_config(dir.path(), "demo.yaml", &config("demo", "  spot: true\n"));

    let report = cli::up(&path, &opts).await.unwrap();
    assert_eq!(report.workers.len(), 2);
    let mut joined = local.workers().await;
    joined.sort();
    let mut reported = report.workers.clone();
    reported.sort();
    assert_eq!(joined, reported, "up returns only once the workers joined");
    assert!(
        stub.polls() >= 3 * 6,
        "every PUT was followed to its end: {}",
        stub.polls()
    );

    // VMs: deleteOption Delete on disk and NIC, spot for workers only, custom data, tags.
    let vms = stub.tagged("virtualMachines", "demo");
    assert_eq!(vms.len(), 3);
    let nics = stub.tagged("networkInterfaces", "demo");
    let ips = stub.tagged("publicIPAddresses", "demo");
    assert_eq!(nics.len(), 3);
    assert_eq!(ips.len(), 1, "a public IP for the scheduler only");
    assert_eq!(ips[0]["name"], "demo-scheduler-ip");
    let scheduler_nic = nics
        .iter()
        .find(|n| n["name"] == "demo-scheduler-nic")
        .unwrap();
    let ipc = &scheduler_nic["properties"]["ipConfigurations"][0]["properties"];
    assert_eq!(
        ipc["publicIPAddress"]["properties"]["deleteOption"],
        "Delete"
    );
    let scheduler_ip = ipc["privateIPAddress"].as_str().unwrap().to_owned();
    for vm in &vms {
        let p = &vm["properties"];
        assert_eq!(vm["tags"]["rask:cluster"], "demo");
        assert_eq!(p["storageProfile"]["osDisk"]["deleteOption"], "Delete");
        assert_eq!(
            p["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"],
            "Delete"
        );
        assert_eq!(
            p["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"],
            true
        );
        let worker = vm["tags"]["rask:role"] == "worker";
        assert_eq!(p["priority"] == "Spot", worker, "spot: workers only");
        if worker {
            assert_eq!(
                p["evictionPolicy"], "Delete",
                "an evicted VM is deleted, not left stopped"
            );
            let text = custom_data(vm);
            assert!(text.contains(&format!(
                "DASK_WORKER_NAME={}\n",
                vm["name"].as_str().unwrap()
            )));
            assert!(
                text.contains(&format!("tcp://{scheduler_ip}:8786")),
                "private address: {text}"
            );
            assert!(!text.contains(TOKEN), "no credentials in custom data");
        }
    }
    let nsgs = stub.tagged("networkSecurityGroups", "demo");
    assert_eq!(nsgs.len(), 1);
    let rules = nsgs[0]["properties"]["securityRules"].as_array().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["properties"]["sourceAddressPrefixes"],
        serde_json::json!(["203.0.113.0/24"])
    );
    assert_eq!(rules[0]["properties"]["destinationPortRange"], "8786-8787");

    // scale up, status.
    let r = cli::scale("demo", 3, None, &[], None, &opts).await.unwrap();
    assert_eq!(r.added.len(), 1);
    assert!(local.workers().await.contains(&r.added[0]));
    let s = cli::status("demo", None, &opts).await.unwrap();
    assert_eq!(s.vms.len(), 4);
    assert!(
        s.vms
            .iter()
            .filter(|v| v.vm.group.is_some())
            .all(|v| v.joined)
    );

    // scale down by name: retired, then one VM delete removes the VM and its NIC.
    let victim = report.workers[0].clone();
    let r = cli::scale("demo", 2, None, std::slice::from_ref(&victim), None, &opts)
        .await
        .unwrap();
    assert_eq!(r.retired.removed, vec![victim.clone()]);
    let names = stub.all_tagged("demo");
    assert!(!names.contains(&victim), "{names:?}");
    assert!(
        !names.contains(&format!("{victim}-nic")),
        "the NIC went with the VM: {names:?}"
    );
    wait_until(
        "the retired worker left the scheduler",
        Duration::from_secs(10),
        async || !local.workers().await.contains(&victim),
    )
    .await;

    // logs: boot diagnostics' serial log.
    let log = cli::logs("demo", None, None, &opts).await.unwrap();
    assert!(log.contains("serial log of demo-scheduler"), "{log}");

    cli::down("demo", None, &opts).await.unwrap();
    assert!(
        stub.all_tagged("demo").is_empty(),
        "{:?}",
        stub.all_tagged("demo")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_up_killed_midway_is_swept_on_azure() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = bodies(&stub, &local, "live");
    let opts = opts_for(dir.path(), &local.dashboard, &stub);
    cli::up(
        &write_config(dir.path(), "live.yaml", &config("live", "")),
        &opts,
    )
    .await
    .unwrap();
    let dead = write_config(dir.path(), "dead.yaml", &config("dead", ""));
    let task = {
        let opts = opts.clone();
        tokio::spawn(async move { cli::up(&dead, &opts).await })
    };
    wait_until(
        "the second up created its workers",
        Duration::from_secs(30),
        async || stub.tagged("virtualMachines", "dead").len() == 3,
    )
    .await;
    task.abort();
    let _ = task.await;
    let left = stub.all_tagged("dead");
    assert!(
        left.len() >= 7,
        "NSG, scheduler IP/NIC/VM, worker NICs/VMs: {left:?}"
    );

    let swept = cli::sweep(None, Duration::ZERO, &opts).await.unwrap();
    assert!(swept.iter().find(|s| s.cluster == "dead").unwrap().deleted);
    assert!(!swept.iter().find(|s| s.cluster == "live").unwrap().deleted);
    assert!(
        stub.all_tagged("dead").is_empty(),
        "{:?}",
        stub.all_tagged("dead")
    );
    assert_eq!(stub.tagged("virtualMachines", "live").len(), 3);
    cli::down("live", None, &opts).await.unwrap();
    assert!(stub.all_tagged("live").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_operations_and_throttling_are_clear_errors_and_up_rolls_back() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let _bodies = bodies(&stub, &local, "full");
    let opts = opts_for(dir.path(), &local.dashboard, &stub);
    let path = write_config(dir.path(), "full.yaml", &config("full", ""));

    // A worker VM's operation ends Failed with AllocationFailed.
    stub.fault(Fault {
        method: "PUT",
        path: "/virtualMachines/full-default-",
        after: 0,
        kind: FaultKind::Async { code: "AllocationFailed" },
        message: "Allocation failed. We do not have sufficient capacity for the requested VM size in this region.",
    });
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    let ProviderError::RolledBack { cause, .. } = &err else {
        panic!("{msg}")
    };
    assert!(matches!(**cause, ProviderError::Capacity { .. }), "{msg}");
    assert!(
        msg.contains("no capacity for Standard_D2s_v3 in westeurope (AllocationFailed)"),
        "{msg}"
    );
    assert!(
        stub.all_tagged("full").is_empty(),
        "rolled back: {:?}",
        stub.all_tagged("full")
    );
    stub.clear_faults();

    // The scheduler VM is refused at once (SkuNotAvailable): its NIC, IP and the NSG go.
    stub.fault(Fault {
        method: "PUT",
        path: "/virtualMachines/full-scheduler",
        after: 0,
        kind: FaultKind::Sync { status: 409, code: "SkuNotAvailable" },
        message: "The requested size for resource 'full-scheduler' is currently not available in location 'westeurope'.",
    });
    let msg = cli::up(&path, &opts).await.unwrap_err().to_string();
    assert!(msg.contains("(SkuNotAvailable)"), "{msg}");
    assert!(msg.contains("rolled back: deleted network-interface full-scheduler-nic, public-ip full-scheduler-ip, network-security-group rask-full-nsg"), "{msg}");
    assert!(stub.all_tagged("full").is_empty());
    stub.clear_faults();

    // Throttled on every VM PUT: retried after Retry-After, then a clear error.
    stub.fault(Fault {
        method: "PUT",
        path: "/virtualMachines/",
        after: 0,
        kind: FaultKind::Throttle,
        message: "Number of write requests for subscription exceeded the limit.",
    });
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("create virtual-machine full-scheduler: throttled by the API (TooManyRequests) after retrying"), "{msg}");
    let tries = stub
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT") && r.contains("/virtualMachines/full-scheduler"))
        .count();
    assert_eq!(
        tries,
        2 + 5,
        "two earlier attempts above, then 1 + 4 retries"
    );
    assert!(stub.all_tagged("full").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_join_and_bad_settings_fail_clearly_on_azure() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let opts = opts_for(dir.path(), &local.dashboard, &stub);

    let text = config("silent", "").replace("workers_seconds: 20", "workers_seconds: 2");
    let err = cli::up(&write_config(dir.path(), "silent.yaml", &text), &opts)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ProviderError::RolledBack { .. }), "{msg}");
    assert!(msg.contains("joining the scheduler"), "{msg}");
    assert!(
        msg.contains("serial log of silent-default-"),
        "the VM's boot log: {msg}"
    );
    assert!(stub.all_tagged("silent").is_empty());

    // An unknown key in the provider section.
    let typo = config("typo", "  vm_sise: Standard_D4s_v3\n");
    let msg = cli::up(&write_config(dir.path(), "typo.yaml", &typo), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("typo.yaml: azure: unknown field `vm_sise`"),
        "{msg}"
    );

    // A resource group that does not exist is named.
    let rg = config("rg", "").replace(
        &format!("resource_group: {GROUP}"),
        "resource_group: rg-missing",
    );
    let msg = cli::up(&write_config(dir.path(), "rg.yaml", &rg), &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("azure.resource_group: rg-missing"), "{msg}");
    assert!(msg.contains("ResourceGroupNotFound"), "{msg}");

    // A token ARM refuses.
    let mut bad = opts.clone();
    bad.azure.token = Some("expired".into());
    let err = cli::up(
        &write_config(dir.path(), "auth.yaml", &config("auth", "")),
        &bad,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ProviderError::Unauthorized { .. }), "{err}");
    assert!(
        err.to_string().contains("InvalidAuthenticationToken"),
        "{err}"
    );
}

// ---- TLS: the cluster's keys in Key Vault ----

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::arm_stub::{OPERATOR_OID, StubHandle};

fn tls_config(name: &str) -> String {
    config(name, "").replace("tls: false\n", "")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn vault_name(cluster: &str) -> String {
    rask_operator::providers::vm::secrets::key_vault_name(SUBSCRIPTION, GROUP, cluster)
}

/// The words of the custom data's `vm-tls fetch` command (single-quoted, as rendered), from
/// `vm-tls` on.
fn fetch_command(custom_data: &str) -> Vec<String> {
    let line = custom_data
        .lines()
        .find(|l| l.contains("'vm-tls' 'fetch'"))
        .unwrap_or_else(|| panic!("no vm-tls fetch in:\n{custom_data}"));
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

/// The stub's certificate as a PEM file, for `SSL_CERT_FILE`.
fn ca_file(stub: &ArmStub, dir: &Path) -> PathBuf {
    let b64 = base64::engine::general_purpose::STANDARD.encode(&stub.ca);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let path = dir.join("stub-ca.pem");
    std::fs::write(&path, pem).unwrap();
    path
}

/// The stub's addresses as a VM's fetch sees them.
#[derive(Clone)]
struct StubView {
    /// The metadata service.
    imds: String,
    /// Key Vaults' HTTPS origin.
    vaults: String,
    /// The stub's certificate, trusted in place of the system's roots.
    ca_file: PathBuf,
}

/// Runs the custom data's fetch (the real `rask-operator vm-tls fetch`) on "the VM": its vault's
/// `https://NAME.vault.azure.net` is the stub's `{login_url}/vaults/NAME`, the metadata service
/// the stub's, the files go to `dir` owned by whoever runs the test.
async fn run_fetch(stub: &StubView, custom_data: &str, dir: &Path) -> Result<(), String> {
    let mut args = fetch_command(custom_data);
    let at = |args: &[String], flag: &str| args.iter().position(|a| a == flag).unwrap();
    let v = at(&args, "--azure-key-vault-url");
    let name = args[v + 1]
        .trim_start_matches("https://")
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    args[v + 1] = format!("{}/vaults/{name}", stub.vaults);
    let d = at(&args, "--dir");
    args[d + 1] = dir.display().to_string();
    let o = at(&args, "--owner");
    args.drain(o..o + 2);
    let w = at(&args, "--wait-seconds");
    args[w + 1] = "20".into();
    args.extend(["--azure-imds-endpoint".to_owned(), stub.imds.clone()]);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rask-operator"))
        .args(&args)
        .env("SSL_CERT_FILE", &stub.ca_file)
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

/// What the VMs of a TLS cluster run: for each VM the stub has provisioned, the fetch its custom
/// data names, then a scheduler (its HTTP API at `dashboard_port`) or a worker with those files.
/// A VM deleted takes its process along; a new VM of the same name fetches again.
struct TlsBodies {
    task: tokio::task::JoinHandle<()>,
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
        stub: StubHandle,
        view: StubView,
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
            let mut seen: BTreeMap<String, bool> = BTreeMap::new();
            let mut round = 0;
            loop {
                round += 1;
                let vms = stub.running_vms(cluster);
                let gone: Vec<String> = seen
                    .keys()
                    .filter(|n| !vms.iter().any(|v| &v.0 == *n))
                    .cloned()
                    .collect();
                for n in gone {
                    seen.remove(&n);
                    d.lock().unwrap().remove(&n);
                    if let Some(w) = workers.remove(&n) {
                        w.close().await;
                    }
                    if n.ends_with("-scheduler")
                        && let Some(old) = s.lock().await.take()
                    {
                        old.shutdown().await;
                    }
                }
                for (name, role, b64) in vms {
                    if seen.contains_key(&name) {
                        continue;
                    }
                    if role == "worker" && s.lock().await.is_none() {
                        continue;
                    }
                    let text = String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap(),
                    )
                    .unwrap();
                    let dir = root.join(format!("{name}.{round}"));
                    if let Err(e) = run_fetch(&view, &text, &dir).await {
                        eprintln!("VM {name}: vm-tls fetch failed: {e}");
                        seen.insert(name, false);
                        continue;
                    }
                    seen.insert(name.clone(), true);
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

const FILES: [&str; 9] = [
    "ca-pem",
    "client-key-pem",
    "client-pem",
    "operator-key-pem",
    "operator-pem",
    "scheduler-key-pem",
    "scheduler-pem",
    "worker-key-pem",
    "worker-pem",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_keys_live_in_a_key_vault_each_vm_reads_its_own_and_down_purges_it() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashboard = format!("https://127.0.0.1:{port}");
    let view = StubView {
        imds: stub.url.clone(),
        vaults: stub.login_url.clone(),
        ca_file: ca_file(&stub, dir.path()),
    };
    let bodies = TlsBodies::start(stub.handle(), view, "secure", dir.path().join("vms"), port);
    let opts = opts_for(dir.path(), &dashboard, &stub);
    let path = write_config(dir.path(), "secure.yaml", &tls_config("secure"));

    // up (TLS is the default): every VM read its own files from the vault and the workers
    // joined over mutual TLS.
    let report = cli::up(&path, &opts).await.unwrap();
    assert!(report.scheduler_address.starts_with("tls://"), "{report}");
    let mut joined = bodies.workers().await;
    joined.sort();
    let mut reported = report.workers.clone();
    reported.sort();
    assert_eq!(joined, reported);
    assert_eq!(joined.len(), 2);

    // The vault and the identity the VMs read it with, both tagged with the cluster; the vault's
    // access policies: `get` for that identity, `get` and `set` for whoever ran `up`.
    let vault = vault_name("secure");
    let vaults = stub.tagged("vaults", "secure");
    assert_eq!(vaults.len(), 1);
    assert_eq!(vaults[0]["name"], vault);
    let identities = stub.tagged("userAssignedIdentities", "secure");
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0]["name"], "rask-secure-tls");
    let principal = identities[0]["properties"]["principalId"]
        .as_str()
        .unwrap()
        .to_owned();
    let policies = vaults[0]["properties"]["accessPolicies"]
        .as_array()
        .unwrap();
    let of = |oid: &str| {
        policies
            .iter()
            .find(|p| p["objectId"] == oid)
            .map(|p| p["permissions"]["secrets"].clone())
    };
    assert_eq!(
        of(OPERATOR_OID),
        Some(serde_json::json!(["get", "set", "delete", "purge"]))
    );
    assert_eq!(of(&principal), Some(serde_json::json!(["get"])));
    assert_eq!(policies.len(), 2);

    // Every file is a secret of the vault, tagged with the cluster.
    let secrets = stub.secrets(&vault);
    assert_eq!(
        secrets.keys().map(String::as_str).collect::<Vec<_>>(),
        FILES
    );
    for (name, (value, content_type, tags)) in &secrets {
        assert!(value.starts_with("-----BEGIN "), "{name}");
        assert_eq!(content_type, "application/x-pem-file", "{name}");
        assert_eq!(tags["rask:cluster"], "secure", "{name}");
    }

    // Custom data names where the files are, never what they hold; every VM has the identity,
    // and got only its own role's files, reading them as that identity.
    let identity_id = identities[0]["id"].as_str().unwrap().to_owned();
    for vm in stub.tagged("virtualMachines", "secure") {
        let name = vm["name"].as_str().unwrap();
        let role = vm["tags"]["rask:role"].as_str().unwrap();
        let text = custom_data(&vm);
        assert!(!text.contains("BEGIN"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(
            text.contains(&format!(
                "'--azure-key-vault-url' 'https://{vault}.vault.azure.net'"
            )),
            "{text}"
        );
        let ids = vm["identity"]["userAssignedIdentities"]
            .as_object()
            .unwrap();
        assert!(
            ids.keys().any(|k| k.eq_ignore_ascii_case(&identity_id)),
            "{name}: {ids:?}"
        );
        let vm_dir = bodies.dir(name);
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
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&vm_dir.join(format!("{role}-key.pem"))), 0o600);
        assert_eq!(mode(&vm_dir), 0o700);
    }
    let reads: Vec<String> = stub
        .vault_access()
        .into_iter()
        .filter(|a| a.starts_with("GET "))
        .collect();
    assert!(!reads.is_empty());
    assert!(
        reads
            .iter()
            .all(|a| a.ends_with(&format!("by {principal}"))),
        "the VMs read as their identity: {reads:?}"
    );

    // scale reaches the scheduler with the saved client certificate; the new VM reads its files.
    let r = cli::scale("secure", 3, None, &[], None, &opts)
        .await
        .unwrap();
    assert_eq!(r.added.len(), 1);
    assert!(bodies.workers().await.contains(&r.added[0]));

    // down: the vault is deleted and purged, the identity deleted; nothing is left.
    let saved = report.certificates.clone().unwrap();
    let deleted = cli::down("secure", None, &opts).await.unwrap();
    let kinds: Vec<&str> = deleted.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&"key-vault"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"managed-identity"), "{kinds:?}");
    assert!(
        stub.all_tagged("secure").is_empty(),
        "{:?}",
        stub.all_tagged("secure")
    );
    assert!(
        stub.deleted_vaults().is_empty(),
        "purged: {:?}",
        stub.deleted_vaults()
    );
    assert!(stub.secrets(&vault).is_empty());
    assert!(!saved.exists());
    // The secrets were deleted and purged one by one first, as whoever ran `up`.
    let purges: Vec<String> = stub
        .vault_access()
        .into_iter()
        .filter(|a| a.starts_with("DELETE ") && a.contains("/deletedsecrets/"))
        .collect();
    assert_eq!(purges.len(), 9, "{purges:?}");
    assert!(
        purges
            .iter()
            .all(|a| a.ends_with(&format!("by {OPERATOR_OID}")))
    );

    // Up again: the vault's name is free (Key Vault holds a deleted vault's name until purged).
    wait_until(
        "the scheduler VM's stand-in stopped with its VM",
        Duration::from_secs(10),
        async || bodies.scheduler.lock().await.is_none(),
    )
    .await;
    let report = cli::up(&path, &opts).await.unwrap();
    assert_eq!(report.workers.len(), 2);
    assert_eq!(stub.secrets(&vault).len(), 9);
    cli::down("secure", None, &opts).await.unwrap();
    assert!(stub.all_tagged("secure").is_empty());
    assert!(stub.deleted_vaults().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_vault_that_refuses_or_cannot_be_reached_is_named_and_up_leaves_nothing() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalScheduler::start().await;
    let opts = opts_for(dir.path(), &local.dashboard, &stub);
    let path = write_config(dir.path(), "vault.yaml", &tls_config("vault"));
    let vault = vault_name("vault");

    // The vault's address does not answer: named, with the secret, and everything goes.
    let closed = format!("https://127.0.0.1:{}/", free_port());
    stub.set_vault_uri(Some(closed.clone()));
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    let ProviderError::RolledBack { cause, deleted } = &err else {
        panic!("{msg}")
    };
    assert!(
        matches!(**cause, ProviderError::Unreachable { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "set secret ca-pem in Key Vault {}: the API is unreachable",
            closed.trim_end_matches('/')
        )),
        "{msg}"
    );
    assert!(deleted.contains(&format!("key-vault {vault}")), "{msg}");
    assert!(
        deleted.contains(&"managed-identity rask-vault-tls".to_owned()),
        "{msg}"
    );
    assert!(
        stub.all_tagged("vault").is_empty(),
        "{:?}",
        stub.all_tagged("vault")
    );
    assert!(
        stub.deleted_vaults().is_empty(),
        "purged: {:?}",
        stub.deleted_vaults()
    );
    stub.set_vault_uri(None);

    // The vault refuses the third secret: named, and the two stored go with the vault.
    stub.fault(Fault {
        method: "PUT",
        path: "/secrets/scheduler-key-pem",
        after: 0,
        kind: FaultKind::Sync { status: 403, code: "Forbidden" },
        message: "The user, group or application does not have secrets set permission on key vault.",
    });
    let err = cli::up(&path, &opts).await.unwrap_err();
    let msg = err.to_string();
    let ProviderError::RolledBack { cause, .. } = &err else {
        panic!("{msg}")
    };
    assert!(
        matches!(**cause, ProviderError::Unauthorized { .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "set secret scheduler-key-pem in Key Vault {}/vaults/{vault}: not authorized (Forbidden)",
            stub.login_url
        )),
        "{msg}"
    );
    assert!(
        stub.all_tagged("vault").is_empty(),
        "{:?}",
        stub.all_tagged("vault")
    );
    assert!(stub.deleted_vaults().is_empty());
    assert!(stub.secrets(&vault).is_empty());
    assert!(!dir.path().join("state/vault.yaml").exists());
    assert!(!dir.path().join("state/vault.tls").exists());
}

/// Starts a TLS `up` of `name` that never sees its scheduler answer and kills it once its nine
/// files are in the vault: no rollback runs.
async fn killed_up(stub: &ArmStub, path: &Path, opts: &Options, name: &str) {
    let task = {
        let (path, opts) = (path.to_owned(), opts.clone());
        tokio::spawn(async move { cli::up(&path, &opts).await })
    };
    let vault = vault_name(name);
    wait_until(
        "the up stored the cluster's nine files",
        Duration::from_secs(30),
        async || stub.secrets(&vault).len() == 9,
    )
    .await;
    task.abort();
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_up_killed_after_storing_its_keys_is_swept_and_so_is_a_vault_left_unpurged() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    // No VM bodies: the scheduler never answers, so `up` waits after storing the keys.
    let opts = opts_for(
        dir.path(),
        &format!("https://127.0.0.1:{}", free_port()),
        &stub,
    );
    let path = write_config(dir.path(), "lost.yaml", &tls_config("lost"));
    let vault = vault_name("lost");
    killed_up(&stub, &path, &opts, "lost").await;
    assert_eq!(stub.tagged("virtualMachines", "lost").len(), 1);

    let swept = cli::sweep(None, Duration::ZERO, &opts).await.unwrap();
    let lost = swept.iter().find(|s| s.cluster == "lost").unwrap();
    assert!(lost.deleted, "{swept:?}");
    let kinds: Vec<&str> = lost.resources.iter().map(|r| r.kind).collect();
    assert!(kinds.contains(&"key-vault"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"managed-identity"), "{kinds:?}");
    assert!(
        stub.all_tagged("lost").is_empty(),
        "{:?}",
        stub.all_tagged("lost")
    );
    assert!(stub.deleted_vaults().is_empty());
    let saved = dir.path().join("state/lost.yaml");
    std::fs::remove_file(&saved).unwrap();

    // The name is free again; this time `down` cannot purge: the deleted vault, which keeps the
    // keys and the name, is found by its tags, refused to `up`, and swept.
    killed_up(&stub, &path, &opts, "lost").await;
    stub.fault(Fault {
        method: "POST",
        path: "/purge",
        after: 0,
        kind: FaultKind::Sync {
            status: 409,
            code: "Conflict",
        },
        message: "The vault cannot be purged right now.",
    });
    let msg = cli::down("lost", None, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains(&format!("purge deleted key-vault {vault} in westeurope")),
        "{msg}"
    );
    stub.clear_faults();
    assert_eq!(stub.deleted_vaults(), std::slice::from_ref(&vault));
    // (As on another machine: the saved config would refuse the name first.)
    std::fs::remove_file(&saved).unwrap();
    let msg = cli::up(&path, &opts).await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!("deleted-key-vault westeurope/{vault}")),
        "{msg}"
    );
    let swept = cli::sweep(Some(&path), Duration::ZERO, &opts)
        .await
        .unwrap();
    assert!(swept.iter().find(|s| s.cluster == "lost").unwrap().deleted);
    assert!(stub.deleted_vaults().is_empty());
    assert!(
        stub.all_tagged("lost").is_empty(),
        "{:?}",
        stub.all_tagged("lost")
    );
}

/// The stub's Key Vault keeps what Microsoft documents of soft-delete: a deleted vault holds its
/// name until purged, and so does a deleted secret in its vault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stub_s_key_vault_holds_deleted_names_until_purged_as_azure_does() {
    use crate::arm_stub::{TENANT, call};
    use serde_json::json;
    let stub = ArmStub::start().await;
    let vault_id = format!(
        "{}/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.KeyVault/vaults/kv-stub-test?api-version=2023-07-01",
        stub.url
    );
    let body = json!({
        "location": "westeurope",
        "tags": {"rask:cluster": "stubtest"},
        "properties": {
            "tenantId": TENANT,
            "sku": {"family": "A", "name": "standard"},
            "accessPolicies": [{
                "tenantId": TENANT,
                "objectId": OPERATOR_OID,
                "permissions": {"secrets": ["get", "set", "delete", "purge"]},
            }],
        },
    });
    let (status, _, v) = call(&stub, "PUT", &vault_id, Some(TOKEN), Some(body.clone())).await;
    assert_eq!(status, 201, "{v}");
    let uri = v["properties"]["vaultUri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with("https://"), "{uri}");
    let secret = |path: &str| format!("{uri}{path}?api-version=7.4");

    // No bearer: the challenge names Key Vault's audience. An ARM-only token is refused.
    let (status, headers, _) = call(&stub, "GET", &secret("secrets/s"), None, None).await;
    assert_eq!(status, 401);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains("resource=\"https://vault.azure.net\""),
        "{challenge}"
    );
    let arm_only = crate::arm_stub::SP_TOKEN;
    let (status, _, _) = call(&stub, "GET", &secret("secrets/s"), Some(arm_only), None).await;
    assert_eq!(status, 401);

    // A deleted secret holds its name until it is purged.
    let value = Some(json!({"value": "v1"}));
    let (status, _, v) = call(
        &stub,
        "PUT",
        &secret("secrets/s"),
        Some(TOKEN),
        value.clone(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, _, _) = call(&stub, "DELETE", &secret("secrets/s"), Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let (status, _, v) = call(&stub, "GET", &secret("secrets/s"), Some(TOKEN), None).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (404, &json!("SecretNotFound"))
    );
    let (status, _, v) = call(
        &stub,
        "PUT",
        &secret("secrets/s"),
        Some(TOKEN),
        value.clone(),
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(
        v["error"]["innererror"]["code"],
        "ObjectIsDeletedButRecoverable"
    );
    let (status, _, _) = call(
        &stub,
        "DELETE",
        &secret("deletedsecrets/s"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, v) = call(&stub, "PUT", &secret("secrets/s"), Some(TOKEN), value).await;
    assert_eq!(status, 200, "{v}");

    // A deleted vault holds its name until it is purged.
    let (status, _, _) = call(&stub, "DELETE", &vault_id, Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert_eq!(stub.deleted_vaults(), ["kv-stub-test"]);
    let (status, _, v) = call(&stub, "PUT", &vault_id, Some(TOKEN), Some(body.clone())).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("ConflictError"))
    );
    let purge = format!(
        "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/locations/westeurope/deletedVaults/kv-stub-test/purge?api-version=2023-07-01",
        stub.url
    );
    let (status, headers, _) = call(&stub, "POST", &purge, Some(TOKEN), None).await;
    assert_eq!(status, 202);
    // The purge is a long-running operation: it ends as its `Location` is polled.
    let op = headers["location"].to_str().unwrap().to_owned();
    let mut polls = 0;
    loop {
        let (status, _, _) = call(&stub, "GET", &op, Some(TOKEN), None).await;
        polls += 1;
        if status == 200 {
            break;
        }
        assert_eq!(status, 202);
        assert!(polls < 10, "the purge never ended");
    }
    assert!(stub.deleted_vaults().is_empty());
    let (status, _, v) = call(&stub, "PUT", &vault_id, Some(TOKEN), Some(body)).await;
    assert_eq!(status, 201, "{v}");
    assert!(
        stub.secrets("kv-stub-test").is_empty(),
        "purged with the vault"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_on_a_tls_scheduler_vm_uses_the_operators_certificate_on_azure() {
    use crate::arm_stub::call;
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dashboard = format!("https://127.0.0.1:{port}");
    let view = StubView {
        imds: stub.url.clone(),
        vaults: stub.login_url.clone(),
        ca_file: ca_file(&stub, dir.path()),
    };
    let bodies = TlsBodies::start(stub.handle(), view, "tlsauto", dir.path().join("vms"), port);
    let opts = opts_for(dir.path(), &dashboard, &stub);
    // The autoscaler's identity (`azure.identity`), which the user makes beforehand.
    let scaler = format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/rask-scaler"
    );
    let (status, _, v) = call(
        &stub,
        "PUT",
        &format!("{}{scaler}?api-version=2023-01-31", stub.url),
        Some(TOKEN),
        Some(serde_json::json!({"location": "westeurope"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let text = config("tlsauto", &format!("  identity: {scaler}\n"))
        .replace("tls: false\n", "")
        .replace("replicas: 2", "replicas: 0")
        + "autoscaling: {minimum: 2, maximum: 4}\n";
    let path = write_config(dir.path(), "tlsauto.yaml", &text);
    let report = cli::up(&path, &opts).await.unwrap();
    assert!(report.workers.is_empty());

    // The scheduler VM has both identities and fetched the operator's files beside its own.
    let vms = stub.tagged("virtualMachines", "tlsauto");
    let ids = vms[0]["identity"]["userAssignedIdentities"]
        .as_object()
        .unwrap();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains_key(&scaler), "{ids:?}");
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

    // What its custom data runs: `autoscale /etc/rask/cluster.yaml --scheduler-url
    // https://127.0.0.1:8787 --tls-dir /etc/rask/tls`, here with the VM's directory; the workers
    // it makes get the vault's identity too and read their files with it.
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
        Duration::from_secs(40),
        async || bodies.workers().await.len() == 2,
    )
    .await;
    let _ = stop_tx.send(true);
    run.await.unwrap().unwrap();
    cli::down("tlsauto", None, &opts).await.unwrap();
    // Everything of the cluster's goes (the user's own identity is not the cluster's).
    assert!(
        stub.all_tagged("tlsauto").is_empty(),
        "{:?}",
        stub.all_tagged("tlsauto")
    );
    assert!(stub.deleted_vaults().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_right_to_purge_the_vault_down_still_purges_every_secret() {
    let stub = ArmStub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = opts_for(
        dir.path(),
        &format!("https://127.0.0.1:{}", free_port()),
        &stub,
    );
    let path = write_config(dir.path(), "norights.yaml", &tls_config("norights"));
    let vault = vault_name("norights");
    killed_up(&stub, &path, &opts, "norights").await;
    // Purging a deleted vault is a right on the subscription, which this principal lacks.
    stub.fault(Fault {
        method: "POST",
        path: "/purge",
        after: 0,
        kind: FaultKind::Sync { status: 403, code: "AuthorizationFailed" },
        message: "The client does not have authorization to perform action 'Microsoft.KeyVault/locations/deletedVaults/purge/action'.",
    });
    cli::down("norights", None, &opts).await.unwrap();
    // The keys are gone for good; only the empty vault's name is held.
    assert_eq!(stub.deleted_vaults(), std::slice::from_ref(&vault));
    assert!(stub.secrets(&vault).is_empty());
    assert!(stub.deleted_secrets(&vault).is_empty());
    assert!(stub.all_tagged("norights").is_empty());
}
