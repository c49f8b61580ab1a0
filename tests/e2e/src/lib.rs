//! The end-to-end harness: kube-double's API server, its kubelet running every pod of rask's
//! worker image as a real `rask` process (each on its own loopback address), and the operator's
//! controllers, in one test process. A scenario applies manifests and watches real schedulers,
//! workers and job runners do the work.
//!
//! The API server enforces RBAC: the operator runs as the ServiceAccount of charts/rask-operator
//! with the Roles or ClusterRoles `helm template` renders ([`chart`]; `RASK_CHART_SCOPE` picks
//! the chart's mode), while the scenarios use an administrator client.
//!
//! The `rask` binary comes from `RASK_BIN`, else from beside the test executable
//! (`target/debug/rask`): `cargo test --workspace` and `scripts/test` build it first; alone,
//! build it with `cargo build -p rask --bin rask`.
//!
//! TLS is on, as the operator's default is: rask pods mount their cluster's certificates, talk
//! `tls://`, and the operator reaches schedulers' HTTP API over HTTPS (through a port-forward, at
//! `127.0.0.1`, a name the scheduler's certificate carries). `RASK_E2E_TLS=0` runs the suite with
//! the operator's `--no-cluster-tls` instead ([`tls_from_env`]); scripts/test does both.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube_double::{
    ApiServer, Authorization, Kubelet, KubeletConfig, Options, PortForward, ProcessConfig,
};
use rask_operator::context::Context;
use rask_operator::crd::{DaskCluster, DaskJob};
use rask_operator::metrics::Metrics;
use rask_operator::names;
use rask_operator::run::{Scope, controllers};
use rask_operator::scheduler_api::SchedulerApi;

pub mod chart;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Pods whose image contains this run as `rask` processes (images/worker, examples/rask-*.yaml).
pub const WORKER_IMAGE: &str = "rask-dev/rask-worker";
/// The worker image's entrypoint (images/worker/Dockerfile).
pub const ENTRYPOINT: &str = "/usr/local/bin/rask";
/// Pods whose image contains this run the commands they name (`custom-worker`, `wordcount`) from
/// beside the `rask` binary (images/custom-worker, examples/custom-worker/job.yaml).
pub const CUSTOM_WORKER_IMAGE: &str = "rask-dev/rask-custom-worker";

/// The `rask` binary the pods run.
pub fn rask_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("RASK_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the test executable: {e}"))?;
    // target/debug/deps/it-<hash> → target/debug/rask
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("rask"))
        .ok_or_else(|| format!("{} has no target directory above it", exe.display()))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "no rask binary at {}: run `cargo build -p rask --bin rask` first, or set RASK_BIN",
            bin.display()
        ))
    }
}

/// The variable that turns TLS off for the suite: `RASK_E2E_TLS=0`.
pub const TLS_ENV: &str = "RASK_E2E_TLS";

/// Whether the suite's operator uses TLS, from [`TLS_ENV`]: on when unset or empty, `1`/`true`/
/// `yes`/`on`; off for `0`/`false`/`no`/`off`; any other value is an error naming it.
pub fn tls_from_env() -> Result<bool, String> {
    parse_tls(std::env::var(TLS_ENV).ok().as_deref())
}

fn parse_tls(value: Option<&str>) -> Result<bool, String> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(true);
    };
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "{TLS_ENV}={v:?} is neither on (1, true, yes, on) nor off (0, false, no, off)"
        )),
    }
}

/// The Python that stands for the worker image's `python3`, which has the `rask` package:
/// `$RASK_PYTHON` (scripts/test sets its venv's, where the package is installed), else `python3`
/// on PATH.
pub fn python_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RASK_PYTHON") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("python3"))
}

