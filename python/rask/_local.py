"""`LocalCluster`: a `rask scheduler` and `rask worker` processes on this machine.

The `rask` executable is found through the `RASK_BIN` environment variable, else on `PATH`. Every
process listens on 127.0.0.1, writes its output to a log file in a temporary directory (quoted
when it fails to start), and is stopped when the cluster is closed, when its object is collected,
or when this Python process exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_CHARS = 3000


def rask_executable() -> str:
    """The `rask` binary: `$RASK_BIN`, else `rask` on `PATH`."""
    value = os.environ.get("RASK_BIN")
    if value:
        path = Path(value)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"RASK_BIN={value} is not an executable file")
        return str(path.resolve())
    found = shutil.which("rask")
    if found is None:
        raise FileNotFoundError(
            "no `rask` executable: set RASK_BIN to it or put it on PATH "
            "(`cargo build --release -p rask` builds target/release/rask)"
        )
    return found


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _workers_and_threads(n_workers: int | None, threads_per_worker: int | None) -> tuple[int, int]:
    """Dask's defaults: the cores split into about √cores workers when neither is given."""
    cores = _cpu_count()
    for name, value in (("n_workers", n_workers), ("threads_per_worker", threads_per_worker)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"{name} must be an int ≥ 1, got {value!r}")
    if n_workers is None and threads_per_worker is None:
        if cores <= 4:
            return cores, 1
        n_workers = min(f for f in range(1, cores + 1) if cores % f == 0 and f * f >= cores)
        return n_workers, cores // n_workers
    if n_workers is None:
        assert threads_per_worker is not None
        return max(1, cores // threads_per_worker), threads_per_worker
    if threads_per_worker is None:
        return n_workers, max(1, cores // n_workers)
    return n_workers, threads_per_worker


def _memory_limit_arg(memory_limit: object) -> str:
    """Dask's forms: `"auto"`, bytes as a number, `"4GiB"`, or 0/None for no limit."""
    if memory_limit is None:
        return "0"
    if isinstance(memory_limit, bool):
        raise ValueError(f"memory_limit must be bytes, a size like '4GiB', 'auto' or None, got {memory_limit!r}")
    if isinstance(memory_limit, (int, float)):
        if not memory_limit >= 0:
            raise ValueError(f"memory_limit must be ≥ 0, got {memory_limit!r}")
        return str(int(memory_limit))
    if isinstance(memory_limit, str) and memory_limit.strip():
        return memory_limit.strip()
    raise ValueError(f"memory_limit must be bytes, a size like '4GiB', 'auto' or None, got {memory_limit!r}")


class _Process:
    def __init__(self, label: str, argv: list[str], log: Path, env: dict[str, str]):
        self.label = label
        self.argv = argv
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        state = "running" if self.running() else f"exited with {self.popen.returncode}"
        try:
            text = self.log.read_text(errors="replace")
        except OSError as e:
            text = f"(cannot read {self.log}: {e})"
        if len(text) > LOG_TAIL_CHARS:
            text = "…" + text[-LOG_TAIL_CHARS:]
        return f"--- {self.label} ({state}): {' '.join(self.argv)}\n{text}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def _stop_all(processes: list[_Process], directory: str) -> None:
    # Workers first (started last), so they do not spend the teardown reconnecting.
    for p in reversed(processes):
        p.stop()
    processes.clear()
    shutil.rmtree(directory, ignore_errors=True)


class LocalCluster:
    """A scheduler and `n_workers` workers of `threads_per_worker` threads each, as processes of
    this machine (Dask's `LocalCluster`)::

        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            client.submit(sum, [1, 2]).result()

    `memory_limit` is per worker: `"auto"` (its share of the machine's memory), bytes, a size
    such as `"4GiB"`, or 0 / `None` for no limit.
    """

    def __init__(
        self,
        n_workers: int | None = None,
        threads_per_worker: int | None = None,
        memory_limit: object = "auto",
        *,
        timeout: float = START_TIMEOUT_S,
    ):
        self.n_workers, self.threads_per_worker = _workers_and_threads(n_workers, threads_per_worker)
        memory = _memory_limit_arg(memory_limit)
        rask = rask_executable()
        self._dir = tempfile.mkdtemp(prefix="rask-local-")
        self._processes: list[_Process] = []
        self._finalizer = weakref.finalize(self, _stop_all, self._processes, self._dir)
        env = dict(os.environ)
        # Warnings, and what users' functions print (the workers log it under rask_python::user).
        env.setdefault("RUST_LOG", "warn,rask_python::user=info")
        # The workers run users' functions with this interpreter, which has this package.
        env.setdefault("RASK_PYTHON", sys.executable)
        directory = Path(self._dir)
        try:
            scheduler_file = directory / "scheduler.json"
            self._processes.append(
                _Process(
                    "rask scheduler",
                    [
                        rask, "scheduler", "--host", "127.0.0.1", "--port", "0",
                        "--dashboard-address", "127.0.0.1:0",
                        "--scheduler-file", str(scheduler_file),
                    ],  # fmt: skip
                    directory / "scheduler.log",
                    env,
                )
            )
            info = self._wait_for_file(scheduler_file, timeout)
            self.scheduler_address: str = info["address"]
            self.dashboard_link: str = info["dashboard"]
            for i in range(self.n_workers):
                workdir = directory / f"worker-{i}"
                workdir.mkdir()
                self._processes.append(
                    _Process(
                        f"rask worker local-{i}",
                        [
                            rask, "worker", self.scheduler_address, "--name", f"local-{i}",
                            "--nthreads", str(self.threads_per_worker),
                            "--memory-limit", memory,
                            "--listen-host", "127.0.0.1",
                            "--local-directory", str(workdir),
                        ],  # fmt: skip
                        directory / f"worker-{i}.log",
                        env,
                    )
                )
            self.wait_for_workers(self.n_workers, timeout)
        except BaseException:
            self.close()
            raise

    def _fail(self, message: str) -> RuntimeError:
        logs = "\n".join(p.describe() for p in self._processes)
        return RuntimeError(f"LocalCluster: {message}\n{logs}")

    def _check_running(self, what: str) -> None:
        for p in self._processes:
            if not p.running():
                raise self._fail(f"{p.label} exited while waiting for {what}")

    def _wait_for_file(self, path: Path, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = json.loads(path.read_text())
                if info.get("address") and info.get("dashboard"):
                    return info
            except (OSError, ValueError):
                pass
            self._check_running("the scheduler to listen")
            if time.monotonic() > deadline:
                raise self._fail(f"the scheduler wrote no {path} in {timeout:.0f} s")
            time.sleep(0.05)

    def workers(self) -> dict[str, str]:
        """Worker name → address, as the scheduler lists them."""
        url = f"{self.dashboard_link}/api/v1/get_workers"
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        return {str(w["name"]): w["address"] for w in body["workers"]}

    def wait_for_workers(self, n_workers: int, timeout: float = START_TIMEOUT_S) -> None:
        """Waits until the scheduler lists at least `n_workers` workers."""
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            try:
                if len(self.workers()) >= n_workers:
                    return
            except (OSError, ValueError, KeyError) as e:
                last = f" (last answer: {e!r})"
            self._check_running(f"{n_workers} workers")
            if time.monotonic() > deadline:
                raise self._fail(f"fewer than {n_workers} workers after {timeout:.0f} s{last}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stops every process (workers first) and removes the logs."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else self.scheduler_address
        return (
            f"LocalCluster({state}, workers={self.n_workers}, "
            f"threads_per_worker={self.threads_per_worker})"
        )
