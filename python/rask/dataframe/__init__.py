"""Dask's `dask.dataframe` on rask: partitioned frames read from CSV or Parquet, computed by
rask's native frame kernels (Polars) on the cluster, returned as pandas frames::

    import rask.dataframe as dd

    df = dd.read_csv("data/taxi-*.csv", blocksize="64MB")
    len(df)
    df = df[df.trip_distance > 0].assign(per_mile=df.total_amount / df.trip_distance)
    df.groupby("payment_type").per_mile.mean().compute()     # a pandas Series
    df[["VendorID", "fare_amount"]].head()                      # a pandas DataFrame
    df.to_parquet("out/")                                       # out/part.0.parquet, ...

A frame is lazy: building one reads the files' headers (or Parquet metadata) and a sample, and
`compute`, `head`, `len`, `to_csv` and `to_parquet` run its task graph on the default client
(`rask.distributed.Client`). Each partition's steps (read, filter, assign, select, a groupby's
partial aggregate) run in one task; results travel as Arrow IPC and become pandas frames through
pyarrow, without a Python object per row.

Columns are int64, float64, bool or string. A rask frame has no row index of its own: computed
frames get pandas' default index (a groupby's result is indexed by its keys, as in pandas).
"""

from __future__ import annotations

import glob as _glob
import os
from collections.abc import Iterable
from typing import Any

try:
    import pandas as pd
    import pyarrow
    import pyarrow.ipc
except ImportError as _missing:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"rask.dataframe needs pandas and pyarrow ({_missing.name or 'one of them'} is not "
        "installed): pip install 'rask[dataframe]'"
    ) from _missing

from .. import _deps, _rask
from .._delayed import Delayed, delayed, from_future, graph
from .._futures import Future, default_client

__all__ = ["DataFrame", "Series", "from_delayed", "read_csv", "read_parquet"]

# Aggregations the native groupby has, as pandas names them.
_AGGS = ("mean", "sum", "count", "min", "max")


def _client(client: Any = None) -> Any:
    """The native client of `client`, or of the default `rask.distributed.Client`."""
    return default_client(client)._client()


def _to_pandas(ipc: bytes) -> pd.DataFrame:
    """A computed frame (Arrow IPC stream bytes) as pandas."""
    return pyarrow.ipc.open_stream(ipc).read_all().to_pandas()


def _unknown(kwargs: dict, what: str) -> None:
    if kwargs:
        names = ", ".join(sorted(kwargs))
        raise TypeError(f"{what} does not support the argument(s) {names} in rask")


def read_csv(urlpath: str | os.PathLike, blocksize: int | str | None = 64_000_000, sep: str = ",", dtype: dict | None = None, sample: int = 256_000, **kwargs: Any) -> DataFrame:
    """Dask's `read_csv`: every file `urlpath` (a glob) matches, cut into partitions of
    `blocksize` bytes (an int, a size such as `"64MB"`, or None for one partition per file) at
    line boundaries. Column types come from the first `sample` bytes of the first file unless
    `dtype` names them (`{"x": "float64"}`; int64, float64, bool, string)."""
    _unknown(kwargs, "read_csv")
    dtypes = []
    for column, t in (dtype or {}).items():
        dtypes.append((column, t if isinstance(t, str) else pd.api.types.pandas_dtype(t).name))
    frame = _rask.Frame.read_csv(os.fspath(urlpath), blocksize, sep, dtypes, sample)
    return DataFrame(frame)


def read_parquet(path: str | os.PathLike, columns: list[str] | str | None = None, blocksize: int | str | None = "256MiB", **kwargs: Any) -> DataFrame:
    """Dask's `read_parquet`: a Parquet file, a glob of them, or a directory (its `*.parquet`);
    `columns` of them (or all), a file's row groups joined into partitions of `blocksize`
    uncompressed bytes (None: one partition per file)."""
    _unknown(kwargs, "read_parquet")
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "*.parquet")
    if isinstance(columns, str):
        columns = [columns]
    return DataFrame(_rask.Frame.read_parquet(path, list(columns) if columns is not None else None, blocksize))


