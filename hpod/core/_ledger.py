"""What a study's finished trials add up to, folded in once per trial.

A finished Optuna trial never changes, so the engine's summary (counts, energy spent,
the feasible Pareto front, best values) is kept as running totals: each finished trial
is folded in once, and a summary costs a pass over the unfinished trials plus the new
ones instead of a pass over the whole study, with a Pareto check against the current
front only. Per-trial cost stays flat as the study grows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from hpod.core.records import FAIL_REASON_ATTR, REJECTED_ATTR, feasible
from hpod.execution._trial_child import INFRA_REASONS

if TYPE_CHECKING:
    import optuna

__all__ = ["FinishedTrials"]


class FinishedTrials:
    """Running totals over a study's finished trials.

    Args:
        directions: ``"minimize"``/``"maximize"`` per value of the Optuna study.
        keep_first_complete: how many of the first completed trials' points to keep (by
            trial number) for deriving a reference point from them.

    Values are kept oriented for minimization (maximized values negated).
    """

    def __init__(self, directions: Sequence[str], *, keep_first_complete: int) -> None:
        self._signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
        self._keep_first = keep_first_complete
        self._folded: set[int] = set()
        self.counts: dict[str, int] = {}
        self.energy_joules = 0.0
        self.infra_failures = 0
        self.objective_failures = 0
        #: feasible non-dominated trials: number -> oriented values
        self.front: dict[int, np.ndarray] = {}
        #: the feasible trial with the lowest first value (ties: lowest number)
        self.top: tuple[float, int, dict[str, Any]] | None = None
        #: (number, oriented values) of the first completed trials, by number
        self.first_complete: list[tuple[int, np.ndarray]] = []

    def is_folded(self, trial: optuna.trial.FrozenTrial) -> bool:
        return trial._trial_id in self._folded

    def fold(self, trial: optuna.trial.FrozenTrial) -> None:
        """Add one finished trial (idempotent per trial)."""
        if trial._trial_id in self._folded:
            return
        self._folded.add(trial._trial_id)
        if trial.user_attrs.get(REJECTED_ATTR) is not None:
            # A repeated suggestion closed unrun: neither a failure nor budget.
            self.counts["REJECTED"] = self.counts.get("REJECTED", 0) + 1
            return
        state = trial.state.name
        self.counts[state] = self.counts.get(state, 0) + 1
        self.energy_joules += float((trial.user_attrs.get("hpod.info") or {}).get("energy_spent_joules") or 0.0)
        if state == "FAIL":
            if trial.user_attrs.get(FAIL_REASON_ATTR) in INFRA_REASONS:
                self.infra_failures += 1
            else:
                self.objective_failures += 1
        if state != "COMPLETE" or trial.values is None:
            return
        point = np.asarray(trial.values, dtype=float) * self._signs
        self._keep_complete(trial.number, point)
        if not feasible(trial):
            return
        first = float(trial.values[0]) * float(self._signs[0])
        if self.top is None or (first, trial.number) < (self.top[0], self.top[1]):
            self.top = (first, trial.number, dict(trial.user_attrs.get("hpod.metrics") or {}))
        self._add_to_front(trial.number, point)

    def _keep_complete(self, number: int, point: np.ndarray) -> None:
        if len(self.first_complete) >= self._keep_first and number > self.first_complete[-1][0]:
            return
        self.first_complete.append((number, point))
        self.first_complete.sort(key=lambda item: item[0])
        del self.first_complete[self._keep_first:]

    def _add_to_front(self, number: int, point: np.ndarray) -> None:
        if self.front:
            members = np.array(list(self.front.values()))
            dominated_by = np.all(members <= point, axis=1) & np.any(members < point, axis=1)
            if dominated_by.any():
                return
            dominates = np.all(point <= members, axis=1) & np.any(point < members, axis=1)
            for other, gone in zip(list(self.front), dominates):
                if gone:
                    del self.front[other]
        self.front[number] = point

    def pareto_numbers(self) -> list[int]:
        return sorted(self.front)

    def best(self) -> list[float]:
        """Best value per objective over the feasible trials, in the values' own directions
        (the best of each objective is always attained on the front)."""
        points = np.array(list(self.front.values()))
        return [float(v) for v in points.min(axis=0) * self._signs]
