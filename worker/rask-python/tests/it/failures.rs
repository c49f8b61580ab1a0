//! Calls that fail: exceptions, crashes, interpreters that cannot run tasks.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use rask_core::{Data, KernelError};
use rask_python::{PythonConfig, PythonError, probe};

use crate::{call, interpreter, payload, python, registry, repr};

fn exception(e: KernelError) -> rask_core::PythonException {
    match e {
        KernelError::Python(p) => *p,
        other => panic!("expected a Python exception, got {other:?}"),
    }
}

#[test]
fn an_exception_comes_back_with_its_type_message_traceback_and_pickle() {
    let r = registry(PythonConfig::new(None));
    let f = payload(
        "def inner(x):\n    raise ValueError(f'bad {x}')\ndef outer(x):\n    return inner(x)\nCALL = (outer, ('x',), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("ValueError", "bad x")
    );
    assert!(
        e.traceback
            .starts_with("Traceback (most recent call last):"),
        "{}",
        e.traceback
    );
    assert!(
        e.traceback.contains("in outer") && e.traceback.contains("in inner"),
        "{}",
        e.traceback
    );
    assert!(
        e.traceback.ends_with("ValueError: bad x\n"),
        "{}",
        e.traceback
    );
    assert!(
        !e.traceback.contains("run_task"),
        "the runner's frames are left out: {}",
        e.traceback
    );
    let back = python(
        "e = pickle.loads(sys.stdin.buffer.read())\nsys.stdout.write(f'{type(e).__name__} {e}')",
        &e.pickled.expect("a ValueError pickles"),
    );
    assert_eq!(back, b"ValueError bad x");

    // A class of the client's own, and one whose instances do not pickle.
    let f = payload(
        "class Oops(Exception):\n    pass\ndef f():\n    raise Oops('mine')\nCALL = (f, (), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("__main__.Oops", "mine")
    );
    assert!(e.pickled.is_some());
    let f = payload(
        "import threading\nclass Locked(Exception):\n    def __init__(self):\n        super().__init__('has a lock')\n        self.lock = threading.Lock()\n\
         def f():\n    raise Locked()\nCALL = (f, (), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!((e.message.as_str(), e.pickled), ("has a lock", None));

    // The process survives all of it; SystemExit too.
    let f = payload("CALL = (sys.exit, (4,), {})", 0);
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("SystemExit", "4")
    );
    let ok = payload("CALL = (len, ('abc',), {})", 0);
    assert_eq!(repr(&call(&r, &ok, &[]).unwrap()), "3");
}

