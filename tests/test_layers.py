"""normlab's modules import one way: data -> norms/models -> train -> engine -> report -> cli.

The imports are read with ``ast`` (every import, at the top or inside a function), so a cycle
hidden in a function-level import fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import normlab

ROOT = Path(normlab.__file__).parent


def module_name(path: Path) -> str:
    parts = ["normlab", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The normlab modules that ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text())
    at_top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from . import x` and `from .report import build` import the submodule x / build.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        # A package's __init__ importing its own submodule inside a function is a lazy re-export
        # (`normlab.explain.draw_figure` for `normlab.explain.figure.draw_figure`), not a layer.
        lazy_export = path.name == "__init__.py" and id(node) not in at_top
        found |= {t for t in targets if t in modules and t != name and not (lazy_export and t.startswith(name + "."))}
    return found


def graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports(p, modules) for p in paths}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_inside_normlab():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_point_one_way():
    edges = graph()
    below_engine = [m for m in edges if m.startswith(("normlab.data", "normlab.train", "normlab.runs", "normlab.models",
                                                      "normlab.norms", "normlab.storage", "normlab.executors"))]
    for module in below_engine:
        assert not {m for m in edges[module] if m.startswith(("normlab.engine", "normlab.report", "normlab.cli", "normlab.api"))}, module
    for module in (m for m in edges if m.startswith("normlab.report")):
        assert not {m for m in edges[module] if m in ("normlab.engine", "normlab.cli", "normlab.api")}, module
    assert "normlab.engine" not in edges["normlab.runs"] and "normlab.report.build" not in edges["normlab.engine"]
