"""rask.distributed against a real scheduler and workers: users' Python functions on the workers."""

from __future__ import annotations

import sys
import time

import cloudpickle
import pytest

from rask.distributed import (
    FIRST_COMPLETED,
    Client,
    Future,
    RemoteTraceback,
    TaskError,
    as_completed,
    wait,
)

# This module is not importable on the workers: its functions and classes travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT_S = 60


def inc(x):
    return x + 1


def add(a, b=0):
    return a + b


class PipelineError(Exception):
    """An exception class of the user's own."""


def test_submit_a_def_a_lambda_and_a_closure(client: Client):
    assert client.submit(inc, 1).result(RESULT_TIMEOUT_S) == 2
    assert client.submit(lambda x, y: x * y, 6, y=7).result(RESULT_TIMEOUT_S) == 42
    offset = 100

    def shifted(x):
        return x + offset

    assert client.submit(shifted, 1).result(RESULT_TIMEOUT_S) == 101


def test_map_and_gather(client: Client):
    futures = client.map(inc, range(20))
    assert client.gather(futures) == list(range(1, 21))
    base = 10
    assert client.gather(client.map(lambda a, b: a * b + base, [1, 2, 3], [4, 5, 6])) == [14, 20, 28]
    # Keyword arguments go to every call.
    assert client.gather(client.map(add, [1, 2], b=5)) == [6, 7]
    assert client.map(inc, []) == [] and client.gather([]) == []


def test_results_of_any_picklable_type(client: Client):
    value = {"a": [1, 2.5, None], "b": (b"\x00", "é"), "c": {3, 4}}
    assert client.submit(lambda: value).result(RESULT_TIMEOUT_S) == value


def test_large_results_are_fetched_from_the_worker_intact(client: Client):
    big = client.submit(lambda n: bytes(range(256)) * n, 40_000)  # 10 MB: too big to be forwarded
    assert big.result(RESULT_TIMEOUT_S) == bytes(range(256)) * 40_000
    # And as an input of another task, moved between workers as bytes.
    assert client.submit(len, big).result(RESULT_TIMEOUT_S) == 10_240_000


def test_futures_as_arguments_become_dependencies(client: Client):
    x = client.submit(inc, 1)
    y = client.submit(inc, x)
    # Inside lists, tuples, dicts; the same future twice is one input.
    z = client.submit(lambda xs, d, t: sum(xs) + d["y"] + sum(t), [x, y, x], {"y": y}, (1, x))
    assert z.result(RESULT_TIMEOUT_S) == (2 + 3 + 2) + 3 + (1 + 2)
    assert client.submit(add, x, b=y).result(RESULT_TIMEOUT_S) == 5


def test_futures_pipeline_load_process_save(client: Client):
    """The seed notebook's futures cell: save(process2(process1(load(src))), dst) per pair."""

    def load(src):
        time.sleep(0.01)
        return src

    def process1(x):
        return 2 * x

    def process2(x):
        return x + 1

    def save(x, dst):
        return [dst, x]

    saves = []
    for i in range(10):
        loaded = client.submit(load, i)
        p1 = client.submit(process1, loaded)
        p2 = client.submit(process2, p1)
        saves.append(client.submit(save, p2, f"out-{i}"))
    assert client.gather(saves) == [[f"out-{i}", 2 * i + 1] for i in range(10)]


def fails(x):
    raise PipelineError(f"cannot process {x}")


def test_an_exception_comes_back_with_its_type_and_the_remote_traceback(client: Client):
    future = client.submit(fails, 3)
    with pytest.raises(PipelineError, match="cannot process 3") as info:
        future.result(RESULT_TIMEOUT_S)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fails" in cause.traceback and "PipelineError" in cause.traceback, cause.traceback
    # A built-in type too, and through a task that depends on the failed one.
    zero = client.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        client.submit(inc, zero).result(RESULT_TIMEOUT_S)
    assert isinstance(future.exception(RESULT_TIMEOUT_S), PipelineError)
    assert future.done()
    with pytest.raises(PipelineError):
        client.gather([client.submit(inc, 1), future])


class TwoArgs(Exception):
    """Pickles, but does not unpickle: its args are the one message, its __init__ takes two."""

    def __init__(self, a, b):
        super().__init__(f"{a} and {b}")


def test_an_exception_that_cannot_travel_comes_back_as_a_runtime_error_naming_its_type(client: Client):
    def raises_two_args():
        raise TwoArgs(1, 2)

    with pytest.raises(RuntimeError, match=r"TwoArgs: 1 and 2") as info:
        client.submit(raises_two_args).result(RESULT_TIMEOUT_S)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "raises_two_args" in info.value.__cause__.traceback


def test_a_crashed_python_process_fails_its_task_and_the_worker_goes_on(client: Client):
    import os

    with pytest.raises(TaskError, match="exited with status 3"):
        client.submit(os._exit, 3).result(RESULT_TIMEOUT_S)
    assert client.gather(client.map(inc, range(4))) == [1, 2, 3, 4]


def test_gather_keeps_structure_and_can_skip_errors(client: Client):
    a, b = client.submit(inc, 1), client.submit(inc, 2)
    bad = client.submit(fails, 0)
    assert client.gather({"a": a, "rest": [b, 7, (a,)]}) == {"a": 2, "rest": [3, 7, (2,)]}
    assert client.gather(a) == 2
    assert client.gather([a, bad, b], errors="skip") == [2, 3]


