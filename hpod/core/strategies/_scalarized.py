"""Scalarized, constrained, cost-aware search: ``F = L + λ·C + Σ μ_j g_j`` with projected
dual ascent on the Lagrange multipliers, and a λ sweep that traces a front from
scalarized studies.

Normalization of the cost terms (so that λ means the same on every objective):
``c_k / s_k`` where ``s_k`` is the bound of a ``c_k <= bound`` constraint when the
spec has one (``normalization: auto`` or ``bounds``), else the median of ``c_k`` over
the first ``freeze_normalization_after`` completed trials (a running median that is
then frozen, so the F values of early and late trials stay comparable). Constraint
violations are relative to their bound: ``g_j = (value - bound) / |bound|``.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpod.core.pareto import non_dominated_mask
from hpod.core.records import feasible
from hpod.core.samplers import SamplerChoice, create_sampler
from hpod.core.strategies._base import EngineView, Strategy
from hpod.spec import parse_spec

if TYPE_CHECKING:
    import optuna

    from hpod.core.samplers import SamplerChoice
    from hpod.spec import StudySpec
    from hpod.store import JobRow, Store

__all__ = [
    "STATE_KEY",
    "ScalarizedStrategy",
    "lagrange_multipliers",
    "lambda_sweep_specs",
    "multiplier_history",
    "scalarized_front",
]

log = logging.getLogger(__name__)
STATE_KEY = "strategy.scalarized"
#: the multiplier history alone, under the key ``hpod report`` draws
HISTORY_KEY = "lagrange_history"
#: cap on the stored multiplier history (one entry per completed trial)
_HISTORY_MAX = 5000


def _relative_violation(c: Any, value: float) -> float:
    return float(c.violation(value)) / max(abs(float(c.bound)), 1e-12)


class ScalarizedStrategy(Strategy):
    """One Optuna value per trial: the scalarized, penalized cost F."""

    kind = "scalarized"

    def __init__(self, engine: EngineView):
        super().__init__(engine)
        spec = engine.spec
        st = spec.strategy
        self.options = st
        names = spec.objective_names
        self.loss_metric = st.loss_metric or names[0]
        self.loss_sign = 1.0 if next(o for o in spec.objectives if o.name == self.loss_metric).direction == \
            "minimize" else -1.0
        self.cost_terms = {o.name: (1.0 if o.direction == "minimize" else -1.0) for o in spec.objectives
                           if o.name != self.loss_metric}
        self.weights = {k: float(st.weights.get(k, 1.0)) for k in self.cost_terms}
        self.constraints = list(engine.constraints)
        self.bounds: dict[str, float] = {}
        if st.normalization in ("auto", "bounds"):
            for c in self.constraints:
                if c.metric in self.cost_terms and c.op in ("<=", "<") and c.bound > 0:
                    self.bounds.setdefault(c.metric, c.bound)
            if st.normalization == "bounds":
                missing = sorted(set(self.cost_terms) - set(self.bounds))
                if missing:
                    log.warning("study %s: normalization 'bounds' but no positive upper bound for %s; "
                                "using their running median", engine.name, ", ".join(missing))
        self.state: dict[str, Any] = engine.store.get_state(engine.name, STATE_KEY) or {
            "multipliers": {c.text: 0.0 for c in self.constraints} if st.constraint_handling == "lagrangian" else {},
            "observations": {k: [] for k in self.cost_terms if k not in self.bounds},
            "scales": {},
            "history": [],
            "told": [],
        }

    # ------------------------------------------------------------------ sampler
    def create_sampler(self) -> SamplerChoice:

        spec = self.engine.spec
        name = spec.sampler.name
        reason_prefix = ""
        if name in ("auto", "nsga2", "qlognehvi"):
            # One value: TPE is the robust single-objective default; GP for small budgets.
            n = spec.budget.n_trials
            name = "gp" if n is not None and n <= 60 and len(self.engine.distributions) <= 10 else "tpe"
            reason_prefix = f"scalarized strategy: one objective, so {name} (spec asked {spec.sampler.name!r}); "
        choice = create_sampler(name, dict(spec.sampler.options) if name == spec.sampler.name else {},
                                directions=["minimize"], n_trials=spec.budget.n_trials,
                                n_params=len(self.engine.distributions), parallelism=self.engine.parallelism,
                                seed=spec.sampler.seed, has_constraints=bool(self.constraints))

        return SamplerChoice(choice.sampler, choice.name, reason_prefix + choice.reason)

    # ------------------------------------------------------------------ F
    def scales(self) -> dict[str, float]:
        out = dict(self.bounds)
        for k, values in self.state["observations"].items():
            frozen = self.state["scales"].get(k)
            if frozen is not None:
                out[k] = frozen
            elif values:
                out[k] = abs(statistics.median(values)) or 1.0
            else:
                out[k] = 1.0
        return out

    def multipliers(self) -> dict[str, float]:
        return dict(self.state["multipliers"])

    def decompose(self, metrics: dict[str, float]) -> dict[str, Any]:
        """F and its parts for one trial's metrics, with the current scales and multipliers."""
        scales = self.scales()
        cost = sum(self.weights[k] * self.cost_terms[k] * float(metrics[k]) / scales[k] for k in self.cost_terms)
        violations = {c.text: _relative_violation(c, float(metrics[c.metric])) for c in self.constraints
                      if c.metric in metrics}
        mu = self.state["multipliers"]
        penalty = sum(mu.get(name, 0.0) * g for name, g in violations.items())
        loss = self.loss_sign * float(metrics[self.loss_metric])
        value = loss + self.options.cost_weight * cost + penalty
        return {"value": value, "loss": loss, "cost": cost, "penalty": penalty, "violations": violations,
                "multipliers": dict(mu), "scales": scales}

    def values(self, metrics: dict[str, float], job: JobRow) -> list[float]:
        # Observe the cost terms first, so the very first trial is normalized by itself.
        trial_number = job.trial_number
        if trial_number not in self.state["told"]:
            for k, obs in self.state["observations"].items():
                if k not in self.state["scales"] and k in metrics:
                    obs.append(float(metrics[k]))
                    if len(obs) >= self.options.freeze_normalization_after:
                        self.state["scales"][k] = abs(statistics.median(obs)) or 1.0
        parts = self.decompose(metrics)
        self._last = (trial_number, parts)
        self.engine.store.optuna_storage.set_trial_user_attr(job.trial_id, "hpod.scalarized", {
            k: parts[k] for k in ("value", "loss", "cost", "penalty", "violations", "multipliers")})
        return [parts["value"]]

    def after_tell(self, frozen: optuna.trial.FrozenTrial, job: JobRow) -> None:
        import optuna

        if frozen.state != optuna.trial.TrialState.COMPLETE or frozen.number in self.state["told"]:
            return
        last = getattr(self, "_last", None)
        parts = last[1] if last is not None and last[0] == frozen.number else \
            self.decompose(frozen.user_attrs.get("hpod.metrics", {}))
        if self.options.constraint_handling == "lagrangian":
            eta = self.options.dual_step
            mu = self.state["multipliers"]
            for name, g in parts["violations"].items():
                # Projected dual ascent: grow while violated, shrink back to 0 when satisfied.
                mu[name] = max(0.0, mu.get(name, 0.0) + eta * g)
            self.state["history"].append({"trial": frozen.number, "multipliers": dict(mu),
                                          "violations": parts["violations"]})
            self.state["history"] = self.state["history"][-_HISTORY_MAX:]
        self.state["told"].append(frozen.number)
        self.state["told"] = self.state["told"][-_HISTORY_MAX:]
        self.engine.store.put_state(self.engine.name, STATE_KEY, self.state)
        if self.options.constraint_handling == "lagrangian":
            self.engine.store.put_state(self.engine.name, HISTORY_KEY, self.state["history"])

    def public_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "cost_weight": self.options.cost_weight, "loss_metric": self.loss_metric,
                "constraint_handling": self.options.constraint_handling,
                "multipliers": self.multipliers(), "scales": self.scales()}


