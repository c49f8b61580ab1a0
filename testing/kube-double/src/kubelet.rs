//! A simulated kubelet (and scheduler) on one node. It watches pods through the API like the real
//! one: binds new pods to its node, then after `start_delay` reports them `Running` and `Ready` with
//! a pod IP and container statuses (or `Failed` when an image matches a crash pattern, or
//! `Succeeded` after `run_time` when it matches a completion pattern). Pods with a
//! `deletionTimestamp` are stopped and then deleted with grace period 0, which is what lets a
//! graceful pod deletion finish while a kubelet runs.
//!
//! With [`KubeletConfig::processes`] set, pods of those images really run: see [`crate::process`].

use crate::logs::ContainerLog;
use crate::process::{Addresses, Network, Prepared, ProcessConfig, Resolver};
use crate::server::ApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

const MANAGER: &str = "kubelet";

/// How the simulated kubelet behaves.
#[derive(Clone, Debug)]
pub struct KubeletConfig {
    /// The node pods are bound to (`spec.nodeName`).
    pub node_name: String,
    /// Time from seeing a pod to reporting it running.
    pub start_delay: Duration,
    /// Time a deleted pod takes to stop (capped by its grace period).
    pub termination_delay: Duration,
    /// Pods with a container whose `image` contains one of these go `Failed` (exit code 1).
    pub crash_images: Vec<String>,
    /// Pods whose every container's `image` contains one of these run for `run_time`, then go
    /// `Succeeded` (exit code 0).
    pub complete_images: Vec<String>,
    /// How long completing pods run.
    pub run_time: Duration,
    /// Pods of these images run as local processes (none by default: pods are only reported);
    /// the first config whose image a pod's containers all have runs it.
    pub processes: Vec<ProcessConfig>,
    /// The wait before a container's first restart (`restartPolicy` Always, or OnFailure after a
    /// failure); it doubles with each restart up to `max_restart_backoff`, as the kubelet's
    /// CrashLoopBackOff does (10 s and 300 s there).
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "kube-double-node".into(),
            start_delay: Duration::from_millis(10),
            termination_delay: Duration::from_millis(10),
            crash_images: Vec::new(),
            complete_images: Vec::new(),
            run_time: Duration::from_millis(100),
            processes: Vec::new(),
            restart_backoff: Duration::from_secs(10),
            max_restart_backoff: Duration::from_secs(300),
        }
    }
}

/// A running simulated kubelet; stops when dropped or [`stop`](Kubelet::stop)ped.
pub struct Kubelet {
    api: ApiServer,
    client: Client,
    node: Arc<Node>,
    task: JoinHandle<()>,
    services: Option<JoinHandle<()>>,
}

impl Kubelet {
    /// Starts the kubelet's background task (call inside a Tokio runtime). While at least one
    /// kubelet runs, the server deletes scheduled pods gracefully and leaves the final deletion
    /// to the kubelet.
    pub fn start(api: &ApiServer, config: KubeletConfig) -> Kubelet {
        api.kubelet_started();
        let client = api.client_as("kubelet", None);
        let processes = !config.processes.is_empty();
        let node = Arc::new(Node {
            client: client.clone(),
            config,
            next_ip: AtomicU32::new(2),
            net: Arc::default(),
            addresses: Mutex::new(Addresses::new()),
            procs: Mutex::default(),
            shared: api.shared().clone(),
            volumes: volumes_dir(),
        });
        // Service names resolve to pods only for pods that run.
        let services = processes.then(|| tokio::spawn(node.clone().watch_services()));
        Kubelet {
            api: api.clone(),
            client,
            task: tokio::spawn(node.clone().run()),
            node,
            services,
        }
    }

    /// What the containers of pod `namespace/name` printed (stdout and stderr, interleaved), each
    /// container's under a `==> container <==` line; empty for pods that do not run as processes.
    /// Kept after the pod is gone. The API serves the same as `pods/{name}/log`.
    pub fn logs(&self, namespace: &str, name: &str) -> String {
        let Some(containers) = self.node.shared.pod_logs.get(namespace, name) else {
            return String::new();
        };
        containers
            .iter()
            .map(|(c, log)| format!("==> {c} <==\n{}", log.text()))
            .collect()
    }

    /// [`logs`](Kubelet::logs) of every pod that ran as processes, each under a `=== ns/name ===`
    /// line: what a failed end-to-end test prints.
    pub fn all_logs(&self) -> String {
        self.node
            .shared
            .pod_logs
            .pods()
            .iter()
            .map(|(ns, name)| format!("=== {ns}/{name} ===\n{}", self.logs(ns, name)))
            .collect()
    }

