"""`rask.array`'s arrays (`Array`) and the functions that make and combine them; the package
`rask.array` re-exports them with `random` (Dask's `dask.array.core`).

Imports only downward: the native module, `rask._delayed` (for `from_delayed`) and
`rask._futures` (for the client to compute on); `rask.array.random` builds on this module.
"""

from __future__ import annotations

import builtins
import numbers
import operator
from typing import Any

import numpy as np

from .. import _deps, _rask
from .._delayed import Delayed, delayed, graph
from .._futures import client_for

__all__ = [
    "Array",
    "abs",
    "absolute",
    "arange",
    "argmax",
    "argmin",
    "asarray",
    "cos",
    "dot",
    "exp",
    "from_array",
    "from_delayed",
    "full",
    "log",
    "matmul",
    "max",
    "maximum",
    "mean",
    "min",
    "minimum",
    "ones",
    "sin",
    "sqrt",
    "std",
    "sum",
    "transpose",
    "var",
    "zeros",
]

_FLOAT = np.dtype("float64")
_INT = np.dtype("int64")
_BOOL = np.dtype("bool")

try:  # numpy >= 1.25
    from numpy.exceptions import AxisError
except ImportError:  # pragma: no cover - older numpy
    AxisError = np.AxisError  # type: ignore[attr-defined,misc]


def _float_dtype(dtype: Any, what: str) -> None:
    """Refuses dtypes rask's arrays cannot hold; integers and booleans become float64."""
    if dtype is None:
        return
    d = np.dtype(dtype)
    if d.kind in "fiub":
        if d.kind == "f" and d != _FLOAT:
            raise TypeError(f"{what}: rask.array holds float64 only, not {d} (pass dtype=float or leave it out)")
        return
    raise TypeError(f"{what}: rask.array holds float64 values; dtype {d} ({d.kind!r} kind) is not supported")


def _shape(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        out = tuple(operator.index(n) for n in shape)
    except TypeError:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}") from None
    if any(n < 0 for n in out):
        raise ValueError(f"negative dimensions are not allowed: {out}")
    return out


def _chunks(chunks: Any, ndim: int) -> Any:
    """Dask's chunks= forms as the native module takes them: "auto", a size per dimension, or
    every chunk's size per dimension. -1 or None along a dimension means the whole of it."""
    if isinstance(chunks, str):
        if chunks != "auto":
            raise ValueError(f'chunks={chunks!r}: rask takes "auto", an int, or a tuple per dimension')
        return "auto"
    if isinstance(chunks, numbers.Integral):
        chunks = (int(chunks),) * ndim
    if isinstance(chunks, dict):
        raise NotImplementedError("chunks given as a dict of axes is not supported by rask.array yet")
    chunks = tuple(chunks)
    if len(chunks) != ndim:
        raise ValueError(f"chunks {chunks!r} have {len(chunks)} dimensions, the array has {ndim}")
    if all(isinstance(c, (tuple, list)) for c in chunks):
        return [[operator.index(n) for n in c] for c in chunks]
    if any(isinstance(c, (tuple, list)) for c in chunks):
        raise NotImplementedError(f"chunks {chunks!r} mix sizes and explicit chunks; give one form for every dimension")
    if any(isinstance(c, str) for c in chunks):
        raise NotImplementedError(f'chunks {chunks!r}: "auto" along some dimensions only is not supported by rask.array yet')
    return [-1 if c is None else operator.index(c) for c in chunks]


def _resolve_chunks(chunks: Any, shape: tuple[int, ...]) -> Any:
    c = _chunks(chunks, len(shape))
    if isinstance(c, list) and c and not isinstance(c[0], list):
        # -1 (or None) is the whole dimension, as in Dask.
        c = [builtins.max(d, 1) if n == -1 else n for n, d in zip(c, shape)]
        bad = [n for n in c if n <= 0]
        if bad:
            raise ValueError(f"chunk sizes must be positive (or -1 for a whole dimension), got {chunks!r}")
    return c


