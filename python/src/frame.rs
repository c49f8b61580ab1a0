//! `rask.dataframe`'s native half: rask-frame's lazy [`rask_frame::DataFrame`] as `Frame`, its
//! column expressions as `FrameExpr`, and the calls that run a frame on a cluster.
//!
//! Building a frame does no work on the cluster; `len`, `compute`, `head`, `to_csv` and
//! `to_parquet` build rask-frame's task graph and wait for it with the GIL released. A computed
//! frame comes back as Arrow IPC stream bytes, which Python reads with pyarrow: no Python
//! object per row.

use std::path::PathBuf;

use pyo3::exceptions::{
    PyConnectionError, PyFileNotFoundError, PyKeyError, PyOSError, PyPermissionError,
    PyRuntimeError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};
use rask_client::ClientError;
use rask_frame::{
    Agg, ArithOp, CmpOp, DType, Expr, FrameError, Lit, NumExpr, ReadCsvOptions, ReadParquetOptions,
};

use crate::client::{Client, Future};
use crate::graph::{GraphTask, python_graph};
use crate::outcome::failure_dict;
use crate::runtime::block_on;

/// A lazy partitioned dataframe (rask-frame's `DataFrame`).
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct Frame {
    inner: rask_frame::DataFrame,
}

/// What a `FrameExpr` holds: a number per row, or a condition on a row.
#[derive(Clone)]
enum Kind {
    Num(NumExpr),
    Bool(Expr),
}

/// A column expression: a column, a literal, arithmetic of them (`df.x * 2 + df.y`), or a
/// condition (`(df.x > 3) & ~df.y.isnull()`).
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct FrameExpr {
    kind: Kind,
}

