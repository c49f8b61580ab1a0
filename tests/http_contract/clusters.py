"""Clusters of real processes for the contract tests: a Dask scheduler or rask's, with workers.

Dask's comes from the venv that runs pytest (`dask scheduler` with the HTTP API routes switched on,
as rask's operator deploys it); rask's from the binary named by the `RASK_BIN` environment variable.
Every process listens on 127.0.0.1 on free ports, writes its output to a log file that failures
quote, and is ended by its process id when its fixture is torn down (and by the kernel if pytest
itself dies first).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

# The routes `distributed.http.scheduler.api` is served with in production (see DESIGN.md): the API,
# /metrics and /health. Dask serves none of the API unless its module is listed here.
DASK_ROUTES = [
    "distributed.http.scheduler.api",
    "distributed.http.scheduler.prometheus",
    "distributed.http.health",
]
START_TIMEOUT_S = 60.0
HTTP_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 4000


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    @property
    def media_type(self) -> str:
        return self.content_type.split(";")[0].strip().lower()

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError(f"answer is not JSON ({e}): {self.text()[:500]!r}") from None


def _die_with_parent() -> None:
    """In the child before exec: be killed if the pytest process dies without tearing down."""
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Process:
    """One child process with its output in a log file."""

    def __init__(self, label: str, argv: list[str], log: Path, env: dict[str, str] | None = None):
        self.label = label
        self.argv = argv
        self.log = log
        full_env = dict(os.environ)
        full_env.update(env or {})
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=full_env,
                preexec_fn=_die_with_parent,
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            return f"(cannot read {self.log}: {e})"
        if len(text) > LOG_TAIL_CHARS:
            text = "…" + text[-LOG_TAIL_CHARS:]
        return text

    def describe(self) -> str:
        state = "running" if self.running() else f"exited with {self.popen.returncode}"
        return (
            f"--- {self.label} ({state}): {' '.join(self.argv)}\n"
            f"--- its output ({self.log}):\n{self.output()}"
        )

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time; by this process's id only."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A scheduler, its HTTP API and the workers started on it."""

    kind: str  # "dask" or "rask"
    scheduler_address: str
    http: str
    # Starts a worker of the given name: its process and the URL of its dashboard.
    start_worker_fn: Callable[[str], tuple[Process, str]]
    processes: list[Process] = field(default_factory=list)
    worker_processes: dict[str, Process] = field(default_factory=dict)
    # Worker name → the URL of its dashboard (/health, /metrics).
    worker_http: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return "\n".join(p.describe() for p in self.processes)

    def fail(self, message: str) -> None:
        pytest.fail(f"{self.kind}: {message}\n{self.describe()}", pytrace=False)

    def request(self, method: str, path: str, body: bytes | None = None, base: str | None = None) -> Response:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        url = (base or self.http) + path
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as r:
                return Response(r.status, r.headers.get("Content-Type", ""), r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers.get("Content-Type", ""), e.read())

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def get_worker(self, name: str, path: str) -> Response:
        """GET `path` of worker `name`'s dashboard."""
        return self.request("GET", path, base=self.worker_http[name])

    def post_json(self, path: str, payload: object) -> Response:
        return self.request("POST", path, json.dumps(payload).encode())

    def workers(self) -> dict[str, str]:
        """Worker name → address, from /api/v1/get_workers."""
        answer = self.get("/api/v1/get_workers")
        if answer.status != 200:
            self.fail(f"GET /api/v1/get_workers answered {answer.status}: {answer.text()[:500]}")
        return {str(w["name"]): w["address"] for w in answer.json()["workers"]}

    def wait_until(self, what: str, done: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> None:
        """Polls `done` until it holds; fails naming `what` with every process's output if a
        process exits first or time runs out."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                if done():
                    return
            except (OSError, ValueError, KeyError, TypeError) as e:
                last_error = f" (last attempt: {e!r})"
            for p in self.processes:
                if not p.running():
                    self.fail(f"{p.label} exited while waiting for {what}")
            if time.monotonic() > deadline:
                self.fail(f"no {what} after {timeout:.0f} s{last_error}")
            time.sleep(0.1)

    def wait_for_health(self) -> None:
        def healthy() -> bool:
            r = self.get("/health")
            return r.status == 200 and r.text() == "ok"

        self.wait_until(f"'ok' from {self.http}/health", healthy)

    def start_worker(self, name: str) -> str:
        """Starts a worker named `name`, waits until the scheduler lists it, and returns its address."""
        process, http = self.start_worker_fn(name)
        self.processes.append(process)
        self.worker_processes[name] = process
        self.worker_http[name] = http
        self.wait_until(f"worker {name!r} in /api/v1/get_workers", lambda: name in self.workers())
        return self.workers()[name]

    def wait_for_worker_exit(self, name: str, timeout: float = 20.0) -> int:
        """Waits for worker `name`'s process to exit by itself and returns its exit code."""
        process = self.worker_processes[name]
        try:
            return process.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.fail(f"worker {name} still runs {timeout:.0f} s after it was retired")
            raise

    def stop(self) -> None:
        # Workers first, so they do not spend the teardown reconnecting to a gone scheduler.
        for p in reversed(self.processes):
            p.stop()


ARRAY_SIDE = 100
ARRAY_CHUNK = 50
WORK_TIMEOUT_S = 120.0


def run_array_mean(cluster: Cluster) -> float:
    """The seed's array mean, small (random 100³ in chunks of 50³), computed on `cluster` by a
    client that connects, computes and leaves: Dask's client from this process, rask's `rask run`.
    Returns the mean."""
    if cluster.kind == "dask":
        import dask.array as da
        from distributed import Client

        with Client(cluster.scheduler_address, timeout=START_TIMEOUT_S) as client:
            x = da.random.random((ARRAY_SIDE,) * 3, chunks=ARRAY_CHUNK)
            return float(client.compute(x.mean()).result(timeout=WORK_TIMEOUT_S))
    argv = [
        str(_rask_bin()), "run", "array-mean", "--scheduler", cluster.scheduler_address,
        "--size", str(ARRAY_SIDE), "--chunk", str(ARRAY_CHUNK), "--json",
    ]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WORK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        cluster.fail(f"`{' '.join(argv)}` did not finish in {WORK_TIMEOUT_S:.0f} s")
        raise
    if done.returncode != 0:
        cluster.fail(f"`{' '.join(argv)}` exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    return float(line["result"])


def _dask_bin() -> Path:
    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.exit(f"no `dask` command beside {sys.executable}; run the suite with scripts/test", 2)
    return dask


def _rask_bin() -> Path:
    value = os.environ.get("RASK_BIN")
    if not value:
        pytest.exit("set RASK_BIN to the built rask binary (scripts/test does: target/debug/rask)", 2)
    rask = Path(value)
    if not (rask.is_file() and os.access(rask, os.X_OK)):
        pytest.exit(f"RASK_BIN={value} is not an executable file; build it with `cargo build --bins`", 2)
    return rask.resolve()


def start_dask(tmp: Path) -> Cluster:
    dask = _dask_bin()
    port, http_port = free_port(), free_port()
    env = {"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": json.dumps(DASK_ROUTES)}
    address = f"tcp://127.0.0.1:{port}"

    def worker(name: str) -> tuple[Process, str]:
        workdir = tmp / f"dask-{name}"
        workdir.mkdir()
        dashboard = free_port()
        argv = [
            str(dask), "worker", address, "--name", name, "--nthreads", "1",
            "--host", "127.0.0.1",
            "--dashboard-address", f"127.0.0.1:{dashboard}",
            # Started as rask's test workers are: without a nanny process.
            "--no-nanny",
            "--local-directory", str(workdir),
        ]  # fmt: skip
        process = Process(f"dask worker {name}", argv, tmp / f"dask-worker-{name}.log", env)
        return process, f"http://127.0.0.1:{dashboard}"

    argv = [
        str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
        "--dashboard-address", f"127.0.0.1:{http_port}",
    ]  # fmt: skip
    cluster = Cluster("dask", address, f"http://127.0.0.1:{http_port}", worker)
    cluster.processes.append(Process("dask scheduler", argv, tmp / "dask-scheduler.log", env))
    return cluster


def start_rask(tmp: Path) -> Cluster:
    rask = _rask_bin()
    port, http_port = free_port(), free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {"RUST_LOG": "info", "RUST_BACKTRACE": "1"}

    def worker(name: str) -> tuple[Process, str]:
        workdir = tmp / f"rask-{name}"
        workdir.mkdir()
        dashboard = free_port()
        argv = [
            str(rask), "worker", address, "--name", name, "--nthreads", "1",
            "--listen-host", "127.0.0.1",
            "--dashboard-address", f"127.0.0.1:{dashboard}",
            "--local-directory", str(workdir),
        ]  # fmt: skip
        process = Process(f"rask worker {name}", argv, tmp / f"rask-worker-{name}.log", env)
        return process, f"http://127.0.0.1:{dashboard}"

    argv = [
        str(rask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
        "--dashboard-address", f"127.0.0.1:{http_port}",
    ]  # fmt: skip
    cluster = Cluster("rask", address, f"http://127.0.0.1:{http_port}", worker)
    cluster.processes.append(Process("rask scheduler", argv, tmp / "rask-scheduler.log", env))
    return cluster


STARTERS = {"dask": start_dask, "rask": start_rask}