def _scalar(value: Any) -> float | None:
    """A Python or numpy real number as a float; None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, numbers.Complex) and not isinstance(value, numbers.Real):
        raise TypeError(f"rask.array holds float64 values; the complex operand {value!r} is not supported")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        _float_dtype(value.dtype, "an operand")
        return float(value)
    return None


def _axis(axis: Any, ndim: int) -> int | None:
    """A single axis, normalised (negative counts from the end), or None for all."""
    if axis is None:
        return None
    if isinstance(axis, tuple):
        axes = sorted({_axis(a, ndim) for a in axis})
        if len(axes) == ndim:
            return None
        if len(axes) == 1:
            return axes[0]
        raise NotImplementedError(f"reductions over several axes {axis} (not all of them) are not supported by rask.array yet")
    a = operator.index(axis)
    if not -ndim <= a < ndim:
        raise AxisError(a, ndim)
    return a % ndim if ndim else a


# numpy's ufuncs that rask's kernels have, by numpy's name: unary ones, and binary ones with the
# dtype their results compute to.
_UNARY_UFUNCS = {n: n for n in ("sqrt", "exp", "log", "sin", "cos", "negative", "square")} | {"absolute": "abs"}
_BINARY_UFUNCS = {n: (n, _FLOAT) for n in ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum")} | {
    n: (n, _BOOL) for n in ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal")
}


class Array:
    """A chunked n-d array of float64 (Dask's `dask.array.Array`), computed on the cluster by
    rask's native kernels. Operations are lazy; `compute()` gives a numpy array."""

    __slots__ = ("_native", "_dtype", "__weakref__")

    # How `rask.compute` and `Client.persist` recognise arrays without importing this module.
    _rask_array = True

    def __init__(self, native: _rask.Array, dtype: np.dtype = _FLOAT):
        self._native = native
        self._dtype = np.dtype(dtype)

    # --- description -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._native.shape)

    @property
    def ndim(self) -> int:
        return len(self._native.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self) -> np.dtype:
        """What `compute()` gives: float64, bool (comparisons) or int64 (argmin, argmax)."""
        return self._dtype

    @property
    def itemsize(self) -> int:
        return 8

    @property
    def nbytes(self) -> int:
        return self.size * 8

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(c) for c in self._native.chunks)

    @property
    def chunksize(self) -> tuple[int, ...]:
        return tuple(builtins.max(c) if c else 0 for c in self.chunks)

    @property
    def numblocks(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.chunks)

    @property
    def npartitions(self) -> int:
        return int(np.prod(self.numblocks, dtype=np.int64))

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"rask.array<shape={self.shape}, dtype={self.dtype}, chunksize={self.chunksize}>"

    # --- computing ---------------------------------------------------------------------------

    def compute(self, scheduler: Any = None, **kwargs: Any) -> Any:
        """The values as a numpy array (a numpy scalar for a 0-d array), computed on the cluster
        of `scheduler=` (a `rask.distributed.Client`) or the default client."""
        if kwargs:
            raise TypeError(f"rask's Array.compute does not take {', '.join(sorted(kwargs))}")
        client = client_for(scheduler)
        return self._values(*self._native.compute(client._client()))

    def _values(self, data: bytearray, shape: list[int]) -> Any:
        """The numpy result of raw f64 values as the native module gives them."""
        values = np.frombuffer(data, dtype=np.float64).reshape(shape)
        if self._dtype != _FLOAT:
            values = values.astype(self._dtype)
        return values[()] if values.ndim == 0 else values

    def persist(self, scheduler: Any = None, **kwargs: Any) -> Array:
        """The same array with its chunks computed and kept on the cluster (Dask's `persist`):
        what is built on it reads them there. They are freed when no array holds them."""
        if kwargs:
            raise TypeError(f"rask's Array.persist does not take {', '.join(sorted(kwargs))}")
        client = client_for(scheduler)
        return Array(self._native.persist(client._client()), self._dtype)

    def visualize(self, filename: str = "mydask", format: str | None = None, **kwargs: Any) -> str:
        """Writes the array's task graph as Graphviz DOT (`filename` with the extension `.dot`)
        and, when Graphviz's `dot` is on the PATH, as SVG beside it (Dask's `visualize`; `format`
        may be None, "dot" or "svg"). Returns the path of the SVG if one was rendered, else of
        the DOT file. Chunks kept on the cluster by `persist` are not drawn."""
        if format not in (None, "dot", "svg"):
            raise ValueError(f"rask writes DOT and SVG only, not format={format!r}")
        if kwargs:
            raise TypeError(f"rask's visualize does not take {', '.join(sorted(kwargs))}")
        dot, svg = self._native.visualize(str(filename))
        return svg if svg is not None and format != "dot" else dot

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = np.asarray(self.compute())
        return values if dtype is None else values.astype(dtype)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """numpy's functions on arrays (`np.sqrt(x)`, `np.add(ndarray, x)`, `ndarray * x`) build
        the same graphs as rask.array's own, as Dask's do; other ufuncs and methods raise."""
        name = ufunc.__name__
        if method != "__call__" or kwargs:
            raise NotImplementedError(f"numpy.{name}.{method}{' with ' + ', '.join(kwargs) if kwargs else ''} on a rask.array array is not supported")
        if len(inputs) == 1 and name in _UNARY_UFUNCS:
            return _array(inputs[0])._unary(_UNARY_UFUNCS[name])
        if len(inputs) == 2 and name == "matmul":
            return _array(inputs[0]).dot(inputs[1])
        if len(inputs) == 2 and name in _BINARY_UFUNCS:
            op, dtype = _BINARY_UFUNCS[name]
            a, b = inputs
            if isinstance(a, Array):
                return a._binary(op, b, dtype=dtype)
            return b._binary(op, a, reflected=True, dtype=dtype)
        raise NotImplementedError(f"numpy.{name} on a rask.array array is not supported by rask's kernels yet")

    def astype(self, dtype: Any, **kwargs: Any) -> Array:
        """float64 (or an integer or boolean dtype, which rask holds as float64) only."""
        _float_dtype(dtype, "astype")
        return self

    def __float__(self) -> float:
        if self.size != 1:
            raise TypeError("only arrays of one element can be converted to a Python float")
        return float(np.asarray(self.compute()).reshape(()))

    def __int__(self) -> int:
        return int(self.__float__())

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous")
        return bool(self.__float__())

    # --- elementwise -------------------------------------------------------------------------

    def _operand(self, other: Any, op: str) -> Array | float | None:
        s = _scalar(other)
        if s is not None:
            return s
        if isinstance(other, np.ndarray):
            other = from_array(other, chunks=self.chunks if other.shape == self.shape else "auto")
        if not isinstance(other, Array):
            return None
        if other.shape != self.shape and other.ndim != 0 and self.ndim != 0:
            raise ValueError(
                f"operands could not be broadcast together with shapes {self.shape} {other.shape}: "
                f"rask.array's {op} takes arrays of one shape (or a 0-d one); broadcasting is not supported yet"
            )
        if other.shape == self.shape and other.chunks != self.chunks:
            other = other.rechunk(self.chunks)
        return other

    def _binary(self, op: str, other: Any, reflected: bool = False, dtype: np.dtype = _FLOAT) -> Any:
        o = self._operand(other, op)
        if o is None:
            return NotImplemented
        if isinstance(o, float):
            return Array(self._native.scalar(op, o, reflected), dtype)
        a, b = (o, self) if reflected else (self, o)
        return Array(a._native.binary(op, b._native), dtype)

    def __add__(self, o: Any) -> Any:
        return self._binary("add", o)

    def __radd__(self, o: Any) -> Any:
        return self._binary("add", o, True)

    def __sub__(self, o: Any) -> Any:
        return self._binary("subtract", o)

    def __rsub__(self, o: Any) -> Any:
        return self._binary("subtract", o, True)

    def __mul__(self, o: Any) -> Any:
        return self._binary("multiply", o)

    def __rmul__(self, o: Any) -> Any:
        return self._binary("multiply", o, True)

    def __truediv__(self, o: Any) -> Any:
        return self._binary("divide", o)

    def __rtruediv__(self, o: Any) -> Any:
        return self._binary("divide", o, True)

    def __pow__(self, o: Any) -> Any:
        return self._binary("power", o)

    def __rpow__(self, o: Any) -> Any:
        return self._binary("power", o, True)

    def __lt__(self, o: Any) -> Any:
        return self._binary("less", o, dtype=_BOOL)

    def __le__(self, o: Any) -> Any:
        return self._binary("less_equal", o, dtype=_BOOL)

    def __gt__(self, o: Any) -> Any:
        return self._binary("greater", o, dtype=_BOOL)

    def __ge__(self, o: Any) -> Any:
        return self._binary("greater_equal", o, dtype=_BOOL)

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        return self._binary("equal", o, dtype=_BOOL)

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        return self._binary("not_equal", o, dtype=_BOOL)

    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> Array:
        return Array(self._native.unary("negative"))

    def __pos__(self) -> Array:
        return self

    def __abs__(self) -> Array:
        return Array(self._native.unary("abs"))

    def _unary(self, name: str) -> Array:
        return Array(self._native.unary(name))

    # --- reductions --------------------------------------------------------------------------

    def _reduce(self, name: str, axis: Any, keepdims: bool, dtype: Any = None, ddof: float = 0.0, out: Any = None, result: np.dtype = _FLOAT) -> Array:
        if keepdims:
            raise NotImplementedError(f"{name}(keepdims=True) is not supported by rask.array yet")
        if out is not None:
            raise NotImplementedError(f"{name}(out=...) is not supported by rask.array")
        _float_dtype(dtype, name)
        if self.size == 0 and name not in ("sum",):
            raise ValueError(f"zero-size array to reduction operation {name} which has no identity")
        return Array(self._native.reduce(name, _axis(axis, self.ndim), float(ddof)), result)

    def sum(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        # The sum of booleans counts them, as numpy's does (an int64).
        result = _INT if self._dtype in (_BOOL, _INT) else _FLOAT
        return self._reduce("sum", axis, keepdims, dtype, out=out, result=result)

    def mean(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("mean", axis, keepdims, dtype, out=out)

    def var(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: float = 0, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("var", axis, keepdims, dtype, ddof, out)

    def std(self, axis: Any = None, dtype: Any = None, keepdims: bool = False, ddof: float = 0, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("std", axis, keepdims, dtype, ddof, out)

    def min(self, axis: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("min", axis, keepdims, out=out, result=self._dtype)

    def max(self, axis: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("max", axis, keepdims, out=out, result=self._dtype)

    def argmin(self, axis: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("argmin", axis, keepdims, out=out, result=_INT)

    def argmax(self, axis: Any = None, keepdims: bool = False, split_every: Any = None, out: Any = None) -> Array:
        return self._reduce("argmax", axis, keepdims, out=out, result=_INT)

    # --- structure ---------------------------------------------------------------------------

    @property
    def T(self) -> Array:
        return Array(self._native.transpose(), self._dtype)

    def transpose(self, *axes: Any) -> Array:
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if axes and tuple(_axis(a, self.ndim) for a in axes) != tuple(reversed(range(self.ndim))):
            raise NotImplementedError(f"transpose with axes {axes}: rask.array reverses all axes only (transpose() or .T)")
        return self.T

    def rechunk(self, chunks: Any = "auto", threshold: Any = None, block_size_limit: Any = None, balance: bool = False) -> Array:
        return Array(self._native.rechunk(_resolve_chunks(chunks, self.shape)), self._dtype)

    def dot(self, other: Any) -> Array:
        if isinstance(other, np.ndarray):
            other = from_array(other)
        if not isinstance(other, Array):
            raise TypeError(f"dot needs an array, got {type(other).__name__}")
        if self.ndim != 2 or other.ndim != 2:
            raise NotImplementedError(f"dot of arrays of shapes {self.shape} and {other.shape}: rask.array multiplies 2-d arrays only")
        if self.shape[1] != other.shape[0]:
            raise ValueError(f"shapes {self.shape} and {other.shape} not aligned: {self.shape[1]} (dim 1) != {other.shape[0]} (dim 0)")
        if other.chunks[0] != self.chunks[1]:
            other = other.rechunk((self.chunks[1], other.chunks[1]))
        return Array(self._native.dot(other._native))

    def __matmul__(self, other: Any) -> Any:
        if not isinstance(other, (Array, np.ndarray)):
            return NotImplemented
        return self.dot(other)

    def __rmatmul__(self, other: Any) -> Any:
        if not isinstance(other, np.ndarray):
            return NotImplemented
        return from_array(other).dot(self)

    def __getitem__(self, key: Any) -> Array:
        if not isinstance(key, tuple):
            key = (key,)
        if builtins.sum(k is Ellipsis for k in key) > 1:
            raise IndexError("an index can only have a single ellipsis ('...')")
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1 :]
        if len(key) > self.ndim:
            raise IndexError(f"too many indices for array: array is {self.ndim}-dimensional, but {len(key)} were indexed")
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges = []
        dropped = []
        for axis, (k, n) in enumerate(zip(key, self.shape)):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise NotImplementedError(f"slice step {step} (axis {axis}): rask.array slices with step 1 only")
                ranges.append((start, builtins.max(start, stop)))
            elif k is None:
                raise NotImplementedError("None (numpy.newaxis) in an index is not supported by rask.array yet")
            elif isinstance(k, (numbers.Integral, np.integer)) and not isinstance(k, (bool, np.bool_)):
                i = int(k)
                if not -n <= i < n:
                    raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
                i %= n
                ranges.append((i, i + 1))
                dropped.append(axis)
            else:
                raise NotImplementedError(f"index {k!r} (axis {axis}): rask.array takes integers and slices only (no fancy or boolean indexing yet)")
        native = self._native.slice(ranges)
        # An integer index drops its axis: the maximum over a length-1 axis is that one value,
        # exactly (NaN and -0.0 included), computed by the native reduction kernels.
        for axis in reversed(dropped):
            native = native.reduce("max", axis, 0.0)
        return Array(native, self._dtype)


def compute_all(arrays: list[Array], client: Any) -> list[Any]:
    """The values of `arrays`, computed as one graph (`rask.compute(a, b)`): the chunks they share
    are computed once."""
    computed = _rask.Array.compute_all(client._client(), [a._native for a in arrays])
    return [a._values(data, shape) for a, (data, shape) in zip(arrays, computed)]


# `rask.compute` finds arrays by `_rask_array` and computes them with this, so that it needs no
# import of this module.
Array._rask_compute_all = staticmethod(compute_all)  # type: ignore[attr-defined]


# --- creation ----------------------------------------------------------------------------------


def ones(shape: Any, dtype: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    return full(shape, 1.0, dtype=dtype, chunks=chunks, **kwargs)


def zeros(shape: Any, dtype: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    return full(shape, 0.0, dtype=dtype, chunks=chunks, **kwargs)


def full(shape: Any, fill_value: Any, dtype: Any = None, chunks: Any = "auto", **kwargs: Any) -> Array:
    _no_kwargs("full", kwargs)
    _float_dtype(dtype, "full")
    value = _scalar(fill_value)
    if value is None:
        raise TypeError(f"fill_value must be a real number, got {fill_value!r}")
    shape = _shape(shape)
    return Array(_rask.Array.full(list(shape), _resolve_chunks(chunks, shape), value))


def arange(*args: Any, chunks: Any = "auto", dtype: Any = None, **kwargs: Any) -> Array:
    """`arange([start,] stop[, step])`, as numpy's."""
    _no_kwargs("arange", kwargs)
    _float_dtype(dtype, "arange")
    if not 1 <= len(args) <= 3:
        raise TypeError(f"arange takes 1 to 3 positional arguments, got {len(args)}")
    start, stop, step = (0.0, args[0], 1.0) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1.0)
    values = [_scalar(v) for v in (start, stop, step)]
    if any(v is None for v in values):
        raise TypeError(f"arange takes real numbers, got {args!r}")
    start, stop, step = values
    if step == 0:
        raise ValueError("arange: step must not be zero")
    n = builtins.max(0, int(np.ceil((stop - start) / step)))
    return Array(_rask.Array.arange(start, stop, step, _resolve_chunks(chunks, (n,))))


def from_array(x: Any, chunks: Any = "auto", name: Any = None, lock: bool = False, asarray: Any = None, fancy: bool = True, getitem: Any = None, meta: Any = None, inline_array: bool = False) -> Array:
    """A rask array of a numpy array (or anything `numpy.asarray` takes), cut into chunks that
    travel inside the tasks that read them."""
    if isinstance(x, Array):
        return x if chunks == "auto" else x.rechunk(chunks)
    a = np.asarray(x)
    _float_dtype(a.dtype, "from_array")
    a = np.ascontiguousarray(a, dtype="<f8")
    return Array(_rask.Array.from_buffer(a.tobytes(), list(a.shape), _resolve_chunks(chunks, a.shape)))


def asarray(x: Any, **kwargs: Any) -> Array:
    return from_array(x, **kwargs)


def from_delayed(value: Any, shape: Any, dtype: Any = None, meta: Any = None, name: Any = None) -> Array:
    """A one-chunk array of `shape` whose values a `rask.delayed` value computes (a numpy array,
    or anything `numpy.asarray` takes, of that shape). Its function runs in a worker's Python
    process; everything built on the array runs in the native kernels."""
    if not isinstance(value, Delayed):
        raise TypeError(f"from_delayed needs a rask.delayed value, got {type(value).__name__}")
    _float_dtype(dtype, "from_delayed")
    shape = _shape(shape)
    raw = delayed(_deps.chunk_values)(value, shape)
    tasks, external = graph([raw], {})
    return Array(_rask.Array.from_python_graph(tasks, [f._native for f in external.values()], list(shape)))


def _no_kwargs(name: str, kwargs: dict) -> None:
    if kwargs:
        raise TypeError(f"rask.array.{name} does not take {', '.join(sorted(kwargs))}")


# --- functions (numpy's names) -----------------------------------------------------------------


def _array(x: Any) -> Array:
    return x if isinstance(x, Array) else from_array(x)


def sqrt(x: Any) -> Array:
    return _array(x)._unary("sqrt")


def exp(x: Any) -> Array:
    return _array(x)._unary("exp")


def log(x: Any) -> Array:
    return _array(x)._unary("log")


def sin(x: Any) -> Array:
    return _array(x)._unary("sin")


def cos(x: Any) -> Array:
    return _array(x)._unary("cos")


def absolute(x: Any) -> Array:
    return _array(x)._unary("abs")


abs = absolute  # noqa: A001 - numpy's name


def maximum(a: Any, b: Any) -> Array:
    return _array(a)._binary("maximum", b)


def minimum(a: Any, b: Any) -> Array:
    return _array(a)._binary("minimum", b)


def sum(a: Any, axis: Any = None, **kwargs: Any) -> Array:  # noqa: A001
    return _array(a).sum(axis=axis, **kwargs)


def mean(a: Any, axis: Any = None, **kwargs: Any) -> Array:
    return _array(a).mean(axis=axis, **kwargs)


def std(a: Any, axis: Any = None, **kwargs: Any) -> Array:
    return _array(a).std(axis=axis, **kwargs)


def var(a: Any, axis: Any = None, **kwargs: Any) -> Array:
    return _array(a).var(axis=axis, **kwargs)


def min(a: Any, axis: Any = None, **kwargs: Any) -> Array:  # noqa: A001
    return _array(a).min(axis=axis, **kwargs)


def max(a: Any, axis: Any = None, **kwargs: Any) -> Array:  # noqa: A001
    return _array(a).max(axis=axis, **kwargs)


def argmin(a: Any, axis: Any = None, **kwargs: Any) -> Array:
    return _array(a).argmin(axis=axis, **kwargs)


def argmax(a: Any, axis: Any = None, **kwargs: Any) -> Array:
    return _array(a).argmax(axis=axis, **kwargs)


def dot(a: Any, b: Any) -> Array:
    return _array(a).dot(b)


def matmul(a: Any, b: Any) -> Array:
    return _array(a).dot(b)


def transpose(a: Any, axes: Any = None) -> Array:
    return _array(a).transpose(*(() if axes is None else (axes,)))
