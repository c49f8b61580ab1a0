//! The client, its futures, and waiting on many of them.

use std::sync::Mutex;

use bytes::Bytes;
use std::path::PathBuf;

use pyo3::exceptions::{PyConnectionError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use rask_client::Deps;
use rask_client::delayed::new_key;
use rask_core::function::encode_payload;
use rask_core::net::{Scheme, parse_address};
use rask_core::tls::{CA_FILE_ENV, REQUIRE_ENCRYPTION_ENV, Role, TlsConfig, TlsError, TlsSettings};
use rask_core::{Encoded, Input, Key, TaskSpec};
use rask_python::{CALL, PyCall};

use crate::outcome::outcome;
use crate::runtime::{block_on, deadline, runtime};

/// A connection to a scheduler.
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct Client {
    pub(crate) inner: rask_client::Client,
    address: String,
}

/// A task's result on the cluster; the scheduler may free it once every copy is gone.
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct Future {
    pub(crate) inner: rask_client::Future<Encoded>,
}

/// One task to submit: its pickled call, and the futures it reads.
type Call<'py> = (Bound<'py, PyBytes>, Vec<PyRef<'py, Future>>);

/// One task of a graph: its key, its pickled call, and the keys of its inputs (other tasks of the
/// graph, or results this client holds futures of), `Dep(i)` in the call being input `i`.
type GraphTask<'py> = (String, Bound<'py, PyBytes>, Vec<String>);

#[pymethods]
impl Client {
    /// Connects to the scheduler at `address` (`tcp://host:port` or `tls://host:port`), waiting
    /// at most `timeout` seconds. The TLS files given (a `Security`'s) win over Dask's
    /// `DASK_DISTRIBUTED__COMM__TLS__*` variables, which fill in the rest, as `rask run` reads
    /// them.
    #[staticmethod]
    #[pyo3(signature = (address, timeout, ca_file=None, cert=None, key=None, require_encryption=None))]
    fn connect(
        py: Python<'_>,
        address: String,
        timeout: f64,
        ca_file: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        require_encryption: Option<bool>,
    ) -> PyResult<Client> {
        let mut settings = TlsSettings {
            ca_file,
            cert,
            key,
            require_encryption: false,
        }
        .with_env(Role::Client, |k| std::env::var(k).ok());
        // Given, it wins over the variable, as a `Security`'s fields do in Dask.
        if let Some(required) = require_encryption {
            settings.require_encryption = required;
        }
        let tls = client_tls(&address, settings)?;
        let until = deadline(Some(timeout))?;
        let connect = rask_client::Client::connect_with(&address, tls);
        match block_on(py, until, connect)? {
            Some(Ok(inner)) => Ok(Client { inner, address }),
            Some(Err(e)) => Err(PyConnectionError::new_err(e.to_string())),
            None => Err(PyConnectionError::new_err(format!(
                "cannot connect to the scheduler at {address}: no answer in {timeout} s"
            ))),
        }
    }

    #[getter]
    fn address(&self) -> &str {
        &self.address
    }

    /// `(name, version)` of each function family the workers had when this client connected.
    #[getter]
    fn worker_families(&self) -> Vec<(String, String)> {
        self.inner
            .worker_families()
            .iter()
            .map(|f| (f.name.clone(), f.version.clone()))
            .collect()
    }

