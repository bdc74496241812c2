"""Multi-fidelity for the model-based sampler: pruned trials inform the model.

A pruner (MO-ASHA's successive halving, or early stopping) stops trials whose
intermediate reports cannot reach the front; a plain GP sampler then ignores them,
as if their energy had bought nothing. As BOHB feeds Hyperband's stopped runs to
its TPE, :class:`MultiFidelitySampler` hands each pruned trial to the GP as an
observation at the fidelity it reached:

- an objective the trial reported before it stopped (its loss at the last
  evaluation) enters as that value plus the median change the study's completed
  trials made from the same step to their end: the value it would end at if it went
  on learning as a typical completed trial did. Taken as it stood (the earlier rule),
  a loss that falls with training made every pruned configuration look worse than
  any completed one at the same final quality, so the model learnt "pruned = bad"
  rather than where good configurations lie;
- a cost that accumulates with training (``time_seconds``, ``energy_joules``) enters
  as what the trial spent times the median ratio of the completed trials' whole-run
  cost to their cost at the same step (so a fixed start-up cost is not multiplied as
  if it were per step); without such reports, scaled from the step it stopped at to
  the median last step of the completed trials;
- any other measured objective (``memory_bytes``, a peak) enters as measured.

With no completed trial that reported at or before the pruned trial's last step,
a reported objective enters as it stood and a cost is scaled by steps.

A pruned trial missing one of the objectives is left out. Imputed trials never
count as found points: the study's front and hypervolume are the completed
trials'. With constraints, pruned trials are left out too (their constraint
values at full fidelity are unknown, and the GP needs them for every trial).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study

__all__ = ["ACCUMULATED_COSTS", "MultiFidelitySampler", "impute_pruned"]

#: Measured costs that grow with every training step (scaled to a whole run).
ACCUMULATED_COSTS = frozenset({"time_seconds", "energy_joules"})
#: Where hpod's engine keeps a trial's metrics and intermediate reports.
_METRICS_ATTR = "hpod.metrics"
_INFO_ATTR = "hpod.info"


def _reports(trial: FrozenTrial) -> dict[int, dict[str, float]]:
    """The trial's intermediate reports of seed 0, by step."""
    reports = (trial.user_attrs.get(_INFO_ATTR) or {}).get("intermediate") or []
    return {int(step): dict(values) for seed_index, step, values in reports if int(seed_index) == 0}


def _last_step(trial: FrozenTrial) -> int | None:
    """The step of the trial's last intermediate report of seed 0 (None without one)."""
    steps = _reports(trial)
    return max(steps) if steps else None


def _at_step(reports: dict[int, dict[str, float]], step: int, name: str) -> float | None:
    """``name`` as last reported at or before ``step`` (None if never reported by then)."""
    reached = [s for s in reports if s <= step and name in reports[s]]
    return float(reports[max(reached)][name]) if reached else None


def _progression(completed: Sequence[FrozenTrial], step: int, name: str) -> tuple[float, float] | None:
    """Median (final − value at ``step``) and median (final / value at ``step``) of ``name``
    over the completed trials that reported it by ``step`` (None without one)."""
    changes, ratios = [], []
    for trial in completed:
        final = (trial.user_attrs.get(_METRICS_ATTR) or {}).get(name)
        earlier = _at_step(_reports(trial), step, name)
        if final is None or earlier is None:
            continue
        changes.append(float(final) - earlier)
        if earlier > 0:
            ratios.append(float(final) / earlier)
    if not changes:
        return None
    return statistics.median(changes), statistics.median(ratios) if ratios else 1.0


def impute_pruned(
    completed: Sequence[FrozenTrial],
    pruned: Sequence[FrozenTrial],
    value_names: Sequence[str],
    *,
    extrapolate: bool = True,
) -> list[FrozenTrial]:
    """``pruned`` trials as COMPLETE observations at the values they would likely have
    ended at (see the module doc); trials that cannot be imputed are left out.
    ``value_names`` names the study's values in order (``Study.metric_names``).
    ``extrapolate=False`` is the earlier rule, kept for comparison: reported values as
    they stood, costs scaled by steps."""
    full_steps = [s for s in (_last_step(t) for t in completed) if s is not None]
    median_full = statistics.median(full_steps) if full_steps else None
    out: list[FrozenTrial] = []
    for trial in pruned:
        metrics = trial.user_attrs.get(_METRICS_ATTR) or {}
        stopped_at = _last_step(trial)
        if any(name not in metrics for name in value_names):
            continue
        step_scale = 1.0
        if median_full is not None and stopped_at is not None and stopped_at > 0:
            step_scale = max(1.0, median_full / stopped_at)
        reported = _reports(trial).get(stopped_at, {}) if stopped_at is not None else {}
        values = []
        for name in value_names:
            value = float(metrics[name])
            progression = (_progression(completed, stopped_at, name)
                           if extrapolate and stopped_at is not None and name in reported else None)
            if name in ACCUMULATED_COSTS:
                value *= step_scale if progression is None else max(1.0, progression[1])
            elif progression is not None:
                value += progression[0]
            values.append(value)
        out.append(optuna.trial.FrozenTrial(
            number=trial.number, state=TrialState.COMPLETE, value=None, values=values,
            datetime_start=trial.datetime_start, datetime_complete=trial.datetime_complete,
            params=trial.params, distributions=trial.distributions, user_attrs=trial.user_attrs,
            system_attrs=trial.system_attrs, intermediate_values=trial.intermediate_values,
            trial_id=trial._trial_id,
        ))
    return out


class MultiFidelitySampler(optuna.samplers.BaseSampler):
    """A GP sampler (hpod's, or Optuna's GPSampler) whose model also learns from pruned
    trials (see the module doc).

    Everything but the set of trials the model is fitted on is the wrapped sampler's:
    its startup design, acquisition, reference point and random state.
    ``extrapolate``: see :func:`impute_pruned`.
    """

    def __init__(self, model: optuna.samplers.GPSampler, *, extrapolate: bool = True) -> None:
        self._model = model
        self.extrapolate = extrapolate

    @property
    def model(self) -> optuna.samplers.GPSampler:
        return self._model

    def reseed_rng(self) -> None:
        self._model.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._model.infer_relative_search_space(study, trial)

    def observations(self, study: Study, search_space: dict[str, BaseDistribution]) -> list[FrozenTrial]:
        """The completed trials and the pruned ones imputed, as the model sees them."""
        trials = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED),
                                   use_cache=False)
        completed = [t for t in trials if t.state == TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == TrialState.PRUNED and search_space.keys() <= t.params.keys()]
        names = study.metric_names
        if not pruned or names is None or any(t.constraints for t in completed):
            return completed
        return completed + impute_pruned(completed, pruned, names, extrapolate=self.extrapolate)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if search_space == {}:
            return {}
        observed = self.observations(study, search_space)
        # GPSampler's own start-up rule, counted over what the model sees.
        if len(observed) < self._model._n_startup_trials:
            return {}
        running = [t for t in study._get_trials(deepcopy=False, states=(TrialState.RUNNING,), use_cache=False)
                   if search_space.keys() <= t.params.keys()]
        import torch

        with torch.device("cpu"):
            return self._model._sample_relative_impl(study, observed, running, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._model.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._model.before_trial(study, trial)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._model.after_trial(study, trial, state, values)
