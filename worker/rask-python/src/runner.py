# The runner of rask's `python` family: one long-lived Python process that runs users' pickled
# function calls, one at a time, for a rask worker (worker/rask-python, which embeds this file).
#
# The worker starts it as `python -u -c <this file> [probe]` with a socket on fd 0; stdout and
# stderr are pipes the worker drains into its log. Every message on the socket, either way, is a
# frame: 1 byte of kind, u64 LE body length, body.
#
#   runner -> worker  H  "MAJOR.MINOR CLOUDPICKLE_VERSION RASK" once started (then tasks); RASK
#                        is the rask package's "VERSION@DIGEST" (of its rask._deps), "-" for none
#                     E  utf-8 message: it cannot run tasks (cloudpickle missing...), then exits
#   worker -> runner  T  u32 LE number of inputs n, then the frames C and n times I
#                     C  cloudpickle.dumps((func, args, kwargs)), with rask._deps.Dep(j) for input j
#                     I  one input: a pickle
#   runner -> worker  R  the result, pickled (protocol 5; cloudpickle when pickle cannot)
#                     X  an exception: 3 strings (u32 LE length, utf-8): type, message,
#                        traceback; then the cloudpickled exception (empty: it does not pickle)
#
# With the argument `probe` it sends H (or E) and exits. EOF on the socket ends it, and so does
# its parent (the worker) going away.

import os
import sys


def _rask_package(deps):
    """The rask package the calls unpickle against, for error messages: the installed one's
    version and place, or the runner's stand-in."""
    if getattr(deps, "__rask_stand_in__", False):
        return "no rask package (the runner's own rask._deps)"
    version = getattr(sys.modules.get("rask"), "__version__", "of unknown version")
    return f"rask {version} ({os.path.dirname(deps.__file__ or '?')})"


