"""Space-filling startup points: a scrambled Sobol sequence served one parameter at a time.

Model-based samplers spend their first trials before any model exists; Sobol points
cover the box more evenly than uniform random ones, so the first model sees more of it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["SobolStartupSampler", "from_unit_interval", "to_unit_interval"]


def from_unit_interval(u: float, distribution: BaseDistribution) -> Any:
    """Map ``u`` in [0, 1] to a value of ``distribution`` (log scale where the distribution is log)."""
    u = min(max(float(u), 0.0), 1.0)
    if isinstance(distribution, CategoricalDistribution):
        index = min(int(u * len(distribution.choices)), len(distribution.choices) - 1)
        return distribution.choices[index]
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        low, high = float(distribution.low), float(distribution.high)
        step = distribution.step
        if distribution.log:
            value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        elif step is not None:
            # Equal-width bins per grid value, so every grid value is equally likely.
            n_values = round((high - low) / step) + 1
            value = low + min(int(u * n_values), n_values - 1) * step
        else:
            value = low + u * (high - low)
        value = min(max(value, low), high)
        if isinstance(distribution, IntDistribution):
            return int(min(max(round(value), distribution.low), distribution.high))
        return float(value)
    raise TypeError(f"unsupported distribution {type(distribution).__name__}")


def to_unit_interval(value: Any, distribution: BaseDistribution) -> float:
    """Inverse of :func:`from_unit_interval` for float and int distributions (grid values at bin centres)."""
    if isinstance(distribution, (FloatDistribution, IntDistribution)):
        low, high = float(distribution.low), float(distribution.high)
        if high == low:
            return 0.5
        if distribution.log:
            return (math.log(float(value)) - math.log(low)) / (math.log(high) - math.log(low))
        return (float(value) - low) / (high - low)
    raise TypeError(f"to_unit_interval needs a float or int distribution, got {type(distribution).__name__}")


class SobolStartupSampler(optuna.samplers.BaseSampler):
    """Independent sampler whose trial ``t`` gets point ``t`` of a scrambled Sobol sequence.

    Parameter ``i`` of a trial (in the order the objective suggests them) takes Sobol
    dimension ``i``; a study with a fixed search space therefore gets a proper
    ``n_params``-dimensional Sobol design. Trials past ``n_points`` or parameters past
    ``n_params`` fall back to uniform random sampling. Stateless apart from the
    precomputed sequence, so it is safe for several workers sharing one study.
    """

    def __init__(self, n_params: int, n_points: int, *, seed: int | None = None,
                 fallback_seed: int | None = None) -> None:
        if n_params < 1:
            raise ValueError(f"n_params must be >= 1; got {n_params}")
        if n_points < 1:
            raise ValueError(f"n_points must be >= 1; got {n_points}")
        from scipy.stats import qmc

        # Sobol balance needs a power of two points; draw the next one up.
        exponent = max(1, math.ceil(math.log2(n_points)))
        self._points = qmc.Sobol(d=n_params, scramble=True, seed=seed).random_base2(exponent)[:n_points]
        # The fallback's random state is its own (``fallback_seed``, default ``seed``):
        # a resumed study gives it a seed derived from its history so it does not replay.
        self._fallback = optuna.samplers.RandomSampler(seed=seed if fallback_seed is None else fallback_seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        dimension = len(trial.params)
        if trial.number < self._points.shape[0] and dimension < self._points.shape[1]:
            return from_unit_interval(self._points[trial.number, dimension], param_distribution)
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

