"""The report's figures, drawn with matplotlib's object API (no pyplot, so no global
state and no backend switch: safe inside the API server's threads).

Each ``draw_*`` function returns ``(figure or None, notes)``; None means the section
does not apply to this study (no constraints, no ROUGE metrics...) and the notes say why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np

from hpod.report._data import ReportData, _metric, _metric_std, param_importances
from hpod.spec import base_unit

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["COST_NAMES", "FIGURES", "format_value"]

COST_NAMES = ("time_seconds", "memory_bytes", "energy_joules")
#: SI symbols of the base units a metric's name can state (hpod.spec.base_unit)
_SYMBOLS = {"bytes": "B", "joules": "J"}
_PREFIXES = {0: "", 3: "k", 6: "M", 9: "G", 12: "T"}

# One palette for every figure, so a reader learns it once.
C_FRONT = "#1f77b4"
C_DOMINATED = "#9ecae1"
C_INFEASIBLE = "#7f7f7f"
C_SELECTED = "#d62728"
C_GOOD = "#2ca02c"
DPI = 110
#: report.html's page is 1200 px wide: no figure is wider, so none is shrunk unreadably
PAGE_WIDTH_INCHES = 1200 / DPI

Draw = Callable[[ReportData], "tuple[Figure | None, list[str]]"]


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(min(width, PAGE_WIDTH_INCHES), height), dpi=DPI, layout="constrained")


def _time_unit(magnitude: float) -> tuple[float, str]:
    """Seconds per unit and its symbol for durations up to ``magnitude`` seconds:
    s below 2 min, min below 2 h, h above (never kiloseconds)."""
    for factor, unit in ((3600.0, "h"), (60.0, "min")):
        if magnitude >= 2 * factor:
            return factor, unit
    return 1.0, "s"


def format_value(name: str, value: float) -> str:
    """``value`` of metric ``name`` with the unit its name states, SI-scaled for a
    reader: 12.6 min, 1.58 GB, 125 kJ; plain 3 significant digits without a unit."""
    unit = base_unit(name)
    if unit == "seconds":
        factor, symbol = _time_unit(abs(value))
        return f"{value / factor:.3g} {symbol}"
    if unit in _SYMBOLS:
        exponent = 0 if value == 0 else max(0, min(12, math.floor(math.log10(abs(value)) / 3) * 3))
        return f"{value / 10**exponent:.3g} {_PREFIXES[exponent]}{_SYMBOLS[unit]}"
    return f"{value:.3g}"


def _format_axis(axis: Any, name: str) -> None:
    """Ticks in the unit the metric's name states, SI-scaled per axis: s / min / h for
    seconds (ticks at round minutes or hours), B / kB / MB / GB for bytes, J / kJ / MJ for joules."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, MaxNLocator

    unit = base_unit(name)
    if unit == "seconds":
        def scale() -> tuple[float, str]:
            low, high = axis.get_view_interval()
            return _time_unit(max(abs(low), abs(high)))

        class TimeLocator(MaxNLocator):
            def tick_values(self, vmin: float, vmax: float) -> Any:
                factor, _ = _time_unit(max(abs(vmin), abs(vmax)))
                return np.asarray(super().tick_values(vmin / factor, vmax / factor)) * factor

        # fewer ticks along x: the labels are wide
        axis.set_major_locator(TimeLocator(nbins=4 if axis.axis_name == "x" else "auto", steps=[1, 2, 2.5, 5, 10]))
        axis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x / scale()[0]:g} {scale()[1]}"))
    else:
        if axis.axis_name == "x":
            axis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        if unit in _SYMBOLS:
            axis.set_major_formatter(EngFormatter(unit=_SYMBOLS[unit]))


def _label(data: ReportData, name: str) -> str:
    if name in data.objective_names:
        better = "lower" if data.directions[data.objective_names.index(name)] == "minimize" else "higher"
        return f"{name} ({better} is better)"
    return name


def _sorted_feasibility(data: ReportData) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    front = set(data.front)
    on_front = [r for r in data.complete if r["number"] in front]
    dominated = [r for r in data.complete if r["feasible"] and r["number"] not in front]
    infeasible = [r for r in data.complete if not r["feasible"]]
    return on_front, dominated, infeasible


def _legend_once(fig: Figure, ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(4, len(handles)), frameon=False)


