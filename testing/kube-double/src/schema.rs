//! Structural schemas (a CRD's `openAPIV3Schema`) and what the API server does with them for a custom
//! resource: drop nulls of non-nullable fields, prune unknown fields, apply defaults, validate.
//! The same type also carries list semantics (`x-kubernetes-list-type`, `-list-map-keys`) for
//! server-side apply, which is all that built-in types use it for.

use crate::error::{FieldError, FieldErrorKind, render_value};
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// How server-side apply and strategic merge treat a list.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum ListType {
    /// Replaced as a whole.
    #[default]
    Atomic,
    /// Items are scalars, merged as a set.
    Set,
    /// Items are objects identified by these keys, merged item by item.
    Map(Vec<String>),
}

/// A parsed structural schema node.
#[derive(Clone, Debug, Default)]
pub(crate) struct Schema {
    pub ty: Option<String>,
    pub nullable: bool,
    pub properties: BTreeMap<String, Schema>,
    /// `additionalProperties` as a schema (a map).
    pub additional: Option<Box<Schema>>,
    pub items: Option<Box<Schema>>,
    pub required: Vec<String>,
    pub enum_values: Vec<Value>,
    pub minimum: Option<f64>,
    pub exclusive_minimum: bool,
    pub maximum: Option<f64>,
    pub exclusive_maximum: bool,
    pub multiple_of: Option<f64>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub min_properties: Option<u64>,
    pub max_properties: Option<u64>,
    pub unique_items: bool,
    pub pattern: Option<Regex>,
    pub preserve_unknown: bool,
    pub int_or_string: bool,
    pub embedded_resource: bool,
    pub atomic_map: bool,
    pub list_type: ListType,
    pub default: Option<Value>,
    pub all_of: Vec<Schema>,
    pub any_of: Vec<Schema>,
    pub one_of: Vec<Schema>,
    pub not: Option<Box<Schema>>,
}

/// The schema of anything a schema does not describe: keeps everything, checks nothing.
pub(crate) static ANY: LazyLock<Schema> = LazyLock::new(|| Schema {
    preserve_unknown: true,
    ..Schema::default()
});

impl Schema {
    /// Reads a `JSONSchemaProps` object.
    pub fn parse(v: &Value) -> Result<Schema, String> {
        let obj = v
            .as_object()
            .ok_or_else(|| format!("schema node is not an object: {v}"))?;
        let num = |k: &str| obj.get(k).and_then(Value::as_f64);
        let uint = |k: &str| obj.get(k).and_then(Value::as_u64);
        let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
        let list = |k: &str| -> Result<Vec<Schema>, String> {
            obj.get(k)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(Schema::parse).collect())
                .unwrap_or_else(|| Ok(Vec::new()))
        };
        let mut properties = BTreeMap::new();
        if let Some(props) = obj.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                properties.insert(
                    k.clone(),
                    Schema::parse(p).map_err(|e| format!("{k}: {e}"))?,
                );
            }
        }
        let additional = match obj.get("additionalProperties") {
            Some(Value::Object(_)) => Some(Box::new(
                Schema::parse(&obj["additionalProperties"])
                    .map_err(|e| format!("additionalProperties: {e}"))?,
            )),
            Some(Value::Bool(true)) => Some(Box::new(ANY.clone())),
            _ => None,
        };
        let items = match obj.get("items") {
            Some(i @ Value::Object(_)) => Some(Box::new(
                Schema::parse(i).map_err(|e| format!("items: {e}"))?,
            )),
            _ => None,
        };
        let pattern = match obj.get("pattern").and_then(Value::as_str) {
            Some(p) => Some(Regex::new(p).map_err(|e| format!("pattern {p:?}: {e}"))?),
            None => None,
        };
        let list_type = match obj.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => ListType::Set,
            Some("map") => {
                let keys: Vec<String> = obj
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                if keys.is_empty() {
                    return Err(
                        "x-kubernetes-list-type: map needs x-kubernetes-list-map-keys".into(),
                    );
                }
                ListType::Map(keys)
            }
            _ => ListType::Atomic,
        };
        Ok(Schema {
            ty: obj.get("type").and_then(Value::as_str).map(str::to_owned),
            nullable: flag("nullable"),
            properties,
            additional,
            items,
            required: obj
                .get("required")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            enum_values: obj
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            minimum: num("minimum"),
            exclusive_minimum: flag("exclusiveMinimum"),
            maximum: num("maximum"),
            exclusive_maximum: flag("exclusiveMaximum"),
            multiple_of: num("multipleOf"),
            min_length: uint("minLength"),
            max_length: uint("maxLength"),
            min_items: uint("minItems"),
            max_items: uint("maxItems"),
            min_properties: uint("minProperties"),
            max_properties: uint("maxProperties"),
            unique_items: flag("uniqueItems"),
            pattern,
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            int_or_string: flag("x-kubernetes-int-or-string"),
            embedded_resource: flag("x-kubernetes-embedded-resource"),
            atomic_map: obj.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic"),
            list_type,
            default: obj.get("default").cloned(),
            all_of: list("allOf")?,
            any_of: list("anyOf")?,
            one_of: list("oneOf")?,
            not: match obj.get("not") {
                Some(n) => Some(Box::new(Schema::parse(n)?)),
                None => None,
            },
        })
    }

    /// The schema of property `key` of an object this schema describes.
    pub fn child(&self, key: &str) -> &Schema {
        self.properties
            .get(key)
            .or(self.additional.as_deref())
            .unwrap_or(&ANY)
    }

    /// The schema of the items of a list this schema describes.
    pub fn item(&self) -> &Schema {
        self.items.as_deref().unwrap_or(&ANY)
    }

    /// Whether `key` is a field this (object) schema knows; unknown fields are pruned.
    fn knows(&self, key: &str) -> bool {
        self.preserve_unknown || self.properties.contains_key(key) || self.additional.is_some()
    }
}

