"""rask.array: every operation computed on the suite's cluster (a scheduler and two workers) by
the native array kernels and compared with numpy; the seed's expressions, scaled down, on a
LocalCluster; the same bodies run with dask.array and rask.array (parity); and bad input raising
a clear Python exception."""

from __future__ import annotations

import sys
from types import SimpleNamespace
from typing import Any, Iterator

import cloudpickle
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import rask
import rask.array as da
from rask.distributed import Client, LocalCluster

cloudpickle.register_pickle_by_value(sys.modules[__name__])

RNG = np.random.default_rng(14)
# An uneven shape with uneven chunks: the last chunk of each dimension is smaller.
A = RNG.random((23, 17)) - 0.3
B = RNG.random((23, 17)) + 0.1
CHUNKS = (10, 6)


@pytest.fixture
def a(client: Client) -> da.Array:
    return da.from_array(A, chunks=CHUNKS)


@pytest.fixture
def b(client: Client) -> da.Array:
    return da.from_array(B, chunks=CHUNKS)


def test_creation_matches_numpy(client: Client):
    x = da.ones((7, 5), chunks=3)
    assert x.shape == (7, 5) and x.chunks == ((3, 3, 1), (3, 2)) and x.dtype == np.float64
    assert_array_equal(x.compute(), np.ones((7, 5)))
    assert_array_equal(da.zeros(9, chunks=4).compute(), np.zeros(9))
    assert_array_equal(da.full((2, 3), 2.5, chunks=2).compute(), np.full((2, 3), 2.5))
    assert_array_equal(da.arange(10, chunks=4).compute(), np.arange(10.0))
    assert_allclose(da.arange(1, 4, 0.5, chunks=3).compute(), np.arange(1, 4, 0.5))
    assert da.arange(10, chunks=4).chunks == ((4, 4, 2),)
    # Explicit chunks, and "auto" (one chunk for a small array, as Dask's).
    assert da.ones((5,), chunks=((2, 3),)).chunks == ((2, 3),)
    assert da.ones((100, 100)).chunks == ((100,), (100,))
    # Integers are converted to float64.
    ints = da.from_array(np.arange(12).reshape(3, 4), chunks=2)
    assert ints.dtype == np.float64
    assert_array_equal(ints.compute(), np.arange(12.0).reshape(3, 4))


def test_random_is_uniform_and_reproducible(client: Client):
    x = da.random.random((60, 50), chunks=(25, 20))
    assert x.chunks == ((25, 25, 10), (20, 20, 10))
    v = x.compute()
    assert v.shape == (60, 50) and v.dtype == np.float64
    assert 0 <= v.min() and v.max() < 1 and 0.4 < v.mean() < 0.6
    # The same seed gives the same array; another seed another.
    r1, r2 = da.random.RandomState(7), da.random.RandomState(7)
    assert_array_equal(r1.random((30,), chunks=7).compute(), r2.random((30,), chunks=7).compute())
    assert not np.array_equal(da.random.random((30,), chunks=7).compute(), da.random.random((30,), chunks=7).compute())
    assert da.random.default_rng(3).random((4, 4), chunks=2).shape == (4, 4)


def test_elementwise_arithmetic_and_comparisons(a: da.Array, b: da.Array):
    cases = {
        "a + b": (a + b, A + B),
        "a - b": (a - b, A - B),
        "a * b": (a * b, A * B),
        "a / b": (a / b, A / B),
        "b ** 2": (b**2, B**2),
        "2 ** a": (2**a, 2**A),
        "1 - a": (1 - a, 1 - A),
        "3 / b": (3 / b, 3 / B),
        "-a": (-a, -A),
        "abs(a)": (abs(a), np.abs(A)),
        "a * 2 + 1": (a * 2 + 1, A * 2 + 1),
        "a + numpy": (a + B, A + B),
        "numpy scalar": (a * np.float64(2.0), A * 2),
    }
    for name, (got, want) in cases.items():
        assert_allclose(got.compute(), want, err_msg=name)
    comparisons = {
        "a < b": (a < b, A < B),
        "a <= 0.2": (a <= 0.2, A <= 0.2),
        "a > b": (a > b, A > B),
        "a >= 0": (a >= 0, A >= 0),
        "a == a": (a == a, A == A),
        "a != b": (a != b, A != B),
    }
    for name, (got, want) in comparisons.items():
        assert got.dtype == np.bool_
        v = got.compute()
        assert v.dtype == np.bool_, name
        assert_array_equal(v, want, err_msg=name)
    assert (a < 0).sum().compute() == int((A < 0).sum())


