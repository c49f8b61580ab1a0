//! The resource types the server serves: built-in ones (core/v1 Pod, Service, ConfigMap, Secret,
//! Namespace, Event, ServiceAccount; events.k8s.io/v1 Event; coordination.k8s.io/v1 Lease;
//! rbac.authorization.k8s.io/v1 Role, ClusterRole, RoleBinding, ClusterRoleBinding;
//! apiextensions.k8s.io/v1 CustomResourceDefinition) and
//! those defined by installed CRDs.

use crate::error::Error;
use crate::meta::NameRule;
use crate::schema::Schema;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::sync::{Arc, LazyLock};

/// A built-in type: decoded into its k8s-openapi struct on every write, which prunes unknown
/// fields and rejects wrongly typed ones, as the Go API server's decoding does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Pod,
    Service,
    ConfigMap,
    Secret,
    Namespace,
    CoreEvent,
    Event,
    Lease,
    Crd,
    ServiceAccount,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

impl Builtin {
    pub fn roundtrip(self, v: Value) -> Result<Value, String> {
        use k8s_openapi::api::core::v1 as core;
        use k8s_openapi::api::rbac::v1 as rbac;
        match self {
            Builtin::Pod => roundtrip::<core::Pod>(v),
            Builtin::Service => roundtrip::<core::Service>(v),
            Builtin::ConfigMap => roundtrip::<core::ConfigMap>(v),
            Builtin::Secret => roundtrip::<core::Secret>(v),
            Builtin::Namespace => roundtrip::<core::Namespace>(v),
            Builtin::CoreEvent => roundtrip::<core::Event>(v),
            Builtin::Event => roundtrip::<k8s_openapi::api::events::v1::Event>(v),
            Builtin::Lease => roundtrip::<k8s_openapi::api::coordination::v1::Lease>(v),
            Builtin::Crd => roundtrip::<CustomResourceDefinition>(v),
            Builtin::ServiceAccount => roundtrip::<core::ServiceAccount>(v),
            Builtin::Role => roundtrip::<rbac::Role>(v),
            Builtin::ClusterRole => roundtrip::<rbac::ClusterRole>(v),
            Builtin::RoleBinding => roundtrip::<rbac::RoleBinding>(v),
            Builtin::ClusterRoleBinding => roundtrip::<rbac::ClusterRoleBinding>(v),
        }
    }
}

fn roundtrip<K: DeserializeOwned + Serialize>(v: Value) -> Result<Value, String> {
    let typed: K = serde_json::from_value(v).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Prunes `metadata` to the fields `ObjectMeta` has.
pub(crate) fn roundtrip_meta(v: Value) -> Result<Value, String> {
    roundtrip::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(v)
}

/// How a CRD's `scale` subresource maps onto the object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// One served `group/version/plural`.
#[derive(Debug)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub scale: Option<ScalePaths>,
    /// Whether `metadata.generation` is kept (custom resources, pods).
    pub tracks_generation: bool,
    /// The schema: validated, pruned and defaulted for custom resources; list semantics only for
    /// built-in types.
    pub schema: Schema,
    /// The same schema with Kubernetes' `ObjectMeta` list semantics under `metadata`, for
    /// server-side apply.
    pub fields_schema: Schema,
    pub builtin: Option<Builtin>,
    pub name_rule: NameRule,
    /// Field selectors beyond `metadata.name` / `metadata.namespace`.
    pub selectable_fields: Vec<String>,
    /// Discovery's `shortNames` (`kubectl get dsk`) and `categories` (`kubectl get all`).
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// The CRD's `openAPIV3Schema` as written (served under `/openapi/v3`); none for built-ins.
    pub openapi: Option<Value>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage identity: all versions of one resource share objects.
    pub fn storage_key(&self) -> String {
        format!("{}/{}", self.group, self.plural)
    }

    pub fn is_custom(&self) -> bool {
        self.builtin.is_none()
    }

    pub fn selectable(&self) -> Vec<&str> {
        self.selectable_fields.iter().map(String::as_str).collect()
    }
}

fn list_map(keys: &[&str], items: Value) -> Value {
    json!({"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": keys, "items": items})
}

/// `ObjectMeta`'s merge semantics.
fn meta_schema() -> Value {
    json!({"type": "object", "properties": {
        "ownerReferences": list_map(&["uid"], json!({})),
        "finalizers": {"type": "array", "x-kubernetes-list-type": "set"},
    }})
}

