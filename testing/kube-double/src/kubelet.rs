//! A simulated kubelet (and scheduler) on one node. It watches pods through the API like the real
//! one: binds new pods to its node, then after `start_delay` reports them `Running` and `Ready` with
//! a pod IP and container statuses (or `Failed` when an image matches a crash pattern, or
//! `Succeeded` after `run_time` when it matches a completion pattern). Pods with a
//! `deletionTimestamp` are stopped and then deleted with grace period 0, which is what lets a
//! graceful pod deletion finish while a kubelet runs.

use crate::server::ApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
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
        }
    }
}

/// A running simulated kubelet; stops when dropped or [`stop`](Kubelet::stop)ped.
pub struct Kubelet {
    api: ApiServer,
    client: Client,
    task: JoinHandle<()>,
}

impl Kubelet {
    /// Starts the kubelet's background task (call inside a Tokio runtime). While at least one
    /// kubelet runs, the server deletes scheduled pods gracefully and leaves the final deletion
    /// to the kubelet.
    pub fn start(api: &ApiServer, config: KubeletConfig) -> Kubelet {
        api.kubelet_started();
        let client = api.client_as("kubelet");
        let node = Arc::new(Node {
            client: client.clone(),
            config,
            next_ip: AtomicU32::new(2),
        });
        Kubelet {
            api: api.clone(),
            client,
            task: tokio::spawn(node.run()),
        }
    }

    /// Kills a pod as a node loss or the OOM killer would: phase `Failed`, containers terminated
    /// with exit code 137, not ready.
    pub async fn kill(&self, namespace: &str, name: &str) -> Result<(), kube::Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods.get(name).await?;
        let now = crate::meta::now();
        let statuses: Vec<Value> = containers(&pod)
            .into_iter()
            .map(|(cname, image)| {
                json!({"name": cname, "image": image, "imageID": image_id(&image), "ready": false, "started": false,
                       "restartCount": 0, "containerID": container_id(&pod, &cname),
                       "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": now}}})
            })
            .collect();
        let patch = json!({"status": {"phase": "Failed", "reason": "OOMKilled",
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
        self.task.abort();
        self.api.kubelet_stopped();
    }
}

struct Node {
    client: Client,
    config: KubeletConfig,
    next_ip: AtomicU32,
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
            .applied_objects()
            .boxed();
        let mut started: HashSet<String> = HashSet::new();
        let mut terminating: HashSet<String> = HashSet::new();
        let mut work = JoinSet::new();
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(Ok(pod)) => {
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
                        } else if phase == "Pending" && started.insert(uid) {
                            work.spawn(self.clone().start_pod(pod));
                        }
                    }
                    Some(Err(e)) => tracing::debug!("kubelet watch error: {e}"),
                    None => return,
                },
                Some(_) = work.join_next(), if !work.is_empty() => {}
            }
        }
    }

    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default())
    }

    async fn start_pod(self: Arc<Self>, pod: Pod) {
        let api = self.pod_api(&pod);
        let name = pod.name_any();
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
        {
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                 "target": {"apiVersion": "v1", "kind": "Node", "name": self.config.node_name}});
            if let Err(e) = api
                .create_subresource::<Value, kube::core::Status>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                tracing::debug!("kubelet could not bind {name}: {e}");
                return;
            }
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
        let now = crate::meta::now();
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let ip = format!("10.244.{}.{}", n / 250, n % 250 + 1);
        let state = |c: &str| {
            if crash {
                json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now, "containerID": container_id(&pod, c)}})
            } else {
                json!({"running": {"startedAt": now}})
            }
        };
        let statuses: Vec<Value> = images
            .iter()
            .map(|(c, image)| {
                json!({"name": c, "image": image, "imageID": image_id(image), "containerID": container_id(&pod, c),
                       "ready": !crash, "started": !crash, "restartCount": 0, "state": state(c)})
            })
            .collect();
        let status = json!({"status": {
            "phase": if crash { "Failed" } else { "Running" },
            "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
            "podIP": ip, "podIPs": [{"ip": ip}], "startTime": now,
            "conditions": conditions(!crash, &now),
            "containerStatuses": statuses,
        }});
        let pp = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&status)).await {
            tracing::debug!("kubelet could not start {name}: {e}");
            return;
        }
        if complete && !crash {
            tokio::time::sleep(self.config.run_time).await;
            let finished = crate::meta::now();
            let statuses: Vec<Value> = images
                .iter()
                .map(|(c, image)| {
                    json!({"name": c, "image": image, "imageID": image_id(image), "containerID": container_id(&pod, c),
                           "ready": false, "started": false, "restartCount": 0,
                           "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": finished}}})
                })
                .collect();
            let done = json!({"status": {"phase": "Succeeded", "conditions": conditions(false, &finished), "containerStatuses": statuses}});
            if let Err(e) = api.patch_status(&name, &pp, &Patch::Merge(&done)).await {
                tracing::debug!("kubelet could not complete {name}: {e}");
            }
        }
    }

    async fn terminate(self: Arc<Self>, pod: Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or(0)
            .max(0) as u64;
        let wait = self
            .config
            .termination_delay
            .min(Duration::from_secs(grace));
        tokio::time::sleep(wait).await;
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
