"""Search strategies beyond the Pareto sampler: scalarized cost with Lagrangian
constraints, population-based training, adaptive seeds and multi-objective pruning.

A study picks them in its spec (``strategy:``, ``pruner:``, ``seeds: {max, adaptive}``);
the engine builds its :class:`Strategy` with :func:`create_strategy` and hands the
pruner and seed handlers to the executor that runs the study's trials.
"""

from __future__ import annotations

from hpod.core.strategies._base import EngineView, Strategy
from hpod.core.strategies._pbt import PBTStrategy, pbt_lineage, pbt_state
from hpod.core.strategies._pruning import (
    EarlyStopping,
    MOASHAPruner,
    create_report_handler,
    crowding_distance,
    non_dominated_ranks,
)
from hpod.core.strategies._scalarized import (
    ScalarizedStrategy,
    lagrange_multipliers,
    lambda_sweep_specs,
    multiplier_history,
    scalarized_front,
)
from hpod.core.strategies._seeds import AdaptiveSeeds
from hpod.spec._strategies import (
    PRUNER_KINDS,
    STRATEGY_KINDS,
    AdaptiveSeedsSpec,
    PrunerSpec,
    StrategySpec,
)

__all__ = [
    "PRUNER_KINDS",
    "STRATEGY_KINDS",
    "AdaptiveSeeds",
    "AdaptiveSeedsSpec",
    "EarlyStopping",
    "EngineView",
    "MOASHAPruner",
    "PBTStrategy",
    "PrunerSpec",
    "ScalarizedStrategy",
    "Strategy",
    "StrategySpec",
    "create_report_handler",
    "crowding_distance",
    "lagrange_multipliers",
    "lambda_sweep_specs",
    "multiplier_history",
    "non_dominated_ranks",
    "pbt_lineage",
    "pbt_state",
    "scalarized_front",
]
