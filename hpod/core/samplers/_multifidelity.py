"""Multi-fidelity for the model-based sampler: pruned trials inform the model.

A pruner (MO-ASHA's successive halving, or early stopping) stops trials whose
intermediate reports cannot reach the front; a plain GP sampler then ignores them,
as if their energy had bought nothing. As BOHB feeds Hyperband's stopped runs to
its TPE, :class:`MultiFidelitySampler` hands each pruned trial to the GP as an
observation at the fidelity it reached:

- an objective the trial reported before it stopped (the loss of its last
  evaluation) enters as that value: the objective at a lower fidelity, for a loss
  that falls with training a pessimistic stand-in for its final value, which is
  what the model should learn of a configuration successive halving gave up on;
- a cost that accumulates with training (``time_seconds``, ``energy_joules``) enters
  as what the trial spent, scaled from the step it stopped at to the median last
  step of the study's completed trials (what the whole run would have cost);
- any other measured objective (``memory_bytes``, a peak) enters as measured.

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


def _last_step(trial: FrozenTrial) -> int | None:
    """The step of the trial's last intermediate report of seed 0 (None without one)."""
    reports = (trial.user_attrs.get(_INFO_ATTR) or {}).get("intermediate") or []
    steps = [int(step) for seed_index, step, _values in reports if int(seed_index) == 0]
    return max(steps) if steps else None


def impute_pruned(
    completed: Sequence[FrozenTrial], pruned: Sequence[FrozenTrial], value_names: Sequence[str]
) -> list[FrozenTrial]:
    """``pruned`` trials as COMPLETE observations at the fidelity they reached (see the
    module doc); trials that cannot be imputed are left out. ``value_names`` names the
    study's values in order (``Study.metric_names``)."""
    full_steps = [s for s in (_last_step(t) for t in completed) if s is not None]
    median_full = statistics.median(full_steps) if full_steps else None
    out: list[FrozenTrial] = []
    for trial in pruned:
        metrics = trial.user_attrs.get(_METRICS_ATTR) or {}
        stopped_at = _last_step(trial)
        if any(name not in metrics for name in value_names):
            continue
        scale = 1.0
        if median_full is not None and stopped_at is not None and stopped_at > 0:
            scale = max(1.0, median_full / stopped_at)
        values = [float(metrics[n]) * (scale if n in ACCUMULATED_COSTS else 1.0) for n in value_names]
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
    """

    def __init__(self, model: optuna.samplers.GPSampler) -> None:
        self._model = model

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
        return completed + impute_pruned(completed, pruned, names)

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
