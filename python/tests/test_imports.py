"""The package's modules import one another in one direction only: no cycle, not even through an
import inside a function (which would only hide it until the function runs). Two checks on the
installed package: its imports parsed from the source (every `import`, at any depth), and each
module imported first in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import rask

PACKAGE = Path(rask.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).parts)
    parts[-1] = parts[-1].split(".")[0]  # core.py, _rask.abi3.so
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    """The package's modules: Python sources and the native extension (a leaf: it imports none
    of them while loading)."""
    files = sorted(PACKAGE.rglob("*.py")) + sorted(PACKAGE.rglob("*.so")) + sorted(PACKAGE.rglob("*.pyd"))
    return {module_name(p): p for p in files}


def imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `name` imports, wherever the import statement is."""
    if path.suffix != ".py":
        return set()
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from x import y` imports the module x.y when there is one, else x.
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
        else:
            continue
        for t in targets:
            # `import rask.array.core` imports rask.array.core (and its parents, loaded first: a
            # package's __init__ runs before any of its modules, so they are not edges of it).
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state:
                found = visit(n)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_checker_finds_a_cycle_through_a_function_local_import(tmp_path: Path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("def f():\n    from .sub import c\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("from ..a import thing\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, pkg
    try:
        found = sources()
        graph = {m: imports(m, p, set(found)) for m, p in found.items()}
    finally:
        PACKAGE = saved
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.c"} and graph["pkg.sub.c"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.sub.c", "pkg.a"]


def test_the_package_imports_have_no_cycle():
    found = sources()
    assert {"rask", "rask.distributed", "rask._delayed", "rask.array", "rask.array.core", "rask.dataframe"} <= set(found)
    graph = {m: imports(m, p, set(found)) for m, p in found.items()}
    # The layers, lowest first: each imports only modules before it.
    assert "rask._rask" in found, "the native module is part of the graph"
    assert graph["rask._futures"] <= {"rask._deps", "rask._rask"}
    assert "rask.distributed" not in graph["rask._delayed"] and "rask.array" not in graph["rask._delayed"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("first", sorted(m for m in sources() if m != "rask"))
def test_each_module_imports_first_in_a_fresh_interpreter(first: str):
    rest = [m for m in sorted(sources()) if m != first]
    code = f"import importlib\nimportlib.import_module({first!r})\n" + "".join(
        f"importlib.import_module({m!r})\n" for m in reversed(rest)
    )
    done = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
