"""Build an Optuna sampler from a spec's ``sampler.name`` and ``sampler.options``.

Every sampler reads constraints from ``FrozenTrial.constraints`` (Optuna 5 reads the
``constraints`` list hpod writes for each trial), so no deprecated ``constraints_func``
is passed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from hpod.core.samplers._auto import (
    DEFAULT_SWITCH_AFTER,
    GPSAMPLER_STARTUP_TRIALS,
    MAX_GP_OBJECTIVES,
    MAX_GP_PARAMS,
    ModelThenEvolutionSampler,
    auto_startup_trials,
    build_gp_sampler,
)
from hpod.core.samplers._cost import CostMetric
from hpod.core.samplers._multifidelity import MultiFidelitySampler
from hpod.core.samplers._qlognehvi import QLogNEHVISampler
from hpod.errors import SpecError
from hpod.spec import SAMPLER_NAMES, samplers_for, validate_sampler_options

__all__ = ["SAMPLER_NAMES", "SamplerChoice", "continued_seed", "create_sampler"]


@dataclass(frozen=True)
class SamplerChoice:
    """The sampler to give ``optuna.create_study``, the name it goes by (for ``auto``, what
    ``auto`` picked) and a sentence saying why, for the engine to record."""

    sampler: optuna.samplers.BaseSampler
    name: str
    reason: str


def continued_seed(seed: int | None, n_trials_so_far: int) -> int | None:
    """The seed of a sampler's random state for a study that already holds
    ``n_trials_so_far`` trials: the spec's seed itself for a new study (runs stay
    reproducible), and a seed derived from both once the study has history, so a
    resumed study continues instead of replaying the suggestions it started with.
    ``None`` (fresh randomness) stays ``None``."""
    if seed is None or n_trials_so_far <= 0:
        return seed
    import numpy as np

    return int(np.random.SeedSequence([int(seed) % (1 << 63), int(n_trials_so_far)]).generate_state(1)[0])


def create_sampler(
    name: str,
    options: Mapping[str, Any] | None,
    *,
    directions: Sequence[str],
    n_trials: int | None,
    n_params: int,
    parallelism: int = 1,
    seed: int | None = None,
    has_constraints: bool = False,
    reference_point: list[float | None] | None = None,
    n_trials_so_far: int = 0,
    energy_budget_joules: float | None = None,
    time_budget_seconds: float | None = None,
    objective_names: Sequence[str] | None = None,
) -> SamplerChoice:
    """Build the sampler a study spec asks for.

    Args:
        name: one of ``auto``, ``nsga2``, ``qlognehvi``, ``tpe``, ``gp``, ``random``.
        options: the spec's ``sampler.options`` (validated here; unknown keys rejected).
        directions: ``"minimize"``/``"maximize"`` per objective.
        n_trials: the trial budget, ``None`` when the study is bounded by time or energy only.
        n_params: number of parameters in the search space.
        parallelism: trials that may run at once (worker slots); batch-aware samplers
            use it to size their startup design and to lie for pending trials.
        seed: seeds the sampler; ``None`` for fresh randomness.
        n_trials_so_far: trials the study already holds (a resumed study). Random
            state is seeded from ``seed`` and this count (:func:`continued_seed`), so
            a resumed sampler does not replay its first suggestions; designs indexed
            by trial number (the Sobol startup, qLogNEHVI's per-trial draws) keep
            ``seed``, so they continue their sequence where the study left it.
        has_constraints: whether the spec declares constraints (informs ``auto``'s reason).
        reference_point: the study's hypervolume reference point (one value per objective,
            in the objectives' own directions) when the spec, the objective or constraint
            bounds state one, ``None`` for an objective nothing bounds; the model-based
            samplers (``auto``, ``gp``, ``qlognehvi``) aim their hypervolume improvement at
            it. ``sampler.options.reference_point`` wins for ``qlognehvi``.
        energy_budget_joules, time_budget_seconds: the study's budget in joules / seconds
            of wall clock (``budget.energy_joules`` / ``budget.timeout_seconds``). ``auto``
            is cost-aware (improvement per expected cost, in the budget's currency, energy
            first) when one is set, unless ``sampler.options.cost_aware`` is false or the
            cost is one of ``objective_names`` (see :func:`_cost_choice`).
        objective_names: the study's objective names (one per direction), when known.

    Raises:
        SpecError: ``sampler.name`` is unknown or cannot serve ``len(directions)`` objectives
            (``qlognehvi`` needs two or more), or a ``sampler.options.<key>`` is unknown
            or out of range.
        ValueError: ``directions``, ``n_trials``, ``n_params`` or ``parallelism`` is invalid
            (the engine passes them, not the user).
    """
    if name not in SAMPLER_NAMES:
        raise SpecError("sampler.name", "unknown sampler", found=name, allowed=", ".join(SAMPLER_NAMES))
    if not directions or any(d not in ("minimize", "maximize") for d in directions):
        raise ValueError(f"directions must be a non-empty list of 'minimize'/'maximize'; got {directions!r}")
    if name not in samplers_for(len(directions)):
        raise SpecError(
            "sampler.name", f"sampler {name!r} needs two or more objectives; this study has one",
            found=name, allowed=", ".join(samplers_for(len(directions))),
        )
    if n_trials is not None and (not isinstance(n_trials, int) or n_trials < 1):
        raise ValueError(f"n_trials must be None or an integer >= 1; got {n_trials!r}")
    if not isinstance(n_params, int) or n_params < 0:
        raise ValueError(f"n_params must be an integer >= 0; got {n_params!r}")
    if not isinstance(parallelism, int) or parallelism < 1:
        raise ValueError(f"parallelism must be an integer >= 1; got {parallelism!r}")
    if objective_names is not None and len(objective_names) != len(directions):
        raise ValueError(f"objective_names has {len(objective_names)} names for {len(directions)} objectives")
    if reference_point is not None and len(reference_point) != len(directions):
        raise ValueError(
            f"reference_point has {len(reference_point)} values for {len(directions)} objectives"
        )
    opts = validate_sampler_options(name, options, len(directions))
    design_seed, seed = seed, continued_seed(seed, n_trials_so_far)

    if name == "auto":
        return _choose_auto(
            opts,
            directions=directions,
            n_trials=n_trials,
            n_params=n_params,
            parallelism=parallelism,
            seed=seed,
            design_seed=design_seed,
            has_constraints=has_constraints,
            reference_point=reference_point,
            cost=_cost_choice(opts, energy_budget_joules, time_budget_seconds, objective_names),
        )
    if name == "nsga2":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.NSGAIISampler(seed=seed, **opts)
        return SamplerChoice(sampler, name, "requested in the spec")
    if name == "tpe":
        # Constant liar keeps concurrent workers from sampling the same region.
        opts.setdefault("constant_liar", parallelism > 1)
        return SamplerChoice(optuna.samplers.TPESampler(seed=seed, **opts), name, "requested in the spec")
    if name == "gp":

        sampler = build_gp_sampler(
            n_params=n_params,
            n_startup_trials=opts.get("n_startup_trials", auto_startup_trials(n_params, parallelism)),
            seed=seed,
            design_seed=design_seed,
            deterministic_objective=opts.get("deterministic_objective", False),
            reference_point=reference_point,
        )
        return SamplerChoice(sampler, name, "requested in the spec")
    if name == "random":
        return SamplerChoice(optuna.samplers.RandomSampler(seed=seed), name, "requested in the spec")

    opts.setdefault("n_startup_trials", max(auto_startup_trials(n_params, parallelism), 2))
    if reference_point is not None:
        opts.setdefault("reference_point", list(reference_point))
    sampler = QLogNEHVISampler(n_params=max(n_params, 1), seed=design_seed, **opts)
    return SamplerChoice(sampler, name, "requested in the spec")


@dataclass(frozen=True)
class CostChoice:
    """``auto``'s cost metric (None: cost-blind) and, when a cost budget is left
    unweighed, the words saying why (for the sampler's reason)."""

    metric: CostMetric | None
    note: str = ""


def _cost_choice(
    opts: dict[str, Any],
    energy_budget_joules: float | None,
    time_budget_seconds: float | None,
    objective_names: Sequence[str] | None = None,
) -> CostChoice:
    """What ``auto`` weighs a trial's cost in (``metric`` None: cost-blind), and why not.

    Off with ``cost_aware: false``; by default on when the budget is stated in joules
    (then energy is the cost) or seconds (then time is). ``cost_aware: true`` or a
    ``cost_metric`` turn it on for a trial budget too.

    By default off, too, when the cost is itself one of the study's objectives (a study
    that minimizes the energy it is budgeted in): the hypervolume improvement already
    rewards a cheap trial (it extends the front at the cheap end), and dividing it by
    the cost again counts cheapness twice and starves the expensive, low-loss end of
    the front (measured on ``training_cost``, benchmarks/results/front_per_joule.md).
    An explicit ``cost_aware: true`` or ``cost_metric`` keeps it on."""
    cost_aware: bool | None = opts.get("cost_aware")
    metric: CostMetric | None = opts.get("cost_metric")
    if cost_aware is False:
        return CostChoice(None)
    explicit = cost_aware is True or metric is not None
    if metric is None:
        if energy_budget_joules is not None:
            metric = "energy_joules"
        elif time_budget_seconds is not None:
            metric = "time_seconds"
        elif cost_aware:
            metric = "energy_joules"
        else:
            return CostChoice(None)
    if not explicit and objective_names is not None and metric in objective_names:
        return CostChoice(None, f", cost-blind: the cost ({metric}) is an objective, so the hypervolume "
                                "already rewards cheap trials")
    return CostChoice(metric)


def _auto_startup(n_params: int, parallelism: int, n_trials: int | None, aims_at_reference: bool) -> int:
    """``auto``'s startup trials: with a reference point, hpod's Sobol design
    (:func:`auto_startup_trials`); without one, GPSampler's own 10 (parity with it, see
    ``build_gp_sampler``'s ``sobol_startup``), except that a budget under 20 trials keeps at
    most half of it (but at least hpod's count) for startup, so a small study still gets
    model-based trials."""
    hpod_count = auto_startup_trials(n_params, parallelism)
    if aims_at_reference:
        return hpod_count
    if n_trials is None:
        return GPSAMPLER_STARTUP_TRIALS
    return min(GPSAMPLER_STARTUP_TRIALS, max(hpod_count, n_trials // 2))


def _choose_auto(
    opts: dict[str, Any],
    *,
    directions: Sequence[str],
    n_trials: int | None,
    n_params: int,
    parallelism: int,
    seed: int | None,
    design_seed: int | None,
    has_constraints: bool,
    reference_point: list[float | None] | None,
    cost: CostChoice | None = None,
) -> SamplerChoice:

    n_objectives = len(directions)
    population_size = opts.get("population_size", 50)
    constrained = " with feasibility-weighted acquisition" if has_constraints else ""
    if n_params == 0:
        return SamplerChoice(optuna.samplers.RandomSampler(seed=seed), "random", "auto: no parameters to model")
    if n_params > MAX_GP_PARAMS:
        reason = (
            f"auto: {n_params} parameters > {MAX_GP_PARAMS}, too many for a GP to learn within a typical "
            "budget; multivariate TPE" + (" with constant liar for parallel workers" if parallelism > 1 else "")
        )
        tpe = optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=parallelism > 1)
        return SamplerChoice(tpe, "tpe", reason)
    if n_objectives > MAX_GP_OBJECTIVES:
        reason = (
            f"auto: {n_objectives} objectives > {MAX_GP_OBJECTIVES}; hypervolume acquisition cost grows "
            f"exponentially with objectives, so NSGA-II (population {population_size})"
        )
        return SamplerChoice(
            optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size), "nsga2", reason
        )

    cost_metric = None if cost is None else cost.metric
    aims_at_reference = reference_point is not None and n_objectives > 1
    n_startup = opts.get("n_startup_trials", _auto_startup(n_params, parallelism, n_trials, aims_at_reference))
    gp = build_gp_sampler(
        n_params=n_params,
        n_startup_trials=n_startup,
        seed=seed,
        design_seed=design_seed,
        deterministic_objective=opts.get("deterministic_objective", False),
        reference_point=reference_point if aims_at_reference else None,
        cost_metric=cost_metric,
        sobol_startup=aims_at_reference,
    )
    if aims_at_reference:
        startup_text = f"{n_startup} Sobol startup trials"
    elif cost_metric is None:
        startup_text = f"Optuna's GPSampler, no reference point or cost to aim at: {n_startup} random startup trials"
    else:
        startup_text = f"GPSampler's start, no reference point: {n_startup} random startup trials"
    model: optuna.samplers.BaseSampler = gp
    if opts.get("multi_fidelity"):
        model = MultiFidelitySampler(gp)
    switch_after = opts.get("switch_after", DEFAULT_SWITCH_AFTER)
    aimed = ""
    if aims_at_reference and reference_point is not None:
        aimed = ", improvement measured at the study's reference point" if None not in reference_point else \
            ", improvement measured at the bounds the study states for " \
            f"{sum(v is not None for v in reference_point)} of {n_objectives} objectives"
    if cost_metric is not None:
        aimed += f", per expected {cost_metric} (a GP on log cost)"
    elif cost is not None:
        aimed += cost.note
    model_text = (
        f"GP ({n_objectives}-objective log-EHVI{constrained}{aimed}, {startup_text}"
        + (f", {parallelism} concurrent trials as pending points" if parallelism > 1 else "")
        + (", multi-fidelity: pruned trials inform the model at the step they reached"
           if opts.get("multi_fidelity") else "")
        + ")"
    )
    if n_trials is not None and n_trials <= switch_after:
        reason = f"auto: budget {n_trials} <= {switch_after} trials and {n_params} parameters: {model_text}"
        return SamplerChoice(model, "gp", reason)
    budget = "no trial budget" if n_trials is None else f"budget {n_trials} > {switch_after} trials"
    reason = (
        f"auto: {budget}: {model_text} for the first {switch_after} trials, then NSGA-II "
        f"(population {population_size}) seeded with the model phase's last {population_size} trials"
    )
    sampler = ModelThenEvolutionSampler(
        model,
        optuna.samplers.NSGAIISampler(seed=seed, population_size=population_size),
        switch_after=switch_after,
        population_size=population_size,
    )
    return SamplerChoice(sampler, "gp+nsga2", reason)
