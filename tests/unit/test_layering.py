"""The layering contract, read from the source with `ast` (nothing is imported):
`cli` -> `server` -> `service` -> `ingest` -> `retriever` -> `config` (the settings), never
back (so nothing imports `cli`, and only `cli` imports `server`); no product package imports
`benchmarks` or `tests`; no import cycle between modules.

Every import statement counts as an edge, wherever it is: at the top, inside a function (a
deferred import is still a dependency, only a hidden one) and under `if TYPE_CHECKING:` (the
type checker and the reader follow it; a cycle through it is a cycle of concepts). An import
of `a.b.c` is an edge to the deepest module of ours it names (`from server import metrics` is
an edge to `server.metrics`; `from server.access import current` to `server.access`), not to
the packages above it: their `__init__` files hold nothing but a docstring."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The layers, lowest first: each may import only those before it.
PRODUCT = ("config", "retriever", "ingest", "service", "server", "cli")
OURS = (*PRODUCT, "benchmarks", "tests")

# Which top-level package may not import which: every layer above it, and the harnesses.
FORBIDDEN = {layer: (*PRODUCT[i + 1 :], "benchmarks", "tests") for i, layer in enumerate(PRODUCT)}

# Cycles left in place on purpose, each edge with why. Empty: there are none now.
ALLOWED_EDGES: frozenset[tuple[str, str]] = frozenset()


def module_files(packages: tuple[str, ...] = OURS) -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _ours(name: str, modules: dict[str, Path]) -> str | None:
    """The deepest module of ours that `name` is or is inside of."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The modules of ours that `module` imports, each with the line of its first import."""
    found: dict[str, int] = {}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            # `from a import b`: b is a module of ours, or a name defined in a.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            target = _ours(name, modules)
            if target is not None and target != module:
                found.setdefault(target, node.lineno)
    return found


def import_graph(packages: tuple[str, ...] = OURS) -> dict[str, dict[str, int]]:
    modules = module_files()
    return {m: imports_of(m, modules[m], modules) for m in module_files(packages)}


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (depth-first search, iterative)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            target = next(stack[-1], None)
            if target is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
                continue
            if (path[-1], target) in ALLOWED_EDGES or target not in graph or target in done:
                continue
            if target in on_path:
                return [*path[path.index(target) :], target]
            path.append(target)
            on_path.add(target)
            stack.append(iter(sorted(graph[target])))
    return None


def _describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    steps = [
        f"  {a} -> {b} (line {graph[a][b]} of {a.replace('.', '/')}.py)"
        for a, b in itertools.pairwise(cycle)
    ]
    return "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps)


def test_layers_import_only_downwards() -> None:
    graph = import_graph(PRODUCT)
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]
    ]
    assert not wrong, (
        "imports against the layers (" + " <- ".join(PRODUCT) + "):\n" + "\n".join(wrong)
    )


def test_no_import_cycles() -> None:
    graph = import_graph(PRODUCT)
    cycle = find_cycle(graph)
    assert cycle is None, _describe(cycle, graph)


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The checks above can fail: deferred, TYPE_CHECKING and relative imports are edges, and
    a cycle made of them is found and named."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from server.state import EnclaveState\n"
        "def later():\n"
        "    from . import store\n"
        "    import ingest.pipeline\n"
    )
    path = tmp_path / "probe.py"
    path.write_text(source)
    modules = {**module_files(), "retriever.probe": path}
    edges = imports_of("retriever.probe", path, modules)
    assert set(edges) == {"server.state", "retriever.store", "ingest.pipeline"}
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    cycle = find_cycle(graph)
    assert cycle is not None and len(cycle) == 4 and cycle[0] == cycle[-1]
    assert set(cycle) == {"a", "b", "c"}
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1}}) is None


def test_benchmarks_run_without_the_server() -> None:
    """An evaluation is offline work: the benchmarks use retriever, ingest and service, not
    the HTTP layer or the command line (they may use tests' live helpers, which start servers
    of their own, and start `python -m cli` as a user would)."""
    graph = import_graph(("benchmarks",))
    wrong = [
        f"{module} imports {target} (line {line})"
        for module, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if target.split(".")[0] in ("server", "cli")
    ]
    assert not wrong, "\n".join(wrong)
