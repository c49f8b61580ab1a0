"""rask's scheduler and workers serve Dask's Prometheus families: names, types and label keys.

Grafana dashboards built for Dask read these names. Each test starts a real Dask cluster and
rask's alike (workers w0 and w1 with one thread each, dashboards on), has both compute the same
small array mean, and compares what their /metrics serve. The tables below are what Dask 2026.8
serves; the tests check Dask against them too, so a Dask that changed would fail here first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from .clusters import STARTERS, Cluster, Process, _rask_bin, free_port, run_array_mean
from .shapes import Family, parse_metrics

# Every dask_scheduler_* family of a Dask 2026.8 scheduler (by the name Prometheus stores):
# its type and label keys.
SCHEDULER_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "dask_scheduler_clients": ("gauge", frozenset()),
    "dask_scheduler_client_connections_added_total": ("counter", frozenset()),
    "dask_scheduler_client_connections_removed_total": ("counter", frozenset()),
    "dask_scheduler_desired_workers": ("gauge", frozenset()),
    "dask_scheduler_workers": ("gauge", frozenset({"state"})),
    "dask_scheduler_workers_added_total": ("counter", frozenset()),
    "dask_scheduler_workers_removed_total": ("counter", frozenset()),
    "dask_scheduler_gc_collection_seconds_total": ("counter", frozenset()),
    "dask_scheduler_last_time_total": ("counter", frozenset()),
    "dask_scheduler_tasks_suspicious_total": ("counter", frozenset({"task_prefix_name"})),
    "dask_scheduler_tasks_forgotten_total": ("counter", frozenset()),
    "dask_scheduler_tasks": ("gauge", frozenset({"state"})),
    "dask_scheduler_task_groups": ("gauge", frozenset()),
    "dask_scheduler_tasks_compute_seconds_total": ("counter", frozenset({"task_prefix_name"})),
    "dask_scheduler_tasks_transfer_seconds_total": ("counter", frozenset({"task_prefix_name"})),
    "dask_scheduler_tasks_output_bytes": ("gauge", frozenset({"task_prefix_name"})),
    "dask_scheduler_prefix_state_totals_total": ("counter", frozenset({"task_prefix_name", "state"})),
    "dask_scheduler_tick_duration_maximum_seconds": ("gauge", frozenset()),
    "dask_scheduler_tick_count_total": ("counter", frozenset()),
}

# Every dask_worker_* family a Dask 2026.8 worker serves by default (without `crick`, and without
# GIL monitoring, which are optional in Dask too).
WORKER_FAMILIES: dict[str, tuple[str, frozenset[str]]] = {
    "dask_worker_tasks": ("gauge", frozenset({"state"})),
    "dask_worker_gc_collection_seconds_total": ("counter", frozenset()),
    "dask_worker_threads": ("gauge", frozenset()),
    "dask_worker_latency_seconds": ("gauge", frozenset()),
    "dask_worker_memory_bytes": ("gauge", frozenset({"type"})),
    "dask_worker_transfer_incoming_bytes": ("gauge", frozenset()),
    "dask_worker_transfer_incoming_count": ("gauge", frozenset()),
    "dask_worker_transfer_incoming_count_total": ("counter", frozenset()),
    "dask_worker_transfer_outgoing_bytes": ("gauge", frozenset()),
    "dask_worker_transfer_outgoing_count": ("gauge", frozenset()),
    "dask_worker_transfer_outgoing_bytes_total": ("counter", frozenset()),
    "dask_worker_transfer_outgoing_count_total": ("counter", frozenset()),
    "dask_worker_spill_bytes_total": ("counter", frozenset({"activity"})),
    "dask_worker_spill_count_total": ("counter", frozenset({"activity"})),
    "dask_worker_spill_time_seconds_total": ("counter", frozenset({"activity"})),
    "dask_worker_tick_duration_maximum_seconds": ("gauge", frozenset()),
    "dask_worker_tick_count_total": ("counter", frozenset()),
}
# Dask's worker families that need an optional package or setting, absent from both.
OPTIONAL_WORKER_FAMILIES = frozenset({
    "dask_worker_gil_contention_seconds_total",
    "dask_worker_tick_duration_median_seconds",
    "dask_worker_task_duration_median_seconds",
    "dask_worker_transfer_bandwidth_median_bytes",
})

WORKERS = ("w0", "w1")


def scrape(cluster: Cluster, worker: str | None = None) -> tuple[dict[str, Family], str]:
    """The families of a scheduler's (or a worker's) /metrics, and the text."""
    r = cluster.get("/metrics") if worker is None else cluster.get_worker(worker, "/metrics")
    where = f"{cluster.kind} {'scheduler' if worker is None else 'worker ' + worker}"
    assert r.status == 200, f"{where}: /metrics answered {r.status}: {r.text()[:500]}"
    assert r.media_type in ("text/plain", "application/openmetrics-text"), f"{where}: {r.content_type}"
    try:
        return parse_metrics(r.text()), r.text()
    except ValueError as e:
        pytest.fail(f"{where}: /metrics is not Prometheus text: {e}\n{r.text()[:3000]}")
        raise


def values(text: str, name: str) -> dict[str, float]:
    """The samples named `name` in a metrics text: their label text (`` for none) → value."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            found[head[len(name) :].strip("{}")] = float(value)
    return found


