//! Field ownership (`metadata.managedFields`): field paths in Kubernetes' `FieldsV1` notation
//! (`f:name`, `k:{"name":"x"}` for a list-map item, `v:"x"` for a set item), the sets of them each
//! field manager owns, and how plain writes (create, update, non-apply patches) move ownership.

use crate::schema::{ListType, Schema};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// One field path, e.g. `["f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]`.
pub(crate) type FieldPath = Vec<String>;
/// The fields one manager owns.
pub(crate) type FieldSet = BTreeSet<FieldPath>;

/// Fields that are never owned: identity and server-maintained metadata.
const SYSTEM_META: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// Whether a path element names a list item (whose presence itself is owned).
pub(crate) fn is_item(element: &str) -> bool {
    element.starts_with("k:") || element.starts_with("v:")
}

/// Every owned-able field of `obj`: leaves, empty objects, atomic lists, and list-map / set items.
pub(crate) fn collect(obj: &Value, schema: &Schema) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(map) = obj else { return out };
    let mut prefix = Vec::new();
    for (k, v) in map {
        if k == "apiVersion" || k == "kind" {
            continue;
        }
        if k == "metadata" {
            if let Value::Object(meta) = v {
                prefix.push("f:metadata".to_owned());
                for (mk, mv) in meta {
                    if SYSTEM_META.contains(&mk.as_str()) {
                        continue;
                    }
                    prefix.push(format!("f:{mk}"));
                    walk(
                        mv,
                        schema.child("metadata").child(mk),
                        &mut prefix,
                        &mut out,
                    );
                    prefix.pop();
                }
                prefix.pop();
            }
            continue;
        }
        prefix.push(format!("f:{k}"));
        walk(v, schema.child(k), &mut prefix, &mut out);
        prefix.pop();
    }
    out
}

fn walk(v: &Value, schema: &Schema, prefix: &mut Vec<String>, out: &mut FieldSet) {
    match v {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() && !schema.atomic_map => {
            for (k, child) in map {
                prefix.push(format!("f:{k}"));
                walk(child, schema.child(k), prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => match &schema.list_type {
            ListType::Map(keys) => {
                for item in items {
                    prefix.push(item_key(item, keys, schema.item()));
                    out.insert(prefix.clone());
                    if let Value::Object(fields) = item {
                        for (k, child) in fields {
                            prefix.push(format!("f:{k}"));
                            walk(child, schema.item().child(k), prefix, out);
                            prefix.pop();
                        }
                    }
                    prefix.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    prefix.push(format!("v:{item}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListType::Atomic => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The `k:{...}` element of a list-map item: its key fields (schema defaults fill missing ones,
/// as the API server's OpenAPI defaults do for e.g. a port's `protocol`).
pub(crate) fn item_key(item: &Value, keys: &[String], item_schema: &Schema) -> String {
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort();
    let mut m = Map::new();
    for k in sorted {
        let v = item
            .get(k)
            .cloned()
            .or_else(|| item_schema.child(k).default.clone())
            .unwrap_or(Value::Null);
        m.insert(k.clone(), v);
    }
    format!("k:{}", Value::Object(m))
}

/// The index of the list item a `k:` or `v:` element names.
fn find_item(items: &[Value], element: &str, schema: &Schema) -> Option<usize> {
    if element.starts_with("k:") {
        let ListType::Map(keys) = &schema.list_type else {
            return None;
        };
        items
            .iter()
            .position(|it| item_key(it, keys, schema.item()) == element)
    } else {
        let want: Value = serde_json::from_str(element.strip_prefix("v:")?).ok()?;
        items.iter().position(|it| *it == want)
    }
}

/// Resolves one path element within `v` (an object field or a list item).
fn step<'a>(v: &'a Value, element: &str, schema: &Schema) -> Option<&'a Value> {
    match (v, element.strip_prefix("f:")) {
        (Value::Object(map), Some(name)) => map.get(name),
        (Value::Array(items), None) => items.get(find_item(items, element, schema)?),
        _ => None,
    }
}

fn child_schema<'s>(schema: &'s Schema, element: &str) -> &'s Schema {
    match element.strip_prefix("f:") {
        Some(name) => schema.child(name),
        None => schema.item(),
    }
}

/// The value at `path` in `obj`, if present.
pub(crate) fn get<'a>(obj: &'a Value, path: &[String], schema: &Schema) -> Option<&'a Value> {
    let mut v = obj;
    let mut s = schema;
    for e in path {
        v = step(v, e, s)?;
        s = child_schema(s, e);
    }
    Some(v)
}

/// Removes the field or list item at `path` from `obj`, then the objects that removal left empty
/// (below the top-level field, which stays).
pub(crate) fn remove(obj: &mut Value, path: &[String], schema: &Schema) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    let parent_schema = parent_path.iter().fold(schema, |s, e| child_schema(s, e));
    if let Some(parent) = get_mut(obj, parent_path, schema) {
        match parent {
            Value::Object(map) => {
                if let Some(name) = last.strip_prefix("f:") {
                    map.remove(name);
                }
            }
            Value::Array(items) => {
                if let Some(i) = find_item(items, last, parent_schema) {
                    items.remove(i);
                }
            }
            _ => {}
        }
    }
    // Drop parents emptied by the removal (never the root or metadata itself).
    for depth in (2..=parent_path.len()).rev() {
        let p = &parent_path[..depth];
        let empty = get(obj, p, schema).is_some_and(|v| v.as_object().is_some_and(Map::is_empty));
        if empty && !is_item(&p[depth - 1]) {
            remove_one(obj, p, schema);
        } else {
            break;
        }
    }
}

fn remove_one(obj: &mut Value, path: &[String], schema: &Schema) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if let Some(Value::Object(map)) = get_mut(obj, parent_path, schema)
        && let Some(name) = last.strip_prefix("f:")
    {
        map.remove(name);
    }
}

fn get_mut<'a>(obj: &'a mut Value, path: &[String], schema: &Schema) -> Option<&'a mut Value> {
    let mut v = obj;
    let mut s = schema;
    for e in path {
        let idx = match (&*v, e.strip_prefix("f:")) {
            (Value::Object(_), Some(_)) => None,
            (Value::Array(items), None) => Some(find_item(items, e, s)?),
            _ => return None,
        };
        v = match (v, idx) {
            (Value::Object(map), None) => map.get_mut(e.strip_prefix("f:")?)?,
            (Value::Array(items), Some(i)) => items.get_mut(i)?,
            _ => return None,
        };
        s = child_schema(s, e);
    }
    Some(v)
}

