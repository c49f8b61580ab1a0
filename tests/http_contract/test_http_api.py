"""rask's scheduler HTTP API answers with the shapes a real Dask scheduler's does.

The operator and the autoscaler talk to any scheduler, rask's or Dask's, through this API (see
DESIGN.md, "The scheduler's HTTP API is the seam"). Each test asks both schedulers the same question
and compares the answers' shapes: keys and JSON types, recursively. Both clusters are set up alike
(a worker named w0 with one thread, on 127.0.0.1), so some values are checked too.
"""

from __future__ import annotations

import time

import pytest

from .clusters import Cluster, Response
from .shapes import parse_metrics, shape_differences

JSON = "application/json"

# What rask's docs promise of a retired worker's identity (worker/src/scheduler/http.rs), a subset
# of Dask's `WorkerState.identity()`.
IDENTITY_KEYS = {
    "type", "id", "host", "resources", "name", "nthreads", "memory_limit", "services", "nanny",
    "status",
}  # fmt: skip

# Metric families an autoscaler reads, which both schedulers must export.
REQUIRED_FAMILIES = [
    "dask_scheduler_workers",
    "dask_scheduler_tasks",
    "dask_scheduler_clients",
    "dask_scheduler_desired_workers",
]


def shown(cluster: Cluster, method: str, path: str, r: Response) -> str:
    return f"{cluster.kind}: {method} {path} → {r.status} {r.content_type!r} {r.text()[:1000]!r}"


def get_ok(cluster: Cluster, path: str, media_type: str = JSON) -> Response:
    r = cluster.get(path)
    assert r.status == 200, shown(cluster, "GET", path, r)
    assert r.media_type == media_type, shown(cluster, "GET", path, r)
    return r


def assert_same_shape(rask: object, dask: object, what: str, **options: object) -> None:
    problems = shape_differences(rask, dask, **options)  # type: ignore[arg-type]
    assert not problems, (
        f"{what}: rask's answer has another shape than Dask's:\n  "
        + "\n  ".join(problems)
        + f"\nrask: {rask!r}\nDask: {dask!r}"
    )


def test_health_is_ok_as_text(rask_cluster: Cluster, dask_cluster: Cluster) -> None:
    for cluster in (rask_cluster, dask_cluster):
        r = get_ok(cluster, "/health", media_type="text/plain")
        assert r.text() == "ok", shown(cluster, "GET", "/health", r)


def test_api_root_names_the_version(rask_cluster: Cluster, dask_cluster: Cluster) -> None:
    for cluster in (rask_cluster, dask_cluster):
        r = get_ok(cluster, "/api/v1", media_type="text/plain")
        assert r.text() == "API V1", shown(cluster, "GET", "/api/v1", r)


def test_adaptive_target(rask_cluster: Cluster, dask_cluster: Cluster) -> None:
    rask = get_ok(rask_cluster, "/api/v1/adaptive_target").json()
    dask = get_ok(dask_cluster, "/api/v1/adaptive_target").json()
    assert_same_shape(rask, dask, "GET /api/v1/adaptive_target")
    assert isinstance(rask, dict) and rask["workers"] >= 0, rask


def test_get_workers(rask_cluster: Cluster, dask_cluster: Cluster) -> None:
    rask = get_ok(rask_cluster, "/api/v1/get_workers").json()
    dask = get_ok(dask_cluster, "/api/v1/get_workers").json()
    assert_same_shape(rask, dask, "GET /api/v1/get_workers")
    for answer in (rask, dask):
        assert isinstance(answer, dict)
        assert answer["num_workers"] == 1 == len(answer["workers"]), answer
        assert answer["workers"][0]["name"] == "w0", answer
        assert answer["workers"][0]["address"].startswith("tcp://127.0.0.1:"), answer


