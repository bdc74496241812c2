"""Search strategies beyond the Pareto sampler: scalarized cost with Lagrangian
constraints, population-based training, adaptive seeds and multi-objective pruning.
"""

from __future__ import annotations

from hpod.daemon.strategies._options import (
    PRUNER_KINDS,
    STRATEGY_KINDS,
    AdaptiveSeedsSpec,
    PrunerSpec,
    StrategySpec,
)

__all__ = ["PRUNER_KINDS", "STRATEGY_KINDS", "AdaptiveSeedsSpec", "PrunerSpec", "StrategySpec"]