    /// Submits one call of a Python function; `prefix` starts its key (the function's name).
    fn submit<'py>(
        &self,
        prefix: &str,
        call: Bound<'py, PyBytes>,
        deps: Vec<PyRef<'py, Future>>,
    ) -> PyResult<Future> {
        let mut futures = self.submit_many(prefix, vec![(call, deps)])?;
        futures
            .pop()
            .ok_or_else(|| PyRuntimeError::new_err("one call gave no future"))
    }

    /// Submits many calls of one function in one message (`Client.map`).
    fn submit_many(&self, prefix: &str, calls: Vec<Call<'_>>) -> PyResult<Vec<Future>> {
        validate_prefix(prefix)?;
        let specs = calls
            .into_iter()
            .map(|(call, deps)| task_spec(prefix, &call, &deps))
            .collect::<PyResult<Vec<_>>>()?;
        let wanted = specs.iter().map(|s| s.key.clone()).collect();
        // Inside the runtime: the client may spawn work while sending.
        let _guard = runtime()?.enter();
        Ok(self
            .inner
            .send::<Encoded>(specs, wanted)
            .into_iter()
            .map(|inner| Future { inner })
            .collect())
    }

    /// Submits a graph of calls in one message (`rask.compute`, `Client.compute`): the tasks in
    /// the order to run them (inputs first), and the keys to hold futures of.
    fn submit_graph(
        &self,
        tasks: Vec<GraphTask<'_>>,
        wanted: Vec<String>,
    ) -> PyResult<Vec<Future>> {
        let specs = tasks
            .into_iter()
            .map(|(key, call, inputs)| graph_task_spec(key, &call, inputs))
            .collect::<PyResult<Vec<_>>>()?;
        let wanted = wanted
            .into_iter()
            .map(|k| checked_key(k, "a wanted key"))
            .collect::<PyResult<Vec<_>>>()?;
        let _guard = runtime()?.enter();
        Ok(self
            .inner
            .send::<Encoded>(specs, wanted)
            .into_iter()
            .map(|inner| Future { inner })
            .collect())
    }

    /// Cancels the futures' tasks: they fail with "cancelled" at once, and the scheduler drops
    /// those nothing else needs.
    fn cancel(&self, futures: Vec<PyRef<'_, Future>>) -> PyResult<()> {
        let keys: Vec<Key> = futures.iter().map(|f| f.inner.key().clone()).collect();
        let _guard = runtime()?.enter();
        self.inner.cancel(&keys);
        Ok(())
    }

    fn __repr__(&self) -> String {
        format!("<rask._rask.Client {}>", self.address)
    }
}

/// Where a Python client's TLS settings come from, for errors.
const HOW_TO_SET: &str = "pass security=Security(tls_ca_file=..., tls_client_cert=..., \
     tls_client_key=...) or set DASK_DISTRIBUTED__COMM__TLS__CA_FILE, \
     DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY";

/// The client's TLS identity for `address`, from `settings` (a `Security`'s fields over Dask's
/// variables): `None` for plain TCP. A `tls://` address needs a CA and a certificate, and a
/// `tcp://` one is refused when encryption is required.
fn client_tls(address: &str, settings: TlsSettings) -> PyResult<Option<TlsConfig>> {
    let scheme = parse_address(address).0;
    let required = settings.require_encryption;
    let given = settings.ca_file.is_some() || settings.cert.is_some() || settings.key.is_some();
    let files = match (scheme, given) {
        (Scheme::Tls, false) => {
            return Err(PyValueError::new_err(format!(
                "{address} is a tls:// address, but no TLS certificate is given: {HOW_TO_SET}"
            )));
        }
        (Scheme::Tcp, _) if required => {
            return Err(PyValueError::new_err(format!(
                "{address} is not a tls:// address, and encryption is required \
                 (require_encryption=True or {REQUIRE_ENCRYPTION_ENV}): connect to tls://host:port"
            )));
        }
        (Scheme::Tcp, false) => return Ok(None),
        (_, true) => settings.files(),
    };
    // `files` checks them as `rask run` does; its errors name the flags, so say it in Python's
    // words. Some settings are given, so there are files or an error.
    let files = match files {
        Ok(Some(files)) => files,
        Ok(None) | Err(_) => {
            let (cert_env, _) = Role::Client.env();
            return Err(PyValueError::new_err(format!(
                "mutual TLS needs both tls_ca_file ({CA_FILE_ENV}) and tls_client_cert \
                 ({cert_env}); tls_client_key defaults to the certificate's file: {HOW_TO_SET}"
            )));
        }
    };
    TlsConfig::load(&files).map(Some).map_err(|e| match e {
        TlsError::Read { .. } => PyOSError::new_err(e.to_string()),
        e => PyValueError::new_err(e.to_string()),
    })
}

/// A key given by Python: non-empty (a user's `dask_key_name` among them).
fn checked_key(key: String, what: &str) -> PyResult<Key> {
    if key.is_empty() {
        return Err(PyValueError::new_err(format!("{what} must not be empty")));
    }
    Ok(Key::new(key))
}