/// What listening on all interfaces inside a pod means here: on the pod's IP. `rask scheduler`
/// gets `--host IP` and its dashboard on `IP:port`; `rask worker` gets `--listen-host IP`. Other
/// commands (`rask run`) only connect out and are left alone.
pub fn bind_rask_args(argv: &mut Vec<String>, ip: &str) {
    match argv.get(1).map(String::as_str) {
        Some("scheduler") => {
            set_flag(argv, "--host", |_| Some(ip.to_owned()));
            set_flag(argv, "--dashboard-address", |old| match old {
                Some(v) if v.eq_ignore_ascii_case("none") => None,
                Some(v) => {
                    let port = v.rsplit(':').next().unwrap_or(v);
                    Some(format!("{ip}:{port}"))
                }
                None => Some(format!("{ip}:{}", names::DASHBOARD_PORT)),
            });
        }
        Some("worker") => set_flag(argv, "--listen-host", |_| Some(ip.to_owned())),
        _ => {}
    }
}

/// Images of Dask's own (`ghcr.io/dask/dask:<tag>`): their entrypoint runs the container's
/// arguments as a command, so they run as the test virtualenv's commands.
pub const DASK_IMAGE: &str = "ghcr.io/dask/dask";

/// The Dask image's commands: `dask-scheduler` and `dask-worker` (what dask-kubernetes' specs
/// run) are `dask scheduler` and `dask worker`.
pub fn dask_processes(bin_dir: impl Into<PathBuf>) -> ProcessConfig {
    ProcessConfig::exec(DASK_IMAGE, bin_dir)
        .alias("dask-scheduler", &["dask", "scheduler"])
        .alias("dask-worker", &["dask", "worker"])
        .bind_args(bind_dask_args)
}

/// What listening on all interfaces inside a pod means for Dask's commands: the scheduler and
/// workers (and their nannies) on the pod's IP (`--host`), their dashboards there too (a port
/// alone, `:port` or `0.0.0.0:port` becomes `IP:port`; the scheduler's default 8787). Commands
/// that only connect out (`python` job runners) are left alone.
pub fn bind_dask_args(argv: &mut Vec<String>, ip: &str) {
    let name = |a: &str| a.rsplit('/').next().unwrap_or(a).to_owned();
    let program = argv.first().map(|a| name(a)).unwrap_or_default();
    let role = match (program.as_str(), argv.get(1).map(String::as_str)) {
        ("dask-scheduler", _) | ("dask", Some("scheduler")) => "scheduler",
        ("dask-worker", _) | ("dask", Some("worker")) => "worker",
        _ => return,
    };
    set_flag(argv, "--host", |_| Some(ip.to_owned()));
    set_flag(argv, "--dashboard-address", |old| match old {
        Some(v) if v.eq_ignore_ascii_case("none") || v.is_empty() => None,
        Some(v) => Some(format!("{ip}:{}", v.rsplit(':').next().unwrap_or(v))),
        None if role == "scheduler" => Some(format!("{ip}:{}", names::DASHBOARD_PORT)),
        None => None,
    });
}

/// Sets `flag`'s value (`--flag value` or `--flag=value`) to what `value` makes of the old one,
/// appending the flag when it is missing and `value` gives one.
fn set_flag(argv: &mut Vec<String>, flag: &str, value: impl Fn(Option<&str>) -> Option<String>) {
    let eq = format!("{flag}=");
    let at = argv.iter().position(|a| a == flag || a.starts_with(&eq));
    match at {
        Some(i) if argv[i] == flag => {
            let old = argv.get(i + 1).cloned();
            if let Some(v) = value(old.as_deref()) {
                if i + 1 < argv.len() {
                    argv[i + 1] = v;
                } else {
                    argv.push(v);
                }
            }
        }
        Some(i) => {
            let old = argv[i][eq.len()..].to_owned();
            if let Some(v) = value(Some(&old)) {
                argv[i] = format!("{eq}{v}");
            }
        }
        None => {
            if let Some(v) = value(None) {
                argv.push(flag.to_owned());
                argv.push(v);
            }
        }
    }
}

