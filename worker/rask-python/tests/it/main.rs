//! The `python` family with a real interpreter: `$RASK_PYTHON` (scripts/test sets the venv's),
//! else `python3`; it needs cloudpickle (and numpy for one test). Calls are pickled by that
//! interpreter as the client would pickle them, and results unpickled by it to be checked.

mod calls;
mod failures;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bytes::Bytes;
use rask_core::function::encode_payload;
use rask_core::{Encoded, Input, KernelError, Registry};
use rask_python::{PyCall, PythonConfig};

/// A stand-in for the client's `rask._deps` (so `Dep` pickles by reference, as the client's).
const PRELUDE: &str = r#"
import os, sys, types, pickle, cloudpickle
_m = types.ModuleType("rask._deps")
class Dep:
    __slots__ = ("i",)
    def __init__(self, i): self.i = i
    def __reduce__(self): return (Dep, (self.i,))
Dep.__module__ = "rask._deps"
_m.Dep = Dep
_pkg = types.ModuleType("rask"); _pkg.__path__ = []; _pkg._deps = _m
sys.modules["rask"] = _pkg; sys.modules["rask._deps"] = _m
"#;

pub fn interpreter() -> PathBuf {
    PythonConfig::new(None).interpreter
}

/// Runs `script` (after [`PRELUDE`]) with `stdin`; returns its stdout.
pub fn python(script: &str, stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(interpreter())
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The pickled call that `source` (Python defining `CALL = (func, args, kwargs)`) makes.
pub fn pickled_call(source: &str) -> Bytes {
    Bytes::from(python(
        &format!("{source}\nsys.stdout.buffer.write(cloudpickle.dumps(CALL))"),
        b"",
    ))
}

/// A `python.call` payload reading `inputs` task inputs.
pub fn payload(source: &str, inputs: u32) -> Bytes {
    encode_payload(&PyCall {
        call: pickled_call(source),
        inputs: (0..inputs).map(Input::new).collect(),
    })
    .expect("payload")
}

/// `repr()` of a pickled result, as Python prints it.
pub fn repr(e: &Encoded) -> String {
    assert_eq!(e.tag(), Some(rask_core::data::TAG_PICKLE), "{e:?}");
    let out = python(
        "sys.stdout.write(repr(pickle.loads(sys.stdin.buffer.read())))",
        &e.bytes()[1..],
    );
    String::from_utf8(out).expect("utf-8 repr")
}

/// An object pickled by Python, as a task input (another Python task's result).
pub fn pickled_input(expr: &str) -> Encoded {
    let out = python(
        &format!("sys.stdout.buffer.write(pickle.dumps({expr}, protocol=5))"),
        b"",
    );
    Encoded::with_tag(rask_core::data::TAG_PICKLE, &out)
}

pub fn registry(config: PythonConfig) -> Registry {
    let versions = rask_python::probe(&config).expect("the test interpreter runs tasks");
    let mut r = Registry::new();
    r.register(rask_python::family(config, Some(&versions)))
        .expect("register");
    r
}

pub fn call(r: &Registry, payload: &[u8], inputs: &[Encoded]) -> Result<Encoded, KernelError> {
    r.call("python.call", payload, inputs)
}
