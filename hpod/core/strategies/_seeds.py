"""Adaptive seeds: run a configuration on one seed, add seeds only while it could
still be on the front.

After each seed the trial process asks the controller whether to run the next one.
The answer is yes while the optimistic corner of the configuration's confidence box
(per objective: mean − z·standard error, in minimization orientation) is not
dominated by any point of the current front (feasible completed trials, their
means). With one seed the standard error is the median per-objective spread of
earlier multi-seed configurations, or ``noise_floor``·|value| before any exists.
The front itself always uses means over the seeds each trial ran.
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING

import numpy as np

from hpod.core.pareto import non_dominated_mask
from hpod.core.records import feasible

if TYPE_CHECKING:
    from hpod.core.strategies._base import EngineView
    from hpod.store import JobRow

__all__ = ["AdaptiveSeeds"]


class AdaptiveSeeds:
    """The seed handler of one study (called by the executor after each seed)."""

    def __init__(self, engine: EngineView):
        if engine.spec.seeds_adaptive is None:
            raise ValueError(f"study {engine.name!r} does not use adaptive seeds (seeds: {engine.spec.seeds})")
        self.engine = engine
        self.options = engine.spec.seeds_adaptive
        self._seen: dict[int, list[dict[str, float]]] = {}
        #: (trial number, seeds run, decision) for each question answered
        self.decisions: list[tuple[int, int, bool]] = []

    def _point(self, values: dict[str, float]) -> list[float] | None:
        strategy = getattr(self.engine, "strategy", None)
        if strategy is not None and strategy.kind == "scalarized":
            try:
                return [float(strategy.decompose(values)["value"])]
            except KeyError:
                return None
        spec = self.engine.spec
        if any(n not in values for n in spec.objective_names):
            return None
        return [float(values[n]) if d == "minimize" else -float(values[n])
                for n, d in zip(spec.objective_names, spec.directions)]

    def _front_and_spread(self) -> tuple[np.ndarray, list[float] | None]:
        import optuna


        trials = self.engine.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        pts, spreads = [], []
        for t in trials:
            metrics = t.user_attrs.get("hpod.metrics") or {}
            p = self._point(metrics)
            if p is None:
                continue
            if feasible(t):
                pts.append(p)
            seeds = t.user_attrs.get("hpod.seeds") or []
            per_seed = [self._point(s.get("values", {})) for s in seeds]
            per_seed = [q for q in per_seed if q is not None]
            if len(per_seed) >= 2:
                spreads.append([statistics.stdev(col) for col in zip(*per_seed)])
        front = np.array(pts) if pts else np.zeros((0, 0))
        if len(front):
            front = front[non_dominated_mask(front)]
        spread = [statistics.median(col) for col in zip(*spreads)] if spreads else None
        return front, spread

    def __call__(self, job: JobRow, seed_index: int, values: dict[str, float]) -> bool:
        return self.more_seeds(job.trial_number, seed_index, values)

    def more_seeds(self, trial: int, seed_index: int, values: dict[str, float]) -> bool:
        """Whether trial ``trial``, having finished seed ``seed_index`` with ``values``,
        should run another seed."""
        runs = self._seen.setdefault(trial, [])
        if len(runs) == seed_index:
            runs.append(dict(values))
        points = [p for p in (self._point(v) for v in runs) if p is not None]
        if not points:
            decision = True
        else:
            front, spread = self._front_and_spread()
            mean = np.mean(np.array(points), axis=0)
            n = len(points)
            if n >= 2:
                se = np.std(np.array(points), axis=0, ddof=1) / math.sqrt(n)
            elif spread is not None:
                se = np.array(spread)
            else:
                se = self.options.noise_floor * np.abs(mean)
            optimistic = mean - self.options.z * se
            if len(front) == 0:
                decision = True
            else:
                dominated = np.any(np.all(front <= optimistic, axis=1) & np.any(front < optimistic, axis=1))
                decision = not bool(dominated)
        self.decisions.append((trial, seed_index + 1, decision))
        if not decision or seed_index + 2 >= self.engine.spec.seeds:
            self._seen.pop(trial, None)  # no further question about this trial
        return decision
