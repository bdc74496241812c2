"""``hpod report``: a study's figures as PNG files and an HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hpod.cli._common import StateDirOpt, StorageOpt, app, err, out
from hpod.cli._storage import _open_store
from hpod.errors import UsageError
from hpod.report import FORMATS, build_report


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="Study name.")],
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Directory to write into "
                                                    "(default: ./hpod-report-STUDY).")] = None,
    fmt: Annotated[list[str] | None, typer.Option(
        "--format", help="html (one self-contained page, images inline) or png (the figures only); "
                         "repeat or give both (html,png) for a page that links PNG files next to it "
                         "(the default).")] = None,
    select: Annotated[str, typer.Option("--select", help="Trial to highlight: knee (default) or an objective "
                                                          "name (its best front trial).")] = "knee",
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Render a study's report: Pareto front, hypervolume over trials, importances, costs, constraints."""

    formats = [part for item in (fmt or list(FORMATS)) for part in item.split(",") if part.strip()]
    bad = [f for f in formats if f.strip().lower() not in FORMATS]
    if bad:
        raise UsageError(f"--format: expected html, png or html,png (found {', '.join(map(repr, bad))})")
    store, _ = _open_store(state_dir, storage)
    target = out_dir if out_dir is not None else Path.cwd() / f"hpod-report-{study}"
    result = build_report(store, study, target, formats=formats, selection=select)
    for note in result.notes:
        err.print(f"[dim]note: {note}[/]", highlight=False)
    for path in result.paths:
        out.print(str(path), highlight=False, soft_wrap=True)
    if result.html is not None:
        err.print(f"open {result.html} in a browser", highlight=False)
