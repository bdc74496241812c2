"""The ``auto`` sampler policy and the model-then-evolution sampler it uses for large budgets.

``auto`` picks a Gaussian-process sampler (Optuna's GPSampler core aimed at the study's
reference point, with hpod's Sobol startup) while a model pays for itself, and hands
over to NSGA-II seeded with the model phase's best trials once the budget grows past
what a GP can fit cheaply. Without a reference point its GP starts as GPSampler does (see
:func:`build_gp_sampler`'s ``sobol_startup``), and with no cost to weigh either it is
Optuna's GPSampler itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from hpod.core.samplers._cost import CostAwareGPSampler, CostMetric
from hpod.core.samplers._gp import HpodGPSampler
from hpod.core.samplers._startup import SobolStartupSampler

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["GPSAMPLER_STARTUP_TRIALS", "ModelThenEvolutionSampler", "auto_startup_trials", "build_gp_sampler"]

#: Trials after which ``auto`` hands a study over from the GP to NSGA-II. GP fitting
#: cost grows with the cube of the number of trials; around 200 trials one model-based
#: suggestion takes 2-5 s on two cores for 3-4 objectives.
DEFAULT_SWITCH_AFTER = 200
#: Above this many parameters a GP with one lengthscale per dimension needs more
#: trials than a typical budget to learn anything; multivariate TPE copes better.
MAX_GP_PARAMS = 30
#: Hypervolume-based acquisition cost grows exponentially with the number of objectives.
MAX_GP_OBJECTIVES = 4
#: GPSampler's own startup: uniform random trials before its first model.
GPSAMPLER_STARTUP_TRIALS = 10
#: GPSampler's own number of points scored before the acquisition's local searches.
GPSAMPLER_PRELIMINARY_SAMPLES = 2048


def auto_startup_trials(n_params: int, parallelism: int) -> int:
    """Sobol startup trials before the first GP: ``n_params + 1`` clamped to [5, 10], and at
    least ``parallelism`` so the first batch of concurrent asks is space-filling."""
    return max(min(max(n_params + 1, 5), 10), parallelism)


def build_gp_sampler(
    *,
    n_params: int,
    n_startup_trials: int,
    seed: int | None,
    design_seed: int | None = None,
    deterministic_objective: bool = False,
    reference_point: list[float | None] | None = None,
    cost_metric: CostMetric | None = None,
    sobol_startup: bool = True,
) -> optuna.samplers.GPSampler:
    """hpod's GP sampler (:class:`~hpod.core.samplers._gp.HpodGPSampler`: Optuna's GPSampler
    aimed at the study's reference point) after a scrambled-Sobol startup design instead
    of uniform random points.

    GPSampler reads ``FrozenTrial.constraints`` itself (Optuna 5) and treats running
    trials as pending points, so neither a ``constraints_func`` nor extra batching is needed.

    ``design_seed`` scrambles the Sobol design (indexed by trial number, so a resumed
    study continues it; default ``seed``); ``seed`` seeds the random state.

    ``cost_metric`` (``energy_joules`` / ``time_seconds``) makes it cost-aware
    (:class:`~hpod.core.samplers._cost.CostAwareGPSampler`: improvement per expected
    cost); ``None``: cost-blind.

    ``sobol_startup=False`` (``auto`` without a reference point) keeps GPSampler's own
    startup (uniform random points from its seeded RandomSampler) and its 2048 preliminary
    samples for any number of objectives; without a cost metric as well the result is
    Optuna's GPSampler itself, and with a uniform cost the cost-aware sampler proposes what
    that GPSampler would. hpod's Sobol design (``n_params + 1`` points clamped to [5, 10])
    and its 1024 preliminary samples for 3-4 objectives were chosen with the reference
    point; without one they trailed GPSampler by more than 0.05 median log10 HV gap in 6 of
    the sampler benchmark's 12 measured cells (10 seeds; 5 at 100 noiseless evaluations) and
    led in others, all within the seeds' spread (benchmarks/results/samplers.md before
    this rule). GPSampler's own start is parity by construction.
    """
    common: dict[str, Any] = {
        "reference_point": reference_point,
        "seed": seed,
        "n_startup_trials": n_startup_trials,
        "deterministic_objective": deterministic_objective,
    }
    if not sobol_startup:
        if cost_metric is None and reference_point is None:
            return optuna.samplers.GPSampler(
                seed=seed, n_startup_trials=n_startup_trials, deterministic_objective=deterministic_objective
            )
        common["n_preliminary_samples"] = GPSAMPLER_PRELIMINARY_SAMPLES
    else:
        common["independent_sampler"] = SobolStartupSampler(
            max(n_params, 1), max(n_startup_trials, 1), seed=seed if design_seed is None else design_seed,
            fallback_seed=seed)
        # The independent sampler is hpod's startup design, used on purpose.
        common["warn_independent_sampling"] = False
    if cost_metric is not None:
        return CostAwareGPSampler(cost_metric=cost_metric, **common)
    return HpodGPSampler(**common)


class ModelThenEvolutionSampler(optuna.samplers.BaseSampler):
    """Model-based sampling for trials ``0 .. switch_after - 1``, NSGA-II after.

    The model phase's last ``population_size`` trials are tagged as NSGA-II's generation 0;
    NSGA-II's elite selection (feasible first, by non-domination rank and crowding) picks
    the parents of its first offspring from them, so evolution starts from where the
    model was proposing rather than from random points. The phase is a function of the trial
    number, so every worker of a shared study agrees on it without coordination.
    """

    def __init__(
        self,
        model_sampler: optuna.samplers.BaseSampler,
        evolution_sampler: optuna.samplers.NSGAIISampler,
        *,
        switch_after: int,
        population_size: int,
    ) -> None:
        if switch_after < 1:
            raise ValueError(f"switch_after must be >= 1; got {switch_after}")
        self._model = model_sampler
        self._evolution = evolution_sampler
        self._switch_after = switch_after
        self._population_size = population_size

    def _phase(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        return self._model if trial.number < self._switch_after else self._evolution

    def reseed_rng(self) -> None:
        self._model.reseed_rng()
        self._evolution.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if self._switch_after - self._population_size <= trial.number < self._switch_after:
            # NSGA-II keeps generations in trial system attributes, which Optuna lets us
            # write only while a trial runs: the model phase's last ``population_size``
            # trials become NSGA-II's generation 0, so its first offspring are bred from
            # the model's proposals (elite-selected by non-domination) instead of from
            # random points.
            key = optuna.samplers.NSGAIISampler._get_generation_key()
            study._storage.set_trial_system_attr(trial._trial_id, key, 0)
        self._phase(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._phase(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._phase(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._phase(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None
    ) -> None:
        self._phase(trial).after_trial(study, trial, state, values)
