//! Calls that succeed: functions, lambdas, closures, dependencies, processes reused and parallel.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rask_core::{Data, Value};
use rask_python::{PythonConfig, Stream, probe};

use crate::{call, payload, pickled_input, registry, repr};

#[test]
fn a_function_a_lambda_and_a_closure_run_and_return() {
    let r = registry(PythonConfig::new(None));
    let f = payload("def inc(x):\n    return x + 1\nCALL = (inc, (41,), {})", 0);
    assert_eq!(repr(&call(&r, &f, &[]).unwrap()), "42");
    let l = payload(
        "CALL = (lambda x, y=0: (x * y, 'lambda'), (6,), {'y': 7})",
        0,
    );
    assert_eq!(repr(&call(&r, &l, &[]).unwrap()), "(42, 'lambda')");
    let c = payload(
        "def adder(n):\n    def add(x):\n        return [x + n, os.getpid()]\n    return add\nCALL = (adder(10), (32,), {})",
        0,
    );
    let first = repr(&call(&r, &c, &[]).unwrap());
    assert!(first.starts_with("[42, "), "{first}");
    // The process is long-lived: the next call runs in the same one.
    assert_eq!(repr(&call(&r, &c, &[]).unwrap()), first);
}

#[test]
fn dependencies_nested_in_lists_tuples_and_dicts_are_substituted() {
    let r = registry(PythonConfig::new(None));
    let f = payload(
        "def f(*args, **kwargs):\n    return (args, kwargs)\n\
         CALL = (f, ([Dep(0), {'k': (Dep(1), 5)}], Dep(2)), {'z': [Dep(1)], 'w': 'plain'})",
        3,
    );
    let inputs = [
        pickled_input("{'a': [1, 2]}"),
        Value::List(vec![
            Value::Int(-7),
            Value::Str("x é".into()),
            Value::Float(2.5),
            Value::None,
            Value::Bool(true),
            Value::Bytes(Bytes::from_static(b"\x00b")),
        ])
        .encode(),
        Value::Int(i64::MIN).encode(),
    ];
    let out = repr(&call(&r, &f, &inputs).unwrap());
    let vals = "[-7, 'x é', 2.5, None, True, b'\\x00b']";
    assert_eq!(
        out,
        format!(
            "(([{{'a': [1, 2]}}, {{'k': ({vals}, 5)}}], -9223372036854775808), {{'z': [{vals}], 'w': 'plain'}})"
        )
    );
}

#[test]
fn processes_run_in_parallel_one_per_calling_thread() {
    let r = registry(PythonConfig::new(None));
    // Each call waits for the other to have started: they only both finish if they overlap.
    let dir = tempfile::tempdir().unwrap();
    let meet = |me: &str, other: &str| {
        let source = r#"
import time
def meet(d, me, other):
    open(os.path.join(d, me), 'w').close()
    end = time.time() + 20
    while not os.path.exists(os.path.join(d, other)):
        if time.time() > end:
            raise TimeoutError(me + ' waited alone')
        time.sleep(0.005)
    return os.getpid()
"#;
        let args = format!(
            "({:?}, {me:?}, {other:?})",
            dir.path().display().to_string()
        );
        payload(&format!("{source}\nCALL = (meet, {args}, {{}})"), 0)
    };
    let (a, b) = (meet("a", "b"), meet("b", "a"));
    let pids: Vec<String> = std::thread::scope(|s| {
        let ha = s.spawn(|| call(&r, &a, &[]));
        let hb = s.spawn(|| call(&r, &b, &[]));
        [ha, hb]
            .into_iter()
            .map(|h| repr(&h.join().unwrap().unwrap()))
            .collect()
    });
    assert_ne!(pids[0], pids[1], "two threads, two processes");
}

#[test]
fn more_than_a_mebibyte_of_output_does_not_block_and_reaches_the_log() {
    let out = Arc::new(AtomicUsize::new(0));
    let err = Arc::new(AtomicUsize::new(0));
    let (o, e) = (out.clone(), err.clone());
    let config = PythonConfig::new(None).with_output(move |l| {
        let n = l.line.len() + 1;
        match l.stream {
            Stream::Stdout => o.fetch_add(n, Ordering::Relaxed),
            Stream::Stderr => e.fetch_add(n, Ordering::Relaxed),
        };
    });
    let r = registry(config);
    let f = payload(
        "def loud():\n    line = 'y' * 1023\n    for _ in range(2048):\n        print(line)\n        print(line, file=sys.stderr)\n    return 'done'\nCALL = (loud, (), {})",
        0,
    );
    assert_eq!(repr(&call(&r, &f, &[]).unwrap()), "'done'");
    let deadline = Instant::now() + Duration::from_secs(10);
    while (out.load(Ordering::Relaxed) < 2 << 20 || err.load(Ordering::Relaxed) < 2 << 20)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(out.load(Ordering::Relaxed), 2 << 20);
    assert_eq!(err.load(Ordering::Relaxed), 2 << 20);
}

#[test]
fn the_probe_reports_the_interpreters_versions() {
    let v = probe(&PythonConfig::new(None)).unwrap();
    let expected = crate::python(
        "import cloudpickle\nsys.stdout.write('%d.%d %s' % (sys.version_info[0], sys.version_info[1], cloudpickle.__version__))",
        b"",
    );
    assert_eq!(
        format!("{} {}", v.python, v.cloudpickle),
        String::from_utf8(expected).unwrap()
    );
    assert!(v.family_version().starts_with("1+py3."), "{v:?}");
}

#[test]
fn large_results_and_inputs_cross_whole() {
    let r = registry(PythonConfig::new(None));
    let big = payload(
        "CALL = (lambda n: bytes(range(256)) * (n // 256), (24 << 20,), {})",
        0,
    );
    let out = call(&r, &big, &[]).unwrap();
    assert!(out.len() > 24 << 20, "{}", out.len());
    let check = payload(
        "def check(b, also):\n    return (len(b), b == bytes(range(256)) * (len(b) // 256), len(also))\nCALL = (check, (Dep(0), Dep(1)), {})",
        2,
    );
    let also = Value::Bytes(Bytes::from(vec![7u8; 3 << 20])).encode();
    assert_eq!(
        repr(&call(&r, &check, &[out, also]).unwrap()),
        format!("({}, True, {})", 24 << 20, 3 << 20)
    );
}

/// numpy arrays (pickle protocol 5 buffers, in band) go from one task to the next: the
/// interpreter needs numpy (the venv of scripts/test has it).
#[test]
fn numpy_arrays_pass_from_task_to_task() {
    let r = registry(PythonConfig::new(None));
    let make = payload(
        "import numpy as np\nCALL = (np.arange, (1_000_000,), {'dtype': 'float64'})",
        0,
    );
    let array = call(&r, &make, &[]).unwrap();
    assert!(array.len() > 8_000_000, "{}", array.len());
    let total = payload(
        "def total(a):\n    return (type(a).__name__, float(a.sum()))\nCALL = (total, (Dep(0),), {})",
        1,
    );
    assert_eq!(
        repr(&call(&r, &total, &[array]).unwrap()),
        "('ndarray', 499999500000.0)"
    );
}