def test_elementwise_functions(a: da.Array, b: da.Array):
    for name, f in {"sqrt": np.sqrt, "exp": np.exp, "log": np.log, "sin": np.sin, "cos": np.cos, "abs": np.abs}.items():
        assert_allclose(getattr(da, name)(b).compute(), f(B), err_msg=name)
    assert_allclose(da.sin(a).compute(), np.sin(A))
    assert_allclose(da.cos(a).compute(), np.cos(A))
    assert_allclose(da.maximum(a, b).compute(), np.maximum(A, B))
    assert_allclose(da.minimum(a, 0.1).compute(), np.minimum(A, 0.1))


def test_numpy_functions_build_rask_graphs(a: da.Array, b: da.Array):
    # numpy's ufuncs on rask arrays stay lazy rask arrays, as on Dask's.
    for got, want in [
        (np.sqrt(b), np.sqrt(B)),
        (np.sin(a), np.sin(A)),
        (np.abs(a), np.abs(A)),
        (np.square(a), A * A),
        (np.add(A, a), 2 * A),
        (B * a, B * A),
        (np.float64(3) - a, 3 - A),
        (np.maximum(a, b), np.maximum(A, B)),
    ]:
        assert isinstance(got, da.Array)
        assert_allclose(got.compute(), want)
    less = np.less(B, a)
    assert isinstance(less, da.Array) and less.dtype == np.bool_
    assert_array_equal(less.compute(), B < A)
    assert_allclose(np.sum(a, axis=0).compute(), A.sum(axis=0))
    assert_allclose(np.mean(a).compute(), A.mean())
    assert a.astype(float) is a and a.astype(np.int64) is a
    with pytest.raises(NotImplementedError, match="numpy.tan on a rask.array array"):
        np.tan(a)
    with pytest.raises(NotImplementedError, match="numpy.add.reduce"):
        np.add.reduce(a)
    with pytest.raises(TypeError, match="complex"):
        a.astype(complex)


@pytest.mark.parametrize("name", ["sum", "mean", "std", "var", "min", "max", "argmin", "argmax"])
def test_reductions_with_and_without_axis(a: da.Array, name: str):
    for axis in (None, 0, 1, -1):
        got = getattr(a, name)(axis=axis).compute()
        want = getattr(A, name)(axis=axis)
        assert np.shape(got) == np.shape(want), (name, axis)
        if name.startswith("arg"):
            assert_array_equal(got, want, err_msg=f"{name} axis={axis}")
            assert np.asarray(got).dtype == np.int64
        else:
            assert_allclose(got, want, rtol=1e-12, err_msg=f"{name} axis={axis}")
        assert_allclose(getattr(da, name)(a, axis=axis).compute(), want, rtol=1e-12)
    if name in ("std", "var"):
        assert_allclose(getattr(a, name)(ddof=1).compute(), getattr(A, name)(ddof=1), rtol=1e-12)