fn pod_schema() -> Value {
    let port = json!({"properties": {"protocol": {"type": "string", "default": "TCP"}}});
    let container = json!({"properties": {
        "env": list_map(&["name"], json!({})),
        "ports": list_map(&["containerPort", "protocol"], port),
        "volumeMounts": list_map(&["mountPath"], json!({})),
        "volumeDevices": list_map(&["devicePath"], json!({})),
    }});
    json!({"properties": {
        "metadata": meta_schema(),
        "spec": {"properties": {
            "containers": list_map(&["name"], container.clone()),
            "initContainers": list_map(&["name"], container.clone()),
            "ephemeralContainers": list_map(&["name"], container),
            "volumes": list_map(&["name"], json!({})),
            "imagePullSecrets": list_map(&["name"], json!({})),
            "hostAliases": list_map(&["ip"], json!({})),
            "topologySpreadConstraints": list_map(&["topologyKey", "whenUnsatisfiable"], json!({})),
            "resourceClaims": list_map(&["name"], json!({})),
            "schedulingGates": list_map(&["name"], json!({})),
        }},
        "status": {"properties": {
            "conditions": list_map(&["type"], json!({})),
            "podIPs": list_map(&["ip"], json!({})),
            "hostIPs": list_map(&["ip"], json!({})),
        }},
    }})
}

fn service_schema() -> Value {
    json!({"properties": {
        "metadata": meta_schema(),
        "spec": {"properties": {
            "ports": list_map(&["port", "protocol"], json!({"properties": {"protocol": {"type": "string", "default": "TCP"}}})),
        }},
        "status": {"properties": {"conditions": list_map(&["type"], json!({}))}},
    }})
}

static META_ONLY: LazyLock<Value> =
    LazyLock::new(|| json!({"properties": {"metadata": meta_schema()}}));

fn parse_static(v: &Value) -> Schema {
    Schema::parse(v).expect("built-in schemas are well-formed")
}

