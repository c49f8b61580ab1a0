#!/usr/bin/env python3
"""Dask's `client.map(inc)` + gather at rask-bench `scale`'s sizes, for scripts/bench's table.

  $PEER_VENV/bin/python scripts/peer-map-scale.py 100000 [--reps 1]

The same cluster as the peer scripts' bench_e (shared/peer-bench/bench_e_futures.py):
LocalCluster(n_workers=2, threads_per_worker=1, processes=True), `map(inc, range(N), pure=False)`
after one warm-up task; every result is checked. One JSON line, `"bench": "dask_map_scale"`.
At Dask's ~600 tasks/s, 100,000 tasks take about three minutes per repetition.
"""
import argparse
import json
import statistics
import time


def inc(x):
    return x + 1


def stats(values):
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "runs": [round(v, 6) for v in vals]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tasks", type=int)
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    n = args.tasks

    import dask
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        client.wait_for_workers(2)
        client.submit(inc, 0, pure=False).result()  # warm up the function's pickling path
        rates, totals = [], []
        for _ in range(max(args.reps, 1)):
            t0 = time.perf_counter()
            futures = client.map(inc, range(n), pure=False)
            values = client.gather(futures)
            total = time.perf_counter() - t0
            bad = next((i for i, v in enumerate(values) if v != i + 1), None)
            if bad is not None:
                raise SystemExit(f"wrong result at {bad}: {values[bad]!r}, expected {bad + 1}")
            rates.append(n / total)
            totals.append(total)
            del futures, values
            time.sleep(0.5)
    print(json.dumps({
        "bench": "dask_map_scale",
        "tasks": n,
        "reps": len(rates),
        "dask": dask.__version__,
        "cluster": "LocalCluster(n_workers=2, threads_per_worker=1, processes=True)",
        "map_tasks_per_s": stats(rates),
        "map_total_s": stats(totals),
    }), flush=True)


if __name__ == "__main__":
    main()