fn graph_task_spec(
    key: String,
    call: &Bound<'_, PyBytes>,
    inputs: Vec<String>,
) -> PyResult<TaskSpec> {
    let key = checked_key(key, "a task's key")?;
    let n = u32::try_from(inputs.len())
        .map_err(|_| PyValueError::new_err(format!("{key} has too many inputs")))?;
    let args = PyCall {
        call: Bytes::copy_from_slice(call.as_bytes()),
        inputs: (0..n).map(Input::new).collect(),
    };
    let inputs = inputs
        .into_iter()
        .map(|k| checked_key(k, "an input's key"))
        .collect::<PyResult<Vec<_>>>()?;
    let payload = encode_payload(&args).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(TaskSpec::new(key, CALL.func_name(), payload, inputs))
}

/// A new task key `prefix-<client token>-<counter>`, unique among this process's clients.
#[pyfunction]
pub(crate) fn unique_key(prefix: &str) -> PyResult<String> {
    validate_prefix(prefix)?;
    Ok(new_key(prefix).as_str().to_owned())
}

/// Writes a graph's DOT to `path` with the extension `.dot` (and its SVG beside it when
/// Graphviz's `dot` is installed), tasks labelled by their key prefix (the function's name).
/// `tasks` are `(key, input keys)`; returns the paths written, `(dot, svg or None)`.
#[pyfunction]
pub(crate) fn visualize(
    py: Python<'_>,
    tasks: Vec<(String, Vec<String>)>,
    path: String,
) -> PyResult<(String, Option<String>)> {
    let path = std::path::PathBuf::from(path);
    let specs: Vec<TaskSpec> = tasks
        .into_iter()
        .map(|(key, inputs)| {
            TaskSpec::new(
                Key::new(key),
                CALL.func_name(),
                Bytes::new(),
                inputs.into_iter().map(Key::new).collect(),
            )
        })
        .collect();
    let written = py
        .detach(|| {
            rask_client::visualize::write_labelled(&specs, &path, |t| t.key.prefix().to_owned())
        })
        .map_err(|e| {
            PyOSError::new_err(format!("cannot write the graph to {}: {e}", path.display()))
        })?;
    let text = |p: std::path::PathBuf| p.to_string_lossy().into_owned();
    Ok((text(written.dot), written.svg.map(text)))
}

/// A key prefix becomes the start of the task's key, which Dask groups statistics by up to the
/// first `-`.
fn validate_prefix(prefix: &str) -> PyResult<()> {
    if prefix.is_empty() || prefix.contains('-') {
        return Err(PyValueError::new_err(format!(
            "key prefix {prefix:?} must be non-empty and without '-'"
        )));
    }
    Ok(())
}

fn task_spec(
    prefix: &str,
    call: &Bound<'_, PyBytes>,
    deps: &[PyRef<'_, Future>],
) -> PyResult<TaskSpec> {
    let mut d = Deps::new();
    // The futures come without repeats, so `inputs` is `Input(0), Input(1), ...`: `Dep(i)` in the
    // call is the task's input `i`.
    let inputs = deps.iter().map(|f| d.input(&f.inner).cast()).collect();
    let args = PyCall {
        call: Bytes::copy_from_slice(call.as_bytes()),
        inputs,
    };
    let payload = encode_payload(&args).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    Ok(TaskSpec::new(
        new_key(prefix),
        CALL.func_name(),
        payload,
        d.keys(),
    ))
}

#[pymethods]
impl Future {
    #[getter]
    fn key(&self) -> &str {
        self.inner.key().as_str()
    }

    /// Whether the task was cancelled (`Client.cancel`).
    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }

    /// Whether the task has finished (with a value or an error), without waiting.
    fn done(&self) -> bool {
        self.inner.done()
    }

    /// Waits until the task has finished, at most `timeout` seconds; returns whether it has.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let until = deadline(timeout)?;
        Ok(block_on(py, until, self.inner.wait())?.is_some())
    }

    /// Waits at most `timeout` seconds for the outcome: `(kind, payload)` (see `outcome.rs`),
    /// or `None` if the task has not finished by then.
    #[pyo3(signature = (timeout=None))]
    fn outcome<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let until = deadline(timeout)?;
        match block_on(py, until, self.inner.encoded())? {
            Some(result) => outcome(py, self.key(), result).map(Some),
            None => Ok(None),
        }
    }

    fn __repr__(&self) -> String {
        format!("<rask._rask.Future {}>", self.inner.key())
    }
}

