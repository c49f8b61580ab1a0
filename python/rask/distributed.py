"""Dask's distributed API on rask: `Client`, `LocalCluster`, futures, `wait`, `as_completed`.

A submitted function runs on a rask worker's Python process::

    from rask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2) as cluster, Client(cluster) as client:
        x = client.submit(lambda a: a + 1, 10)
        y = client.submit(pow, x, 2)          # a future as an argument: y waits for x
        assert y.result() == 121

Functions and arguments are pickled with cloudpickle (lambdas and closures included); futures
among the arguments, also inside lists, tuples and dict values, become the task's inputs. An
exception raised by the function is raised again by `result()` and `gather()`, as the same
type, with the worker's traceback as its `__cause__`.

`Client.compute` and `Client.persist` send `rask.delayed` graphs; `Client.scatter` places data
on the cluster; `progress` draws a text progress bar.

Not (yet) as in Dask: every `submit` is a new task (as with `pure=False`), so equal calls are not
shared; `scatter` sends the data through the scheduler (as a task returning it) rather than to the
workers directly.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import time
import warnings
import weakref
from collections import namedtuple
from collections.abc import Iterable, Iterator
from typing import Any, Callable

import cloudpickle

from . import _rask
from ._delayed import Delayed, _is_array, from_future, graph
from ._deps import Dep, Function, identity
from ._futures import (
    _FAILED,
    BaseClient,
    Future,
    FutureCancelledError,
    KilledWorker,
    RemoteTraceback,
    TaskError,
    _defaults,
    _exception_of,
    _value_of,
    default_client,
)
from ._local import LocalCluster
from .security import Security

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Client",
    "Future",
    "FutureCancelledError",
    "KilledWorker",
    "LocalCluster",
    "RemoteTraceback",
    "Security",
    "TaskError",
    "VersionMismatch",
    "VersionMismatchWarning",
    "as_completed",
    "default_client",
    "progress",
    "wait",
]

CONNECT_TIMEOUT_S = 10.0


class VersionMismatch(RuntimeError):
    """The workers' Python or cloudpickle cannot run the calls this client pickles."""


class VersionMismatchWarning(UserWarning):
    """The workers' rask package is not this client's: calls that use rask's helpers on the
    workers (`Client.map`, delayed graphs, collections) may fail to unpickle there."""


def _check_worker_versions(
    families: list[tuple[str, str]], python: tuple[int, int], cloudpickle_major: int, rask: str | None = None
) -> None:
    """Raises `VersionMismatch` if a worker's `python` family names another Python minor or
    cloudpickle major version than this client's: pickled functions do not travel between them.
    Warns (`VersionMismatchWarning`) if it names another rask package than `rask` (this client's
    `_rask_tag()`), or none. Its version reads `1+py3.11+cloudpickle3+rask0.1.0@3f2a9c01b2d4`
    (`+norask` where its Python has no rask package; `1+unavailable` where the worker has no
    usable Python: its tasks fail saying why)."""
    mine = f"Python {python[0]}.{python[1]} and cloudpickle {cloudpickle_major}"
    for name, version in families:
        if name != "python":
            continue
        parts = version.split("+")
        if "unavailable" in parts:
            continue
        py = next((p[2:] for p in parts if p.startswith("py")), None)
        cp = next((p[len("cloudpickle") :] for p in parts if p.startswith("cloudpickle")), None)
        if py != f"{python[0]}.{python[1]}" or cp != str(cloudpickle_major):
            raise VersionMismatch(
                f"the workers run Python {py} and cloudpickle {cp} (python family {version}), "
                f"this client {mine}: functions pickled here would not load there; use the "
                "workers' Python versions on the client, or give the workers this Python with "
                "`rask worker --python` / RASK_PYTHON"
            )
        theirs = next((p for p in parts if p == "norask" or p.startswith("rask")), None)
        if rask is None or theirs is None or theirs == f"rask{rask}":
            continue
        client_version = rask.split("@")[0]
        if theirs == "norask":
            found = "no rask package in the workers' Python"
        else:
            found = f"the workers' rask package is {theirs[4:]} (version@digest of its rask._deps)"
        warnings.warn(
            f"{found}, this client's is {rask}: Client.map, delayed graphs and collections "
            f"pickle calls of rask's helpers, which may not load there; install rask "
            f"{client_version} (this client's build) in the Python the workers run",
            VersionMismatchWarning,
            stacklevel=3,
        )
        return


