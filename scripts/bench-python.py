#!/usr/bin/env python3
"""Benchmarks of the `rask` Python package beside Dask and rask-bench, in one run; one JSON line
per figure on stdout (and in --out).

    scripts/bench-python.py --rask-bin target/release/rask --rask-bench target/release/rask-bench \
        --peer-python /tmp/peer-bench/venv/bin/python --csv /tmp/peer-bench/data/taxi_5000000_seed42.csv

Run it with a Python that has the `rask` wheel to measure (a release one: `maturin build
--release`), numpy, pandas and pyarrow. Workloads, each on 2 worker processes x 1 thread:

- `python-map`: `client.map(inc, range(10_000))` + gather with a Python `inc`, through
  `rask.distributed` (LocalCluster) and through Dask's LocalCluster (the peer venv); the goal is
  rask >= 20x Dask's tasks/s;
- `array-mean`: the seed's `random((800,)*3, chunks=200).mean()` through `rask.array`, beside
  `rask-bench array-mean` (the engine's own client) in the same run;
- `dataframe`: the taxi CSV `read_csv(blocksize="64MB")`, `len`, the mean of total_amount and
  trip_distance by payment_type through `rask.dataframe`, beside `rask-bench dataframe`.
The goal for the last two is to be within 10% of rask-bench's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

N_MAP = 10_000


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def inc(x):
    return x + 1


def emit(line: dict, out) -> None:
    text = json.dumps(line)
    print(text, flush=True)
    if out:
        out.write(text + "\n")
        out.flush()


def rask_python(args, out) -> None:
    os.environ["RASK_BIN"] = str(Path(args.rask_bin).resolve())
    # The workers run the same rask package as this client: pickled calls refer to its modules.
    os.environ["RASK_PYTHON"] = sys.executable
    import cloudpickle
    import numpy as np

    import rask.array as da
    import rask.dataframe as dd
    from rask.distributed import Client, LocalCluster

    # `inc` is defined in this script (__main__): cloudpickle sends it by value, as a notebook's.
    with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
        # Each worker starts its Python process at its first call: before measuring.
        client.gather(client.map(inc, range(16)))
        rates, totals = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            futures = client.map(inc, range(N_MAP))
            values = client.gather(futures)
            secs = time.perf_counter() - t0
            del futures
            if sum(values) != N_MAP * (N_MAP + 1) // 2:
                raise SystemExit(f"python-map: wrong sum {sum(values)}")
            rates.append(N_MAP / secs)
            totals.append(secs)
            time.sleep(0.5)  # the scheduler forgets the released keys
        emit({"bench": "py-python-map", "api": "rask.distributed", "cluster": "LocalCluster(n_workers=2, threads_per_worker=1)",
              "tasks": N_MAP, "reps": args.reps, "tasks_per_s": stats(rates), "total_s": stats(totals),
              "cloudpickle": cloudpickle.__version__}, out)

        walls, means = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            m = da.random.random((800, 800, 800), chunks=(200, 200, 200)).mean().compute()
            walls.append(time.perf_counter() - t0)
            means.append(float(m))
            if not abs(m - 0.5) < 1e-3:
                raise SystemExit(f"array-mean: implausible mean {m}")
        emit({"bench": "py-array-mean", "api": "rask.array", "shape": [800, 800, 800], "chunks": [200, 200, 200], "reps": args.reps,
              "wall_s": stats(walls), "gb_per_s": stats([800**3 * 8 / 1e9 / w for w in walls]), "results": means}, out)

        if args.csv:
            read, lens, groups, totals = [], [], [], []
            result = None
            for _ in range(args.reps):
                t0 = time.perf_counter()
                df = dd.read_csv(args.csv, blocksize="64MB")
                t1 = time.perf_counter()
                rows = len(df)
                t2 = time.perf_counter()
                g = df.groupby("payment_type")[["total_amount", "trip_distance"]].mean().compute()
                t3 = time.perf_counter()
                read.append(t1 - t0), lens.append(t2 - t1), groups.append(t3 - t2), totals.append(t3 - t0)
                result = {str(k): [round(v.total_amount, 6), round(v.trip_distance, 6)] for k, v in g.iterrows()}
            emit({"bench": "py-dataframe", "api": "rask.dataframe", "csv": args.csv, "blocksize": "64MB", "npartitions": df.npartitions,
                  "rows": rows, "reps": args.reps, "read_csv_call_s": stats(read), "len_s": stats(lens), "groupby_s": stats(groups),
                  "total_s": stats(totals), "result": result}, out)


DASK_MAP = r"""
import json, statistics, sys, time
from dask.distributed import Client, LocalCluster
import dask
N, reps = int(sys.argv[1]), int(sys.argv[2])
def inc(x):
    return x + 1
if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        client.gather(client.map(inc, range(16), pure=False))
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fs = client.map(inc, range(N), pure=False)
            values = client.gather(fs)
            secs = time.perf_counter() - t0
            del fs
            assert sum(values) == N * (N + 1) // 2
            rates.append(N / secs)
            time.sleep(0.5)
    print(json.dumps({"bench": "py-python-map-dask", "api": "dask.distributed", "dask": dask.__version__,
                      "cluster": "LocalCluster(n_workers=2, threads_per_worker=1, processes=True)", "tasks": N, "reps": reps,
                      "tasks_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": rates}}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rask-bin", required=True)
    p.add_argument("--rask-bench", required=True)
    p.add_argument("--peer-python", help="a Python with Dask (the peer venv); without it Dask is not run")
    p.add_argument("--csv", help="the taxi CSV (gen_taxi_csv.py 5000000 42)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--wheel", help="the wheel measured: its size goes into the meta line")
    p.add_argument("--wheel-build-s", type=float, help="how long `maturin build --release` took")
    p.add_argument("--out", help="append the JSON lines to this file too")
    args = p.parse_args()
    out = open(args.out, "a") if args.out else None
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent).stdout.strip()
    import rask

    meta = {"bench": "meta", "script": "scripts/bench-python.py", "date": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()), "commit": commit,
            "rask_package": rask.__file__, "python": platform.python_version(), "nproc": os.cpu_count(), "cpu": cpu,
            "kernel": platform.release(), "loadavg_at_start": os.getloadavg()}
    if args.wheel:
        meta["wheel"] = os.path.basename(args.wheel)
        meta["wheel_bytes"] = os.path.getsize(args.wheel)
    if args.wheel_build_s is not None:
        meta["wheel_build_s"] = args.wheel_build_s
    emit(meta, out)

    rask_python(args, out)

    workloads = ["array-mean", "python-map"] + (["dataframe"] if args.csv else [])
    cmd = [args.rask_bench, *workloads, "--reps", str(args.reps)] + (["--csv", args.csv] if args.csv else [])
    env = dict(os.environ, RASK_PYTHON=os.environ.get("RASK_PYTHON", sys.executable))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            emit(json.loads(line), out)

    if args.peer_python:
        done = subprocess.run([args.peer_python, "-c", DASK_MAP, str(N_MAP), str(args.reps)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"Dask's map failed:\n{done.stderr[-3000:]}")
        emit(json.loads(done.stdout.strip().splitlines()[-1]), out)
    emit({"bench": "meta-end", "loadavg_at_end": os.getloadavg()}, out)


if __name__ == "__main__":
    main()