def value(text: str, name: str) -> float:
    """The one sample named `name`, without labels."""
    found = values(text, name)
    assert "" in found, f"no unlabelled sample {name} in\n{text}"
    return found[""]


def check_against_table(
    where: str,
    families: dict[str, Family],
    prefix: str,
    table: dict[str, tuple[str, frozenset[str]]],
    optional: frozenset[str] = frozenset(),
    need_samples: bool = True,
) -> None:
    """The families named `prefix*` are exactly the table's, with its types and label keys."""
    served = {name for name in families if name.startswith(prefix)} - optional
    assert served == set(table), (
        f"{where}: missing {sorted(set(table) - served)}, not Dask's {sorted(served - set(table))}"
    )
    for name, (kind, label_keys) in table.items():
        family = families[name]
        assert family.kind == kind, f"{where}: {name} is a {family.kind}, Dask's a {kind}"
        if need_samples:
            assert family.samples > 0, f"{where}: {name} has no samples"
        if family.samples > 0:
            assert family.label_names == label_keys, (
                f"{where}: {name} has label keys {sorted(family.label_names)}, Dask's {sorted(label_keys)}"
            )


@pytest.fixture(scope="module")
def worked(cluster_factory: Callable[..., Cluster]) -> Iterator[dict[str, Cluster]]:
    """A rask and a Dask cluster with workers w0 and w1, each after computing the array mean."""
    pair = {kind: cluster_factory(kind, WORKERS) for kind in ("rask", "dask")}
    means = {kind: run_array_mean(cluster) for kind, cluster in pair.items()}
    for kind, mean in means.items():
        assert 0.45 < mean < 0.55, f"{kind}: the mean of uniform [0, 1) values is {mean}"
    yield pair
    for cluster in pair.values():
        cluster.stop()


def test_scheduler_serves_every_dask_scheduler_family_with_dasks_types_and_label_keys(worked) -> None:
    dask, _ = scrape(worked["dask"])
    rask, _ = scrape(worked["rask"])
    # Dask's families where it has no samples cannot show their label keys; the table does.
    check_against_table("Dask's scheduler", dask, "dask_scheduler_", SCHEDULER_FAMILIES, need_samples=False)
    check_against_table("rask's scheduler", rask, "dask_scheduler_", SCHEDULER_FAMILIES)


def test_workers_serve_every_dask_worker_family_with_dasks_types_and_label_keys(worked) -> None:
    for name in WORKERS:
        dask, _ = scrape(worked["dask"], name)
        rask, _ = scrape(worked["rask"], name)
        check_against_table(
            f"Dask's worker {name}", dask, "dask_worker_", WORKER_FAMILIES, OPTIONAL_WORKER_FAMILIES, need_samples=False
        )
        check_against_table(f"rask's worker {name}", rask, "dask_worker_", WORKER_FAMILIES)


# Label values a dashboard may select on: Dask's possible values (its worker task states, the
# collector's `disk`; its spill activities; its scheduler task states with `forgotten`).
DASK_LABEL_VALUES: dict[tuple[str, str], frozenset[str]] = {
    ("dask_worker_memory_bytes", "type"): frozenset({"managed", "unmanaged", "spilled"}),
    ("dask_worker_tasks", "state"): frozenset({
        "constrained", "executing", "fetch", "flight", "long-running", "memory", "disk", "missing",
        "ready", "released", "waiting", "cancelled", "resumed", "error",
    }),
    ("dask_worker_spill_bytes_total", "activity"): frozenset({"memory-read", "disk-read", "disk-write"}),
    ("dask_worker_spill_count_total", "activity"): frozenset({"memory-read", "disk-read", "disk-write"}),
    ("dask_worker_spill_time_seconds_total", "activity"): frozenset({"pickle", "disk-write", "disk-read", "unpickle"}),
    ("dask_scheduler_prefix_state_totals_total", "state"): frozenset({
        "released", "waiting", "no-worker", "queued", "processing", "memory", "erred", "forgotten",
    }),
}  # fmt: skip


