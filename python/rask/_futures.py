"""Futures and what every collection shares about clients: a task's outcome as a value or an
exception, `Future`, and the registry of default clients.

The bottom of the package's Python layers (above `_rask` and `_deps` only): `_delayed` builds
graphs of delayed calls on it, `distributed` implements its `BaseClient` as `Client`, and the
collections (`array`, `dataframe`) find their client through `client_for`. Nothing here imports
a module above it.
"""

from __future__ import annotations

import pickle
from concurrent.futures import CancelledError
from typing import Any

from . import _rask

__all__ = [
    "BaseClient",
    "Future",
    "FutureCancelledError",
    "KilledWorker",
    "RemoteTraceback",
    "TaskError",
    "client_for",
    "default_client",
]

# Outcome kinds of the native module (python/src/outcome.rs).
_VALUE, _PICKLED, _FAILED = 0, 1, 2


class TaskError(RuntimeError):
    """A task failed for a reason other than an exception of the user's code (a native kernel's
    error, a function no worker has, an input that was lost)."""


class KilledWorker(TaskError):
    """Workers died while running the task, more often than allowed (Dask's `KilledWorker`)."""


class FutureCancelledError(CancelledError):
    """The future's task was cancelled (`Client.cancel`, `Future.cancel`)."""

    def __init__(self, key: str):
        super().__init__(f"{key} cancelled")
        self.key = key



class RemoteTraceback(Exception):
    """The traceback of an exception raised on a worker, set as the re-raised exception's
    `__cause__` so that it prints above the client's own traceback."""

    def __init__(self, traceback: str):
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f'\n"""\n{self.traceback.rstrip()}\n"""'


# What the worker's runner notes on a call it could not unpickle (worker/rask-python/src/runner.py).
_UNPICKLING_ON_WORKER = "(unpickling the call on a rask worker with "


def _client_versions() -> str:
    """The client's side of a call that did not unpickle on a worker, to set beside the worker's."""
    import sys

    import cloudpickle

    # The package's own `__version__` (set in its `__init__`, above this module: looked up, not
    # imported).
    version = getattr(sys.modules.get(__package__ or "rask"), "__version__", "of unknown version")
    return (
        f"(pickled by a rask client with Python {sys.version.split()[0]},"
        f" cloudpickle {cloudpickle.__version__} and rask {version})"
    )


def _exception_of(failure: dict) -> BaseException:
    """The exception to raise for a failed task, as the native module describes it."""
    kind = failure.get("kind")
    if kind == "python":
        exc = None
        pickled = failure.get("pickled")
        if pickled:
            try:
                exc = pickle.loads(pickled)
            except Exception:  # a type the client cannot import: fall back to its name below
                exc = None
            if not isinstance(exc, BaseException):
                exc = None
        if exc is None:
            exc = RuntimeError(f"{failure.get('type', 'Exception')}: {failure.get('text', '')}")
        traceback = failure.get("traceback")
        if traceback:
            exc.__cause__ = RemoteTraceback(traceback)
            if _UNPICKLING_ON_WORKER in traceback and hasattr(exc, "add_note"):
                exc.add_note(_client_versions())
        return exc
    if kind == "cancelled":
        return FutureCancelledError(failure["key"])
    if kind == "killed_worker":
        return KilledWorker(failure["message"])
    return TaskError(failure["message"])


def _value_of(outcome: tuple[int, Any]) -> Any:
    kind, payload = outcome
    if kind == _PICKLED:
        return pickle.loads(payload)
    if kind == _VALUE:
        return payload
    raise _exception_of(payload)


class Future:
    """A task's result on the cluster (Dask's `Future`). The scheduler may free the result once
    no future of it is left."""

    __slots__ = ("_native", "client", "__weakref__")

    def __init__(self, native: _rask.Future, client: BaseClient):
        self._native = native
        self.client = client
        client._futures[native.key] = self

    @property
    def key(self) -> str:
        return self._native.key

    def done(self) -> bool:
        """Whether the task has finished, with a value or an error, or was cancelled."""
        return self._native.done()

    def cancelled(self) -> bool:
        """Whether the task was cancelled."""
        return self._native.cancelled()

    def cancel(self) -> None:
        """Cancels the task (see `Client.cancel`)."""
        self.client.cancel([self])

    @property
    def status(self) -> str:
        """"pending", "finished", "error" or "cancelled", as in Dask."""
        if self._native.cancelled():
            return "cancelled"
        if not self._native.done():
            return "pending"
        return "error" if self._outcome(0)[0] == _FAILED else "finished"

    def _outcome(self, timeout: float | None) -> tuple[int, Any]:
        outcome = self._native.outcome(timeout)
        if outcome is None:
            raise TimeoutError(f"{self.key} has not finished after {timeout} s")
        return outcome

    def result(self, timeout: float | None = None) -> Any:
        """The task's value, waiting at most `timeout` seconds (`TimeoutError` after); raises the
        task's exception if it failed."""
        return _value_of(self._outcome(timeout))

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The task's exception, or `None` if it succeeded; waits as `result` does."""
        kind, payload = self._outcome(timeout)
        return _exception_of(payload) if kind == _FAILED else None

    def __reduce__(self):
        raise TypeError(
            f"cannot pickle the future {self.key}: pass futures to submit/map directly or inside "
            "lists, tuples and dict values, where they become the task's inputs"
        )

    def __repr__(self) -> str:
        return f"<Future: {self.status}, key: {self.key}>"




class BaseClient:
    """What futures, delayed values and collections need of a client; `rask.distributed.Client`
    is the one implementation. Declared here, below the modules that use a client, so that none
    of them imports `rask.distributed`."""

    _futures: Any

    def _client(self) -> _rask.Client:
        """The native client; `RuntimeError` once closed."""
        raise NotImplementedError

    def _compute_graph(self, roots: list) -> list[Future]:
        """Sends the graphs of delayed values `roots`; a future of each."""
        raise NotImplementedError

    def gather(self, futures: Any, errors: str = "raise") -> Any:
        raise NotImplementedError

    def persist(self, collections: Any, optimize_graph: bool = True, **kwargs: Any) -> Any:
        raise NotImplementedError


# The clients `rask.compute` and `Delayed.compute` may use, the default last: the clients made
# with set_as_default=True and not closed (Dask's too fall back to an earlier one).
_defaults: list[BaseClient] = []


def default_client(c: BaseClient | None = None) -> BaseClient:
    """The client that computes delayed values when none is given (Dask's `default_client`):
    `c` if given, else the last `Client` created and not closed."""
    if c is not None:
        return c
    if not _defaults:
        raise ValueError(
            "No clients found\nStart a client and point it to the scheduler address\n"
            "  from rask.distributed import Client\n  client = Client('tcp://ip-addr:port')"
        )
    return _defaults[-1]


def client_for(scheduler: Any) -> BaseClient:
    """The client to compute on: `scheduler` (a `rask.distributed.Client`), else the default."""
    if scheduler is None:
        return default_client()
    if isinstance(scheduler, BaseClient):
        return scheduler
    raise ValueError(
        f"rask computes on a cluster: scheduler= must be a rask.distributed.Client, got {scheduler!r} "
        "(Dask's 'sync', 'threads' and 'processes' schedulers have no rask equivalent)"
    )
