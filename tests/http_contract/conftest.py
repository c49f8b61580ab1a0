"""Fixtures: a Dask scheduler and rask's, each with a worker named w0, and fresh pairs for tests
that change their cluster. See clusters.py for how the processes are started and stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from .clusters import STARTERS, Cluster


@pytest.fixture(scope="session")
def cluster_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Cluster]]:
    """Starts a scheduler of a kind with workers of the given names, healthy and registered; every
    cluster started is stopped at the end of the session at the latest."""
    started: list[Cluster] = []

    def start(kind: str, workers: tuple[str, ...] = ("w0",)) -> Cluster:
        cluster = STARTERS[kind](tmp_path_factory.mktemp(kind))
        started.append(cluster)
        cluster.wait_for_health()
        for name in workers:
            cluster.start_worker(name)
        got = cluster.workers()
        if sorted(got) != sorted(workers):
            cluster.fail(f"expected workers {sorted(workers)}, the scheduler lists {got}")
        return cluster

    yield start
    for cluster in started:
        cluster.stop()


@pytest.fixture(scope="session")
def dask_cluster(cluster_factory: Callable[..., Cluster]) -> Iterator[Cluster]:
    """Dask's scheduler with one worker, w0, for the session's read-only tests."""
    cluster = cluster_factory("dask")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def rask_cluster(cluster_factory: Callable[..., Cluster]) -> Iterator[Cluster]:
    """rask's scheduler with one worker, w0, for the session's read-only tests."""
    cluster = cluster_factory("rask")
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_clusters(cluster_factory: Callable[..., Cluster]) -> Iterator[Callable[..., tuple[Cluster, Cluster]]]:
    """(rask, Dask) clusters of their own for one test that changes them; stopped after it."""
    mine: list[Cluster] = []

    def start(workers: tuple[str, ...]) -> tuple[Cluster, Cluster]:
        pair = (cluster_factory("rask", workers), cluster_factory("dask", workers))
        mine.extend(pair)
        return pair

    yield start
    for cluster in mine:
        cluster.stop()
