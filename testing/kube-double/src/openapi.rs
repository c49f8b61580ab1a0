//! `/openapi/v3`: the index of group-versions and, for each, an OpenAPI 3 document of its
//! resources: their paths with the operations and query parameters they take, and their schemas
//! (a CRD's `openAPIV3Schema`; an open object for built-ins), each tagged with
//! `x-kubernetes-group-version-kind`. kubectl reads it to see that the server validates fields
//! (`fieldValidation` on PATCH), so `kubectl apply` asks the server to validate strictly instead
//! of validating on the client against `/openapi/v2` (whose protobuf form is not served: a
//! client asking for it gets 404 and does without, as it does against servers that disable it).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::resources::ResourceType;

type Types = BTreeMap<(String, String, String), Arc<ResourceType>>;

/// The path of a group-version under `/openapi/v3/`: `api/v1` or `apis/{group}/{version}`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A schema name as Kubernetes forms it: the group reversed (`io.dask.kubernetes.v1.DaskCluster`),
/// `io.k8s.api.core.v1.Pod` for the core group.
fn schema_name(ty: &ResourceType) -> String {
    if ty.group.is_empty() {
        return format!("io.k8s.api.core.{}.{}", ty.version, ty.kind);
    }
    let reversed: Vec<&str> = ty.group.split('.').rev().collect();
    format!("{}.{}.{}", reversed.join("."), ty.version, ty.kind)
}

fn stable_hash(v: &Value) -> String {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{h:016X}")
}

/// `GET /openapi/v3`.
pub(crate) fn index(types: &Types) -> Value {
    let mut gvs: Vec<(String, String)> = types
        .keys()
        .map(|(g, v, _)| (g.clone(), v.clone()))
        .collect();
    gvs.dedup();
    let paths: Map<String, Value> = gvs
        .iter()
        .map(|(g, v)| {
            let path = gv_path(g, v);
            let hash = stable_hash(&document(types, g, v));
            (
                path.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    json!({"paths": paths})
}

/// `GET /openapi/v3/{api/v1 | apis/group/version}`; `None` if nothing is served there.
pub(crate) fn group_version(types: &Types, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version) = match segs.as_slice() {
        ["api", v] => ("", *v),
        ["apis", g, v] => (*g, *v),
        _ => return None,
    };
    types
        .keys()
        .any(|(g, v, _)| g == group && v == version)
        .then(|| document(types, group, version))
}

fn param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description,
           "schema": {"type": "string", "uniqueItems": true}})
}

fn document(types: &Types, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for ((g, v, _), ty) in types {
        if g != group || v != version {
            continue;
        }
        let gvk = json!({"group": ty.group, "version": ty.version, "kind": ty.kind});
        let name = schema_name(ty);
        let reference = json!({"$ref": format!("#/components/schemas/{name}")});
        let mut schema = ty.openapi.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        if let Some(o) = schema.as_object_mut() {
            o.insert("x-kubernetes-group-version-kind".into(), json!([gvk]));
        }
        schemas.insert(name, schema);
        let body = |types: &[&str]| {
            let content: Map<String, Value> = types
                .iter()
                .map(|t| ((*t).to_owned(), json!({"schema": reference})))
                .collect();
            json!({"content": content, "required": true})
        };
        let ok = json!({"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}});
        let writes = vec![
            param("dryRun", "When present, modifications are not persisted."),
            param("fieldManager", "A name for the actor making these changes."),
            param(
                "fieldValidation",
                "Ignore, Warn or Strict: what the server does with unknown or duplicate fields.",
            ),
        ];
        let op = |action: &str, params: Vec<Value>, request: Option<Value>| {
            let mut o = json!({
                "operationId": format!("{action}{}", ty.kind),
                "parameters": params,
                "responses": ok,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            });
            if let Some(r) = request {
                o["requestBody"] = r;
            }
            o
        };
        let prefix = format!("/{}", gv_path(&ty.group, &ty.version));
        let collection = if ty.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", ty.plural)
        } else {
            format!("{prefix}/{}", ty.plural)
        };
        let mut patch_params = writes.clone();
        patch_params.push(param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            collection.clone(),
            json!({
                "get": op("list", vec![param("labelSelector", "A selector on labels.")], None),
                "post": op("post", writes.clone(), Some(body(&["application/json", "application/yaml"]))),
            }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op("get", vec![], None),
                "put": op("put", writes.clone(), Some(body(&["application/json", "application/yaml"]))),
                "patch": op("patch", patch_params, Some(body(&[
                    "application/json-patch+json",
                    "application/merge-patch+json",
                    "application/apply-patch+yaml",
                ]))),
                "delete": op("delete", vec![param("dryRun", "When present, modifications are not persisted.")], None),
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.37.0-kube-double"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_reverse_the_group() {
        let types = crate::resources::builtin_types();
        let pod = types.iter().find(|t| t.kind == "Pod").unwrap();
        assert_eq!(schema_name(pod), "io.k8s.api.core.v1.Pod");
        let lease = types.iter().find(|t| t.kind == "Lease").unwrap();
        assert_eq!(schema_name(lease), "io.k8s.coordination.v1.Lease");
    }
}
