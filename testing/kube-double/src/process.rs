//! Pods that really run (opt-in, [`ProcessConfig`]): the containers of pods whose image matches
//! start as local processes of one binary that stands for the image's entrypoint.
//!
//! There are no network namespaces without privileges, so the pod network is simulated on
//! loopback: each pod gets its own address in 127.0.0.0/8 as `status.podIP`; a hook given in the
//! config rewrites the container's arguments so it listens there (what binding `0.0.0.0` inside
//! the pod would mean); and, there being no DNS, a Service's name
//! (`{svc}.{ns}.svc.cluster.local[:port]`) in the container's environment or arguments is
//! rewritten to the IP (and target port) of a pod the Service selects, as kube-proxy would route
//! it. Kubernetes' `$(VAR)` references in `command`, `args` and `env` values are expanded first.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Probe, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

/// Rewrites a container's arguments (the binary's name first) so it listens on `ip`.
pub type BindArgs = Arc<dyn Fn(&mut Vec<String>, &str) + Send + Sync>;

/// Which pods run as processes, and how.
#[derive(Clone)]
pub struct ProcessConfig {
    /// Pods whose every container's `image` contains this run as processes.
    pub image: String,
    /// The local binary that stands for the image's entrypoint.
    pub binary: PathBuf,
    /// The entrypoint's path inside the image: it runs when a container sets no `command`, and a
    /// `command` naming it (or its file name) runs `binary`; any other command does not exist in
    /// the image and fails to start (exit code 128, reason `StartError`), as on a real node.
    pub entrypoint: String,
    /// The pod-network hook: makes the arguments listen on the pod's IP.
    pub bind: BindArgs,
    /// Variables every process gets besides the pod's own (e.g. `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// How long a container waits for the Services its environment and arguments name to have a
    /// pod with an IP before it starts anyway (and fails to resolve them itself).
    pub resolve_timeout: Duration,
    /// Bytes of output kept per container (the newest).
    pub log_limit: usize,
    /// Set for images whose entrypoint runs its arguments as a command (Dask's image: `tini`,
    /// then `prepare.sh`, then `exec "$@"`): `command` + `args` run, their first word found in
    /// this directory (a virtualenv's `bin/`, which also leads the processes' `PATH`). `binary`
    /// and `entrypoint` are then unused.
    pub exec_dir: Option<PathBuf>,
    /// Commands the image has under other names (Dask's `dask-scheduler` for `dask scheduler`).
    pub aliases: Vec<(String, Vec<String>)>,
}

impl std::fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessConfig")
            .field("image", &self.image)
            .field("binary", &self.binary)
            .field("entrypoint", &self.entrypoint)
            .field("env", &self.env)
            .field("resolve_timeout", &self.resolve_timeout)
            .field("log_limit", &self.log_limit)
            .finish_non_exhaustive()
    }
}

impl ProcessConfig {
    /// Pods with `image` run `binary` as the entrypoint `entrypoint`; arguments are left as
    /// written until [`bind_args`](ProcessConfig::bind_args) says how to listen on the pod's IP.
    pub fn new(image: &str, binary: impl Into<PathBuf>, entrypoint: &str) -> ProcessConfig {
        ProcessConfig {
            image: image.into(),
            binary: binary.into(),
            entrypoint: entrypoint.into(),
            bind: Arc::new(|_, _| {}),
            env: Vec::new(),
            resolve_timeout: Duration::from_secs(30),
            log_limit: 1 << 20,
            exec_dir: None,
            aliases: Vec::new(),
        }
    }

    /// Pods with `image` run their `command` and `args` as a command of `dir` (see
    /// [`ProcessConfig::exec_dir`]).
    pub fn exec(image: &str, dir: impl Into<PathBuf>) -> ProcessConfig {
        let dir = dir.into();
        ProcessConfig {
            exec_dir: Some(dir.clone()),
            ..ProcessConfig::new(image, dir, "")
        }
    }

    /// `name` as the first word of a command runs `to` instead (`to[0]` a path, for an image
    /// without [`ProcessConfig::exec_dir`]).
    pub fn alias(mut self, name: &str, to: &[&str]) -> Self {
        self.aliases
            .push((name.into(), to.iter().map(|t| (*t).to_owned()).collect()));
        self
    }

