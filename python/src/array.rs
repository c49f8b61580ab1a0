//! `rask._rask.Array`: [`rask_array::Array`] for `rask.array`, which gives it Dask's names.
//!
//! Every operation builds a graph of the array family's native kernels; Python only names them.
//! `compute` gathers the chunks with the GIL released and hands the values back as one
//! `bytearray` of raw f64 and the shape, for `numpy.frombuffer`: no Python object per element.

use pyo3::exceptions::{
    PyConnectionError, PyIndexError, PyOSError, PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};

use rask_array::{ArrayError, BinOp, ChunkSpec, UnOp};
use rask_client::ClientError;

use crate::client::{Client, Future};
use crate::graph::{GraphTask, python_graph};
use crate::outcome::failure_dict;
use crate::runtime::{block_on, runtime};

/// A lazy chunked n-d array of f64.
#[pyclass(module = "rask._rask", name = "Array", frozen)]
pub(crate) struct Array {
    inner: rask_array::Array,
}

impl From<rask_array::Array> for Array {
    fn from(inner: rask_array::Array) -> Array {
        Array { inner }
    }
}

#[pymethods]
impl Array {
    /// Uniform [0, 1) values; the same seed and chunks give the same array.
    #[staticmethod]
    fn random(shape: Vec<usize>, chunks: &Bound<'_, PyAny>, seed: u64) -> PyResult<Array> {
        built(rask_array::random(&shape, chunk_spec(chunks)?, seed))
    }

    /// Every element `value`.
    #[staticmethod]
    fn full(shape: Vec<usize>, chunks: &Bound<'_, PyAny>, value: f64) -> PyResult<Array> {
        built(rask_array::full(&shape, chunk_spec(chunks)?, value))
    }

    #[staticmethod]
    fn arange(start: f64, stop: f64, step: f64, chunks: &Bound<'_, PyAny>) -> PyResult<Array> {
        built(rask_array::arange(start, stop, step, chunk_spec(chunks)?))
    }

