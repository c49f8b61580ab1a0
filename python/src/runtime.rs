//! The process's tokio runtime, and waiting on it from Python without holding the GIL.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How long a wait runs between checks for signals (Ctrl-C in a waiting `result()`).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The runtime every client of this process uses: two threads read the connections and fetch
/// results while Python threads wait.
pub(crate) fn runtime() -> PyResult<&'static Runtime> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("rask-client")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start rask's runtime: {e}")))
}

/// `timeout` in seconds from Python: `None` waits for ever; negative or not a number is an error.
pub(crate) fn deadline(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t >= 0.0 => Ok(Some(
            Instant::now() + Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX / 4),
        )),
        Some(t) => Err(PyValueError::new_err(format!(
            "timeout {t} is not a number of seconds ≥ 0"
        ))),
    }
}

/// Runs `fut` to completion on the runtime with the GIL released, until `deadline` (`None` at
/// the deadline). Signals are checked between slices, so Ctrl-C interrupts a long wait.
pub(crate) fn block_on<F>(
    py: Python<'_>,
    deadline: Option<Instant>,
    fut: F,
) -> PyResult<Option<F::Output>>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let rt = runtime()?;
    let mut fut = std::pin::pin!(fut);
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
            None => SIGNAL_CHECK,
        };
        let fut = fut.as_mut();
        // `timeout` polls the future before looking at the clock, so a zero slice still sees a
        // result that is ready.
        let out = py.detach(|| rt.block_on(async { tokio::time::timeout(slice, fut).await.ok() }));
        if let Some(v) = out {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}