def test_dot_matmul_and_transpose(a: da.Array, b: da.Array):
    assert_allclose(a.dot(b.T).compute(), A @ B.T, rtol=1e-12)
    assert_allclose((a @ b.T).compute(), A @ B.T, rtol=1e-12)
    assert_allclose(da.dot(a.T, b).compute(), A.T @ B, rtol=1e-12)
    assert_allclose(a.transpose().compute(), A.T)
    assert a.T.shape == (17, 23) and a.T.chunks == (a.chunks[1], a.chunks[0])
    # Inner chunks that differ are rechunked to match, as Dask does.
    c = da.from_array(B.T, chunks=(5, 9))
    assert_allclose((a @ c).compute(), A @ B.T, rtol=1e-12)
    assert_allclose((a @ B.T).compute(), A @ B.T, rtol=1e-12)
    # numpy on the left: numpy's matmul defers to the rask array, which stays lazy.
    left = B.T @ a
    assert isinstance(left, da.Array)
    assert_allclose(left.compute(), B.T @ A, rtol=1e-12)


def test_rechunk(a: da.Array):
    r = a.rechunk((7, 17))
    assert r.chunks == ((7, 7, 7, 2), (17,))
    assert_array_equal(r.compute(), A)
    assert a.rechunk(5).chunks == ((5, 5, 5, 5, 3), (5, 5, 5, 2))
    assert a.rechunk(((3, 20), (17,))).chunks == ((3, 20), (17,))
    assert a.rechunk((-1, -1)).chunks == ((23,), (17,))
    # Arrays of one shape and other chunks are rechunked to match in elementwise operations.
    assert_allclose((a + da.from_array(A, chunks=4)).compute(), 2 * A)


def test_slicing(a: da.Array):
    cases = [
        np.s_[2:15],
        np.s_[:, 3:9],
        np.s_[5:21, 1:16],
        np.s_[-5:],
        np.s_[3],
        np.s_[-1, 4:12],
        np.s_[4:12, 5],
        np.s_[7, 8],
        np.s_[..., 2],
        np.s_[10:10],
    ]
    for key in cases:
        got = a[key]
        want = A[key]
        assert got.shape == want.shape, key
        assert_array_equal(np.asarray(got.compute()), want, err_msg=str(key))
    assert a[2:15].chunks == ((8, 5), (6, 6, 5))
    assert_allclose((a[1:9, :5] * 2).sum().compute(), (A[1:9, :5] * 2).sum())


def test_compute_array_protocol_and_persist(client: Client, a: da.Array):
    v = a.compute()
    assert isinstance(v, np.ndarray) and v.dtype == np.float64 and v.flags.writeable
    assert_array_equal(np.asarray(a), A)
    assert_array_equal(np.array(a, dtype=np.float32), A.astype(np.float32))
    s = a.sum().compute()
    assert isinstance(s, np.float64) and np.isclose(s, A.sum())
    assert float(a.sum()) == pytest.approx(A.sum())
    # persist: the chunks stay on the cluster; what is built on them reads them there.
    x = (da.random.random((40, 30), chunks=10) * 3).persist()
    assert x.chunks == ((10,) * 4, (10,) * 3)
    assert x._native.graph_size() == 0
    first = x.compute()
    assert_array_equal(x.compute(), first)
    assert_allclose((x + 1).mean(axis=0).compute(), (first + 1).mean(axis=0))
    assert_allclose(x.T.dot(x).compute(), first.T @ first, rtol=1e-12)
    assert_array_equal(x.rechunk(15).compute(), first)
    # compute(scheduler=client) names the client; Dask's local schedulers are refused.
    assert_array_equal(a.compute(scheduler=client), A)
    with pytest.raises(ValueError, match="rask computes on a cluster"):
        a.compute(scheduler="threads")