def _rask_tag() -> str:
    """This client's rask package as the workers' runner names its own (worker/rask-python's
    runner.py, `_rask_tag`): `VERSION@DIGEST`, DIGEST the first 12 hex digits of the SHA-256
    of `rask/_deps.py`, whose names the pickled calls refer to."""
    from . import _deps

    version = getattr(sys.modules.get(__package__ or "rask"), "__version__", "unknown")
    try:
        with open(_deps.__file__, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()[:12]
    except (OSError, TypeError):
        digest = "unknown"
    return f"{version}@{digest}".replace("+", "_").replace(" ", "_")


def _cloudpickle_major() -> int:
    return int(cloudpickle.__version__.split(".")[0])


# Keywords of Dask's submit and map that configure the task rather than the call: taken by rask's
# too (as by Dask's, they never reach the function), and refused until rask supports them.
_DASK_TASK_KEYWORDS = frozenset(
    ["key", "workers", "resources", "retries", "priority", "fifo_timeout", "allow_other_workers", "actor", "actors", "batch_size"]
)


def _refuse_task_keywords(kwargs: dict) -> None:
    unsupported = sorted(_DASK_TASK_KEYWORDS & kwargs.keys())
    if unsupported:
        raise TypeError(f"rask does not support Dask's {', '.join(k + '=' for k in unsupported)} yet")


def _key_prefix(func: Callable) -> str:
    """Dask's key names: the function's name (`inc`, `lambda`), as task statistics group them."""
    name = getattr(func, "__name__", None) or type(func).__name__
    name = "".join(c for c in name if c.isalnum() or c == "_")
    return name or "call"


class _Inputs:
    """Collects the futures among a call's arguments, each once, and replaces them by `Dep(i)`
    (`i`: the future's position among the task's inputs)."""

    def __init__(self, client: Client):
        self.client = client
        self.futures: list[_rask.Future] = []
        self.index: dict[str, int] = {}

    def replace(self, obj: Any) -> Any:
        t = type(obj)
        if t is Future:
            if obj.client is not self.client:
                raise ValueError(f"the future {obj.key} belongs to another client")
            i = self.index.get(obj.key)
            if i is None:
                i = self.index[obj.key] = len(self.futures)
                self.futures.append(obj._native)
            return Dep(i)
        # The worker puts inputs back in exact lists, tuples and dict values only.
        if t is list or t is tuple:
            return t(self.replace(x) for x in obj)
        if t is dict:
            return {k: self.replace(v) for k, v in obj.items()}
        return obj


class Client(BaseClient):
    """A connection to a rask scheduler (Dask's `Client`).

    `address` is `tcp://host:port` (or `host:port`) of a running `rask scheduler`, or a
    `LocalCluster`; without it, a `LocalCluster` is started with the keyword arguments given
    (`n_workers`, `threads_per_worker`, `memory_limit`) and closed with the client.

    A `tls://host:port` scheduler is reached over mutual TLS with the files of `security` (a
    `Security`); the fields it leaves out are read from Dask's variables
    (`DASK_DISTRIBUTED__COMM__TLS__CA_FILE`, `..__TLS__CLIENT__CERT`, `..__TLS__CLIENT__KEY`,
    `DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION`), as `rask run` reads them.

    Connecting checks that the workers run this client's Python minor and cloudpickle major
    versions (`VersionMismatch` otherwise), and warns (`VersionMismatchWarning`) if their Python
    has another build of the rask package, or none. Workers that join later are not checked
    here: a call they cannot load fails naming their versions and this client's.
    """

    def __init__(self, address: str | LocalCluster | None = None, *, timeout: float = CONNECT_TIMEOUT_S, set_as_default: bool = True, security: Security | None = None, **cluster_kwargs: Any):
        self.cluster: LocalCluster | None = None
        # This client's futures by key, so that a key is held by one future (a pure delayed
        # call, a scattered value or a persisted graph met again reuses it).
        self._futures: weakref.WeakValueDictionary[str, Future] = weakref.WeakValueDictionary()
        self._own_cluster = False
        if security is None:
            security = Security()
        elif not isinstance(security, Security):
            raise TypeError(f"security must be a rask.distributed.Security, got {type(security).__name__}")
        if address is None:
            address = LocalCluster(**cluster_kwargs)
            self._own_cluster = True
        elif cluster_kwargs:
            raise TypeError(f"unexpected arguments {sorted(cluster_kwargs)}: they configure a new LocalCluster, but an address was given")
        if isinstance(address, LocalCluster):
            self.cluster = address
            address = address.scheduler_address
        if not isinstance(address, str):
            raise TypeError(f"address must be 'tcp://host:port' or a LocalCluster, got {address!r}")
        if "://" not in address:
            address = f"tcp://{address}"
        try:
            self._native: _rask.Client | None = _rask.Client.connect(
                address,
                float(timeout),
                ca_file=security.tls_ca_file,
                cert=security.tls_client_cert,
                key=security.tls_client_key,
                require_encryption=security.require_encryption,
            )
            _check_worker_versions(
                self._native.worker_families, sys.version_info[:2], _cloudpickle_major(), _rask_tag()
            )
        except BaseException:
            self._native = None
            if self._own_cluster and self.cluster is not None:
                self.cluster.close()
            raise
        self.address = address
        if set_as_default:
            _defaults.append(self)

    def _client(self) -> _rask.Client:
        if self._native is None:
            raise RuntimeError("the client is closed")
        return self._native

    def _call(self, func: Callable, args: tuple, kwargs: dict, pickled_func: Function | None = None) -> tuple[bytes, list[_rask.Future]]:
        if not callable(func):
            raise TypeError(f"the first argument must be callable, got {func!r}")
        inputs = _Inputs(self)
        args, kwargs = inputs.replace(args), inputs.replace(kwargs)
        if pickled_func is not None and _plain(args) and _plain(kwargs):
            # Arguments Python's own pickle writes as values (no class of the user's to send
            # by value): the C pickler, with the function pickled once for the whole map.
            return pickle.dumps((pickled_func, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL), inputs.futures
        return cloudpickle.dumps((func, args, kwargs), protocol=pickle.HIGHEST_PROTOCOL), inputs.futures

    def submit(self, func: Callable, *args: Any, pure: bool | None = None, **kwargs: Any) -> Future:
        """Runs `func(*args, **kwargs)` on a worker. Futures among the arguments are replaced by
        their values there. `pure` is accepted for Dask's signature: every call is a new task.
        Dask's other task options (`key=`, `retries=`, `resources=`, ...) raise `TypeError`."""
        native = self._client()
        _refuse_task_keywords(kwargs)
        call, deps = self._call(func, args, kwargs)
        return Future(native.submit(_key_prefix(func), call, deps), self)

    def map(self, func: Callable, *iterables: Iterable, pure: bool | None = None, **kwargs: Any) -> list[Future]:
        """`submit(func, *items, **kwargs)` for each tuple of items of the iterables (zipped),
        sent to the scheduler as one graph."""
        native = self._client()
        _refuse_task_keywords(kwargs)
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        for it in iterables:
            if not isinstance(it, Iterable):
                raise TypeError(f"map() takes iterables of arguments, got {type(it).__name__}")
        if not callable(func):
            raise TypeError(f"the first argument must be callable, got {func!r}")
        pickled_func = Function(cloudpickle.dumps(func, protocol=pickle.HIGHEST_PROTOCOL))
        calls = [self._call(func, items, kwargs, pickled_func) for items in zip(*iterables)]
        if not calls:
            return []
        return [Future(f, self) for f in native.submit_many(_key_prefix(func), calls)]

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        """The values of `futures`: a future, or lists, tuples, sets and dicts of them (and of
        other values, kept as they are). With `errors="skip"`, failed futures are left out of
        lists and tuples; otherwise the first failure is raised."""
        if errors not in ("raise", "skip"):
            raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
        self._client()
        found: dict[str, Future] = {}
        _collect(futures, found)
        outcomes = _rask.gather([f._native for f in found.values()])
        values: dict[str, tuple[int, Any]] = dict(zip(found, outcomes))
        if errors == "raise":
            for outcome in outcomes:
                if outcome[0] == _FAILED:
                    raise _exception_of(outcome[1])
        return _rebuild(futures, values)

    def _send_graph(self, tasks: list[tuple[str, bytes, list[str]]], wanted: list[str]) -> dict[str, Future]:
        natives = self._client().submit_graph(tasks, wanted) if wanted else []
        return {n.key: Future(n, self) for n in natives}

    def _compute_graph(self, roots: list) -> list[Future]:
        """Sends the graphs of delayed values `roots` in one message; a future of each. Tasks
        whose keys this client holds futures of are read from those, not sent again."""
        self._client()
        held = dict(self._futures.items())
        tasks, external = graph(roots, held)
        for f in external.values():
            if f.client is not self:
                raise ValueError(f"the future {f.key} belongs to another client")
        wanted = list(dict.fromkeys(r.key for r in roots if r.key not in external))
        sent = self._send_graph(tasks, wanted)
        return [sent.get(r.key) or external[r.key] for r in roots]

    def compute(self, collections: Any, sync: bool = False, optimize_graph: bool = True, **kwargs: Any) -> Any:
        """Starts computing delayed values on the cluster: a future for a delayed value, a list of
        futures (other items kept as they are) for a list or tuple of them, all sent as one
        graph. With `sync=True`, their values instead (as `gather` gives them)."""
        _refuse_task_keywords(kwargs)
        if kwargs:
            raise TypeError(f"rask's compute does not take {', '.join(sorted(kwargs))}")
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        if any(_is_array(x) for x in items):
            raise TypeError("Client.compute of a rask.array array (a future of it) is not supported yet: use x.compute(), rask.compute(x, ...) or x.persist()")
        delayed_items = [x for x in items if isinstance(x, Delayed)]
        futures = dict(zip((d.key for d in delayed_items), self._compute_graph(delayed_items)))
        result = [futures[x.key] if isinstance(x, Delayed) else x for x in items]
        if sync:
            result = self.gather(result)
        return result[0] if single else result

    def persist(self, collections: Any, optimize_graph: bool = True, **kwargs: Any) -> Any:
        """Starts computing delayed values and returns them backed by their results on the
        cluster: computing them, or values made from them, reads those results. A `rask.array`
        array gives the array over its chunks kept on the cluster. A list or tuple gives a
        list."""
        single = not isinstance(collections, (list, tuple))
        items = [collections] if single else list(collections)
        computed = iter(self.compute([x for x in items if not _is_array(x)], **kwargs))
        result = []
        for x in items:
            if _is_array(x):
                # rask.array's arrays persist as arrays over their chunks on the cluster.
                result.append(x.persist(scheduler=self))
                continue
            f = next(computed)
            result.append(from_future(f, x._length) if isinstance(x, Delayed) else f)
        return result[0] if single else result

    def scatter(self, data: Any, workers: Any = None, broadcast: bool = False, direct: Any = None, hash: bool = True, timeout: Any = None, asynchronous: Any = None) -> Any:
        """Places data on the cluster: a future for a value, a list (tuple, set) of futures for
        a list (tuple, set) of values, a dict of futures for a dict (its keys, which must be
        strings, become the futures' keys). With `hash=True` a value's key is made from its
        pickle (`int-<hash>`), so scattering it again reuses the copy held."""
        if workers is not None or broadcast:
            raise TypeError("rask does not support scatter's workers= or broadcast=True yet")
        self._client()
        t = type(data)
        calls: dict[str, bytes] = {}
        keys: list[str] = []
        if t is dict:
            for k, v in data.items():
                if not isinstance(k, str) or not k:
                    raise TypeError(f"rask needs non-empty string keys to scatter a dict, got {k!r}")
                calls[k] = _scatter_call(v)
                keys.append(k)
        else:
            for v in data if t in (list, tuple, set, frozenset) else [data]:
                call = _scatter_call(v)
                prefix = _key_prefix(type(v))
                key = f"{prefix}-{hashlib.sha256(call).hexdigest()[:32]}" if hash else _rask.unique_key(prefix)
                calls.setdefault(key, call)
                keys.append(key)
        held = {k: f for k in calls if (f := self._futures.get(k)) is not None}
        wanted = [k for k in calls if k not in held]
        sent = self._send_graph([(k, calls[k], []) for k in wanted], wanted)
        futures = {**held, **sent}
        if t is dict:
            return {k: futures[k] for k in keys}
        if t in (list, tuple, set, frozenset):
            return t(futures[k] for k in keys)
        return futures[keys[0]]

    def cancel(self, futures: Any, asynchronous: Any = None, force: bool = False) -> None:
        """Cancels the tasks of `futures` (a future, or lists, tuples, sets and dicts of them):
        their `result()` raises `FutureCancelledError` at once, and the cluster drops the tasks
        unless another client or task needs them."""
        native = self._client()
        found: dict[str, Future] = {}
        _collect(futures, found)
        if found:
            native.cancel([f._native for f in found.values()])

    def close(self) -> None:
        """Disconnects (once the last future is gone too) and stops the cluster it started."""
        if self in _defaults:
            _defaults.remove(self)
        self._native = None
        if self._own_cluster and self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._native is None else self.address
        return f"<Client: {state}>"


# Values that Python's pickle writes as they are, whatever module the caller is in.
_PLAIN_TYPES = frozenset([int, float, complex, str, bytes, bool, type(None), Dep])


def _plain(obj: Any, depth: int = 0) -> bool:
    """Whether `obj` is made of plain values only (numbers, strings, bytes, None, `Dep`s, in
    tuples, lists and dicts a few levels deep): then `pickle` and cloudpickle write the same."""
    t = type(obj)
    if t in _PLAIN_TYPES:
        return True
    if depth >= 3:
        return False
    if t is tuple or t is list:
        return all(_plain(x, depth + 1) for x in obj)
    if t is dict:
        return all(type(k) in _PLAIN_TYPES and _plain(v, depth + 1) for k, v in obj.items())
    return False


def _scatter_call(value: Any) -> bytes:
    if type(value) is Future:
        raise TypeError(f"cannot scatter the future {value.key}: it is on the cluster already")
    return cloudpickle.dumps((identity, (value,), {}), protocol=pickle.HIGHEST_PROTOCOL)


_SKIP = object()



def _collect(obj: Any, found: dict[str, Future]) -> None:
    t = type(obj)
    if t is Future:
        found.setdefault(obj.key, obj)
    elif t in (list, tuple, set, frozenset):
        for x in obj:
            _collect(x, found)
    elif t is dict:
        for x in obj.values():
            _collect(x, found)


def _rebuild(obj: Any, values: dict[str, tuple[int, Any]]) -> Any:
    t = type(obj)
    if t is Future:
        outcome = values[obj.key]
        return _SKIP if outcome[0] == _FAILED else _value_of(outcome)
    if t in (list, tuple, set, frozenset):
        return t(v for v in (_rebuild(x, values) for x in obj) if v is not _SKIP)
    if t is dict:
        return {k: v for k, v in ((k, _rebuild(x, values)) for k, x in obj.items()) if v is not _SKIP}
    return obj


def progress(*futures: Any, notebook: bool | None = None, multi: bool = True, complete: bool = True, file: Any = None, width: int = 40, interval: float = 0.1, **kwargs: Any) -> None:
    """Waits for `futures` (futures, persisted delayed values, or lists, tuples, sets and dicts of
    them) while drawing a text progress bar of how many have finished, as Dask's `progress` does
    outside notebooks: redrawn in place on a terminal, one line at the end otherwise."""
    if notebook:
        raise TypeError("rask has no notebook progress widget yet: use progress(..., notebook=False)")
    found: dict[str, Future] = {}
    _collect_followed(futures, found)
    out = sys.stdout if file is None else file
    bar = _TextProgressBar(list(found.values()), out, width)
    bar.run(interval)


def _collect_followed(obj: Any, found: dict[str, Future]) -> None:
    t = type(obj)
    if t is Future:
        found.setdefault(obj.key, obj)
    elif isinstance(obj, Delayed):
        if obj._node.future is None:
            raise TypeError(f"progress follows futures and persisted values; {obj.key} is not persisted (use client.persist)")
        found.setdefault(obj.key, obj._node.future)
    elif t in (list, tuple, set, frozenset):
        for x in obj:
            _collect_followed(x, found)
    elif t is dict:
        for x in obj.values():
            _collect_followed(x, found)


class _TextProgressBar:
    """`[####      ] | 40% Completed |  1.2s`, as Dask's: the share of the futures' tasks, and of
    every unfinished task they depend on, that has finished, from the scheduler's progress
    reports (the data `rask run`'s bars draw)."""

    def __init__(self, futures: list[Future], out: Any, width: int):
        self.futures = futures
        self.out = out
        self.width = width
        self.start = time.monotonic()
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty and isatty() and os.environ.get("TERM") != "dumb")
        self.total = 0
        self.finished = 0

    def line(self) -> str:
        frac = self.finished / self.total if self.total else 1.0
        filled = int(self.width * frac)
        elapsed = time.monotonic() - self.start
        return f"[{'#' * filled}{' ' * (self.width - filled)}] | {frac:4.0%} Completed | {elapsed:4.1f}s"

    def run(self, interval: float) -> None:
        by_client: dict[int, tuple[Any, list]] = {}
        for f in self.futures:
            by_client.setdefault(id(f.client), (f.client, []))[1].append(f._native)
        # One follow per client the futures belong to; the bar adds their counts.
        follows = [_rask.follow(client._client(), natives) for client, natives in by_client.values()]
        counts = [p.snapshot() for p in follows]
        while True:
            self.total = sum(c[1] for c in counts)
            # Failed tasks count as finished, as in Dask's bar: nothing more will happen to them.
            self.finished = sum(c[2] + c[3] for c in counts)
            if all(c[0] for c in counts):
                break
            if self.tty:
                self.out.write("\r" + self.line())
                self.out.flush()
            counts = [c if c[0] else p.next(interval / len(follows)) for p, c in zip(follows, counts)]
        self.out.write(("\r" if self.tty else "") + self.line() + "\n")
        self.out.flush()


FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"

DoneAndNotDoneFutures = namedtuple("DoneAndNotDoneFutures", ["done", "not_done"])


def wait(fs: Future | Iterable[Future], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> DoneAndNotDoneFutures:
    """Waits until all (or the first, or the first failed) of `fs` have finished; raises
    `TimeoutError` if that has not happened after `timeout` seconds."""
    futures = [fs] if isinstance(fs, Future) else list(fs)
    if return_when not in (ALL_COMPLETED, FIRST_COMPLETED, FIRST_EXCEPTION):
        raise ValueError(f"return_when must be ALL_COMPLETED, FIRST_COMPLETED or FIRST_EXCEPTION, got {return_when!r}")
    if return_when == ALL_COMPLETED:
        if not _rask.wait_all([f._native for f in futures], timeout):
            raise TimeoutError(f"not all of {len(futures)} futures finished in {timeout} s")
    elif futures and not (return_when == FIRST_COMPLETED and any(f.done() for f in futures)):
        for f in as_completed(futures)._iterate(timeout):
            if return_when == FIRST_COMPLETED or f.exception() is not None:
                break
    done = {f for f in futures if f.done()}
    return DoneAndNotDoneFutures(done, set(futures) - done)


class as_completed:
    """Iterates over futures in the order they finish (Dask's `as_completed`); more can be added
    while iterating. With `with_results=True`, yields `(future, result)` pairs (a failed task
    raises, unless `raise_errors=False`, which yields its exception as the result)."""

    def __init__(self, futures: Iterable[Future] = (), with_results: bool = False, raise_errors: bool = True):
        self._completions = _rask.Completions()
        self._pending: dict[int, Future] = {}
        self.with_results = with_results
        self.raise_errors = raise_errors
        self.update(futures)

    def add(self, future: Future) -> None:
        if type(future) is not Future:
            raise TypeError(f"as_completed follows futures, got {future!r}")
        self._pending[self._completions.add(future._native)] = future

    def update(self, futures: Iterable[Future]) -> None:
        for f in futures:
            self.add(f)

    def count(self) -> int:
        """Futures not yet yielded."""
        return len(self._pending)

    def is_empty(self) -> bool:
        return not self._pending

    def _iterate(self, timeout: float | None) -> Iterator[Future]:
        """The futures as they finish; `TimeoutError` if they have not all after `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            i = self._completions.next(left)
            if i is None:
                raise TimeoutError(f"{len(self._pending)} futures have not finished after {timeout} s")
            yield self._pending.pop(i)

    def __iter__(self) -> as_completed:
        return self

    def __next__(self) -> Any:
        if not self._pending:
            raise StopIteration
        f = next(self._iterate(None))
        if not self.with_results:
            return f
        if self.raise_errors:
            return f, f.result()
        error = f.exception()
        return f, (error if error is not None else f.result())

    def __len__(self) -> int:
        return self.count()
