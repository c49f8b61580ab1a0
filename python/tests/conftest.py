"""Fixtures: a `rask scheduler` and two `rask worker` processes from the binary named by RASK_BIN
(scripts/test sets it to target/debug/rask), and a client of them. The `rask` package under test is
the installed wheel, not this source tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import rask
from rask.distributed import Client

START_TIMEOUT_S = 60.0
WORKERS = ("w0", "w1")


def pytest_report_header() -> str:
    return f"rask {rask.__version__} from {Path(rask.__file__).parent}"


def rask_bin() -> str:
    value = os.environ.get("RASK_BIN")
    if not value:
        pytest.exit("set RASK_BIN to the built rask binary (scripts/test does: target/debug/rask)", 2)
    if not os.access(value, os.X_OK):
        pytest.exit(f"RASK_BIN={value} is not executable; build it with `cargo build --bins`", 2)
    return str(Path(value).resolve())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Child processes with their output in log files, quoted when something fails."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.popens: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, label: str, argv: list[str]) -> subprocess.Popen:
        log = self.tmp / f"{label.replace(' ', '-')}.log"
        env = dict(os.environ, RUST_LOG="info", RUST_BACKTRACE="1")
        # The workers run users' functions with this interpreter, which has the wheel installed.
        env.setdefault("RASK_PYTHON", sys.executable)
        with open(log, "wb") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.popens.append((label, p, log))
        return p

    def describe(self) -> str:
        parts = []
        for label, p, log in self.popens:
            state = "running" if p.poll() is None else f"exited with {p.returncode}"
            parts.append(f"--- {label} ({state}):\n{log.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for _, p, _ in reversed(self.popens):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="session")
def scheduler_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler with the workers of WORKERS (one thread each), all registered."""
    tmp = tmp_path_factory.mktemp("rask")
    rask = rask_bin()
    port, http_port = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = Processes(tmp)
    procs.start("scheduler", [rask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", f"127.0.0.1:{http_port}"])
    for name in WORKERS:
        workdir = tmp / name
        workdir.mkdir()
        procs.start(f"worker {name}", [rask, "worker", address, "--name", name, "--nthreads", "1", "--listen-host", "127.0.0.1", "--local-directory", str(workdir)])
    # Registered workers are listed by the HTTP API.
    import json
    import urllib.request

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/api/v1/get_workers", timeout=5) as r:
                if len(json.load(r)["workers"]) == len(WORKERS):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for _, p, _ in procs.popens):
            procs.stop()
            pytest.fail(f"the cluster did not start:\n{procs.describe()}", pytrace=False)
        time.sleep(0.1)
    yield address
    procs.stop()


@pytest.fixture(scope="session")
def client(scheduler_address: str) -> Iterator[Client]:
    with Client(scheduler_address) as c:
        yield c
