"""The spec sections of hpod's search strategies: ``strategy:``, ``pruner:`` and adaptive ``seeds:``.

They live here, next to the strategies that read them, and are fields of
:class:`hpod.spec.StudySpec`. Each model rejects the options of another kind, so a
misplaced option fails at submission instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["PRUNER_KINDS", "STRATEGY_KINDS", "AdaptiveSeedsSpec", "PrunerSpec", "StrategySpec"]

STRATEGY_KINDS = ("pareto", "scalarized", "pbt")
PRUNER_KINDS = ("none", "mo_asha", "early_stopping")

_SCALARIZED_FIELDS = frozenset({"cost_weight", "weights", "normalization", "constraint_handling", "dual_step",
                                "freeze_normalization_after", "loss_metric"})
_PBT_FIELDS = frozenset({"population", "interval_steps", "generations", "quantile", "perturb_factors",
                         "resample_probability", "perturb", "metric"})


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _reject_foreign(model: BaseModel, kind: str, owned: dict[str, frozenset[str]]) -> None:
    for other, names in owned.items():
        if other == kind:
            continue
        # A dumped spec carries every field at its default: only a changed value is stray.
        fields = type(model).model_fields
        stray = sorted(n for n in model.model_fields_set & (names - owned.get(kind, frozenset()))
                       if getattr(model, n) != fields[n].get_default(call_default_factory=True))
        if stray:
            raise ValueError(f"{', '.join(stray)} only applies to kind {other!r} (found kind {kind!r})")


class StrategySpec(_Options):
    """``strategy:`` — how the study searches.

    - ``pareto`` (default): one Optuna value per objective; the sampler searches the front.
    - ``scalarized``: one value ``F = L + λ·C + Σ μ_j g_j`` with
      ``C = Σ_k w_k · c_k / s_k`` over the cost objectives (every objective but
      ``loss_metric``); ``s_k`` is the bound of a ``c_k <= bound`` constraint when the
      spec has one, else the running median of ``c_k`` over completed trials, frozen
      after ``freeze_normalization_after`` trials so F stays comparable. Constraints
      are either Lagrangian penalties (``μ_j ← max(0, μ_j + η·g_j)`` after each
      completed trial, ``g_j`` the violation relative to the bound) or plain sampler
      feasibility constraints (``constraint_handling: feasibility``).
    - ``pbt``: population-based training: ``population`` members train in intervals of
      ``interval_steps`` steps, resuming from checkpoints; after each generation the
      bottom ``quantile`` copies a top-``quantile`` member (exploit) and perturbs the
      ``perturb`` parameters by a factor from ``perturb_factors`` or resamples them
      with ``resample_probability`` (explore).
    """

    kind: Literal["pareto", "scalarized", "pbt"] = "pareto"
    # --- scalarized
    #: λ, the weight of the normalized cost C against the loss L
    cost_weight: float = Field(default=1.0, ge=0, alias="lambda")
    #: α, β, γ: weight of each cost objective inside C (default 1 for each)
    weights: dict[str, float] = Field(default_factory=dict)
    normalization: Literal["auto", "bounds", "median"] = "auto"
    constraint_handling: Literal["lagrangian", "feasibility"] = "lagrangian"
    #: η, the dual-ascent step of the Lagrange multipliers
    dual_step: float = Field(default=1.0, gt=0)
    freeze_normalization_after: int = Field(default=10, ge=1)
    #: the objective that is L (default: the first objective)
    loss_metric: str | None = None
    # --- pbt
    population: int = Field(default=8, ge=2, le=1000)
    interval_steps: int = Field(default=1, ge=1)
    #: intervals each member trains (None: until the budget is spent)
    generations: int | None = Field(default=None, ge=1)
    quantile: float = Field(default=0.25, gt=0, le=0.5)
    perturb_factors: list[float] = Field(default_factory=lambda: [0.8, 1.2])
    resample_probability: float = Field(default=0.1, ge=0, le=1)
    perturb: list[str] = Field(default_factory=lambda: ["learning_rate", "dropout"])
    #: the intermediate metric members are ranked by (default: the first objective)
    metric: str | None = None

    @model_validator(mode="after")
    def _check(self) -> StrategySpec:
        _reject_foreign(self, self.kind, {"scalarized": _SCALARIZED_FIELDS, "pbt": _PBT_FIELDS,
                                          "pareto": frozenset()})
        for key, w in self.weights.items():
            if w < 0:
                raise ValueError(f"weights.{key} must be >= 0 (found {w})")
        if not self.perturb_factors or any(f <= 0 for f in self.perturb_factors):
            raise ValueError(f"perturb_factors must be positive numbers (found {self.perturb_factors})")
        return self


_ASHA_FIELDS = frozenset({"min_resource", "reduction_factor", "metrics"})
_ES_FIELDS = frozenset({"min_delta", "patience", "metric"})


class PrunerSpec(_Options):
    """``pruner:`` — stop unpromising trials early; their measurements are kept and
    their energy counts toward the budget.

    - ``mo_asha``: successive-halving rungs at steps ``min_resource · reduction_factor^k``;
      at a rung a trial is ranked by non-dominated sorting of its intermediate
      ``metrics`` (default: the first objective and the cost reported so far,
      ``energy_joules`` or ``time_seconds``) among the trials that reached the rung,
      and continues only if it is in the top ``1/reduction_factor``.
    - ``early_stopping``: stop when ``metric`` has not improved by ``min_delta`` for
      ``patience`` evaluations.
    """

    kind: Literal["none", "mo_asha", "early_stopping"] = "none"
    min_resource: int = Field(default=1, ge=1)
    reduction_factor: int = Field(default=3, ge=2)
    metrics: list[str] | None = None
    min_delta: float = Field(default=0.0, ge=0)
    patience: int = Field(default=5, ge=1)
    metric: str | None = None

    @model_validator(mode="after")
    def _check(self) -> PrunerSpec:
        _reject_foreign(self, self.kind, {"mo_asha": _ASHA_FIELDS, "early_stopping": _ES_FIELDS,
                                          "none": frozenset()})
        if self.metrics is not None and len(self.metrics) < 1:
            raise ValueError("metrics must name at least one intermediate metric")
        return self


class AdaptiveSeedsSpec(_Options):
    """Adaptive seeds (``seeds: {max: 3, adaptive: true}``): a configuration runs on one
    seed first; another seed is added only while its confidence box (mean ± ``z``
    standard errors per objective, with ``noise_floor`` as the spread of a single seed
    relative to the value when nothing better is known) could still reach the
    current front.
    """

    z: float = Field(default=2.0, gt=0)
    #: relative spread assumed for one seed before any configuration has two seeds
    noise_floor: float = Field(default=0.05, ge=0)


def normalize_seeds(data: Any) -> Any:
    """Turn ``seeds: {max: k, adaptive: true, ...}`` into ``seeds: k`` plus ``seeds_adaptive``."""
    if not isinstance(data, dict) or not isinstance(data.get("seeds"), dict):
        return data
    seeds = dict(data["seeds"])
    unknown = sorted(set(seeds) - {"max", "adaptive", "z", "noise_floor"})
    if unknown:
        raise ValueError(f"seeds: unknown field(s) {', '.join(unknown)}; allowed: max, adaptive, z, noise_floor")
    out = dict(data)
    out["seeds"] = seeds.get("max", 3)
    if seeds.get("adaptive", True):
        out["seeds_adaptive"] = {k: v for k, v in seeds.items() if k in ("z", "noise_floor")}
    return out


def default_multi_fidelity_pruner(data: Any) -> Any:
    """Give a spec whose ``auto`` sampler asks for ``multi_fidelity: true`` and that has no
    ``pruner`` section the MO-ASHA pruner (its defaults): multi-fidelity search learns from
    trials stopped early, so it needs something that stops them."""
    if not isinstance(data, dict) or "pruner" in data:
        return data
    sampler = data.get("sampler")
    options = sampler.get("options") if isinstance(sampler, dict) else None
    if not isinstance(options, dict) or options.get("multi_fidelity") is not True:
        return data
    return {**data, "pruner": {"kind": "mo_asha"}}
