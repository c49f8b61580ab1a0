//! Errors: the crate's own [`Error`] for misuse of the test double, and [`ApiError`], a failure the
//! simulated API server answers with as a Kubernetes `Status` object.

use serde_json::{Value, json};
use std::fmt;

/// A mistake in how a test set the double up (not an API failure: those reach the client as
/// `kube::Error::Api`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CustomResourceDefinition cannot be served.
    #[error("CustomResourceDefinition {name:?} cannot be installed: {reason}")]
    InvalidCrd {
        /// `metadata.name` of the CRD.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A CRD version's `openAPIV3Schema` could not be read.
    #[error("CustomResourceDefinition {name:?} version {version}: schema is not usable: {reason}")]
    Schema {
        /// `metadata.name` of the CRD.
        name: String,
        /// The version whose schema failed.
        version: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// One field-level problem, rendered the way the Kubernetes API server renders `field.Error`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldError {
    pub field: String,
    pub kind: FieldErrorKind,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum FieldErrorKind {
    /// `Invalid value: <value>: <detail>`
    Invalid { value: String, detail: String },
    /// `Required value` (with an optional detail).
    Required { detail: String },
    /// `Unsupported value: <value>: supported values: ...`
    NotSupported {
        value: String,
        supported: Vec<String>,
    },
    /// `Too long: may not be more than N bytes`
    TooLong { max: u64 },
    /// `Too many: N: must have at most M items`
    TooMany { actual: usize, max: u64 },
    /// `Forbidden: <detail>`
    Forbidden { detail: String },
    /// `Duplicate value: <value>`
    Duplicate { value: String },
}

impl FieldError {
    pub fn invalid(field: impl Into<String>, value: &Value, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Invalid {
                value: render_value(value),
                detail: detail.into(),
            },
        }
    }

    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Required {
                detail: detail.into(),
            },
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            kind: FieldErrorKind::Forbidden {
                detail: detail.into(),
            },
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Invalid { .. } => "FieldValueInvalid",
            FieldErrorKind::Required { .. } => "FieldValueRequired",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::TooLong { .. } => "FieldValueTooLong",
            FieldErrorKind::TooMany { .. } => "FieldValueTooMany",
            FieldErrorKind::Forbidden { .. } => "FieldValueForbidden",
            FieldErrorKind::Duplicate { .. } => "FieldValueDuplicate",
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.field)?;
        match &self.kind {
            FieldErrorKind::Invalid { value, detail } => {
                write!(f, "Invalid value: {value}")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            FieldErrorKind::Required { detail } if detail.is_empty() => write!(f, "Required value"),
            FieldErrorKind::Required { detail } => write!(f, "Required value: {detail}"),
            FieldErrorKind::NotSupported { value, supported } => {
                write!(
                    f,
                    "Unsupported value: {value}: supported values: {}",
                    supported.join(", ")
                )
            }
            FieldErrorKind::TooLong { max } => {
                write!(f, "Too long: may not be more than {max} bytes")
            }
            FieldErrorKind::TooMany { actual, max } => {
                write!(f, "Too many: {actual}: must have at most {max} items")
            }
            FieldErrorKind::Forbidden { detail } => write!(f, "Forbidden: {detail}"),
            FieldErrorKind::Duplicate { value } => write!(f, "Duplicate value: {value}"),
        }
    }
}

/// Renders a value the way Kubernetes prints it in field errors: strings quoted, numbers bare.
pub(crate) fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Object(_) => "\"object\"".to_owned(),
        Value::Array(_) => "\"array\"".to_owned(),
        other => other.to_string(),
    }
}

/// A request failure, answered as a Kubernetes `Status` (which kube parses into `kube::Error::Api`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: String,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason: reason.to_owned(),
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// `404 NotFound`, e.g. `pods "web-0" not found`.
    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", group_resource(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    /// `404 NotFound` for a path the server does not serve.
    pub fn no_route() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// `409 AlreadyExists` for a create of an existing name.
    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", group_resource(group, plural)),
        )
        .with_details(details(group, plural, name))
    }

    /// `409 Conflict` for an optimistic-concurrency failure (stale `resourceVersion`, failed precondition).
    pub fn conflict(group: &str, plural: &str, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                group_resource(group, plural)
            ),
        )
        .with_details(details(group, plural, name))
    }

    /// `409 Conflict` for server-side apply field-manager conflicts: `(manager, field path)`.
    pub fn apply_conflicts(
        group: &str,
        plural: &str,
        name: &str,
        api_version: &str,
        conflicts: &[(String, String)],
    ) -> Self {
        let n = conflicts.len();
        let message = if n == 1 {
            let (manager, field) = &conflicts[0];
            format!(
                "Apply failed with 1 conflict: conflict with {manager:?} using {api_version}: {field}"
            )
        } else {
            let mut m = format!("Apply failed with {n} conflicts: ");
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(manager, field)| {
                    format!("conflict with {manager:?} using {api_version}: {field}")
                })
                .collect();
            m.push_str(&lines.join("\n"));
            m
        };
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(manager, field)| {
                json!({"reason": "FieldManagerConflict", "message": format!("conflict with {manager:?} using {api_version}"), "field": field})
            })
            .collect();
        let mut d = details(group, plural, name);
        d["causes"] = Value::Array(causes);
        ApiError::new(409, "Conflict", message).with_details(d)
    }

    /// `422 Invalid` naming every field problem, e.g.
    /// `DaskCluster.kubernetes.dask.org "foo" is invalid: spec.worker.replicas: Invalid value: -1: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_owned()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let joined = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| {
                let text = e.to_string();
                let message = text
                    .strip_prefix(&format!("{}: ", e.field))
                    .unwrap_or(&text)
                    .to_owned();
                json!({"reason": e.reason(), "message": message, "field": e.field})
            })
            .collect();
        let mut d = json!({"name": name, "kind": kind, "causes": causes});
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError::new(
            422,
            "Invalid",
            format!("{qualified} {name:?} is invalid: {joined}"),
        )
        .with_details(d)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        ApiError::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {content_type:?})"
            ),
        )
    }

    /// `410 Gone` / `Expired`, for a watch or continue token older than the retained history.
    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    /// The failure injected by a test through [`crate::Fault`].
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        ApiError::new(
            code,
            reason,
            format!("injected failure: {reason} ({code}) from the kube-double fault knob"),
        )
    }

    /// The `Status` object sent to the client.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

/// `pods` or `daskclusters.kubernetes.dask.org`, as Kubernetes names a resource in messages.
pub(crate) fn group_resource(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, plural: &str, name: &str) -> Value {
    let mut d = json!({"name": name, "kind": plural});
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}