def test_label_values_are_dasks(worked) -> None:
    """Every label value rask serves is one Dask serves; the memory types are all three."""
    served = {"scheduler": scrape(worked["rask"])[0]}
    served.update({name: scrape(worked["rask"], name)[0] for name in WORKERS})
    dask_served = {"scheduler": scrape(worked["dask"])[0]}
    dask_served.update({name: scrape(worked["dask"], name)[0] for name in WORKERS})
    for (family, label), allowed in DASK_LABEL_VALUES.items():
        for where, families in served.items():
            if family not in families:
                continue
            values_ = families[family].label_values.get(label, set())
            assert values_ and values_ <= allowed, f"rask {where}: {family}{{{label}}} has {sorted(values_)}"
        for where, families in dask_served.items():
            values_ = families[family].label_values.get(label, set()) if family in families else set()
            assert values_ <= allowed, f"Dask {where}: {family}{{{label}}} has {sorted(values_)}, not in the table"
    for where, families in [*served.items(), *dask_served.items()]:
        if "dask_worker_memory_bytes" in families:
            assert families["dask_worker_memory_bytes"].label_values["type"] == {"managed", "unmanaged", "spilled"}


def test_worker_health_is_ok_as_text(worked) -> None:
    for cluster in worked.values():
        for name in WORKERS:
            r = cluster.get_worker(name, "/health")
            assert (r.status, r.media_type, r.text()) == (200, "text/plain", "ok"), (
                f"{cluster.kind} worker {name}: {r.status} {r.content_type} {r.text()[:200]!r}"
            )


def test_scheduler_connection_counters_match_dasks_after_one_client(worked) -> None:
    """Both saw two workers join and one client come and go (the array mean's)."""
    for kind, cluster in worked.items():
        _, text = scrape(cluster)
        got = {
            name: value(text, name)
            for name in (
                "dask_scheduler_workers_added_total",
                "dask_scheduler_workers_removed_total",
                "dask_scheduler_client_connections_added_total",
                "dask_scheduler_client_connections_removed_total",
                "dask_scheduler_clients",
                "dask_scheduler_task_groups",
            )
        }
        assert got == {
            "dask_scheduler_workers_added_total": 2,
            "dask_scheduler_workers_removed_total": 0,
            "dask_scheduler_client_connections_added_total": 1,
            "dask_scheduler_client_connections_removed_total": 1,
            "dask_scheduler_clients": 0,
            # Everything computed was forgotten with the client.
            "dask_scheduler_task_groups": 0,
        }, f"{kind}: {got}"
        gc = value(text, "dask_scheduler_gc_collection_seconds_total")
        # rask has no garbage collector; Python's may have run.
        assert gc == 0 if kind == "rask" else gc >= 0, f"{kind}: {gc}"


def test_scheduler_prefix_figures_account_for_every_task(worked) -> None:
    """rask: every task of each prefix went through memory and was forgotten, and its compute time
    counted; the array's chunks: 8 partial results, combined."""
    _, text = scrape(worked["rask"])
    totals = values(text, "dask_scheduler_prefix_state_totals_total")
    by_prefix: dict[str, dict[str, float]] = {}
    for labels, n in totals.items():
        parts = dict(part.split("=", 1) for part in labels.split(","))
        by_prefix.setdefault(parts["task_prefix_name"].strip('"'), {})[parts["state"].strip('"')] = n
    assert by_prefix, f"no prefix_state_totals in\n{text}"
    forgotten = 0.0
    for prefix, states in by_prefix.items():
        assert states.get("memory", 0) >= 1, f"{prefix}: {states}"
        assert states.get("forgotten") == states.get("memory"), f"{prefix}: {states}"
        forgotten += states["forgotten"]
    assert value(text, "dask_scheduler_tasks_forgotten_total") == forgotten
    # (100 / 50)³ chunks.
    assert by_prefix["array_partial"]["memory"] == 8, by_prefix
    compute = values(text, "dask_scheduler_tasks_compute_seconds_total")
    assert all(seconds > 0 for seconds in compute.values()), compute
    assert set(compute) == {f'task_prefix_name="{p}"' for p in by_prefix}
    output = values(text, "dask_scheduler_tasks_output_bytes")
    assert all(b == 0 for b in output.values()), f"nothing is held any more: {output}"


