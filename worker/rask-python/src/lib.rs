//! rask's `python` function family: users' Python functions, pickled by the client with
//! cloudpickle, run by a worker in Python processes it starts. No Python is linked here.
//!
//! One function, [`CALL`] (`python.call`). Its payload is a [`PyCall`]: the pickled
//! `(func, args, kwargs)`, in which each dependency is a `rask._deps.Dep(j)` standing for the
//! task input [`PyCall::inputs`]`[j]`. Its result is the returned object, pickled
//! ([`rask_core::Pickled`], format tag [`TAG_PICKLE`]). Inputs may be pickles (other Python
//! tasks' results) or [`rask_core::Value`]s (the engine's scalar functions), which the function
//! reads as `None`/`bool`/`int`/`float`/`str`/`bytes`/`list`.
//!
//! Calls run in a pool of long-lived processes of the interpreter [`PythonConfig`] names, each
//! running `runner.py` (embedded here): a worker thread takes an idle process or starts one, so
//! there are at most as many as the worker has threads, and the GIL serialises nothing. An
//! exception in the user's code fails the task with [`KernelError::Python`] (its type, message,
//! traceback, and the pickled exception for the client to re-raise); a process that dies (a
//! segfault, `os._exit`) fails its task with its exit status and the tail of its stderr, and is
//! replaced by the next call. The processes' stdout and stderr go to the worker's log, line by
//! line, drained as they come.
//!
//! The family's version names the interpreter's Python minor version, cloudpickle's major
//! version and the rask package the calls unpickle against
//! (`1+py3.11+cloudpickle3+rask0.1.0@3f2a9c01b2d4`), as found by [`probe`], since pickles made by
//! one do not load in another: a client compares them with its own.

mod config;
mod error;
mod pickle;
mod process;

use std::borrow::Cow;
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;
use rask_core::data::{TAG_PICKLE, TAG_SERDE};
use rask_core::function::{Function, decode_payload};
use rask_core::{Encoded, Family, Func, Input, Inputs, KernelError, Pickled, Value};
use serde::{Deserialize, Serialize};

use crate::process::{Process, Reply};

pub use crate::config::{OutputLine, PYTHON_ENV, PythonConfig, Stream, VERSION, Versions};
pub use crate::error::PythonError;

/// The family's name.
pub const FAMILY: &str = "python";

/// Runs a pickled Python call.
pub const CALL: Func<PyCall, Pickled> = Func::new("python.call");

/// The payload of [`CALL`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PyCall {
    /// `cloudpickle.dumps((func, args, kwargs))`, each dependency inside `args` and `kwargs`
    /// (at any depth of lists, tuples and dicts) replaced by `rask._deps.Dep(j)`.
    pub call: Bytes,
    /// The task inputs the call reads: `Dep(j)` is the value of `inputs[j]`. A client lists
    /// every input of the task in order (`Input(0)`, `Input(1)`, ...), so `Dep(i)` is input `i`.
    pub inputs: Vec<Input<Pickled>>,
}

/// Starts the interpreter once to learn its versions, and checks it can run tasks.
pub fn probe(config: &PythonConfig) -> Result<Versions, PythonError> {
    Process::start(config, true).map(|(_, versions)| versions)
}

/// The `python` family. `versions`: what [`probe`] found, which the family's version carries;
/// `None` (the probe failed) makes it `1+unavailable`, and each call then fails saying why the
/// interpreter cannot start.
pub fn family(config: PythonConfig, versions: Option<&Versions>) -> Family {
    let version = match versions {
        Some(v) => v.family_version(),
        None => format!("{VERSION}+unavailable"),
    };
    let pool = Pool {
        config,
        idle: Mutex::new(Vec::new()),
    };
    Family::new(FAMILY, &version).raw(CALL.name(), pool)
}

/// The idle processes; a call takes one (or starts one) and gives it back when done.
struct Pool {
    config: PythonConfig,
    idle: Mutex<Vec<Process>>,
}

impl Pool {
    fn take(&self) -> Result<Process, PythonError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match idle {
                Some(mut p) => {
                    if !p.has_exited() {
                        return Ok(p);
                    }
                    tracing::warn!(
                        pid = p.pid(),
                        "an idle Python process has exited; starting another"
                    );
                }
                None => return Process::start(&self.config, false).map(|(p, _)| p),
            }
        }
    }

    fn give_back(&self, p: Process) {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(p);
    }
}