/// How a manager last wrote: `Apply` (server-side apply) or `Update` (everything else).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

/// All managers' field sets for one object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Managed {
    pub entries: Vec<Entry>,
}

impl Managed {
    /// The entry for `(manager, operation, subresource)`, created empty when missing.
    pub fn entry(
        &mut self,
        manager: &str,
        operation: Operation,
        subresource: &str,
        api_version: &str,
    ) -> &mut Entry {
        let pos = self.entries.iter().position(|e| {
            e.manager == manager && e.operation == operation && e.subresource == subresource
        });
        let i = match pos {
            Some(i) => i,
            None => {
                self.entries.push(Entry {
                    manager: manager.to_owned(),
                    operation,
                    subresource: subresource.to_owned(),
                    api_version: api_version.to_owned(),
                    time: String::new(),
                    fields: FieldSet::new(),
                });
                self.entries.len() - 1
            }
        };
        &mut self.entries[i]
    }

    /// A plain write by `manager`: it takes every field it added or changed (from every other
    /// manager, as updates never conflict); fields that disappeared leave every set.
    pub fn record_update(
        &mut self,
        manager: &str,
        subresource: &str,
        api_version: &str,
        old: Option<&Value>,
        new: &Value,
        schema: &Schema,
    ) {
        let new_fields = collect(new, schema);
        let changed: FieldSet = new_fields
            .iter()
            .filter(|p| {
                let before = old.and_then(|o| get(o, p, schema));
                match before {
                    None => true,
                    Some(_) if p.last().is_some_and(|e| is_item(e)) => false,
                    Some(b) => Some(b) != get(new, p, schema),
                }
            })
            .cloned()
            .collect();
        for e in &mut self.entries {
            let mine = e.manager == manager
                && e.operation == Operation::Update
                && e.subresource == subresource;
            if !mine {
                e.fields.retain(|p| !changed.contains(p));
            }
        }
        if !changed.is_empty() {
            let entry = self.entry(manager, Operation::Update, subresource, api_version);
            entry.fields.extend(changed);
        }
        self.retain_existing(&new_fields);
    }

    /// Forgets paths that no longer exist in the object, and entries left with nothing.
    pub fn retain_existing(&mut self, existing: &FieldSet) {
        for e in &mut self.entries {
            e.fields.retain(|p| existing.contains(p));
        }
        self.entries.retain(|e| !e.fields.is_empty());
    }

