"""Multi-objective pruning (MO-ASHA-style successive halving ranked by non-dominated
sorting) and plain early stopping, as report handlers of the trial executor.

A handler sees every intermediate report ``(job, seed_index, step, values)`` of the
study's running trials and answers whether the trial should stop; the trial then
ends as PRUNED with the measurements it made, and its energy counts as spent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from hpod.core.pareto import non_dominated_mask

if TYPE_CHECKING:
    from hpod.spec import StudySpec
    from hpod.store import JobRow, Store

__all__ = ["EarlyStopping", "MOASHAPruner", "create_report_handler", "crowding_distance", "non_dominated_ranks"]

log = logging.getLogger(__name__)
ReportHandler = Callable[["JobRow", int, int, dict[str, float]], bool]
_COSTS = ("energy_joules", "time_seconds")


def non_dominated_ranks(points: np.ndarray) -> np.ndarray:
    """Front index (0 = non-dominated) of each row of ``points`` (n x m, minimized)."""

    pts = np.asarray(points, dtype=float)
    ranks = np.full(len(pts), -1, dtype=int)
    remaining = np.arange(len(pts))
    level = 0
    while remaining.size:
        mask = non_dominated_mask(pts[remaining])
        ranks[remaining[mask]] = level
        remaining = remaining[~mask]
        level += 1
    return ranks


def crowding_distance(points: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each row (boundary points: inf), for ties within a front."""
    pts = np.asarray(points, dtype=float)
    n, m = pts.shape
    dist = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(m):
        order = np.argsort(pts[:, j])
        span = pts[order[-1], j] - pts[order[0], j]
        dist[order[0]] = dist[order[-1]] = math.inf
        if span <= 0:
            continue
        dist[order[1:-1]] += (pts[order[2:], j] - pts[order[:-2], j]) / span
    return dist