def test_check_idle(rask_cluster: Cluster, dask_cluster: Cluster) -> None:
    rask = get_ok(rask_cluster, "/api/v1/check_idle").json()
    dask = get_ok(dask_cluster, "/api/v1/check_idle").json()
    # Dask answers null the first time it is asked after a change, a time after that.
    assert_same_shape(rask, dask, "GET /api/v1/check_idle", nullable=frozenset({"$.idle_since"}))
    now = time.time()
    for cluster, answer in ((rask_cluster, rask), (dask_cluster, dask)):
        assert isinstance(answer, dict)
        since = answer["idle_since"]
        if since is not None:
            # Seconds since the Unix epoch, since this session started.
            assert now - 3600 < since <= now + 5, f"{cluster.kind}: idle_since {since} is not a recent time"


def retire(cluster: Cluster, payload: object) -> dict[str, dict]:
    r = cluster.post_json("/api/v1/retire_workers", payload)
    what = shown(cluster, "POST", f"/api/v1/retire_workers {payload}", r)
    assert r.status == 200, what
    assert r.media_type == JSON, what
    answer = r.json()
    assert isinstance(answer, dict), what
    return answer


def check_identities(rask: dict[str, dict], dask: dict[str, dict], what: str) -> None:
    """rask's identity of a retired worker: the keys its docs promise, each also in Dask's
    identity with the same type; and the values of a worker named as in the test."""
    ((rask_address, rask_identity),) = rask.items()
    ((_, dask_identity),) = dask.items()
    missing = IDENTITY_KEYS - rask_identity.keys()
    assert not missing, f"{what}: rask's identity lacks {sorted(missing)}: {rask_identity}"
    assert_same_shape(rask_identity, dask_identity, what, subset=True)
    assert rask_identity["type"] == "Worker"
    assert rask_identity["host"] == "127.0.0.1"
    assert rask_identity["id"] == rask_identity["name"]
    assert rask_identity["nthreads"] == 1
    assert rask_identity["memory_limit"] > 0
    assert rask_address.startswith("tcp://127.0.0.1:")


def test_retire_workers_by_address(fresh_clusters) -> None:
    rask_cluster, dask_cluster = fresh_clusters(("w0", "w1"))
    answers = {}
    for cluster in (rask_cluster, dask_cluster):
        address = cluster.workers()["w1"]
        answer = retire(cluster, {"workers": [address]})
        assert list(answer) == [address], f"{cluster.kind}: retired {list(answer)}, not {address}"
        assert answer[address]["name"] == "w1", f"{cluster.kind}: {answer}"
        # Both answer once the worker is gone from the scheduler.
        assert list(cluster.workers()) == ["w0"], f"{cluster.kind}: still listed after retiring w1"
        answers[cluster.kind] = answer
    for cluster in (rask_cluster, dask_cluster):
        # A retired worker leaves: the operator may then delete its pod or VM.
        code = cluster.wait_for_worker_exit("w1")
        assert code == 0, f"{cluster.kind}: retired worker w1 exited with {code}\n{cluster.describe()}"
    check_identities(answers["rask"], answers["dask"], "POST /api/v1/retire_workers {workers}")


def test_retire_workers_by_count(fresh_clusters) -> None:
    rask_cluster, dask_cluster = fresh_clusters(("w0", "w1"))
    answers = {}
    for cluster in (rask_cluster, dask_cluster):
        before = cluster.workers()
        answer = retire(cluster, {"n": 1})
        assert len(answer) == 1, f"{cluster.kind}: retired {list(answer)}, not one worker"
        ((address, identity),) = answer.items()
        assert before.get(identity["name"]) == address, f"{cluster.kind}: {answer} is not one of {before}"
        after = cluster.workers()
        assert after == {k: v for k, v in before.items() if v != address}, (
            f"{cluster.kind}: after retiring {address} the scheduler lists {after}"
        )
        answers[cluster.kind] = answer
        code = cluster.wait_for_worker_exit(identity["name"])
        assert code == 0, f"{cluster.kind}: retired worker exited with {code}\n{cluster.describe()}"
    check_identities(answers["rask"], answers["dask"], "POST /api/v1/retire_workers {n}")


