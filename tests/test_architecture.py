"""The import graph of txetcd, procedures, component and bench: no cycles, nothing upward.

Read statically (``ast``), so every import counts: module level, inside a function (a lazy
import that only hides a cycle is still one) and under ``TYPE_CHECKING`` (a type is a
dependency too). The layers are those of docs/architecture.md, lowest first; a module may
import its own layer and those below. A module that is in no layer fails the test: placing
it is part of adding it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("txetcd", "procedures", "component", "bench")

# (layer, module prefixes): a module belongs to the first layer with a prefix naming it or a
# package above it; ``txetcd`` alone is the package's own __init__ (its public facade).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # Plain code, no event loop: types, errors, ops, request/response building and decoding,
    # the transport and driver interfaces, lease/watch/lock state machines.
    ("core", ("txetcd.types", "txetcd.errors", "txetcd.op", "txetcd.core",
              "txetcd.interface", "txetcd.stream", "txetcd.lease_core", "txetcd.watch_core",
              "txetcd.acquirable")),
    # Connections, timers and futures of one event loop each; the unary-call transport.
    ("drivers", ("txetcd.http", "txetcd.http_reader", "txetcd.aio_http", "txetcd.twisted_driver",
                 "txetcd.asyncio_driver", "txetcd.deferreds", "txetcd.transport")),
    # KV requests and their batching.
    ("kv", ("txetcd.batch", "txetcd.kv")),
    # Leases, watches, locks and elections, over the transport interface.
    ("recipes", ("txetcd.lease", "txetcd.watch", "txetcd.concurrency", "txetcd.services")),
    # The clients users hold: KV plus the recipes, per event loop.
    ("clients", ("txetcd.client", "txetcd.asyncio")),
    # Typed persistent maps over a client; the package facade re-exports it all.
    ("pmap", ("txetcd.pmap", "txetcd")),
    # Running etcd servers (tests, `etcd-wamp run`, bench): beside the client, not under it.
    ("tools", ("txetcd.embedded", "txetcd.fetch")),
    # WAMP procedures of a table; no WAMP session here.
    ("procedures", ("procedures",)),
    # The Crossbar component, its CLI and node.
    ("component", ("component",)),
    # Benchmarks and chaos runs.
    ("bench", ("bench",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ".venvs" not in path.parts:  # bench's peer venvs, git-ignored
                found[module_name(path)] = path
    return found


def layer_of(module: str) -> int | None:
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "txetcd" and module != "txetcd":
                continue  # only the facade itself; its submodules have layers of their own
            if module == prefix or module.startswith(prefix + "."):
                return index
    return None


def imported(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """``(module imported, line)`` of every import of ``path`` naming a known module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            # ``from package import module`` names the module, else the package
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:
                target = target.rpartition(".")[0]
            if target in known and target != module:
                yield target, node.lineno


def graph() -> dict[str, dict[str, int]]:
    known = modules()
    edges: dict[str, dict[str, int]] = {}
    for module, path in known.items():
        edges[module] = {}
        for target, line in imported(module, path, known):
            edges[module].setdefault(target, line)
    return edges


def cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Every strongly connected group of modules, each as one cycle through it."""
    tarjan = _Tarjan(edges)
    for node in sorted(edges):
        if node not in tarjan.index:
            tarjan.visit(node)
    return [_one_cycle(group, edges) for group in sorted(tarjan.groups)]


class _Tarjan:
    """Tarjan's strongly connected components; ``groups`` holds those of two or more."""

    def __init__(self, edges: dict[str, dict[str, int]]) -> None:
        self.edges = edges
        self.index: dict[str, int] = {}
        self.low: dict[str, int] = {}
        self.stack: list[str] = []
        self.groups: list[list[str]] = []

    def visit(self, node: str) -> None:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        for target in self.edges[node]:
            if target not in self.index:
                self.visit(target)
                self.low[node] = min(self.low[node], self.low[target])
            elif target in self.stack:
                self.low[node] = min(self.low[node], self.index[target])
        if self.low[node] == self.index[node]:
            group = self.stack[self.stack.index(node):]
            del self.stack[self.stack.index(node):]
            if len(group) > 1:
                self.groups.append(sorted(group))


def _one_cycle(group: list[str], edges: dict[str, dict[str, int]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(edges[node]):
                if target == start:
                    return paths[node] + [start]
                if target in group and target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    return group


def describe(path: list[str], edges: dict[str, dict[str, int]], known: dict[str, Path]) -> str:
    steps = zip(path, path[1:], strict=False)
    return " -> ".join(path) + "  (" + ", ".join(
        f"{known[a].relative_to(ROOT)}:{edges[a][b]}" for a, b in steps) + ")"


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(module for module in modules() if layer_of(module) is None)
    assert not unplaced, (
        "modules in no layer of tests/test_architecture.py LAYERS (and docs/architecture.md): "
        + ", ".join(unplaced))


def test_no_import_cycles() -> None:
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles:\n  " + "\n  ".join(
        describe(cycle, edges, modules()) for cycle in found)


def test_no_import_points_upward() -> None:
    known = modules()
    edges = graph()
    upward = []
    for module, targets in sorted(edges.items()):
        own = layer_of(module)
        for target, line in sorted(targets.items()):
            theirs = layer_of(target)
            if own is not None and theirs is not None and theirs > own:
                upward.append(f"{known[module].relative_to(ROOT)}:{line}: {module} "
                              f"({LAYERS[own][0]}) imports {target} ({LAYERS[theirs][0]})")
    assert not upward, "imports against the layers (lowest first: " + ", ".join(
        name for name, _ in LAYERS) + "):\n  " + "\n  ".join(upward)


def test_tests_do_not_import_bench() -> None:
    """bench builds on the test helpers (tests/wamp.py, tests/peers.py, tests/chaos.py), never
    the other way round: a test must run without the benchmarks."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        if "upstream_examples" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names
                      if name == "bench" or name.startswith("bench.")]
    assert not found, "tests importing bench/:\n  " + "\n  ".join(found)


def test_the_checks_see_cycles_and_upward_imports() -> None:
    """The checks themselves: a cycle and an upward edge in a made-up graph are found."""
    edges = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []
    assert layer_of("txetcd.types") == 0 and layer_of("txetcd") == layer_of("txetcd.pmap.maps")
    order = [layer_of(m) or 0 for m in ("txetcd.client", "procedures.table", "component.cli")]
    assert 0 < order[0] < order[1] < order[2]
    assert layer_of("txetcd.pmap.layout") != layer_of("txetcd.types")
    assert layer_of("elsewhere") is None