def lagrange_multipliers(store: Store, study: str) -> dict[str, float]:
    """The current Lagrange multiplier of each constraint of a scalarized study
    (empty for other strategies); reads the study row only, so a light store works."""
    row = store.get_study(study, missing_ok=True)
    if row is None or not row.strategy_json:
        return {}
    data = json.loads(row.strategy_json)
    return {str(k): float(v) for k, v in (data.get("multipliers") or {}).items()}


def multiplier_history(store: Store, study: str) -> list[dict[str, Any]]:
    """``[{trial, multipliers: {constraint: μ}, violations: {constraint: g}}, ...]`` in tell order."""
    return list((store.get_state(study, STATE_KEY) or {}).get("history", []))


def lambda_sweep_specs(spec: StudySpec, lambdas: Sequence[float]) -> list[StudySpec]:
    """One scalarized study spec per λ (named ``<name>.lambda-<λ>``); run each, then
    :func:`scalarized_front` collects the front they trace."""
    out = []
    for lam in lambdas:
        if lam < 0:
            raise ValueError(f"lambdas must be >= 0 (found {lam})")
        strategy = spec.strategy.model_copy(update={"kind": "scalarized", "cost_weight": float(lam)})
        out.append(spec.model_copy(update={"name": f"{spec.name}.lambda-{lam:g}", "strategy": strategy}))
    return out


def scalarized_front(store: Store, studies: Sequence[str]) -> list[dict[str, Any]]:
    """The best feasible trial of each scalarized study, as ``{study, trial, cost_weight,
    values: {objective: value}, on_front}``; ``on_front`` marks the non-dominated ones
    over the spec's objectives (the components, not F)."""
    import numpy as np
    import optuna


    rows: list[dict[str, Any]] = []
    directions: list[str] = []
    for name in studies:
        row = store.get_study(name)
        assert row is not None
        spec = parse_spec(json.loads(row.spec_json))
        directions = [o.direction for o in spec.objectives]
        study = store.load_optuna_study(name)
        ok = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if feasible(t) and t.values is not None]
        if not ok:
            continue
        best = min(ok, key=lambda t: t.values[0])
        metrics = best.user_attrs.get("hpod.metrics", {})
        rows.append({"study": name, "trial": best.number, "cost_weight": spec.strategy.cost_weight,
                     "values": {n: float(metrics[n]) for n in spec.objective_names}})
    if rows:
        pts = np.array([[v if d == "minimize" else -v for v, d in zip(r["values"].values(), directions)]
                        for r in rows])
        for r, m in zip(rows, non_dominated_mask(pts)):
            r["on_front"] = bool(m)
    return rows