def metric_families(cluster: Cluster) -> dict:
    r = cluster.get("/metrics")
    assert r.status == 200, shown(cluster, "GET", "/metrics", r)
    try:
        return parse_metrics(r.text())
    except ValueError as e:
        pytest.fail(f"{cluster.kind}: /metrics is not Prometheus text: {e}\n{r.text()[:3000]}")


@pytest.fixture(scope="module")
def metrics(rask_cluster: Cluster, dask_cluster: Cluster) -> tuple[dict, dict]:
    return metric_families(rask_cluster), metric_families(dask_cluster)


def test_metrics_content_type_is_a_prometheus_format(rask_cluster: Cluster) -> None:
    r = rask_cluster.get("/metrics")
    assert r.media_type in ("text/plain", "application/openmetrics-text"), r.content_type


def test_metrics_rask_exports_only_dask_scheduler_families_dask_has(metrics) -> None:
    rask, dask = metrics
    extra = sorted(name for name in rask if name.startswith("dask_scheduler_") and name not in dask)
    assert not extra, f"rask exports dask_scheduler_* families Dask has not: {extra}; Dask has {sorted(dask)}"


@pytest.mark.parametrize("family", REQUIRED_FAMILIES)
def test_metrics_required_family_in_both(metrics, family: str) -> None:
    rask, dask = metrics
    assert family in dask, f"Dask lacks {family}: {sorted(dask)}"
    assert family in rask, f"rask lacks {family}: {sorted(rask)}"
    assert rask[family].samples > 0, f"rask's {family} has no samples"


def test_metrics_shared_families_have_dasks_types(metrics) -> None:
    rask, dask = metrics
    differ = {
        name: (rask[name].kind, dask[name].kind)
        for name in rask.keys() & dask.keys()
        if rask[name].kind != dask[name].kind
    }
    assert not differ, f"family: (rask's type, Dask's type): {differ}"


@pytest.mark.parametrize("family", ["dask_scheduler_tasks", "dask_scheduler_workers"])
def test_metrics_state_labels_match(metrics, family: str) -> None:
    rask, dask = metrics
    assert rask[family].label_names == dask[family].label_names == {"state"}, (
        f"{family} label names: rask {rask[family].label_names}, Dask {dask[family].label_names}"
    )
    assert rask[family].label_values == dask[family].label_values, (
        f"{family} label values: rask {rask[family].label_values}, Dask {dask[family].label_values}"
    )


# Bad input, asked of rask only: Dask answers 500 (or quietly retires nothing) where rask tells the
# caller what was wrong.


@pytest.mark.parametrize(
    "body",
    [b"", b"n=2", b'{"n": 2', b"[1, 2]", b"{}", b'{"n": -1}', b'{"n": "1"}', b'{"workers": "w0"}',
     b'{"workers": [7]}', b'{"n": 1, "workers": []}'],
)  # fmt: skip
def test_malformed_retire_body_is_400_with_a_json_error(rask_cluster: Cluster, body: bytes) -> None:
    r = rask_cluster.request("POST", "/api/v1/retire_workers", body)
    what = shown(rask_cluster, "POST", f"/api/v1/retire_workers {body!r}", r)
    assert r.status == 400, what
    assert r.media_type == JSON, what
    answer = r.json()
    assert isinstance(answer, dict) and list(answer) == ["Error"], what
    assert isinstance(answer["Error"], str) and answer["Error"], what
    assert list(rask_cluster.workers()) == ["w0"], "a malformed body retired a worker"


@pytest.mark.parametrize("path", ["/nope", "/api/v1/nope", "/api/v2/get_workers", "/health/extra"])
def test_unknown_path_is_404(rask_cluster: Cluster, path: str) -> None:
    r = rask_cluster.get(path)
    what = shown(rask_cluster, "GET", path, r)
    assert r.status == 404, what
    assert r.media_type == JSON and "Error" in r.json(), what  # type: ignore[operator]
