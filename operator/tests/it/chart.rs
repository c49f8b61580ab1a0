//! The operator's permissions as the Helm chart grants them: `helm template` renders
//! charts/rask-operator in one of its two RBAC modes, and the Roles, ClusterRoles, bindings and
//! the ServiceAccount it renders are created in kube-double, which then authorises every request
//! of the operator against them (RBAC enforced). The operator runs with the ServiceAccount's
//! identity and the scope the rendered Deployment gives it (`--namespace`), so a verb the
//! operator needs and the chart lacks fails the suites.
//!
//! Helm: `RASK_HELM` (scripts/test sets it), else the one scripts/test installs under `.tools/`.
//! `RASK_CHART_SCOPE` (`cluster`, the default, or `namespace`) picks the mode of [`Env::new`];
//! scripts/test runs the suite in both.
//!
//! [`Env::new`]: crate::env::Env::new

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
    pub fn from_env() -> ChartScope {
        match std::env::var("RASK_CHART_SCOPE").as_deref() {
            Err(_) | Ok("" | "cluster") => ChartScope::Cluster,
            Ok("namespace") => ChartScope::Namespace,
            Ok(other) => panic!("RASK_CHART_SCOPE is {other:?}: cluster or namespace"),
        }
    }

    /// The release namespace: where the tests' clusters live for a namespaced operator (it sees
    /// no other), a namespace of its own for a cluster-wide one.
    pub fn release_namespace(self) -> &'static str {
        match self {
            ChartScope::Cluster => "rask-system",
            ChartScope::Namespace => "default",
        }
    }
}

/// What the chart renders that matters to the API server: the RBAC objects, the ServiceAccount
/// the operator pod runs as, and the scope its arguments give it.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub rbac: Vec<Value>,
    pub service_account: Value,
    pub namespace: String,
    pub account: String,
    pub scope: Scope,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Helm binary: `RASK_HELM`, or the one scripts/test keeps under `.tools/`.
fn helm() -> PathBuf {
    if let Ok(p) = std::env::var("RASK_HELM") {
        return p.into();
    }
    let tools = repo().join(".tools");
    let found = std::fs::read_dir(&tools).ok().and_then(|dir| {
        dir.flatten()
            .map(|e| e.path().join("helm/helm"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "RASK_HELM is not set and there is no {}/*/helm/helm: the operator's tests render the \
             chart's RBAC with Helm (scripts/test installs it and sets the variable)",
            tools.display()
        )
    })
}

/// `helm template` of charts/rask-operator in `scope`'s mode, with `extra` `--set` values.
pub fn render(scope: ChartScope, extra: &[&str]) -> Rendered {
    let namespace = scope.release_namespace();
    let mut cmd = std::process::Command::new(helm());
    cmd.args(["template", "rask"])
        .arg(repo().join("charts/rask-operator"))
        .args(["--namespace", namespace]);
    if scope == ChartScope::Namespace {
        cmd.args(["--set", "rbac.scope=namespace"]);
    }
    for value in extra {
        cmd.args(["--set", value]);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run helm ({}): {e}", helm().display()));
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm writes UTF-8");
    let mut docs: Vec<Value> = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("helm writes YAML");
        if !v.is_null() {
            docs.push(v);
        }
    }
    let kind = |v: &Value| v["kind"].as_str().unwrap_or_default().to_owned();
    let rbac: Vec<Value> = docs
        .iter()
        .filter(|d| {
            matches!(
                kind(d).as_str(),
                "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
            )
        })
        .cloned()
        .collect();
    let service_account = docs
        .iter()
        .find(|d| kind(d) == "ServiceAccount")
        .cloned()
        .expect("the chart renders a ServiceAccount");
    let deployment = docs
        .iter()
        .find(|d| kind(d) == "Deployment")
        .expect("the chart renders a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("the operator pod names its ServiceAccount")
        .to_owned();
    let args: Vec<&str> = pod["containers"][0]["args"]
        .as_array()
        .expect("the operator container has arguments")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let scope = match args.iter().position(|a| *a == "--namespace") {
        Some(i) => Scope::Namespace(args[i + 1].to_owned()),
        None => Scope::AllNamespaces,
    };
    Rendered {
        rbac,
        service_account,
        namespace: namespace.to_owned(),
        account,
        scope,
    }
}

impl Rendered {
    /// Takes `verb` away from every rule of the rendered Roles and ClusterRoles that grants it on
    /// `resource` (`services`, `daskclusters/status`): the chart with one permission missing.
    pub fn without(mut self, resource: &str, verb: &str) -> Rendered {
        let mut removed = false;
        for obj in &mut self.rbac {
            let Some(rules) = obj.get_mut("rules").and_then(Value::as_array_mut) else {
                continue;
            };
            let mut split = Vec::new();
            for rule in rules.iter_mut() {
                let has = |key: &str, want: &str| {
                    rule[key]
                        .as_array()
                        .is_some_and(|l| l.iter().any(|x| x == want))
                };
                if !(has("resources", resource) && has("verbs", verb)) {
                    continue;
                }
                // The other resources of the rule keep the verb, in a rule of their own.
                let mut others = rule.clone();
                others["resources"]
                    .as_array_mut()
                    .expect("resources")
                    .retain(|r| r != resource);
                if !others["resources"]
                    .as_array()
                    .expect("resources")
                    .is_empty()
                {
                    split.push(others);
                }
                rule["resources"] = serde_json::json!([resource]);
                rule["verbs"]
                    .as_array_mut()
                    .expect("verbs")
                    .retain(|v| v != verb);
                removed = true;
            }
            rules.extend(split);
        }
        assert!(removed, "the chart grants no {verb} on {resource}");
        self
    }

    /// Creates the ServiceAccount and the RBAC objects through `admin`, as `helm install` would.
    pub async fn install(&self, admin: &kube::Client) {
        let pp = PostParams::default();
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &self.namespace);
        sas.create(&pp, &typed(&self.service_account))
            .await
            .expect("create the ServiceAccount");
        for obj in &self.rbac {
            let what = format!("create {} {}", obj["kind"], obj["metadata"]["name"]);
            match obj["kind"].as_str() {
                Some("ClusterRole") => {
                    Api::<ClusterRole>::all(admin.clone())
                        .create(&pp, &typed(obj))
                        .await
                        .expect(&what);
                }
                Some("ClusterRoleBinding") => {
                    Api::<ClusterRoleBinding>::all(admin.clone())
                        .create(&pp, &typed(obj))
                        .await
                        .expect(&what);
                }
                Some("Role") => {
                    Api::<Role>::namespaced(admin.clone(), &self.namespace)
                        .create(&pp, &typed(obj))
                        .await
                        .expect(&what);
                }
                Some("RoleBinding") => {
                    Api::<RoleBinding>::namespaced(admin.clone(), &self.namespace)
                        .create(&pp, &typed(obj))
                        .await
                        .expect(&what);
                }
                other => panic!("not an RBAC kind: {other:?}"),
            }
        }
    }
}

fn typed<K: serde::de::DeserializeOwned>(v: &Value) -> K {
    serde_json::from_value(v.clone()).expect("the chart renders valid objects")
}
