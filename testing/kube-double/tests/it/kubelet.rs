//! The simulated kubelet: scheduling and start-up, crash and completion patterns, kills, and
//! graceful pod deletion.

use crate::support::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube_double::{ApiServer, Kubelet, KubeletConfig};

fn phase(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

async fn wait_phase(pods: &Api<Pod>, name: &str, want: &str) -> Pod {
    eventually(&format!("{name} to be {want}"), || async {
        pods.get(name).await.ok().filter(|p| phase(p) == want)
    })
    .await
}

#[tokio::test]
async fn the_kubelet_runs_new_pods_and_marks_them_ready() {
    let server = ApiServer::new();
    let _kubelet = Kubelet::start(&server, KubeletConfig::default());
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("web", "nginx:1"))
        .await
        .unwrap();
    let p = wait_phase(&pods, "web", "Running").await;
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some("kube-double-node")
    );
    let status = p.status.unwrap();
    assert!(status.pod_ip.unwrap().starts_with("10.244."));
    let ready = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let cs = &status.container_statuses.unwrap()[0];
    assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some());
}

#[tokio::test]
async fn crash_and_completion_patterns_fail_or_finish_pods() {
    let server = ApiServer::new();
    let config = KubeletConfig {
        crash_images: vec!["crashy".into()],
        complete_images: vec!["batch".into()],
        ..KubeletConfig::default()
    };
    let _kubelet = Kubelet::start(&server, config);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(
        &PostParams::default(),
        &never(pod("bad", "example/crashy:1")),
    )
    .await
    .unwrap();
    pods.create(
        &PostParams::default(),
        &never(pod("job", "example/batch:1")),
    )
    .await
    .unwrap();
    let bad = wait_phase(&pods, "bad", "Failed").await;
    let term = bad.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 1);
    let done = wait_phase(&pods, "job", "Succeeded").await;
    let term = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(term.exit_code, 0);
}

fn never(mut p: Pod) -> Pod {
    p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    p
}

fn container(p: &Pod) -> k8s_openapi::api::core::v1::ContainerStatus {
    p.status
        .clone()
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.first().cloned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_crashing_container_is_restarted_in_crash_loop_back_off_as_its_policy_says() {
    let server = ApiServer::new();
    let config = KubeletConfig {
        crash_images: vec!["crashy".into()],
        restart_backoff: std::time::Duration::from_millis(200),
        ..KubeletConfig::default()
    };
    let _kubelet = Kubelet::start(&server, config);
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    // restartPolicy unset: Always.
    pods.create(&PostParams::default(), &pod("loop", "example/crashy:1"))
        .await
        .unwrap();
    let p = eventually("loop to be restarted twice", || async {
        pods.get("loop")
            .await
            .ok()
            .filter(|p| container(p).restart_count >= 2)
    })
    .await;
    assert_eq!(phase(&p), "Running", "a restarting pod is not Failed");
    let c = container(&p);
    let last = c.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 1);
    let p = eventually("loop to wait in back-off", || async {
        pods.get("loop").await.ok().filter(|p| {
            container(p)
                .state
                .and_then(|s| s.waiting)
                .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
        })
    })
    .await;
    assert!(!container(&p).ready);
}

#[tokio::test]
async fn kill_restarts_the_container_or_fails_the_pod_as_its_policy_says() {
    let server = ApiServer::new();
    let kubelet = Kubelet::start(&server, KubeletConfig::default());
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("always", "img"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &never(pod("never", "img")))
        .await
        .unwrap();
    wait_phase(&pods, "always", "Running").await;
    wait_phase(&pods, "never", "Running").await;
    kubelet.kill("default", "always").await.unwrap();
    kubelet.kill("default", "never").await.unwrap();
    let restarted = pods.get("always").await.unwrap();
    assert_eq!(phase(&restarted), "Running");
    let c = container(&restarted);
    assert_eq!(c.restart_count, 1);
    let last = c.last_state.unwrap().terminated.unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("OOMKilled"))
    );
    let failed = pods.get("never").await.unwrap();
    assert_eq!(phase(&failed), "Failed");
    let term = container(&failed).state.unwrap().terminated.unwrap();
    assert_eq!(term.exit_code, 137);
}

#[tokio::test]
async fn an_evicted_pod_fails_whatever_its_policy() {
    let server = ApiServer::new();
    let kubelet = Kubelet::start(&server, KubeletConfig::default());
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    pods.create(&PostParams::default(), &pod("w", "img"))
        .await
        .unwrap();
    wait_phase(&pods, "w", "Running").await;
    kubelet.evict("default", "w").await.unwrap();
    let p = pods.get("w").await.unwrap();
    assert_eq!(phase(&p), "Failed");
    assert_eq!(p.status.unwrap().reason.as_deref(), Some("Evicted"));
}

#[tokio::test]
async fn pod_deletion_waits_for_the_kubelet_and_is_immediate_without_one() {
    let server = ApiServer::new();
    let pods: Api<Pod> = Api::namespaced(server.client(), "default");
    let kubelet = Kubelet::start(&server, KubeletConfig::default());
    pods.create(&PostParams::default(), &pod("graceful", "img"))
        .await
        .unwrap();
    wait_phase(&pods, "graceful", "Running").await;
    let pending = pods
        .delete("graceful", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(30));
    eventually("the kubelet to finish the deletion", || async {
        pods.get_opt("graceful")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    kubelet.stop();
    pods.create(&PostParams::default(), &pod("abrupt", "img"))
        .await
        .unwrap();
    pods.delete("abrupt", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        pods.get_opt("abrupt").await.unwrap().is_none(),
        "no kubelet: deleted at once"
    );
}
