"""The daemon never branches on an objective's name: outside ``hpod/objectives/`` no
module imports a built-in objective's module or holds a string that names one
(docstrings and comments may mention them; code may not). Everything an objective can
do is asked through its capabilities (``hpod.objectives.base``)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "hpod"
OBJECTIVES = PACKAGE / "objectives"


def _builtin_modules() -> list[str]:
    """hpod.objectives' modules and packages that define objectives (all but the
    protocol's own modules)."""
    generic = {"__init__", "base", "labelled"}
    return sorted(p.stem if p.is_file() else p.name for p in OBJECTIVES.iterdir()
                  if (p.suffix == ".py" and p.stem not in generic) or (p.is_dir() and (p / "__init__.py").exists()))


def _builtin_names() -> list[str]:
    from hpod.objectives.base import registered_objectives

    return registered_objectives()


def _docstring_ids(tree: ast.Module) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = getattr(node, "body", [])
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _violations(path: Path, modules: list[str], names: list[str]) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstring_ids(tree)
    found = []
    module_re = re.compile(r"\bhpod\.objectives\.(" + "|".join(map(re.escape, modules)) + r")\b")
    name_re = re.compile(r"(?<![\w:])(" + "|".join(map(re.escape, names)) + r"|t5)(?![\w])")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and module_re.search(node.module + "."):
            found.append(f"{path}:{node.lineno}: imports {node.module}")
        elif isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno}: imports {a.name}" for a in node.names if module_re.search(a.name + ".")]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
              and (name_re.search(node.value) or module_re.search(node.value))):
            found.append(f"{path}:{node.lineno}: names a built-in objective in {node.value[:60]!r}")
    return found


def test_builtin_objectives_are_found() -> None:
    modules, names = _builtin_modules(), _builtin_names()
    assert {"t5_lora", "synthetic", "text_classifier"} <= set(modules)
    assert {"t5_lora", "text_classifier"} <= set(names)


def test_no_module_outside_objectives_names_a_builtin_objective() -> None:
    modules, names = _builtin_modules(), _builtin_names()
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if OBJECTIVES in path.parents:
            continue
        problems += _violations(path, modules, names)
    assert not problems, "\n".join(problems)


def test_the_check_catches_a_name_branch(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text('"""Mentions t5_lora in a docstring: allowed."""\n'
                   'from hpod.objectives.t5_lora.options import parse_options\n'
                   'def f(spec):\n    return spec.objective.name == "t5_lora" or spec.name.startswith("t5")\n')
    problems = _violations(bad, _builtin_modules(), _builtin_names())
    assert len(problems) == 3, problems
