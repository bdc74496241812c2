"""``hpod feedback`` and ``hpod monitor``: labelled records a retune trains on, and the
reference of a study's data monitors — written to the database (no daemon needed; a
running daemon sees them at its next check)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hpod.cli._common import JsonOpt, StateDirOpt, StorageOpt, _print_json, app, err
from hpod.cli._storage import _open_store
from hpod.core.feedback import add_examples_file, set_reference_file

__all__ = ["feedback", "monitor"]


@app.command()
def feedback(
    study: Annotated[str, typer.Argument(help="Study name (its retune versions share its feedback).")],
    file: Annotated[Path, typer.Argument(help="A .jsonl or .csv file of labelled records (the objective's input "
                                               "and reference-output fields).")],
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Store labelled records (input + reference output) as a new data window for retunes."""
    store, _ = _open_store(state_dir, storage)
    window = add_examples_file(store, study, file)
    if as_json:
        _print_json(window)
        return
    err.print(f"stored {window['records']} labelled records of {file} as window {window['window']} of "
              f"{window['study']!r} (fields {', '.join(window['fields'])}); the next retune trains on them")


class MonitorAction(StrEnum):
    set_reference = "set-reference"


@app.command()
def monitor(
    action: Annotated[MonitorAction, typer.Argument(help="set-reference: the FILE's texts become the reference.")],
    study: Annotated[str, typer.Argument(help="Study name.")],
    file: Annotated[Path, typer.Argument(help="A .jsonl or .csv file; each record's input field is one text.")],
    monitor_name: Annotated[str | None, typer.Option("--monitor", help="Only this data monitor (default: "
                                                                          "every data monitor of the study).")] = None,
    field: Annotated[str | None, typer.Option("--field", help="The text field (default: the objective's input "
                                                                 "field, else 'text').")] = None,
    as_json: JsonOpt = False,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Set the reference of a study's data monitors (hpod monitor set-reference STUDY FILE)."""
    store, _ = _open_store(state_dir, storage)
    window = set_reference_file(store, study, file, monitor=monitor_name, field=field)
    if as_json:
        _print_json(window)
        return
    err.print(f"reference of {', '.join(window['monitors'])} ({window['study']!r}): {window['records']} texts of "
              f"{file} (window {window['window']}); adopted at the monitors' next check")
