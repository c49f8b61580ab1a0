//! The operator's permissions as charts/rask-operator grants them, for an API server that
//! enforces RBAC: `helm template` renders the chart in one of its two modes, and its
//! ServiceAccount, Roles, ClusterRoles and bindings are created as `helm install` would.
//!
//! Helm: `RASK_HELM` (scripts/test sets it), else the one scripts/test installs under `.tools/`.
//! `RASK_CHART_SCOPE` (`cluster`, the default, or `namespace`) picks the mode.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use rask_operator::run::Scope;
use serde_json::Value;

/// The chart's two RBAC modes (`rbac.scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartScope {
    /// A ClusterRole and ClusterRoleBinding; the operator watches every namespace.
    Cluster,
    /// A Role and RoleBinding in the release namespace, which the operator alone watches.
    Namespace,
}

impl ChartScope {
    /// The mode `RASK_CHART_SCOPE` asks for (cluster when unset).
    pub fn from_env() -> Result<ChartScope, String> {
        match std::env::var("RASK_CHART_SCOPE").as_deref() {
            Err(_) | Ok("" | "cluster") => Ok(ChartScope::Cluster),
            Ok("namespace") => Ok(ChartScope::Namespace),
            Ok(other) => Err(format!(
                "RASK_CHART_SCOPE is {other:?}: cluster or namespace"
            )),
        }
    }

    /// The release namespace: `default` (where the scenarios' clusters are) for a namespaced
    /// operator, which sees no other; a namespace of its own for a cluster-wide one.
    pub fn release_namespace(self) -> &'static str {
        match self {
            ChartScope::Cluster => "rask-system",
            ChartScope::Namespace => "default",
        }
    }
}

/// What the chart renders that matters to the API server and the operator.
#[derive(Clone, Debug)]
pub struct Rendered {
    /// The ServiceAccount and the RBAC objects, as rendered.
    pub objects: Vec<Value>,
    /// The operator's ServiceAccount: its namespace and name.
    pub namespace: String,
    pub account: String,
    /// The scope the operator's `--namespace` argument gives it.
    pub scope: Scope,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Helm binary: `RASK_HELM`, or the one scripts/test keeps under `.tools/`.
pub fn helm() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("RASK_HELM") {
        return Ok(p.into());
    }
    let tools = repo().join(".tools");
    std::fs::read_dir(&tools)
        .ok()
        .and_then(|dir| {
            dir.flatten()
                .map(|e| e.path().join("helm/helm"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            format!(
                "RASK_HELM is not set and there is no {}/*/helm/helm: the operator runs with the \
                 chart's RBAC, rendered by Helm (scripts/test installs it and sets the variable)",
                tools.display()
            )
        })
}

/// `helm template` of charts/rask-operator in `scope`'s mode.
pub fn render(scope: ChartScope) -> Result<Rendered, String> {
    let helm = helm()?;
    let namespace = scope.release_namespace();
    let mode = match scope {
        ChartScope::Cluster => "rbac.scope=cluster",
        ChartScope::Namespace => "rbac.scope=namespace",
    };
    let out = std::process::Command::new(&helm)
        .args(["template", "rask"])
        .arg(repo().join("charts/rask-operator"))
        .args(["--namespace", namespace, "--set", mode])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", helm.display()))?;
    if !out.status.success() {
        return Err(format!(
            "helm template failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let docs = parse_yaml(&text)?;
    let kind = |v: &Value| v["kind"].as_str().unwrap_or_default().to_owned();
    let objects: Vec<Value> = docs
        .iter()
        .filter(|d| is_rbac(&kind(d)) || kind(d) == "ServiceAccount")
        .cloned()
        .collect();
    let pod = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .map(|d| &d["spec"]["template"]["spec"])
        .ok_or("the chart renders no Deployment")?;
    let account = pod["serviceAccountName"]
        .as_str()
        .ok_or("the operator pod names no ServiceAccount")?
        .to_owned();
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let scope = match args.iter().position(|a| *a == "--namespace") {
        Some(i) => Scope::Namespace(
            args.get(i + 1)
                .ok_or("--namespace without a value")?
                .to_string(),
        ),
        None => Scope::AllNamespaces,
    };
    Ok(Rendered {
        objects,
        namespace: namespace.to_owned(),
        account,
        scope,
    })
}

fn is_rbac(kind: &str) -> bool {
    matches!(
        kind,
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
    )
}

/// The documents of a YAML stream, empty ones left out.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = <Value as serde::Deserialize>::deserialize(doc).map_err(|e| e.to_string())?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn typed<K: serde::de::DeserializeOwned>(obj: &Value, kind: &str, name: &str) -> Result<K, String> {
    serde_json::from_value(obj.clone()).map_err(|e| format!("{kind} {name}: {e}"))
}

/// Creates the ServiceAccounts and RBAC objects among `objects` through `admin`, as `helm
/// install` would (other kinds are left out); returns how many it created.
pub async fn create(admin: &kube::Client, objects: &[Value]) -> Result<usize, String> {
    let pp = PostParams::default();
    let mut created = 0;
    for obj in objects {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
        let result = match kind {
            "ServiceAccount" => Api::<ServiceAccount>::namespaced(admin.clone(), ns)
                .create(&pp, &typed(obj, kind, name)?)
                .await
                .map(drop),
            "Role" => Api::<Role>::namespaced(admin.clone(), ns)
                .create(&pp, &typed(obj, kind, name)?)
                .await
                .map(drop),
            "RoleBinding" => Api::<RoleBinding>::namespaced(admin.clone(), ns)
                .create(&pp, &typed(obj, kind, name)?)
                .await
                .map(drop),
            "ClusterRole" => Api::<ClusterRole>::all(admin.clone())
                .create(&pp, &typed(obj, kind, name)?)
                .await
                .map(drop),
            "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(admin.clone())
                .create(&pp, &typed(obj, kind, name)?)
                .await
                .map(drop),
            _ => continue,
        };
        result.map_err(|e| format!("cannot create {kind} {name}: {e}"))?;
        created += 1;
    }
    Ok(created)
}
