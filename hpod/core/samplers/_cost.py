"""Cost-aware acquisition for ``auto``: expected improvement per expected cost.

A study whose budget is joules or seconds pays for each trial in that currency, and
trials differ in what they cost (a larger batch, rank or more epochs run longer and draw
more power). :class:`CostAwareGPSampler` fits a second Gaussian process, on the log of
each finished trial's cost (``energy_joules`` or ``time_seconds``) over the same
normalized parameters as the objectives' GPs, and chooses the next configuration by
maximising

    log EHVI(x) - E[log cost(x)]

that is, hypervolume improvement per unit of expected cost. Budgets in joules or seconds
are what this spends well: a trial budget pays the same for every trial, so ``auto`` is
cost-aware by default only when the budget is joules or seconds, and not when the cost
is also one of the study's objectives (``_factory._cost_choice``: the hypervolume
improvement already rewards cheapness there; weighing it again kept the search at the
cheap, high-loss end of ``training_cost``'s front).

Tried and dropped (on branin_currin and zdt1_d6 of benchmarks/front_per_joule.py, 3
seeds): a cost weight falling from 1 to 0 as the budget is spent ("cost cooling", Lee et
al. 2020). With a constant weight the median normalized hypervolume was as high or
higher at 40 % and at 100 % of the energy budget on both problems.

The model, kernel, priors and acquisition optimizer are Optuna's GPSampler's (reached
through :meth:`optuna.samplers.GPSampler._optimize_acqf`, the method Optuna names for
overriding the optimization); only the acquisition value is divided by the cost.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from optuna.trial import TrialState

from hpod.core.samplers._gp import HpodGPSampler

if TYPE_CHECKING:
    import torch
    from optuna._gp.acqf import BaseAcquisitionFunc
    from optuna._gp.gp import GPRegressor
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["COST_METRICS", "CostAwareGPSampler", "CostMetric", "trial_cost"]

CostMetric = Literal["energy_joules", "time_seconds"]
COST_METRICS: tuple[CostMetric, ...] = ("energy_joules", "time_seconds")
#: Trials with a known cost before the cost model is fitted; below it the sampler is GPSampler.
MIN_COSTED_TRIALS = 4
#: A spread of log costs below this (a factor of ~1.01) is uniform cost: nothing to weigh.
_UNIFORM_LOG_COST_STD = 0.01


def trial_cost(trial: FrozenTrial, metric: CostMetric) -> float | None:
    """What a finished trial cost, or None when unknown: ``energy_joules`` is the energy
    hpod charged the study for it (``hpod.info.energy_spent_joules``, summed over its
    seeds, as the study's energy budget counts it); ``time_seconds`` is its wall-clock
    duration (what a ``timeout_seconds`` budget pays for)."""
    if metric == "energy_joules":
        value = (trial.user_attrs.get("hpod.info") or {}).get("energy_spent_joules")
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    if trial.duration is None:
        return None
    return trial.duration.total_seconds()


class _PerCostAcquisition:
    """An Optuna acquisition (log scale) minus ``weight`` times the cost GP's posterior
    mean of the standardized log cost: log(improvement / cost) up to a constant."""

    def __init__(self, inner: BaseAcquisitionFunc, cost_gpr: GPRegressor, weight: float) -> None:
        self._inner = inner
        self._cost_gpr = cost_gpr
        self._weight = weight
        # optim_mixed reads these two attributes of the acquisition it optimizes.
        self.length_scales = inner.length_scales
        self.search_space = inner.search_space

    def eval_acqf(self, x: torch.Tensor) -> torch.Tensor:
        mean, _ = self._cost_gpr.posterior(x)
        return self._inner.eval_acqf(x) - self._weight * mean

    def eval_acqf_no_grad(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.eval_acqf(torch.from_numpy(x)).detach().numpy()

    def eval_acqf_with_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        import torch

        x_tensor = torch.from_numpy(x).requires_grad_(True)
        value = self.eval_acqf(x_tensor)
        value.backward()  # type: ignore[no-untyped-call]  # torch's backward is untyped
        assert x_tensor.grad is not None
        return value.item(), x_tensor.grad.detach().numpy()


class CostAwareGPSampler(HpodGPSampler):
    """hpod's GP sampler choosing by hypervolume (or, with one objective, expected)
    improvement per expected cost (see the module doc).

    Args:
        cost_metric: what a trial costs: ``energy_joules`` or ``time_seconds``
            (:func:`trial_cost`).
        **kwargs: :class:`~hpod.core.samplers._gp.HpodGPSampler`'s arguments.

    Until :data:`MIN_COSTED_TRIALS` trials have a cost, or while the costs are uniform,
    it proposes exactly what HpodGPSampler would.
    """

    def __init__(self, *, cost_metric: CostMetric, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if cost_metric not in COST_METRICS:
            raise ValueError(f"cost_metric must be one of {', '.join(COST_METRICS)}; got {cost_metric!r}")
        self.cost_metric: CostMetric = cost_metric
        self._cost_gpr_cache: GPRegressor | None = None
        # The cost term of the suggestion running in this thread (None: plain acquisition).
        self._active_cost = threading.local()

    def _fit_cost_model(
        self, study: Study, completed_trials: list[FrozenTrial], search_space: dict[str, BaseDistribution]
    ) -> tuple[GPRegressor, float] | None:
        """The cost GP and the weight of its standardized mean, or None when there is
        nothing to weigh (too few costed trials, uniform cost)."""
        from optuna._gp import gp
        from optuna._gp import search_space as gp_search_space

        # Only trials that ran to the end: a pruned trial a multi-fidelity wrapper passes
        # in as an observation cost only what it spent before it was stopped.
        finished = {t._trial_id for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        costed = [(t, c) for t in completed_trials
                  if t._trial_id in finished and (c := trial_cost(t, self.cost_metric)) is not None and c > 0]
        if len(costed) < MIN_COSTED_TRIALS:
            return None
        log_costs = np.log([c for _, c in costed])
        spread = float(log_costs.std())
        if spread < _UNIFORM_LOG_COST_STD:
            return None
        internal = gp_search_space.SearchSpace(search_space)
        X = internal.get_normalized_params([t for t, _ in costed])
        y = (log_costs - log_costs.mean()) / spread
        cache = self._cost_gpr_cache
        if cache is not None and len(cache.inverse_squared_lengthscales) != internal.dim:
            cache = None
        cost_gpr = gp.fit_kernel_params(
            X=X, Y=y, is_categorical=internal.is_categorical, log_prior=self._log_prior,
            minimum_noise=self._minimum_noise, deterministic_objective=False, gpr_cache=cache,
        )
        self._cost_gpr_cache = cost_gpr
        # E[log cost] = mean + spread * standardized mean; the constant does not move the argmax.
        return cost_gpr, spread

    def _sample_relative_impl(
        self,
        study: Study,
        completed_trials: list[FrozenTrial],
        running_trials: list[FrozenTrial],
        search_space: dict[str, BaseDistribution],
    ) -> dict[str, Any]:
        self._active_cost.model = self._fit_cost_model(study, completed_trials, search_space)
        try:
            return super()._sample_relative_impl(study, completed_trials, running_trials, search_space)
        finally:
            self._active_cost.model = None

    def _optimize_acqf(self, acqf: BaseAcquisitionFunc, best_params: np.ndarray | None) -> np.ndarray:
        model = getattr(self._active_cost, "model", None)
        if model is not None:
            cost_gpr, weight = model
            # Duck-typed: optim_mixed calls only the three eval methods and reads the two attributes.
            acqf = _PerCostAcquisition(acqf, cost_gpr, weight)  # type: ignore[assignment]
        return super()._optimize_acqf(acqf, best_params)
