"""The check at connect that the workers' Python and cloudpickle load what this client pickles."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

from rask.distributed import Client, VersionMismatch, _check_worker_versions

NATIVE = [("array", "0.1.0"), ("frame", "0.1.0"), ("seed", "0.1.0")]


def test_matching_workers_pass():
    _check_worker_versions(NATIVE + [("python", "1+py3.11+cloudpickle3")], (3, 11), 3)
    # No python family (a worker of native functions only), or one without a usable Python
    # (its tasks fail saying why): nothing to compare.
    _check_worker_versions(NATIVE, (3, 11), 3)
    _check_worker_versions([("python", "1+unavailable")], (3, 11), 3)


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("1+py3.12+cloudpickle3", "the workers run Python 3.12 and cloudpickle 3"),
        ("1+py3.11+cloudpickle2", "the workers run Python 3.11 and cloudpickle 2"),
        ("1+py3.1+cloudpickle3", "Python 3.1 "),
        ("1", "the workers run Python None and cloudpickle None"),
    ],
)
def test_other_versions_are_a_clear_error(version, message):
    with pytest.raises(VersionMismatch, match=message) as info:
        _check_worker_versions(NATIVE + [("python", version)], (3, 11), 3)
    assert "this client Python 3.11 and cloudpickle 3" in str(info.value)
    assert "--python" in str(info.value)


def test_the_workers_of_the_suite_match_this_client(client: Client):
    python = [v for name, v in client._native.worker_families if name == "python"]
    mine = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    assert python and all(mine in v.split("+") for v in python), python
    assert all(f"cloudpickle{cloudpickle.__version__.split('.')[0]}" in v.split("+") for v in python)