def _rask_dtype(column: Any, dtype: Any) -> str:
    """The rask column type (int64, float64, bool, string) pandas' `dtype` becomes."""
    kind = getattr(dtype, "kind", None)
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype) and not (kind == "u" and dtype.itemsize == 8):
        return "int64"
    if pd.api.types.is_float_dtype(dtype):
        return "float64"
    if pd.api.types.is_string_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        return "string"
    raise TypeError(f"from_delayed: column {column!r} has dtype {dtype}; rask frames hold int64, float64, bool or string columns")


def from_delayed(dfs: Any, meta: Any = None, divisions: Any = None, prefix: str | None = None, verify_meta: bool = True) -> DataFrame:
    """Dask's `from_delayed`: a frame whose partition `i` is the pandas DataFrame that `dfs[i]`
    (a `rask.delayed` value or a future) computes, on a worker's Python process. The frames
    travel to the frame kernels as Arrow IPC; everything built on the result runs in them.

    `meta` (a pandas DataFrame, its rows ignored) gives the columns and dtypes; without it, the
    first partition is computed now for them (as Dask does). A partition that is not a
    DataFrame, or whose columns differ from `meta`'s, fails the computation with `TypeError` or
    `ValueError` naming the partition. rask frames have no index, so `divisions` must be None."""
    if divisions is not None:
        raise TypeError("from_delayed(divisions=...): rask frames have no index to divide; leave divisions=None")
    if not verify_meta:
        raise TypeError("from_delayed(verify_meta=False): rask always checks each partition against meta")
    if isinstance(dfs, (Delayed, Future)):
        dfs = [dfs]
    dfs = list(dfs)
    if not dfs:
        raise ValueError("from_delayed needs at least one partition")
    values = []
    for i, d in enumerate(dfs):
        if isinstance(d, Future):
            d = from_future(d)
        if not isinstance(d, Delayed):
            raise TypeError(f"from_delayed: partition {i} is a {type(d).__name__}, not a rask.delayed value or a future")
        values.append(d)
    if meta is None:
        meta = delayed(_deps.frame_meta)(values[0], 0).compute()
    if not isinstance(meta, pd.DataFrame):
        raise TypeError(f"from_delayed: meta must be a pandas DataFrame (its rows are ignored), not {type(meta).__name__}")
    columns = list(meta.columns)
    for c in columns:
        if not isinstance(c, str):
            raise TypeError(f"from_delayed: column names must be str, got {c!r}")
    dtypes = [_rask_dtype(c, meta[c].dtype) for c in columns]
    parts = [delayed(_deps.frame_part)(d, i, columns, dtypes) for i, d in enumerate(values)]
    # Futures the graph reads: the default client's live ones stand for tasks of their keys.
    tasks, external = graph(parts, {})
    frame = _rask.Frame.from_python_graph(tasks, [f._native for f in external.values()], [p.key for p in parts], list(zip(columns, dtypes)))
    return DataFrame(frame)


