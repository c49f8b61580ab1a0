"""The placeholder of a dependency inside a pickled call, and the helpers graphs call on workers.

The client replaces each future among a task's arguments by `Dep(i)`, `i` being that future's
position among the task's inputs; the worker puts the input's value in its place before the call.
It pickles by reference to `rask._deps.Dep`, so both sides must have this module.
"""

from __future__ import annotations


class Dep:
    """Input `i` of the task that this pickled call belongs to."""

    __slots__ = ("i",)

    def __init__(self, i: int):
        self.i = i

    def __reduce__(self):
        return (Dep, (self.i,))

    def __eq__(self, other: object) -> bool:
        return type(other) is Dep and other.i == self.i

    def __hash__(self) -> int:
        return hash((Dep, self.i))

    def __repr__(self) -> str:
        return f"Dep({self.i})"


class Function:
    """A function pickled once (cloudpickle) for many calls (`Client.map`): it pickles as a call
    of `load_function` on those bytes, so each call's pickle carries them without pickling the
    function again, and a worker loads them once (as Dask's workers cache loaded functions)."""

    __slots__ = ("pickled",)

    def __init__(self, pickled: bytes):
        self.pickled = pickled

    def __reduce__(self):
        return (load_function, (self.pickled,))


# Functions a worker's Python process has loaded, by their pickle; a few at a time.
_FUNCTIONS: dict = {}
_FUNCTIONS_KEPT = 64


def load_function(pickled: bytes):
    """The function of a `Function`'s bytes, loaded once per process."""
    f = _FUNCTIONS.get(pickled)
    if f is None:
        import pickle

        f = pickle.loads(pickled)
        if len(_FUNCTIONS) >= _FUNCTIONS_KEPT:
            _FUNCTIONS.clear()
        _FUNCTIONS[pickled] = f
    return f


# Helpers that delayed graphs and `Client.scatter` call on the workers (pickled by reference, like
# `Dep`, so both sides need only this module).


def identity(x):
    """A value placed on the cluster as it is (`delayed(value)`, `Client.scatter`)."""
    return x


def call_method(obj, name, args, kwargs):
    """`obj.name(*args, **kwargs)`: a method called on a delayed value."""
    return getattr(obj, name)(*args, **kwargs)


def chunk_values(x, shape):
    """A `rask.array.from_delayed` chunk: the raw float64 values (little-endian, C order) of `x`,
    which must have `shape`; the array kernels read them from these bytes."""
    import numpy as np

    a = np.asarray(x)
    if a.shape != tuple(shape):
        raise ValueError(f"from_delayed: the function gave an array of shape {a.shape}, but shape={tuple(shape)} was declared")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"from_delayed: rask.array holds float64 values; the function gave dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def frame_meta(df, index):
    """`rask.dataframe.from_delayed` without `meta=`: the columns and dtypes of partition
    `index` (its first zero rows), which must be a pandas DataFrame."""
    _check_frame(df, index)
    return df.iloc[:0]


def frame_part(df, index, columns, dtypes):
    """A `rask.dataframe.from_delayed` partition: pandas frame `df` as the bytes of an Arrow IPC
    stream with the frame's `columns` and rask `dtypes` (int64, float64, bool, string), which the
    frame kernels read; its row index is dropped (rask frames have none)."""
    import pyarrow as pa
    import pyarrow.ipc

    _check_frame(df, index)
    have = [str(c) if isinstance(c, str) else c for c in df.columns]
    if have != list(columns):
        raise ValueError(
            f"from_delayed: partition {index} has the columns {have}, but meta has {list(columns)}"
        )
    types = {"int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(), "string": pa.large_string()}
    arrays = []
    for name, dtype in zip(columns, dtypes):
        try:
            arrays.append(pa.array(df[name], type=types[dtype], from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as e:
            raise TypeError(
                f"from_delayed: partition {index}: column {name!r} of dtype {df[name].dtype} "
                f"does not fit meta's {dtype}: {e}"
            ) from None
    table = pa.Table.from_arrays(arrays, names=list(columns))
    sink = pa.BufferOutputStream()
    with pyarrow.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _check_frame(df, index):
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(
            f"from_delayed: partition {index} is a {type(df).__module__}.{type(df).__qualname__}, "
            "not a pandas DataFrame"
        )
