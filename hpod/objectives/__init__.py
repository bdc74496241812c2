"""What a trial trains and evaluates: the Objective protocol and the built-in objectives."""

from hpod.objectives.base import (
    BaseObjective,
    FunctionObjective,
    Measurement,
    Objective,
    TrialContext,
    create_objective,
    register_objective,
    registered_objectives,
)

__all__ = [
    "BaseObjective",
    "FunctionObjective",
    "Measurement",
    "Objective",
    "TrialContext",
    "create_objective",
    "register_objective",
    "registered_objectives",
]
