"""A Kubernetes for tests: kube-double's API server on loopback (`kube-double-serve`), its kubelet
running Dask's image as this virtualenv's commands and rask's image as the `rask` binary, and
`rask-operator run` against it, reaching schedulers through the API server's service proxy.
The operator runs as the ServiceAccount of charts/rask-operator, with the RBAC that `helm
template` renders (RASK_HELM, or the Helm of .tools/), which kube-double-serve enforces;
RASK_CHART_SCOPE (cluster, the default, or namespace) picks the chart's mode.

Every peer is required: a missing binary or kubectl fails the test that needs it (never a skip).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "rask-operator"


def _required_file(env: str, path: Path | None, what: str) -> Path:
    if path is None or not path.is_file():
        pytest.fail(f"{what} is missing ({env}={os.environ.get(env)!r}, looked at {path}): scripts/test builds and installs it")
    return path


def binaries() -> dict[str, Path]:
    """The binaries the suite runs: `rask` (RASK_BIN) and, beside it, `rask-operator` and
    `kube-double-serve`; kubectl from KUBECTL."""
    rask = os.environ.get("RASK_BIN")
    rask_path = Path(rask) if rask else None
    _required_file("RASK_BIN", rask_path, "the rask binary")
    assert rask_path is not None
    target = rask_path.parent
    kubectl = os.environ.get("KUBECTL")
    return {
        "rask": rask_path,
        "operator": _required_file("RASK_BIN", target / "rask-operator", "the rask-operator binary"),
        "serve": _required_file("RASK_BIN", target / "kube-double-serve", "the kube-double-serve binary"),
        "kubectl": _required_file("KUBECTL", Path(kubectl) if kubectl else None, "kubectl"),
    }


def helm() -> Path:
    """Helm: RASK_HELM (scripts/test sets it), else the one scripts/test installs in .tools/."""
    given = os.environ.get("RASK_HELM")
    if given:
        return _required_file("RASK_HELM", Path(given), "helm")
    found = sorted((ROOT / ".tools").glob("*/helm/helm"))
    return _required_file("RASK_HELM", found[0] if found else None, "helm")


# The operator reaches schedulers through the API server's service proxy (--scheduler-url), as an
# operator outside the cluster does behind `kubectl proxy`. Its HTTP calls carry no credentials
# there (kubectl proxy would add its own user's), so this stands in for kubectl proxy's user:
# anonymous requests may use services/proxy, and nothing else.
PROXY_GRANT = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubectl-proxy-stand-in}
rules:
- apiGroups: [""]
  resources: [services/proxy]
  verbs: [get, create]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubectl-proxy-stand-in}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubectl-proxy-stand-in}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:anonymous"}
"""


def render_chart(workdir: Path, scope: str) -> tuple[Path, str, list[str]]:
    """`helm template` of the chart in `scope`'s mode (the release namespace is where the tests'
    clusters live when namespaced): the rendered file, the operator's ServiceAccount as
    NAMESPACE/NAME, and the operator's arguments after `run` that the chart sets (`--namespace`)."""
    if scope not in ("cluster", "namespace"):
        pytest.fail(f"RASK_CHART_SCOPE is {scope!r}: cluster or namespace")
    namespace = "rask-system" if scope == "cluster" else "default"
    r = subprocess.run(
        [str(helm()), "template", "rask", str(CHART), "--namespace", namespace, "--set", f"rbac.scope={scope}"],
        capture_output=True, text=True, check=False,
    )
    if r.returncode != 0:
        pytest.fail(f"helm template failed:\n{r.stderr}")
    rendered = workdir / "chart.yaml"
    rendered.write_text(r.stdout + "\n---" + PROXY_GRANT)
    (deploy,) = [d for d in yaml.safe_load_all(r.stdout) if d and d["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    scope_args = args[args.index("--namespace"):args.index("--namespace") + 2] if "--namespace" in args else []
    return rendered, f"{namespace}/{pod['serviceAccountName']}", scope_args


def wait_for(what: str, check: Callable[[], object], timeout: float = 60.0, interval: float = 0.25, on_timeout: Callable[[], str] = lambda: ""):
    """Polls `check` until it returns something truthy, and returns that; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting until {what}\n{on_timeout()}")
        time.sleep(interval)


class Platform:
    """The API server double, its kubelet and the operator, as processes; `stop()` ends them."""

    def __init__(self, workdir: Path, crds: list[Path] | None = None):
        self.bins = binaries()
        self.dir = workdir
        self.kubeconfig = workdir / "kubeconfig"
        operator_kubeconfig = workdir / "operator-kubeconfig"
        chart, account, scope_args = render_chart(workdir, os.environ.get("RASK_CHART_SCOPE") or "cluster")
        self.logs: dict[str, Path] = {}
        self.procs: dict[str, subprocess.Popen] = {}
        args = [
            str(self.bins["serve"]),
            "--kubeconfig", str(self.kubeconfig),
            "--dask-bin-dir", str(Path(sys.executable).parent),
            "--rask-bin", str(self.bins["rask"]),
            "--restart-backoff-ms", "1000",
            "--rbac-from", str(chart),
            "--service-account", account,
            "--service-account-kubeconfig", str(operator_kubeconfig),
        ]
        for c in crds or []:
            args += ["--crds", str(c)]
        serve = self._start("kube-double", args, stdout=subprocess.PIPE)
        line = serve.stdout.readline().decode() if serve.stdout else ""
        if not line.startswith("ready "):
            self.stop()
            pytest.fail(f"kube-double-serve did not start: {line!r}\n{self.log('kube-double')}")
        self.url = line.split()[1]
        proxy = f"{self.url}/api/v1/namespaces/{{namespace}}/services/{{cluster}}-scheduler:8787/proxy"
        self._start(
            "operator",
            [str(self.bins["operator"]), "run", "--metrics-address", "127.0.0.1:0", "--scheduler-url", proxy,
             *scope_args],
            env={"KUBECONFIG": str(operator_kubeconfig), "RUST_LOG": "info,kube=warn"},
        )

    def _start(self, name: str, args: list[str], stdout=None, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = self.dir / f"{name}.log"
        self.logs[name] = log
        full_env = {**os.environ, **(env or {})}
        out = open(log, "wb")
        proc = subprocess.Popen(args, stdout=stdout or out, stderr=out, env=full_env, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace")[-20000:] if path and path.exists() else ""

    def diagnostics(self) -> str:
        return "\n".join(f"=== {n} ===\n{self.log(n)}" for n in self.logs)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.dir)}
        r = subprocess.run(
            [str(self.bins["kubectl"]), *args],
            capture_output=True, text=True, env=env, input=input, timeout=60,
        )
        if check and r.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}\n{self.diagnostics()}")
        return r

    def get(self, kind: str, name: str | None = None, selector: str | None = None) -> dict:
        args = ["get", kind, "-o", "json"]
        if name:
            args.insert(2, name)
        if selector:
            args += ["-l", selector]
        r = self.kubectl(*args, check=False)
        return json.loads(r.stdout) if r.returncode == 0 and r.stdout else {}

    def wait(self, what: str, check: Callable[[], object], timeout: float = 90.0, why: Callable[[], str] = lambda: ""):
        return wait_for(what, check, timeout, on_timeout=lambda: f"{why()}\n{self.diagnostics()}")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