/// Removes `null`-valued fields whose schema is not `nullable` (the API server does this before
/// defaulting and validation; Dask's Python client relies on it for `env: null`).
pub(crate) fn drop_nulls(value: &mut Value, schema: &Schema) {
    match value {
        Value::Object(map) => {
            map.retain(|k, v| !v.is_null() || schema.child(k).nullable);
            for (k, v) in map.iter_mut() {
                drop_nulls(v, schema.child(k));
            }
        }
        Value::Array(items) => {
            for item in items {
                drop_nulls(item, schema.item());
            }
        }
        _ => {}
    }
}

/// Removes fields the schema does not specify (unless `x-kubernetes-preserve-unknown-fields`).
/// At the root (and in embedded resources) `apiVersion`, `kind` and `metadata` are kept.
pub(crate) fn prune(value: &mut Value, schema: &Schema, root: bool) {
    match value {
        Value::Object(map) => {
            let keep_meta = root || schema.embedded_resource;
            map.retain(|k, _| {
                (keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    || schema.knows(k)
            });
            for (k, v) in map.iter_mut() {
                if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                prune(v, schema.child(k), false);
            }
        }
        Value::Array(items) => {
            for item in items {
                prune(item, schema.item(), false);
            }
        }
        _ => {}
    }
}

/// The fields [`prune`] would remove, by path (`spec.foo`, `spec.items[0].bar`): what
/// `fieldValidation=Strict` refuses.
pub(crate) fn unknown_fields(
    value: &Value,
    schema: &Schema,
    root: bool,
    path: &str,
    out: &mut Vec<String>,
) {
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::Object(map) => {
            let keep_meta = root || schema.embedded_resource;
            for (k, v) in map {
                if keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if schema.knows(k) {
                    unknown_fields(v, schema.child(k), false, &at(k), out);
                } else {
                    out.push(at(k));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unknown_fields(item, schema.item(), false, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Fills missing fields that have a `default` in the schema.
pub(crate) fn apply_defaults(value: &mut Value, schema: &Schema) {
    match value {
        Value::Object(map) => {
            for (k, s) in &schema.properties {
                if let Some(d) = &s.default
                    && !map.contains_key(k)
                {
                    map.insert(k.clone(), d.clone());
                }
            }
            for (k, v) in map.iter_mut() {
                if k == "metadata"
                    && schema
                        .properties
                        .get(k)
                        .is_none_or(|s| s.properties.is_empty())
                {
                    continue;
                }
                apply_defaults(v, schema.child(k));
            }
        }
        Value::Array(items) => {
            for item in items {
                apply_defaults(item, schema.item());
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0) && v.is_number(),
        _ => true,
    }
}

/// Validates `value` against `schema`, appending Kubernetes-worded errors; `path` is the field path
/// of `value` (e.g. `spec.worker.replicas`).
pub(crate) fn validate(value: &Value, schema: &Schema, path: &str, errs: &mut Vec<FieldError>) {
    let in_body = |what: String| format!("{path} in body {what}");
    if value.is_null() {
        if !schema.nullable && schema.ty.is_some() {
            errs.push(FieldError::invalid(
                path,
                &Value::String("null".into()),
                in_body(format!(
                    "must be of type {}: \"null\"",
                    schema.ty.as_deref().unwrap_or_default()
                )),
            ));
        }
        return;
    }
    if schema.int_or_string {
        if !(type_matches("integer", value) || value.is_string()) {
            errs.push(FieldError::invalid(
                path,
                &Value::String(type_name(value).into()),
                in_body(format!(
                    "must be of type int-or-string: {:?}",
                    type_name(value)
                )),
            ));
            return;
        }
    } else if let Some(ty) = &schema.ty
        && !type_matches(ty, value)
    {
        errs.push(FieldError::invalid(
            path,
            &Value::String(type_name(value).into()),
            in_body(format!("must be of type {ty}: {:?}", type_name(value))),
        ));
        return;
    }
    if !schema.enum_values.is_empty() && !schema.enum_values.contains(value) {
        errs.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::NotSupported {
                value: render_value(value),
                supported: schema.enum_values.iter().map(render_value).collect(),
            },
        });
    }
    match value {
        Value::Number(n) => {
            validate_number(n.as_f64().unwrap_or_default(), value, schema, path, errs)
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = schema.min_length
                && len < min
            {
                errs.push(FieldError::invalid(
                    path,
                    value,
                    in_body(format!("should be at least {min} chars long")),
                ));
            }
            if let Some(max) = schema.max_length
                && len > max
            {
                errs.push(FieldError {
                    field: path.to_owned(),
                    kind: FieldErrorKind::TooLong { max },
                });
            }
            if let Some(re) = &schema.pattern
                && !re.is_match(s)
            {
                errs.push(FieldError::invalid(
                    path,
                    value,
                    in_body(format!("should match '{}'", re.as_str())),
                ));
            }
        }
        Value::Array(items) => validate_array(items, value, schema, path, errs),
        Value::Object(map) => validate_object(map, value, schema, path, errs),
        _ => {}
    }
    validate_combinators(value, schema, path, errs);
}

fn validate_number(f: f64, value: &Value, schema: &Schema, path: &str, errs: &mut Vec<FieldError>) {
    let fmt = |x: f64| {
        if x.fract() == 0.0 {
            format!("{}", x as i64)
        } else {
            x.to_string()
        }
    };
    if let Some(min) = schema.minimum {
        if schema.exclusive_minimum && f <= min {
            errs.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be greater than {}", fmt(min)),
            ));
        } else if f < min {
            errs.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{path} in body should be greater than or equal to {}",
                    fmt(min)
                ),
            ));
        }
    }
    if let Some(max) = schema.maximum {
        if schema.exclusive_maximum && f >= max {
            errs.push(FieldError::invalid(
                path,
                value,
                format!("{path} in body should be less than {}", fmt(max)),
            ));
        } else if f > max {
            errs.push(FieldError::invalid(
                path,
                value,
                format!(
                    "{path} in body should be less than or equal to {}",
                    fmt(max)
                ),
            ));
        }
    }
    if let Some(m) = schema.multiple_of
        && m != 0.0
        && (f / m).fract() != 0.0
    {
        errs.push(FieldError::invalid(
            path,
            value,
            format!("{path} in body should be a multiple of {}", fmt(m)),
        ));
    }
}