#[test]
fn a_result_that_does_not_pickle_and_a_missing_input_are_exceptions() {
    let r = registry(PythonConfig::new(None));
    let f = payload(
        "def gen():\n    return (i for i in range(3))\nCALL = (gen, (), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(e.type_name, "TypeError");
    assert!(e.message.contains("generator"), "{}", e.message);
    let f = payload("CALL = (print, (Dep(3),), {})", 1);
    let e = exception(call(&r, &f, &[rask_core::Value::Int(1).encode()]).unwrap_err());
    assert_eq!(e.type_name, "IndexError");
    assert_eq!(
        e.message,
        "rask: Dep(3) in the call, but the task has 1 inputs"
    );
}

#[test]
fn a_crash_fails_its_task_clearly_and_the_next_task_gets_a_fresh_process() {
    let r = registry(PythonConfig::new(None));
    let pid = payload("CALL = (os.getpid, (), {})", 0);
    let first = repr(&call(&r, &pid, &[]).unwrap());

    let exit = payload("CALL = (os._exit, (3,), {})", 0);
    let err = call(&r, &exit, &[]).unwrap_err();
    assert!(matches!(err, KernelError::Failed(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with("python.call: the Python process (pid "),
        "{msg}"
    );
    assert!(msg.contains("exited with status 3"), "{msg}");
    let second = repr(&call(&r, &pid, &[]).unwrap());
    assert_ne!(first, second, "a new process");

    let segv = payload("import ctypes\nCALL = (ctypes.string_at, (0,), {})", 0);
    let msg = call(&r, &segv, &[]).unwrap_err().to_string();
    assert!(msg.contains("was killed by signal 11 (SIGSEGV)"), "{msg}");
    // faulthandler's report, from the end of its stderr.
    assert!(
        msg.contains("Fatal Python error: Segmentation fault"),
        "{msg}"
    );
    let third = repr(&call(&r, &pid, &[]).unwrap());
    assert_ne!(second, third);
}

#[test]
fn an_idle_process_killed_from_outside_is_replaced_before_the_next_task() {
    let r = registry(PythonConfig::new(None));
    let pid = payload("CALL = (os.getpid, (), {})", 0);
    let first = repr(&call(&r, &pid, &[]).unwrap());
    let status = std::process::Command::new("kill")
        .args(["-KILL", &first])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(100));
    let second = repr(&call(&r, &pid, &[]).unwrap());
    assert_ne!(first, second);
}

#[test]
fn a_missing_interpreter_is_named() {
    let config = PythonConfig::new(Some(PathBuf::from("/nonexistent/python9")));
    let err = probe(&config).unwrap_err();
    assert!(matches!(err, PythonError::NotFound { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Python interpreter \"/nonexistent/python9\" not found: give `rask worker --python PATH` or set RASK_PYTHON"
    );
}

#[test]
fn an_interpreter_without_cloudpickle_says_so_at_first_use() {
    // The test interpreter without its site-packages (`-S`), where cloudpickle lives.
    let dir = tempfile::tempdir().unwrap();
    let wrapper = dir.path().join("python-without-site");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", interpreter().display()),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = PythonConfig::new(Some(wrapper.clone()));
    let err = probe(&config).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PythonError::Unusable { .. }), "{err:?}");
    assert!(
        msg.contains("cannot run tasks: cloudpickle is not importable by"),
        "{msg}"
    );
    let mut r = rask_core::Registry::new();
    r.register(rask_python::family(config, None)).unwrap();
    let f = payload("CALL = (len, ('abc',), {})", 0);
    let msg = call(&r, &f, &[]).unwrap_err().to_string();
    assert!(msg.contains("cloudpickle is not importable"), "{msg}");
}

#[test]
fn an_interpreter_that_is_not_the_runners_fails_clearly() {
    // Something that runs but never speaks the protocol.
    let config = PythonConfig::new(Some(PathBuf::from("true")));
    let msg = probe(&config).unwrap_err().to_string();
    assert!(
        msg.contains("exited with status 0: it closed its socket before it was ready"),
        "{msg}"
    );
}

#[test]
fn a_call_that_does_not_unpickle_on_the_worker_says_where() {
    let r = registry(PythonConfig::new(None));
    // A function of a module only the client has: pickled by reference, as cloudpickle does.
    let f = payload(
        "m = types.ModuleType('client_only_mod')\nexec('def f():\\n    return 1', m.__dict__)\n\
         sys.modules['client_only_mod'] = m\nCALL = (m.f, (), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(e.type_name, "ModuleNotFoundError");
    assert_eq!(e.message, "No module named 'client_only_mod'");
    assert!(
        e.traceback
            .contains("(unpickling the call on a rask worker with Python 3."),
        "{}",
        e.traceback
    );
}

#[test]
fn a_call_of_a_rask_helper_this_workers_rask_lacks_says_the_packages_differ() {
    let r = registry(PythonConfig::new(None));
    // What a client of a newer rask pickles: a helper of `rask._deps` by reference, which this
    // worker's `rask._deps` (installed or the runner's stand-in) does not have.
    let f = payload(
        "m = types.ModuleType('rask._deps')\nexec('def helper_of_a_newer_rask():\\n    return 1', m.__dict__)\n\
         sys.modules['rask._deps'] = m\nCALL = (m.helper_of_a_newer_rask, (), {})",
        0,
    );
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(e.type_name, "AttributeError", "{}", e.traceback);
    assert!(
        e.message.contains("helper_of_a_newer_rask"),
        "{}",
        e.message
    );
    assert!(
        e.traceback.contains(
            "the call was pickled by a client whose rask package differs from this worker's"
        ),
        "{}",
        e.traceback
    );
    assert!(
        e.traceback.contains(" rask ") || e.traceback.contains("no rask package"),
        "{}",
        e.traceback
    );
}

#[test]
fn a_process_that_dies_while_its_fork_lives_on_fails_its_task_all_the_same() {
    let r = registry(PythonConfig::new(None));
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child");
    // The fork keeps the runner's socket (and pipes) open after the runner's own exit.
    let source = r#"
import time
def f(path):
    pid = os.fork()
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    open(path, 'w').write(str(pid))
    os._exit(3)
"#;
    let path = format!("{:?}", pid_file.display().to_string());
    let f = payload(&format!("{source}\nCALL = (f, ({path},), {{}})"), 0);
    let t0 = std::time::Instant::now();
    let msg = call(&r, &f, &[]).unwrap_err().to_string();
    let fork = std::fs::read_to_string(&pid_file).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &fork])
        .status();
    assert!(
        msg.contains("exited with status 3: reading the task's outcome: the process ended"),
        "{msg}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        t0.elapsed()
    );
    let ok = payload("CALL = (len, ('abc',), {})", 0);
    assert_eq!(repr(&call(&r, &ok, &[]).unwrap()), "3");
}

#[test]
fn user_code_reading_stdin_gets_eof_not_the_workers_messages() {
    let r = registry(PythonConfig::new(None));
    let f = payload("CALL = (input, (), {})", 0);
    let e = exception(call(&r, &f, &[]).unwrap_err());
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("EOFError", "EOF when reading a line")
    );
    let ok = payload("CALL = (len, ('abc',), {})", 0);
    assert_eq!(repr(&call(&r, &ok, &[]).unwrap()), "3");
}

#[test]
fn an_interrupt_to_the_process_group_leaves_the_processes_to_the_worker() {
    let r = registry(PythonConfig::new(None));
    let pid = payload("CALL = (os.getpid, (), {})", 0);
    let first = repr(&call(&r, &pid, &[]).unwrap());
    let status = std::process::Command::new("kill")
        .args(["-INT", &first])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        repr(&call(&r, &pid, &[]).unwrap()),
        first,
        "the same process runs on"
    );
}