    /// An in-memory array from its raw values (f64 little-endian, C order) and shape.
    #[staticmethod]
    fn from_buffer(data: &[u8], shape: Vec<usize>, chunks: &Bound<'_, PyAny>) -> PyResult<Array> {
        let len: usize = shape.iter().product();
        if Some(data.len()) != len.checked_mul(8) {
            return Err(PyValueError::new_err(format!(
                "{} bytes of values for an array of shape {shape:?} ({len} f64 values)",
                data.len()
            )));
        }
        let values = data
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect();
        let a = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&shape), values)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        built(rask_array::from_ndarray(&a, chunk_spec(chunks)?))
    }

    /// A one-chunk array of `shape` computed by the last task of a `rask.delayed` graph, which
    /// returns the raw values as `bytes`. `tasks` come inputs first; `held` are the futures the
    /// graph reads that are already on the cluster.
    #[staticmethod]
    fn from_python_graph(
        tasks: Vec<GraphTask<'_>>,
        held: Vec<PyRef<'_, Future>>,
        shape: Vec<usize>,
    ) -> PyResult<Array> {
        let root = python_graph(tasks, &held)?
            .last
            .ok_or_else(|| PyValueError::new_err("an empty graph"))?;
        built(rask_array::from_pickled(&root, &shape))
    }

    #[getter]
    fn shape(&self) -> Vec<usize> {
        self.inner.shape().to_vec()
    }

    /// The chunk sizes along each dimension.
    #[getter]
    fn chunks(&self) -> Vec<Vec<usize>> {
        self.inner.chunks().to_vec()
    }

    /// `name(x)` elementwise: `negative`, `abs`, `sqrt`, `exp`, `log`, `sin`, `cos`, `square`.
    fn unary(&self, name: &str) -> PyResult<Array> {
        let op = match name {
            "negative" => UnOp::Neg,
            "abs" => UnOp::Abs,
            "sqrt" => UnOp::Sqrt,
            "exp" => UnOp::Exp,
            "log" => UnOp::Log,
            "sin" => UnOp::Sin,
            "cos" => UnOp::Cos,
            "square" => UnOp::Square,
            other => {
                return Err(PyValueError::new_err(format!(
                    "no elementwise function {other:?} in rask's array kernels"
                )));
            }
        };
        Ok(self.inner.unary(op).into())
    }

    /// `self op other` for arrays of one shape and chunks (or one of them 0-d).
    fn binary(&self, op: &str, other: PyRef<'_, Array>) -> PyResult<Array> {
        built(self.inner.elementwise(bin_op(op)?, &other.inner))
    }

    /// `self op value`, or `value op self` when `scalar_first`.
    fn scalar(&self, op: &str, value: f64, scalar_first: bool) -> PyResult<Array> {
        Ok(self
            .inner
            .scalar_op(bin_op(op)?, value, scalar_first)
            .into())
    }

    /// A reduction over all axes (`axis` None) or one: `sum`, `mean`, `min`, `max`, `var`,
    /// `std` (with `ddof`), `argmin`, `argmax`.
    #[pyo3(signature = (name, axis, ddof=0.0))]
    fn reduce(&self, name: &str, axis: Option<usize>, ddof: f64) -> PyResult<Array> {
        let a = &self.inner;
        built(match name {
            "sum" => a.sum(axis),
            "mean" => a.mean(axis),
            "min" => a.min(axis),
            "max" => a.max(axis),
            "var" => a.var(axis, ddof),
            "std" => a.std(axis, ddof),
            "argmin" => a.argmin(axis),
            "argmax" => a.argmax(axis),
            other => {
                return Err(PyValueError::new_err(format!(
                    "no reduction {other:?} in rask's array kernels"
                )));
            }
        })
    }

    /// The axes reversed.
    fn transpose(&self) -> Array {
        self.inner.t().into()
    }

    /// `self[start:stop, ...]`, one `(start, stop)` per dimension (step 1).
    fn slice(&self, ranges: Vec<(usize, usize)>) -> PyResult<Array> {
        let ranges: Vec<rask_array::Range> = ranges
            .into_iter()
            .map(|(a, b)| rask_array::Range::new(a, b))
            .collect();
        built(self.inner.slice(&ranges))
    }

    fn rechunk(&self, chunks: &Bound<'_, PyAny>) -> PyResult<Array> {
        built(self.inner.rechunk(chunk_spec(chunks)?))
    }

    /// The matrix product of two 2-d arrays.
    fn dot(&self, other: PyRef<'_, Array>) -> PyResult<Array> {
        built(self.inner.dot(&other.inner))
    }

    /// Tasks in this array's graph (chunks held on the cluster are not).
    fn graph_size(&self) -> usize {
        self.inner.graph().len()
    }

    /// Computes the array on the cluster: `(values, shape)`, the values a `bytearray` of raw f64
    /// (native byte order, C order).
    fn compute<'py>(&self, py: Python<'py>, client: PyRef<'py, Client>) -> PyResult<Values<'py>> {
        let mut all = compute_many(py, &client, vec![self.inner.clone()])?;
        all.pop()
            .ok_or_else(|| PyRuntimeError::new_err("one array computed gave no values"))
    }

    /// Computes several arrays in one graph (chunks they share computed once): `(values, shape)`
    /// of each, as `compute` gives them.
    #[staticmethod]
    fn compute_all<'py>(
        py: Python<'py>,
        client: PyRef<'py, Client>,
        arrays: Vec<PyRef<'py, Array>>,
    ) -> PyResult<Vec<Values<'py>>> {
        let arrays = arrays.iter().map(|a| a.inner.clone()).collect();
        compute_many(py, &client, arrays)
    }

    /// Starts computing every chunk and returns the array over them, kept on the cluster while
    /// an array holds them.
    fn persist(&self, client: PyRef<'_, Client>) -> PyResult<Array> {
        let _guard = runtime()?.enter();
        Ok(self.inner.persist(&client.inner).into())
    }

    /// Writes the task graph as DOT to `path` with the extension `.dot` (and SVG beside it when
    /// Graphviz's `dot` is installed); returns the paths written, `(dot, svg or None)`.
    fn visualize(&self, py: Python<'_>, path: String) -> PyResult<(String, Option<String>)> {
        let path = std::path::PathBuf::from(path);
        let a = self.inner.clone();
        let written = py.detach(|| a.visualize(&path)).map_err(|e| {
            PyOSError::new_err(format!("cannot write the graph to {}: {e}", path.display()))
        })?;
        let text = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
        Ok((text(written.dot), written.svg.map(text)))
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// An array's values for `numpy.frombuffer`: raw f64 and the shape.
type Values<'py> = (Bound<'py, PyByteArray>, Vec<usize>);

