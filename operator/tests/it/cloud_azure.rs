//! The Azure backend and the cloud commands against the local ARM stub (`arm_stub.rs`), with a
//! local rask scheduler and workers standing in for what the VMs' custom data starts.

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
    o
}

fn config(name: &str, extra: &str) -> String {
    format!(
        "provider: azure
name: {name}
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
