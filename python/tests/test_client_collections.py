"""Client.compute, persist, scatter, cancel and progress against a real scheduler and workers."""

from __future__ import annotations

import io
import re
import sys
import time
from concurrent.futures import CancelledError

import cloudpickle
import pytest

from rask import delayed
from rask._delayed import graph
from rask.distributed import Client, Future, FutureCancelledError, progress

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT_S = 60


def inc(x):
    return x + 1


def slow(x, seconds):
    time.sleep(seconds)
    return x


def test_compute_gives_futures(client: Client):
    x = delayed(inc)(1)
    y = delayed(inc)(x)
    f = client.compute(y)
    assert isinstance(f, Future) and f.key == y.key
    assert f.result(RESULT_TIMEOUT_S) == 3
    fs = client.compute([x, y, "kept"])
    assert client.gather(fs) == [2, 3, "kept"]
    assert client.compute((x, y), sync=True) == [2, 3]
    with pytest.raises(TypeError, match="retries="):
        client.compute(x, retries=2)


def test_persist_keeps_results_for_later_graphs(client: Client):
    x = delayed(inc)(1)
    p = client.persist(x)
    assert p.key == x.key
    assert p.compute() == 2
    # A graph built on the persisted value reads its result; no new task of its key is sent.
    later = delayed(inc)(p)
    tasks, held = graph([later], {})
    assert [t[0] for t in tasks] == [later.key] and list(held) == [x.key]
    assert later.compute() == 3
    assert client.compute(p).result(RESULT_TIMEOUT_S) == 2
    a, b = client.persist([delayed(inc)(10), delayed(inc)(20)])
    assert (a + b).compute() == 32


def test_scatter_places_values_usable_as_arguments(client: Client):
    f = client.scatter(41)
    assert isinstance(f, Future) and f.key.startswith("int-")
    assert client.submit(inc, f).result(RESULT_TIMEOUT_S) == 42
    assert delayed(inc)(f).compute() == 42
    # The same value hashes to the same key: the held copy is reused.
    assert client.scatter(41) is f
    assert client.scatter(41, hash=False) is not f
    fs = client.scatter([1, 2, 3])
    assert isinstance(fs, list) and client.gather(fs) == [1, 2, 3]
    d = client.scatter({"left": [1, 2], "right": "text"})
    assert d["left"].key == "left" and client.gather(d) == {"left": [1, 2], "right": "text"}
    assert client.gather(client.scatter((5, 6))) == (5, 6)
    big = bytes(range(256)) * 8_000  # 2 MB
    assert client.submit(len, client.scatter(big)).result(RESULT_TIMEOUT_S) == len(big)


def test_scatter_refuses_what_it_cannot_place(client: Client):
    with pytest.raises(TypeError, match="workers="):
        client.scatter(1, workers=["w0"])
    with pytest.raises(TypeError, match="broadcast"):
        client.scatter(1, broadcast=True)
    with pytest.raises(TypeError, match="string keys"):
        client.scatter({1: "x"})
    with pytest.raises(TypeError, match="on the cluster already"):
        client.scatter([client.scatter(3)])


def test_cancel_fails_the_futures_at_once(client: Client):
    f = client.submit(slow, 1, 3)
    assert not f.cancelled() and f.status == "pending"
    client.cancel([f])
    assert f.cancelled() and f.done() and f.status == "cancelled"
    with pytest.raises(FutureCancelledError) as raised:
        f.result(RESULT_TIMEOUT_S)
    assert isinstance(raised.value, CancelledError) and f.key in str(raised.value)
    assert isinstance(f.exception(), FutureCancelledError)
    g = client.submit(slow, 2, 3)
    g.cancel()
    assert g.cancelled()
    # The cluster goes on with other work (a task already running is not interrupted).
    assert client.submit(inc, 1).result(RESULT_TIMEOUT_S) == 2


def test_progress_draws_one_line_off_a_terminal(client: Client):
    fs = client.map(slow, range(4), seconds=0.2)
    out = io.StringIO()
    progress(fs, file=out)
    assert all(f.done() for f in fs)
    text = out.getvalue()
    assert text.count("\n") == 1 and "\r" not in text
    assert text.startswith("[" + "#" * 40 + "] | 100% Completed |")


def test_progress_redraws_in_place_on_a_terminal(client: Client):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    fs = client.map(slow, range(3), seconds=0.4)
    out = Terminal()
    progress(fs, file=out, interval=0.05)
    frames = out.getvalue().split("\r")
    assert len(frames) >= 3 and frames[0] == ""
    assert "100%" not in frames[1] and "% Completed" in frames[1]
    assert "100% Completed" in frames[-1] and frames[-1].endswith("s\n")


def test_progress_follows_persisted_values_and_refuses_others(client: Client):
    p = client.persist(delayed(slow)(1, 0.1))
    out = io.StringIO()
    progress([p], file=out)
    assert "100% Completed" in out.getvalue()
    with pytest.raises(TypeError, match="not persisted"):
        progress(delayed(inc)(1), file=io.StringIO())
    with pytest.raises(TypeError, match="notebook"):
        progress(p, notebook=True)


def test_progress_counts_the_tasks_a_future_depends_on(client: Client):
    # One future, seven tasks: the bar moves as its six inputs finish, as Dask's does, not only
    # when the future itself is done (the scheduler's progress reports, not the future's state).
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    total = client.persist(delayed(sum)([delayed(slow)(i, 0.3) for i in range(6)]))
    out = Terminal()
    progress(total, file=out, interval=0.05)
    assert total.compute() == sum(range(6))
    shares = {int(m) for m in re.findall(r"\|\s*(\d+)% Completed", out.getvalue())}
    assert 100 in shares
    assert any(0 < s < 100 for s in shares), out.getvalue()
