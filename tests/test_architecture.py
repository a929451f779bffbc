"""The package structure docs/architecture.md describes: no import cycles between packages, and the
installable packages never reach into the checkout (drills, bench, or files beside the package)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INSTALLED = ("bearwatch", "monitor", "training")


def unit(module: str) -> str:
    """The node of the graph a module belongs to: monitor's subpackages and top-level modules
    each count alone (monitor.detection, monitor.pipeline, ...); bearwatch and training whole."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "monitor" and len(parts) > 1 else parts[0]


def imports() -> dict[str, dict[str, set[str]]]:
    """unit -> imported unit -> the files that import it (every import, lazy ones included)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for package in INSTALLED:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else [node.module]
                    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    else []
                )
                for name in names:
                    if name.split(".")[0] in (*INSTALLED, "drills", "bench") and unit(name) != unit(module):
                        graph[unit(module)][unit(name)].add(str(path.relative_to(ROOT)))
    return graph


def cycles(graph: dict[str, dict[str, set[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_packages_import_each_other_without_cycles() -> None:
    graph = imports()
    assert graph["monitor.pipeline"]  # the graph was built
    found = cycles(graph)
    detail = [f"{a} -> {b} ({', '.join(sorted(graph[a][b]))})" for c in found for a in c for b in graph[a] if b in c]
    assert not found, "import cycles:\n" + "\n".join(detail)


def test_monitor_never_imports_the_command_line_or_training() -> None:
    graph = imports()
    leaks = {
        a: sorted(b for b in targets if b in ("bearwatch", "training"))
        for a, targets in graph.items()
        if a.startswith("monitor")
    }
    assert not {a: b for a, b in leaks.items() if b}


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b": set()}, "b": {"c": set()}, "c": {"a": set()}, "d": {"a": set()}}) == [["a", "b", "c"]]


def test_the_installed_packages_do_not_reach_into_the_checkout() -> None:
    graph = imports()
    assert not {a: sorted(b) for a, b in graph.items() if {"drills", "bench"} & set(b) and a != "bearwatch"}
    offenders = []
    for package in INSTALLED:
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if ".parent.parent" in text or "parents[1]" in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, "files found relative to the checkout (use importlib.resources): " + ", ".join(offenders)
