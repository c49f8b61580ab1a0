//! Schemas of the Kubernetes types embedded in Dask's resources, trimmed for CRDs.
//!
//! k8s-openapi's PodSpec schema with every description is about 1 MB once embedded (DaskJob embeds
//! three), over what etcd and `kubectl apply` accept. The descriptions are dropped here (users have
//! `kubectl explain pod.spec` for them), and the lists that server-side apply should merge by key
//! are marked as Kubernetes marks them on built-in types, with the key fields defaulted as the API
//! server requires (`protocol: TCP`, as dask-kubernetes' CRDs also default it).

use k8s_openapi::api::core::v1::{PodSpec, ServiceSpec};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value, json};

/// Schema for an embedded `PodSpec`.
///
/// Two parts are not spelled out, to keep the CRDs smaller than dask-kubernetes' own (whose PodSpec
/// is Kubernetes 1.21's): `ephemeralContainers`, which no pod can be created with, and the ~30
/// volume sources of `volumes` items (only `name` is typed; the rest is kept as written). The API
/// server validates both fully when the operator creates the pods, and the operator reports such
/// errors in the resource's status and events.
pub fn pod_spec(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = trimmed(PodSpec::json_schema(generator));
    if let Some(Value::Object(props)) = schema.get_mut("properties") {
        props.remove("ephemeralContainers");
        if let Some(Value::Object(items)) =
            props.get_mut("volumes").and_then(|v| v.get_mut("items"))
        {
            items.insert("properties".into(), json!({"name": {"type": "string"}}));
            items.insert("x-kubernetes-preserve-unknown-fields".into(), json!(true));
        }
    }
    schema
}

/// Schema for an embedded `ServiceSpec`.
pub fn service_spec(generator: &mut SchemaGenerator) -> Schema {
    trimmed(ServiceSpec::json_schema(generator))
}

fn trimmed(schema: Schema) -> Schema {
    let mut value = schema.to_value();
    walk(&mut value);
    Schema::try_from(value)
        .unwrap_or_else(|_| unreachable!("a trimmed object schema is still an object"))
}

/// Keys of lists merged by key under server-side apply, by property name; the second element
/// tells which field of the items distinguishes the kinds of list sharing a name.
fn list_map_keys(property: &str, items: &Map<String, Value>) -> Option<Vec<&'static str>> {
    let has = |f: &str| items.get("properties").and_then(|p| p.get(f)).is_some();
    match property {
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" => {
            has("name").then(|| vec!["name"])
        }
        "volumeMounts" => has("mountPath").then(|| vec!["mountPath"]),
        "ports" if has("containerPort") => Some(vec!["containerPort", "protocol"]),
        "ports" if has("port") => Some(vec!["port", "protocol"]),
        _ => None,
    }
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("description");
            if let Some(Value::Object(props)) = map.get_mut("properties") {
                for (name, prop) in props.iter_mut() {
                    mark_list(name, prop);
                }
            }
            for (_, child) in map.iter_mut() {
                walk(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

fn mark_list(name: &str, prop: &mut Value) {
    let Some(obj) = prop.as_object_mut() else {
        return;
    };
    if obj.get("type").and_then(Value::as_str) != Some("array") {
        return;
    }
    let Some(Value::Object(items)) = obj.get_mut("items") else {
        return;
    };
    let Some(keys) = list_map_keys(name, items) else {
        return;
    };
    if keys.contains(&"protocol")
        && let Some(Value::Object(p)) = items
            .get_mut("properties")
            .and_then(|p| p.get_mut("protocol"))
    {
        p.insert("default".into(), json!("TCP"));
    }
    // Key fields must be present in every item: required, or defaulted above.
    if let Some(Value::Array(req)) = items.get_mut("required") {
        for k in &keys {
            if *k != "protocol" && !req.iter().any(|r| r == k) {
                req.push(json!(k));
            }
        }
    } else {
        let req: Vec<Value> = keys
            .iter()
            .filter(|k| **k != "protocol")
            .map(|k| json!(k))
            .collect();
        items.insert("required".into(), Value::Array(req));
    }
    obj.insert("x-kubernetes-list-type".into(), json!("map"));
    obj.insert("x-kubernetes-list-map-keys".into(), json!(keys));
}
