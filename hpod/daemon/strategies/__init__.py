"""Search strategies beyond the Pareto sampler: scalarized cost with Lagrangian
constraints, population-based training, adaptive seeds and multi-objective pruning.

A study picks them in its spec (``strategy:``, ``pruner:``, ``seeds: {max, adaptive}``);
the engine builds its :class:`Strategy` with :func:`create_strategy` and hands the
pruner and seed handlers to the executor that runs the study's trials.
"""

from __future__ import annotations

from hpod.daemon.strategies._base import Strategy, create_strategy, trial_handlers
from hpod.daemon.strategies._options import (
    PRUNER_KINDS,
    STRATEGY_KINDS,
    AdaptiveSeedsSpec,
    PrunerSpec,
    StrategySpec,
)
from hpod.daemon.strategies._pbt import PBTStrategy, pbt_lineage, pbt_state
from hpod.daemon.strategies._pruning import (
    EarlyStopping,
    MOASHAPruner,
    create_report_handler,
    crowding_distance,
    non_dominated_ranks,
)
from hpod.daemon.strategies._scalarized import (
    ScalarizedStrategy,
    lagrange_multipliers,
    lambda_sweep_specs,
    multiplier_history,
    scalarized_front,
)
from hpod.daemon.strategies._seeds import AdaptiveSeeds

__all__ = [
    "PRUNER_KINDS",
    "STRATEGY_KINDS",
    "AdaptiveSeeds",
    "AdaptiveSeedsSpec",
    "EarlyStopping",
    "MOASHAPruner",
    "PBTStrategy",
    "PrunerSpec",
    "ScalarizedStrategy",
    "Strategy",
    "StrategySpec",
    "create_report_handler",
    "create_strategy",
    "crowding_distance",
    "lagrange_multipliers",
    "lambda_sweep_specs",
    "multiplier_history",
    "non_dominated_ranks",
    "pbt_lineage",
    "pbt_state",
    "scalarized_front",
    "trial_handlers",
]
