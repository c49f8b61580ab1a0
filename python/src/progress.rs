//! Following futures with the scheduler's progress reports (Dask's `progress`): the tasks of the
//! futures and every unfinished task they depend on, counted by the scheduler as it moves them,
//! the same reports `rask run` and `rask-operator up` draw their bars from.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyConnectionError, PyKeyError, PyRuntimeError};
use pyo3::prelude::*;

use rask_client::{ClientError, ProgressSnapshot};
use rask_core::Key;

use crate::client::{Client, Future};
use crate::runtime::{block_on, deadline};

/// A follow of some futures' tasks; dropping it tells the scheduler to stop reporting.
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct Progress {
    /// Locked only without the GIL (inside the wait).
    inner: Mutex<rask_client::Progress>,
}

/// Where the followed tasks stand: `(done, total, finished, erred)`, `done` once every one has
/// finished or failed.
type Counts = (bool, u64, u64, u64);

fn counts(s: &ProgressSnapshot) -> Counts {
    (s.done, s.total(), s.memory(), s.erred())
}

fn py_err(e: ClientError) -> PyErr {
    match e {
        ClientError::UnknownKeys(keys) => {
            let names: Vec<&str> = keys.iter().map(Key::as_str).collect();
            PyKeyError::new_err(format!(
                "the scheduler does not know {}: released, or never computed",
                names.join(", ")
            ))
        }
        e @ (ClientError::Lost(_) | ClientError::Connect { .. }) => {
            PyConnectionError::new_err(e.to_string())
        }
        e => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Follows `futures` (of `client`) and what they depend on; waits for the scheduler's first
/// report.
#[pyfunction]
pub(crate) fn follow(
    py: Python<'_>,
    client: PyRef<'_, Client>,
    futures: Vec<PyRef<'_, Future>>,
) -> PyResult<Progress> {
    let native = client.inner.clone();
    let keys: Vec<Key> = futures.iter().map(|f| f.inner.key().clone()).collect();
    let progress = block_on(py, None, async move { native.follow(keys).await })?
        .ok_or_else(|| PyRuntimeError::new_err("a wait without a deadline ended"))?
        .map_err(py_err)?;
    Ok(Progress {
        inner: Mutex::new(progress),
    })
}

#[pymethods]
impl Progress {
    /// Waits at most `timeout` seconds for the next report; returns the latest counts either
    /// way.
    fn next(&self, py: Python<'_>, timeout: f64) -> PyResult<Counts> {
        let until = deadline(Some(timeout))?.unwrap_or_else(Instant::now);
        py.detach(|| {
            let mut progress = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let rt = crate::runtime::runtime()?;
            let left = until.saturating_duration_since(Instant::now());
            let changed = rt.block_on(async {
                tokio::time::timeout(left.max(Duration::from_millis(1)), progress.changed()).await
            });
            match changed {
                Ok(Ok(now)) => Ok(counts(&now)),
                Ok(Err(e)) => Err(py_err(e)),
                Err(_) => Ok(counts(&progress.snapshot())),
            }
        })
    }

    /// The latest counts, without waiting.
    fn snapshot(&self) -> Counts {
        let progress = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        counts(&progress.snapshot())
    }
}
