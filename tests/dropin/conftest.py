"""Fixtures: one platform (kube-double + kubelet + rask-operator) for the session's tests, and
fresh ones for tests that need their own CRDs."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .platform import Platform


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(tmp_path_factory.mktemp("kube"))
    # dask-kubernetes (kr8s) finds the API server as any client does: through KUBECONFIG.
    os.environ["KUBECONFIG"] = str(p.kubeconfig)
    yield p
    p.stop()
