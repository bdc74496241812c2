"""The hooks an engine calls on its study's strategy; the default is the Pareto search."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import optuna

    from hpod.core.samplers import SamplerChoice
    from hpod.spec import ResolvedStudy, StudySpec
    from hpod.store import JobRow, Store

__all__ = ["EngineView", "Strategy"]


class EngineView(Protocol):
    """What a strategy sees of the engine that runs it (and all it may use)."""

    spec: StudySpec
    store: Store
    state_dir: Path
    resolved: ResolvedStudy

    @property
    def name(self) -> str: ...

    @property
    def study(self) -> optuna.Study: ...

    @property
    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]: ...

    @property
    def constraints(self) -> list[Any]: ...

    @property
    def parallelism(self) -> int: ...


class Strategy:
    """What a strategy may change in the engine's ask/tell loop.

    Every hook runs in the engine's thread (the controller's), after the engine has
    stored what it is told; hooks must be idempotent per trial, since a restart may
    replay a trial whose tell was interrupted.
    """

    kind = "pareto"

    def __init__(self, engine: EngineView):
        self.engine = engine

    def create_sampler(self) -> SamplerChoice | None:
        """The sampler to use, or None for the spec's ``sampler`` section."""
        return None

    def values(self, metrics: dict[str, float], job: JobRow) -> list[float]:
        """The values told to Optuna for a completed trial's metrics (means over seeds);
        called before the tell, so it may still set the trial's user attributes."""
        return [float(metrics[n]) for n in self.engine.spec.objective_names]

    def after_tell(self, frozen: optuna.trial.FrozenTrial, job: JobRow) -> None:
        """Called after each told trial (complete, pruned or failed)."""

    def ask(self, n: int) -> list[JobRow] | None:
        """Queue up to ``n`` jobs itself, or return None to let the engine ask the sampler."""
        return None

    def requeue_lost(self, job: JobRow, reason: str) -> bool | None:
        """Re-queue a job lost to infrastructure; None lets the engine re-queue its configuration."""
        return None

    def budget_exhausted(self) -> str | None:
        """A strategy's own budget (e.g. PBT generations), or None."""
        return None

    def public_state(self) -> dict[str, Any] | None:
        """What ``hpod status`` and the exporter show (stored as the study's strategy_json)."""
        return None
