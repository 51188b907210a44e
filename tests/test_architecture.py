"""No import cycles among llmplan's modules (docs/architecture.md).

The layer contract (``lint-imports``, pyproject ``[tool.importlinter]``) forbids upward imports
between packages; this test forbids cycles between modules, also inside one package and also
through imports made inside functions or under ``TYPE_CHECKING`` (a lazy import hides a cycle
from Python, not from the reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import llmplan

ROOT = Path(llmplan.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(name: str, path: Path, node: ast.AST, modules: set[str]) -> str | None:
    """The llmplan module ``node`` imports (the most specific one that exists), or None."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = name.split(".")
            if path.name != "__init__.py":
                base = base[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        # ``from pkg import sub`` imports the submodule ``pkg.sub`` when there is one.
        targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
    else:
        return None
    for t in targets:
        while t and t not in modules:
            t = t.rpartition(".")[0]
        if t and t != name:
            return t
    return None


def import_graph() -> nx.DiGraph:
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            target = _imported(name, path, node, set(files))
            if target is not None:
                graph.add_edge(name, target)
    return graph


def test_graph_sees_the_imports_it_must() -> None:
    g = import_graph()
    # a module-level import, a function-level one and a relative-free ``from pkg import mod``
    assert g.has_edge("llmplan.plan.helr", "llmplan.plan.problem")
    assert g.has_edge("llmplan.runtime.factory", "llmplan.runtime.workers.engine")
    assert g.has_edge("llmplan.workload.loader", "llmplan.workload.prefixed")


def test_no_import_cycles() -> None:
    g = import_graph()
    groups = [sorted(c) for c in nx.strongly_connected_components(g) if len(c) > 1]
    assert not groups, "import cycles (move code down a layer, see docs/architecture.md): " + "; ".join(
        " <-> ".join(c) for c in groups
    )
