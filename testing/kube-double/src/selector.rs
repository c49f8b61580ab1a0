//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!key`) and field selectors
//! (`metadata.name`, `metadata.namespace`, plus the per-resource fields Kubernetes supports).

use crate::error::ApiError;
use crate::meta::labels;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<LabelReq>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let labels = labels(obj);
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas that are not inside `( ... )`.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelReq, ApiError> {
    let bad = || {
        ApiError::bad_request(format!(
            "unable to parse requirement: {part:?}: found unexpected input"
        ))
    };
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelReq::NotExists(checked_key(key.trim(), part)?));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(LabelReq::NotEq(
            checked_key(k.trim(), part)?,
            v.trim().to_owned(),
        ));
    }
    if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(LabelReq::Eq(
            checked_key(k.trim(), part)?,
            v.trim().to_owned(),
        ));
    }
    let Some((key, rest)) = part.split_once(char::is_whitespace) else {
        return Ok(LabelReq::Exists(checked_key(part, part)?));
    };
    let rest = rest.trim_start();
    let (op, values) = rest
        .split_once(|c: char| c.is_whitespace() || c == '(')
        .ok_or_else(bad)?;
    let values = if rest[op.len()..].trim_start().starts_with('(') {
        rest[op.len()..].trim()
    } else {
        values.trim()
    };
    let inner = values
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(bad)?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    let key = checked_key(key, part)?;
    match op {
        "in" => Ok(LabelReq::In(key, values)),
        "notin" => Ok(LabelReq::NotIn(key, values)),
        _ => Err(bad()),
    }
}

fn checked_key(key: &str, part: &str) -> Result<String, ApiError> {
    if key.is_empty() || key.contains(char::is_whitespace) {
        Err(ApiError::bad_request(format!(
            "unable to parse requirement: {part:?}: invalid label key {key:?}"
        )))
    } else {
        Ok(key.to_owned())
    }
}

#[derive(Clone, Debug, PartialEq)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`: `path=value`, `path==value` and `path!=value` terms.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FieldSelector(Vec<FieldReq>);

impl FieldSelector {
    /// Parses a selector, refusing fields the resource does not support (as the API server does).
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, value, equal) = if let Some((k, v)) = part.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: {text:?}; can't understand {part:?}"
                )));
            };
            let path = path.trim();
            if path != "metadata.name" && path != "metadata.namespace" && !supported.contains(&path)
            {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {path}"
                )));
            }
            reqs.push(FieldReq {
                path: path.to_owned(),
                value: value.trim().to_owned(),
                equal,
            });
        }
        Ok(FieldSelector(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|r| {
            let actual = r.path.split('.').try_fold(obj, |v, seg| v.get(seg));
            let actual = match actual {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (actual == r.value) == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn label_selector_operators() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web, db)", true),
            ("app notin (web,db)", false),
            ("app,tier", true),
            ("!missing", true),
            ("!app", false),
            ("app=web,tier in (back)", false),
            ("missing notin (x)", true),
            ("missing!=x", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }

    #[test]
    fn field_selector_terms() {
        let o = obj(json!({}));
        let sel = FieldSelector::parse("metadata.name=a,metadata.namespace!=other", &[]).unwrap();
        assert!(sel.matches(&o));
        assert!(
            FieldSelector::parse("status.phase=Running", &["status.phase"])
                .unwrap()
                .matches(&o)
        );
        assert_eq!(
            FieldSelector::parse("spec.foo=1", &[]).unwrap_err().code,
            400
        );
    }
}