def test_rask_compute_and_persist_take_arrays(client: Client, a: da.Array):
    # One graph for several arrays, alongside delayed values, inside lists as Dask's compute.
    total, mean, [top], plain, d = rask.compute(a.sum(), a.mean(), [a.max(axis=0)], "plain", rask.delayed(len)([1, 2]))
    assert_allclose(total, A.sum())
    assert_allclose(mean, A.mean())
    assert_allclose(top, A.max(axis=0))
    assert (plain, d) == ("plain", 2)
    (p,) = rask.persist(a * 2)
    assert isinstance(p, da.Array) and p._native.graph_size() == 0
    assert_allclose(p.compute(), 2 * A)
    q = client.persist(a + 1)
    assert isinstance(q, da.Array) and q._native.graph_size() == 0
    assert_allclose(q.sum().compute(), (A + 1).sum())
    with pytest.raises(TypeError, match="Client.compute of a rask.array array"):
        client.compute(a)


def make_block(n: int, m: int) -> np.ndarray:
    return np.arange(n * m, dtype=np.int64).reshape(n, m) * 0.5


def test_from_delayed(client: Client):
    v = rask.delayed(make_block)(4, 6)
    x = da.from_delayed(v, shape=(4, 6), dtype=float)
    assert x.chunks == ((4,), (6,))
    want = make_block(4, 6)
    assert_array_equal(x.compute(), want)
    assert_allclose((x.T @ x).sum(axis=0).compute(), (want.T @ want).sum(axis=0))
    # A delayed value already persisted on the cluster is read from there.
    (p,) = rask.persist(rask.delayed(make_block)(2, 3))
    assert_array_equal(da.from_delayed(p, shape=(2, 3)).compute(), make_block(2, 3))


def test_from_delayed_errors_are_clear(client: Client):
    wrong = da.from_delayed(rask.delayed(make_block)(3, 3), shape=(4, 6))
    with pytest.raises(ValueError, match=r"shape \(3, 3\), but shape=\(4, 6\) was declared"):
        wrong.compute()

    def boom():
        raise KeyError("from the user's function")

    with pytest.raises(KeyError, match="from the user's function"):
        da.from_delayed(rask.delayed(boom)(), shape=(1,)).compute()
    with pytest.raises(TypeError, match="needs a rask.delayed value"):
        da.from_delayed(np.ones(3), shape=(3,))
    with pytest.raises(TypeError, match="complex"):
        da.from_delayed(rask.delayed(make_block)(1, 1), shape=(1, 1), dtype=complex)


def test_bad_input_is_a_clear_error(a: da.Array):
    with pytest.raises(ValueError, match=r"could not be broadcast together with shapes \(23, 17\) \(17, 23\)"):
        a + a.T
    with pytest.raises(ValueError, match="broadcast"):
        a * np.ones(17)
    with pytest.raises(np.exceptions.AxisError, match="axis 2 is out of bounds for array of dimension 2"):
        a.sum(axis=2)
    with pytest.raises(IndexError):
        a.mean(axis=-3)
    with pytest.raises(ValueError, match=r"shapes \(23, 17\) and \(23, 17\) not aligned: 17 \(dim 1\) != 23 \(dim 0\)"):
        a.dot(a)
    with pytest.raises(ValueError, match="not aligned"):
        a @ np.ones((5, 2))
    with pytest.raises(NotImplementedError, match="2-d arrays only"):
        da.ones(3).dot(da.ones(3))
    with pytest.raises(IndexError, match="index 23 is out of bounds for axis 0 with size 23"):
        a[23]
    with pytest.raises(IndexError, match="too many indices"):
        a[1, 2, 3]
    with pytest.raises(NotImplementedError, match="step 1 only"):
        a[::2]
    with pytest.raises(NotImplementedError, match="integers and slices only"):
        a[[1, 2]]
    with pytest.raises(NotImplementedError, match="newaxis"):
        a[None]
    with pytest.raises(NotImplementedError, match="keepdims"):
        a.sum(keepdims=True)
    with pytest.raises(NotImplementedError, match="several axes"):
        da.ones((2, 2, 2)).sum(axis=(0, 1))
    with pytest.raises(NotImplementedError, match="reverses all axes only"):
        da.ones((2, 3, 4)).transpose(1, 0, 2)
    # Other dtypes: complex is refused; float32 is refused by name (rask holds float64).
    with pytest.raises(TypeError, match="complex"):
        da.from_array(np.ones(3, dtype=complex))
    with pytest.raises(TypeError, match="complex"):
        a + 1j
    with pytest.raises(TypeError, match="float64 only, not float32"):
        da.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="<U1"):
        da.from_array(np.array(["a"]))
    # Chunks that do not add up to the shape: the native builder's error.
    with pytest.raises(ValueError, match=r"bad chunks: chunks \[1, 2\] of dimension 0 add up to 3, not its length 4"):
        da.ones((4,), chunks=((1, 2),))
    with pytest.raises(ValueError, match="chunk sizes must be positive"):
        da.ones((4,), chunks=0)
    with pytest.raises(ValueError, match='rask takes "auto"'):
        da.ones((4,), chunks="10MiB")
    with pytest.raises(ValueError, match="negative dimensions"):
        da.zeros((-1, 2))
    with pytest.raises(ValueError, match="step must not be zero"):
        da.arange(0, 5, 0)


