//! A DaskCluster of rask's image: scheduler and workers run, a client computes on them, and a
//! DaskAutoscaler scales the workers under a burst and back.

use std::time::Duration;

use kube::api::PostParams;
use rask::seed::{self, lit};
use rask_e2e::{E2e, example};
use rask_operator::crd::{ClusterPhase, DaskAutoscaler, DaskAutoscalerSpec, DaskCluster};

const T: Duration = Duration::from_secs(60);

/// `examples/rask-cluster.yaml` with two single-threaded workers.
fn cluster() -> DaskCluster {
    let mut c: DaskCluster = example("rask-cluster.yaml").unwrap();
    c.spec.worker.replicas = 2;
    c.spec.worker.spec.containers[0].args = Some(
        ["worker", "--nthreads", "1", "--memory-limit", "1GiB"]
            .map(String::from)
            .to_vec(),
    );
    c
}

async fn workers(e2e: &E2e) -> usize {
    let lp = kube::api::ListParams::default()
        .labels("dask.org/cluster-name=rask,dask.org/component=worker");
    e2e.pods()
        .list(&lp)
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

/// Workers registered with the scheduler, through its HTTP API (over HTTPS with the operator's
/// certificate, as the operator asks, when TLS is on).
async fn connected(e2e: &E2e) -> usize {
    let Ok((api, base)) = e2e.scheduler_api("rask").await else {
        return 0;
    };
    api.get_workers(&base).await.map(|w| w.len()).unwrap_or(0)
}

#[tokio::test]
async fn a_cluster_runs_its_scheduler_and_workers_and_computes_the_seed_graph() {
    let e2e = E2e::start().await;
    e2e.clusters()
        .create(&PostParams::default(), &cluster())
        .await
        .unwrap();
    e2e.wait_until(
        "the cluster is Running with 2 ready workers",
        T,
        async || {
            e2e.clusters()
                .get("rask")
                .await
                .unwrap()
                .status
                .is_some_and(|s| s.phase == Some(ClusterPhase::Running) && s.ready_workers == 2)
        },
    )
    .await;
    let scheduler = e2e.pods().get("rask-scheduler").await.unwrap();
    let ip = scheduler.status.unwrap().pod_ip.unwrap();
    let address = e2e.scheduler_address("rask");
    assert_eq!(
        address,
        format!("{}://{ip}:8786", e2e.scheme()),
        "the Service address is the scheduler pod's"
    );
    e2e.wait_until("both workers joined the scheduler", T, async || {
        connected(&e2e).await == 2
    })
    .await;
    let client = e2e.connect("rask").await;
    assert_eq!(rask::jobs::seed_delayed(&client).await.unwrap(), 131);
    drop(client);
    if e2e.tls {
        // Without the cluster's certificate nobody computes: no certificate (plain TCP at the
        // TLS port) and another CA's client certificate are both refused.
        let plain = address.replacen("tls://", "tcp://", 1);
        let plain = tokio::time::timeout(Duration::from_secs(10), async {
            let c = rask::client::Client::connect(&plain).await.ok()?;
            c.submit(seed::INC, lit(1i64)).result().await.ok()
        })
        .await;
        assert!(
            !matches!(plain, Ok(Some(_))),
            "plain TCP computed on a TLS scheduler"
        );
        let other = rask::certs::ThrowawayCa::new("another cluster").unwrap();
        let dir = std::env::temp_dir().join(format!("rask-e2e-other-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = other.write_member(&dir, "intruder").unwrap();
        let foreign = rask::core::tls::TlsConfig::load(&files).unwrap();
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            rask::client::Client::connect_with(&address, Some(foreign)),
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            !matches!(refused, Ok(Ok(_))),
            "a client of another CA connected"
        );
    }
    e2e.shutdown().await;
}

#[tokio::test]
async fn an_autoscaler_scales_real_workers_under_a_burst_and_back() {
    let e2e = E2e::start().await;
    e2e.clusters()
        .create(&PostParams::default(), &cluster())
        .await
        .unwrap();
    let mut a = DaskAutoscaler::new(
        "rask",
        DaskAutoscalerSpec {
            cluster: "rask".into(),
            minimum: 1,
            maximum: 3,
            worker_group: None,
            scale_down_stabilization_seconds: Some(2),
        },
    );
    a.metadata.namespace = Some("default".into());
    kube::Api::<DaskAutoscaler>::namespaced(e2e.client.clone(), "default")
        .create(&PostParams::default(), &a)
        .await
        .unwrap();
    e2e.wait_until(
        "the autoscaler brings the cluster to 1 worker",
        T,
        async || workers(&e2e).await == 1 && connected(&e2e).await == 1,
    )
    .await;
    // 600 tasks of 20 ms: 12 s of work for one thread, so the scheduler asks for more.
    let client = e2e.connect("rask").await;
    let futures = client.map(
        seed::SLEEP,
        (0..600i64).map(|i| seed::Sleep {
            seconds: 0.02,
            value: lit(i),
        }),
    );
    e2e.wait_until("3 workers joined", T, async || connected(&e2e).await == 3)
        .await;
    let values = client.gather(&futures).await.unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, rask::Value::Int(i as i64), "result {i}");
    }
    drop(futures);
    e2e.wait_until("back to 1 worker", T, async || {
        workers(&e2e).await == 1 && connected(&e2e).await == 1
    })
    .await;
    e2e.shutdown().await;
}

#[tokio::test]
async fn a_worker_group_whose_args_offer_a_gpu_gets_every_task_that_needs_one() {
    let e2e = E2e::start().await;
    e2e.clusters()
        .create(&PostParams::default(), &cluster())
        .await
        .unwrap();
    // A second group, `rask-gpu`, whose workers say they have a GPU (Dask's --resources).
    let mut gpu: rask_operator::crd::DaskWorkerGroup = example("daskworkergroup.yaml").unwrap();
    gpu.metadata.name = Some("rask-gpu".into());
    gpu.metadata.namespace = Some("default".into());
    gpu.spec.cluster = "rask".into();
    gpu.spec.worker.spec = cluster().spec.worker.spec;
    gpu.spec.worker.spec.containers[0].args = Some(
        ["worker", "--nthreads", "1", "--resources", "GPU=1"]
            .map(String::from)
            .to_vec(),
    );
    kube::Api::<rask_operator::crd::DaskWorkerGroup>::namespaced(e2e.client.clone(), "default")
        .create(&PostParams::default(), &gpu)
        .await
        .unwrap();
    e2e.wait_until("3 workers joined", T, async || connected(&e2e).await == 3)
        .await;
    let client = e2e.connect("rask").await;
    let gpu_need = rask::core::Resources::parse("GPU=1").unwrap();
    let var = || "DASK_WORKER_NAME".to_owned();
    let needs: Vec<_> = (0..10)
        .map(|_| {
            client.compute(
                &rask::client::delayed(seed::ENVIRON, var()).with_resources(gpu_need.clone()),
            )
        })
        .collect();
    let any: Vec<_> = (0..10)
        .map(|_| client.submit(seed::ENVIRON, var()))
        .collect();
    let gpu_pods: Vec<String> = e2e
        .pods()
        .list(&kube::api::ListParams::default().labels("dask.org/workergroup-name=rask-gpu"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(gpu_pods.len(), 1, "{gpu_pods:?}");
    for v in client.gather(&needs).await.unwrap() {
        let ran_on = v.as_str().unwrap().to_owned();
        assert!(gpu_pods.contains(&ran_on), "a GPU task ran on {ran_on}");
    }
    assert_eq!(client.gather(&any).await.unwrap().len(), 10);
    e2e.shutdown().await;
}
