"""The study spec and every section of it (pydantic models, validated where they enter).

Imports only :mod:`hpod.errors` and :mod:`hpod.objectives`: reading a spec never loads
the engine, the store or the monitors' libraries.
"""

from hpod.spec._changes import IDENTITY_FIELDS, SpecChange, check_identity, spec_changes
from hpod.spec._monitors import (
    MonitorKind,
    MonitorSource,
    MonitorSpec,
    parse_duration_seconds,
)
from hpod.spec._sampler import validate_sampler_options
from hpod.spec._strategies import (
    AdaptiveSeedsSpec,
    PrunerSpec,
    StrategySpec,
    normalize_seeds,
)
from hpod.spec._study import (
    BASE_UNITS,
    MEASURED_NAMES,
    MULTI_OBJECTIVE_ONLY_SAMPLERS,
    SAMPLER_NAMES,
    SERVING_POLICIES,
    Constraint,
    ResolvedStudy,
    ResourcesSpec,
    RetuneSpec,
    ScheduleSpec,
    ServingSpec,
    StudySpec,
    base_unit,
    load_spec,
    parse_constraint,
    parse_spec,
    resolve,
    samplers_for,
    spec_json_schema,
)

__all__ = [
    "BASE_UNITS",
    "IDENTITY_FIELDS",
    "MEASURED_NAMES",
    "MULTI_OBJECTIVE_ONLY_SAMPLERS",
    "SAMPLER_NAMES",
    "SERVING_POLICIES",
    "AdaptiveSeedsSpec",
    "Constraint",
    "MonitorKind",
    "MonitorSource",
    "MonitorSpec",
    "PrunerSpec",
    "ResolvedStudy",
    "ResourcesSpec",
    "RetuneSpec",
    "ScheduleSpec",
    "ServingSpec",
    "SpecChange",
    "StrategySpec",
    "StudySpec",
    "base_unit",
    "check_identity",
    "load_spec",
    "normalize_seeds",
    "parse_constraint",
    "parse_duration_seconds",
    "parse_spec",
    "resolve",
    "samplers_for",
    "spec_changes",
    "spec_json_schema",
    "validate_sampler_options",
]