    /// The pod network's name resolution: Service names to the address of a pod behind them.
    pub fn resolver(&self) -> Resolver {
        Resolver {
            net: self.node.net.clone(),
        }
    }

    /// Kills a pod's containers as the OOM killer would (exit code 137, reason `OOMKilled`); the
    /// kubelet then does what the pod's `restartPolicy` says: restarts them (`Always`,
    /// `OnFailure`: the pod stays `Running`, `restartCount` goes up) or lets the pod fail
    /// (`Never`).
    pub async fn kill(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get(name).await?;
        if self.node.signal(
            &pod.uid().unwrap_or_default(),
            rustix::process::Signal::KILL,
            true,
        ) {
            return Ok(());
        }
        let now = crate::meta::now();
        let restart = restart_policy(&pod) != "Never";
        let statuses: Vec<Value> = containers(&pod)
            .into_iter()
            .enumerate()
            .map(|(i, (cname, image))| {
                let killed = json!({"exitCode": 137, "reason": "OOMKilled", "finishedAt": now});
                let restarts = restart_count(&pod, i);
                let mut s = json!({"name": cname, "image": image, "imageID": image_id(&image),
                                   "containerID": container_id(&pod, &cname)});
                if restart {
                    s["ready"] = json!(true);
                    s["started"] = json!(true);
                    s["restartCount"] = json!(restarts + 1);
                    s["state"] = json!({"running": {"startedAt": now}});
                    s["lastState"] = json!({"terminated": killed});
                } else {
                    s["ready"] = json!(false);
                    s["started"] = json!(false);
                    s["restartCount"] = json!(restarts);
                    s["state"] = json!({"terminated": killed});
                }
                s
            })
            .collect();
        let patch = if restart {
            json!({"status": {"containerStatuses": statuses}})
        } else {
            json!({"status": {"phase": "Failed", "conditions": conditions(false, &now),
                              "containerStatuses": statuses}})
        };
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Loses a pod as an eviction or a lost node does: its processes are killed and the pod is
    /// `Failed` with reason `Evicted`, whatever its `restartPolicy` (no kubelet restarts it:
    /// replacing it is its controller's job).
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get(name).await?;
        if let Some(mut done) = self
            .node
            .stop(&pod.uid().unwrap_or_default(), Duration::ZERO)
        {
            let _ = tokio::time::timeout(Duration::from_secs(10), done.wait_for(|d| *d)).await;
        }
        let now = crate::meta::now();
        let statuses: Vec<Value> = containers(&pod)
            .into_iter()
            .enumerate()
            .map(|(i, (cname, image))| {
                json!({"name": cname, "image": image, "imageID": image_id(&image), "ready": false,
                       "started": false, "restartCount": restart_count(&pod, i),
                       "containerID": container_id(&pod, &cname),
                       "state": {"terminated": {"exitCode": 137, "reason": "Error", "finishedAt": now}}})
            })
            .collect();
        let patch = json!({"status": {"phase": "Failed", "reason": "Evicted",
            "message": "The node was low on resource: memory.",
            "conditions": conditions(false, &now), "containerStatuses": statuses}});
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Stops the kubelet (same as dropping it).
    pub fn stop(self) {}
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        // Aborting the task drops the processes' handles, which kills them.
        self.task.abort();
        if let Some(s) = &self.services {
            s.abort();
        }
        self.api.kubelet_stopped();
    }
}

struct Node {
    client: Client,
    config: KubeletConfig,
    next_ip: AtomicU32,
    net: Arc<Mutex<Network>>,
    addresses: Mutex<Addresses>,
    /// Pods running as processes, by uid.
    procs: Mutex<HashMap<String, Procs>>,
    /// The API server's state shared with the kubelet: containers' output goes there.
    shared: Arc<crate::shared::Shared>,
    /// Where process pods' Secret volumes are written, a directory per pod uid (see
    /// [`crate::volumes`]); removed with the kubelet.
    volumes: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.volumes);
    }
}

/// A new directory for a kubelet's volumes, unique in this process and among processes.
fn volumes_dir() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "kube-double-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// What a process pod's task holds: the stop request, its "gone" signal, its processes' ids
/// (by container), and whether they were killed as by the OOM killer.
struct Registration {
    stop: watch::Receiver<Option<Duration>>,
    done: watch::Sender<bool>,
    pids: Pids,
    oom: Arc<AtomicBool>,
}

