"""Render a study report: PNG figures and an HTML page, written atomically.

``build_report`` writes files for ``hpod report``; ``report_html`` returns one
self-contained page (figures inline as base64) for ``GET /v1/studies/{id}/report``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.errors import UsageError
from hpod.report._data import ReportData, _metric, load_report_data
from hpod.report._figures import COST_NAMES, FIGURES, format_value

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hpod.store import Store

__all__ = ["FORMATS", "HTML_NAME", "ReportResult", "build_report", "render_figures", "report_html"]

log = logging.getLogger(__name__)
FORMATS = ("html", "png")
HTML_NAME = "report.html"


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote. ``paths``: every file, the HTML page last."""

    out_dir: Path
    paths: list[Path]
    html: Path | None
    pngs: list[Path]
    selected: int | None
    notes: list[str] = field(default_factory=list)


@dataclass
class _Rendered:
    stem: str
    title: str
    png: bytes


def _png_bytes(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # Fixed metadata: the same study renders to the same bytes (no timestamp inside).
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def render_figures(data: ReportData) -> tuple[list[_Rendered], list[str]]:
    """Draw every figure that applies to ``data``; a figure that fails is a note, not a crash."""
    rendered: list[_Rendered] = []
    notes: list[str] = list(data.notes)
    for stem, title, draw in FIGURES:
        try:
            fig, why = draw(data)
        except Exception as exc:  # one broken figure must not cost the whole report
            log.exception("report figure %s failed", stem)
            notes.append(f"{title}: failed to draw ({type(exc).__name__}: {exc})")
            continue
        notes.extend(why)
        if fig is not None:
            rendered.append(_Rendered(stem, title, _png_bytes(fig)))
    return rendered, notes


# ---------------------------------------------------------------------- HTML
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222;
padding:0 1em}
h1{margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.25em .6em;
text-align:right}th{background:#f4f4f4}td.l,th.l{text-align:left}tr.sel td{background:#fde8e8;font-weight:600}
img{max-width:100%;height:auto;border:1px solid #eee}.muted{color:#666;font-size:.9em}
.better{color:#2ca02c}.worse{color:#d62728}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return _e(value)


def _table(headers: list[str], rows: Iterable[list[Any]], *, left: int = 1, highlight: Iterable[bool] = ()) -> str:
    marks = list(highlight)
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cells = "".join(f'<td class="l">{_num(v)}</td>' if i < left else f"<td>{_num(v)}</td>"
                        for i, v in enumerate(row))
        cls = ' class="sel"' if k < len(marks) and marks[k] else ""
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary_html(data: ReportData) -> str:
    row = data.row
    counts = ", ".join(f"{k.lower()} {v}" for k, v in sorted(data.counts.items())) or "none"
    hv = data.hv_curve[-1][1] if data.hv_curve else row.hypervolume
    def point(values: list[float] | None) -> str:
        return ", ".join(f"{n}={format_value(n, v)}" for n, v in zip(
            data.objective_names, [v if d == "minimize" else -v for v, d in zip(values or [], data.directions)]))

    ref = point(data.reference_point)
    items = [
        ("objective", data.spec.objective.name),
        ("objectives", ", ".join(f"{n} ({d})" for n, d in zip(data.objective_names, data.directions))),
        ("constraints", ", ".join(data.constraint_names) or "none"),
        ("state", row.state + (f" — {row.message}" if row.message else "")),
        ("trials", counts),
        ("budget", f"{data.spec.budget.n_trials} trials" if data.spec.budget.n_trials else "–"),
        ("seeds per trial", data.spec.seeds),
        ("sampler", f"{row.sampler_name or data.spec.sampler.name}"
                    + (f" — {row.sampler_reason}" if row.sampler_reason else "")),
        ("Pareto front", f"{len(data.front)} feasible non-dominated trials"),
        ("hypervolume (normalized, 0-1)", _num(hv)),
        ("ideal point (scales to 0)",
         f"{point(data.ideal_point)} ({data.ideal_point_source})" if data.ideal_point else "–"),
        ("reference point (scales to 1)", f"{ref} ({data.reference_point_source})" if data.reference_point else "–"),
        ("energy spent", f"{row.energy_spent_joules:.4g} J"),
    ]
    rows = "".join(f'<tr><th class="l">{_e(k)}</th><td class="l">{_e(v)}</td></tr>' for k, v in items)
    return f"<table>{rows}</table>"


def _selected_html(data: ReportData) -> str:
    if data.selected is None:
        return "<p>No feasible trial yet, so none is selected.</p>"
    rec = data.by_number()[data.selected]
    how = ("knee: the front trial closest to the utopia point after scaling each objective to [0, 1] over the front"
           if data.selection == "knee" else f"best {data.selection} on the front")
    values = [[n, rec["values"][n]] for n in data.objective_names]
    params = [[k, v] for k, v in sorted(rec["params"].items())]
    extra = [[n, _metric(rec, n)] for n in (*data.quality_names, *COST_NAMES)
             if n not in data.objective_names and _metric(rec, n) is not None]
    return (f"<p>Trial <b>#{data.selected}</b> — {_e(how)}.</p>"
            + _table(["objective", "value"], values) + _table(["parameter", "value"], params)
            + (_table(["metric", "value"], extra) if extra else ""))


def _front_html(data: ReportData) -> str:
    front = data.front_records()
    if not front:
        return "<p>No feasible trial yet.</p>"
    params = sorted({p for r in front for p in r["params"]})
    quality = [n for n in data.quality_names if n not in data.objective_names and any(_metric(r, n) is not None
                                                                              for r in front)]
    headers = ["trial", *data.objective_names, *quality, *params, "seeds", "energy method"]
    rows = []
    for r in front:
        method = (r["measurements"].get("energy_joules") or {}).get("method", "–")
        rows.append([f"#{r['number']}", *[r["values"][n] for n in data.objective_names],
                     *[_metric(r, n) for n in quality], *[r["params"].get(p) for p in params],
                     len(r["seeds"]) or 1, method])
    return _table(headers, rows, highlight=[r["number"] == data.selected for r in front])


def _improvement(improved: Any) -> str:
    return {True: "better", False: "worse"}.get(improved, "–") if isinstance(improved, bool) else "–"


def _compare_html(data: ReportData) -> str:
    if not data.compare:
        return ""
    rows = []
    for r in data.compare["rows"]:
        if not isinstance(r, dict):
            continue
        change = r.get("change_percent")
        rows.append([r.get("metric") or r.get("key"), r.get("baseline"), r.get("best"),
                     f"{change:+.1f} %" if isinstance(change, (int, float)) else "–",
                     _improvement(r.get("improved"))])
    label = {k: v for k, v in data.compare.items() if k != "rows" and isinstance(v, (str, int, float))}
    caption = "; ".join(f"{k}: {v}" for k, v in label.items())
    return ("<h2>Before / after (hpod compare)</h2>" + (f'<p class="muted">{_e(caption)}</p>' if caption else "")
            + _table(["metric", "baseline", "tuned", "change", ""], rows))


def _page(data: ReportData, figures: list[tuple[str, str]], notes: list[str]) -> str:
    """``figures``: (title, img src) in report order."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>hpod report — {_e(data.study)}</title><style>{_CSS}</style></head><body>",
        f"<h1>hpod report — {_e(data.study)}</h1>",
        f'<p class="muted">{_e(data.spec.description + " — " if data.spec.description else "")}generated '
        f'{_e(time.strftime("%Y-%m-%d %H:%M:%S %Z"))} from {len(data.records)} trials.</p>',
        "<h2>Summary</h2>", _summary_html(data),
        "<h2>Selected trial</h2>", _selected_html(data),
        "<h2>Pareto front</h2>", _front_html(data),
        _compare_html(data),
    ]
    for title, src in figures:
        parts.append(f"<h2>{_e(title)}</h2>")
        parts.append(f'<img src="{_e(src)}" alt="{_e(title)}">')
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append('<p class="muted">Rerun with <code>hpod report '
                 f'{_e(data.study)}</code>; the same data is in <code>hpod export {_e(data.study)}</code>.</p>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


# ---------------------------------------------------------------------- public API
def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise UsageError(f"formats: expected one or more of {', '.join(FORMATS)}; got {list(formats)!r}")
    return chosen


def build_report(store: Store, study: str, out_dir: str | Path, *, formats: Iterable[str] = FORMATS,
                 selection: str = "knee") -> ReportResult:
    """Write ``study``'s report into ``out_dir`` and return what was written.

    ``formats``: ``png`` writes one PNG per figure; ``html`` writes ``report.html``,
    which references the PNGs next to it when both are written and embeds them (base64)
    when only ``html`` is asked for. Every file appears whole or not at all: it is
    written in a temporary directory inside ``out_dir`` and renamed into place, the page
    last, so a reader never sees a page whose images are missing.

    Raises :class:`~hpod.errors.StudyNotFound` / :class:`~hpod.errors.UsageError`
    (unknown study, format or selection).
    """
    chosen = _check_formats(formats)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"out_dir: {out} exists and is not a directory")
    data = load_report_data(store, study, selection=selection)
    rendered, notes = render_figures(data)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".hpod-report-", dir=out))
    written: list[Path] = []
    pngs: list[Path] = []
    page: Path | None = None
    try:
        staged: list[tuple[Path, Path]] = []
        if "png" in chosen:
            for r in rendered:
                (tmp / f"{r.stem}.png").write_bytes(r.png)
                staged.append((tmp / f"{r.stem}.png", out / f"{r.stem}.png"))
            # The data behind the figures, for people who plot their own.
            (tmp / "report.json").write_text(json.dumps(_summary_json(data), indent=2, default=str),
                                             encoding="utf-8")
            staged.append((tmp / "report.json", out / "report.json"))
        if "html" in chosen:
            srcs = [(r.title, f"{r.stem}.png" if "png" in chosen else _inline(r.png)) for r in rendered]
            (tmp / HTML_NAME).write_text(_page(data, srcs, notes), encoding="utf-8")
            staged.append((tmp / HTML_NAME, out / HTML_NAME))
        for src, dst in staged:
            os.replace(src, dst)
            written.append(dst)
            if dst.suffix == ".png":
                pngs.append(dst)
            elif dst.suffix == ".html":
                page = dst
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ReportResult(out_dir=out, paths=written, html=page, pngs=pngs, selected=data.selected, notes=notes)


def _summary_json(data: ReportData) -> dict[str, Any]:
    return {
        "study": data.study,
        "objectives": dict(zip(data.objective_names, data.directions)),
        "constraints": data.constraint_names,
        "counts": data.counts,
        "pareto_front": data.front,
        "selected": data.selected,
        "selection": data.selection,
        "reference_point": dict(zip(data.objective_names, data.reference_point or [])) or None,
        "reference_point_orientation": "minimization (maximized objectives negated)",
        "reference_point_source": data.reference_point_source,
        "ideal_point": dict(zip(data.objective_names, data.ideal_point or [])) or None,
        "ideal_point_source": data.ideal_point_source,
        # normalized: each objective scaled from its ideal (0) to its reference value (1)
        "hypervolume_by_trial": [{"trial": n, "hypervolume": v} for n, v in data.hv_curve],
    }


def report_html(store: Store, study: str, *, selection: str = "knee") -> str:
    """The report as one self-contained HTML page (figures inline as base64 PNGs)."""
    data = load_report_data(store, study, selection=selection)
    rendered, notes = render_figures(data)
    return _page(data, [(r.title, _inline(r.png)) for r in rendered], notes)
