//! The error of building or computing an array.

use std::path::PathBuf;

use rask_client::ClientError;

/// Why an array could not be built or computed.
#[derive(Debug, thiserror::Error)]
pub enum ArrayError {
    #[error("bad chunks: {0}")]
    Chunks(String),
    #[error("bad slice: {0}")]
    Slice(String),
    #[error("shapes do not match: {0}")]
    Shape(String),
    #[error("axis {axis} is out of range for an array of {ndim} dimensions")]
    Axis { axis: usize, ndim: usize },
    #[error("{}: {reason}", path.display())]
    Npy { path: PathBuf, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("a computed chunk is wrong: {0}")]
    Result(String),
}