fn validate_array(
    items: &[Value],
    value: &Value,
    schema: &Schema,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let n = items.len() as u64;
    if let Some(min) = schema.min_items
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(max) = schema.max_items
        && n > max
    {
        errs.push(FieldError {
            field: path.to_owned(),
            kind: FieldErrorKind::TooMany {
                actual: items.len(),
                max,
            },
        });
    }
    let _ = value;
    let item_schema = schema.item();
    for (i, item) in items.iter().enumerate() {
        validate(item, item_schema, &format!("{path}[{i}]"), errs);
    }
    match &schema.list_type {
        ListType::Set => duplicates(items.iter().cloned(), path, errs),
        ListType::Map(keys) => duplicates(
            items.iter().map(|it| {
                Value::Object(
                    keys.iter()
                        .map(|k| (k.clone(), it.get(k).cloned().unwrap_or(Value::Null)))
                        .collect(),
                )
            }),
            path,
            errs,
        ),
        ListType::Atomic if schema.unique_items => duplicates(items.iter().cloned(), path, errs),
        ListType::Atomic => {}
    }
}

fn duplicates(keys: impl Iterator<Item = Value>, path: &str, errs: &mut Vec<FieldError>) {
    let mut seen: Vec<Value> = Vec::new();
    for (i, k) in keys.enumerate() {
        if seen.contains(&k) {
            errs.push(FieldError {
                field: format!("{path}[{i}]"),
                kind: FieldErrorKind::Duplicate {
                    value: k.to_string(),
                },
            });
        } else {
            seen.push(k);
        }
    }
}

