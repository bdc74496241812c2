"""hpod's BoTorch sampler: independent GPs per objective and constraint, optimized with
qLogNoisyExpectedHypervolumeImprovement (the maintained form of qEHVI).

Running trials of the study enter the acquisition as ``X_pending``, so k workers asking
at once get k different candidates; constraint values (``trial.constraints``, <= 0
feasible) are modelled by their own GPs and weight the improvement by feasibility.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import TrialState

from hpod.core.pareto import derive_reference_point
from hpod.core.samplers._startup import SobolStartupSampler, to_unit_interval

if TYPE_CHECKING:
    import torch
    from optuna.distributions import BaseDistribution
    from optuna.study import Study
    from optuna.trial import FrozenTrial

__all__ = ["QLogNEHVISampler"]


@dataclass(frozen=True)
class _Column:
    """Where one parameter lives in the encoded unit-cube input."""

    name: str
    distribution: BaseDistribution
    start: int
    width: int  # 1 for numeric parameters, number of choices for one-hot categoricals


class _Encoder:
    """Maps parameter dicts to points of the unit cube and back.

    Float/int parameters take one column each (log-scaled where the distribution is log);
    categoricals are one-hot, and decoded by the largest entry.
    """

    def __init__(self, search_space: dict[str, BaseDistribution]) -> None:
        columns: list[_Column] = []
        start = 0
        for name in sorted(search_space):
            distribution = search_space[name]
            width = len(distribution.choices) if isinstance(distribution, CategoricalDistribution) else 1
            columns.append(_Column(name, distribution, start, width))
            start += width
        self.columns = columns
        self.dimension = start

    def encode(self, params: dict[str, Any]) -> np.ndarray:
        row = np.zeros(self.dimension)
        for column in self.columns:
            value = params[column.name]
            if isinstance(column.distribution, CategoricalDistribution):
                row[column.start + column.distribution.choices.index(value)] = 1.0
            else:
                row[column.start] = to_unit_interval(value, column.distribution)
        return row

    def decode(self, row: np.ndarray) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for column in self.columns:
            distribution = column.distribution
            if isinstance(distribution, CategoricalDistribution):
                block = row[column.start : column.start + column.width]
                params[column.name] = distribution.choices[int(np.argmax(block))]
            elif isinstance(distribution, (FloatDistribution, IntDistribution)):
                params[column.name] = _decode_numeric(float(row[column.start]), distribution)
        return params


def _decode_numeric(u: float, distribution: FloatDistribution | IntDistribution) -> Any:
    u = min(max(u, 0.0), 1.0)
    low, high = float(distribution.low), float(distribution.high)
    if distribution.log:
        value = math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    else:
        value = low + u * (high - low)
    if distribution.step is not None and not distribution.log:
        value = low + round((value - low) / distribution.step) * distribution.step
    value = min(max(value, low), high)
    if isinstance(distribution, IntDistribution):
        return int(min(max(round(value), distribution.low), distribution.high))
    return float(value)


@contextlib.contextmanager
def _quiet_numerics() -> Iterator[None]:
    """Silence the numerical chatter of GP fitting and acquisition optimization.

    Jitter added to a covariance, an L-BFGS-B stop on ABNORMAL, a restart with new
    initial conditions: BoTorch recovers from all of these by itself and warns each time.
    """
    from botorch.exceptions.warnings import BotorchWarning
    from linear_operator.utils.warnings import NumericalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BotorchWarning)
        warnings.simplefilter("ignore", NumericalWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"botorch\.")
        yield


def _constraint_column(index: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """botorch's constraint callable: the model's ``index``-th output (feasible when <= 0)."""
    return lambda samples: samples[..., index]


def _constraint_values(trial: FrozenTrial, names: list[str]) -> list[float] | None:
    constraints = trial.constraints
    if not names:
        return []
    if not all(name in constraints for name in names):
        return None
    return [float(constraints[name]) for name in names]


class QLogNEHVISampler(optuna.samplers.BaseSampler):
    """Multi-objective Bayesian optimization with BoTorch's qLogNEHVI.

    Args:
        n_startup_trials: completed trials drawn from a scrambled Sobol design before the
            first model is fitted (>= 2).
        n_params: number of parameters of the study (dimension of the Sobol design); the
            design falls back to random sampling for parameters beyond it.
        seed: seeds the Sobol design, the MC samples and the acquisition optimizer. No
            global random state is changed.
        num_restarts, raw_samples: ``optimize_acqf`` restarts and the number of raw
            candidates it screens for them.
        mc_samples: quasi-MC samples of the posterior used by the acquisition.
        max_iterations: L-BFGS-B iterations per restart.
        reference_point: hypervolume reference point in the study's objective space (one
            value per objective, in the objective's own direction; ``None`` entries for
            objectives nothing bounds); derived from the data (nadir + 10 % of the range)
            where not stated.

    Running trials that already hold every parameter are passed as ``X_pending``.
    The sampler keeps no state between calls beyond its settings, so several
    processes may share one study.
    """

    def __init__(
        self,
        *,
        n_startup_trials: int = 10,
        n_params: int = 8,
        seed: int | None = None,
        num_restarts: int = 4,
        raw_samples: int = 256,
        mc_samples: int = 64,
        max_iterations: int = 100,
        reference_point: list[float | None] | None = None,
    ) -> None:
        for name, value, low in (
            ("n_startup_trials", n_startup_trials, 2),
            ("n_params", n_params, 1),
            ("num_restarts", num_restarts, 1),
            ("raw_samples", raw_samples, 1),
            ("mc_samples", mc_samples, 1),
            ("max_iterations", max_iterations, 1),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        self._n_startup_trials = n_startup_trials
        self._seed = seed
        self._num_restarts = num_restarts
        self._raw_samples = raw_samples
        self._mc_samples = mc_samples
        self._max_iterations = max_iterations
        self._reference_point = None if reference_point is None else \
            [math.nan if v is None else float(v) for v in reference_point]
        self._search_space = IntersectionSearchSpace()
        self._independent_sampler = SobolStartupSampler(n_params, max(n_startup_trials, 2), seed=seed)

    def reseed_rng(self) -> None:
        self._independent_sampler.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {
            name: distribution
            for name, distribution in self._search_space.calculate(study).items()
            if not distribution.single()
        }

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._independent_sampler.sample_independent(study, trial, param_name, param_distribution)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        completed = [
            t for t in trials if t.state == TrialState.COMPLETE and search_space.keys() <= t.params.keys()
        ]
        if len(completed) < self._n_startup_trials:
            return {}
        running = [
            t
            for t in trials
            if t.state == TrialState.RUNNING
            and t.number != trial.number
            and search_space.keys() <= t.params.keys()
        ]
        return self._suggest(study, trial, search_space, completed, running)

    def _suggest(
        self,
        study: Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        completed: list[FrozenTrial],
        running: list[FrozenTrial],
    ) -> dict[str, Any]:
        import torch

        encoder = _Encoder(search_space)
        constraint_names = sorted({name for t in completed for name in t.constraints})
        rows, objective_rows, constraint_rows = [], [], []
        for t in completed:
            constraint_row = _constraint_values(t, constraint_names)
            if constraint_row is None or t.values is None:
                continue
            rows.append(encoder.encode(t.params))
            objective_rows.append(list(t.values))
            constraint_rows.append(constraint_row)
        if len(rows) < 2:
            return {}
        signs = np.array([1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions])
        minimized = np.asarray(objective_rows, dtype=float) * signs
        feasible = np.all(np.asarray(constraint_rows, dtype=float).reshape(len(rows), -1) <= 0, axis=1)
        reference_minimized = derive_reference_point(minimized[feasible] if feasible.any() else minimized)
        if self._reference_point is not None:
            # Stated coordinates win; an objective nothing bounds (NaN) keeps the derived one.
            stated = np.asarray(self._reference_point, dtype=float) * signs
            reference_minimized = np.where(np.isnan(stated), reference_minimized, stated)

        # devices=[]: fork only the CPU generator; the sampler never touches CUDA.
        with torch.random.fork_rng(devices=[]):
            if self._seed is not None:
                torch.manual_seed(self._seed * 100_003 + trial.number)
            with _quiet_numerics():
                candidate = self._optimize(
                    x=np.asarray(rows),
                    # BoTorch maximizes, so the minimized values and reference point are negated.
                    y=-minimized,
                    reference=-reference_minimized,
                    constraints=np.asarray(constraint_rows, dtype=float).reshape(len(rows), len(constraint_names)),
                    pending=np.asarray([encoder.encode(t.params) for t in running]).reshape(-1, encoder.dimension),
                    encoder=encoder,
                )
        return encoder.decode(candidate)

    def _optimize(
        self,
        *,
        x: np.ndarray,
        y: np.ndarray,
        reference: np.ndarray,
        constraints: np.ndarray,
        pending: np.ndarray,
        encoder: _Encoder,
    ) -> np.ndarray:
        import torch
        from botorch.acquisition.multi_objective.logei import (
            qLogNoisyExpectedHypervolumeImprovement,
        )
        from botorch.acquisition.multi_objective.objective import (
            IdentityMCMultiOutputObjective,
        )
        from botorch.exceptions.errors import ModelFittingError
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.model_list_gp_regression import ModelListGP
        from botorch.models.transforms.outcome import Standardize
        from botorch.optim.optimize import optimize_acqf
        from botorch.sampling.normal import SobolQMCNormalSampler
        from gpytorch.mlls import SumMarginalLogLikelihood

        n_objectives = y.shape[1]
        train_x = torch.as_tensor(x, dtype=torch.double)
        outputs = np.concatenate([y, constraints], axis=1)
        models = []
        for column in range(outputs.shape[1]):
            train_y = torch.as_tensor(outputs[:, column : column + 1], dtype=torch.double)
            models.append(SingleTaskGP(train_x, train_y, outcome_transform=Standardize(m=1)))
        model = ModelListGP(*models)
        mll = SumMarginalLogLikelihood(model.likelihood, model)
        try:
            fit_gpytorch_mll(mll)
        except ModelFittingError:
            # Every fitting attempt failed: the GP keeps its prior-mode hyperparameters,
            # which still give a usable (if vaguer) acquisition rather than a lost trial.
            pass

        constraint_callables = [_constraint_column(n_objectives + i) for i in range(constraints.shape[1])]
        acquisition = qLogNoisyExpectedHypervolumeImprovement(
            model=model,
            ref_point=torch.as_tensor(reference, dtype=torch.double).tolist(),
            X_baseline=train_x,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([self._mc_samples])),
            objective=IdentityMCMultiOutputObjective(outcomes=list(range(n_objectives))),
            constraints=constraint_callables or None,
            X_pending=torch.as_tensor(pending, dtype=torch.double) if len(pending) else None,
            prune_baseline=True,
        )
        bounds = torch.stack(
            [torch.zeros(encoder.dimension, dtype=torch.double), torch.ones(encoder.dimension, dtype=torch.double)]
        )
        candidate, _ = optimize_acqf(
            acq_function=acquisition,
            bounds=bounds,
            q=1,
            num_restarts=self._num_restarts,
            raw_samples=self._raw_samples,
            options={"maxiter": self._max_iterations, "batch_limit": self._num_restarts},
        )
        return candidate.detach().numpy().reshape(-1)
