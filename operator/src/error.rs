//! The operator's error type: what failed, and whether waiting for a change or retrying helps.

use crate::scheduler_api::SchedulerApiError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    SchedulerApi(#[from] SchedulerApiError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BackendError),
    #[error("{0}")]
    Other(String),
}

/// How a failed reconcile is retried (see `controller::retry_after`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Someone else wrote first (409): read again and retry at once.
    Conflict,
    /// The API server refused what was sent (400, 403, 422, ...): only a change can fix it.
    Refused,
    /// Unavailable, throttled or unreachable: back off and retry.
    Transient,
}

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(_) => "kube",
            Error::SchedulerApi(_) => "scheduler_api",
            Error::Backend(_) => "backend",
            Error::Other(_) => "other",
        }
    }

    /// The API server's message when it refused the request as not allowed (`403 Forbidden`):
    /// the operator's RBAC lacks a permission, and the message names it.
    pub fn forbidden(&self) -> Option<&str> {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => Some(&s.message),
            _ => None,
        }
    }

    /// How to retry after this error.
    pub fn retry(&self) -> Retry {
        match self {
            Error::Kube(kube::Error::Api(s)) => match s.code {
                409 => Retry::Conflict,
                // Gone meanwhile (the next reconcile sees it), timeouts, throttling, server errors.
                404 | 408 | 410 | 429 | 500.. => Retry::Transient,
                _ => Retry::Refused,
            },
            Error::Kube(_) | Error::SchedulerApi(_) | Error::Backend(_) => Retry::Transient,
            Error::Other(_) => Retry::Refused,
        }
    }
}

/// Why a resource's spec cannot be reconciled; `problems` names every one by its field path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {name}: {}", problems.join("; "))]
pub struct Invalid {
    pub kind: &'static str,
    pub name: String,
    pub problems: Vec<String>,
}

/// Whether an API error means the object is gone (deleting it again is done).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> Error {
        Error::Kube(kube::Error::Api(
            kube::core::Status::failure("x", "y")
                .with_code(code)
                .boxed(),
        ))
    }

    #[test]
    fn errors_are_retried_by_their_kind() {
        assert_eq!(api(409).retry(), Retry::Conflict);
        for code in [400, 403, 422] {
            assert_eq!(api(code).retry(), Retry::Refused, "{code}");
        }
        for code in [404, 429, 500, 503] {
            assert_eq!(api(code).retry(), Retry::Transient, "{code}");
        }
        assert_eq!(api(403).kind(), "forbidden");
        assert_eq!(api(403).forbidden(), Some("x"));
        assert_eq!(api(422).forbidden(), None);
        let unreachable = Error::SchedulerApi(SchedulerApiError::Unreachable {
            url: "http://s".into(),
            reason: "refused".into(),
        });
        assert_eq!(unreachable.retry(), Retry::Transient);
    }
}