impl Function for Pool {
    fn call(&self, payload: &[u8], inputs: &Inputs<'_>) -> Result<Encoded, KernelError> {
        let call: PyCall = decode_payload(CALL.name(), payload)?;
        let args = call
            .inputs
            .iter()
            .map(|i| input_pickle(inputs, i.index()))
            .collect::<Result<Vec<_>, _>>()?;
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        let failed = |e: PythonError| KernelError::failed(format!("{}: {e}", CALL.name()));
        let mut process = self.take().map_err(failed)?;
        match process.run(&call.call, &args) {
            Ok(reply) => {
                self.give_back(process);
                match reply {
                    Reply::Value(v) => Ok(v),
                    Reply::Exception(e) => Err(KernelError::Python(Box::new(e))),
                }
            }
            Err(reason) => {
                let e = process.broken(reason);
                tracing::warn!(error = %e, "a Python process died; the next call starts another");
                Err(failed(e))
            }
        }
    }
}

/// Input `index` as a pickle: a Python task's result as it is, a [`Value`] pickled.
fn input_pickle<'a>(inputs: &Inputs<'a>, index: usize) -> Result<Cow<'a, [u8]>, KernelError> {
    let e = inputs.encoded(index)?;
    match e.tag() {
        Some(TAG_PICKLE) => e
            .body(TAG_PICKLE, "a pickled Python object")
            .map(Cow::Borrowed)
            .map_err(|err| inputs.input_error(index, err)),
        Some(TAG_SERDE) => e
            .decode::<Value>()
            .map(|v| Cow::Owned(pickle::pickle_value(&v)))
            .map_err(|err| {
                inputs.input_error(
                    index,
                    format!("a serde value that is not a rask Value cannot go to Python: {err}"),
                )
            }),
        Some(tag) => Err(inputs.input_error(
            index,
            format!(
                "{} (format tag {tag}) cannot go to a Python function yet; only Python objects and rask Values can",
                tag_kind(tag)
            ),
        )),
        None => Err(inputs.input_error(index, "the encoded value is empty")),
    }
}

/// What the families built into `rask` keep under `tag` (rask-core's data.rs lists them).
fn tag_kind(tag: u8) -> &'static str {
    match tag {
        1 => "an array chunk",
        2 => "a dataframe partition",
        _ => "data of another family",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rask_core::Data;
    use rask_core::function::encode_payload;
    use std::path::PathBuf;

    fn failing_config() -> PythonConfig {
        PythonConfig::new(Some(PathBuf::from("/nonexistent/python-for-rask-tests")))
    }

    #[test]
    fn versions_name_the_minor_and_the_major() {
        let mut v = Versions {
            python: "3.11".into(),
            cloudpickle: "3.1.3".into(),
            rask: Some("0.1.0@3f2a9c01b2d4".into()),
        };
        assert_eq!(
            v.family_version(),
            "1+py3.11+cloudpickle3+rask0.1.0@3f2a9c01b2d4"
        );
        v.rask = None;
        assert_eq!(v.family_version(), "1+py3.11+cloudpickle3+norask");
        let f = family(failing_config(), None);
        assert_eq!(f.info().version, "1+unavailable");
        assert_eq!(f.info().functions, ["python.call"]);
    }

    #[test]
    fn inputs_of_other_families_are_refused_by_name() {
        let mut r = rask_core::Registry::new();
        r.register(family(failing_config(), None)).unwrap();
        let payload = encode_payload(&PyCall {
            call: Bytes::from_static(b"x"),
            inputs: vec![Input::new(0)],
        })
        .unwrap();
        let chunk = Encoded::with_tag(1, b"....");
        let err = r.call("python.call", &payload, &[chunk]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "python.call: input 0: an array chunk (format tag 1) cannot go to a Python function yet; only Python objects and rask Values can"
        );
        let err = r
            .call("python.call", &payload, &[(1u8, 2u8).encode()])
            .unwrap_err();
        assert!(err.to_string().contains("not a rask Value"), "{err}");
        let err = r.call("python.call", &payload, &[]).unwrap_err();
        assert!(err.to_string().contains("only 0 inputs"), "{err}");
        let err = r.call("python.call", b"\xff", &[]).unwrap_err();
        assert!(matches!(err, KernelError::Arguments { .. }), "{err}");
        // Inputs are checked before any process starts; a good one reaches the interpreter.
        let err = r
            .call("python.call", &payload, &[Value::Int(1).encode()])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "python.call: Python interpreter \"/nonexistent/python-for-rask-tests\" not found: give `rask worker --python PATH` or set RASK_PYTHON"
        );
    }
}