/// An API server, a kubelet that runs rask's pods, and the operator.
pub struct E2e {
    /// The scenarios' client: the administrator.
    pub client: kube::Client,
    /// The operator's: the chart's ServiceAccount, held to the chart's RBAC.
    operator_client: kube::Client,
    scope: Scope,
    pub kubelet: Kubelet,
    /// The operator's `--cluster-tls` ([`tls_from_env`]).
    pub tls: bool,
    /// Port-forwards to schedulers' HTTP API, by (namespace, cluster), made on first use.
    forwards: Arc<Mutex<HashMap<(String, String), PortForward>>>,
    operator: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl E2e {
    pub async fn start() -> E2e {
        let tls = tls_from_env().unwrap_or_else(|e| panic!("{e}"));
        let bin = rask_bin().unwrap_or_else(|e| panic!("{e}"));
        let api = ApiServer::with_options(Options {
            authorization: Authorization::Rbac,
            ..Options::default()
        });
        for crd in rask_operator::crd::all() {
            api.install_crd(crd)
                .unwrap_or_else(|e| panic!("cannot install a CRD: {e}"));
        }
        let rendered = chart::ChartScope::from_env()
            .and_then(chart::render)
            .unwrap_or_else(|e| panic!("{e}"));
        chart::create(&api.client(), &rendered.objects)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let bin_dir = bin
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        // The worker image's `python3` (a DaskJob's Python runner, and the workers' Python) is
        // the Python with the `rask` package: scripts/test's venv.
        let python = python_bin().to_string_lossy().into_owned();
        let processes = ProcessConfig::new(WORKER_IMAGE, bin, ENTRYPOINT)
            .alias("python3", &[python.as_str()])
            .bind_args(bind_rask_args)
            .env("RASK_PYTHON", &python)
            .env("RUST_LOG", "info");
        // A user's image: its binaries have rask's command line, plus functions of their own.
        let custom = ProcessConfig::exec(CUSTOM_WORKER_IMAGE, bin_dir)
            .bind_args(bind_rask_args)
            .env("RUST_LOG", "info");
        let kubelet = Kubelet::start(
            &api,
            KubeletConfig {
                processes: vec![processes, custom],
                start_delay: Duration::ZERO,
                ..KubeletConfig::default()
            },
        );
        let mut e2e = E2e {
            client: api.client(),
            operator_client: api.service_account_client(&rendered.namespace, &rendered.account),
            scope: rendered.scope,
            kubelet,
            tls,
            forwards: Arc::default(),
            operator: None,
        };
        e2e.start_operator();
        e2e
    }

    /// Starts the operator; it reaches schedulers' HTTP API at their pods' addresses, or with
    /// TLS through a port-forward to the scheduler's Service (at `127.0.0.1`, which the
    /// scheduler's certificate names: the operator checks the name).
    pub fn start_operator(&mut self) {
        let resolver = self.kubelet.resolver();
        let forwards = self.forwards.clone();
        let tls = self.tls;
        let url = move |cluster: &str, ns: &str| {
            if tls {
                forwarded_http(&resolver, &forwards, cluster, ns)
            } else {
                resolver.rewrite(&names::scheduler_http(cluster, ns))
            }
        };
        let ctx = Context::new(self.operator_client.clone(), Arc::new(Metrics::default()))
            .with_scheduler_url(Arc::new(url))
            .with_cluster_tls(self.tls);
        let (tx, mut rx) = watch::channel(false);
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let task = tokio::spawn(controllers(Arc::new(ctx), self.scope.clone(), shutdown));
        self.operator = Some((tx, task));
    }

    /// Kills the operator at once, as a crash would.
    pub async fn kill_operator(&mut self) {
        if let Some((_, task)) = self.operator.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn pods(&self) -> Api<k8s_openapi::api::core::v1::Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn clusters(&self) -> Api<DaskCluster> {
        Api::namespaced(self.client.clone(), "default")
    }

    pub fn jobs(&self) -> Api<DaskJob> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// `tcp` or, with TLS, `tls`: the scheme of a rask cluster's addresses.
    pub fn scheme(&self) -> &'static str {
        if self.tls { "tls" } else { "tcp" }
    }

    /// `tls://IP:8786` (`tcp://` without TLS) of a cluster's scheduler pod: the Service address,
    /// rewritten as a pod in the cluster would reach it.
    pub fn scheduler_address(&self, cluster: &str) -> String {
        let address = self
            .kubelet
            .resolver()
            .rewrite(&names::scheduler_address(cluster, "default"));
        match address.strip_prefix("tcp://") {
            Some(rest) if self.tls => format!("tls://{rest}"),
            _ => address,
        }
    }

    /// A file of the cluster's Secret `{cluster}-tls`, as text.
    async fn secret_file(&self, cluster: &str, file: &str) -> Result<String, String> {
        let name = format!("{cluster}-tls");
        let secret = Api::<Secret>::namespaced(self.client.clone(), "default")
            .get(&name)
            .await
            .map_err(|e| format!("cannot read the Secret {name}: {e}"))?;
        let data = secret.data.unwrap_or_default();
        let bytes = data
            .get(file)
            .ok_or_else(|| format!("the Secret {name} has no {file}"))?;
        String::from_utf8(bytes.0.clone()).map_err(|e| format!("{name}'s {file}: {e}"))
    }

    /// The users' TLS identity for `cluster` (its Secret's `client.pem`), or `None` without TLS.
    pub async fn client_tls(&self, cluster: &str) -> Option<rask::core::tls::TlsConfig> {
        if !self.tls {
            return None;
        }
        let get = async |f: &str| {
            self.secret_file(cluster, f)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let files = rask::core::tls::TlsFiles {
            ca_file: "ca.pem".into(),
            cert: "client.pem".into(),
            key: "client-key.pem".into(),
        };
        let tls = rask::core::tls::TlsConfig::from_pem_named(
            &files,
            get("ca.pem").await.as_bytes(),
            get("client.pem").await.as_bytes(),
            get("client-key.pem").await.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{cluster}'s client certificate: {e}"));
        Some(tls)
    }

    /// A client of `cluster`'s scheduler, as a user in the cluster connects (over TLS with the
    /// users' certificate, unless TLS is off).
    pub async fn connect(&self, cluster: &str) -> rask::client::Client {
        let address = self.scheduler_address(cluster);
        rask::client::Client::connect_with(&address, self.client_tls(cluster).await)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {address}: {e}"))
    }

    /// The scheduler's HTTP API of `cluster` as the operator reaches it: its client (with TLS,
    /// the operator's certificate from the cluster's Secret) and base URL.
    pub async fn scheduler_api(&self, cluster: &str) -> Result<(SchedulerApi, String), String> {
        if !self.tls {
            let url = self
                .kubelet
                .resolver()
                .rewrite(&names::scheduler_http(cluster, "default"));
            return Ok((SchedulerApi::default(), url));
        }
        let api = SchedulerApi::with_tls(
            &self.secret_file(cluster, "ca.pem").await?,
            &self.secret_file(cluster, "operator.pem").await?,
            &self.secret_file(cluster, "operator-key.pem").await?,
            Duration::from_secs(10),
        )
        .map_err(|e| format!("{cluster}'s operator certificate: {e}"))?;
        let url = forwarded_http(&self.kubelet.resolver(), &self.forwards, cluster, "default");
        Ok((api, rask_operator::cluster::reach::https(&url)))
    }

    /// Polls `f` until it holds; after `timeout`, panics with `what` and every pod's output.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl AsyncFnMut() -> bool,
    ) {
        let start = std::time::Instant::now();
        loop {
            if f().await {
                return;
            }
            if start.elapsed() >= timeout {
                panic!(
                    "timed out after {timeout:?} waiting until {what}\n{}",
                    self.kubelet.all_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn shutdown(mut self) {
        if let Some((tx, task)) = self.operator.take() {
            let _ = tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        // Dropping the kubelet kills every process it started.
        self.kubelet.stop();
    }
}

/// `http://127.0.0.1:PORT` of a port-forward to `cluster`'s scheduler Service's HTTP port, made
/// on first use (and an unusable URL, naming the error, if the forward cannot listen).
fn forwarded_http(
    resolver: &kube_double::Resolver,
    forwards: &Mutex<HashMap<(String, String), PortForward>>,
    cluster: &str,
    namespace: &str,
) -> String {
    let mut forwards = forwards.lock().unwrap_or_else(|e| e.into_inner());
    let key = (namespace.to_owned(), cluster.to_owned());
    if !forwards.contains_key(&key) {
        let service = names::scheduler_name(cluster);
        match resolver.port_forward(namespace, &service, names::DASHBOARD_PORT) {
            Ok(f) => {
                forwards.insert(key.clone(), f);
            }
            Err(e) => return format!("http://port-forward-to-{service}-failed:{e}"),
        }
    }
    format!("http://{}", forwards[&key].local_addr())
}

/// A manifest from `examples/`, typed.
pub fn example<K: serde::de::DeserializeOwned>(file: &str) -> Result<K, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(file);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_on_unless_the_variable_turns_it_off() {
        assert_eq!(parse_tls(None), Ok(true));
        assert_eq!(parse_tls(Some("")), Ok(true));
        for on in ["1", "true", "YES", " on "] {
            assert_eq!(parse_tls(Some(on)), Ok(true), "{on}");
        }
        for off in ["0", "false", "No", "off"] {
            assert_eq!(parse_tls(Some(off)), Ok(false), "{off}");
        }
        let err = parse_tls(Some("maybe")).unwrap_err();
        assert!(err.contains("RASK_E2E_TLS=\"maybe\""), "{err}");
    }

    fn bound(args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        bind_rask_args(&mut argv, "127.9.0.1");
        argv
    }

    fn dask(args: &[&str]) -> Vec<String> {
        let mut argv: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        bind_dask_args(&mut argv, "127.9.0.1");
        argv
    }

    #[test]
    fn dasks_commands_listen_on_the_pod_ip() {
        assert_eq!(
            dask(&["/venv/bin/dask", "scheduler", "--host", "0.0.0.0"]),
            [
                "/venv/bin/dask",
                "scheduler",
                "--host",
                "127.9.0.1",
                "--dashboard-address",
                "127.9.0.1:8787"
            ]
        );
        assert_eq!(
            dask(&[
                "/venv/bin/dask",
                "worker",
                "--name",
                "w",
                "--dashboard",
                "--dashboard-address",
                "8788"
            ]),
            [
                "/venv/bin/dask",
                "worker",
                "--name",
                "w",
                "--dashboard",
                "--dashboard-address",
                "127.9.0.1:8788",
                "--host",
                "127.9.0.1"
            ]
        );
        assert_eq!(
            dask(&["/venv/bin/python", "-c", "x"]),
            ["/venv/bin/python", "-c", "x"]
        );
    }

    #[test]
    fn schedulers_and_workers_listen_on_the_pod_ip() {
        assert_eq!(
            bound(&[
                "rask",
                "scheduler",
                "--port",
                "8786",
                "--dashboard-address",
                ":8787"
            ]),
            [
                "rask",
                "scheduler",
                "--port",
                "8786",
                "--dashboard-address",
                "127.9.0.1:8787",
                "--host",
                "127.9.0.1"
            ]
        );
        assert_eq!(
            bound(&[
                "rask",
                "scheduler",
                "--host=0.0.0.0",
                "--dashboard-address=none"
            ]),
            [
                "rask",
                "scheduler",
                "--host=127.9.0.1",
                "--dashboard-address=none"
            ]
        );
        assert_eq!(
            bound(&["rask", "scheduler"]),
            [
                "rask",
                "scheduler",
                "--host",
                "127.9.0.1",
                "--dashboard-address",
                "127.9.0.1:8787"
            ]
        );
        assert_eq!(
            bound(&["rask", "worker", "--nthreads", "1"]),
            [
                "rask",
                "worker",
                "--nthreads",
                "1",
                "--listen-host",
                "127.9.0.1"
            ]
        );
        assert_eq!(
            bound(&["rask", "run", "delayed"]),
            ["rask", "run", "delayed"]
        );
    }
}