# ---------------------------------------------------------------------- Pareto front
def draw_pareto(data: ReportData) -> tuple[Figure | None, list[str]]:
    """The front in 2-D; pairwise panels for 3-4 (or more) objectives."""
    if not data.complete:
        return None, ["Pareto front: no completed trial yet"]
    names = data.objective_names
    on_front, dominated, infeasible = _sorted_feasibility(data)
    notes: list[str] = []
    if len(names) == 1:
        fig = _figure(7.5, 4.8)
        ax = fig.add_subplot()
        _scatter_groups(ax, data, on_front, dominated, infeasible, "__number__", names[0])
        ax.set_xlabel("trial number")
        fig.suptitle(f"{data.study}: {names[0]} per trial (single objective: the front is the best trial)")
        _legend_once(fig, ax)
        return fig, notes
    pairs = list(combinations(names, 2))
    columns = 1 if len(pairs) == 1 else (3 if len(pairs) in (3, 6, 9) else 4)
    rows = math.ceil(len(pairs) / columns)
    fig = _figure(7.5 if columns == 1 else PAGE_WIDTH_INCHES,
                  5.5 if columns == 1 else PAGE_WIDTH_INCHES / columns * 0.82 * rows + 0.6)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (x_name, y_name) in zip(axes, pairs):
        _scatter_groups(ax, data, on_front, dominated, infeasible, x_name, y_name)
    for ax in axes[len(pairs):]:
        ax.set_visible(False)
    sel = f"; selected: trial #{data.selected} ({data.selection})" if data.selected is not None else ""
    fig.suptitle(f"{data.study}: Pareto front of {len(data.front)} feasible trials "
                 f"out of {len(data.complete)} completed{sel}")
    _legend_once(fig, axes[0])
    if len(names) > 2:
        notes.append("Pareto front: pairwise projections; a trial on the front may look dominated in one pair")
    return fig, notes


def _scatter_groups(ax: Axes, data: ReportData, on_front: list[dict[str, Any]], dominated: list[dict[str, Any]],
                    infeasible: list[dict[str, Any]], x_name: str, y_name: str) -> None:
    def xy(recs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
        xs = [float(r["number"]) if x_name == "__number__" else r["values"][x_name] for r in recs]
        return xs, [r["values"][y_name] for r in recs]

    if infeasible:
        ax.scatter(*xy(infeasible), marker="x", s=22, color=C_INFEASIBLE, label="infeasible (violates a constraint)",
                   zorder=2)
    if dominated:
        ax.scatter(*xy(dominated), s=18, color=C_DOMINATED, label="feasible, dominated", zorder=2)
    if on_front:
        fx, fy = xy(on_front)
        ax.scatter(fx, fy, s=42, color=C_FRONT, edgecolor="black", linewidth=0.5, label="Pareto front", zorder=3)
        xerr = [(_metric_std(r, x_name) or 0.0) for r in on_front] if x_name != "__number__" else None
        yerr = [(_metric_std(r, y_name) or 0.0) for r in on_front]
        if any(yerr) or (xerr is not None and any(xerr)):
            ax.errorbar(fx, fy, xerr=xerr if xerr and any(xerr) else None, yerr=yerr if any(yerr) else None,
                        fmt="none", ecolor=C_FRONT, elinewidth=0.8, capsize=2, zorder=2,
                        label="± per-seed std")
        if len(data.objective_names) == 2 and len(on_front) > 1:
            # A true 2-D front is monotone: joining it guides the eye. (Projections of a
            # 3+-D front are not, so they stay unjoined.)
            pts = sorted(zip(fx, fy))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=C_FRONT, alpha=0.35, linewidth=1, zorder=1)
    selected = [r for r in on_front if r["number"] == data.selected]
    if selected:
        sx, sy = xy(selected)
        ax.scatter(sx, sy, marker="*", s=260, color=C_SELECTED, edgecolor="black", linewidth=0.6,
                   label=f"selected #{data.selected}", zorder=4)
    if x_name != "__number__":
        ax.set_xlabel(_label(data, x_name))
        _format_axis(ax.xaxis, x_name)
    ax.set_ylabel(_label(data, y_name))
    _format_axis(ax.yaxis, y_name)
    ax.grid(alpha=0.3)


