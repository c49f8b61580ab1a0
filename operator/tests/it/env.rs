//! The test environment: API server double (enforcing the chart's RBAC on the operator), kubelet,
//! operator, and a scheduler with workers that follow the worker pods. With TLS (the default),
//! two: the cluster [`TLS_CLUSTER`]'s over TLS, and a plain one for every other cluster (Dask's
//! image, whose scheduler the operator reaches over plain HTTP).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;
use kube_double::{ApiServer, Authorization, Kubelet, KubeletConfig, Options};
use rask::scheduler::server::{Scheduler, SchedulerConfig};
use rask::worker::{Worker, WorkerConfig};
use rask_operator::context::Context;
use rask_operator::crd::DaskCluster;
use rask_operator::metrics::Metrics;
use rask_operator::run::controllers;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::chart::{ChartScope, Rendered};

pub struct Env {
    /// The tests' own client: the administrator, whom RBAC does not restrict.
    pub client: kube::Client,
    pub api: ApiServer,
    /// The operator's client: the chart's ServiceAccount, held to the chart's RBAC.
    pub operator_client: kube::Client,
    pub chart: Rendered,
    pub metrics: Arc<Metrics>,
    pub kubelet: Kubelet,
    /// The scheduler stand-in (with TLS stand-ins, [`TLS_CLUSTER`]'s).
    pub scheduler: Scheduler,
    pub dashboard: String,
    /// With TLS stand-ins, the plain one of every other cluster, and its HTTP API.
    plain: Option<(Scheduler, String)>,
    /// The operator's `--cluster-tls`: rask pods use their cluster's certificates.
    pub cluster_tls: bool,
    /// The users' (client) TLS identity of the stand-in scheduler's cluster, when it uses TLS.
    pub client_tls: Option<rask::core::tls::TlsConfig>,
    operator: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    runner: JoinHandle<()>,
}

/// The DaskCluster whose certificates the default environment's stand-ins hold
/// (`examples/rask-cluster.yaml`'s), in the namespace the tests use.
pub const TLS_CLUSTER: &str = "rask";

impl Env {
    /// The default environment: the operator runs with TLS on (its default), and the scheduler
    /// and worker stand-ins hold the certificates of the cluster [`TLS_CLUSTER`], whose Secret
    /// the environment writes before the operator starts (the operator reads it back and keeps
    /// it), so a rask cluster of that name runs over TLS end to end.
    pub async fn new() -> Env {
        Env::with_kubelet(KubeletConfig::default()).await
    }

    /// An environment whose operator runs with `--no-cluster-tls`: plain TCP and HTTP.
    pub async fn without_cluster_tls() -> Env {
        let chart = crate::chart::render(ChartScope::from_env(), &[]);
        Env::build(
            rask_operator::crd::all(),
            KubeletConfig::default(),
            chart,
            false,
            None,
        )
        .await
    }

    /// An environment whose operator runs with `--cluster-tls` but whose stand-ins use plain
    /// TCP and no Secret is written beforehand: the operator makes each cluster's certificates.
    pub async fn with_cluster_tls() -> Env {
        let chart = crate::chart::render(ChartScope::from_env(), &[]);
        Env::build(
            rask_operator::crd::all(),
            KubeletConfig::default(),
            chart,
            true,
            None,
        )
        .await
    }

    /// An environment whose operator runs with `--cluster-tls` and whose scheduler and worker
    /// stand-ins use `certs` (a cluster's, put in its Secret by the test before the cluster is
    /// made): the scheduler on `tls://` with its HTTP API on HTTPS.
    pub async fn with_tls_scheduler(certs: &rask_operator::tls::ClusterCerts) -> Env {
        let chart = crate::chart::render(ChartScope::from_env(), &[]);
        Env::build(
            rask_operator::crd::all(),
            KubeletConfig::default(),
            chart,
            true,
            Some(certs),
        )
        .await
    }

    /// An environment whose kubelet behaves as `kubelet` says (crash and completion patterns).
    pub async fn with_kubelet(kubelet: KubeletConfig) -> Env {
        Env::with(rask_operator::crd::all(), kubelet).await
    }

    /// An environment whose API server serves `crds` (other CRDs than rask's own: an upgrade).
    pub async fn with(
        crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
        kubelet: KubeletConfig,
    ) -> Env {
        let chart = crate::chart::render(ChartScope::from_env(), &[]);
        Env::with_chart(crds, kubelet, chart).await
    }