    /// Whether any manager other than `(manager, Apply, subresource)` owns `path` or anything under it.
    pub fn owned_by_others(&self, manager: &str, subresource: &str, path: &FieldPath) -> bool {
        self.entries
            .iter()
            .filter(|e| {
                !(e.manager == manager
                    && e.operation == Operation::Apply
                    && e.subresource == subresource)
            })
            .any(|e| {
                e.fields
                    .range(path.clone()..)
                    .next()
                    .is_some_and(|p| p.starts_with(path))
            })
    }

    /// Stamps `now` on entries whose fields differ from `before`.
    pub fn touch(&mut self, before: &Managed, now: &str) {
        for e in &mut self.entries {
            let prior = before.entries.iter().find(|b| {
                b.manager == e.manager
                    && b.operation == e.operation
                    && b.subresource == e.subresource
            });
            match prior {
                Some(b) if b.fields == e.fields && !b.time.is_empty() => e.time.clone_from(&b.time),
                _ => e.time = now.to_owned(),
            }
        }
    }

    /// Equal apart from timestamps.
    pub fn same_fields(&self, other: &Managed) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                a.manager == b.manager
                    && a.operation == b.operation
                    && a.subresource == b.subresource
                    && a.fields == b.fields
            })
    }

    /// `metadata.managedFields` as Kubernetes serialises it (FieldsV1).
    pub fn render(&self) -> Value {
        Value::Array(
            self.entries
                .iter()
                .map(|e| {
                    let mut tree = Map::new();
                    for p in &e.fields {
                        let mut node = &mut tree;
                        for el in p {
                            node = node
                                .entry(el.clone())
                                .or_insert_with(|| Value::Object(Map::new()))
                                .as_object_mut()
                                .expect("field tree nodes are objects");
                        }
                        if p.last().is_some_and(|el| el.starts_with("k:")) {
                            node.insert(".".into(), json!({}));
                        }
                    }
                    let mut entry = json!({
                        "manager": e.manager,
                        "operation": match e.operation { Operation::Apply => "Apply", Operation::Update => "Update" },
                        "apiVersion": e.api_version,
                        "time": e.time,
                        "fieldsType": "FieldsV1",
                        "fieldsV1": Value::Object(tree),
                    });
                    if !e.subresource.is_empty() {
                        entry["subresource"] = json!(e.subresource);
                    }
                    entry
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_like() -> Schema {
        Schema::parse(&json!({"properties": {"spec": {"properties": {"containers": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
            "items": {"properties": {"ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["containerPort", "protocol"],
                "items": {"properties": {"protocol": {"type": "string", "default": "TCP"}}}}}}
        }}}, "metadata": {"properties": {"finalizers": {"type": "array", "x-kubernetes-list-type": "set"}}}}}))
        .unwrap()
    }

    #[test]
    fn collects_leaves_and_items() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"a": "b"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}});
        let f = collect(&obj, &pod_like());
        let paths: Vec<String> = f.iter().map(|p| p.join(".")).collect();
        assert_eq!(
            paths,
            vec![
                "f:metadata.f:finalizers.v:\"x\"",
                "f:metadata.f:labels.f:a",
                "f:spec.f:containers.k:{\"name\":\"c\"}",
                "f:spec.f:containers.k:{\"name\":\"c\"}.f:image",
                "f:spec.f:containers.k:{\"name\":\"c\"}.f:name",
                "f:spec.f:containers.k:{\"name\":\"c\"}.f:ports.k:{\"containerPort\":80,\"protocol\":\"TCP\"}",
                "f:spec.f:containers.k:{\"name\":\"c\"}.f:ports.k:{\"containerPort\":80,\"protocol\":\"TCP\"}.f:containerPort",
            ]
        );
    }

    #[test]
    fn removes_items_and_empty_parents() {
        let s = pod_like();
        let mut obj = json!({"spec": {"containers": [{"name": "c", "image": "i"}, {"name": "d"}]},
                             "metadata": {"labels": {"a": "b"}}});
        let item: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"c\"}".into(),
        ];
        assert_eq!(
            get(&obj, &item, &s),
            Some(&json!({"name": "c", "image": "i"}))
        );
        remove(&mut obj, &item, &s);
        remove(
            &mut obj,
            &["f:metadata".into(), "f:labels".into(), "f:a".into()],
            &s,
        );
        assert_eq!(
            obj,
            json!({"spec": {"containers": [{"name": "d"}]}, "metadata": {}})
        );
    }
}