fn lit_of(value: &Bound<'_, PyAny>) -> PyResult<Lit> {
    // `bool` before `int`: Python's booleans are integers.
    if value.is_instance_of::<PyBool>() {
        Ok(Lit::Bool(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        let v: i64 = value.extract().map_err(|_| {
            PyValueError::new_err(format!("{value} does not fit a 64-bit integer column"))
        })?;
        Ok(Lit::Int(v))
    } else if value.is_instance_of::<PyFloat>() {
        Ok(Lit::Float(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        Ok(Lit::Str(value.extract()?))
    } else {
        Err(PyTypeError::new_err(format!(
            "a column can be compared or computed with an int, float, bool or str, not {}",
            value.get_type().name()?
        )))
    }
}

#[pymethods]
impl FrameExpr {
    /// The column `name`.
    #[staticmethod]
    fn column(name: &str) -> FrameExpr {
        FrameExpr {
            kind: Kind::Num(NumExpr::col(name)),
        }
    }

    /// A number, the same in every row.
    #[staticmethod]
    fn literal(value: &Bound<'_, PyAny>) -> PyResult<FrameExpr> {
        match lit_of(value)? {
            lit @ (Lit::Int(_) | Lit::Float(_)) => Ok(FrameExpr {
                kind: Kind::Num(NumExpr::Lit(lit)),
            }),
            other => Err(PyTypeError::new_err(format!(
                "arithmetic takes numbers, not {other:?}"
            ))),
        }
    }

    /// The column's name when the expression is a column alone.
    #[getter]
    fn column_name(&self) -> Option<String> {
        match &self.kind {
            Kind::Num(NumExpr::Col(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// Whether the expression is a condition (a filter) rather than a number.
    #[getter]
    fn is_condition(&self) -> bool {
        matches!(self.kind, Kind::Bool(_))
    }

    /// `self op other` with `op` one of `+ - * /`.
    fn arith(&self, op: &str, other: &FrameExpr) -> PyResult<FrameExpr> {
        let op = match op {
            "+" => ArithOp::Add,
            "-" => ArithOp::Sub,
            "*" => ArithOp::Mul,
            "/" => ArithOp::Div,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unsupported operator {other:?} for columns (one of + - * /)"
                )));
            }
        };
        Ok(FrameExpr {
            kind: Kind::Num(self.num()?.arith(op, other.num()?)),
        })
    }

    /// `column op value` with `op` one of `== != < <= > >=`.
    fn compare(&self, op: &str, value: &Bound<'_, PyAny>) -> PyResult<FrameExpr> {
        let op = match op {
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            ">=" => CmpOp::Ge,
            other => {
                return Err(PyTypeError::new_err(format!(
                    "unsupported comparison {other:?}"
                )));
            }
        };
        let column = self.column_name().ok_or_else(|| {
            PyTypeError::new_err(format!(
                "rask compares a column with a value; {} is not a column: assign it to a column \
                 first (df.assign(name=...))",
                self.__repr__()
            ))
        })?;
        Ok(FrameExpr {
            kind: Kind::Bool(Expr::Cmp {
                column,
                op,
                value: lit_of(value)?,
            }),
        })
    }

    fn is_null(&self) -> PyResult<FrameExpr> {
        let column = self.column_name().ok_or_else(|| {
            PyTypeError::new_err("isnull() takes a column; assign a computed one first")
        })?;
        Ok(FrameExpr {
            kind: Kind::Bool(Expr::IsNull(column)),
        })
    }

    fn and_(&self, other: &FrameExpr) -> PyResult<FrameExpr> {
        Ok(FrameExpr {
            kind: Kind::Bool(self.condition()?.and(other.condition()?)),
        })
    }

    fn or_(&self, other: &FrameExpr) -> PyResult<FrameExpr> {
        Ok(FrameExpr {
            kind: Kind::Bool(self.condition()?.or(other.condition()?)),
        })
    }

    fn invert(&self) -> PyResult<FrameExpr> {
        Ok(FrameExpr {
            kind: Kind::Bool(self.condition()?.not()),
        })
    }

    fn __repr__(&self) -> String {
        match &self.kind {
            Kind::Num(e) => format!("<rask._rask.FrameExpr {e}>"),
            Kind::Bool(e) => format!("<rask._rask.FrameExpr {e:?}>"),
        }
    }
}

impl FrameExpr {
    fn num(&self) -> PyResult<NumExpr> {
        match &self.kind {
            Kind::Num(e) => Ok(e.clone()),
            Kind::Bool(_) => Err(PyTypeError::new_err(
                "arithmetic on a condition (a comparison, &, |, ~): rask computes with numeric \
                 columns and numbers only",
            )),
        }
    }

    fn condition(&self) -> PyResult<Expr> {
        match &self.kind {
            Kind::Bool(e) => Ok(e.clone()),
            Kind::Num(e) => Err(PyTypeError::new_err(format!(
                "&, | and ~ combine conditions (comparisons), and {e} is not one"
            ))),
        }
    }
}

fn parse_dtype(column: &str, name: &str) -> PyResult<DType> {
    Ok(match name {
        "int64" | "int" | "Int64" => DType::Int64,
        "float64" | "float" | "Float64" => DType::Float64,
        "bool" | "boolean" => DType::Bool,
        "string" | "str" | "object" => DType::Str,
        other => {
            return Err(PyTypeError::new_err(format!(
                "dtype {other:?} of column {column:?}: rask reads int64, float64, bool or string"
            )));
        }
    })
}

/// A frame error as the Python exception a pandas user expects: `FileNotFoundError` for a path
/// that is not there, `KeyError` for a column a frame lacks, `ValueError` for other bad input,
/// and rask's `TaskError` for a task that failed on the cluster (a malformed row, a file gone).
fn frame_err(py: Python<'_>, e: FrameError) -> PyErr {
    let text = e.to_string();
    match e {
        FrameError::NoFiles(_) => PyFileNotFoundError::new_err(text),
        FrameError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(text),
            std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(text),
            _ => PyOSError::new_err(text),
        },
        FrameError::Write { .. } => PyOSError::new_err(text),
        FrameError::Invalid(_) if text.contains("no column \"") => PyKeyError::new_err(text),
        // The user's exception (a partition of `from_delayed` that is not a frame), or
        // `TaskError` for a kernel's failure (a malformed row), as for every collection.
        FrameError::Client(ClientError::Task(failure)) => failure_dict(py, &failure)
            .and_then(|d| exception_of(py, d))
            .unwrap_or_else(|e| e),
        FrameError::Client(ClientError::Connect { .. } | ClientError::Lost(_)) => {
            PyConnectionError::new_err(text)
        }
        FrameError::Client(_) | FrameError::Result(_) => PyRuntimeError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

/// `rask._futures._exception_of(failure)`: the exception `rask.distributed` raises for a task's
/// failure.
fn exception_of(py: Python<'_>, failure: Bound<'_, PyDict>) -> PyResult<PyErr> {
    let exc = py
        .import("rask._futures")?
        .getattr("_exception_of")?
        .call1((failure,))?;
    Ok(PyErr::from_value(exc))
}

/// Waits for `fut` with the GIL released; its error becomes a Python exception.
fn run<T: Send>(
    py: Python<'_>,
    fut: impl std::future::Future<Output = Result<T, FrameError>> + Send,
) -> PyResult<T> {
    match block_on(py, None, fut)? {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(frame_err(py, e)),
        None => Err(PyRuntimeError::new_err("a wait without a deadline ended")),
    }
}

fn blocksize_of(value: Option<&Bound<'_, PyAny>>, what: &str) -> PyResult<Option<u64>> {
    let Some(v) = value else { return Ok(None) };
    if v.is_none() {
        return Ok(None);
    }
    if v.is_instance_of::<PyString>() {
        let s: String = v.extract()?;
        return rask_frame::parse_blocksize(&s)
            .map_err(|e| PyValueError::new_err(format!("{what}: {e}")));
    }
    match v.extract::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n as u64)),
        _ => Err(PyValueError::new_err(format!(
            "bad blocksize {v}: a number of bytes > 0, a size such as \"64MB\", or None"
        ))),
    }
}

#[pymethods]
impl Frame {
    /// `read_csv(pattern, blocksize, sep, dtypes, sample)`; `blocksize` in bytes, a size such as
    /// `"64MB"`, or `None` (one partition per file).
    #[staticmethod]
    #[pyo3(signature = (pattern, blocksize, sep, dtypes, sample=None))]
    fn read_csv(
        py: Python<'_>,
        pattern: &str,
        blocksize: Option<Bound<'_, PyAny>>,
        sep: &str,
        dtypes: Vec<(String, String)>,
        sample: Option<usize>,
    ) -> PyResult<Frame> {
        let mut options = ReadCsvOptions {
            blocksize: blocksize_of(blocksize.as_ref(), "blocksize")?,
            sep: rask_frame::parse_sep(sep).map_err(|e| frame_err(py, e))?,
            ..ReadCsvOptions::default()
        };
        if let Some(s) = sample {
            options.sample = s;
        }
        options.dtypes = dtypes
            .iter()
            .map(|(c, t)| Ok((c.clone(), parse_dtype(c, t)?)))
            .collect::<PyResult<_>>()?;
        let inner = py
            .detach(|| rask_frame::read_csv(pattern, &options))
            .map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    /// `read_parquet(pattern, columns, blocksize)`.
    #[staticmethod]
    fn read_parquet(
        py: Python<'_>,
        pattern: &str,
        columns: Option<Vec<String>>,
        blocksize: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Frame> {
        let mut options = ReadParquetOptions {
            columns,
            ..ReadParquetOptions::default()
        };
        if let Some(b) = &blocksize {
            options.blocksize = blocksize_of(Some(b), "blocksize")?;
        }
        let inner = py
            .detach(|| rask_frame::read_parquet(pattern, &options))
            .map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    /// `rask.dataframe.from_delayed`: partition `i` is what the task `roots[i]` of a
    /// `rask.delayed` graph returns (`bytes` of an Arrow IPC stream with the columns `dtypes`).
    /// `tasks` come inputs first; `held` are the futures the graph reads that are already on
    /// the cluster.
    #[staticmethod]
    fn from_python_graph(
        py: Python<'_>,
        tasks: Vec<GraphTask<'_>>,
        held: Vec<PyRef<'_, Future>>,
        roots: Vec<String>,
        dtypes: Vec<(String, String)>,
    ) -> PyResult<Frame> {
        let built = python_graph(tasks, &held)?.tasks;
        let parts = roots
            .iter()
            .map(|k| {
                built.get(k).cloned().ok_or_else(|| {
                    PyValueError::new_err(format!("partition {k} is not a task of the graph"))
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let schema = dtypes
            .iter()
            .map(|(c, t)| Ok((c.clone(), parse_dtype(c, t)?)))
            .collect::<PyResult<_>>()?;
        let inner = rask_frame::from_pickled(&parts, schema).map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    #[getter]
    fn columns(&self) -> Vec<String> {
        self.inner
            .columns()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// `(column, type)` with types `int64`, `float64`, `string`, `bool`.
    #[getter]
    fn dtypes(&self) -> Vec<(String, String)> {
        self.inner
            .dtypes()
            .iter()
            .map(|(n, t)| (n.clone(), t.to_string()))
            .collect()
    }

    #[getter]
    fn npartitions(&self) -> usize {
        self.inner.npartitions()
    }

    fn select(&self, py: Python<'_>, columns: Vec<String>) -> PyResult<Frame> {
        let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
        let inner = self.inner.select(&cols).map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    fn filter(&self, py: Python<'_>, condition: &FrameExpr) -> PyResult<Frame> {
        let inner = self
            .inner
            .filter(condition.condition()?)
            .map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    fn assign(
        &self,
        py: Python<'_>,
        columns: Vec<(String, PyRef<'_, FrameExpr>)>,
    ) -> PyResult<Frame> {
        let exprs = columns
            .iter()
            .map(|(n, e)| Ok((n.as_str(), e.num()?)))
            .collect::<PyResult<Vec<_>>>()?;
        let inner = self.inner.assign(&exprs).map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    /// `groupby(keys).agg([(column, "mean" | "sum" | "count" | "min" | "max"), ...])`.
    #[pyo3(signature = (keys, aggs, split_every=None))]
    fn groupby_agg(
        &self,
        py: Python<'_>,
        keys: Vec<String>,
        aggs: Vec<(String, String)>,
        split_every: Option<usize>,
    ) -> PyResult<Frame> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let aggs = aggs
            .iter()
            .map(|(c, a)| Ok((c.as_str(), a.parse::<Agg>()?)))
            .collect::<Result<Vec<_>, FrameError>>()
            .map_err(|e| frame_err(py, e))?;
        let mut g = self.inner.groupby(&keys).map_err(|e| frame_err(py, e))?;
        if let Some(n) = split_every {
            g = g.split_every(n);
        }
        let inner = g.agg(&aggs).map_err(|e| frame_err(py, e))?;
        Ok(Frame { inner })
    }

    /// The number of rows, computed on the cluster.
    fn len(&self, py: Python<'_>, client: PyRef<'_, Client>) -> PyResult<u64> {
        let (df, c) = (self.inner.clone(), client.inner.clone());
        run(py, async move { df.len(&c).await })
    }

    /// The whole frame, as Arrow IPC stream bytes.
    fn compute<'py>(
        &self,
        py: Python<'py>,
        client: PyRef<'py, Client>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (df, c) = (self.inner.clone(), client.inner.clone());
        let bytes = run(py, async move {
            rask_frame::arrow_ipc_stream(&df.compute(&c).await?)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The first `n` rows, as Arrow IPC stream bytes.
    fn head<'py>(
        &self,
        py: Python<'py>,
        n: usize,
        client: PyRef<'py, Client>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let (df, c) = (self.inner.clone(), client.inner.clone());
        let bytes = run(py, async move {
            rask_frame::arrow_ipc_stream(&df.head(n, &c).await?)
        })?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Writes partition `i` to `paths[i]` as CSV, from the workers.
    fn to_csv(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        client: PyRef<'_, Client>,
    ) -> PyResult<()> {
        let (df, c) = (self.inner.clone(), client.inner.clone());
        run(py, async move { df.to_csv_files(&paths, &c).await })
    }

    /// Writes partition `i` to `paths[i]` as Parquet, from the workers.
    fn to_parquet(
        &self,
        py: Python<'_>,
        paths: Vec<PathBuf>,
        client: PyRef<'_, Client>,
    ) -> PyResult<()> {
        let (df, c) = (self.inner.clone(), client.inner.clone());
        run(py, async move { df.to_parquet_files(&paths, &c).await })
    }

    fn __repr__(&self) -> String {
        format!("<rask._rask.Frame {:?}>", self.inner)
    }
}

/// Adds `Frame` and `FrameExpr` to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Frame>()?;
    m.add_class::<FrameExpr>()
}
