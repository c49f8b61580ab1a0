"""Users who installed dask-kubernetes first keep its CRDs (Helm never replaces CRDs): no status
subresource on DaskCluster, a status schema of `phase` alone. rask-operator works on them, and
replacing them with rask's (docs/operator.md) brings the full status."""

from __future__ import annotations

import json
from pathlib import Path

import dask_kubernetes
import pytest

from .platform import ROOT, Platform

DASK_K8S_CRDS = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds"


@pytest.fixture
def old_platform(tmp_path: Path):
    crds = sorted(DASK_K8S_CRDS.glob("*.yaml"))
    assert len(crds) == 4, f"dask-kubernetes' CRD files: {crds}"
    p = Platform(tmp_path, crds=crds)
    yield p
    p.stop()


def test_the_operator_runs_on_dask_kubernetes_crds_and_after_their_upgrade(old_platform: Platform):
    p = old_platform
    crd = p.get("crd", "daskclusters.kubernetes.dask.org")
    assert "status" not in crd["spec"]["versions"][0].get("subresources", {}), "dask-kubernetes' own CRD"
    p.kubectl("apply", "-f", str(ROOT / "examples/daskcluster.yaml"))
    p.wait("foo is Running on the old CRDs", lambda: p.get("dsk", "foo").get("status", {}).get("phase") == "Running")

    # The upgrade docs/operator.md gives.
    p.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    crd = p.get("crd", "daskclusters.kubernetes.dask.org")
    assert "status" in crd["spec"]["versions"][0]["subresources"], json.dumps(crd["spec"]["versions"][0].get("subresources"))
    p.kubectl("scale", "daskworkergroup", "foo-default", "--replicas", "3")
    p.wait(
        "the full status, through the status subresource",
        lambda: (st := p.get("dsk", "foo").get("status", {})).get("readyWorkers") == 3
        and st.get("phase") == "Running"
        and any(c.get("type") == "SchedulerReady" for c in st.get("conditions", [])),
    )
    p.kubectl("delete", "dsk", "foo")
