"""The shape of the source tree: short files, no import cycles, inference independent of the representations.

The import graph is read from the AST of every ``.py`` file under
``src/cryoscape`` (nothing is imported). Every ``import`` statement counts,
wherever it stands: module level, inside functions (deferred imports) and
under ``if TYPE_CHECKING:``, since each is a dependency of the design.
Relative imports are resolved against the importing module's package.
``from cryoscape.x import y`` is an edge to the module ``cryoscape.x.y``
when that is a module, else to ``cryoscape.x``. Edges from a package's
``__init__`` to modules inside that package are left out: a package
gathering its own parts is not a cycle by itself.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "cryoscape"
MAX_LINES = 400
SUBPACKAGES = ("io", "particles", "geometry", "imaging", "models", "inference", "methods", "analysis",
               "validate", "simulate", "reconstruct", "bench", "report", "cli")
FORBIDDEN_IN_INFERENCE = ("cryoscape.models.linear", "cryoscape.models.neural")


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


def _module_files() -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` under ``src/cryoscape``."""
    out: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(name: str) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None outside it)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module named by a (possibly relative) ``from ... import``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.AST) -> list[str]:
    """Modules of the package that one import statement names."""
    if isinstance(node, ast.Import):
        found = [_resolve(alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = _absolute(module, node)
        found = [_resolve(f"{base}.{alias.name}") if f"{base}.{alias.name}" in MODULES else _resolve(base)
                 for alias in node.names]
    else:
        return []
    return [t for t in found if t is not None]


def _inside(child: str, package: str) -> bool:
    return child.startswith(package + ".")


def module_edges() -> list[Edge]:
    """Every import edge between modules of the package (own-children edges of ``__init__`` left out)."""
    edges: list[Edge] = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(SRC.parent))
        for node in ast.walk(tree):
            for target in _targets(module, node):
                if target == module or (_is_package(module) and _inside(target, module)):
                    continue
                edges.append(Edge(module, target, rel, node.lineno))
    return edges


def subpackage_of(module: str) -> str:
    """``cryoscape.a.b`` → ``a``; a top-level module is its own node; the root package is ``cryoscape``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PACKAGE


def subpackage_edges(edges: list[Edge]) -> list[Edge]:
    """The module edges lifted to subpackages (root ``__init__`` edges and edges within one subpackage left out)."""
    out = []
    for e in edges:
        a, b = subpackage_of(e.source), subpackage_of(e.target)
        if a != b and e.source != PACKAGE:
            out.append(Edge(a, b, e.path, e.line))
    return out


def _adjacency(edges: list[Edge]) -> dict[str, dict[str, Edge]]:
    """source → target → the first edge seen (for its file and line)."""
    adj: dict[str, dict[str, Edge]] = {}
    for e in edges:
        adj.setdefault(e.source, {}).setdefault(e.target, e)
        adj.setdefault(e.target, {})
    return adj


def strongly_connected(adj: dict[str, dict[str, Edge]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    for root in sorted(adj):
        if root in index:
            continue
        work = [(root, iter(sorted(adj[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        comps.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(adj[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return sorted(comps)


def one_cycle(adj: dict[str, dict[str, Edge]], comp: list[str]) -> list[Edge]:
    """A shortest cycle through the first node of a component, as its edges (breadth-first search)."""
    members = set(comp)
    start = comp[0]
    parent: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for target, edge in sorted(adj[node].items()):
                if target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, parent[path[0].source])
                    return path
                if target in members and target not in parent:
                    parent[target] = edge
                    nxt.append(target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {comp}")


def cycle_report(edges: list[Edge]) -> list[str]:
    """One line per cycle: the members, then each import of one cycle with its file and line."""
    adj = _adjacency(edges)
    lines = []
    for comp in strongly_connected(adj):
        cycle = one_cycle(adj, comp)
        chain = " -> ".join([e.source for e in cycle] + [cycle[0].source])
        steps = "; ".join(f"{e.source} imports {e.target} at {e.where()}" for e in cycle)
        members = set(comp)
        inside = [e for node in comp for t, e in sorted(adj[node].items()) if t in members]
        lines.append(f"cycle among {len(comp)} ({', '.join(comp)}): {chain}\n    via: {steps}\n"
                     f"    all {len(inside)} imports inside: " + "; ".join(f"{e.source} -> {e.target} ({e.where()})"
                                                                        for e in inside))
    return lines


def _fail_if(problems: list[str], headline: str) -> None:
    """Fail with the headline and one problem per line, without pytest's repr of the list."""
    if problems:
        pytest.fail(f"{headline}:\n" + "\n".join(problems), pytrace=False)


# ---------------------------------------------------------------------------- tests
def test_no_source_file_over_the_line_limit():
    counts = {p: len(p.read_text(encoding="utf-8").splitlines()) for p in MODULES.values()}
    over = sorted(((n, p) for p, n in counts.items() if n > MAX_LINES), reverse=True)
    _fail_if([f"  {n:5d}  {p.relative_to(SRC.parent)}" for n, p in over],
             f"{len(over)} file(s) under src/ over {MAX_LINES} lines; split them")


def test_no_import_cycle_between_subpackages():
    nodes = {subpackage_of(m) for m in MODULES}
    assert set(SUBPACKAGES) <= nodes, f"subpackages missing from src/: {sorted(set(SUBPACKAGES) - nodes)}"
    cycles = cycle_report(subpackage_edges(module_edges()))
    _fail_if(cycles, f"{len(cycles)} import cycle(s) between subpackages of cryoscape")


def test_no_import_cycle_between_modules():
    cycles = cycle_report(module_edges())
    _fail_if(cycles, f"{len(cycles)} import cycle(s) between modules of cryoscape")


def test_inference_takes_any_representation():
    bad = [e for e in module_edges() if e.source.startswith("cryoscape.inference")
           and any(e.target == f or e.target.startswith(f + ".") for f in FORBIDDEN_IN_INFERENCE)]
    _fail_if([f"  {e.source} imports {e.target} at {e.where()}" for e in bad],
             f"cryoscape.inference must not import a concrete representation ({', '.join(FORBIDDEN_IN_INFERENCE)});"
             " take the representation through the protocol of cryoscape.models")


# ---------------------------------------------------------------- the graph reader itself
def test_cycle_finder_on_a_known_graph():
    edges = [Edge("a", "b", "a.py", 1), Edge("b", "c", "b.py", 2), Edge("c", "a", "c.py", 3),
             Edge("c", "d", "c.py", 4), Edge("d", "e", "d.py", 5), Edge("e", "d", "e.py", 6)]
    adj = _adjacency(edges)
    assert strongly_connected(adj) == [["a", "b", "c"], ["d", "e"]]
    assert [e.line for e in one_cycle(adj, ["a", "b", "c"])] == [1, 2, 3]
    report = cycle_report(edges)
    assert report[0].startswith("cycle among 3 (a, b, c): a -> b -> c -> a") and "c imports a at c.py:3" in report[0]
    assert "all 3 imports inside" in report[0] and "c -> d" not in report[0]
    assert cycle_report(edges[:2]) == []


def test_import_resolution():
    def targets(module: str, source: str) -> list[str]:
        return [t for node in ast.walk(ast.parse(source)) for t in _targets(module, node)]

    assert "cryoscape.imaging._grid" in targets("cryoscape.imaging.forward", "from ._grid import padded_size")
    assert targets("cryoscape.imaging", "from . import forward") == ["cryoscape.imaging.forward"]
    assert targets("cryoscape.cli.main", "from cryoscape.errors import CryoscapeError") == ["cryoscape.errors"]
    assert targets("cryoscape.cli.main", "import cryoscape.report.figures") == ["cryoscape.report.figures"]
    assert targets("cryoscape.cli.main", "import numpy") == []