def test_ticks_and_clocks_move_between_scrapes(worked) -> None:
    for kind, cluster in worked.items():
        started = time.monotonic()
        _, before = scrape(cluster)
        worker_before = scrape(cluster, "w0")[1]
        time.sleep(0.5)
        _, after = scrape(cluster)
        worker_after = scrape(cluster, "w0")[1]
        elapsed = time.monotonic() - started
        for name, a, b in [
            ("dask_scheduler_tick_count_total", before, after),
            ("dask_worker_tick_count_total", worker_before, worker_after),
        ]:
            ticks = value(b, name) - value(a, name)
            # A tick every 20 ms at most: about 25 in the half second, fewer on a loaded machine.
            assert 5 <= ticks <= elapsed / 0.02 + 2, f"{kind}: {name} went up by {ticks} in {elapsed:.2f} s"
        clock = value(after, "dask_scheduler_last_time_total") - value(before, "dask_scheduler_last_time_total")
        assert 0.5 <= clock <= elapsed + 0.05, f"{kind}: last_time moved {clock} s in {elapsed:.2f} s"
        for text, name in [
            (after, "dask_scheduler_tick_duration_maximum_seconds"),
            (worker_after, "dask_worker_tick_duration_maximum_seconds"),
        ]:
            longest = value(text, name)
            assert 0 < longest <= elapsed, f"{kind}: {name} {longest}"


def test_rask_worker_figures_are_its_own(worked) -> None:
    rask = worked["rask"]
    reads = 0.0
    for name in WORKERS:
        _, text = scrape(rask, name)
        assert value(text, "dask_worker_threads") == 1
        assert 0 < value(text, "dask_worker_latency_seconds") < 1
        memory = values(text, "dask_worker_memory_bytes")
        assert memory['type="managed"'] + memory['type="unmanaged"'] > 1_000_000, f"{name}: {memory}"
        tasks = values(text, "dask_worker_tasks")
        assert all(n == 0 for n in tasks.values()), f"{name}: all done, nothing held: {tasks}"
        reads += values(text, "dask_worker_spill_count_total")['activity="memory-read"']
    # The combining tasks read the partial results from their workers' stores.
    assert reads >= 8, reads


def test_workers_removed_counts_a_retired_worker_as_dasks_does(fresh_clusters) -> None:
    rask_cluster, dask_cluster = fresh_clusters(("w0", "w1"))
    for cluster in (rask_cluster, dask_cluster):
        r = cluster.post_json("/api/v1/retire_workers", {"workers": [cluster.workers()["w1"]]})
        assert r.status == 200, f"{cluster.kind}: {r.status} {r.text()[:300]}"
        _, text = scrape(cluster)
        assert value(text, "dask_scheduler_workers_added_total") == 2, cluster.kind
        assert value(text, "dask_scheduler_workers_removed_total") == 1, cluster.kind


def test_no_dashboard_means_no_worker_port(tmp_path) -> None:
    """`--no-dashboard`, Dask's flag: the worker serves no /metrics (it still works)."""
    cluster = STARTERS["rask"](tmp_path)
    try:
        cluster.wait_for_health()
        port = free_port()
        argv = [
            str(_rask_bin()), "worker", cluster.scheduler_address, "--name", "quiet", "--nthreads", "1",
            "--listen-host", "127.0.0.1", "--no-nanny", "--local-directory", str(tmp_path),
            "--dashboard-address", f"127.0.0.1:{port}", "--no-dashboard",
        ]  # fmt: skip
        cluster.processes.append(Process("rask worker quiet", argv, tmp_path / "quiet.log"))
        cluster.wait_until("worker 'quiet' in /api/v1/get_workers", lambda: "quiet" in cluster.workers())
        cluster.worker_http["quiet"] = f"http://127.0.0.1:{port}"
        with pytest.raises(OSError):
            cluster.get_worker("quiet", "/health")
    finally:
        cluster.stop()