    pub fn bind_args(mut self, f: impl Fn(&mut Vec<String>, &str) + Send + Sync + 'static) -> Self {
        self.bind = Arc::new(f);
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    pub(crate) fn runs(&self, pod: &Pod) -> bool {
        pod.spec.as_ref().is_some_and(|s| {
            !s.containers.is_empty()
                && s.containers
                    .iter()
                    .all(|c| c.image.as_deref().is_some_and(|i| i.contains(&self.image)))
        })
    }

    /// The program (its path first) and arguments of `c`, or why it cannot start.
    pub(crate) fn program(&self, c: &Container) -> Result<Vec<String>, String> {
        let missing = |name: &str| {
            format!(
                "failed to create containerd task: exec: \"{name}\": executable file not found in $PATH"
            )
        };
        if let Some(dir) = &self.exec_dir {
            let mut argv = c.command.clone().unwrap_or_default();
            argv.extend(c.args.clone().unwrap_or_default());
            let Some(first) = argv.first().cloned() else {
                return Err("no command: the container sets neither command nor args".into());
            };
            if let Some((_, to)) = self.aliases.iter().find(|(from, _)| *from == first) {
                argv.splice(0..1, to.iter().cloned());
            }
            let name = std::path::Path::new(&argv[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let exe = dir.join(&name);
            if name.is_empty() || !exe.is_file() {
                return Err(missing(&first));
            }
            argv[0] = exe.display().to_string();
            return Ok(argv);
        }
        let mut argv = match &c.command {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            _ => vec![self.entrypoint.clone()],
        };
        // Another program of the image (the worker image's `python3`), when the config names it.
        if let Some((_, to)) = self.aliases.iter().find(|(from, _)| *from == argv[0]) {
            argv.splice(0..1, to.iter().cloned());
            argv.extend(c.args.clone().unwrap_or_default());
            return Ok(argv);
        }
        let file_name = self.entrypoint.rsplit('/').next().unwrap_or_default();
        if argv[0] != self.entrypoint && argv[0] != file_name {
            return Err(missing(&argv[0]));
        }
        argv[0] = self.binary.display().to_string();
        argv.extend(c.args.clone().unwrap_or_default());
        Ok(argv)
    }
}

/// A container's program and environment, or why it cannot start.
pub(crate) type Prepared = Result<(Vec<String>, Vec<(String, String)>), String>;

/// Each container's program and environment, `$(VAR)` references expanded.
pub(crate) fn prepare(config: &ProcessConfig, pod: &Pod, ip: &str) -> Vec<Prepared> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            let env = environment(config, pod, c, ip)?;
            let argv = config.program(c)?;
            let argv = argv.iter().map(|a| expand(a, &env)).collect();
            Ok((argv, env))
        })
        .collect()
}

