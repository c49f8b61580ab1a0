"""API parity: each test body runs once with Dask (the pinned `dask` and `distributed`: the sync
scheduler for delayed values, an in-process `distributed.LocalCluster` for futures) and once with
rask (its `Client` of the suite's scheduler and workers). The bodies reach every name through the
modules under test (`api.dask`, `api.distributed`), so a name rask spells differently from Dask,
or lacks, fails a test; so does a result that differs."""

from __future__ import annotations

import sys
import time
from concurrent.futures import CancelledError
from types import ModuleType, SimpleNamespace
from typing import Any, Iterator

import cloudpickle
import pytest

import rask
import rask.distributed

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RESULT_TIMEOUT_S = 60


def inc(x):
    return x + 1


def custom_op(x):
    return 2 * x * x


def add(a, b):
    return a + b


def load(i):
    return i


def process1(x):
    return x * 2


def process2(x):
    return x + 1


def save(x, dst):
    return (dst, x)


@pytest.fixture(scope="module")
def dask_client() -> Iterator[Any]:
    # The venv pins dask and distributed (scripts/test): their absence is a failure, not a skip.
    import distributed

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cluster:
        with distributed.Client(cluster, set_as_default=True) as c:
            yield c


@pytest.fixture(params=["dask", "rask"])
def api(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    """`dask`: the module with delayed/compute/persist; `distributed`: the one with Client,
    progress, wait, as_completed; `client`: a client of a cluster."""
    if request.param == "dask":
        import dask
        import distributed

        client = request.getfixturevalue("dask_client")
        # Delayed values computed without a client run on Dask's sync scheduler.
        with dask.config.set(scheduler="sync"):
            yield SimpleNamespace(name="dask", dask=dask, distributed=distributed, client=client)
    else:
        client = request.getfixturevalue("client")
        yield SimpleNamespace(name="rask", dask=rask, distributed=rask.distributed, client=client)


def test_the_seed_delayed_cell(api: SimpleNamespace):
    delayed = api.dask.delayed
    results = []
    for x in range(6):
        a = delayed(inc)(x)
        b = delayed(custom_op)(x)
        results.append(delayed(add)(a, b))
    total = delayed(sum)(results)
    assert total.compute() == 131
    assert api.dask.compute(total) == (131,)
    assert api.dask.compute(*results) == (1, 4, 11, 22, 37, 56)


def test_compute_traverses_collections(api: SimpleNamespace):
    delayed = api.dask.delayed
    a = delayed(inc)(1)
    assert api.dask.compute(a, [a, 5], {"k": (a,)}, "plain") == (2, [2, 5], {"k": (2,)}, "plain")
    nested = delayed(lambda xs, d: sum(xs) + d["y"])([a, a], {"y": a})
    assert nested.compute() == 6


def test_keys_names_and_purity(api: SimpleNamespace):
    delayed = api.dask.delayed
    assert delayed(inc)(1).key.startswith("inc-")
    assert delayed(inc)(1).key != delayed(inc)(1).key
    assert delayed(inc, pure=True)(1).key == delayed(inc, pure=True)(1).key
    named = delayed(inc)(1, dask_key_name="my-inc")
    assert named.key == "my-inc" and named.compute() == 2
    # name= names the wrapped function, not its calls' keys.
    assert delayed(inc, name="plus")(1).key.startswith("inc-")
    assert delayed([1, 2]).key.startswith("list-")


def test_nout_attributes_methods_and_operators(api: SimpleNamespace):
    delayed = api.dask.delayed
    q, r = delayed(divmod, nout=2)(17, 5)
    assert api.dask.compute(q, r) == (3, 2)
    s = delayed(str)("a,b")
    assert s.upper().compute() == "A,B"
    assert s.split(",")[1].compute() == "b"
    assert delayed(complex)(3, 4).imag.compute() == 4.0
    x, y = delayed(inc)(1), delayed(inc)(2)
    assert api.dask.compute(x + y, x * 3, 1 - y, -x, x < y) == (5, 6, -2, -2, True)
    with pytest.raises(TypeError):
        bool(x)


def test_persist_then_compute(api: SimpleNamespace):
    delayed = api.dask.delayed
    (p,) = api.dask.persist(delayed(inc)(1))
    assert delayed(inc)(p).compute() == 3


def test_exceptions_keep_their_type(api: SimpleNamespace):
    delayed = api.dask.delayed
    with pytest.raises(ZeroDivisionError):
        delayed(lambda x: x / 0)(1).compute()


def test_the_seed_futures_pipeline(api: SimpleNamespace):
    client = api.client
    outs = []
    for i in range(4):
        loaded = client.submit(load, i)
        p1 = client.submit(process1, loaded)
        p2 = client.submit(process2, p1)
        outs.append(client.submit(save, p2, f"out-{i}"))
    api.distributed.wait(outs)
    assert all(f.done() for f in outs)
    assert client.gather(outs) == [(f"out-{i}", 2 * i + 1) for i in range(4)]
    seen = sorted(f.result() for f in api.distributed.as_completed(outs))
    assert seen == [(f"out-{i}", 2 * i + 1) for i in range(4)]


def test_client_compute_and_persist(api: SimpleNamespace):
    delayed, client = api.dask.delayed, api.client
    x = delayed(inc)(1)
    f = client.compute(x)
    assert isinstance(f, api.distributed.Future)
    assert f.result(RESULT_TIMEOUT_S) == 2
    fs = client.compute([x, delayed(inc)(x)])
    assert client.gather(fs) == [2, 3]
    p = client.persist(delayed(inc)(10))
    assert client.compute(delayed(inc)(p)).result(RESULT_TIMEOUT_S) == 12


def test_client_scatter(api: SimpleNamespace):
    client = api.client
    f = client.scatter(41)
    assert f.key.startswith("int-")
    assert client.submit(inc, f).result(RESULT_TIMEOUT_S) == 42
    fs = client.scatter([1, 2, 3])
    assert client.gather(client.map(inc, fs)) == [2, 3, 4]
    d = client.scatter({"left": 5})
    assert d["left"].key == "left" and client.gather(d) == {"left": 5}


def test_client_cancel(api: SimpleNamespace):
    client = api.client
    f = client.submit(time.sleep, 2)
    client.cancel([f])
    deadline = time.monotonic() + RESULT_TIMEOUT_S
    while not f.cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert f.cancelled() and f.status == "cancelled"
    with pytest.raises(CancelledError):
        f.result(RESULT_TIMEOUT_S)


def test_progress(api: SimpleNamespace, capsys: pytest.CaptureFixture):
    fs = api.client.map(inc, range(5))
    api.distributed.progress(fs)
    out = capsys.readouterr().out
    assert "[" + "#" * 40 + "] | 100% Completed |" in out
    assert all(f.done() for f in fs)


def test_the_module_layout(api: SimpleNamespace):
    for name in ("delayed", "compute", "persist", "visualize"):
        assert callable(getattr(api.dask, name))
    for name in ("Client", "LocalCluster", "Future", "wait", "as_completed", "progress", "default_client"):
        assert hasattr(api.distributed, name), name
    assert isinstance(api.distributed, ModuleType)