# ---------------------------------------------------------------------- hypervolume
def draw_hypervolume(data: ReportData) -> tuple[Figure | None, list[str]]:
    if not data.hv_curve:
        why = "no completed trial yet" if not data.complete else "no reference point"
        return None, [f"hypervolume over trials: {why}"]
    numbers = [n for n, _ in data.hv_curve]
    values = [v for _, v in data.hv_curve]
    fig = _figure(8.0, 4.6)
    ax = fig.add_subplot()
    ax.step(numbers, values, where="post", color=C_FRONT, linewidth=2,
            label="normalized hypervolume of the feasible front")
    ax.scatter(numbers, values, s=10, color=C_FRONT, zorder=3)
    improved = [n for (n, v), (_, prev) in zip(data.hv_curve[1:], data.hv_curve[:-1]) if v > prev]
    if improved:
        hv = dict(data.hv_curve)
        ax.scatter(improved, [hv[n] for n in improved], s=36, facecolor="none", edgecolor=C_SELECTED,
                   label="trial improved the front", zorder=4)
    ax.set_xlabel("trial number")
    ax.set_ylabel("normalized hypervolume (1 = ideal in every objective)")
    ax.set_ylim(0, min(1.0, max(values) * 1.15) if max(values) > 0 else 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")

    def point(values_: list[float] | None) -> str:
        return ", ".join(f"{n} {format_value(n, v)}" for n, v in zip(data.objective_names, _unorient(data, values_)))

    fig.suptitle(f"{data.study}: normalized hypervolume after each completed trial (final {values[-1]:.4f})")
    ax.set_title(f"each objective scaled from its ideal (0) to its reference value (1)\n"
                 f"ideal ({data.ideal_point_source}): {point(data.ideal_point)}\n"
                 f"reference ({data.reference_point_source}): {point(data.reference_point)}", fontsize=8)
    return fig, []


def _unorient(data: ReportData, point: list[float] | None) -> list[float]:
    if point is None:
        return []
    return [v if d == "minimize" else -v for v, d in zip(point, data.directions)]


# ---------------------------------------------------------------------- objectives over trials
def draw_objectives(data: ReportData) -> tuple[Figure | None, list[str]]:
    """Each objective per trial, with the best feasible value so far."""
    if not data.complete:
        return None, ["objectives over trials: no completed trial yet"]
    names = data.objective_names
    columns = 1 if len(names) == 1 else 2
    rows = math.ceil(len(names) / columns)
    fig = _figure(5.4 * columns, 3.2 * rows + 0.8)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    seeds_used = False
    for ax, name, direction in zip(axes, names, data.directions):
        feas = [r for r in data.complete if r["feasible"]]
        infeas = [r for r in data.complete if not r["feasible"]]
        if infeas:
            ax.scatter([r["number"] for r in infeas], [r["values"][name] for r in infeas], marker="x", s=20,
                       color=C_INFEASIBLE, label="infeasible")
        if feas:
            xs = [r["number"] for r in feas]
            ys = [r["values"][name] for r in feas]
            errs = [_metric_std(r, name) or 0.0 for r in feas]
            if any(errs):
                seeds_used = True
                ax.errorbar(xs, ys, yerr=errs, fmt="o", markersize=3.5, color=C_DOMINATED, ecolor=C_DOMINATED,
                            capsize=2, label="feasible (± per-seed std)")
            else:
                ax.scatter(xs, ys, s=14, color=C_DOMINATED, label="feasible")
            pick = np.minimum.accumulate if direction == "minimize" else np.maximum.accumulate
            best = pick(np.asarray(ys, dtype=float))
            ax.step(xs, best, where="post", color=C_FRONT, linewidth=2, label="best feasible so far")
        ax.set_title(_label(data, name), fontsize=10)
        ax.set_xlabel("trial number")
        _format_axis(ax.yaxis, name)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle(f"{data.study}: objectives per trial and best so far")
    _legend_once(fig, axes[0])
    return fig, ([] if seeds_used or data.spec.seeds <= 1 else ["error bars: trials ran one seed each"])


# ---------------------------------------------------------------------- parallel coordinates
def _choice_scale(choices: list[Any]) -> Callable[[Any], float]:
    n = len(choices) - 1
    return lambda v: choices.index(v) / n if v in choices else float("nan")


def _log_scale(lo: float, hi: float) -> Callable[[Any], float]:
    return lambda v: (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))


