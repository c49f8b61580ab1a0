//! Server-side apply: merge an apply configuration into the live object, with per-manager field
//! ownership. A manager owns exactly the fields of its last apply configuration; fields it stops
//! applying are removed unless another manager owns them; setting a field another manager owns to
//! a different value is a conflict unless `force`. Lists merge item by item where the schema (or
//! the built-in knowledge) declares `x-kubernetes-list-type: map`/`set`; other lists are atomic.

use crate::fields::{self, FieldPath, Managed, Operation, is_item, item_key};
use crate::schema::{ListType, Schema};
use serde_json::Value;

/// A manager that owns a field the apply sets to a different value: `(manager, rendered path)`.
pub(crate) type Conflict = (String, String);

/// Who applies, and how.
pub(crate) struct Applier<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub force: bool,
}

/// Merges `cfg` into `live` (absent: create) and updates ownership; returns the merged object and
/// the new managed fields, or the conflicts.
pub(crate) fn apply(
    live: Option<&Value>,
    managed: &Managed,
    cfg: &Value,
    schema: &Schema,
    who: &Applier<'_>,
) -> Result<(Value, Managed), Vec<Conflict>> {
    let cfg = without_nulls(cfg);
    let cfg_fields = fields::collect(&cfg, schema);
    let mut managed = managed.clone();
    let Some(live) = live else {
        let entry = managed.entry(
            who.manager,
            Operation::Apply,
            who.subresource,
            who.api_version,
        );
        entry.fields = cfg_fields;
        return Ok((cfg, managed));
    };

    let mut conflicts: Vec<(usize, FieldPath)> = Vec::new();
    for (i, e) in managed.entries.iter().enumerate() {
        if e.manager == who.manager {
            continue;
        }
        for p in cfg_fields.intersection(&e.fields) {
            if p.last().is_some_and(|el| is_item(el)) {
                continue;
            }
            let current = fields::get(live, p, schema);
            if current.is_some() && current != fields::get(&cfg, p, schema) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !who.force {
            return Err(conflicts
                .iter()
                .map(|(i, p)| (managed.entries[*i].manager.clone(), render_path(p)))
                .collect());
        }
        for (i, p) in &conflicts {
            managed.entries[*i].fields.remove(p);
        }
    }

    let mut merged = live.clone();
    merge(&mut merged, &cfg, schema);

    let previous = managed
        .entry(
            who.manager,
            Operation::Apply,
            who.subresource,
            who.api_version,
        )
        .fields
        .clone();
    let mut removed: Vec<&FieldPath> = previous.difference(&cfg_fields).collect();
    // Items before their fields, so a dropped item goes whole.
    removed.sort_by_key(|p| p.len());
    for p in removed {
        if !managed.owned_by_others(who.manager, who.subresource, p) {
            fields::remove(&mut merged, p, schema);
        }
    }
    managed
        .entry(
            who.manager,
            Operation::Apply,
            who.subresource,
            who.api_version,
        )
        .fields = cfg_fields;
    Ok((merged, managed))
}

/// An apply configuration without `null`s (they claim nothing and set nothing).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn merge(live: &mut Value, cfg: &Value, schema: &Schema) {
    match (live, cfg) {
        (Value::Object(l), Value::Object(c)) if !schema.atomic_map => {
            for (k, cv) in c {
                match l.get_mut(k) {
                    Some(lv) => merge(lv, cv, schema.child(k)),
                    None => {
                        l.insert(k.clone(), cv.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => match &schema.list_type {
            ListType::Map(keys) => {
                let item_schema = schema.item();
                for ci in c {
                    let key = item_key(ci, keys, item_schema);
                    match l
                        .iter_mut()
                        .find(|li| item_key(li, keys, item_schema) == key)
                    {
                        Some(li) => merge(li, ci, item_schema),
                        None => l.push(ci.clone()),
                    }
                }
            }
            ListType::Set => {
                for ci in c {
                    if !l.contains(ci) {
                        l.push(ci.clone());
                    }
                }
            }
            ListType::Atomic => *l = c.clone(),
        },
        (live, cfg) => *live = cfg.clone(),
    }
}

/// `.spec.containers[name="web"].image`, as Kubernetes prints conflicting fields.
pub(crate) fn render_path(path: &FieldPath) -> String {
    let mut out = String::new();
    for el in path {
        if let Some(name) = el.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = el.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(key)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({"properties": {"spec": {"properties": {"containers": {
            "type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}}}}}))
        .unwrap()
    }

    fn who(manager: &str, force: bool) -> Applier<'_> {
        Applier {
            manager,
            subresource: "",
            api_version: "v1",
            force,
        }
    }

    #[test]
    fn reapply_without_a_field_removes_it_unless_shared() {
        let s = schema();
        let first = json!({"spec": {"a": 1, "b": 2, "containers": [{"name": "x", "image": "i"}]}});
        let (obj, m) = apply(None, &Managed::default(), &first, &s, &who("op", false)).unwrap();
        // Another manager co-owns `b` (same value) and adds a container.
        let other = json!({"spec": {"b": 2, "containers": [{"name": "y", "image": "j"}]}});
        let (obj, m) = apply(Some(&obj), &m, &other, &s, &who("other", false)).unwrap();
        let second = json!({"spec": {"containers": [{"name": "x", "image": "i2"}]}});
        let (obj, _) = apply(Some(&obj), &m, &second, &s, &who("op", false)).unwrap();
        assert_eq!(
            obj,
            json!({"spec": {"b": 2, "containers": [{"name": "x", "image": "i2"}, {"name": "y", "image": "j"}]}})
        );
    }

    #[test]
    fn conflicts_unless_forced() {
        let s = schema();
        let (obj, m) = apply(
            None,
            &Managed::default(),
            &json!({"spec": {"a": 1}}),
            &s,
            &who("op", false),
        )
        .unwrap();
        let err = apply(
            Some(&obj),
            &m,
            &json!({"spec": {"a": 2}}),
            &s,
            &who("other", false),
        )
        .unwrap_err();
        assert_eq!(err, vec![("op".to_owned(), ".spec.a".to_owned())]);
        let (obj, m) = apply(
            Some(&obj),
            &m,
            &json!({"spec": {"a": 2}}),
            &s,
            &who("other", true),
        )
        .unwrap();
        assert_eq!(obj, json!({"spec": {"a": 2}}));
        // `op` lost the field: re-applying without it removes nothing.
        let (obj, _) = apply(Some(&obj), &m, &json!({"spec": {}}), &s, &who("op", false)).unwrap();
        assert_eq!(obj, json!({"spec": {"a": 2}}));
    }

    #[test]
    fn renders_paths() {
        let p: FieldPath = vec![
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"web\"}".into(),
            "f:image".into(),
        ];
        assert_eq!(render_path(&p), ".spec.containers[name=\"web\"].image");
    }
}