/// The running process of each container (by index), if any.
type Pids = Arc<Mutex<HashMap<usize, u32>>>;

/// A pod's processes: how to stop them (with a grace period) and whether they are gone.
struct Procs {
    stop: watch::Sender<Option<Duration>>,
    done: watch::Receiver<bool>,
    pids: Pids,
    oom: Arc<AtomicBool>,
}

/// The pod's `restartPolicy` (Kubernetes' default: Always).
fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// Whether a container that ended with `code` is restarted under `policy`.
fn restarts_after(policy: &str, code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

fn restart_count(pod: &Pod, i: usize) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.get(i))
        .map_or(0, |c| c.restart_count)
}

fn containers(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn image_id(image: &str) -> String {
    let digest: u64 = image.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{image}@sha256:{digest:016x}{digest:016x}{digest:016x}{digest:016x}")
}

fn container_id(pod: &Pod, container: &str) -> String {
    let seed = format!("{}/{container}", pod.uid().unwrap_or_default());
    let h: u64 = seed.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("containerd://{h:016x}{h:016x}{h:016x}{h:016x}")
}

fn conditions(ready: bool, now: &str) -> Value {
    let r = if ready { "True" } else { "False" };
    json!([
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "Ready", "status": r, "lastTransitionTime": now},
        {"type": "ContainersReady", "status": r, "lastTransitionTime": now},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
    ])
}

