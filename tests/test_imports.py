"""The shape of fedcl's imports: no cycle, and a reason for every import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (ROOT / "fedcl").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _runtime_imports(tree: ast.AST) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import that runs (not under ``if TYPE_CHECKING``), and whether it is nested."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, nested))
            inner = nested or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            visit(child, inner)

    visit(tree, False)
    return found


def _targets(node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    names = (
        [a.name for a in node.names]
        if isinstance(node, ast.Import)
        else [f"{node.module}.{a.name}" for a in node.names] + [node.module or ""]
    )
    found = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """``{module: the fedcl modules it imports}``, at the top and inside functions."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        edges = set()
        for node, _ in _runtime_imports(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                continue  # fedcl imports absolutely
            edges |= _targets(node, modules)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
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

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle_inside_fedcl():
    graph = import_graph()
    assert "fedcl.strategies.catalog" in graph["fedcl.federation"]  # the graph is read
    assert cycles(graph) == []


def test_cycles_are_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _says_why(lines: list[str], line: int) -> bool:
    """Whether import ``line`` (1-based) or its block of imports has a comment."""
    if "#" in lines[line - 1]:
        return True
    above = line - 2
    while above >= 0 and lines[above].strip().startswith(("from ", "import ", ")", "    ")):
        if "#" in lines[above]:
            return True
        above -= 1
    return above >= 0 and lines[above].strip().startswith("#")


def test_every_import_inside_a_function_says_why():
    # start-up time is the reason to import inside a function: say so where it is done
    missing = []
    for name, path in _modules().items():
        source = path.read_text()
        lines = source.splitlines()
        for node, nested in _runtime_imports(ast.parse(source)):
            if nested and not _says_why(lines, node.lineno):
                missing.append(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert missing == [], "\n".join(missing)