def _linear_scale(lo: float, hi: float) -> Callable[[Any], float]:
    return lambda v: (float(v) - lo) / (hi - lo)


def _param_axes(data: ReportData) -> list[tuple[str, Callable[[Any], float], list[tuple[float, str]]]]:
    """(name, value -> [0, 1], ticks) per tuned parameter, from Optuna's distributions."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    dists: dict[str, Any] = {}
    if data.optuna_study is not None:
        for t in data.optuna_study.get_trials(deepcopy=False):
            if t.state.name == "COMPLETE":
                dists.update(t.distributions)
    out: list[tuple[str, Callable[[Any], float], list[tuple[float, str]]]] = []
    for name in dists:  # the spec's order, which the user chose
        d = dists[name]
        if isinstance(d, CategoricalDistribution):
            choices = list(d.choices)
            if len(choices) < 2:
                continue
            n = len(choices) - 1
            out.append((name, _choice_scale(choices), [(i / n, str(c)) for i, c in enumerate(choices)]))
        elif isinstance(d, (FloatDistribution, IntDistribution)):
            lo, hi, log = float(d.low), float(d.high), bool(d.log)
            if hi <= lo:
                continue
            scale = _log_scale(lo, hi) if log else _linear_scale(lo, hi)
            out.append((name, scale, [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]))
    return out


def draw_parallel(data: ReportData, color_by: str | None = None) -> tuple[Figure | None, list[str]]:
    """Parameters (and objectives, last) of completed trials as lines coloured by an objective."""
    if len(data.complete) < 2:
        return None, ["parallel coordinates: needs at least 2 completed trials"]
    params = _param_axes(data)
    if not params:
        return None, ["parallel coordinates: no tuned parameter"]
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    color_by = color_by or data.objective_names[0]
    objective_axes = []
    for name in data.objective_names:
        col = [r["values"][name] for r in data.complete]
        lo, hi = min(col), max(col)
        objective_axes.append((name, lambda v, lo=lo, hi=hi: (v - lo) / (hi - lo) if hi > lo else 0.5,
                               [(0.0, format_value(name, lo)), (1.0, format_value(name, hi))]))
    axes_def = params + objective_axes
    fig = _figure(max(8.0, 1.1 * len(axes_def) + 2), 5.2)
    ax = fig.add_subplot()
    values = [r["values"][color_by] for r in data.complete]
    norm = Normalize(min(values), max(values) if max(values) > min(values) else min(values) + 1)
    direction = data.directions[data.objective_names.index(color_by)]
    # Better trials in the bright end of the map, whatever the direction.
    cmap = colormaps["viridis_r" if direction == "minimize" else "viridis"]
    xs = np.arange(len(axes_def))
    front = set(data.front)

    def line(r: dict[str, Any]) -> list[float]:
        ys = []
        for name, scale, _ in params:
            ys.append(scale(r["params"][name]) if name in r["params"] else float("nan"))
        for name, scale, _ in objective_axes:
            ys.append(scale(r["values"][name]))
        return ys

    # Draw order: infeasible, then by colour value so the best lines end on top.
    order = sorted(data.complete, key=lambda r: (r["feasible"], -r["values"][color_by] if direction == "minimize"
                                                  else r["values"][color_by]))
    for r in order:
        if not r["feasible"]:
            ax.plot(xs, line(r), color=C_INFEASIBLE, alpha=0.35, linewidth=0.8, linestyle="--")
        else:
            on_front = r["number"] in front
            ax.plot(xs, line(r), color=cmap(norm(r["values"][color_by])), alpha=0.95 if on_front else 0.55,
                    linewidth=2.2 if on_front else 1.0)
    selected = [r for r in data.complete if r["number"] == data.selected]
    if selected:
        ax.plot(xs, line(selected[0]), color=C_SELECTED, linewidth=3, label=f"selected #{data.selected}")
        fig.legend(loc="outside lower right", fontsize=8, frameon=False)
    for x, (_, _, ticks) in zip(xs, axes_def):
        ax.axvline(float(x), color="black", linewidth=0.8)
        for y, text in ticks:
            ax.text(x + 0.04, y, text, fontsize=7, va="center", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 0.5})
    ax.set_xticks(xs, [n if n not in data.objective_names else f"[{n}]" for n, _, _ in axes_def], rotation=20,
                  ha="right", fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_def) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=_label(data, color_by), pad=0.01)
    fig.suptitle(f"{data.study}: parameters of completed trials, coloured by {color_by}\n"
                 "(thick: Pareto front; dashed grey: infeasible; [objectives] last, each from its lowest to its "
                 "highest value)", fontsize=10)
    return fig, []


# ---------------------------------------------------------------------- importances
def draw_importances(data: ReportData) -> tuple[Figure | None, list[str]]:
    importances, notes = param_importances(data)
    if not importances:
        return None, notes
    params = sorted({p for imp in importances.values() for p in imp},
                    key=lambda p: -max(imp.get(p, 0.0) for imp in importances.values()))
    objectives = list(importances)
    fig = _figure(8.5, max(3.0, 0.45 * len(params) * max(1, len(objectives) / 2) + 1.5))
    ax = fig.add_subplot()
    height = 0.8 / len(objectives)
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    ys = np.arange(len(params))
    for i, name in enumerate(objectives):
        shares = [importances[name].get(p, 0.0) for p in params]
        ax.barh(ys + (i - (len(objectives) - 1) / 2) * height, shares, height=height, color=palette(i), label=name)
    ax.set_yticks(ys, params)
    ax.invert_yaxis()
    ax.set_xlabel("importance (fANOVA share of the objective's variance)")
    ax.set_xlim(0, 1)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{data.study}: parameter importance per objective ({len(data.complete)} completed trials)")
    return fig, notes


# ---------------------------------------------------------------------- costs of the front
def draw_front_costs(data: ReportData) -> tuple[Figure | None, list[str]]:
    front = data.front_records()
    if not front:
        return None, ["cost breakdown: the study has no feasible trial yet"]
    names = [n for n in COST_NAMES if any(_metric(r, n) is not None for r in front)]
    if not names:
        return None, ["cost breakdown: the front's trials report no time, memory or energy"]
    # one row per cost, sharing the trials' axis: readable at the page's width
    fig = _figure(PAGE_WIDTH_INCHES, 2.3 * len(names) + 1.0)
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True).ravel()
    labels = [f"#{r['number']}" for r in front]
    xs = np.arange(len(front))
    for ax, name in zip(axes, names):
        ys = [_metric(r, name) or 0.0 for r in front]
        errs = [_metric_std(r, name) or 0.0 for r in front]
        colors = [C_SELECTED if r["number"] == data.selected else C_FRONT for r in front]
        ax.bar(xs, ys, color=colors, yerr=errs if any(errs) else None, capsize=2)
        methods = sorted({(r.get("measurements", {}).get(name) or {}).get("method") or "objective" for r in front})
        ax.set_title(f"{name} ({', '.join(methods)})", fontsize=9)
        ax.set_xticks(xs, labels, rotation=60 if len(front) > 20 else 0, fontsize=8)
        _format_axis(ax.yaxis, name)
        ax.grid(axis="y", alpha=0.3)
    first = data.objective_names[0]
    fig.suptitle(f"{data.study}: cost of each Pareto-front trial, sorted by {first} (red: selected)")
    return fig, []


# ---------------------------------------------------------------------- constraints
def draw_constraints(data: ReportData) -> tuple[Figure | None, list[str]]:
    if not data.constraint_names:
        return None, ["constraint satisfaction: the study has no constraints"]
    recs = [r for r in data.complete if r["constraints"]]
    if not recs:
        return None, ["constraint satisfaction: no completed trial yet"]
    n = len(data.constraint_names)
    columns = min(3, n)
    rows = math.ceil(n / columns)
    fig = _figure(max(6.5, PAGE_WIDTH_INCHES / 3 * columns), 3.4 * rows + 0.9)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, data.constraint_names):
        pts = [(r["number"], r["constraints"][name]) for r in recs if name in r["constraints"]]
        ok = [(x, v) for x, v in pts if v <= 0]
        bad = [(x, v) for x, v in pts if v > 0]
        if ok:
            ax.scatter(*zip(*ok), s=16, color=C_GOOD, label="satisfied")
        if bad:
            ax.scatter(*zip(*bad), s=24, marker="x", color=C_SELECTED, label="violated")
        ax.axhline(0, color="black", linewidth=0.8)
        share = 100.0 * len(ok) / len(pts) if pts else 0.0
        ax.set_title(f"{name}\n{share:.0f} % of {len(pts)} trials satisfy it", fontsize=9)
        ax.set_xlabel("trial number")
        ax.set_ylabel("violation (> 0 violates)")
        metric = name.split()[0]
        _format_axis(ax.yaxis, metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[n:]:
        ax.set_visible(False)
    feasible_share = 100.0 * sum(r["feasible"] for r in data.complete) / len(data.complete)
    fig.suptitle(f"{data.study}: constraint satisfaction ({feasible_share:.0f} % of completed trials feasible)")
    return fig, []


# ---------------------------------------------------------------------- summarization quality
def draw_quality(data: ReportData) -> tuple[Figure | None, list[str]]:
    front = data.front_records()
    names = [n for n in data.quality_names if any(_metric(r, n) is not None for r in front)]
    if not names:
        declared = data.declared_quality_names
        if declared:
            return None, [f"quality: the front's trials report no {'/'.join(declared)} yet"]
        return None, []
    # BLEU is on a 0-100 scale; the other quality figures on 0-1
    panels = [p for p in ([n for n in names if n != "bleu"], ["bleu"] if "bleu" in names else []) if p]
    fig = _figure(max(8.0, 0.7 * len(front) * len(panels) + 3), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=[len(p) + 1 for p in panels]).ravel()
    labels = [f"#{r['number']}" for r in front]
    xs = np.arange(len(front))
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    for ax, group in zip(axes, panels):
        width = 0.8 / len(group)
        for i, name in enumerate(group):
            ys = [_metric(r, name) for r in front]
            errs = [_metric_std(r, name) or 0.0 for r in front]
            ax.bar(xs + (i - (len(group) - 1) / 2) * width, [y if y is not None else 0.0 for y in ys], width=width,
                   color=palette(i), label=name, yerr=errs if any(errs) else None, capsize=2)
        ax.set_xticks(xs, [f"{lab}*" if r["number"] == data.selected else lab for lab, r in zip(labels, front)],
                      rotation=60 if len(front) > 6 else 0, fontsize=8)
        ax.set_ylabel("score" if group != ["bleu"] else "BLEU (0-100)")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{data.study}: summarization quality of the Pareto-front trials (* selected)")
    return fig, []


def draw_compare(data: ReportData) -> tuple[Figure | None, list[str]]:
    """Change in percent per metric from ``hpod compare``'s before/after table."""
    if not data.compare:
        return None, []
    rows = [r for r in data.compare["rows"] if isinstance(r, dict) and r.get("change_percent") is not None]
    if not rows:
        return None, ["before/after: the stored comparison has no change to draw"]
    fig = _figure(8.0, 0.5 * len(rows) + 1.8)
    ax = fig.add_subplot()
    ys = np.arange(len(rows))
    colors = [C_GOOD if r.get("improved") else (C_SELECTED if r.get("improved") is False else C_INFEASIBLE)
              for r in rows]
    ax.barh(ys, [float(r["change_percent"]) for r in rows], color=colors)
    ax.set_yticks(ys, [str(r.get("metric") or r.get("key")) for r in rows])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("change from baseline to tuned (%)  —  green: better, red: worse")
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{data.study}: tuned vs baseline")
    return fig, []