def test_the_seed_expressions_on_a_local_cluster():
    # The seed: x = da.random.random((800, 800, 800), chunks=200); x.mean(), and
    # (y.dot(y.T + 1) - y.mean()).std() on 8000² in chunks of 1000², scaled down.
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        x = da.random.random((80, 80, 80), chunks=20)
        assert x.numblocks == (4, 4, 4)
        m = x.mean().compute()
        assert 0.49 < m < 0.51
        values = x.compute()
        assert_allclose(m, values.mean(), rtol=1e-12)
        assert_allclose(x.std(axis=1).compute(), values.std(axis=1), rtol=1e-10)
        y = da.random.random((400, 400), chunks=100)
        z = (y.dot(y.T + 1) - y.mean()).std()
        yv = y.compute(scheduler=client)
        assert_allclose(z.compute(), (yv @ (yv.T + 1) - yv.mean()).std(), rtol=1e-10)


# --- parity: the same bodies with dask.array and rask.array -----------------------------------


@pytest.fixture(params=["dask", "rask"])
def xp(request: pytest.FixtureRequest) -> Iterator[SimpleNamespace]:
    """`da`: the array module under test, computed by the sync scheduler (Dask) or the suite's
    cluster (rask)."""
    if request.param == "dask":
        import dask
        import dask.array

        with dask.config.set(scheduler="sync"):
            yield SimpleNamespace(name="dask", da=dask.array, dask=dask)
    else:
        request.getfixturevalue("client")
        yield SimpleNamespace(name="rask", da=da, dask=rask)


def test_parity_creation_and_chunks(xp: SimpleNamespace):
    d = xp.da
    x = d.ones((10, 7), chunks=(4, 3))
    assert x.chunks == ((4, 4, 2), (3, 3, 1))
    assert x.shape == (10, 7) and x.ndim == 2 and x.dtype == np.float64
    assert x.numblocks == (3, 3) and x.npartitions == 9 and x.chunksize == (4, 3)
    assert d.zeros(5, chunks=2).chunks == ((2, 2, 1),)
    assert d.from_array(A, chunks=CHUNKS).chunks == ((10, 10, 3), (6, 6, 5))
    assert d.arange(10, chunks=4).chunks == ((4, 4, 2),)
    assert d.random.random((6, 6), chunks=3).chunks == ((3, 3), (3, 3))
    assert x.rechunk((5, 7)).chunks == ((5, 5), (7,))
    assert x.T.chunks == ((3, 3, 1), (4, 4, 2))
    assert x[2:9, 1].chunks == ((2, 4, 1),)