def _rask_tag(deps):
    """The rask package as the H message names it: `VERSION@DIGEST`, DIGEST being the first 12
    hex digits of the SHA-256 of its rask._deps source (what clients' pickles refer to; the rask
    client computes the same to compare), "-" without a package."""
    if getattr(deps, "__rask_stand_in__", False):
        return "-"
    import hashlib

    version = getattr(sys.modules.get("rask"), "__version__", "unknown")
    try:
        with open(deps.__file__, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
    except (OSError, TypeError):
        digest = "unknown"
    return f"{version}@{digest}".replace("+", "_").replace(" ", "_")


def _deps_module():
    """rask._deps, where the client's Dep placeholders are pickled by reference: the installed
    rask package's, else a stand-in registered in sys.modules."""
    import importlib.util

    try:
        found = importlib.util.find_spec("rask") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        import rask._deps

        return rask._deps
    import types

    pkg = sys.modules.get("rask") or types.ModuleType("rask")
    if not hasattr(pkg, "__path__"):
        pkg.__path__ = []
    mod = types.ModuleType("rask._deps")
    mod.__rask_stand_in__ = True

    class Dep:
        """Stands for the task's input `i` in a pickled call."""

        __slots__ = ("i",)

        def __init__(self, i):
            self.i = i

        def __reduce__(self):
            return (Dep, (self.i,))

        def __repr__(self):
            return f"Dep({self.i})"

    Dep.__module__ = "rask._deps"
    mod.Dep = Dep
    pkg._deps = mod
    sys.modules.setdefault("rask", pkg)
    sys.modules["rask._deps"] = mod
    return mod


def main():
    import socket
    import struct

    sock = socket.socket(fileno=os.dup(0))
    # User code reading stdin gets EOF, not the worker's messages.
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)

    def send(kind, *parts):
        n = sum(len(p) for p in parts)
        if n < 1 << 16:
            sock.sendall(b"".join((kind, struct.pack("<Q", n), *parts)))
            return
        sock.sendall(kind + struct.pack("<Q", n))
        for p in parts:
            sock.sendall(p)

    rfile = sock.makefile("rb", buffering=1 << 16)

    def recv(expect):
        head = rfile.read(9)
        if len(head) < 9:
            return None
        kind, n = head[:1], struct.unpack("<Q", head[1:])[0]
        if kind != expect:
            raise RuntimeError(f"rask runner: expected a {expect!r} frame, got {kind!r}")
        body = rfile.read(n)
        if len(body) < n:
            return None
        return body

    try:
        import cloudpickle
    except ImportError as e:
        send(b"E", f"cloudpickle is not importable by {sys.executable}: {e}".encode())
        return 1
    try:
        deps = _deps_module()
        Dep = deps.Dep
        rask_package = _rask_package(deps)
    except Exception as e:
        send(b"E", f"cannot set up rask._deps in {sys.executable}: {e!r}".encode())
        return 1
    v = sys.version_info
    send(b"H", f"{v.major}.{v.minor} {cloudpickle.__version__} {_rask_tag(deps)}".encode())
    if sys.argv[1:] == ["probe"]:
        return 0

    import faulthandler
    import pickle
    import signal
    import threading
    import time
    import traceback

    # A Ctrl-C at the worker's terminal reaches its whole process group: the worker decides, and
    # this process ends with it (EOF, or its parent gone).
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    # A crash (SIGSEGV, SIGABRT...) prints the Python stack to stderr, which the worker logs and
    # quotes in the task's error.
    faulthandler.enable()

    parent = os.getppid()

    def watch_parent():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch_parent, name="rask-watch-parent", daemon=True).start()

    def substitute(x, inputs):
        t = type(x)
        if t is Dep:
            if not 0 <= x.i < len(inputs):
                raise IndexError(f"rask: Dep({x.i}) in the call, but the task has {len(inputs)} inputs")
            return inputs[x.i]
        if t is list:
            return [substitute(y, inputs) for y in x]
        if t is tuple:
            return tuple(substitute(y, inputs) for y in x)
        if t is dict:
            return {k: substitute(y, inputs) for k, y in x.items()}
        return x

    def type_name(e):
        t = type(e)
        if t.__module__ == "builtins":
            return t.__qualname__
        return f"{t.__module__}.{t.__qualname__}"

    def report(e, tb):
        lines = traceback.format_exception(type(e), e, tb)
        try:
            message = str(e)
        except Exception as err:
            message = f"<str() of the exception failed: {err!r}>"
        try:
            blob = cloudpickle.dumps(e, protocol=5)
            pickle.loads(blob)
        except Exception:
            blob = b""
        parts = [s.encode("utf-8", "replace") for s in (type_name(e), message, "".join(lines))]
        head = b"".join(struct.pack("<I", len(p)) + p for p in parts)
        send(b"X", head, blob)

    def run_task(n):
        call = recv(b"C")
        inputs = []
        for _ in range(n):
            body = recv(b"I")
            if body is None:
                return False
            inputs.append(body)
        if call is None:
            return False
        try:
            try:
                func, args, kwargs = pickle.loads(call)
            except BaseException as e:
                # Most often a client of another Python or cloudpickle version.
                if hasattr(e, "add_note"):
                    e.add_note(
                        f"(unpickling the call on a rask worker with Python {sys.version.split()[0]},"
                        f" cloudpickle {cloudpickle.__version__} and {rask_package})"
                    )
                    # A name of rask's own that this worker's rask lacks: the client's is another
                    # release (an older package installed on the workers, most often).
                    if isinstance(e, (AttributeError, ImportError)) and "rask" in str(e):
                        e.add_note(
                            "the call was pickled by a client whose rask package differs from this"
                            " worker's: install the client's rask version where the workers run"
                        )
                raise
            del call
            inputs = [pickle.loads(b) for b in inputs]
            if inputs:
                args = substitute(args, inputs)
                kwargs = substitute(kwargs, inputs)
            del inputs
        except BaseException as e:
            report(e, e.__traceback__)
            return True
        try:
            result = func(*args, **kwargs)
        except BaseException as e:
            # From the user's function down: the runner's own frame is left out.
            report(e, e.__traceback__.tb_next)
            return True
        finally:
            del func, args, kwargs
        try:
            # The C pickler where it can (most results), cloudpickle where it cannot (lambdas,
            # classes defined by the client).
            out = pickle.dumps(result, protocol=5)
        except Exception:
            try:
                out = cloudpickle.dumps(result, protocol=5)
            except BaseException as e:
                report(e, e.__traceback__)
                return True
        del result
        send(b"R", out)
        return True

    while True:
        body = recv(b"T")
        if body is None:
            return 0
        if not run_task(struct.unpack("<I", body)[0]):
            return 0
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