impl Node {
    async fn run(self: Arc<Self>) {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = watcher(pods, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut started: HashSet<String> = HashSet::new();
        let mut terminating: HashSet<String> = HashSet::new();
        let mut work = JoinSet::new();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        self.lock_net().pod_changed(&pod);
                        let uid = pod.uid().unwrap_or_default();
                        let mine = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(|n| n == self.config.node_name);
                        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
                        if !mine {
                            continue;
                        }
                        if pod.metadata.deletion_timestamp.is_some() {
                            if terminating.insert(uid) {
                                work.spawn(self.clone().terminate(pod));
                            }
                        } else if phase == "Pending" && started.insert(uid.clone()) {
                            let procs = self.config.processes.iter().find(|p| p.runs(&pod)).cloned();
                            match procs {
                                Some(procs) => {
                                    // Registered before anything awaits, so a deletion finds it.
                                    let handle = self.register(&uid);
                                    work.spawn(self.clone().run_pod(pod, procs, handle));
                                }
                                None => {
                                    work.spawn(self.clone().start_pod(pod));
                                }
                            }
                        }
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        self.lock_net().pod_deleted(&pod);
                        // Gone without a graceful stop (force deletion): kill what still runs.
                        self.stop(&pod.uid().unwrap_or_default(), Duration::ZERO);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => tracing::debug!("kubelet watch error: {e}"),
                    None => return,
                },
                Some(_) = work.join_next(), if !work.is_empty() => {}
            }
        }
    }

    fn lock_net(&self) -> std::sync::MutexGuard<'_, Network> {
        self.net.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn watch_services(self: Arc<Self>) {
        let services: Api<Service> = Api::all(self.client.clone());
        let mut events = watcher(services, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s)) => {
                    self.lock_net().service_changed(&s)
                }
                Ok(watcher::Event::Delete(s)) => self.lock_net().service_deleted(&s),
                Ok(_) => {}
                Err(e) => tracing::debug!("kubelet service watch error: {e}"),
            }
        }
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    /// Binds an unscheduled pod to this node, as the scheduler would; false if that failed.
    async fn bind(&self, pod: &Pod) -> bool {
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
        {
            return true;
        }
        let name = pod.name_any();
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name}});
        let bound = self
            .pod_api(pod)
            .create_subresource::<Value, kube::core::Status>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await;
        if let Err(e) = &bound {
            tracing::debug!("kubelet could not bind {name}: {e}");
        }
        bound.is_ok()
    }

    /// The wait before restart number `n` (0 first): CrashLoopBackOff's doubling.
    fn backoff(&self, n: i32) -> Duration {
        let doublings = u32::try_from(n).unwrap_or(0).min(16);
        self.config
            .restart_backoff
            .saturating_mul(1 << doublings)
            .min(self.config.max_restart_backoff)
    }

    /// A pod that is only reported: it runs until deleted, crashes at once (`crash_images`) or
    /// completes after `run_time` (`complete_images`); an ended pod is restarted as its
    /// `restartPolicy` says, after a growing back-off in `CrashLoopBackOff`.
    async fn start_pod(self: Arc<Self>, pod: Pod) {
        let api = self.pod_api(&pod);
        let name = pod.name_any();
        if !self.bind(&pod).await {
            return;
        }
        tokio::time::sleep(self.config.start_delay).await;
        let images = containers(&pod);
        let matches =
            |patterns: &[String], image: &str| patterns.iter().any(|p| image.contains(p.as_str()));
        let crash = images
            .iter()
            .any(|(_, i)| matches(&self.config.crash_images, i));
        let complete = !images.is_empty()
            && images
                .iter()
                .all(|(_, i)| matches(&self.config.complete_images, i));
        let policy = restart_policy(&pod).to_owned();
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        let status = |phase: &str,
                      ready: bool,
                      restarts: i32,
                      state: &dyn Fn(&str) -> Value,
                      last: Option<&Value>| {
            let now = crate::meta::now();
            let statuses: Vec<Value> = images
                .iter()
                .map(|(c, image)| {
                    let mut s = json!({"name": c, "image": image, "imageID": image_id(image),
                        "containerID": container_id(&pod, c), "ready": ready, "started": ready,
                        "restartCount": restarts, "state": state(c)});
                    if let Some(l) = last {
                        s["lastState"] = json!({"terminated": l});
                    }
                    s
                })
                .collect();
            json!({"status": {
                "phase": phase,
                "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
                "podIP": ip, "podIPs": [{"ip": ip}],
                "conditions": conditions(ready, &now),
                "containerStatuses": statuses,
            }})
        };
        let started = crate::meta::now();
        let mut first = status(
            "Running",
            true,
            0,
            &|_| json!({"running": {"startedAt": started}}),
            None,
        );
        first["status"]["startTime"] = json!(started);
        let mut restarts = 0;
        loop {
            // One run: crash at once, complete after `run_time`, or run until deleted.
            let run_started = crate::meta::now();
            let code = if crash {
                1
            } else if complete {
                if restarts == 0
                    && api
                        .patch_status(&name, &pp, &Patch::Merge(&first))
                        .await
                        .is_err()
                {
                    return;
                }
                tokio::time::sleep(self.config.run_time).await;
                0
            } else {
                let running = if restarts == 0 {
                    first.clone()
                } else {
                    status(
                        "Running",
                        true,
                        restarts,
                        &|_| json!({"running": {"startedAt": run_started}}),
                        None,
                    )
                };
                if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&running)).await {
                    tracing::debug!("kubelet could not start {name}: {e}");
                }
                return;
            };
            let ended = json!({"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                               "startedAt": run_started, "finishedAt": crate::meta::now()});
            if !restarts_after(&policy, code) {
                let phase = if code == 0 { "Succeeded" } else { "Failed" };
                let mut done = status(
                    phase,
                    false,
                    restarts,
                    &|_| json!({"terminated": ended}),
                    None,
                );
                if restarts == 0 {
                    done["status"]["startTime"] = json!(started);
                }
                if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&done)).await {
                    tracing::debug!("kubelet could not finish {name}: {e}");
                }
                return;
            }
            let wait = self.backoff(restarts);
            let message = format!("back-off {}s restarting failed container", wait.as_secs());
            let mut backing_off = status(
                "Running",
                false,
                restarts,
                &|c| json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("{message}={c} pod={name}")}}),
                Some(&ended),
            );
            if restarts == 0 {
                backing_off["status"]["startTime"] = json!(started);
            }
            if api
                .patch_status(&name, &pp, &Patch::Merge(&backing_off))
                .await
                .is_err()
            {
                return; // deleted
            }
            tokio::time::sleep(wait).await;
            restarts += 1;
            let again = status(
                "Running",
                !crash,
                restarts,
                &|_| json!({"running": {"startedAt": crate::meta::now()}}),
                Some(&ended),
            );
            if api
                .patch_status(&name, &pp, &Patch::Merge(&again))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    async fn terminate(self: Arc<Self>, pod: Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(0)
            .max(0) as u64;
        let grace = Duration::from_secs(grace);
        let uid = pod.uid().unwrap_or_default();
        if let Some(mut done) = self.stop(&uid, grace) {
            // SIGTERM, then SIGKILL after the grace period: wait for the processes to be gone.
            let _ =
                tokio::time::timeout(grace + Duration::from_secs(5), done.wait_for(|d| *d)).await;
        } else {
            tokio::time::sleep(self.config.termination_delay.min(grace)).await;
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = self.pod_api(&pod).delete(&pod.name_any(), &dp).await {
            tracing::debug!("kubelet could not finish deleting {}: {e}", pod.name_any());
        }
    }
}