fn validate_object(
    map: &Map<String, Value>,
    value: &Value,
    schema: &Schema,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let _ = value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    for r in &schema.required {
        if !map.contains_key(r) {
            errs.push(FieldError::required(join(r), ""));
        }
    }
    let n = map.len() as u64;
    if let Some(min) = schema.min_properties
        && n < min
    {
        errs.push(FieldError::invalid(
            path,
            &Value::from(n),
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    if let Some(max) = schema.max_properties
        && n > max
    {
        errs.push(FieldError::invalid(
            path,
            &Value::from(n),
            format!("{path} in body should have at most {max} properties"),
        ));
    }
    for (k, v) in map {
        if path.is_empty() && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = schema.properties.get(k) {
            validate(v, s, &join(k), errs);
        } else if let Some(s) = &schema.additional {
            validate(v, s, &join(k), errs);
        }
    }
}

fn validate_combinators(value: &Value, schema: &Schema, path: &str, errs: &mut Vec<FieldError>) {
    let passes = |s: &Schema| {
        let mut e = Vec::new();
        validate(value, s, path, &mut e);
        e.is_empty()
    };
    for s in &schema.all_of {
        validate(value, s, path, errs);
    }
    if !schema.any_of.is_empty() && !schema.any_of.iter().any(passes) {
        errs.push(FieldError::invalid(
            path,
            value,
            "must validate at least one schema (anyOf)",
        ));
    }
    if !schema.one_of.is_empty() && schema.one_of.iter().filter(|s| passes(s)).count() != 1 {
        errs.push(FieldError::invalid(
            path,
            value,
            "must validate one and only one schema (oneOf)",
        ));
    }
    if let Some(not) = &schema.not
        && passes(not)
    {
        errs.push(FieldError::invalid(
            path,
            value,
            "must not validate the schema (not)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "spec": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 5},
                    "replicas": {"type": "integer", "minimum": 0, "default": 1},
                    "mode": {"type": "string", "enum": ["a", "b"]},
                    "env": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                    "port": {"x-kubernetes-int-or-string": true},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    "opt": {"type": "string", "nullable": true}
                }}
            }
        }))
        .unwrap()
    }

    fn run(mut v: Value) -> (Value, Vec<String>) {
        let s = schema();
        drop_nulls(&mut v, &s);
        prune(&mut v, &s, true);
        apply_defaults(&mut v, &s);
        let mut errs = Vec::new();
        validate(&v, &s, "", &mut errs);
        (v, errs.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn prunes_drops_nulls_and_defaults() {
        let (v, errs) = run(json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "junk": 1,
            "spec": {"name": "abc", "env": null, "opt": null, "unknown": true,
                     "free": {"any": {"thing": 1}}, "labels": {"a": "b"}, "port": "http"}
        }));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
                   "spec": {"name": "abc", "opt": null, "free": {"any": {"thing": 1}},
                            "labels": {"a": "b"}, "port": "http", "replicas": 1}})
        );
    }

    #[test]
    fn reports_errors_like_kubernetes() {
        let (_, errs) = run(
            json!({"spec": {"name": "ABCDEFG", "replicas": -1, "mode": "c", "port": 1.5,
                                             "labels": {"a": 1}}}),
        );
        assert!(errs.contains(&"spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0".to_owned()), "{errs:?}");
        assert!(
            errs.contains(&"spec.name: Too long: may not be more than 5 bytes".to_owned()),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'"
                    .to_owned()
            ),
            "{errs:?}"
        );
        assert!(
            errs.contains(
                &"spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"".to_owned()
            ),
            "{errs:?}"
        );
        assert!(errs.contains(&"spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"".to_owned()), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.starts_with("spec.port: Invalid value")),
            "{errs:?}"
        );
        let (_, errs) = run(json!({"spec": {}}));
        assert_eq!(errs, vec!["spec.name: Required value".to_owned()]);
    }
}