/// Every built-in type the server serves.
pub(crate) fn builtin_types() -> Vec<Arc<ResourceType>> {
    let core = |kind: &str, plural: &str, builtin, namespaced, status, schema: &Value| {
        let s = parse_static(schema);
        ResourceType {
            group: String::new(),
            version: "v1".into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status_subresource: status,
            scale: None,
            tracks_generation: false,
            schema: s.clone(),
            fields_schema: s,
            builtin: Some(builtin),
            name_rule: NameRule::Subdomain,
            selectable_fields: Vec::new(),
            short_names: Vec::new(),
            categories: Vec::new(),
            openapi: None,
        }
    };
    let mut pod = core("Pod", "pods", Builtin::Pod, true, true, &pod_schema());
    pod.tracks_generation = true;
    pod.selectable_fields = [
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ]
    .map(str::to_owned)
    .to_vec();
    pod.short_names = vec!["po".into()];
    pod.categories = vec!["all".into()];
    let mut service = core(
        "Service",
        "services",
        Builtin::Service,
        true,
        true,
        &service_schema(),
    );
    service.name_rule = NameRule::Label1035;
    service.short_names = vec!["svc".into()];
    service.categories = vec!["all".into()];
    let mut configmap = core(
        "ConfigMap",
        "configmaps",
        Builtin::ConfigMap,
        true,
        false,
        &META_ONLY,
    );
    configmap.short_names = vec!["cm".into()];
    let mut secret = core(
        "Secret",
        "secrets",
        Builtin::Secret,
        true,
        false,
        &META_ONLY,
    );
    secret.selectable_fields = vec!["type".into()];
    let mut namespace = core(
        "Namespace",
        "namespaces",
        Builtin::Namespace,
        false,
        true,
        &META_ONLY,
    );
    namespace.name_rule = NameRule::Label1123;
    namespace.short_names = vec!["ns".into()];
    namespace.selectable_fields = vec!["status.phase".into()];
    let mut core_event = core(
        "Event",
        "events",
        Builtin::CoreEvent,
        true,
        false,
        &META_ONLY,
    );
    core_event.selectable_fields = [
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ]
    .map(str::to_owned)
    .to_vec();
    core_event.short_names = vec!["ev".into()];
    let mut event = core("Event", "events", Builtin::Event, true, false, &META_ONLY);
    event.group = "events.k8s.io".into();
    event.selectable_fields = [
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "reason",
        "reportingController",
        "type",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut crd = core(
        "CustomResourceDefinition",
        "customresourcedefinitions",
        Builtin::Crd,
        false,
        true,
        &META_ONLY,
    );
    crd.group = "apiextensions.k8s.io".into();
    crd.short_names = vec!["crd".into(), "crds".into()];
    let mut lease = core("Lease", "leases", Builtin::Lease, true, false, &META_ONLY);
    lease.group = "coordination.k8s.io".into();
    let mut service_account = core(
        "ServiceAccount",
        "serviceaccounts",
        Builtin::ServiceAccount,
        true,
        false,
        &META_ONLY,
    );
    service_account.short_names = vec!["sa".into()];
    let rbac = |kind: &str, plural: &str, builtin, namespaced| {
        let mut t = core(kind, plural, builtin, namespaced, false, &META_ONLY);
        t.group = "rbac.authorization.k8s.io".into();
        t.name_rule = NameRule::Path;
        t
    };
    [
        pod,
        service,
        configmap,
        secret,
        namespace,
        core_event,
        event,
        lease,
        crd,
        service_account,
        rbac("Role", "roles", Builtin::Role, true),
        rbac("ClusterRole", "clusterroles", Builtin::ClusterRole, false),
        rbac("RoleBinding", "rolebindings", Builtin::RoleBinding, true),
        rbac(
            "ClusterRoleBinding",
            "clusterrolebindings",
            Builtin::ClusterRoleBinding,
            false,
        ),
    ]
    .into_iter()
    .map(Arc::new)
    .collect()
}

/// The types a CRD defines, one per served version.
pub(crate) fn crd_types(crd: &CustomResourceDefinition) -> Result<Vec<ResourceType>, Error> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    let bad = |reason: String| Error::InvalidCrd {
        name: name.clone(),
        reason,
    };
    let spec = &crd.spec;
    if name != format!("{}.{}", spec.names.plural, spec.group) {
        return Err(bad(format!(
            "metadata.name must be spec.names.plural + \".\" + spec.group ({}.{})",
            spec.names.plural, spec.group
        )));
    }
    if spec.versions.iter().filter(|v| v.storage).count() != 1 {
        return Err(bad("exactly one version must be the storage version".into()));
    }
    let namespaced = match spec.scope.as_str() {
        "Namespaced" => true,
        "Cluster" => false,
        other => {
            return Err(bad(format!(
                "spec.scope must be Namespaced or Cluster, not {other:?}"
            )));
        }
    };
    let mut out = Vec::new();
    for v in spec.versions.iter().filter(|v| v.served) {
        let raw = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .ok_or_else(|| bad(format!("version {} has no openAPIV3Schema", v.name)))?;
        let raw = serde_json::to_value(raw).map_err(|e| bad(e.to_string()))?;
        let schema = Schema::parse(&raw).map_err(|reason| Error::Schema {
            name: name.clone(),
            version: v.name.clone(),
            reason,
        })?;
        let mut fields_schema = schema.clone();
        let mut meta = parse_static(&meta_schema());
        if let Some(user_meta) = schema.properties.get("metadata") {
            meta.properties.extend(user_meta.properties.clone());
        }
        fields_schema.properties.insert("metadata".into(), meta);
        let sub = v.subresources.as_ref();
        let scale = sub.and_then(|s| s.scale.as_ref()).map(|s| ScalePaths {
            spec_replicas: s.spec_replicas_path.trim_start_matches('.').to_owned(),
            status_replicas: s.status_replicas_path.trim_start_matches('.').to_owned(),
            label_selector: s
                .label_selector_path
                .as_ref()
                .map(|p| p.trim_start_matches('.').to_owned()),
        });
        out.push(ResourceType {
            group: spec.group.clone(),
            version: v.name.clone(),
            kind: spec.names.kind.clone(),
            plural: spec.names.plural.clone(),
            namespaced,
            status_subresource: sub.and_then(|s| s.status.as_ref()).is_some(),
            scale,
            tracks_generation: true,
            schema,
            fields_schema,
            builtin: None,
            name_rule: NameRule::Subdomain,
            selectable_fields: v
                .selectable_fields
                .iter()
                .flatten()
                .map(|f| f.json_path.trim_start_matches('.').to_owned())
                .collect(),
            short_names: spec.names.short_names.clone().unwrap_or_default(),
            categories: spec.names.categories.clone().unwrap_or_default(),
            openapi: Some(raw.clone()),
        });
    }
    if out.is_empty() {
        return Err(bad("no served version".into()));
    }
    Ok(out)
}

/// The object as served in `ty`'s version (all versions share storage; conversion is `None`).
pub(crate) fn present(ty: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    o["apiVersion"] = json!(ty.api_version());
    o["kind"] = json!(ty.kind);
    o
}
