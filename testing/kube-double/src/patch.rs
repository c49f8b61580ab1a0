//! The non-apply patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic
//! merge patch. Strategic merge is approximated as a merge patch whose lists with known merge keys
//! (from `x-kubernetes-list-map-keys` or the built-in knowledge) are merged item by item, honouring
//! `$patch: delete` on items and `$patch: replace`; other directives (`$retainKeys`,
//! `$setElementOrder`, `$deleteFromPrimitiveList`) are ignored.

use crate::error::ApiError;
use crate::fields::item_key;
use crate::schema::{ListType, Schema};
use serde_json::Value;

/// The patch types the server accepts, by `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml"
            | "application/apply-patch+json"
            | "application/apply-patch+cbor" => Some(PatchType::Apply),
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic patch body to `target`.
pub(crate) fn apply_patch(
    target: &mut Value,
    ty: PatchType,
    body: &[u8],
    schema: &Schema,
) -> Result<(), ApiError> {
    match ty {
        PatchType::Merge => {
            let patch: Value = parse_json(body)?;
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json_patch_ops(target, patch)
        }
        PatchType::Strategic => {
            let patch: Value = parse_json(body)?;
            strategic_merge(target, &patch, schema);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::bad_request(
            "apply patches are handled by server-side apply",
        )),
    }
}

/// RFC 6902, with the API server's (evanphx/json-patch) reading of `test`: a missing path
/// equals `null` (kube's finalizer helper relies on it when adding the first finalizer).
fn json_patch_ops(target: &mut Value, patch: json_patch::Patch) -> Result<(), ApiError> {
    for op in patch.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && t.value.is_null()
            && target.pointer(t.path.as_str()).is_none_or(Value::is_null)
        {
            continue;
        }
        json_patch::patch(target, &[op]).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("the server rejected our request due to an error in our request: {e}"),
            )
        })?;
    }
    Ok(())
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic_merge(target: &mut Value, patch: &Value, schema: &Schema) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(t) = target else { return };
    for (k, pv) in p {
        if k.starts_with('$') {
            continue;
        }
        let child = schema.child(k);
        match (pv, t.get_mut(k)) {
            (Value::Null, _) => {
                t.remove(k);
            }
            (Value::Array(items), Some(Value::Array(existing))) => match &child.list_type {
                ListType::Map(keys) => merge_items(existing, items, keys, child.item()),
                ListType::Set => {
                    for it in items {
                        if !existing.contains(it) {
                            existing.push(it.clone());
                        }
                    }
                }
                ListType::Atomic => *existing = items.iter().map(strip_directives).collect(),
            },
            (Value::Object(_), Some(tv)) => strategic_merge(tv, pv, child),
            (_, Some(tv)) => *tv = strip_directives(pv),
            (_, None) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, pv, child);
                if let Value::Array(items) = pv {
                    fresh = Value::Array(
                        items
                            .iter()
                            .filter(|i| i.get("$patch").and_then(Value::as_str) != Some("delete"))
                            .map(strip_directives)
                            .collect(),
                    );
                }
                t.insert(k.clone(), fresh);
            }
        }
    }
}

fn merge_items(existing: &mut Vec<Value>, items: &[Value], keys: &[String], item_schema: &Schema) {
    for it in items {
        let key = item_key(it, keys, item_schema);
        let pos = existing
            .iter()
            .position(|e| item_key(e, keys, item_schema) == key);
        let delete = it.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (Some(i), false) => strategic_merge(&mut existing[i], it, item_schema),
            (None, true) => {}
            (None, false) => existing.push(strip_directives(it)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let schema = Schema::parse(&json!({"properties": {"spec": {"properties": {"containers": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}}}}))
        .unwrap();
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "a", "$patch": "delete"}, {"name": "c"}]}});
        apply_patch(
            &mut pod,
            PatchType::Strategic,
            patch.to_string().as_bytes(),
            &schema,
        )
        .unwrap();
        assert_eq!(
            pod,
            json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c"}]}})
        );
    }

    #[test]
    fn merge_and_json_patches() {
        let mut v = json!({"a": {"b": 1, "c": 2}});
        apply_patch(
            &mut v,
            PatchType::Merge,
            br#"{"a": {"b": null, "d": 3}}"#,
            &Schema::default(),
        )
        .unwrap();
        assert_eq!(v, json!({"a": {"c": 2, "d": 3}}));
        apply_patch(
            &mut v,
            PatchType::Json,
            br#"[{"op": "replace", "path": "/a/c", "value": 5}]"#,
            &Schema::default(),
        )
        .unwrap();
        assert_eq!(v["a"]["c"], 5);
        let err = apply_patch(
            &mut v,
            PatchType::Json,
            br#"[{"op": "test", "path": "/a/c", "value": 1}]"#,
            &Schema::default(),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
    }
}
