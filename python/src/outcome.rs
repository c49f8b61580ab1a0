//! A task's outcome as Python sees it: `(VALUE, object)`, `(PICKLED, bytes)` or
//! `(FAILED, dict)`. Unpickling and raising are left to `rask.distributed`, which knows the
//! user's exception types; errors of the client itself (a lost connection, a result that cannot
//! be fetched) raise here.

use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use rask_client::ClientError;
use rask_core::data::{TAG_PICKLE, TAG_SERDE};
use rask_core::protocol::{TaskError, TaskFailure};
use rask_core::{Encoded, KernelError, Value};

/// A native value, converted (`None`, `bool`, `int`, `float`, `str`, `bytes`, `list`).
const VALUE: u8 = 0;
/// Pickle bytes, for the caller to unpickle.
const PICKLED: u8 = 1;
/// The task failed: a dict describing the failure.
const FAILED: u8 = 2;

/// Converts a result (or the error waiting for it) into the outcome tuple.
pub(crate) fn outcome<'py>(
    py: Python<'py>,
    key: &str,
    result: Result<Encoded, ClientError>,
) -> PyResult<Bound<'py, PyTuple>> {
    match result {
        Ok(e) => match e.tag() {
            Some(TAG_PICKLE) => {
                let body = &e.bytes()[1..];
                PyTuple::new(
                    py,
                    [
                        PICKLED.into_pyobject(py)?.into_any(),
                        PyBytes::new(py, body).into_any(),
                    ],
                )
            }
            Some(TAG_SERDE) => {
                let v = e.decode::<Value>().map_err(|err| {
                    PyRuntimeError::new_err(format!("result of {key} cannot be decoded: {err}"))
                })?;
                PyTuple::new(
                    py,
                    [VALUE.into_pyobject(py)?.into_any(), value_to_py(py, &v)?],
                )
            }
            Some(tag) => Err(PyRuntimeError::new_err(format!(
                "result of {key} is data of format tag {tag} (an array chunk or a dataframe \
                 partition?), which Python cannot read"
            ))),
            None => Err(PyRuntimeError::new_err(format!(
                "result of {key} is empty (corrupt)"
            ))),
        },
        Err(ClientError::Task(failure)) => PyTuple::new(
            py,
            [
                FAILED.into_pyobject(py)?.into_any(),
                failure_dict(py, &failure)?.into_any(),
            ],
        ),
        Err(ClientError::Cancelled(key)) => {
            let d = PyDict::new(py);
            d.set_item("key", key.as_str())?;
            d.set_item("message", format!("{key} was cancelled"))?;
            d.set_item("kind", "cancelled")?;
            PyTuple::new(py, [FAILED.into_pyobject(py)?.into_any(), d.into_any()])
        }
        Err(e @ (ClientError::Lost(_) | ClientError::Connect { .. })) => {
            Err(PyConnectionError::new_err(e.to_string()))
        }
        Err(
            e @ (ClientError::Decode { .. }
            | ClientError::Fetch { .. }
            | ClientError::UnknownKeys(_)),
        ) => Err(PyRuntimeError::new_err(e.to_string())),
    }
}

/// The outcome of an encoded result given as bytes (a format tag, then the body): how results
/// read from the cluster are converted, for the tests of every kind of value.
#[pyfunction]
pub(crate) fn decode_result<'py>(py: Python<'py>, encoded: &[u8]) -> PyResult<Bound<'py, PyTuple>> {
    let e = Encoded::from_bytes(bytes::Bytes::copy_from_slice(encoded));
    outcome(py, "(given)", Ok(e))
}

/// `{"key", "message", "kind"}`; for an exception of the user's Python code (`kind` "python")
/// also `"type"`, `"text"`, `"traceback"` and `"pickled"` (the exception, or `None`); for a
/// killed worker `"deaths"`.
pub(crate) fn failure_dict<'py>(py: Python<'py>, f: &TaskFailure) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("key", f.key.as_str())?;
    d.set_item("message", f.to_string())?;
    let kind = match &f.error {
        TaskError::Kernel(KernelError::Python(e)) => {
            d.set_item("type", &e.type_name)?;
            d.set_item("text", &e.message)?;
            d.set_item("traceback", &e.traceback)?;
            d.set_item("pickled", e.pickled.as_ref().map(|b| PyBytes::new(py, b)))?;
            "python"
        }
        TaskError::Kernel(_) => "kernel",
        TaskError::KilledWorker { deaths, .. } => {
            d.set_item("deaths", *deaths)?;
            "killed_worker"
        }
        _ => "scheduler",
    };
    d.set_item("kind", kind)?;
    Ok(d)
}

/// A native [`Value`] as the Python object it stands for.
pub(crate) fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(x) => x.into_pyobject(py)?.into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
        Value::List(items) => {
            let items = items
                .iter()
                .map(|i| value_to_py(py, i))
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)?.into_any()
        }
    })
}