class MOASHAPruner:
    """Asynchronous successive halving over several objectives.

    Rungs sit at steps ``min_resource · reduction_factor^k``. When a trial's report
    first reaches a rung, its vector of intermediate ``metrics`` (minimized; the
    first objective's direction is respected) is recorded there and ranked among all
    vectors recorded at that rung by (front index, -crowding distance); the trial
    goes on if it is among the best ``max(1, n // reduction_factor)`` or on the first
    front (nothing recorded at the rung dominates it: it could still end on the
    Pareto front, and ties among trade-offs are not broken by arrival order). Only
    seed 0 of a trial is judged (later seeds of a promoted configuration run on).
    """

    def __init__(self, *, metrics: list[str], signs: list[float], min_resource: int = 1,
                 reduction_factor: int = 3):
        if min_resource < 1:
            raise ValueError(f"min_resource must be >= 1 (found {min_resource})")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be >= 2 (found {reduction_factor})")
        if len(metrics) != len(signs) or not metrics:
            raise ValueError(f"metrics ({metrics}) and signs ({signs}) must be non-empty and of equal length")
        self.metrics = list(metrics)
        self.signs = [float(s) for s in signs]
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        #: rung index -> {trial_number: vector}
        self.rungs: dict[int, dict[int, list[float]]] = {}
        self._reached: dict[int, int] = {}
        self.stopped: set[int] = set()

    def rung_of(self, step: int) -> int | None:
        """The highest rung whose step is <= ``step`` (None below the first rung)."""
        if step < self.min_resource:
            return None
        return math.floor(math.log(step / self.min_resource, self.reduction_factor) + 1e-9)

    def record(self, trial: int, step: int, values: dict[str, float]) -> None:
        """Record a finished trial's history (e.g. after a restart) without judging it."""
        rung = self.rung_of(step)
        if rung is None or any(m not in values for m in self.metrics):
            return
        for k in range(self._reached.get(trial, -1) + 1, rung + 1):
            self.rungs.setdefault(k, {})[trial] = [s * float(values[m]) for m, s in zip(self.metrics, self.signs)]
        self._reached[trial] = max(rung, self._reached.get(trial, -1))

    def __call__(self, job: JobRow, seed_index: int, step: int, values: dict[str, float]) -> bool:
        return self.should_stop(job.trial_number, seed_index, step, values)

    def should_stop(self, trial: int, seed_index: int, step: int, values: dict[str, float]) -> bool:
        if seed_index != 0 or trial in self.stopped:
            return trial in self.stopped
        rung = self.rung_of(step)
        if rung is None or rung <= self._reached.get(trial, -1):
            return False
        missing = [m for m in self.metrics if m not in values]
        if missing:
            return False  # cannot rank what is not reported; never stop blindly
        self.record(trial, step, values)
        entries = self.rungs[rung]
        numbers = list(entries)
        pts = np.array([entries[n] for n in numbers])
        ranks = non_dominated_ranks(pts)
        crowd = np.zeros(len(numbers))
        for level in set(ranks.tolist()):
            idx = np.where(ranks == level)[0]
            crowd[idx] = crowding_distance(pts[idx])
        order = sorted(range(len(numbers)), key=lambda i: (ranks[i], -crowd[i]))
        keep = max(1, len(numbers) // self.reduction_factor)
        me = numbers.index(trial)
        if order.index(me) >= keep and ranks[me] > 0:
            self.stopped.add(trial)
            return True
        return False


class EarlyStopping:
    """Stop a trial when ``metric`` has not improved by ``min_delta`` for ``patience``
    consecutive evaluations (each seed of a trial is judged on its own)."""

    def __init__(self, *, metric: str, sign: float = 1.0, min_delta: float = 0.0, patience: int = 5):
        if patience < 1:
            raise ValueError(f"patience must be >= 1 (found {patience})")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0 (found {min_delta})")
        self.metric, self.sign, self.min_delta, self.patience = metric, float(sign), float(min_delta), patience
        self._best: dict[tuple[int, int], float] = {}
        self._stale: dict[tuple[int, int], int] = {}

    def __call__(self, job: JobRow, seed_index: int, step: int, values: dict[str, float]) -> bool:
        return self.should_stop(job.trial_number, seed_index, values)

    def should_stop(self, trial: int, seed_index: int, values: dict[str, float]) -> bool:
        if self.metric not in values:
            return False
        key = (trial, seed_index)
        v = self.sign * float(values[self.metric])
        best = self._best.get(key)
        if best is None or v < best - self.min_delta:
            self._best[key] = v if best is None else min(best, v)
            self._stale[key] = 0
            return False
        self._best[key] = min(best, v)
        self._stale[key] = self._stale.get(key, 0) + 1
        return self._stale[key] >= self.patience


def create_report_handler(spec: StudySpec, store: Store | None = None) -> ReportHandler | None:
    """The report handler for ``spec.pruner`` (None when the study has no pruner).

    With ``store``, an MO-ASHA pruner first records the intermediate reports of the
    study's finished trials, so a restarted controller ranks against them too."""
    p = spec.pruner
    first = spec.objectives[0]
    sign = 1.0 if first.direction == "minimize" else -1.0
    if p.kind == "early_stopping":
        return EarlyStopping(metric=p.metric or first.name, sign=sign, min_delta=p.min_delta, patience=p.patience)
    if p.kind != "mo_asha":
        return None
    if p.metrics:
        directions = {o.name: o.direction for o in spec.objectives}
        metrics = list(p.metrics)
        signs = [1.0 if directions.get(m, "minimize") == "minimize" else -1.0 for m in metrics]
    else:
        cost = next((c for c in _COSTS if c in spec.objective_names), _COSTS[0])
        metrics, signs = [first.name, cost], [sign, 1.0]
    pruner = MOASHAPruner(metrics=metrics, signs=signs, min_resource=p.min_resource,
                          reduction_factor=p.reduction_factor)
    if store is not None:
        _replay(pruner, spec, store)
    return pruner


def _replay(pruner: MOASHAPruner, spec: StudySpec, store: Store) -> None:
    try:
        study = store.load_optuna_study(spec.name)
        trials = study.get_trials(deepcopy=False)
    except Exception:  # a new study has nothing to replay
        return
    for t in trials:
        for seed_index, step, values in (t.user_attrs.get("hpod.info") or {}).get("intermediate") or []:
            if seed_index == 0:
                pruner.record(t.number, int(step), values)