/// Computes `arrays` as one graph with the GIL released, then writes each array's chunks straight
/// into its `bytearray` (each chunk dropped once placed).
fn compute_many<'py>(
    py: Python<'py>,
    client: &Client,
    arrays: Vec<rask_array::Array>,
) -> PyResult<Vec<Values<'py>>> {
    let c = client.inner.clone();
    let futures = {
        // Inside the runtime: the client may spawn work while sending.
        let _guard = runtime()?.enter();
        rask_array::Array::submit_all(&arrays, &c)
    };
    let gathered = block_on(py, None, async move { c.gather(&futures).await })?
        .ok_or_else(|| PyRuntimeError::new_err("a wait without a deadline ended"))?;
    let mut chunks = gathered
        .map_err(|e| array_error(py, ArrayError::Client(e)))?
        .into_iter();
    arrays
        .iter()
        .map(|a| {
            let len = a.shape().iter().product::<usize>() * 8;
            let bytes = PyByteArray::new_with(py, len, |buf| {
                a.place_raw(&mut chunks, buf)
                    .map_err(|e| PyRuntimeError::new_err(e.to_string()))
            })?;
            Ok((bytes, a.shape().to_vec()))
        })
        .collect()
}

fn bin_op(name: &str) -> PyResult<BinOp> {
    Ok(match name {
        "add" => BinOp::Add,
        "subtract" => BinOp::Sub,
        "multiply" => BinOp::Mul,
        "divide" => BinOp::Div,
        "power" => BinOp::Pow,
        "maximum" => BinOp::Maximum,
        "minimum" => BinOp::Minimum,
        "less" => BinOp::Less,
        "less_equal" => BinOp::LessEqual,
        "greater" => BinOp::Greater,
        "greater_equal" => BinOp::GreaterEqual,
        "equal" => BinOp::Equal,
        "not_equal" => BinOp::NotEqual,
        other => {
            return Err(PyValueError::new_err(format!(
                "no elementwise operation {other:?} in rask's array kernels"
            )));
        }
    })
}

/// Chunks as `rask.array` passes them: `"auto"`, one size for every dimension, a size per
/// dimension, or every chunk's size per dimension.
fn chunk_spec(chunks: &Bound<'_, PyAny>) -> PyResult<ChunkSpec> {
    if let Ok(s) = chunks.extract::<String>() {
        return if s == "auto" {
            Ok(ChunkSpec::Auto)
        } else {
            Err(PyValueError::new_err(format!(
                "chunks {s:?}: the only string rask takes is \"auto\""
            )))
        };
    }
    if let Ok(n) = chunks.extract::<usize>() {
        return Ok(ChunkSpec::Size(n));
    }
    if let Ok(sizes) = chunks.extract::<Vec<usize>>() {
        return Ok(ChunkSpec::Sizes(sizes));
    }
    if let Ok(explicit) = chunks.extract::<Vec<Vec<usize>>>() {
        return Ok(ChunkSpec::Explicit(explicit));
    }
    Err(PyTypeError::new_err(format!(
        "chunks must be \"auto\", a size, a size per dimension, or the sizes of every chunk per \
         dimension, got {}",
        chunks.repr()?
    )))
}

fn built(result: Result<rask_array::Array, ArrayError>) -> PyResult<Array> {
    result.map(Array::from).map_err(|e| match e {
        ArrayError::Axis { .. } => PyIndexError::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    })
}

/// An error computing an array: a task's failure becomes the exception `rask.distributed`
/// raises for it (the user's own, for a function of `from_delayed`).
fn array_error(py: Python<'_>, e: ArrayError) -> PyErr {
    match e {
        ArrayError::Client(ClientError::Task(failure)) => {
            let raised = failure_dict(py, &failure).and_then(|d| exception_of(py, d));
            match raised {
                Ok(err) | Err(err) => err,
            }
        }
        ArrayError::Client(c @ (ClientError::Lost(_) | ClientError::Connect { .. })) => {
            PyConnectionError::new_err(c.to_string())
        }
        ArrayError::Npy { .. } => PyOSError::new_err(e.to_string()),
        ArrayError::Axis { .. } => PyIndexError::new_err(e.to_string()),
        ArrayError::Chunks(_) | ArrayError::Slice(_) | ArrayError::Shape(_) => {
            PyValueError::new_err(e.to_string())
        }
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// `rask._futures._exception_of(failure)`.
fn exception_of(py: Python<'_>, failure: Bound<'_, PyDict>) -> PyResult<PyErr> {
    let exc = py
        .import("rask._futures")?
        .getattr("_exception_of")?
        .call1((failure,))?;
    Ok(PyErr::from_value(exc))
}