# ---------------------------------------------------------------------- strategies (optional)
def _lagrange_series(raw: Any) -> dict[str, tuple[list[float], list[float]]]:
    """Accepts ``[{"trial"|"step"|"number": n, "multipliers": {name: value}}, ...]`` or
    ``{name: [values...]}`` (or ``{"history": <either>}``)."""
    if isinstance(raw, dict) and "history" in raw:
        raw = raw["history"]
    series: dict[str, tuple[list[float], list[float]]] = {}
    if isinstance(raw, dict):
        for name, values in raw.items():
            if isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values):
                series[str(name)] = (list(map(float, range(len(values)))), [float(v) for v in values])
    elif isinstance(raw, list):
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict):
                continue
            x = next((entry[k] for k in ("trial", "number", "step") if isinstance(entry.get(k), (int, float))), i)
            mults = entry.get("multipliers", {k: v for k, v in entry.items()
                                              if k not in ("trial", "number", "step", "ts")})
            if not isinstance(mults, dict):
                continue
            for name, value in mults.items():
                if isinstance(value, (int, float)):
                    xs, ys = series.setdefault(str(name), ([], []))
                    xs.append(float(x))
                    ys.append(float(value))
    return series


def draw_lagrange(data: ReportData) -> tuple[Figure | None, list[str]]:
    if data.lagrange_history is None:
        return None, []
    series = _lagrange_series(data.lagrange_history)
    if not series:
        return None, ["Lagrange multipliers: stored history has an unknown shape"]
    fig = _figure(8.0, 4.2)
    ax = fig.add_subplot()
    for name, (xs, ys) in series.items():
        ax.step(xs, ys, where="post", linewidth=1.8, label=name)
    ax.set_xlabel("trial")
    ax.set_ylabel("multiplier μ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.suptitle(f"{data.study}: Lagrange multiplier per constraint (rise while violated, fall to 0 when met)")
    return fig, []


def _lineage_events(raw: Any) -> list[dict[str, Any]]:
    """Accepts a list of events or ``{"events": [...]}``; each event names the member, its
    generation (``generation``/``step``/``interval``) and, for exploit steps, the member it
    copied (``source``/``parent``/``copied_from``), optionally a ``score`` and ``mutation``."""
    if isinstance(raw, dict):
        raw = raw.get("events", raw.get("lineage"))
    out = []
    for i, e in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(e, dict):
            continue
        member = e.get("member", e.get("member_id", e.get("slot")))
        gen = e.get("generation", e.get("step", e.get("interval", i)))
        if member is None or gen is None:
            continue
        out.append({"member": member, "generation": float(gen),
                    "source": e.get("source", e.get("parent", e.get("copied_from"))),
                    "score": e.get("score"), "mutation": e.get("mutation")})
    return out


def draw_pbt(data: ReportData) -> tuple[Figure | None, list[str]]:
    if data.pbt_lineage is None:
        return None, []
    events = _lineage_events(data.pbt_lineage)
    if not events:
        return None, ["PBT lineage: stored lineage has an unknown shape"]
    members = sorted({str(e["member"]) for e in events} | {str(e["source"]) for e in events if e["source"] is not None})
    row = {m: i for i, m in enumerate(members)}
    fig = _figure(9.0, max(3.5, 0.45 * len(members) + 1.5))
    ax = fig.add_subplot()
    scores = [float(e["score"]) for e in events if isinstance(e.get("score"), (int, float))]
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    norm = Normalize(min(scores), max(scores)) if scores and max(scores) > min(scores) else None
    cmap = colormaps["viridis"]
    for e in events:
        y = row[str(e["member"])]
        color = cmap(norm(float(e["score"]))) if norm is not None and isinstance(e.get("score"), (int, float)) \
            else C_FRONT
        ax.scatter(e["generation"], y, s=30, color=color, zorder=3)
        if e["source"] is not None and str(e["source"]) != str(e["member"]):
            ax.annotate("", xy=(e["generation"], y), xytext=(e["generation"] - 1, row[str(e["source"])]),
                        arrowprops={"arrowstyle": "->", "color": C_SELECTED, "alpha": 0.7})
    ax.set_yticks(range(len(members)), [f"member {m}" for m in members])
    ax.set_xlabel("generation (interval)")
    ax.grid(alpha=0.3)
    fig.suptitle(f"{data.study}: PBT lineage (arrows: a member copied another's weights and hyperparameters)")
    if norm is not None:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="score", pad=0.01)
    return fig, []


#: (file stem, section title, draw function), in report order
FIGURES: list[tuple[str, str, Draw]] = [
    ("pareto_front", "Pareto front", draw_pareto),
    ("hypervolume", "Hypervolume over trials", draw_hypervolume),
    ("objectives", "Objectives over trials", draw_objectives),
    ("parallel_coordinates", "Parameters (parallel coordinates)", draw_parallel),
    ("importances", "Parameter importances", draw_importances),
    ("front_costs", "Cost breakdown of the front", draw_front_costs),
    ("constraints", "Constraint satisfaction", draw_constraints),
    ("quality", "Summarization quality (ROUGE / BLEU)", draw_quality),
    ("compare", "Before / after (hpod compare)", draw_compare),
    ("lagrange", "Lagrange multipliers", draw_lagrange),
    ("pbt_lineage", "PBT lineage", draw_pbt),
]
