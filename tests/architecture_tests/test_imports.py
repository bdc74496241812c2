"""The import rule of docs/architecture.md, enforced: hpod's layers import downwards only,
no module cycles, and no function-level imports of hpod's own modules (those are for
heavy third-party libraries)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpod"

#: bottom to top; a module may import its own layer and the layers below it
LAYERS = ("errors", "objectives", "spec", "monitors", "store", "execution", "core", "report", "http",
          "daemon", "cli")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return -1  # hpod/__init__.py: the version, below everything
    return LAYERS.index(parts[1])


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, module: str) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """(module-level imports, function-level imports) of hpod modules, with line numbers.
    Imports under ``if TYPE_CHECKING:`` are annotations only and count as neither."""
    top: list[tuple[str, int]] = []
    nested: list[tuple[str, int]] = []

    def names(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        base = node.module or ""
        if node.level:
            pkg = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
            base = ".".join(pkg + ([base] if base else []))
        return [base]

    def visit(node: ast.AST, depth: int) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in names(child):
                    if name == "hpod" or name.startswith("hpod."):
                        (nested if depth else top).append((name, child.lineno))
            inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(tree, 0)
    return top, nested


def _graph() -> dict[str, tuple[list[tuple[str, int]], list[tuple[str, int]]]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        graph[module] = _imports(ast.parse(path.read_text(encoding="utf-8")), module)
    return graph


def test_layers_import_downwards_only() -> None:
    upward = []
    for module, (top, nested) in _graph().items():
        for target, line in top + nested:
            if _layer(target) > _layer(module):
                upward.append(f"{module}:{line} imports {target}")
    assert not upward, "upward imports (see docs/architecture.md):\n" + "\n".join(upward)


def test_no_function_level_imports_of_hpod_modules() -> None:
    found = [f"{m}:{line} imports {t}" for m, (_, nested) in _graph().items() for t, line in nested]
    assert not found, "function-level imports of hpod modules (import at the top):\n" + "\n".join(found)


def test_no_import_cycles() -> None:
    graph = _graph()
    modules = set(graph)

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    edges = {m: {r for t, _ in top if (r := resolve(t)) and r != m} for m, (top, _) in graph.items()}
    # a package's __init__ re-exporting its own modules is not a cycle with them
    for m in edges:
        edges[m] = {t for t in edges[m] if not (t.startswith(m + ".") and m in modules and
                                                 (PACKAGE.parent / (m.replace(".", "/") + "/__init__.py")).exists())}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_import_linter_layers_contract() -> None:
    """import-linter's layers contract in pyproject.toml holds (run as `lint-imports` would)."""
    pytest.importorskip("importlinter", reason="import-linter (dev extra) is not installed")
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    proc = subprocess.run([sys.executable, "-c", code, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