/// How a container of a process pod ended: exit code, reason, message, start and end times.
#[derive(Clone)]
struct Ended {
    code: i32,
    reason: &'static str,
    message: Option<String>,
    started: String,
    finished: String,
}

impl Ended {
    fn to_json(&self, pod: &Pod, c: &str) -> Value {
        let mut t = json!({"exitCode": self.code, "reason": self.reason, "startedAt": self.started,
                           "finishedAt": self.finished, "containerID": container_id(pod, c)});
        if let Some(m) = &self.message {
            t["message"] = json!(m);
        }
        t
    }
}

/// A process pod's containers as its status reports them.
struct Containers {
    names: Vec<(String, String)>,
    started: Vec<Option<String>>,
    ready: Vec<bool>,
    /// How the current run ended.
    ended: Vec<Option<Ended>>,
    /// How the previous run ended (after a restart, or while waiting for one).
    last: Vec<Option<Ended>>,
    restarts: Vec<i32>,
    /// Waiting out CrashLoopBackOff before a restart: (seconds, since).
    backing_off: Vec<Option<u64>>,
}

impl Containers {
    fn new(pod: &Pod, spec: &k8s_openapi::api::core::v1::PodSpec) -> Containers {
        let n = spec.containers.len();
        Containers {
            names: containers(pod),
            started: vec![None; n],
            ready: spec
                .containers
                .iter()
                .map(|c| c.readiness_probe.is_none())
                .collect(),
            ended: vec![None; n],
            last: vec![None; n],
            restarts: vec![0; n],
            backing_off: vec![None; n],
        }
    }

    fn statuses(&self, pod: &Pod) -> Vec<Value> {
        let name = pod.name_any();
        self.names
            .iter()
            .enumerate()
            .map(|(i, (c, image))| {
                let state = match (&self.backing_off[i], &self.ended[i], &self.started[i]) {
                    (Some(secs), _, _) => json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": format!("back-off {secs}s restarting failed container={c} pod={name}")}}),
                    (None, Some(e), _) => json!({"terminated": e.to_json(pod, c)}),
                    (None, None, Some(at)) => json!({"running": {"startedAt": at}}),
                    (None, None, None) => json!({"waiting": {"reason": "ContainerCreating"}}),
                };
                let running = self.started[i].is_some() && self.ended[i].is_none();
                let mut s = json!({"name": c, "image": image, "imageID": image_id(image),
                    "containerID": container_id(pod, c), "ready": self.ready[i] && running,
                    "started": running, "restartCount": self.restarts[i], "state": state});
                if let Some(l) = &self.last[i] {
                    s["lastState"] = json!({"terminated": l.to_json(pod, c)});
                }
                s
            })
            .collect()
    }

    fn all_ready(&self) -> bool {
        self.ready
            .iter()
            .zip(&self.ended)
            .all(|(r, e)| *r && e.is_none())
    }