/// Waits until every future has finished, at most `timeout` seconds; returns whether they have.
#[pyfunction]
#[pyo3(signature = (futures, timeout=None))]
pub(crate) fn wait_all(
    py: Python<'_>,
    futures: Vec<PyRef<'_, Future>>,
    timeout: Option<f64>,
) -> PyResult<bool> {
    let until = deadline(timeout)?;
    let all: Vec<rask_client::Future<Encoded>> = futures.iter().map(|f| f.inner.clone()).collect();
    let waits = futures::future::join_all(all.iter().map(|f| f.wait()));
    Ok(block_on(py, until, waits)?.is_some())
}

/// The outcomes of every future, in order (fetched concurrently).
#[pyfunction]
pub(crate) fn gather<'py>(
    py: Python<'py>,
    futures: Vec<PyRef<'py, Future>>,
) -> PyResult<Bound<'py, PyList>> {
    let all: Vec<rask_client::Future<Encoded>> = futures.iter().map(|f| f.inner.clone()).collect();
    let results = block_on(
        py,
        None,
        futures::future::join_all(all.iter().map(|f| f.encoded())),
    )?
    .ok_or_else(|| PyRuntimeError::new_err("a wait without a deadline ended"))?;
    let outcomes = all
        .iter()
        .zip(results)
        .map(|(f, r)| outcome(py, f.key().as_str(), r))
        .collect::<PyResult<Vec<_>>>()?;
    PyList::new(py, outcomes)
}

/// Futures in the order they finish (`as_completed`, `wait(..., FIRST_COMPLETED)`): each added
/// future gets an index, and `next` returns the index of one that finished.
#[pyclass(module = "rask._rask", frozen)]
pub(crate) struct Completions {
    /// Locked only without the GIL (inside the wait), so a thread waiting for it never holds
    /// the GIL another thread needs to finish its own wait.
    finished: tokio::sync::Mutex<mpsc::UnboundedReceiver<usize>>,
    /// Locked only briefly, with the GIL.
    waiters: Mutex<Waiters>,
}

struct Waiters {
    tx: mpsc::UnboundedSender<usize>,
    /// One waiter per future followed; dropping the set stops those still waiting.
    set: JoinSet<()>,
    added: usize,
}

#[pymethods]
impl Completions {
    #[new]
    fn new() -> Completions {
        let (tx, finished) = mpsc::unbounded_channel();
        Completions {
            finished: tokio::sync::Mutex::new(finished),
            waiters: Mutex::new(Waiters {
                tx,
                set: JoinSet::new(),
                added: 0,
            }),
        }
    }

    /// Follows `future`; returns its index.
    fn add(&self, future: PyRef<'_, Future>) -> PyResult<usize> {
        let rt = runtime()?;
        let mut w = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // Reap the waiters that ended, so the set does not grow with every future followed.
        while w.set.try_join_next().is_some() {}
        let index = w.added;
        w.added += 1;
        let f = future.inner.clone();
        let tx = w.tx.clone();
        w.set.spawn_on(
            async move {
                f.wait().await;
                // The receiver goes only with `self`, whose drop also aborts this waiter.
                let _ = tx.send(index);
            },
            rt.handle(),
        );
        Ok(index)
    }

    /// The index of the next future to finish, waiting at most `timeout` seconds (`None` if
    /// none finished by then). Each index comes once; the caller stops after as many as it added.
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<usize>> {
        let until = deadline(timeout)?;
        let next = async {
            // The sender half lives in `self`, so `recv` never sees the channel closed.
            self.finished.lock().await.recv().await
        };
        Ok(block_on(py, until, next)?.flatten())
    }
}
