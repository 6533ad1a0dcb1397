"""The architecture holds: the core is pure, the imports run one way, and none runs in a cycle.

Read from the source (``ast``), not from ``sys.modules``: an import inside a function counts as
much as one at the top of a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dbsync

PACKAGE = Path(dbsync.__file__).parent

TOUCHES_THE_OUTSIDE = {
    "fcntl",
    "gc",
    "glob",
    "io",
    "mmap",
    "montydb",
    "os",
    "pathlib",
    "pymongo",
    "shutil",
    "socket",
    "sqlite3",
    "subprocess",
    "tempfile",
    "typer",
}
"""Modules the pure core must not import: the file system, processes, stores, the CLI."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(tree: ast.AST) -> list[tuple[str, bool]]:
    """Every module an ``ast`` imports (``from p import m`` names ``p.m`` when it is a module
    of dbsync), and whether the import is at the top level of the module."""
    top = set(map(id, getattr(tree, "body", [])))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.append((full if full in MODULES else node.module, id(node) in top))
    return found


def imports_of(name: str) -> list[tuple[str, bool]]:
    return imported(ast.parse(MODULES[name].read_text()))


def test_the_package_is_found():
    assert "dbsync.core.snapshot" in MODULES and "dbsync.edges.snapshot_files" in MODULES
    assert len([name for name in MODULES if name.startswith("dbsync.core.")]) >= 10


@pytest.mark.parametrize("name", [name for name in MODULES if name.startswith("dbsync.core")])
def test_the_core_imports_only_the_core(name):
    for module, _ in imports_of(name):
        if module.startswith("dbsync"):
            assert module.startswith("dbsync.core") or module == "dbsync.errors", module
        assert module.split(".")[0] not in TOUCHES_THE_OUTSIDE, module


@pytest.mark.parametrize("name", [name for name in MODULES if name.startswith("dbsync.core")])
def test_the_core_opens_no_file(name):
    tree = ast.parse(MODULES[name].read_text())
    calls = [node.func for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert not [call for call in calls if isinstance(call, ast.Name) and call.id == "open"]


ABOVE = {
    "dbsync.core.": ("dbsync.edges", "dbsync.runs", "dbsync.integration", "dbsync.agent"),
    "dbsync.edges.": ("dbsync.runs", "dbsync.integration", "dbsync.agent", "dbsync.cli"),
    "dbsync.runs.": ("dbsync.integration", "dbsync.agent", "dbsync.cli"),
}
"""What each layer must not import: the layers above it. ``integration`` (what git runs) calls
the runs, never the reverse; the agent and the face call both."""


def upward(name: str, imports: list[tuple[str, bool]]) -> list[str]:
    """The imports of module ``name`` that reach a layer above its own."""
    above = next((banned for layer, banned in ABOVE.items() if name.startswith(layer)), ())
    return [module for module, _ in imports if above and module.startswith(above)]


@pytest.mark.parametrize("name", [name for name in MODULES if name.startswith("dbsync.edges")])
def test_the_edges_import_no_service(name):
    assert upward(name, imports_of(name)) == []


@pytest.mark.parametrize("name", [name for name in MODULES if name.startswith("dbsync.runs.")])
def test_the_runs_import_no_git_integration_agent_or_face(name):
    assert upward(name, imports_of(name)) == []


def test_an_upward_import_inside_a_function_is_found():
    tree = ast.parse("import json\ndef f():\n    from dbsync.integration import hook_runs\n")
    found = ["dbsync.integration.hook_runs"]
    assert upward("dbsync.runs.sync", imported(tree)) == found
    assert upward("dbsync.edges.git", imported(tree)) == found
    assert upward("dbsync.integration.installer", imported(tree)) == []


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        graph[name] = {module for module, _ in imports_of(name) if module in MODULES}
    return graph


def test_no_module_imports_itself_through_others():
    assert cycles(import_graph()) == []


def test_a_cycle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_imports_inside_functions_count():
    tree = ast.parse("import json\ndef f():\n    from dbsync.edges import git\n")
    assert imported(tree) == [("json", True), ("dbsync.edges.git", False)]
