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

impl Error {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(_) => "kube",
            Error::SchedulerApi(_) => "scheduler_api",
            Error::Backend(_) => "backend",
            Error::Other(_) => "other",
        }
    }
}

/// Whether an API error means the object is gone (deleting it again is done).
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}
