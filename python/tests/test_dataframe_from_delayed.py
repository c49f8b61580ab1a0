"""`rask.dataframe.from_delayed`: pandas frames computed by Python functions on the workers become
a rask frame's partitions (Arrow IPC into the native frame kernels). Each operation is compared
with pandas on the same frames; bad partitions fail naming the partition."""

from __future__ import annotations

import sys

import cloudpickle
import numpy as np
import pandas as pd
import pytest

import rask
import rask.dataframe as rd
from rask.distributed import Client

# This module is not importable on the workers: its functions travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PARTS = 4
ROWS = 50


def make_part(i: int) -> pd.DataFrame:
    """Partition i: keys, strings, floats with some NaN, ints and booleans; an index of its own
    (which rask drops, as a rask frame has none)."""
    r = np.arange(i * ROWS, (i + 1) * ROWS)
    x = (r * 13 % 200 - 100) / 4.0
    x[r % 9 == 4] = np.nan
    return pd.DataFrame(
        {"k": r * 7 % 5, "s": [("red", "green", "blue")[j % 3] for j in r], "x": x, "n": r - 90, "b": r % 2 == 0},
        index=r + 1000,
    )


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    return pd.concat([make_part(i) for i in range(PARTS)], ignore_index=True)


@pytest.fixture
def df(client: Client) -> rd.DataFrame:
    return rd.from_delayed([rask.delayed(make_part)(i) for i in range(PARTS)], meta=make_part(0).iloc[:0])


def test_from_delayed_computes_the_partitions_as_pandas(df: rd.DataFrame, expected: pd.DataFrame):
    assert df.npartitions == PARTS
    assert list(df.columns) == ["k", "s", "x", "n", "b"]
    assert dict(df.dtypes) == {"k": "int64", "s": "str", "x": "float64", "n": "int64", "b": "bool"}
    assert len(df) == PARTS * ROWS
    pd.testing.assert_frame_equal(df.compute(), expected)


def test_filters_select_assign_and_groupby_equal_pandas(df: rd.DataFrame, expected: pd.DataFrame):
    e = expected
    pd.testing.assert_frame_equal(
        df[(df.x > 0) & (df.s != "red")][["k", "x"]].compute(),
        e[(e.x > 0) & (e.s != "red")][["k", "x"]].reset_index(drop=True),
    )
    assert len(df[df.b == True]) == int(e.b.sum())  # noqa: E712 - a column condition
    pd.testing.assert_series_equal(df.assign(y=df.x * 2 + df.n).y.compute(), (e.x * 2 + e.n).rename("y"))
    pd.testing.assert_frame_equal(df.groupby("k")[["x", "n"]].mean().compute(), e.groupby("k")[["x", "n"]].mean())
    pd.testing.assert_series_equal(df.groupby("s").x.mean().compute(), e.groupby("s").x.mean())
    pd.testing.assert_series_equal(df.groupby(["k", "s"]).size().compute(), e.groupby(["k", "s"]).size(), check_names=False)


def test_meta_comes_from_the_first_partition_when_not_given(client: Client, expected: pd.DataFrame):
    df = rd.from_delayed([rask.delayed(make_part)(i) for i in range(PARTS)])
    assert list(df.columns) == list(expected.columns)
    pd.testing.assert_series_equal(df.groupby("k").n.mean().compute(), expected.groupby("k").n.mean())


def test_futures_and_a_single_value_are_partitions_too(client: Client, expected: pd.DataFrame):
    futures = client.map(make_part, range(PARTS))
    pd.testing.assert_frame_equal(rd.from_delayed(futures).compute(), expected)
    one = rd.from_delayed(rask.delayed(make_part)(2))
    pd.testing.assert_frame_equal(one.compute(), make_part(2).reset_index(drop=True))


def not_a_frame(i: int):
    return [i]


def renamed(i: int) -> pd.DataFrame:
    return make_part(i).rename(columns={"x": "y"})


def retyped(i: int) -> pd.DataFrame:
    return make_part(i).assign(n=["many"] * ROWS)


def test_a_partition_that_is_not_a_frame_or_has_other_columns_is_named(client: Client):
    meta = make_part(0).iloc[:0]
    parts = [rask.delayed(make_part)(0), rask.delayed(not_a_frame)(1)]
    with pytest.raises(TypeError, match=r"from_delayed: partition 1 is a builtins.list, not a pandas DataFrame"):
        rd.from_delayed(parts, meta=meta).compute()
    parts = [rask.delayed(make_part)(0), rask.delayed(make_part)(1), rask.delayed(renamed)(2)]
    with pytest.raises(ValueError, match=r"from_delayed: partition 2 has the columns \['k', 's', 'y', 'n', 'b'\], but meta has \['k', 's', 'x', 'n', 'b'\]"):
        len(rd.from_delayed(parts, meta=meta))
    with pytest.raises(TypeError, match=r"from_delayed: partition 0: column 'n' of dtype (object|str) does not fit meta's int64"):
        rd.from_delayed([rask.delayed(retyped)(0)], meta=meta).compute()
    # Without meta, the first partition is computed at once, and named when it is not a frame.
    with pytest.raises(TypeError, match="from_delayed: partition 0 is a builtins.list"):
        rd.from_delayed([rask.delayed(not_a_frame)(0)])


def test_bad_arguments_are_refused_by_name(client: Client):
    meta = make_part(0).iloc[:0]
    with pytest.raises(ValueError, match="at least one partition"):
        rd.from_delayed([], meta=meta)
    with pytest.raises(TypeError, match="partition 1 is a DataFrame, not a rask.delayed value or a future"):
        rd.from_delayed([rask.delayed(make_part)(0), make_part(1)], meta=meta)
    with pytest.raises(TypeError, match="divisions"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta=meta, divisions=[0, 50])
    with pytest.raises(TypeError, match="meta must be a pandas DataFrame"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta={"k": "int64"})
    with pytest.raises(TypeError, match="column 't' has dtype datetime64"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta=pd.DataFrame({"t": pd.to_datetime([])}))
    with pytest.raises(TypeError, match="verify_meta=False"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta=meta, verify_meta=False)
    with pytest.raises(TypeError, match="column names must be str, got 0"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta=pd.DataFrame({0: [1]}))
    with pytest.raises(ValueError, match="from_delayed needs at least one column"):
        rd.from_delayed([rask.delayed(make_part)(0)], meta=pd.DataFrame())