/// The TCP ports a pod's containers declare.
pub(crate) fn tcp_ports(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<i32> {
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
        .map(|p| p.container_port)
        .collect()
}

/// Starts `argv` (its first word the program's path), bound to the pod's `ip`, with
/// only `env` for environment and its output piped; the process dies with its handle.
pub(crate) fn spawn(
    config: &ProcessConfig,
    mut argv: Vec<String>,
    env: Vec<(String, String)>,
    ip: &str,
) -> Result<tokio::process::Child, String> {
    (config.bind)(&mut argv, ip);
    let program = argv.first().cloned().unwrap_or_default();
    tokio::process::Command::new(&program)
        .args(argv.iter().skip(1))
        .env_clear()
        .envs(env)
        .current_dir(std::env::temp_dir())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("failed to start {program}: {e}"))
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`, and
/// references to undefined variables stay as written.
pub(crate) fn expand(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment as the process gets it, in order (later entries win).
pub(crate) fn environment(
    config: &ProcessConfig,
    pod: &Pod,
    c: &Container,
    ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut vars: Vec<(String, String)> = vec![("HOSTNAME".into(), pod.name_any())];
    if let Some(dir) = &config.exec_dir {
        vars.push((
            "PATH".into(),
            format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display()),
        ));
    }
    vars.extend(config.env.iter().cloned());
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (_, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.name_any(),
                Some("metadata.namespace") => pod.namespace().unwrap_or_default(),
                Some("metadata.uid") => pod.uid().unwrap_or_default(),
                Some("status.podIP" | "status.hostIP") => ip.to_owned(),
                Some("spec.nodeName") => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                _ => {
                    return Err(format!(
                        "env {}: only valueFrom.fieldRef of metadata.name, metadata.namespace, metadata.uid, status.podIP and spec.nodeName is simulated",
                        e.name
                    ));
                }
            },
            (Some(v), None) => expand(v, &vars),
            (None, None) => String::new(),
        };
        vars.push((e.name.clone(), value));
    }
    Ok(vars)
}

/// The pods and Services the pod network knows, from the kubelet's watches.
#[derive(Default)]
pub(crate) struct Network {
    pods: HashMap<(String, String), PodNet>,
    services: HashMap<(String, String), SvcNet>,
}

pub(crate) struct PodNet {
    labels: BTreeMap<String, String>,
    ip: Option<String>,
    running: bool,
    ready: bool,
    deleting: bool,
    ports: Vec<(Option<String>, i32)>,
}

struct SvcNet {
    selector: BTreeMap<String, String>,
    ports: Vec<(i32, Option<IntOrString>)>,
}

fn key<K: ResourceExt>(o: &K) -> (String, String) {
    (o.namespace().unwrap_or_default(), o.name_any())
}

impl PodNet {
    fn of(pod: &Pod) -> PodNet {
        let status = pod.status.as_ref();
        PodNet {
            labels: pod.labels().clone(),
            ip: status.and_then(|s| s.pod_ip.clone()),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            ready: status
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            ports: pod
                .spec
                .iter()
                .flat_map(|s| &s.containers)
                .flat_map(|c| c.ports.iter().flatten())
                .map(|p| (p.name.clone(), p.container_port))
                .collect(),
        }
    }

    /// A pod about to start on `ip`: a Service that selects it reaches it (as its ClusterIP
    /// would route there once it listens), which is how a pod resolves its own Service.
    pub(crate) fn starting(pod: &Pod, ip: &str) -> PodNet {
        PodNet {
            ip: Some(ip.to_owned()),
            running: true,
            ..PodNet::of(pod)
        }
    }
}

impl Network {
    pub(crate) fn pod_changed(&mut self, pod: &Pod) {
        self.pods.insert(key(pod), PodNet::of(pod));
    }

    pub(crate) fn pod_deleted(&mut self, pod: &Pod) {
        self.pods.remove(&key(pod));
    }

    pub(crate) fn service_changed(&mut self, svc: &Service) {
        let spec = svc.spec.clone().unwrap_or_default();
        let net = SvcNet {
            selector: spec.selector.unwrap_or_default(),
            ports: spec
                .ports
                .into_iter()
                .flatten()
                .map(|p| (p.port, p.target_port))
                .collect(),
        };
        self.services.insert(key(svc), net);
    }

    pub(crate) fn service_deleted(&mut self, svc: &Service) {
        self.services.remove(&key(svc));
    }

    /// The pod behind Service `ns/name` (ready ones first), and the port `port` reaches on it.
    fn endpoint(
        &self,
        ns: &str,
        name: &str,
        port: Option<i32>,
        me: Option<(&(String, String), &PodNet)>,
    ) -> Option<(String, Option<i32>)> {
        let svc = self.services.get(&(ns.to_owned(), name.to_owned()))?;
        if svc.selector.is_empty() {
            return None;
        }
        let mut candidates: Vec<(&(String, String), &PodNet)> = self
            .pods
            .iter()
            .filter(|((pns, _), p)| {
                pns == ns
                    && p.ip.is_some()
                    && p.running
                    && !p.deleting
                    && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .collect();
        if candidates.is_empty()
            && let Some((k, p)) = me
            && k.0 == ns
            && svc.selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
        {
            candidates.push((k, p));
        }
        candidates.sort_by_key(|(k, p)| (!p.ready, (*k).clone()));
        let (_, pod) = candidates.first()?;
        let target =
            port.map(
                |port| match svc.ports.iter().find(|(p, _)| *p == port).map(|(_, t)| t) {
                    Some(Some(IntOrString::Int(n))) => *n,
                    Some(Some(IntOrString::String(name))) => pod
                        .ports
                        .iter()
                        .find(|(n, _)| n.as_deref() == Some(name.as_str()))
                        .map(|(_, p)| *p)
                        .unwrap_or(port),
                    _ => port,
                },
            );
        Some((pod.ip.clone()?, target))
    }
}

/// Rewrites Service DNS names to the address of a pod behind the Service, from the kubelet's view
/// of the cluster. Cheap to clone; shared with the kubelet that made it.
#[derive(Clone)]
pub struct Resolver {
    pub(crate) net: Arc<Mutex<Network>>,
}

fn service_names() -> &'static regex::Regex {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.([a-z0-9](?:[-a-z0-9]*[a-z0-9])?)\.svc(?:\.cluster\.local)?(?::([0-9]{1,5}))?\b",
        )
        .unwrap_or_else(|e| unreachable!("a fixed pattern compiles: {e}"))
    })
}

impl Resolver {
    /// `text` with every Service name that has an endpoint replaced by `ip[:port]`; names without
    /// one are left as written.
    pub fn rewrite(&self, text: &str) -> String {
        match self.try_rewrite(text, None) {
            Ok(t) => t,
            Err((partial, _)) => partial,
        }
    }

    /// Like [`rewrite`](Resolver::rewrite), but says which name had no endpoint.
    /// `me` is the pod being started, which its own Service may name.
    pub(crate) fn try_rewrite(
        &self,
        text: &str,
        me: Option<(&(String, String), &PodNet)>,
    ) -> Result<String, (String, String)> {
        let net = self.net.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = None;
        let out = service_names().replace_all(text, |m: &regex::Captures<'_>| {
            let port = m.get(3).and_then(|p| p.as_str().parse::<i32>().ok());
            match net.endpoint(&m[2], &m[1], port, me) {
                Some((ip, Some(port))) => format!("{ip}:{port}"),
                Some((ip, None)) => ip,
                None => {
                    missing.get_or_insert_with(|| m[0].to_owned());
                    m[0].to_owned()
                }
            }
        });
        match missing {
            None => Ok(out.into_owned()),
            Some(name) => Err((out.into_owned(), name)),
        }
    }
}

impl Resolver {
    /// `kubectl port-forward service/{service} :{port}`: listens on `127.0.0.1` (an unused
    /// port) and pipes each connection to the Service's `port` on a pod it selects, looked up
    /// per connection (a replaced pod is followed). A connection while the Service has no pod is
    /// closed. Call inside a Tokio runtime; the forward stops when the [`PortForward`] is dropped.
    pub fn port_forward(
        &self,
        namespace: &str,
        service: &str,
        port: u16,
    ) -> std::io::Result<PortForward> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let resolver = self.clone();
        let target = format!("{service}.{namespace}.svc.cluster.local:{port}");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(to) = resolver.try_rewrite(&target, None) else {
                    continue;
                };
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(to.as_str()).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(PortForward { local, task })
    }
}

/// A port-forward from loopback to a Service ([`Resolver::port_forward`]); stops when dropped.
pub struct PortForward {
    local: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl PortForward {
    /// Where the forward listens (`127.0.0.1:port`).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Loopback addresses for pods: a random /16-ish block of 127.0.0.0/8 per kubelet (so kubelets
/// in concurrent test processes rarely meet), skipping addresses whose declared ports are taken.
pub(crate) struct Addresses {
    second: u8,
    third: u8,
    next: u32,
}

impl Addresses {
    pub(crate) fn new() -> Addresses {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let seed = h.finish();
        Addresses {
            second: 1 + (seed % 254) as u8,
            third: (seed >> 8) as u8,
            next: 0,
        }
    }

    /// The next address on which every one of `ports` can be bound.
    pub(crate) fn allocate(&mut self, ports: &[i32]) -> Ipv4Addr {
        loop {
            let n = self.next;
            self.next = self.next.wrapping_add(1);
            let third = self.third.wrapping_add((n / 254) as u8);
            let ip = Ipv4Addr::new(127, self.second, third, (n % 254 + 1) as u8);
            let free = ports.iter().all(|p| {
                u16::try_from(*p).is_ok_and(|p| std::net::TcpListener::bind((ip, p)).is_ok())
            });
            if free {
                return ip;
            }
        }
    }
}

/// A readiness check by `probe` against the pod's IP: `httpGet` (2xx/3xx) and `tcpSocket`
/// (a connection) are made; an `exec` probe is not simulated and passes.
pub(crate) async fn probe(probe: &Probe, c: &Container, ip: &str) -> bool {
    let port_of = |p: &IntOrString| match p {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port),
    };
    let timeout = Duration::from_secs(
        probe
            .timeout_seconds
            .unwrap_or(1)
            .max(1)
            .unsigned_abs()
            .into(),
    );
    if let Some(get) = &probe.http_get {
        let Some(port) = port_of(&get.port) else {
            return false;
        };
        let host = get.host.clone().unwrap_or_else(|| ip.to_owned());
        let path = get.path.clone().unwrap_or_else(|| "/".into());
        let https = get
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
        return tokio::time::timeout(timeout, http_get(&host, port, &path, https))
            .await
            .unwrap_or(false);
    }
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port_of(&tcp.port).and_then(|p| u16::try_from(p).ok()) else {
            return false;
        };
        let host = tcp.host.clone().unwrap_or_else(|| ip.to_owned());
        return tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    }
    true
}

/// A `GET` as the kubelet's probe sends it: over TLS for `https`, without checking the server's
/// certificate (as the kubelet does not); 2xx and 3xx pass.
async fn http_get(host: &str, port: i32, path: &str, https: bool) -> bool {
    let Ok(port) = u16::try_from(port) else {
        return false;
    };
    let Ok(tcp) = tokio::net::TcpStream::connect((host, port)).await else {
        return false;
    };
    if !https {
        return http_exchange(tcp, host, port, path).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_owned()).unwrap_or(
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127u8, 0, 0, 1]).into()),
    );
    let Some(connector) = probe_tls() else {
        return false;
    };
    match connector.connect(name, tcp).await {
        Ok(tls) => http_exchange(tls, host, port, path).await,
        Err(_) => false,
    }
}

/// The TLS side of HTTPS probes: any certificate is accepted (the kubelet's probes skip
/// verification), signatures are still checked so the handshake is real TLS.
fn probe_tls() -> Option<tokio_rustls::TlsConnector> {
    static CONNECTOR: std::sync::OnceLock<Option<tokio_rustls::TlsConnector>> =
        std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

async fn http_exchange(
    mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    host: &str,
    port: u16,
    path: &str,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.35\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut head[got..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    // "HTTP/1.1 200 ..."
    let code = std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_references_expand_as_kubernetes_does() {
        let vars = vec![
            ("A".to_owned(), "x".to_owned()),
            ("B".to_owned(), "y".to_owned()),
        ];
        assert_eq!(expand("$(A)-$(B)", &vars), "x-y");
        assert_eq!(expand("$(MISSING)", &vars), "$(MISSING)");
        assert_eq!(expand("$$(A) costs $5", &vars), "$(A) costs $5");
        assert_eq!(expand("$(A", &vars), "$(A");
    }

    fn container(command: Option<&[&str]>, args: &[&str]) -> Container {
        Container {
            name: "c".into(),
            command: command.map(|c| c.iter().map(|s| (*s).to_owned()).collect()),
            args: Some(args.iter().map(|s| (*s).to_owned()).collect()),
            ..Container::default()
        }
    }

    #[test]
    fn an_alias_runs_another_program_of_an_entrypoint_image() {
        let config = ProcessConfig::new("img", "/bin/rask", "/usr/local/bin/rask")
            .alias("python3", &["/venv/bin/python"]);
        assert_eq!(
            config.program(&container(Some(&["python3", "-c"]), &["print(1)"])),
            Ok(vec![
                "/venv/bin/python".into(),
                "-c".into(),
                "print(1)".into()
            ])
        );
        // The entrypoint still runs as the binary; other commands are still missing.
        assert_eq!(
            config.program(&container(None, &["worker"])),
            Ok(vec!["/bin/rask".into(), "worker".into()])
        );
        let err = config
            .program(&container(Some(&["python"]), &[]))
            .unwrap_err();
        assert!(
            err.contains("\"python\": executable file not found"),
            "{err}"
        );
    }
}
