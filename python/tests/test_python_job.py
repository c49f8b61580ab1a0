"""examples/python-job.yaml on the local backend: `rask-operator up` starts the job's scheduler and
workers, then runs the runner's `python3 -c <script>`, which checks its results and exits 1 when
they are wrong. `python3` is this interpreter (its directory first on PATH), as after activating
the venv the rask package is installed in (docs/python.md, "A Python job on a cluster")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import rask_bin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "python-job.yaml"


def rask_operator() -> str:
    path = Path(rask_bin()).with_name("rask-operator")
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not built: `cargo build -p rask-operator --bin rask-operator`")
    return str(path)


def up(manifest: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    # The workers find `python3` on PATH too: no RASK_PYTHON, as for a user with the venv active.
    env.pop("RASK_PYTHON", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        [rask_operator(), "up", str(manifest), "--rask-bin", rask_bin(), "--dir", str(tmp_path / "up")],
        env=env, capture_output=True, text=True, timeout=300,
    )


def test_the_python_job_example_runs_users_functions_and_arrays_and_checks_them(tmp_path: Path) -> None:
    r = up(EXAMPLE, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "delayed: total 131, parts [1, 4, 11, 22, 37, 56]" in out
    assert "ok: the results match" in out
    assert "job python-job: Successful" in out


def test_a_wrong_result_fails_the_job(tmp_path: Path) -> None:
    # The same script expecting another total: the runner exits 1 and so does `up`.
    text = EXAMPLE.read_text()
    assert "total == 131" in text
    manifest = tmp_path / "wrong.yaml"
    manifest.write_text(text.replace("total == 131", "total == 132"))
    r = up(manifest, tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "WRONG: the results do not match" in out
    assert "job python-job: Failed" in out
