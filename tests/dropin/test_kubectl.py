"""kubectl, as a dask-kubernetes user drives it, against kube-double and rask-operator: apply with
validation, get by short name, scale a worker group, logs of a real Dask scheduler, delete."""

from __future__ import annotations

from pathlib import Path

import yaml

from .platform import ROOT, Platform

EXAMPLES = ROOT / "examples"


def phase(p: Platform, kind: str, name: str, field: str = "phase") -> str | None:
    return p.get(kind, name).get("status", {}).get(field)


def running_pods(p: Platform, selector: str) -> list[str]:
    items = p.get("pods", selector=selector).get("items", [])
    return sorted(
        i["metadata"]["name"]
        for i in items
        if i.get("status", {}).get("phase") == "Running" and "deletionTimestamp" not in i["metadata"]
    )


def test_apply_get_scale_logs_delete_a_dask_cluster(platform: Platform, tmp_path: Path):
    p = platform
    manifest = str(EXAMPLES / "daskcluster.yaml")
    p.kubectl("apply", "-f", manifest)
    p.wait("foo is Running", lambda: phase(p, "daskcluster", "foo") == "Running")
    listed = p.kubectl("get", "dsk").stdout
    assert "foo" in listed, listed
    workers = "dask.org/cluster-name=foo,dask.org/component=worker"
    p.wait("2 Dask workers run", lambda: len(running_pods(p, workers)) == 2)

    # The worker group owns its size: the operator does not undo kubectl scale.
    p.kubectl("scale", "daskworkergroup", "foo-default", "--replicas", "3")
    p.wait("3 Dask workers run", lambda: len(running_pods(p, workers)) == 3)
    # A reconcile of the cluster (a change its workers' template does not carry: a change of its
    # metadata would roll them, as they inherit it).
    p.kubectl("patch", "dsk", "foo", "--type", "merge", "-p", '{"spec": {"idleTimeout": 3600}}')
    p.wait(
        "the cluster counts 3 ready workers",
        lambda: p.get("daskcluster", "foo").get("status", {}).get("readyWorkers") == 3,
    )
    assert p.get("daskworkergroup", "foo-default")["spec"]["worker"]["replicas"] == 3

    logs = p.kubectl("logs", "foo-scheduler").stdout
    assert "Scheduler at:" in logs, logs
    # A worker's pod runs as soon as its process starts; Python takes a moment to say so.
    worker = running_pods(p, workers)[0]
    p.wait("a worker logs its start", lambda: "Start worker at:" in p.kubectl("logs", worker).stdout)

    p.kubectl("delete", "-f", manifest)
    p.wait(
        "nothing of foo is left",
        lambda: not p.get("pods", selector="dask.org/cluster-name=foo").get("items")
        and not p.get("daskworkergroups").get("items")
        and not p.get("services", "foo-scheduler"),
    )


def test_apply_validates_on_the_server(platform: Platform, tmp_path: Path):
    doc = yaml.safe_load((EXAMPLES / "daskcluster.yaml").read_text())
    doc["metadata"]["name"] = "typo"
    doc["spec"]["worker"]["replicaz"] = 3
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(doc))
    r = platform.kubectl("apply", "-f", str(bad), check=False)
    assert r.returncode != 0
    assert 'unknown field "spec.worker.replicaz"' in r.stderr, r.stderr
    assert not platform.get("daskcluster", "typo")


def test_a_dask_job_with_the_dask_image_succeeds(platform: Platform):
    p = platform
    p.kubectl("apply", "-f", str(EXAMPLES / "daskjob.yaml"))
    p.wait(
        "simple-job is Successful",
        lambda: phase(p, "daskjob", "simple-job", "jobStatus") == "Successful",
        timeout=120,
    )
    out = p.kubectl("logs", "simple-job-runner").stdout
    assert out.strip().splitlines()[-1] == "3", out
    p.wait("the job's cluster is gone", lambda: not p.get("daskcluster", "simple-job"))
    p.kubectl("delete", "daskjob", "simple-job")


def test_a_cluster_of_rasks_image(platform: Platform):
    p = platform
    p.kubectl("apply", "-f", str(EXAMPLES / "rask-cluster.yaml"))
    p.wait(
        "rask is Running with 3 ready workers",
        lambda: (st := p.get("dsk", "rask").get("status", {})).get("phase") == "Running"
        and st.get("readyWorkers") == 3,
    )
    assert "rask" in p.kubectl("logs", "rask-scheduler").stdout.lower()
    p.kubectl("delete", "dsk", "rask")
    p.wait("rask's pods are gone", lambda: not p.get("pods", selector="dask.org/cluster-name=rask").get("items"))
