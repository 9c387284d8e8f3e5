"""The shape of the package: imports inside moa/ point one way (no circle, at module level or inside
functions), and modules are split at boundaries, never grown past 800 lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "moa"
MAX_LINES = 800


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that runs (at module level or in a function), not those under TYPE_CHECKING."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for sub in node.orelse:
                yield from _runtime_imports(sub)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from _runtime_imports(node)


def import_graph() -> nx.DiGraph:
    """Module -> module edges inside moa. ``from pkg import sub`` is an edge to ``pkg.sub`` when that
    is a module (importing a submodule runs its package's ``__init__`` too, but the lazy package
    roots import nothing at import time, so the edge that matters is the submodule)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: nx.DiGraph = nx.DiGraph()
    for name, path in modules.items():
        graph.add_node(name)
        is_pkg = path.name == "__init__.py"
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parent = name.split(".") if is_pkg else name.split(".")[:-1]
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [base, *subs]
            for target in targets:
                if target in modules and target != name:
                    graph.add_edge(name, target)
    return graph


def test_no_import_circle_in_moa() -> None:
    """No two modules of moa/ import each other, directly or through others."""
    circles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert circles == []


def test_the_import_walk_sees_circles() -> None:
    """The walk finds real edges (a circle check over an empty graph would prove nothing)."""
    g = import_graph()
    assert g.has_edge("moa._run.engine", "moa.calls.call")
    assert g.has_edge("moa.topology.definition", "moa._run")
    assert not g.has_edge("moa._run.engine", "moa.topology.definition")


def test_definition_does_not_depend_on_execution_below_topology() -> None:
    """The definition modules (spec, graph, shorthands, prompts) never import the runner."""
    g = import_graph()
    for module in (
        "moa.topology.spec",
        "moa.topology.graph",
        "moa.topology.shorthand",
        "moa.topology.prompts",
    ):
        reached = nx.descendants(g, module)
        assert not any(m.startswith(("moa._run", "moa.calls", "moa.experiment")) for m in reached), module


def test_the_layers_docs_architecture_names() -> None:
    """What docs/architecture.md says of the layers holds: the models reach nothing of moa's above
    errors, results, scrub and _loops (a leaf); `moa/eval` never reaches `moa/experiment`; errors and results import
    nothing of moa's at run time."""
    g = import_graph()

    def reached(prefix: str) -> set[str]:
        return {
            m for n in g if n.startswith(prefix) for m in nx.descendants(g, n) if not m.startswith(prefix)
        }

    assert reached("moa.models") <= {"moa.errors", "moa.results", "moa.scrub", "moa._loops"}
    assert not reached("moa._loops")
    assert not {m for m in reached("moa.eval") if m.startswith("moa.experiment")}
    assert not reached("moa.errors") | reached("moa.results")


def test_modules_are_split_before_800_lines() -> None:
    """No module of moa/ passes 800 lines: split at a clear boundary long before that."""
    big = {
        str(f.relative_to(ROOT)): n
        for f in PACKAGE.rglob("*.py")
        if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert big == {}
