//! Object metadata: reading it from untyped objects, timestamps, uids, and the name and label rules
//! the API server enforces on every object.

use crate::error::FieldError;
use regex::Regex;
use serde_json::{Map, Value};
use std::sync::LazyLock;

/// `metadata.<field>` as a string, if set.
pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// `metadata`, created as an empty object when missing.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    match obj.get_mut("metadata") {
        Some(Value::Object(m)) => m,
        _ => unreachable!("metadata was just made an object"),
    }
}

/// `metadata.finalizers` (empty when unset).
pub(crate) fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn set_finalizers(obj: &mut Value, list: &[String]) {
    let m = meta_mut(obj);
    if list.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert(
            "finalizers".into(),
            list.iter().map(|s| Value::String(s.clone())).collect(),
        );
    }
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

/// `metadata.labels` as pairs.
pub(crate) fn labels(obj: &Value) -> Map<String, Value> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// An owner reference, reduced to what garbage collection needs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OwnerRef {
    pub uid: String,
    pub block_owner_deletion: bool,
}

pub(crate) fn owner_refs(obj: &Value) -> Vec<OwnerRef> {
    obj.get("metadata")
        .and_then(|m| m.get("ownerReferences"))
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| {
                    Some(OwnerRef {
                        uid: r.get("uid")?.as_str()?.to_owned(),
                        block_owner_deletion: r
                            .get("blockOwnerDeletion")
                            .and_then(Value::as_bool)
                            .unwrap_or(false),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// RFC 3339 at second precision, as Kubernetes `metav1.Time` serialises.
pub(crate) fn timestamp(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(crate) fn now() -> String {
    timestamp(jiff::Timestamp::now())
}

/// A uid that looks like Kubernetes' (a v4 UUID layout), unique within the process.
pub(crate) fn new_uid(seed: u64, counter: u64) -> String {
    let a = splitmix(seed ^ counter);
    let b = splitmix(a ^ counter.rotate_left(17));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a as u16) & 0x0fff,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The random suffix appended to `metadata.generateName` (Kubernetes' alphabet, 5 characters).
pub(crate) fn name_suffix(seed: u64, counter: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = splitmix(seed.wrapping_add(counter.wrapping_mul(0x9e37_79b9)));
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Which naming rule a resource's object names follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    /// RFC 1123 subdomain, up to 253 characters (most resources, custom resources, pods).
    Subdomain,
    /// RFC 1123 label, up to 63 characters (namespaces).
    Label1123,
    /// RFC 1035 label, up to 63 characters, starting with a letter (services).
    Label1035,
    /// A path segment: anything but `.`, `..`, `/` and `%` (RBAC objects, e.g.
    /// `system:controller:job-controller`).
    Path,
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL1123_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const LABEL1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

static SUBDOMAIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
        .expect("static regex")
});
static LABEL1123: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$").expect("static regex"));
static LABEL1035: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z]([-a-z0-9]*[a-z0-9])?$").expect("static regex"));
static LABEL_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").expect("static regex")
});
static QUALIFIED_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$").expect("static regex")
});

/// Checks an object name against its resource's rule; errors name `metadata.name`.
pub(crate) fn validate_name(name: &str, rule: NameRule, errs: &mut Vec<FieldError>) {
    let field = "metadata.name";
    let v = Value::String(name.to_owned());
    let (max, re, msg) = match rule {
        NameRule::Path => return validate_path_segment(name, errs),
        NameRule::Subdomain => (253, &*SUBDOMAIN, SUBDOMAIN_MSG),
        NameRule::Label1123 => (63, &*LABEL1123, LABEL1123_MSG),
        NameRule::Label1035 => (63, &*LABEL1035, LABEL1035_MSG),
    };
    if name.len() > max {
        errs.push(FieldError::invalid(
            field,
            &v,
            format!("must be no more than {max} characters"),
        ));
    }
    if !re.is_match(name) {
        errs.push(FieldError::invalid(field, &v, msg));
    }
}

/// Kubernetes' `IsValidPathSegmentName`: the rule of RBAC object names.
fn validate_path_segment(name: &str, errs: &mut Vec<FieldError>) {
    let v = Value::String(name.to_owned());
    if name == "." || name == ".." {
        errs.push(FieldError::invalid(
            "metadata.name",
            &v,
            format!("may not be '{name}'"),
        ));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(FieldError::invalid(
                "metadata.name",
                &v,
                format!("may not contain '{bad}'"),
            ));
        }
    }
}

/// Checks label keys and values and annotation keys, as `ValidateObjectMeta` does.
pub(crate) fn validate_labels_and_annotations(obj: &Value, errs: &mut Vec<FieldError>) {
    if let Some(labels) = obj
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            validate_qualified_name(k, "metadata.labels", errs);
            match v.as_str() {
                Some(s) if s.len() <= 63 && LABEL_VALUE.is_match(s) => {}
                Some(s) if s.len() > 63 => {
                    errs.push(FieldError::invalid("metadata.labels", v, "must be no more than 63 characters"))
                }
                _ => errs.push(FieldError::invalid(
                    "metadata.labels",
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
                )),
            }
        }
    }
    if let Some(ann) = obj
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        for (k, v) in ann {
            validate_qualified_name(k, "metadata.annotations", errs);
            if !v.is_string() {
                errs.push(FieldError::invalid(
                    format!("metadata.annotations.{k}"),
                    v,
                    "must be a string",
                ));
            }
        }
    }
}

fn validate_qualified_name(key: &str, field: &str, errs: &mut Vec<FieldError>) {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let bad = |errs: &mut Vec<FieldError>, detail: &str| {
        errs.push(FieldError::invalid(
            field,
            &Value::String(key.to_owned()),
            detail,
        ))
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !SUBDOMAIN.is_match(p))
    {
        bad(errs, "prefix part must be a lowercase RFC 1123 subdomain");
    }
    if name.is_empty() || name.len() > 63 || !QUALIFIED_NAME.is_match(name) {
        bad(
            errs,
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') and be no more than 63 characters",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_their_rule() {
        let mut errs = Vec::new();
        validate_name("web-0.a", NameRule::Subdomain, &mut errs);
        assert!(errs.is_empty());
        validate_name("Web", NameRule::Subdomain, &mut errs);
        assert_eq!(errs.len(), 1);
        errs.clear();
        validate_name("a.b", NameRule::Label1035, &mut errs);
        validate_name("1ab", NameRule::Label1035, &mut errs);
        assert_eq!(errs.len(), 2);
        errs.clear();
        validate_name(&"a".repeat(254), NameRule::Subdomain, &mut errs);
        assert!(
            errs[0]
                .to_string()
                .contains("must be no more than 253 characters")
        );
    }

    #[test]
    fn uids_are_unique_and_uuid_shaped() {
        let a = new_uid(7, 1);
        let b = new_uid(7, 2);
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert_eq!(name_suffix(1, 2).len(), 5);
    }
}
