"""What a study report shows, read from the store: trials, the front, the selected
trial, the hypervolume after each completed trial, and the optional extras other
parts of hpod store (``compare`` table, PBT lineage, Lagrange multiplier history).

Everything here is plain data (no matplotlib), so the API and tests can use it alone.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from hpod.core.pareto import (
    derive_ideal_point,
    derive_reference_point,
    hypervolume,
    knee_index,
    non_dominated_mask,
    normalized_hypervolume,
)
from hpod.core.records import HYPERVOLUME_STATE_KEY, trial_record
from hpod.errors import HpodError, UsageError
from hpod.objectives.base import QUALITY_METRICS, ScoresQuality, create_objective
from hpod.spec import parse_spec

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from hpod.spec import StudySpec
    from hpod.store import Store, StudyRow

__all__ = ["SELECTION_HELP", "ReportData", "hypervolume_curve", "load_report_data", "select_trial"]

log = logging.getLogger(__name__)


#: completed trials below which parameter importances are not estimated (fANOVA on
#: fewer points says nothing useful)
MIN_TRIALS_FOR_IMPORTANCE = 5
SELECTION_HELP = ("knee (the front's trial closest to the utopia point after scaling each objective "
                  "to [0, 1] over the front) or the name of an objective (its best front trial)")


@dataclass
class ReportData:
    """One study's data as the report draws it.

    ``records`` are :func:`hpod.core.records.trial_record` dicts of every trial;
    ``complete`` the COMPLETE ones with values, by trial number. Values are raw (in
    the objective's direction); ``oriented`` turns them into minimized values.
    ``reference_point`` is in minimization orientation, like ``StudyRow.reference_point_json``.
    """

    study: str
    spec: StudySpec
    row: StudyRow
    objective_names: list[str]
    directions: Sequence[str]
    constraint_names: list[str]
    records: list[dict[str, Any]]
    complete: list[dict[str, Any]]
    front: list[int]
    selected: int | None
    selection: str
    reference_point: list[float] | None
    reference_point_source: str | None
    #: normalized hypervolume (ideal point -> 0, reference point -> 1) after each completed trial
    hv_curve: list[tuple[int, float]]
    counts: dict[str, int]
    optuna_study: Any = None
    compare: dict[str, Any] | None = None
    pbt_lineage: Any = None
    lagrange_history: Any = None
    notes: list[str] = field(default_factory=list)
    #: in minimization orientation, like ``reference_point``
    ideal_point: list[float] | None = None
    ideal_point_source: str | None = None

    def oriented(self, values: dict[str, float]) -> list[float]:
        return [values[n] if d == "minimize" else -values[n] for n, d in zip(self.objective_names, self.directions)]

    def by_number(self) -> dict[int, dict[str, Any]]:
        return {r["number"]: r for r in self.records}

    def front_records(self) -> list[dict[str, Any]]:
        """Front trials sorted by the first objective (best first)."""
        index = self.by_number()
        recs = [index[n] for n in self.front]
        first, direction = self.objective_names[0], self.directions[0]
        return sorted(recs, key=lambda r: r["values"][first] * (1 if direction == "minimize" else -1))

    @property
    def declared_quality_names(self) -> tuple[str, ...]:
        """The task-quality figures the study's objective says it reports
        (:class:`~hpod.objectives.base.ScoresQuality`); () when it says none or cannot
        be loaded here."""
        try:
            objective = create_objective(self.spec.objective.name, self.spec.objective.params)
        except HpodError:
            return ()
        return tuple(objective.quality_names) if isinstance(objective, ScoresQuality) else ()

    @property
    def quality_names(self) -> tuple[str, ...]:
        """The quality figures to look for in the trials: the objective's own, else the
        canonical names (a user's function may report ``rouge2`` without declaring it)."""
        return self.declared_quality_names or QUALITY_METRICS


def _metric(record: dict[str, Any], name: str) -> float | None:
    """A trial's figure for ``name``: its objective value, else metric, else measurement."""
    for source in (record.get("values") or {}, record.get("metrics") or {}):
        if name in source and source[name] is not None:
            value = source[name]
            if isinstance(value, dict):
                value = value.get("value")
            try:
                out = float(value)
            except (TypeError, ValueError):
                continue
            if math.isfinite(out):
                return out
    meas = (record.get("measurements") or {}).get(name)
    if isinstance(meas, dict) and meas.get("value") is not None:
        return float(meas["value"])
    return None


def _metric_std(record: dict[str, Any], name: str) -> float | None:
    """Per-seed standard deviation of ``name`` when the trial ran more than one seed."""
    if len(record.get("seeds") or []) <= 1:
        return None
    std = (record.get("metrics_std") or {}).get(name)
    return float(std) if std is not None and math.isfinite(float(std)) else None


def select_trial(points: np.ndarray, numbers: list[int], objective_names: list[str], selection: str) -> int | None:
    """The front trial a user would deploy under ``selection`` (see :data:`SELECTION_HELP`).

    ``points`` are the front's minimized values (n x m) in objective order.
    """
    if len(numbers) == 0:
        return None
    if selection == "knee":

        # Ties go to the earliest trial: stable across report runs.
        return numbers[knee_index(points, numbers)]
    if selection in objective_names:
        column = points[:, objective_names.index(selection)]
        return numbers[int(np.lexsort((np.asarray(numbers), column))[0])]
    raise UsageError(f"selection: expected {SELECTION_HELP}; got {selection!r}")


def hypervolume_curve(oriented_by_trial: list[tuple[int, list[float] | None]],
                      reference_point: list[float], ideal_point: list[float] | None = None) -> list[tuple[int, float]]:
    """Hypervolume of the feasible front after each completed trial, by trial number;
    normalized (:func:`~hpod.core.pareto.normalized_hypervolume`) when ``ideal_point`` is given.

    ``oriented_by_trial`` lists ``(number, minimized values or None when infeasible)`` in
    trial-number order. The hypervolume is recomputed only when a trial changes the front.
    """

    reference = np.asarray(reference_point, dtype=float)
    front = np.empty((0, reference.shape[0]))
    current = 0.0
    curve: list[tuple[int, float]] = []
    for number, values in oriented_by_trial:
        if values is not None:
            point = np.asarray(values, dtype=float)
            weakly_dominated = front.shape[0] > 0 and bool(np.any(np.all(front <= point, axis=1)))
            if not weakly_dominated:
                keep = ~np.all(point <= front, axis=1) if front.shape[0] else np.ones(0, dtype=bool)
                front = np.vstack([front[keep], point])
                current = hypervolume(front, reference) if ideal_point is None else \
                    normalized_hypervolume(front, np.asarray(ideal_point, dtype=float), reference)
        curve.append((number, current))
    return curve


def _compare_rows(raw: Any) -> dict[str, Any] | None:
    """``hpod compare``'s stored table: a dict with ``rows`` (or the rows themselves)."""
    if isinstance(raw, list):
        raw = {"rows": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or not raw["rows"]:
        return None
    return raw


def load_report_data(store: Store, study: str, *, selection: str = "knee") -> ReportData:
    """Read ``study`` from ``store``. RUNNING and WAITING trials are counted, not drawn.

    Raises :class:`~hpod.errors.StudyNotFound` (a UsageError) for an unknown study and
    :class:`~hpod.errors.UsageError` for an unknown ``selection``.
    """

    row = store.get_study(study)
    assert row is not None
    spec = parse_spec(json.loads(row.spec_json))
    names = list(spec.value_names)  # the Optuna values (F alone for a scalarized study)
    directions = list(spec.directions)
    if selection != "knee" and selection not in names:
        raise UsageError(f"selection: expected {SELECTION_HELP}; got {selection!r} "
                         f"(objectives: {', '.join(names)})")
    optuna_study = store.load_optuna_study(study)
    trials = optuna_study.get_trials(deepcopy=False)
    constraint_names = [c.text for c in spec.parsed_constraints()]
    records = [trial_record(t, names, constraint_names) for t in trials]
    counts: dict[str, int] = {}
    for r in records:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    complete = sorted((r for r in records if r["state"] == "COMPLETE" and r["values"]
                       and all(math.isfinite(r["values"][n]) for n in names)), key=lambda r: r["number"])

    def oriented(r: dict[str, Any]) -> list[float]:
        return [r["values"][n] if d == "minimize" else -r["values"][n] for n, d in zip(names, directions)]

    notes: list[str] = []
    ok = [r for r in complete if r["feasible"]]
    front: list[int] = []
    selected: int | None = None
    if ok:

        points = np.array([oriented(r) for r in ok])
        mask = non_dominated_mask(points)
        front = [r["number"] for r, m in zip(ok, mask) if m]
        selected = select_trial(points[mask], front, names, selection)

    reference: list[float] | None = json.loads(row.reference_point_json) if row.reference_point_json else None
    source = row.reference_point_source if reference is not None else None
    if reference is None and spec.reference_point and all(n in spec.reference_point for n in names):
        reference = [spec.reference_point[n] if d == "minimize" else -spec.reference_point[n]
                     for n, d in zip(names, directions)]
        source = "spec"
    if reference is None and complete:
        # A young study has no stored reference point yet (the engine derives one after
        # a few trials): derive one the same way for this report only, and say so.

        reference = [float(v) for v in derive_reference_point(np.array([oriented(r) for r in complete]))]
        source = "derived for this report (the study has not stored one yet)"
    ideal, ideal_source = _ideal_point(store, study, spec, names, directions, reference,
                                       [oriented(r) for r in complete])
    hv_curve: list[tuple[int, float]] = []
    if reference is not None and ideal is not None and complete:
        try:
            hv_curve = hypervolume_curve([(r["number"], oriented(r) if r["feasible"] else None) for r in complete],
                                         reference, ideal)
        except ValueError as exc:
            notes.append(f"hypervolume curve skipped: {exc}")

    def state(key: str) -> Any:
        try:
            return store.get_state(study, key)
        except Exception as exc:  # a malformed row must not cost the whole report
            notes.append(f"stored {key!r} could not be read: {type(exc).__name__}")
            return None

    return ReportData(
        study=study, spec=spec, row=row, objective_names=names, directions=directions,
        constraint_names=[c.text for c in spec.parsed_constraints()], records=records, complete=complete,
        front=front, selected=selected, selection=selection, reference_point=reference,
        reference_point_source=source, hv_curve=hv_curve, counts=counts, optuna_study=optuna_study,
        compare=_compare_rows(state("compare")), pbt_lineage=state("pbt_lineage"),
        lagrange_history=state("lagrange_history"), notes=notes, ideal_point=ideal, ideal_point_source=ideal_source,
    )


def _value_at(index: int) -> Callable[[FrozenTrial], float]:
    return lambda trial: float(trial.values[index])


def _ideal_point(store: Store, study: str, spec: StudySpec, names: Sequence[str], directions: Sequence[str],
                 reference: list[float] | None, oriented_values: list[list[float]]
                 ) -> tuple[list[float] | None, str | None]:
    """The ideal point the study's normalized hypervolume uses (minimization orientation):
    the stored one, else the spec's, else derived the engine's way for this report only."""
    stored = store.get_state(study, HYPERVOLUME_STATE_KEY) or {}
    if stored.get("ideal_point") is not None and len(stored["ideal_point"]) == len(names):
        return [float(v) for v in stored["ideal_point"]], stored.get("ideal_point_source")
    if spec.ideal_point and all(n in spec.ideal_point for n in names):
        return [spec.ideal_point[n] if d == "minimize" else -spec.ideal_point[n]
                for n, d in zip(names, directions)], "spec"
    if reference is None or not oriented_values:
        return None, None
    # the engine derives it from the study's first trials (2 per objective, at least 5)
    derived = derive_ideal_point(np.array(oriented_values[:max(5, 2 * len(names))]), np.array(reference))
    return [float(v) for v in derived], "derived for this report (the study has not stored one yet)"


def param_importances(data: ReportData) -> tuple[dict[str, dict[str, float]], list[str]]:
    """fANOVA importances per objective (objective -> param -> share) and notes on
    objectives left out (too few trials, constant values, a failing evaluator)."""
    notes: list[str] = []
    n = len(data.complete)
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, [f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials "
                    f"(the study has {n})"]
    if data.optuna_study is None:
        return {}, ["parameter importances need the Optuna study"]
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    varied = sorted({p for r in data.complete for p in r["params"]
                     if len({json.dumps(x["params"].get(p), default=str) for x in data.complete}) > 1})
    if not varied:
        return {}, ["parameter importances: no parameter varies across the completed trials"]
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(data.objective_names):
        column = [r["values"][name] for r in data.complete]
        if max(column) == min(column):
            notes.append(f"importances for {name}: its value is the same in every trial")
            continue
        try:
            imp = get_param_importances(data.optuna_study, target=_value_at(i),
                                        evaluator=FanovaImportanceEvaluator(seed=0), params=varied)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            notes.append(f"importances for {name} failed: {exc}")
            continue
        out[name] = {k: float(v) for k, v in imp.items()}
    return out, notes


__all__ += ["MIN_TRIALS_FOR_IMPORTANCE", "param_importances"]