def test_result_timeout_done_and_exception(client: Client):
    slow = client.submit(time.sleep, 2)
    with pytest.raises(TimeoutError):
        slow.result(timeout=0.1)
    assert not slow.done()
    assert slow.result(RESULT_TIMEOUT_S) is None
    assert slow.done()
    assert slow.exception() is None


def test_wait_and_as_completed(client: Client):
    def sleepy(seconds, value):
        time.sleep(seconds)
        return value

    slow = client.submit(sleepy, 1.5, "slow")
    fast = client.submit(sleepy, 0.0, "fast")
    first = wait([slow, fast], return_when=FIRST_COMPLETED)
    assert fast in first.done and slow in first.not_done
    assert [f.result() for f in as_completed([slow, client.submit(sleepy, 0.0, "now")])] == ["now", "slow"]
    done, not_done = wait([slow, fast])
    assert done == {slow, fast} and not not_done
    pairs = list(as_completed(client.map(inc, range(5)), with_results=True))
    assert sorted(v for _, v in pairs) == [1, 2, 3, 4, 5]
    with pytest.raises(TimeoutError):
        wait(client.submit(sleepy, 5, None), timeout=0.1)


class Interrupted(Exception):
    pass


def test_a_signal_interrupts_a_waiting_result(client: Client):
    """Waits release the GIL but still run Python's signal handlers (Ctrl-C)."""
    import os
    import signal
    import threading

    def handler(signum, frame):
        raise Interrupted()

    previous = signal.signal(signal.SIGINT, handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        slow = client.submit(time.sleep, 3)
        t0 = time.monotonic()
        timer.start()
        with pytest.raises(Interrupted):
            slow.result()
        assert time.monotonic() - t0 < 2
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)


class Box:
    def __init__(self, x):
        self.x = x


def test_bad_inputs_are_errors_that_say_what_is_wrong(client: Client, scheduler_address: str):
    with pytest.raises(TypeError, match="must be callable"):
        client.submit(42, 1)
    with pytest.raises(TypeError, match="iterables"):
        client.map(inc, 5)
    with pytest.raises(TypeError, match="at least one iterable"):
        client.map(inc)
    # Dask's task options never reach the function: refused until rask has them.
    with pytest.raises(TypeError, match="does not support Dask's key=, retries= yet"):
        client.submit(inc, 1, retries=2, key="x")
    with pytest.raises(TypeError, match="does not support Dask's resources= yet"):
        client.map(inc, [1], resources={"GPU": 1})
    assert client.submit(inc, 1, pure=False).result(RESULT_TIMEOUT_S) == 2
    with pytest.raises(ValueError, match="errors must be"):
        client.gather([], errors="ignore")
    x = client.submit(inc, 1)
    # A future hidden in an object other than a list, tuple or dict cannot be an input.
    with pytest.raises(TypeError, match="cannot pickle the future"):
        client.submit(lambda b: b.x, Box(x))
    with pytest.raises(TypeError, match="cannot pickle the future"):
        client.submit(len, {x})
    with pytest.raises(ValueError, match="timeout"):
        x.result(timeout=-1)
    with pytest.raises(ValueError, match="timeout NaN is not a number of seconds"):
        x.result(timeout=float("nan"))
    # Key prefixes are what Dask groups task statistics by, up to the first '-'.
    for prefix in ("", "a-b"):
        with pytest.raises(ValueError, match="must be non-empty and without '-'"):
            client._native.submit(prefix, b"", [])
    with Client(scheduler_address) as other:
        with pytest.raises(ValueError, match="belongs to another client"):
            other.submit(inc, x)
    closed = Client(scheduler_address)
    closed.close()
    with pytest.raises(RuntimeError, match="closed"):
        closed.submit(inc, 1)
    with pytest.raises(TypeError, match="address"):
        Client(8786)
    with pytest.raises(TypeError, match="an address was given"):
        Client(scheduler_address, n_workers=2)


def test_connecting_to_nothing_fails_in_time():
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="127.0.0.1:9"):
        Client("127.0.0.1:9", timeout=1)
    assert time.monotonic() - t0 < 5


def test_futures_are_futures(client: Client):
    f = client.submit(inc, 1)
    assert isinstance(f, Future)
    assert f.key.startswith("inc-")
    assert client.submit(lambda: 1).key.startswith("lambda-")
    assert f.key in repr(f)


class Point:
    """A class of this module (not importable on the workers): its instances travel by value."""

    def __init__(self, x):
        self.x = x


def unpack(p, scale=1):
    return p.x * scale if isinstance(p, Point) else p * scale


def test_map_pickles_the_function_once_and_plain_arguments_with_pickle(client: Client):
    import pickle

    from rask._deps import Function, load_function
    from rask.distributed import _plain

    assert _plain((1, 2.5, "a", b"b", None, True, [1, (2, 3)], {"k": [3]}))
    assert not _plain((Point(1),)) and not _plain(({1: Point(1)},)) and not _plain(((((([1],),),),),))
    # A call of a map pickles the function as bytes loaded once per process.
    f = Function(cloudpickle.dumps(unpack))
    g = pickle.loads(pickle.dumps((f, (3,), {})))[0]
    assert g is load_function(f.pickled) and g(3, scale=2) == 6
    # Plain arguments, arguments of this module's classes (cloudpickle), futures, keywords.
    assert client.gather(client.map(unpack, [1, Point(2), 3], scale=10)) == [10, 20, 30]
    x = client.submit(inc, 1)
    assert client.gather(client.map(add, [x, x], [1, Point(1).x])) == [3, 3]
    assert client.gather(client.map(lambda a: a * 2, range(5))) == [0, 2, 4, 6, 8]
