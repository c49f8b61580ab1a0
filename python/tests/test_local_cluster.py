"""LocalCluster: `rask scheduler` and `rask worker` processes started from Python (RASK_BIN)."""

from __future__ import annotations

import os
import time
import sys

import cloudpickle
import pytest

from rask.distributed import Client, LocalCluster, TaskError

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inc(x):
    return x + 1


def test_local_cluster_runs_python_functions_and_stops():
    with LocalCluster(n_workers=2, threads_per_worker=1, memory_limit="1GiB") as cluster:
        assert sorted(cluster.workers()) == ["local-0", "local-1"]
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        with Client(cluster) as client:
            assert client.gather(client.map(inc, range(10))) == list(range(1, 11))
            # The functions run in the workers' Python processes, not in this one.
            assert client.submit(os.getpid).result(60) != os.getpid()
        processes = [p.popen for p in cluster._processes]
        assert len(processes) == 3
    assert cluster.closed
    assert all(p.poll() is not None for p in processes)
    assert "closed" in repr(cluster)


def test_a_client_without_address_starts_and_stops_its_own_cluster():
    with Client(n_workers=1, threads_per_worker=1, memory_limit=None) as client:
        cluster = client.cluster
        assert cluster is not None and cluster.n_workers == 1
        assert client.submit(inc, 1).result(60) == 2
    assert cluster.closed


def test_a_cluster_passed_in_outlives_its_client():
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster:
        Client(cluster).close()
        assert not cluster.closed
        assert len(cluster.workers()) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_workers": 0}, "n_workers must be an int ≥ 1"),
        ({"threads_per_worker": "2"}, "threads_per_worker must be an int ≥ 1"),
        ({"memory_limit": -1}, "memory_limit must be ≥ 0"),
        ({"memory_limit": True}, "memory_limit must be bytes"),
        ({"memory_limit": ""}, "memory_limit must be bytes"),
    ],
)
def test_bad_arguments_are_refused_before_starting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LocalCluster(**kwargs)


def test_a_worker_that_cannot_start_fails_the_cluster_with_its_log():
    with pytest.raises(RuntimeError, match="exited while waiting for 1 workers") as info:
        LocalCluster(n_workers=1, threads_per_worker=1, memory_limit="lots")
    # The worker's own words are quoted.
    assert "lots" in str(info.value)


def test_the_rask_binary_is_found_or_the_error_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("RASK_BIN", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="RASK_BIN=.*nope is not an executable file"):
        LocalCluster(n_workers=1)
    monkeypatch.delenv("RASK_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no `rask` executable: set RASK_BIN"):
        LocalCluster(n_workers=1)


def test_workers_without_a_usable_python_fail_tasks_saying_so(monkeypatch, tmp_path):
    monkeypatch.setenv("RASK_PYTHON", str(tmp_path / "no-python"))
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        with pytest.raises(TaskError, match="no-python.* not found: give `rask worker --python PATH` or set RASK_PYTHON"):
            client.submit(inc, 1).result(60)


def test_what_users_functions_print_is_in_the_worker_logs(monkeypatch):
    # LocalCluster's own log level, not the one of the shell that runs the tests.
    monkeypatch.delenv("RUST_LOG", raising=False)
    with LocalCluster(n_workers=1, threads_per_worker=1) as cluster, Client(cluster) as client:
        assert client.submit(print, "hello from a task").result(60) is None
        log = cluster._processes[-1].log
        deadline = time.monotonic() + 10
        while "hello from a task" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