    /// Some container runs, or will run again after its back-off.
    fn alive(&self) -> bool {
        self.ended.iter().any(Option::is_none) || self.backing_off.iter().any(Option::is_some)
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

impl Node {
    fn register(&self, uid: &str) -> Registration {
        let (stop, stop_rx) = watch::channel(None);
        let (done_tx, done) = watch::channel(false);
        let pids: Pids = Arc::default();
        let oom = Arc::new(AtomicBool::new(false));
        self.procs.lock().unwrap_or_else(|e| e.into_inner()).insert(
            uid.to_owned(),
            Procs {
                stop,
                done,
                pids: pids.clone(),
                oom: oom.clone(),
            },
        );
        Registration {
            stop: stop_rx,
            done: done_tx,
            pids,
            oom,
        }
    }

    /// Asks a process pod's containers to stop within `grace`; `None` if the pod has none.
    fn stop(&self, uid: &str, grace: Duration) -> Option<watch::Receiver<bool>> {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let p = procs.get(uid)?;
        p.stop.send_if_modified(|s| {
            let tighter = s.is_none_or(|g| grace < g);
            if tighter {
                *s = Some(grace);
            }
            tighter
        });
        Some(p.done.clone())
    }

    /// Sends `signal` to a process pod's processes (`oom`: as the OOM killer, so they end with
    /// reason `OOMKilled`); false if the pod has none.
    fn signal(&self, uid: &str, signal: rustix::process::Signal, oom: bool) -> bool {
        let procs = self.procs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = procs.get(uid) else {
            return false;
        };
        if oom {
            p.oom.store(true, Ordering::Release);
        }
        for pid in p.pids.lock().unwrap_or_else(|e| e.into_inner()).values() {
            if let Some(pid) = i32::try_from(*pid)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
        true
    }

    /// Runs a pod's containers as processes until they exit for good or the pod is deleted.
    async fn run_pod(self: Arc<Self>, pod: Pod, config: ProcessConfig, reg: Registration) {
        let uid = pod.uid().unwrap_or_default();
        let done = reg.done.clone();
        self.clone().run_containers(pod, config, reg).await;
        if !uid.is_empty() {
            let _ = std::fs::remove_dir_all(self.volumes.join(&uid));
        }
        self.procs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&uid);
        let _ = done.send(true);
    }

    async fn run_containers(self: Arc<Self>, pod: Pod, config: ProcessConfig, reg: Registration) {
        let Registration {
            mut stop,
            pids,
            oom,
            ..
        } = reg;
        if !self.bind(&pod).await {
            return;
        }
        let api = self.pod_api(&pod);
        let name = pod.name_any();
        let ns = pod.namespace().unwrap_or_default();
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(&pod).to_owned();
        let ip = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .allocate(&crate::process::tcp_ports(&spec))
            .to_string();
        let Some(mounts) = self.mount(&pod, &mut stop).await else {
            return;
        };
        let prepared = crate::process::prepare(&config, &pod, &ip)
            .into_iter()
            .zip(mounts.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(p, m)| match m {
                Some(m) if !m.is_empty() => p.map(|(argv, env)| {
                    let argv = argv.iter().map(|a| crate::volumes::rewrite(a, m)).collect();
                    let env = env
                        .into_iter()
                        .map(|(k, v)| (k, crate::volumes::rewrite(&v, m)))
                        .collect();
                    (argv, env)
                }),
                _ => p,
            })
            .collect();
        let Some(resolved) = self.resolve(&config, &pod, &ip, prepared, &mut stop).await else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(self.config.start_delay) => {}
            _ = stop.changed() => return,
        }

        let mut state = Containers::new(&pod, &spec);
        let logs: Vec<Arc<ContainerLog>> = spec
            .containers
            .iter()
            .map(|_| ContainerLog::new(config.log_limit))
            .collect();
        self.shared.pod_logs.set(
            &ns,
            &name,
            spec.containers
                .iter()
                .map(|c| c.name.clone())
                .zip(logs.iter().cloned())
                .collect(),
        );
        let mut exits = JoinSet::new();
        let supervisor_stop = stop.clone();
        // Starts container `i`; one that cannot start has ended with exit code 128.
        let start =
            |i: usize, state: &mut Containers, exits: &mut JoinSet<Option<(usize, Ended)>>| {
                let now = crate::meta::now();
                let started = resolved[i]
                    .clone()
                    .and_then(|(argv, env)| crate::process::spawn(&config, argv, env, &ip));
                match started {
                    Ok(child) => {
                        if let Some(pid) = child.id() {
                            pids.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .insert(i, pid);
                        }
                        state.started[i] = Some(now.clone());
                        state.ended[i] = None;
                        supervise(
                            exits,
                            child,
                            i,
                            now,
                            supervisor_stop.clone(),
                            logs[i].clone(),
                        );
                    }
                    Err(message) => {
                        logs[i].push(&message);
                        logs[i].ended();
                        state.started[i] = Some(now.clone());
                        state.ended[i] = Some(Ended {
                            code: 128,
                            reason: "StartError",
                            message: Some(message),
                            started: now.clone(),
                            finished: now,
                        });
                    }
                }
            };
        for i in 0..spec.containers.len() {
            start(i, &mut state, &mut exits);
        }

        let started_at = crate::meta::now();
        let running = json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": started_at,
            "conditions": conditions(state.all_ready(), &started_at),
            "containerStatuses": state.statuses(&pod),
        }});
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&running)).await {
            // Deleted meanwhile: the processes die with their handles.
            tracing::debug!("kubelet could not start {name}: {e}");
            return;
        }

        // Exits, restarts after their back-off, and readiness probes until every container has
        // ended for good.
        let period = spec
            .containers
            .iter()
            .filter_map(|c| c.readiness_probe.as_ref())
            .map(|p| p.period_seconds.unwrap_or(10).max(1))
            .min()
            .unwrap_or(1);
        let mut tick = tokio::time::interval(Duration::from_secs(period.unsigned_abs().into()));
        let mut since = vec![tokio::time::Instant::now(); spec.containers.len()];
        let mut backoffs: JoinSet<usize> = JoinSet::new();
        let mut last_ready = state.all_ready();
        let publish = |state: &Containers, phase: &str| {
            let now = crate::meta::now();
            json!({"status": {"phase": phase, "conditions": conditions(state.all_ready(), &now),
                              "containerStatuses": state.statuses(&pod)}})
        };
        // Containers that failed to start are restarted like any that ended.
        for i in 0..spec.containers.len() {
            if let Some(e) = state.ended[i].clone() {
                exits.spawn(async move { Some((i, e)) });
            }
        }
        while state.alive() {
            let stopping = stop.borrow().is_some();
            tokio::select! {
                Some(r) = exits.join_next() => {
                    let Ok(Some((i, mut ended))) = r else { continue };
                    pids.lock().unwrap_or_else(|e| e.into_inner()).remove(&i);
                    logs[i].ended();
                    if ended.code == 137 && oom.load(Ordering::Acquire) {
                        ended.reason = "OOMKilled";
                    }
                    let again = !stopping && restarts_after(&policy, ended.code);
                    state.ended[i] = Some(ended.clone());
                    if again {
                        let wait = self.backoff(state.restarts[i]);
                        state.backing_off[i] = Some(wait.as_secs());
                        state.last[i] = Some(ended);
                        backoffs.spawn(async move {
                            tokio::time::sleep(wait).await;
                            i
                        });
                    }
                    if state.alive() && stop.borrow().is_none() {
                        last_ready = false;
                        let _ = api.patch_status(&name, &pp, &Patch::Merge(&publish(&state, "Running"))).await;
                    }
                }
                Some(r) = backoffs.join_next() => {
                    let Ok(i) = r else { continue };
                    if stop.borrow().is_some() {
                        continue;
                    }
                    oom.store(false, Ordering::Release);
                    logs[i].restarted();
                    state.backing_off[i] = None;
                    state.restarts[i] += 1;
                    state.ready[i] = spec.containers[i].readiness_probe.is_none();
                    since[i] = tokio::time::Instant::now();
                    start(i, &mut state, &mut exits);
                    if let Some(e) = state.ended[i].clone() {
                        exits.spawn(async move { Some((i, e)) });
                    }
                    last_ready = state.all_ready();
                    let _ = api.patch_status(&name, &pp, &Patch::Merge(&publish(&state, "Running"))).await;
                }
                _ = stop.changed(), if !stopping => {
                    // Deleted or evicted: nothing restarts any more.
                    backoffs.abort_all();
                    for b in &mut state.backing_off {
                        *b = None;
                    }
                }
                _ = tick.tick() => {
                    for (i, c) in spec.containers.iter().enumerate() {
                        let Some(p) = &c.readiness_probe else { continue };
                        let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0).unsigned_abs().into());
                        if state.ended[i].is_none() && since[i].elapsed() >= delay {
                            state.ready[i] = crate::process::probe(p, c, &ip).await;
                        }
                    }
                    let ready = state.all_ready();
                    if ready != last_ready && stop.borrow().is_none() {
                        last_ready = ready;
                        let _ = api.patch_status(&name, &pp, &Patch::Merge(&publish(&state, "Running"))).await;
                    }
                }
            }
        }
        // The last lines of output are still in the pipes: read them before the pod ends (a
        // grandchild holding a pipe open must not hold the pod up).
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while exits.join_next().await.is_some() {}
        })
        .await;
        if stop.borrow().is_some() {
            // Stopped for a deletion or an eviction: whoever stopped it says how it ended.
            return;
        }
        let failed = state.ended.iter().flatten().any(|e| e.code != 0);
        let phase = if failed { "Failed" } else { "Succeeded" };
        if let Err(e) = api
            .patch_status(&name, &pp, &Patch::Merge(&publish(&state, phase)))
            .await
        {
            tracing::debug!("kubelet could not finish {name}: {e}");
        }
    }

    /// Writes the pod's Secret volumes (see [`crate::volumes`]) and returns each container's
    /// mounts, waiting while a Secret it needs does not exist (as a real kubelet keeps such a
    /// pod in `ContainerCreating`); `None` if the pod is stopped meanwhile.
    async fn mount(
        &self,
        pod: &Pod,
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> Option<Vec<crate::volumes::Mounts>> {
        let volumes = crate::volumes::secret_volumes(pod);
        let containers = pod.spec.as_ref().map_or(0, |s| s.containers.len());
        if volumes.is_empty() {
            return Some(vec![Vec::new(); containers]);
        }
        let dir = self.volumes.join(pod.uid().unwrap_or_default());
        let secrets: Api<Secret> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let mut warned = false;
        loop {
            let mut found = HashMap::new();
            for name in volumes.values().filter_map(|v| v.secret_name.clone()) {
                if let Ok(Some(s)) = secrets.get_opt(&name).await {
                    found.insert(name, s);
                }
            }
            match crate::volumes::mount(pod, &dir, |name| found.get(name).cloned()) {
                Ok(mounts) => return Some(mounts),
                Err(e) if !warned => {
                    warned = true;
                    tracing::warn!("pod {}: {e}; waiting", pod.name_any());
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = stop.changed() => return None,
            }
        }
    }

    /// The prepared containers with the Service names they mention rewritten, waiting (up to the
    /// config's `resolve_timeout`) for those Services to have a running pod; `None` if the pod
    /// is stopped meanwhile. The pod may name its own Service (the scheduler's
    /// `DASK_SCHEDULER_ADDRESS` does): it counts as that Service's pod.
    async fn resolve(
        &self,
        config: &ProcessConfig,
        pod: &Pod,
        ip: &str,
        prepared: Vec<Prepared>,
        stop: &mut watch::Receiver<Option<Duration>>,
    ) -> Option<Vec<Prepared>> {
        let resolver = Resolver {
            net: self.net.clone(),
        };
        let me = (pod.namespace().unwrap_or_default(), pod.name_any());
        let me_net = crate::process::PodNet::starting(pod, ip);
        let since = tokio::time::Instant::now();
        loop {
            let mut missing = None;
            let mut fix = |t: &str| match resolver.try_rewrite(t, Some((&me, &me_net))) {
                Ok(t) => t,
                Err((partial, name)) => {
                    missing.get_or_insert(name);
                    partial
                }
            };
            let attempt: Vec<Prepared> = prepared
                .iter()
                .map(|p| {
                    p.as_ref().map_err(Clone::clone).map(|(argv, env)| {
                        let argv = argv.iter().map(|a| fix(a)).collect();
                        let env = env.iter().map(|(k, v)| (k.clone(), fix(v))).collect();
                        (argv, env)
                    })
                })
                .collect();
            match missing {
                None => return Some(attempt),
                Some(svc) if since.elapsed() >= config.resolve_timeout => {
                    tracing::warn!(
                        "pod {}/{}: {svc} has no endpoint; starting anyway",
                        me.0,
                        me.1
                    );
                    return Some(attempt);
                }
                Some(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = stop.changed() => return None,
            }
        }
    }
}

/// Watches a started container: its output into `log`, and its exit (after `SIGTERM`, then
/// `SIGKILL` once the grace period is over, when `stop` asks) as `(index, Ended)` on `exits`.
fn supervise(
    exits: &mut JoinSet<Option<(usize, Ended)>>,
    mut child: tokio::process::Child,
    index: usize,
    started: String,
    mut stop: watch::Receiver<Option<Duration>>,
    log: Arc<ContainerLog>,
) {
    type Output = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
    let outputs: [Option<Output>; 2] = [
        child.stdout.take().map(|o| Box::new(o) as Output),
        child.stderr.take().map(|o| Box::new(o) as Output),
    ];
    for out in outputs.into_iter().flatten() {
        let log = log.clone();
        exits.spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                log.push(&line);
            }
            None
        });
    }
    exits.spawn(async move {
        let status = tokio::select! {
            s = child.wait() => s,
            grace = async { stop.wait_for(Option::is_some).await.ok().and_then(|g| *g) } => {
                let pid = child.id().and_then(|p| i32::try_from(p).ok()).and_then(rustix::process::Pid::from_raw);
                if let Some(pid) = pid {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                match tokio::time::timeout(grace.unwrap_or_default(), child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                }
            }
        };
        let code = status.map(exit_code).unwrap_or(255);
        let reason = if code == 0 { "Completed" } else { "Error" };
        Some((
            index,
            Ended {
                code,
                reason,
                message: None,
                started,
                finished: crate::meta::now(),
            },
        ))
    });
}
