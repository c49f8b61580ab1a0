//! A `rask.delayed` graph as Python sends it (`(key, pickled call, input keys)`, inputs first)
//! made into `python.call` tasks, for the collections whose partitions Python functions compute
//! (`rask.array.from_delayed`, `rask.dataframe.from_delayed`).

use std::collections::HashMap;

use bytes::Bytes;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rask_client::delayed::{Delayed, Deps};
use rask_core::function::encode_payload;
use rask_core::{Key, Pickled};
use rask_python::{CALL, PyCall};

use crate::client::Future;

/// One task of a `rask.delayed` graph: key, pickled call, input keys.
pub(crate) type GraphTask<'py> = (String, Bound<'py, PyBytes>, Vec<String>);

/// A graph's tasks as `python.call` tasks.
pub(crate) struct PythonGraph {
    /// Every task, by key.
    pub(crate) tasks: HashMap<String, Delayed<Pickled>>,
    /// The last task given (the root of a graph of one root).
    pub(crate) last: Option<Delayed<Pickled>>,
}

/// The tasks by key, and the last one. `held` are the futures the graph reads that are already
/// on the cluster; a task reading a key that is neither an earlier task nor one of them is an
/// error naming both.
pub(crate) fn python_graph(
    tasks: Vec<GraphTask<'_>>,
    held: &[PyRef<'_, Future>],
) -> PyResult<PythonGraph> {
    let held: HashMap<&str, &rask_client::Future> = held
        .iter()
        .map(|f| (f.inner.key().as_str(), &f.inner))
        .collect();
    let mut built_tasks: HashMap<String, Delayed<Pickled>> = HashMap::new();
    let mut last = None;
    for (key, call, inputs) in tasks {
        if key.is_empty() {
            return Err(PyValueError::new_err("a task's key must not be empty"));
        }
        let mut deps = Deps::new();
        let mut positions = Vec::with_capacity(inputs.len());
        for k in &inputs {
            let position = if let Some(d) = built_tasks.get(k) {
                deps.input(d)
            } else if let Some(f) = held.get(k.as_str()) {
                deps.input(*f).cast()
            } else {
                return Err(PyValueError::new_err(format!(
                    "task {key} reads {k}, which is neither an earlier task nor a future"
                )));
            };
            positions.push(position);
        }
        let payload = encode_payload(&PyCall {
            call: Bytes::copy_from_slice(call.as_bytes()),
            inputs: positions,
        })
        .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let d = Delayed::from_parts(Key::new(key.clone()), CALL.func_name(), payload, deps);
        built_tasks.insert(key, d.clone());
        last = Some(d);
    }
    Ok(PythonGraph {
        tasks: built_tasks,
        last,
    })
}
