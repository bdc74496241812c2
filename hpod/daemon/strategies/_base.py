"""The hooks an engine calls on its study's strategy; the default is the Pareto search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from hpod.daemon.engine import Engine
    from hpod.daemon.samplers import SamplerChoice
    from hpod.daemon.store import JobRow

__all__ = ["Strategy", "create_strategy", "trial_handlers"]


class Strategy:
    """What a strategy may change in the engine's ask/tell loop.

    Every hook runs in the engine's thread (the controller's), after the engine has
    stored what it is told; hooks must be idempotent per trial, since a restart may
    replay a trial whose tell was interrupted.
    """

    kind = "pareto"

    def __init__(self, engine: Engine):
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


def create_strategy(engine: Engine) -> Strategy:
    kind = engine.spec.strategy.kind
    if kind == "scalarized":
        from hpod.daemon.strategies._scalarized import ScalarizedStrategy

        return ScalarizedStrategy(engine)
    if kind == "pbt":
        from hpod.daemon.strategies._pbt import PBTStrategy

        return PBTStrategy(engine)
    return Strategy(engine)


def trial_handlers(store: Any, spec: Any, state_dir: Any) -> tuple[Any, Any]:
    """``(report_handler, seed_handler)`` of a study, for an executor outside the
    controller's process (``hpod worker``): install them as
    ``executor.report_handlers[spec.name]`` / ``executor.seed_handlers[spec.name]``.
    Either is None when the study has no pruner / no adaptive seeds. They read the
    study's trials from the shared store, so their view is as fresh as the database."""
    from hpod.daemon.engine import Engine

    engine = Engine(store, spec, state_dir=state_dir)
    return engine.report_handler, engine.seed_handler
