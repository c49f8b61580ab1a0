"""The check at connect that the workers' Python and cloudpickle load what this client pickles."""

from __future__ import annotations

import sys

import cloudpickle
import pytest

from rask._futures import _exception_of
from rask.distributed import Client, VersionMismatch, VersionMismatchWarning, _check_worker_versions, _rask_tag

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


MINE = "0.1.0@3f2a9c01b2d4"


def test_the_same_rask_package_passes_without_a_warning(recwarn):
    _check_worker_versions(NATIVE + [("python", f"1+py3.11+cloudpickle3+rask{MINE}")], (3, 11), 3, MINE)
    # A worker older than the rask part: nothing to compare.
    _check_worker_versions(NATIVE + [("python", "1+py3.11+cloudpickle3")], (3, 11), 3, MINE)
    assert not [w for w in recwarn if w.category is VersionMismatchWarning]


@pytest.mark.parametrize(
    ("theirs", "message"),
    [
        ("rask0.1.0@000000000000", "the workers' rask package is 0.1.0@000000000000"),
        ("rask0.0.9@3f2a9c01b2d4", "the workers' rask package is 0.0.9@3f2a9c01b2d4"),
        ("norask", "no rask package in the workers' Python"),
    ],
)
def test_another_rask_package_on_the_workers_is_a_warning_naming_both(theirs, message):
    with pytest.warns(VersionMismatchWarning, match=message) as record:
        _check_worker_versions(NATIVE + [("python", f"1+py3.11+cloudpickle3+{theirs}")], (3, 11), 3, MINE)
    text = str(record[0].message)
    assert f"this client's is {MINE}" in text and "install rask 0.1.0" in text, text


def test_the_workers_of_the_suite_have_this_clients_rask_package(client: Client):
    python = [v for name, v in client._native.worker_families if name == "python"]
    assert python and all(f"rask{_rask_tag()}" in v.split("+") for v in python), (python, _rask_tag())


def test_a_call_that_does_not_unpickle_names_the_clients_versions_beside_the_workers():
    failure = {
        "kind": "python",
        "type": "AttributeError",
        "text": "Can't get attribute 'load_function' on <module 'rask._deps'>",
        "traceback": "AttributeError: Can't get attribute 'load_function'\n"
        "(unpickling the call on a rask worker with Python 3.11.2, cloudpickle 3.1.1 and rask 0.0.9 (/x))\n",
    }
    exc = _exception_of(failure)
    notes = getattr(exc, "__notes__", [])
    assert any("pickled by a rask client with Python" in n and f"cloudpickle {cloudpickle.__version__}" in n for n in notes), notes
    # A task's own failure gets no such note.
    failure["traceback"] = "Traceback...\nValueError: bad row\n"
    assert not getattr(_exception_of(failure), "__notes__", [])
