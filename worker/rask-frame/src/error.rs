//! The dataframe layer's one error type: building a frame on the client, and running its
//! kernels on a worker (where it becomes the task's [`KernelError`]).

use std::path::PathBuf;

use rask_client::ClientError;
use rask_core::KernelError;

/// Why a dataframe could not be built, computed or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("bad glob pattern {pattern:?}: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("no file matches {0:?}")]
    NoFiles(String),
    /// Tasks carry paths as text.
    #[error("path {0:?} is not UTF-8; rename it to read or write it with rask")]
    NonUtf8Path(PathBuf),
    #[error("bad blocksize {given:?}: {reason}")]
    BadBlocksize { given: String, reason: String },
    #[error("sep {given:?} cannot separate fields: {reason}")]
    BadSep { given: String, reason: String },
    #[error("{what} {path}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// A CSV file that cannot be read as the frame's: the detail names the line, byte offset
    /// and column when it can.
    #[error("{path}: {detail}")]
    Csv { path: PathBuf, detail: String },
    /// A Parquet file that cannot be read, or whose columns do not fit a frame.
    #[error("{0}")]
    Parquet(String),
    /// A column, filter or aggregation that does not fit the frame.
    #[error("{0}")]
    Invalid(String),
    /// A step of a partition's pipeline failed (`filter`, `select`, `head`, `groupby`).
    #[error("{step}: {reason}")]
    Compute { step: &'static str, reason: String },
    #[error("writing {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    /// A task failed (a malformed row, a missing file, ...): the cluster's message.
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("unexpected task result: {0}")]
    Result(String),
}

/// A kernel's own failure: the message names the file, block, column or value.
impl From<FrameError> for KernelError {
    fn from(e: FrameError) -> KernelError {
        KernelError::failed(e)
    }
}

impl FrameError {
    /// Makes an I/O error about `path` (`what` was being done: "opening", "creating", ...) a
    /// [`FrameError::Io`]: `.map_err(FrameError::io(path, "creating"))`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        what: &'static str,
    ) -> impl FnOnce(std::io::Error) -> FrameError {
        let path = path.into();
        move |source| FrameError::Io { path, what, source }
    }
}
