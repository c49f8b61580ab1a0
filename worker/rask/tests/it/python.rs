//! Users' Python functions on `rask worker` processes: calls pickled by a real Python (as the
//! Python client pickles them), run by the workers' pools, results and errors back to a client.
//! The interpreter is `$RASK_PYTHON` (scripts/test: the venv's), else `python3`; it needs
//! cloudpickle.

use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use rask::client::ClientError;
use rask::core::protocol::TaskError;
use rask::core::{Input, Pickled};
use rask::python::{CALL, PyCall, PythonConfig};
use rask::seed::{self, lit};
use rask::{KernelError, Value};

use crate::process_cluster;

/// The client's `rask._deps`, so `Dep` pickles by reference as the Python client's does.
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

fn python(script: &str, stdin: &[u8]) -> Vec<u8> {
    let mut child = Command::new(PythonConfig::new(None).interpreter)
        .arg("-c")
        .arg(format!("{PRELUDE}\n{script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The call `source` defines as `CALL = (func, args, kwargs)`, pickled.
fn pickled(source: &str) -> Bytes {
    Bytes::from(python(
        &format!("{source}\nsys.stdout.buffer.write(cloudpickle.dumps(CALL))"),
        b"",
    ))
}

/// A call without inputs.
fn py_call(source: &str) -> PyCall {
    PyCall {
        call: pickled(source),
        inputs: Vec::new(),
    }
}

fn repr(p: &Pickled) -> String {
    let out = python(
        "sys.stdout.write(repr(pickle.loads(sys.stdin.buffer.read())))",
        &p.0,
    );
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn python_calls_chain_across_worker_processes_and_read_engine_values() {
    let cluster = process_cluster(2).await;
    let client = cluster.client().await.unwrap();
    let a = client.submit(
        CALL,
        py_call("CALL = (lambda x: {'x': x + 1, 'pid': os.getpid()}, (41,), {})"),
    );
    let v = client.submit(seed::INC, lit(9)); // a Value from the engine's own functions
    let call = pickled(
        "def f(d, vs):\n    return d['x'] + sum(vs)\nCALL = (f, (Dep(0),), {'vs': [Dep(1), 1]})",
    );
    let b = client.submit_with(CALL, |d| {
        let x: Input<Pickled> = d.input(&a);
        let y: Input<Pickled> = d.input(&v).cast();
        PyCall {
            call,
            inputs: vec![x, y],
        }
    });
    assert_eq!(repr(&b.result().await.unwrap()), "53");
    let first = repr(&a.result().await.unwrap());
    assert!(first.starts_with("{'x': 42, 'pid': "), "{first}");
    cluster.shutdown().await;
}

#[tokio::test]
async fn exceptions_and_crashes_reach_the_client_and_the_worker_lives_on() {
    let cluster = process_cluster(1).await;
    let client = cluster.client().await.unwrap();
    let raise = py_call("def f():\n    raise KeyError('nope')\nCALL = (f, (), {})");
    let err = client.submit(CALL, raise).result().await.unwrap_err();
    let ClientError::Task(failure) = err else {
        panic!("expected a task failure, got {err:?}")
    };
    let TaskError::Kernel(KernelError::Python(e)) = failure.error else {
        panic!("expected a Python exception, got {:?}", failure.error)
    };
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("KeyError", "'nope'")
    );
    assert!(e.traceback.contains("in f"), "{}", e.traceback);
    assert!(e.pickled.is_some());

    let crash = py_call("CALL = (os._exit, (3,), {})");
    let err = client.submit(CALL, crash).result().await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("exited with status 3"), "{msg}");
    // The same worker runs the next call, on a new process.
    let ok = py_call("CALL = (sum, ([1, 2, 3],), {})");
    assert_eq!(repr(&client.submit(CALL, ok).result().await.unwrap()), "6");
    assert_eq!(cluster.snapshot().await.unwrap().workers.len(), 1);
    let v: Value = client.submit(seed::INC, lit(1)).result().await.unwrap();
    assert_eq!(v, Value::Int(2));
    cluster.shutdown().await;
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // `pid (comm) S ...`: the state follows the command's closing parenthesis.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn the_python_processes_of_a_killed_worker_go_with_it() {
    let mut cluster = process_cluster(1).await;
    let client = cluster.client().await.unwrap();
    let ids = py_call("CALL = (lambda: (os.getpid(), os.getppid()), (), {})");
    let ids = repr(&client.submit(CALL, ids).result().await.unwrap());
    let (pid, parent) = ids
        .trim_matches(['(', ')'])
        .split_once(", ")
        .map(|(a, b)| (a.parse::<u32>().unwrap(), b.parse::<u32>().unwrap()))
        .unwrap();
    let name = cluster.worker_names()[0].clone();
    assert_eq!(Some(parent), cluster.worker_pid(&name));
    // Busy in user code when its worker dies.
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let nap = py_call(&format!(
        "import time\ndef nap(p):\n    open(p, 'w').close()\n    time.sleep(60)\nCALL = (nap, ({:?},), {{}})",
        started.display().to_string()
    ));
    let nap = client.submit(CALL, nap);
    let running = crate::eventually(std::time::Duration::from_secs(10), async || {
        started.exists()
    })
    .await;
    assert!(running);
    cluster.kill_worker(&name).await.unwrap();
    let ended = crate::eventually(std::time::Duration::from_secs(5), async || gone(pid)).await;
    assert!(ended, "Python process {pid} outlived its worker");
    drop(nap);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_worker_without_a_usable_python_runs_the_rest_and_says_why_python_cannot() {
    let mut config = rask::local::LocalClusterConfig::new(1, 1).processes(crate::rask_bin());
    config.worker_env.push(("RUST_LOG".into(), "error".into()));
    config
        .worker_env
        .push(("RASK_PYTHON".into(), "/nonexistent/python3".into()));
    let cluster = rask::local::LocalCluster::start(config).await.unwrap();
    let client = cluster.client().await.unwrap();
    let err = client
        .submit(CALL, py_call("CALL = (len, ('abc',), {})"))
        .result()
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with(
            "python.call: Python interpreter \"/nonexistent/python3\" not found: give `rask worker --python PATH` or set RASK_PYTHON"
        ),
        "{err}"
    );
    let v: Value = client.submit(seed::INC, lit(1)).result().await.unwrap();
    assert_eq!(v, Value::Int(2));
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_python_flag_reaches_a_worker_under_its_nanny() {
    let mut config = rask::local::LocalClusterConfig::new(0, 1);
    config.dashboard = None;
    let cluster = rask::local::LocalCluster::start(config).await.unwrap();
    // The environment names no usable Python: only the flag, passed on by the nanny, does.
    let _worker = tokio::process::Command::new(crate::rask_bin())
        .arg("worker")
        .arg(cluster.scheduler_address())
        .args([
            "--name",
            "nannied",
            "--nthreads",
            "1",
            "--listen-host",
            "127.0.0.1",
        ])
        .arg("--python")
        .arg(PythonConfig::new(None).interpreter)
        .env("RASK_PYTHON", "/nonexistent/python3")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    cluster
        .wait_for_workers(1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let f = client.submit(CALL, py_call("CALL = (sum, ([1, 2, 3],), {})"));
    assert_eq!(repr(&f.result().await.unwrap()), "6");
    cluster.shutdown().await;
}

#[tokio::test]
async fn user_output_goes_to_the_workers_log() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut config = rask::local::LocalClusterConfig::new(0, 1);
    config.dashboard = None;
    let cluster = rask::local::LocalCluster::start(config).await.unwrap();
    let mut worker = tokio::process::Command::new(crate::rask_bin())
        .arg("worker")
        .arg(cluster.scheduler_address())
        .args([
            "--name",
            "chatty",
            "--nthreads",
            "1",
            "--listen-host",
            "127.0.0.1",
        ])
        .env("RUST_LOG", "warn,rask_python::user=info")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(worker.stderr.take().unwrap()).lines();
    cluster
        .wait_for_workers(1, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let talk = py_call(
        "def talk():\n    print('hello from user code')\n    print('and to stderr', file=sys.stderr)\n    return 1\nCALL = (talk, (), {})",
    );
    assert_eq!(
        repr(&client.submit(CALL, talk).result().await.unwrap()),
        "1"
    );
    let mut seen = Vec::new();
    let found = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Ok(Some(line)) = log.next_line().await {
            seen.push(line);
            let text = seen.join("\n");
            if text.contains("stdout: hello from user code")
                && text.contains("stderr: and to stderr")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "{seen:?}");
    cluster.shutdown().await;
}