class DataFrame:
    """A lazy partitioned frame (Dask's `dask.dataframe.DataFrame`)."""

    def __init__(self, frame: _rask.Frame, index: list[str] | None = None):
        self._frame = frame
        # Columns that pandas shows as the index (a groupby's keys).
        self._index = index or []

    # --- what is known without computing ---

    @property
    def columns(self) -> pd.Index:
        return pd.Index([c for c in self._frame.columns if c not in self._index])

    @property
    def dtypes(self) -> pd.Series:
        types = {"int64": "int64", "float64": "float64", "bool": "bool", "string": "str"}
        return pd.Series({n: types[t] for n, t in self._frame.dtypes if n not in self._index}, dtype=object)

    @property
    def npartitions(self) -> int:
        return self._frame.npartitions

    def _check_columns(self, names: Iterable[str]) -> None:
        have = self._frame.columns
        for name in names:
            if name not in have:
                raise KeyError(f"no column {name!r} (columns: {', '.join(have)})")

    # --- steps ---

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Series):
            if not key._expr.is_condition:
                raise TypeError("df[...] with a Series filters rows: it needs a condition such as df.x > 0")
            return DataFrame(self._frame.filter(key._expr), self._index)
        if isinstance(key, str):
            self._check_columns([key])
            return Series(self, _rask.FrameExpr.column(key), key)
        if isinstance(key, (list, tuple, pd.Index)):
            names = list(key)
            if not all(isinstance(n, str) for n in names):
                raise TypeError(f"df[[...]] takes column names (str), not {names!r}")
            self._check_columns(names)
            return DataFrame(self._frame.select(self._index + [n for n in names if n not in self._index]), self._index)
        raise TypeError(f"df[...] takes a column name, a list of them or a condition, not {type(key).__name__}")

    def __getattr__(self, name: str) -> Series:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._frame.columns:
            return self[name]
        raise AttributeError(f"'DataFrame' object has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | {c for c in self._frame.columns if c.isidentifier()})

    def assign(self, **columns: Any) -> DataFrame:
        """Computed columns: each value a column expression (`df.x * 2 + df.y`) or a number.
        Every value reads the frame as it was before this call, as in pandas."""
        if not columns:
            return self
        exprs = []
        for name, value in columns.items():
            if isinstance(value, Series):
                expr = value._expr
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                expr = _rask.FrameExpr.literal(value)
            else:
                raise TypeError(f"assign({name}=...) takes a column expression or a number, not {type(value).__name__}")
            exprs.append((name, expr))
        return DataFrame(self._frame.assign(exprs), self._index)

    def groupby(self, by: str | list[str], sort: bool = True, split_every: int | None = None, **kwargs: Any) -> GroupBy:
        """`df.groupby(keys)`: then `.agg`, `.mean()`, `.sum()`, `.count()`, `.min()`, `.max()`,
        `.size()`, on all other columns or a selection (`g.x`, `g[["x", "y"]]`). Results are
        sorted by the keys (rask always sorts)."""
        _unknown(kwargs, "groupby")
        if not sort:
            raise TypeError("groupby(sort=False): rask's groupby results are always sorted by key")
        keys = [by] if isinstance(by, str) else list(by)
        self._check_columns(keys)
        return GroupBy(self, keys, None, split_every)

    # --- computing ---

    def compute(self, client: Any = None, **kwargs: Any) -> pd.DataFrame:
        _unknown(kwargs, "compute")
        return self._pandas(_to_pandas(self._frame.compute(_client(client))))

    def _pandas(self, pdf: pd.DataFrame) -> pd.DataFrame:
        return pdf.set_index(self._index) if self._index else pdf

    def head(self, n: int = 5, npartitions: int = 1, compute: bool = True, client: Any = None) -> pd.DataFrame:
        """The first `n` rows, computing partitions in order until there are `n` (as Dask's
        `npartitions=-1`; Dask's default looks at the first partition only)."""
        if not compute:
            raise TypeError("head(compute=False): rask's head always computes")
        if n < 0:
            raise ValueError(f"head(n={n}): n must be ≥ 0")
        return self._pandas(_to_pandas(self._frame.head(n, _client(client))))

    def __len__(self) -> int:
        return self._frame.len(_client())

    def to_csv(self, filename: str | os.PathLike, index: bool = False, client: Any = None, **kwargs: Any) -> list[str]:
        """One CSV file per partition, with a header, written by the workers: `name-*.csv` gives
        `name-0.csv`, `name-1.csv`, ...; a name without `*` is a directory of `0.part`, `1.part`,
        ... (Dask's naming). Returns the paths. A rask frame has no row index to write: `index`
        must be False (a groupby's keys are written as columns)."""
        _unknown(kwargs, "to_csv")
        if index:
            raise TypeError("to_csv(index=True): a rask frame has no row index to write; use index=False")
        filename = os.path.abspath(os.fspath(filename))
        n = self.npartitions
        if "*" in filename:
            if filename.count("*") > 1:
                raise ValueError(f"to_csv: {filename!r} has more than one '*'")
            paths = [filename.replace("*", str(i)) for i in range(n)]
        else:
            paths = [os.path.join(filename, f"{i}.part") for i in range(n)]
        self._frame.to_csv(paths, _client(client))
        return paths

    def to_parquet(self, path: str | os.PathLike, client: Any = None, **kwargs: Any) -> None:
        """One Parquet file per partition in the directory `path` (made if needed), written by
        the workers: `part.0.parquet`, `part.1.parquet`, ... (Dask's naming)."""
        _unknown(kwargs, "to_parquet")
        path = os.path.abspath(os.fspath(path))
        if os.path.isfile(path):
            raise FileExistsError(f"to_parquet: {path} is a file; it writes a directory of parts")
        self._frame.to_parquet([os.path.join(path, f"part.{i}.parquet") for i in range(self.npartitions)], _client(client))

    def __repr__(self) -> str:
        cols = ", ".join(f"{n}: {t}" for n, t in self._frame.dtypes)
        return f"<rask.dataframe.DataFrame npartitions={self.npartitions} ({cols})>"


class Series:
    """A column of a frame, or an expression of columns (`df.x * 2 + df.y`, `df.x > 3`):
    filters rows (`df[cond]`), makes columns (`df.assign`), or computes as a pandas Series."""

    def __init__(self, frame: DataFrame, expr: _rask.FrameExpr, name: str | None):
        self._df = frame
        self._expr = expr
        self.name = name

    def _combine(self, other: Any, op: str, reflected: bool = False) -> Series:
        if isinstance(other, Series):
            right = other._expr
        elif isinstance(other, (int, float)) and not isinstance(other, bool):
            right = _rask.FrameExpr.literal(other)
        else:
            return NotImplemented
        left = self._expr
        if reflected:
            left, right = right, left
        return Series(self._df, left.arith(op, right), None)

    def __add__(self, o: Any) -> Series:
        return self._combine(o, "+")

    def __radd__(self, o: Any) -> Series:
        return self._combine(o, "+", True)

    def __sub__(self, o: Any) -> Series:
        return self._combine(o, "-")

    def __rsub__(self, o: Any) -> Series:
        return self._combine(o, "-", True)

    def __mul__(self, o: Any) -> Series:
        return self._combine(o, "*")

    def __rmul__(self, o: Any) -> Series:
        return self._combine(o, "*", True)

    def __truediv__(self, o: Any) -> Series:
        return self._combine(o, "/")

    def __rtruediv__(self, o: Any) -> Series:
        return self._combine(o, "/", True)

    def __neg__(self) -> Series:
        return Series(self._df, _rask.FrameExpr.literal(0).arith("-", self._expr), None)

    def _compare(self, op: str, value: Any) -> Series:
        if isinstance(value, Series):
            raise TypeError("rask compares a column with a value (int, float, bool or str), not with another column")
        return Series(self._df, self._expr.compare(op, value), None)

    def __eq__(self, v: Any) -> Series:  # type: ignore[override]
        return self._compare("==", v)

    def __ne__(self, v: Any) -> Series:  # type: ignore[override]
        return self._compare("!=", v)

    def __lt__(self, v: Any) -> Series:
        return self._compare("<", v)

    def __le__(self, v: Any) -> Series:
        return self._compare("<=", v)

    def __gt__(self, v: Any) -> Series:
        return self._compare(">", v)

    def __ge__(self, v: Any) -> Series:
        return self._compare(">=", v)

    def __and__(self, o: Series) -> Series:
        return Series(self._df, self._expr.and_(o._expr), None)

    def __or__(self, o: Series) -> Series:
        return Series(self._df, self._expr.or_(o._expr), None)

    def __invert__(self) -> Series:
        return Series(self._df, self._expr.invert(), None)

    def isnull(self) -> Series:
        return Series(self._df, self._expr.is_null(), None)

    isna = isnull

    def notnull(self) -> Series:
        return ~self.isnull()

    notna = notnull

    __hash__ = None  # type: ignore[assignment]

    def __bool__(self) -> bool:
        raise TypeError("the truth value of a rask Series is ambiguous: combine conditions with & | ~, not and/or/not")

    def _as_frame(self) -> tuple[DataFrame, str]:
        """The frame of this series alone (its keys too for a groupby result), and its column."""
        column = self._expr.column_name
        if column is None:
            if self._expr.is_condition:
                raise TypeError("a condition filters rows (df[cond]); rask does not compute it as a Series")
            column = "__rask_series"
            frame = self._df._frame.assign([(column, self._expr)])
        else:
            frame = self._df._frame
        return DataFrame(frame.select(self._df._index + [column]), self._df._index), column

    def compute(self, client: Any = None) -> pd.Series:
        frame, column = self._as_frame()
        return frame.compute(client)[column].rename(self.name)

    def head(self, n: int = 5, client: Any = None) -> pd.Series:
        frame, column = self._as_frame()
        return frame.head(n, client=client)[column].rename(self.name)

    def __len__(self) -> int:
        return len(self._df)

    @property
    def npartitions(self) -> int:
        return self._df.npartitions

    def __repr__(self) -> str:
        return f"<rask.dataframe.Series name={self.name!r} {self._expr!r}>"


class GroupBy:
    """`df.groupby(keys)`, optionally narrowed to some columns (`g.x`, `g[["x", "y"]]`)."""

    def __init__(self, df: DataFrame, keys: list[str], selection: str | list[str] | None, split_every: int | None):
        self._df = df
        self._keys = keys
        self._selection = selection
        self._split_every = split_every

    def __getitem__(self, key: str | list[str]) -> GroupBy:
        names = [key] if isinstance(key, str) else list(key)
        self._df._check_columns(names)
        return GroupBy(self._df, self._keys, key if isinstance(key, str) else names, self._split_every)

    def __getattr__(self, name: str) -> GroupBy:
        if name.startswith("_"):
            raise AttributeError(name)
        if name in self._df._frame.columns:
            return self[name]
        raise AttributeError(f"'GroupBy' object has no attribute {name!r}")

    def _columns(self) -> list[str]:
        if self._selection is None:
            return [c for c in self._df._frame.columns if c not in self._keys]
        return [self._selection] if isinstance(self._selection, str) else list(self._selection)

    def _run(self, pairs: list[tuple[str, str]]) -> DataFrame:
        for _, agg in pairs:
            if agg not in _AGGS:
                raise ValueError(f"unknown aggregation {agg!r} (rask has {', '.join(_AGGS)} and size)")
        frame = self._df._frame.groupby_agg(self._keys, pairs, self._split_every)
        return DataFrame(frame, list(self._keys))

    def agg(self, arg: str | list[str] | dict) -> DataFrame | Series:
        """`agg("mean")`, `agg(["mean", "max"])` or `agg({"x": "mean", "y": ["min", "max"]})`; a
        list of aggregations gives pandas' two-level columns `(column, aggregation)`."""
        if isinstance(arg, str):
            return self._one(arg)
        if isinstance(arg, dict):
            spec = [(c, [a] if isinstance(a, str) else list(a)) for c, a in arg.items()]
            multi = any(not isinstance(a, str) for a in arg.values())
        else:
            spec = [(c, list(arg)) for c in self._columns()]
            multi = True
        pairs = [(c, a) for c, aggs in spec for a in aggs]
        result = self._run(pairs)
        if not multi:
            return result
        return _MultiColumns(result, pairs)

    aggregate = agg

    def _one(self, agg: str) -> DataFrame | Series:
        columns = self._columns()
        result = self._run([(c, agg) for c in columns])
        if isinstance(self._selection, str):
            return Series(result, _rask.FrameExpr.column(self._selection), self._selection)
        return result

    def mean(self) -> DataFrame | Series:
        return self._one("mean")

    def sum(self) -> DataFrame | Series:
        return self._one("sum")

    def count(self) -> DataFrame | Series:
        return self._one("count")

    def min(self) -> DataFrame | Series:
        return self._one("min")

    def max(self) -> DataFrame | Series:
        return self._one("max")

    def size(self) -> Series:
        """Rows per group (rows whose key is null are in none), as an unnamed Series."""
        ones = "__rask_size"
        frame = self._df._frame.assign([(ones, _rask.FrameExpr.literal(1))])
        result = DataFrame(frame.groupby_agg(self._keys, [(ones, "sum")], self._split_every), list(self._keys))
        return Series(result, _rask.FrameExpr.column(ones), None)


class _MultiColumns(DataFrame):
    """A groupby result whose pandas columns are `(column, aggregation)` pairs."""

    def __init__(self, result: DataFrame, pairs: list[tuple[str, str]]):
        super().__init__(result._frame, result._index)
        self._pairs = pairs

    def _pandas(self, pdf: pd.DataFrame) -> pd.DataFrame:
        pdf = super()._pandas(pdf)
        pdf.columns = pd.MultiIndex.from_tuples(self._pairs)
        return pdf

    @property
    def columns(self) -> pd.Index:
        return pd.MultiIndex.from_tuples(self._pairs)
