"""What every ``hpod`` command module shares: the Typer app, common options, consoles.

User errors (bad spec, unknown study, unreachable storage URL) print one message
and exit with code 2; hpod never prints a traceback for them. It imports no hpod
layer below the CLI, so listing the commands stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from hpod import __version__

app = typer.Typer(
    name="hpod",
    help="hpod — multi-objective hyperparameter optimization of LoRA fine-tuning (and any objective), "
         "measuring loss, time, memory and energy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
)

StateDirOpt = Annotated[Path | None, typer.Option("--state-dir", help="State directory (default: $HPOD_STATE_DIR "
                                                                           "or the user state dir).")]
StorageOpt = Annotated[str | None, typer.Option("--storage", help="Database URL (default: $HPOD_STORAGE or "
                                                                      "sqlite in the state dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

# Piped output keeps whole tables instead of wrapping them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        out.print(f"hpod {__version__}")
        raise typer.Exit(0)