def test_parity_expressions(xp: SimpleNamespace):
    d = xp.da
    a = d.from_array(A, chunks=CHUNKS)
    b = d.from_array(B, chunks=CHUNKS)
    assert_allclose((a + b * 2 - 1).compute(), A + B * 2 - 1)
    assert_allclose(d.sqrt(b).sum(axis=0).compute(), np.sqrt(B).sum(axis=0))
    assert_allclose((a @ b.T).mean().compute(), (A @ B.T).mean())
    assert_allclose((a.dot(b.T + 1) - a.mean()).std().compute(), (A.dot(B.T + 1) - A.mean()).std())
    assert_allclose(d.exp(a[3:20, 2:9]).max(axis=1).compute(), np.exp(A[3:20, 2:9]).max(axis=1))
    assert_array_equal(a.argmax(axis=0).compute(), A.argmax(axis=0))
    assert_array_equal((a > b).compute(), A > B)
    assert_allclose(a.var(ddof=1).compute(), A.var(ddof=1))
    assert_allclose(np.asarray(d.cos(a).T), np.cos(A).T)
    p = (a * 2).persist()
    assert_allclose(p.sum().compute(), 2 * A.sum())
    total, low = xp.dask.compute(a.sum(), a.min(axis=1))
    assert_allclose(total, A.sum())
    assert_allclose(low, A.min(axis=1))
    (q,) = xp.dask.persist(a - 1)
    assert_allclose(q.mean().compute(), (A - 1).mean())


def test_parity_errors(xp: SimpleNamespace):
    d = xp.da
    a = d.from_array(A, chunks=CHUNKS)
    with pytest.raises(ValueError):
        (a + a.T).compute()
    with pytest.raises(np.exceptions.AxisError):
        a.sum(axis=2)
    with pytest.raises(ValueError):
        a.dot(a)
    with pytest.raises(IndexError):
        a[23]


def test_the_native_module_refuses_bad_arguments():
    # What rask.array never passes, but the extension checks anyway.
    native = rask._rask.Array
    with pytest.raises(ValueError, match=r"16 bytes of values for an array of shape \[3\] \(3 f64 values\)"):
        native.from_buffer(b"\0" * 16, [3], "auto")
    with pytest.raises(ValueError, match="an empty graph"):
        native.from_python_graph([], [], [1])
    with pytest.raises(ValueError, match="task t reads u, which is neither an earlier task nor a future"):
        native.from_python_graph([("t", b"call", ["u"])], [], [1])
    with pytest.raises(ValueError, match="must not be empty"):
        native.from_python_graph([("", b"call", [])], [], [1])
    x = native.full([2], "auto", 1.0)
    with pytest.raises(ValueError, match='no elementwise function "tan"'):
        x.unary("tan")
    with pytest.raises(ValueError, match='no elementwise operation "mod"'):
        x.binary("mod", x)
    with pytest.raises(ValueError, match='no reduction "prod"'):
        x.reduce("prod", None)
    with pytest.raises(IndexError, match="axis 1 is out of range for an array of 1 dimensions"):
        x.reduce("sum", 1)
    with pytest.raises(ValueError, match=r"bad slice: 2 ranges for an array of shape \[2\]"):
        x.slice([(0, 1), (0, 1)])
    with pytest.raises(ValueError, match='the only string rask takes is "auto"'):
        native.full([2], "big", 1.0)
    with pytest.raises(TypeError, match="chunks must be"):
        native.full([2], 1.5, 1.0)


def test_visualize_writes_the_graph(tmp_path: Any):
    x = da.random.random((20, 20), chunks=10)
    path = x.mean(axis=0).visualize(filename=str(tmp_path / "mean"))
    dot = (tmp_path / "mean.dot").read_text()
    assert path in (str(tmp_path / "mean.dot"), str(tmp_path / "mean.svg"))
    # Four fused partials (random numbers streamed into them) and two combine roots.
    assert dot.count('label="partial"') == 4 and dot.count('label="combine"') == 2
    with pytest.raises(ValueError, match="DOT and SVG only"):
        x.visualize(format="png")
    with pytest.raises(OSError, match="cannot write the graph"):
        x.visualize(filename=str(tmp_path / "missing" / "dir" / "g"))
