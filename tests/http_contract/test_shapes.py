"""The comparison helpers themselves, so the contract tests cannot pass by comparing nothing."""

from __future__ import annotations

import pytest

from .shapes import parse_metrics, shape_differences


def test_same_shapes_agree() -> None:
    a = {"num_workers": 2, "workers": [{"name": "a", "address": "tcp://x:1"}]}
    b = {"num_workers": 1, "workers": [{"name": "b", "address": "tcp://y:2"}, {"name": "c", "address": "z"}]}
    assert shape_differences(a, b) == []
    assert shape_differences({"workers": []}, b | {"workers": [1]}, subset=True) == []


def test_differences_name_their_path() -> None:
    rask = {"workers": [{"name": 0, "address": "a"}], "extra": True}
    dask = {"workers": [{"name": "w0", "address": "a", "port": 1}]}
    assert shape_differences(rask, dask) == [
        "$.extra: only rask has it (True)",
        "$.workers[0].port: only Dask has it (1)",
        "$.workers[0].name: rask has integer 0, Dask has string 'w0'",
    ]
    assert shape_differences(rask, dask, subset=True) == [
        "$.extra: only rask has it (True)",
        "$.workers[0].name: rask has integer 0, Dask has string 'w0'",
    ]


def test_integers_numbers_and_nulls_differ_unless_allowed() -> None:
    assert shape_differences({"n": 1.0}, {"n": 1}) == ["$.n: rask has number 1.0, Dask has integer 1"]
    assert shape_differences({"t": None}, {"t": 1.5}) != []
    assert shape_differences({"t": None}, {"t": 1.5}, nullable=frozenset({"$.t"})) == []
    assert shape_differences({"t": 1.5}, {"t": None}, nullable=frozenset({"$.t"})) == []
    assert shape_differences({"t": "x"}, {"t": 1.5}, nullable=frozenset({"$.t"})) != []


def test_metrics_of_both_text_formats() -> None:
    prometheus_004 = """# HELP dask_scheduler_tasks_forgotten_total Forgotten
# TYPE dask_scheduler_tasks_forgotten_total counter
dask_scheduler_tasks_forgotten_total 0.0
# HELP dask_scheduler_workers Workers
# TYPE dask_scheduler_workers gauge
dask_scheduler_workers{state="idle"} 1.0
dask_scheduler_workers{state="paused"} 0.0
"""
    openmetrics = """# HELP dask_scheduler_tasks_forgotten Forgotten.
# TYPE dask_scheduler_tasks_forgotten counter
dask_scheduler_tasks_forgotten_total 0
# TYPE dask_scheduler_tasks_compute_seconds counter
# UNIT dask_scheduler_tasks_compute_seconds seconds
dask_scheduler_tasks_compute_seconds_total{task_prefix_name="a\\"b,c=\\"d"} 1.5
# EOF
"""
    a, b = parse_metrics(prometheus_004), parse_metrics(openmetrics)
    assert sorted(a) == ["dask_scheduler_tasks_forgotten_total", "dask_scheduler_workers"]
    assert a["dask_scheduler_workers"].label_values == {"state": {"idle", "paused"}}
    assert a["dask_scheduler_tasks_forgotten_total"].kind == "counter"
    assert b["dask_scheduler_tasks_forgotten_total"].kind == "counter"
    assert b["dask_scheduler_tasks_forgotten_total"].samples == 1
    assert b["dask_scheduler_tasks_compute_seconds_total"].label_names == {"task_prefix_name"}
    assert b["dask_scheduler_tasks_compute_seconds_total"].samples == 1


def test_a_gauge_and_a_counter_differing_by_total_stay_apart() -> None:
    # As Dask's worker serves them (text format 0.0.4).
    text = """# TYPE dask_worker_transfer_incoming_count gauge
dask_worker_transfer_incoming_count 2.0
# TYPE dask_worker_transfer_incoming_count_total counter
dask_worker_transfer_incoming_count_total 7.0
"""
    families = parse_metrics(text)
    assert families["dask_worker_transfer_incoming_count"].kind == "gauge"
    assert families["dask_worker_transfer_incoming_count"].samples == 1
    assert families["dask_worker_transfer_incoming_count_total"].kind == "counter"
    assert families["dask_worker_transfer_incoming_count_total"].samples == 1


def test_garbled_metrics_fail_loudly() -> None:
    with pytest.raises(ValueError, match="no # TYPE"):
        parse_metrics("undeclared 1\n")
    with pytest.raises(ValueError, match="not a metric sample"):
        parse_metrics("<html>oops</html>\n")
