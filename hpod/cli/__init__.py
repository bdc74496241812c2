"""The ``hpod`` console script (Typer + rich), one module per command group.

User errors (bad spec, unknown study, unreachable storage URL) print one message and
exit with code 2; hpod never prints a traceback for them.

Command modules import what their commands need at the top; so that ``hpod --help`` and
``hpod status`` do not pay for torch, Optuna's samplers or the daemon, the root group
imports a command's module only when that command runs (click's lazy-group pattern, on Typer's group).
The list of commands and their one-line summaries are read from the modules' source
(the ``@app.command`` decorators and the functions' docstrings), so they are written once.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
import warnings
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperCommand, TyperGroup

from hpod.cli._common import app, err
from hpod.errors import HpodError, UsageError

__all__ = ["app", "main"]


@dataclass(frozen=True)
class _Entry:
    module: str
    summary: str


@cache
def _command_table() -> dict[str, _Entry]:
    """``{command name: (module, summary)}`` from the ``@app.command`` decorators of the
    public modules of this package."""
    table: dict[str, _Entry] = {}
    for path in sorted(Path(__file__).parent.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if not (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                        and deco.func.attr == "command" and isinstance(deco.func.value, ast.Name)
                        and deco.func.value.id == "app"):
                    continue
                first = deco.args[0] if deco.args else None
                name = first.value if isinstance(first, ast.Constant) and isinstance(first.value, str) \
                    else node.name.replace("_", "-")
                doc = (ast.get_docstring(node) or "").strip().split("\n\n")[0].replace("\n", " ")
                table[name] = _Entry(module=f"hpod.cli.{path.stem}", summary=doc)
    return table


class _LazyGroup(TyperGroup):
    """Lists every command without importing it; imports a command's module to run it."""

    _listing = False

    def list_commands(self, ctx: Any) -> list[str]:
        return list(_command_table())

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        entry = _command_table().get(cmd_name)
        if entry is None:
            return None
        if self._listing:
            return TyperCommand(cmd_name, help=entry.summary, short_help=entry.summary)
        importlib.import_module(entry.module)
        group = typer.main.get_command(app)
        return getattr(group, "commands", {}).get(cmd_name)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app.info.cls = _LazyGroup


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors exit 2 with one message."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Library deprecation notices (transformers, peft) are for developers, not CLI users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app(args=argv, standalone_mode=True)
    except UsageError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except HpodError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)

