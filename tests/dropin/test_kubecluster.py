"""dask-kubernetes' own Python client, KubeCluster, unchanged, against rask-operator: it creates a
DaskCluster of the real Dask image, waits for it, port-forwards to the scheduler through the API
server (kr8s over WebSocket), scales it, makes it adaptive, reads its logs and deletes it."""

from __future__ import annotations

import time

import dask.array as da
from dask.distributed import Client
from dask_kubernetes.operator import KubeCluster

from .platform import Platform

IMAGE = "ghcr.io/dask/dask:2026.8.0"


def group_replicas(p: Platform) -> int:
    return p.get("daskworkergroup", "demo-default").get("spec", {}).get("worker", {}).get("replicas", -1)


def test_kubecluster_computes_scales_adapts_logs_and_closes(platform: Platform):
    p = platform
    cluster = KubeCluster(
        name="demo",
        namespace="default",
        image=IMAGE,
        n_workers=2,
        # Outside the cluster: no DNS for its Service names, so a port-forward at once.
        port_forward_cluster_ip=True,
        resource_timeout=120,
        quiet=True,
    )
    try:
        with Client(cluster, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
            x = da.ones((2000, 2000), chunks=(500, 500))
            assert x.sum().compute() == 4_000_000

            cluster.scale(3)
            client.wait_for_workers(3, timeout=60)
            time.sleep(5)  # reconciles come and go: the size stays
            assert group_replicas(p) == 3
            assert len(client.scheduler_info()["workers"]) == 3

            cluster.adapt(minimum=1, maximum=3)
            p.wait("the idle cluster shrinks to 1 worker", lambda: len(client.scheduler_info()["workers"]) == 1, timeout=120)
            # A burst of 40 one-second tasks (a function the workers have: this module is not
            # importable there).
            futures = client.map(time.sleep, [1.0] * 40, pure=False)
            p.wait(
                "a burst scales the cluster up",
                lambda: len(client.scheduler_info()["workers"]) > 1,
                timeout=60,
                why=lambda: f"autoscaler: {p.get('daskautoscaler', 'demo').get('status')}; "
                f"tasks: {[f.status for f in futures[:3]]} {futures[0].exception() if futures[0].status == 'error' else ''}",
            )
            assert client.gather(futures) == [None] * 40
            p.wait("the cluster goes back to 1 worker", lambda: len(client.scheduler_info()["workers"]) == 1, timeout=120)
            assert (x + 1).sum().compute() == 8_000_000

            # get_logs lists the pods, then reads each one's log: a retired worker's pod still
            # terminating would be listed and then gone (404), as on a real API server. Wait for it.
            p.wait(
                "the retired workers' pods are gone",
                lambda: len(p.get("pods", selector="dask.org/cluster-name=demo,dask.org/component=worker").get("items", [])) == 1,
                timeout=60,
            )
            logs = cluster.get_logs()
            assert "demo-scheduler" in logs
            assert "Scheduler at:" in logs["demo-scheduler"]
            workers = [name for name in logs if name.startswith("demo-default-worker-")]
            assert workers, list(logs)
            assert any("Start worker at:" in logs[w] for w in workers)
    finally:
        cluster.close()
    p.wait(
        "nothing of demo is left",
        lambda: not p.get("pods", selector="dask.org/cluster-name=demo").get("items")
        and not p.get("daskworkergroups").get("items")
        and not p.get("daskautoscalers").get("items")
        and not p.get("services", "demo-scheduler")
        and not p.get("daskcluster", "demo"),
    )
