//! `rask._rask`: rask's Rust client ([`rask_client`]) for the `rask` Python package.
//!
//! The pure-Python part (`python/rask/`) pickles users' functions and arguments; this module sends
//! them as `python.call` tasks, waits for results with the GIL released, and hands back what came:
//! pickled bytes, native values converted to Python, or a failure described as a dict that
//! `rask.distributed` turns into the user's exception. One tokio runtime per process runs every
//! client's connections.

mod array;
mod client;
mod frame;
mod graph;
mod outcome;
mod progress;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _rask(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<array::Array>()?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::Future>()?;
    m.add_class::<client::Completions>()?;
    m.add_class::<progress::Progress>()?;
    frame::register(m)?;
    m.add_function(wrap_pyfunction!(client::wait_all, m)?)?;
    m.add_function(wrap_pyfunction!(client::gather, m)?)?;
    m.add_function(wrap_pyfunction!(client::unique_key, m)?)?;
    m.add_function(wrap_pyfunction!(client::visualize, m)?)?;
    m.add_function(wrap_pyfunction!(progress::follow, m)?)?;
    m.add_function(wrap_pyfunction!(outcome::decode_result, m)?)?;
    m.add("FUNCTION", rask_python::CALL.name())?;
    Ok(())
}