    /// An environment whose operator has the permissions `chart` renders, and its scope; TLS
    /// as in [`Env::new`].
    pub async fn with_chart(
        crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
        kubelet: KubeletConfig,
        chart: Rendered,
    ) -> Env {
        let certs = rask_operator::tls::ClusterCerts::generate(
            TLS_CLUSTER,
            &rask_operator::tls::kubernetes_scheduler_names(TLS_CLUSTER, "default"),
            rask_operator::clock::now() as i64,
        )
        .unwrap();
        let env = Env::build(crds, kubelet, chart, true, Some(&certs)).await;
        env.write_secret(&certs).await;
        env
    }

    /// Writes `certs` as the Secret of [`TLS_CLUSTER`] (before the cluster exists: the
    /// operator keeps a valid Secret it finds).
    async fn write_secret(&self, certs: &rask_operator::tls::ClusterCerts) {
        let secret = k8s_openapi::api::core::v1::Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{TLS_CLUSTER}-tls")),
                ..Default::default()
            },
            data: Some(
                certs
                    .files()
                    .into_iter()
                    .map(|(n, t)| (n, k8s_openapi::ByteString(t.into_bytes())))
                    .collect(),
            ),
            ..Default::default()
        };
        Api::<k8s_openapi::api::core::v1::Secret>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// A client of the stand-in scheduler, with the users' certificate when it uses TLS.
    pub async fn connect(&self) -> rask::client::Client {
        rask::client::Client::connect_with(self.scheduler.address(), self.client_tls.clone())
            .await
            .unwrap()
    }

    async fn build(
        crds: Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
        kubelet: KubeletConfig,
        chart: Rendered,
        cluster_tls: bool,
        certs: Option<&rask_operator::tls::ClusterCerts>,
    ) -> Env {
        let api = ApiServer::with_options(Options {
            authorization: Authorization::Rbac,
            ..Options::default()
        });
        for crd in crds {
            api.install_crd(crd).unwrap();
        }
        let client = api.client();
        chart.install(&client).await;
        let operator_client = api.service_account_client(&chart.namespace, &chart.account);
        let kubelet = Kubelet::start(&api, kubelet);
        let tls = |role: rask_operator::tls::Role| {
            certs.map(|c| {
                let id = c.identity(role);
                let files = rask::core::tls::TlsFiles {
                    ca_file: "ca.pem".into(),
                    cert: role.cert_file().into(),
                    key: role.key_file().into(),
                };
                rask::core::tls::TlsConfig::from_pem_named(
                    &files,
                    c.ca_pem.as_bytes(),
                    id.cert_pem.as_bytes(),
                    id.key_pem.as_bytes(),
                )
                .unwrap()
            })
        };
        let config = SchedulerConfig {
            dashboard: Some("127.0.0.1:0".parse().unwrap()),
            tls: tls(rask_operator::tls::Role::Scheduler),
            ..SchedulerConfig::default()
        };
        let scheduler = Scheduler::start(config).await.unwrap();
        // http:// as the operator's default URL is; with TLS it asks over https://.
        let dashboard = format!("http://{}", scheduler.dashboard_address().unwrap());
        let plain = match certs {
            Some(_) => {
                let config = SchedulerConfig {
                    dashboard: Some("127.0.0.1:0".parse().unwrap()),
                    ..SchedulerConfig::default()
                };
                let s = Scheduler::start(config).await.unwrap();
                let url = format!("http://{}", s.dashboard_address().unwrap());
                Some((s, url))
            }
            None => None,
        };
        let workers = Arc::new(Mutex::new(BTreeMap::new()));
        let client_tls = tls(rask_operator::tls::Role::Client);
        let main = Target {
            address: scheduler.address().to_owned(),
            tls: tls(rask_operator::tls::Role::Worker),
        };
        let targets = match &plain {
            Some((s, _)) => Targets {
                tls_cluster: Some(main),
                others: Target {
                    address: s.address().to_owned(),
                    tls: None,
                },
            },
            None => Targets {
                tls_cluster: None,
                others: main,
            },
        };
        let runner = tokio::spawn(run_worker_pods(client.clone(), targets, workers));
        let mut env = Env {
            client,
            api,
            operator_client,
            chart,
            metrics: Arc::new(Metrics::default()),
            kubelet,
            scheduler,
            dashboard,
            plain,
            cluster_tls,
            client_tls,
            operator: None,
            runner,
        };
        env.start_operator();
        env
    }

    /// Starts (or restarts) the operator against the same API server.
    pub fn start_operator(&mut self) {
        let dashboard = self.dashboard.clone();
        let plain = self.plain.as_ref().map(|(_, url)| url.clone());
        let url = move |cluster: &str, _ns: &str| match &plain {
            Some(url) if cluster != TLS_CLUSTER => url.clone(),
            _ => dashboard.clone(),
        };
        let ctx = Context::new(self.operator_client.clone(), self.metrics.clone())
            .with_scheduler_url(Arc::new(url))
            .with_cluster_tls(self.cluster_tls);
        let (tx, mut rx) = watch::channel(false);
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(controllers(
            Arc::new(ctx),
            self.chart.scope.clone(),
            shutdown,
        ));
        self.operator = Some((tx, task));
    }

    /// Kills the operator at once (no graceful shutdown), as a crash would.
    pub async fn kill_operator(&mut self) {
        if let Some((_, task)) = self.operator.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn clusters(&self) -> Api<DaskCluster> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub async fn apply_example(&self, file: &str) -> DaskCluster {
        let c: DaskCluster = example(file);
        self.clusters()
            .create(&PostParams::default(), &c)
            .await
            .unwrap()
    }

    /// Worker pod names of a cluster, sorted (pods being deleted left out).
    pub async fn worker_pods(&self, cluster: &str) -> Vec<String> {
        let lp = ListParams::default().labels(&format!(
            "dask.org/cluster-name={cluster},dask.org/component=worker"
        ));
        let mut names: Vec<String> = self
            .pods()
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// Names of the workers registered with the scheduler, sorted.
    pub async fn scheduler_workers(&self) -> Vec<String> {
        registered_workers(&self.scheduler).await
    }

    pub async fn shutdown(mut self) {
        if let Some((tx, task)) = self.operator.take() {
            let _ = tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        self.runner.abort();
        self.kubelet.stop();
        self.scheduler.shutdown().await;
        if let Some((s, _)) = self.plain.take() {
            s.shutdown().await;
        }
    }
}

/// A manifest from `examples/`, typed.
pub fn example<K: serde::de::DeserializeOwned>(file: &str) -> K {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Polls `f` until it is true; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> bool) {
    let start = std::time::Instant::now();
    loop {
        if f().await {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A scheduler stand-in that workers join.
struct Target {
    address: String,
    tls: Option<rask::core::tls::TlsConfig>,
}

/// Which stand-in a worker pod's worker joins: [`TLS_CLUSTER`]'s pods the TLS one (when there is
/// one), every other pod `others`.
struct Targets {
    tls_cluster: Option<Target>,
    others: Target,
}

impl Targets {
    fn of(&self, pod: &Pod) -> &Target {
        let cluster = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("dask.org/cluster-name"));
        match &self.tls_cluster {
            Some(t) if cluster.map(String::as_str) == Some(TLS_CLUSTER) => t,
            _ => &self.others,
        }
    }
}

/// Stands in for the worker containers: a rask worker named after each running worker pod,
/// stopped when the pod goes away (as the kubelet would kill the container).
async fn run_worker_pods(
    client: kube::Client,
    targets: Targets,
    workers: Arc<Mutex<BTreeMap<String, Worker>>>,
) {
    let pods: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().labels("dask.org/component=worker");
    let mut store: BTreeMap<String, Pod> = BTreeMap::new();
    let mut stream = watcher(pods, cfg).boxed();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                store.insert(p.metadata.name.clone().unwrap_or_default(), p);
            }
            Ok(watcher::Event::Delete(p)) => {
                store.remove(&p.metadata.name.clone().unwrap_or_default());
            }
            Ok(_) => {}
            Err(_) => continue,
        }
        let running: Vec<String> = store
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .filter_map(|p| p.metadata.name.clone())
            .collect();
        let (to_stop, to_start): (Vec<String>, Vec<String>) = {
            let w = workers.lock().unwrap();
            (
                w.keys().filter(|n| !running.contains(n)).cloned().collect(),
                running
                    .iter()
                    .filter(|n| !w.contains_key(*n))
                    .cloned()
                    .collect(),
            )
        };
        for name in to_stop {
            let worker = workers.lock().unwrap().remove(&name);
            if let Some(w) = worker {
                w.close().await;
            }
        }
        for name in to_start {
            let Some(pod) = store.get(&name) else {
                continue;
            };
            let target = targets.of(pod);
            let mut wc = WorkerConfig::new(target.address.clone(), name.clone());
            wc.listen_host = Some("127.0.0.1".into());
            // As `rask worker --memory-limit auto` would give it: with a limit, the scheduler
            // may close a worker holding data (its data moves); without one it never would.
            wc.memory_limit = 1 << 30;
            wc.tls = target.tls.clone();
            match Worker::start(wc, rask::registry()).await {
                Ok(w) => {
                    workers.lock().unwrap().insert(name, w);
                }
                Err(e) => eprintln!("worker for pod {name} did not start: {e}"),
            }
        }
    }
}

/// Names of the workers registered with `scheduler`, sorted.
pub async fn registered_workers(scheduler: &Scheduler) -> Vec<String> {
    let mut names: Vec<String> = scheduler
        .handle()
        .snapshot()
        .await
        .unwrap()
        .workers
        .into_iter()
        .map(|w| w.name)
        .collect();
    names.sort();
    names
}
