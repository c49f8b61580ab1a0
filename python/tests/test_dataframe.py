"""rask.dataframe on the suite's cluster (`rask scheduler` and two `rask worker` processes): each
operation compared with pandas on the same CSV and Parquet files, and parity tests that run one
body with dask.dataframe and with rask.dataframe."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Iterator

import pandas as pd
import pytest

import rask.dataframe as rd
from rask.distributed import TaskError

ROWS_PER_FILE = 300
FILES = 3
# Small blocks: every file is several partitions.
BLOCKSIZE = 2_000


def _rows(file: int) -> list[str]:
    out = []
    for j in range(ROWS_PER_FILE):
        i = file * ROWS_PER_FILE + j
        k = i * 7 % 5
        s = ("red", "green", "blue")[i % 3]
        # Some x are missing (NaN in pandas, null in rask); k and n never are.
        x = "" if i % 9 == 4 else f"{(i * 13 % 200) - 100}.{i % 100:02d}"
        n = i - 450
        out.append(f"{k},{s},{x},{n}")
    return out


@pytest.fixture(scope="module")
def csvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("frames")
    for f in range(FILES):
        (d / f"data-{f}.csv").write_text("k,s,x,n\n" + "\n".join(_rows(f)) + "\n")
    return d


@pytest.fixture(scope="module")
def expected(csvs: Path) -> pd.DataFrame:
    """What pandas reads from the files, in order."""
    return pd.concat([pd.read_csv(p) for p in sorted(csvs.glob("data-*.csv"))], ignore_index=True)


@pytest.fixture
def df(csvs: Path, client) -> rd.DataFrame:
    return rd.read_csv(str(csvs / "data-*.csv"), blocksize=BLOCKSIZE)


def same(got: pd.DataFrame, want: pd.DataFrame) -> None:
    """Equal frames up to row order (sorted by every column) and index."""
    cols = list(want.columns)
    assert list(got.columns) == cols
    norm = lambda f: f.sort_values(cols).reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(norm(got), norm(want))


def test_read_csv_compute_len_and_columns(df: rd.DataFrame, expected: pd.DataFrame):
    assert df.npartitions > FILES
    assert list(df.columns) == ["k", "s", "x", "n"]
    assert dict(df.dtypes) == {"k": "int64", "s": "str", "x": "float64", "n": "int64"}
    got = df.compute()
    # Partitions come back in order: the frame is pandas' own, row for row.
    pd.testing.assert_frame_equal(got, expected)
    assert len(df) == FILES * ROWS_PER_FILE


def test_one_partition_per_file(csvs: Path, client):
    one = rd.read_csv(str(csvs / "data-0.csv"), blocksize=None)
    assert one.npartitions == 1 and len(one) == ROWS_PER_FILE


def test_select_and_boolean_filters(df: rd.DataFrame, expected: pd.DataFrame):
    e = expected
    same(df[["x", "k"]].compute(), e[["x", "k"]])
    same(df[df.x > 0].compute(), e[e.x > 0])
    same(df[df["n"] <= -100].compute(), e[e["n"] <= -100])
    same(df[(df.k == 2) & ~df.x.isnull()].compute(), e[(e.k == 2) & ~e.x.isnull()])
    same(df[(df.s == "red") | (df.n < -400)].compute(), e[(e.s == "red") | (e.n < -400)])
    same(df[df.s != "blue"][["s", "n"]].compute(), e[e.s != "blue"][["s", "n"]])
    same(df[df.x.notnull()].compute(), e[e.x.notnull()])
    assert len(df[df.k == 3]) == int((e.k == 3).sum())
    # A column compared as pandas compares it: a float column with an int, an int with a float.
    same(df[df.x >= 5].compute(), e[e.x >= 5])
    same(df[df.k < 2.5].compute(), e[e.k < 2.5])


def test_assign_with_arithmetic(df: rd.DataFrame, expected: pd.DataFrame):
    e = expected
    got = df.assign(y=df.x * 2 + df.n, z=-df.n, w=df.n / 4, v=1 - df["k"], one=1, n=df.n * 3).compute()
    want = e.assign(y=e.x * 2 + e.n, z=-e.n, w=e.n / 4, v=1 - e["k"], one=1, n=e.n * 3)
    same(got, want)
    # A computed column filters and is selected like any other.
    y = df.assign(y=df.n * df.k - 7)
    ey = e.assign(y=e.n * e.k - 7)
    same(y[y.y > 0][["y", "s"]].compute(), ey[ey.y > 0][["y", "s"]])
    # A computed Series computes as pandas' Series.
    pd.testing.assert_series_equal((df.x / 2 + df.k).compute(), e.x / 2 + e.k)
    pd.testing.assert_series_equal(df.n.compute(), e.n)


def test_groupby_aggregations(df: rd.DataFrame, expected: pd.DataFrame):
    e = expected
    g, eg = df.groupby("k"), e.groupby("k")
    num = ["x", "n"]
    for how in ("mean", "sum", "min", "max"):
        pd.testing.assert_frame_equal(getattr(g[num], how)().compute(), getattr(eg[num], how)())
    pd.testing.assert_frame_equal(g.count().compute(), eg.count())
    pd.testing.assert_series_equal(g.x.mean().compute(), eg.x.mean())
    pd.testing.assert_series_equal(g["n"].max().compute(), eg["n"].max())
    pd.testing.assert_series_equal(g.size().compute(), eg.size())
    pd.testing.assert_frame_equal(g.agg({"x": "mean", "n": "sum"}).compute(), eg.agg({"x": "mean", "n": "sum"}))
    pd.testing.assert_frame_equal(g.agg({"x": ["mean", "max"], "n": "min"}).compute(), eg.agg({"x": ["mean", "max"], "n": "min"}))
    pd.testing.assert_frame_equal(g[num].agg(["sum", "count"]).compute(), eg[num].agg(["sum", "count"]))
    two = df.groupby(["s", "k"]).x.sum().compute()
    pd.testing.assert_series_equal(two, e.groupby(["s", "k"]).x.sum())
    # After a filter and an assign, in a small tree of combines.
    f = df[df.x > -50].assign(y=df.x * df.k)
    ef = e[e.x > -50].assign(y=e.x * e.k)
    got = f.groupby("s", split_every=2).agg({"y": "mean", "n": "count"}).compute()
    pd.testing.assert_frame_equal(got, ef.groupby("s").agg({"y": "mean", "n": "count"}))


def test_head(df: rd.DataFrame, expected: pd.DataFrame, csvs: Path):
    pd.testing.assert_frame_equal(df.head(7), expected.head(7))
    # More rows than the first partition holds: partitions are read in order until there are.
    first = rd.read_csv(str(csvs / "data-0.csv"), blocksize=BLOCKSIZE)
    assert first.npartitions > 1
    pd.testing.assert_frame_equal(df.head(250), expected.head(250))
    e = expected
    pd.testing.assert_frame_equal(df[df.k == 1][["n"]].head(3), e[e.k == 1][["n"]].head(3).reset_index(drop=True))
    pd.testing.assert_series_equal(df.x.head(4), e.x.head(4))


def test_to_csv_and_to_parquet_write_a_file_per_partition(df: rd.DataFrame, expected: pd.DataFrame, tmp_path: Path):
    paths = df.to_csv(tmp_path / "csv" / "name-*.csv")
    assert paths == [str(tmp_path / "csv" / f"name-{i}.csv") for i in range(df.npartitions)]
    back = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    pd.testing.assert_frame_equal(back, expected)
    parts = df.to_csv(tmp_path / "dir")
    assert [Path(p).name for p in parts] == [f"{i}.part" for i in range(df.npartitions)]

    df[df.k != 0].to_parquet(tmp_path / "pq")
    names = sorted(os.listdir(tmp_path / "pq"), key=lambda n: int(n.split(".")[1]))
    assert names == [f"part.{i}.parquet" for i in range(df.npartitions)]
    e = expected
    want = e[e.k != 0].reset_index(drop=True)
    got = pd.concat([pd.read_parquet(tmp_path / "pq" / n) for n in names], ignore_index=True)
    pd.testing.assert_frame_equal(got, want)
    # rask reads what it wrote, a directory or a glob, and a file pandas wrote.
    same(rd.read_parquet(tmp_path / "pq").compute(), want)
    same(rd.read_parquet(str(tmp_path / "pq" / "*.parquet"), columns=["n", "s"]).compute(), want[["n", "s"]])
    e.to_parquet(tmp_path / "pandas.parquet", index=False)
    pq = rd.read_parquet(tmp_path / "pandas.parquet")
    same(pq.groupby("s").n.sum().compute().reset_index(), e.groupby("s").n.sum().reset_index())
    # A groupby's result is written with its keys as columns.
    out = df.groupby("k").agg({"x": "mean"}).to_csv(tmp_path / "means-*.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out[0]), e.groupby("k").x.mean().reset_index())


def test_missing_columns_are_named(df: rd.DataFrame):
    with pytest.raises(KeyError, match="no column 'nope' \\(columns: k, s, x, n\\)"):
        df["nope"]
    with pytest.raises(KeyError, match="nope"):
        df[["x", "nope"]]
    with pytest.raises(KeyError, match="nope"):
        df.groupby("nope")
    with pytest.raises(AttributeError, match="nope"):
        df.nope
    with pytest.raises(KeyError, match='no column "k"'):
        df[["x"]].assign(y=df.k * 2)
    with pytest.raises(KeyError, match='no column "n"'):
        df[["x"]][df.n > 1]


def test_bad_values_and_types_are_named(df: rd.DataFrame, csvs: Path):
    with pytest.raises(ValueError, match='cannot compute with column "s" of type string'):
        df.assign(y=df.s * 2)
    with pytest.raises(ValueError, match='cannot take the mean of column "s" of type string'):
        df.groupby("k").mean()
    with pytest.raises(ValueError, match='compares column "s" of type string'):
        df[df.s > 3]
    with pytest.raises(TypeError, match="assign it to a column first"):
        df[(df.x + 1) > 3]
    with pytest.raises(ValueError, match="unknown aggregation 'median'"):
        df.groupby("k").x.agg("median")
    with pytest.raises(TypeError, match="ambiguous"):
        bool(df.x > 1)
    with pytest.raises(TypeError, match="usecols"):
        rd.read_csv(str(csvs / "data-0.csv"), usecols=["x"])
    with pytest.raises(ValueError, match="bad blocksize"):
        rd.read_csv(str(csvs / "data-0.csv"), blocksize="lots")


def test_a_corrupt_csv_fails_naming_the_file_line_and_column(tmp_path: Path, client):
    bad = tmp_path / "bad.csv"
    lines = ["k,x"] + [f"{i},{i}.5" for i in range(50)] + ["7,n/a"] + [f"{i},1.0" for i in range(5)]
    bad.write_text("\n".join(lines) + "\n")
    df = rd.read_csv(str(bad), dtype={"x": "float64"})
    with pytest.raises(TaskError, match=rf'{bad}: line 52 .*column "x": "n/a" is not a float64'):
        df.compute()
    with pytest.raises(TaskError, match=str(bad)):
        df.groupby("k").x.sum().compute()


def test_unreadable_paths_are_named(tmp_path: Path, client):
    missing = str(tmp_path / "none-*.csv")
    with pytest.raises(FileNotFoundError, match="no file matches"):
        rd.read_csv(missing)
    with pytest.raises(FileNotFoundError, match="none"):
        rd.read_parquet(tmp_path / "none.parquet")
    notpq = tmp_path / "text.parquet"
    notpq.write_text("k,x\n1,2\n")
    with pytest.raises(ValueError, match=str(notpq)):
        rd.read_parquet(notpq)
    locked = tmp_path / "locked.csv"
    locked.write_text("k\n1\n")
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            # root reads any file: a directory where a file is expected fails alike.
            target = tmp_path / "adir.csv"
            target.mkdir()
        else:
            target = locked
        with pytest.raises(OSError, match=str(target)):
            rd.read_csv(str(target))
    finally:
        locked.chmod(0o644)


def test_importing_without_pyarrow_says_what_to_install():
    code = "import sys; sys.modules['pyarrow'] = None; import rask.dataframe"
    p = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "ImportError: rask.dataframe needs pandas and pyarrow (pyarrow is not installed): pip install 'rask[dataframe]'" in p.stderr, p.stderr


# --- parity: one body, dask.dataframe and rask.dataframe ---


@pytest.fixture(params=["dask", "rask"])
def dd(request: pytest.FixtureRequest) -> Iterator[ModuleType]:
    if request.param == "dask":
        # The venv pins dask (scripts/test): its absence is a failure, not a skip.
        import dask
        import dask.dataframe

        with dask.config.set(scheduler="sync"):
            yield dask.dataframe
    else:
        request.getfixturevalue("client")
        yield rd


def test_parity_read_csv_filter_groupby_mean(dd: ModuleType, csvs: Path, expected: pd.DataFrame):
    df = dd.read_csv(str(csvs / "data-*.csv"), blocksize=BLOCKSIZE)
    got = df[df.x > 0].groupby("k").x.mean().compute()
    e = expected
    pd.testing.assert_series_equal(got.sort_index(), e[e.x > 0].groupby("k").x.mean())
    both = df[(df.k >= 1) & (df.n > 0)].groupby("s").agg({"x": "mean", "n": "max"}).compute()
    pd.testing.assert_frame_equal(both.sort_index(), e[(e.k >= 1) & (e.n > 0)].groupby("s").agg({"x": "mean", "n": "max"}),
        # Dask's strings are pyarrow-backed (`string`, NA for missing), pandas' are `str`.
        check_index_type=False)


def test_parity_len(dd: ModuleType, csvs: Path):
    df = dd.read_csv(str(csvs / "data-*.csv"), blocksize=BLOCKSIZE)
    assert len(df) == FILES * ROWS_PER_FILE
    assert len(df[df.k == 2]) == sum(1 for i in range(FILES * ROWS_PER_FILE) if i * 7 % 5 == 2)
    assert list(df.columns) == ["k", "s", "x", "n"]
