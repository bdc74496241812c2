"""Which trial a study serves: the spec's selection policy (``min-loss``, ``knee``,
``objective NAME``) over feasible completed trials, and the stored serving choice.

Kept free of heavy imports: ``hpod status``, the retune policy and the serving app
all read it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hpod.core.pareto import knee_index, non_dominated_mask
from hpod.core.records import feasible
from hpod.objectives.base import QUALITY_METRICS
from hpod.spec import parse_spec
from hpod.store import config_key

if TYPE_CHECKING:
    from hpod.spec import StudySpec
    from hpod.store import Store

__all__ = ["MAXIMIZED_METRICS", "SERVING_KEY", "Selection", "current_serving", "put_serving", "select_trial"]

#: state key (on the submitted study's name) holding the served selection
SERVING_KEY = "serving"
#: metrics where larger is better when a policy names one the study does not optimize
MAXIMIZED_METRICS = frozenset(QUALITY_METRICS)


@dataclass(frozen=True)
class Selection:
    """The served trial: ``study`` (a version name such as ``name@v2``), trial
    ``number``, its ``params`` and ``config_key``, ``score`` under ``policy`` (lower is
    better; comparable only within one study), ``values`` (objective -> value) and
    ``artifact_dir`` (where the trial's model/adapter was saved, or None)."""

    study: str
    trial: int
    params: dict[str, Any]
    config_key: str
    policy: str
    score: float
    values: dict[str, float]
    artifact_dir: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _metric(trial: Any, names: list[str], name: str) -> float | None:
    if trial.values is not None and name in names:
        return float(trial.values[names.index(name)])
    raw = (trial.user_attrs.get("hpod.metrics") or {}).get(name)
    if isinstance(raw, dict):
        raw = raw.get("value")
    return float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) else None


def _direction(spec: StudySpec, name: str) -> str:
    for o in spec.objectives:
        if o.name == name:
            return o.direction
    return "maximize" if name in MAXIMIZED_METRICS else "minimize"


def select_trial(store: Store, study: str, *, spec: StudySpec | None = None,
                 policy: str | None = None) -> tuple[Selection | None, dict[str, float]]:
    """The trial ``policy`` (default: the spec's ``serving.policy``) picks in ``study``,
    and every candidate's score by config_key (to compare a configuration re-run in
    another version). ``(None, {})`` when no feasible completed trial has the metric."""
    import numpy as np
    import optuna


    if spec is None:
        row = store.get_study(study)
        spec = parse_spec(json.loads(row.spec_json))
    policy = policy or spec.serving.policy
    names = spec.value_names  # what trial.values holds (["scalarized"] for a scalarized study)
    trials = [t for t in store.load_optuna_study(study).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values is not None and feasible(t)]
    scored: list[tuple[float, Any]] = []
    if policy == "knee":
        if trials:

            pts = np.array([[v if d == "minimize" else -v for v, d in zip(t.values, spec.directions)]
                            for t in trials], dtype=float)
            on_front = non_dominated_mask(pts)
            front = [t for t, on in zip(trials, on_front) if on]
            knee = front[knee_index(pts[on_front], [t.number for t in front])]
            # Scores only order configurations: 0 for the knee, 1 for the rest of the
            # front, 2 off the front (to compare a configuration re-run in another version).
            candidates = [(0.0, knee)]
            everything = [(0.0 if t is knee else 1.0 if on else 2.0, t) for t, on in zip(trials, on_front)]
        else:
            candidates = everything = []
    else:
        metric = "loss" if policy == "min-loss" else policy.split(None, 1)[-1].split(":", 1)[-1]
        sign = -1.0 if _direction(spec, metric) == "maximize" else 1.0
        for t in trials:
            value = _metric(t, names, metric)
            if value is not None:
                scored.append((sign * value, t))
        candidates = everything = scored
    if not candidates:
        return None, {}
    score, best = min(candidates, key=lambda st: (st[0], st[1].number))
    by_key: dict[str, float] = {}
    for s, t in everything:
        key = config_key(dict(t.params))
        by_key[key] = min(s, by_key.get(key, math.inf))
    info = best.user_attrs.get("hpod.info") or {}
    values = {n: float(v) for n, v in zip(names, best.values)}
    selection = Selection(study=study, trial=best.number, params=dict(best.params),
                          config_key=config_key(dict(best.params)), policy=policy, score=float(score),
                          values=values, artifact_dir=info.get("artifact_dir"))
    return selection, by_key


def current_serving(store: Store, base: str) -> dict[str, Any] | None:
    """The stored serving choice of a submitted study (see :func:`put_serving`)."""
    value = store.get_state(base, SERVING_KEY)
    return value if isinstance(value, dict) and value.get("study") else None


def put_serving(store: Store, base: str, selection: Selection, *, reason: str,
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record ``selection`` as what ``base`` serves; the serving app picks it up."""
    value = {**selection.to_dict(), "since": time.time(), "reason": reason,
             "previous": {k: previous.get(k) for k in ("study", "trial", "score")} if previous else None}
    store.put_state(base, SERVING_KEY, value)
    return value

