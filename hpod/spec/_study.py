"""The study spec: what a user writes in YAML to describe a study.

Validation happens where the spec enters (``load_spec`` / ``parse_spec``); every
error is a :class:`~hpod.errors.SpecError` naming the field path, what was found and
what is allowed. ``resolve`` then checks the spec against its objective (metric
names, default search space) without running anything.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hpod.errors import SpecError, spec_error_from, unknown_key_error
from hpod.objectives.base import create_objective
from hpod.spec._monitors import MonitorSpec, parse_duration_seconds
from hpod.spec._sampler import SAMPLER_NAMES, validate_sampler_options
from hpod.spec._strategies import (
    AdaptiveSeedsSpec,
    PrunerSpec,
    StrategySpec,
    default_multi_fidelity_pruner,
    normalize_seeds,
)

if TYPE_CHECKING:
    import optuna

    from hpod.objectives.base import Objective

__all__ = [
    "BASE_UNITS",
    "MEASURED_NAMES",
    "MULTI_OBJECTIVE_ONLY_SAMPLERS",
    "SAMPLER_NAMES",
    "SERVING_POLICIES",
    "Constraint",
    "ResolvedStudy",
    "RetuneSpec",
    "ServingSpec",
    "StudySpec",
    "base_unit",
    "load_spec",
    "parse_constraint",
    "parse_spec",
    "resolve",
    "samplers_for",
    "spec_json_schema",
]

#: What hpod's meters measure for every trial, whatever the objective.
MEASURED_NAMES = ("time_seconds", "memory_bytes", "energy_joules")
#: Base units a metric name can end in (Prometheus' convention, which hpod's meters follow).
BASE_UNITS = ("seconds", "bytes", "joules")


def base_unit(name: str) -> str | None:
    """The base unit a metric's name states (``time_seconds`` -> ``seconds``,
    ``peak_memory_bytes`` -> ``bytes``), or None (``loss``, ``rouge1``: no unit)."""
    for unit in BASE_UNITS:
        if name == unit or name.endswith(f"_{unit}"):
            return unit
    return None


#: Samplers that need two or more objectives (hypervolume-improvement acquisitions have no
#: single-objective form): refused at validation for a study with one value.
MULTI_OBJECTIVE_ONLY_SAMPLERS = ("qlognehvi",)


def samplers_for(n_values: int) -> tuple[str, ...]:
    """The sampler names that can serve a study with ``n_values`` objective values."""
    if n_values >= 2:
        return SAMPLER_NAMES
    return tuple(name for name in SAMPLER_NAMES if name not in MULTI_OBJECTIVE_ONLY_SAMPLERS)
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,99}$")


#: Largest magnitude of any integer in a spec: exact as a float and as JSON, and far
#: inside the database's 64-bit integers.
MAX_SPEC_INT = 2**53
#: How deeply a spec may nest mappings and lists.
_MAX_DEPTH = 32
#: ``priority`` bounds (a 32-bit column on PostgreSQL; fair sharing needs no more).
MAX_PRIORITY = 1_000_000
#: A year, in seconds: longer trial and study time limits are typos.
_YEAR_SECONDS = 366 * 86400.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = None

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (found low={self.low})")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be > 0 (found {self.step})")
        if self.step is not None and self.high > self.low and self.step > self.high - self.low:
            raise ValueError(f"step ({self.step}) is larger than the range high - low ({self.high - self.low:g}): "
                             "the parameter would take one value; use a smaller step or a fixed value")
        return self


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must be <= high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (found low={self.low})")
        if self.step < 1:
            raise ValueError(f"step must be >= 1 (found {self.step})")
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log: true")
        if self.high > self.low and self.step > self.high - self.low:
            raise ValueError(f"step ({self.step}) is larger than the range high - low ({self.high - self.low}): "
                             "the parameter would take one value; use a smaller step or a fixed value")
        return self


Scalar = bool | int | float | str | None


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Scalar]

    @field_validator("choices")
    @classmethod
    def _nonempty(cls, v: list[Scalar]) -> list[Scalar]:
        if not v:
            raise ValueError("choices must not be empty")
        if len(set(map(repr, v))) != len(v):
            raise ValueError(f"choices must be distinct (found {v})")
        return v


class FixedParam(_Strict):
    type: Literal["fixed"]
    value: Scalar


_PARAM_TYPES: dict[str, type[_Strict]] = {"float": FloatParam, "int": IntParam, "categorical": CategoricalParam,
                                           "fixed": FixedParam}
ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam | FixedParam, Field(discriminator="type")]


class ObjectiveTarget(_Strict):
    name: str
    direction: Literal["minimize", "maximize"] = "minimize"


class ObjectiveRef(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class SamplerSpec(_Strict):
    name: str = Field(default="auto", json_schema_extra={"enum": list(SAMPLER_NAMES)})
    options: dict[str, Any] = Field(default_factory=dict)
    #: seeds the sampler's random state (numpy takes 0 .. 2**32 - 1)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {v!r}; allowed: {', '.join(SAMPLER_NAMES)}")
        return v


class Budget(_Strict):
    # the schema states _some_limit: one of the three limits is a number
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"required": [key], "properties": {key: {"type": "number"}}}
        for key in ("n_trials", "timeout_seconds", "energy_joules")]})

    n_trials: int | None = Field(default=None, ge=1, le=10_000_000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=10 * _YEAR_SECONDS)
    energy_joules: float | None = Field(default=None, gt=0, le=1e18)
    #: wall-clock limit for one trial; the trial fails with reason ``timeout``.
    trial_timeout_seconds: float | None = Field(default=None, gt=0, le=_YEAR_SECONDS)
    #: how often one configuration is re-queued after infrastructure failures.
    max_retries: int = Field(default=3, ge=0, le=1000)

    @model_validator(mode="after")
    def _some_limit(self) -> Budget:
        if self.n_trials is None and self.timeout_seconds is None and self.energy_joules is None:
            raise ValueError("set at least one of n_trials, timeout_seconds, energy_joules")
        return self


class ResourcesSpec(_Strict):
    """What one trial reserves where it runs.

    ``gpus_per_trial`` devices on one node (a Ray actor's ``num_gpus``; more than one
    runs the trial data-parallel, one process per device), ``cpus_per_trial`` CPU cores
    (a Ray actor's ``num_cpus``), and ``custom`` Ray resources (``{"accelerator_type:A100":
    0.001}``, or a label a node was started with) that pin a study's trials to some nodes.
    """

    gpus_per_trial: int = Field(default=0, ge=0, le=64)
    cpus_per_trial: float = Field(default=1.0, gt=0, le=1024)
    custom: dict[str, float] = Field(default_factory=dict)
    #: data-parallel processes (ranks) of one trial: one per GPU with ``gpus_per_trial``
    #: (the default), or N CPU processes over gloo without GPUs (how CI tests the path)
    processes_per_trial: int | None = Field(default=None, ge=1, le=64)
    #: device memory one rank may use, bytes: a configuration the objective estimates
    #: above it (or above a ``memory_bytes <= M`` constraint) is recorded as infeasible
    #: without running (objectives that can estimate memory only, e.g. ``t5_lora``)
    memory_limit_bytes: float | None = Field(default=None, gt=0, le=1e15)

    @model_validator(mode="after")
    def _ranks(self) -> ResourcesSpec:
        n = self.processes_per_trial
        if n is not None and self.gpus_per_trial and n != self.gpus_per_trial:
            raise ValueError(f"processes_per_trial ({n}) must equal gpus_per_trial ({self.gpus_per_trial}): "
                             "one process per device (or leave it unset)")
        return self

    @property
    def world_size(self) -> int:
        """Ranks of one trial: ``processes_per_trial``, else ``gpus_per_trial``, else 1."""
        return self.processes_per_trial or self.gpus_per_trial or 1

    @field_validator("custom")
    @classmethod
    def _custom(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"custom resource {name!r}: use cpus_per_trial / gpus_per_trial for CPU and GPU, "
                                 "and name another resource here")
            if not amount > 0:
                raise ValueError(f"custom resource {name!r}: the amount must be > 0 (found {amount})")
        return v


class ScheduleSpec(_Strict):
    """When the daemon runs a study.

    ``cron`` (5-field crontab, e.g. ``"0 22 * * *"``) starts a scheduled retune of the
    study each time it fires; ``window`` (``"22:00-06:00"``, local time or
    ``timezone``) lets trials start only inside it (running trials finish).
    """

    cron: str | None = None
    window: str | None = None
    timezone: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"invalid crontab {v!r}: {exc}") from None
        return v

    @field_validator("window")
    @classmethod
    def _window(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$", v):
            raise ValueError(f"window must look like 22:00-06:00 (found {v!r})")
        return v


def _duration_seconds(v: float | str) -> float:

    return float(v) if isinstance(v, (int, float)) else parse_duration_seconds(v)


RetuneTrigger = Literal["data", "performance", "cost"]
RETUNE_TRIGGERS: tuple[RetuneTrigger, ...] = ("data", "performance", "cost")


class RetuneSpec(_Strict):
    """How the daemon retunes the study: a new version ``name@vN`` when a monitor fires,
    on ``schedule.cron``, or on ``hpod retune``.

    ``n_trials`` / ``timeout_seconds`` / ``energy_joules`` are the retune's own budget
    (the parent's Pareto configurations, enqueued first, count towards it);
    ``min_interval`` (seconds or ``"6h"``) is the least time between two retune starts
    of the study; ``warm_start`` caps how many Pareto configurations are enqueued;
    ``on`` lists the monitor kinds whose alarms start a retune; ``data_records`` caps
    the labelled records of the new data window written for the retune.

    For objectives that train on labelled examples, an alarm's retune trains on the
    labelled records posted since the served model's data (``hpod feedback``, ``POST
    /v1/studies/{name}/examples``): it waits (``waiting_for_labels``) until there are
    at least ``min_labels``; ``validation_share`` of them are held out to validate and
    to compare the served model with the retune's; ``replay_share`` of the training
    set is drawn from the data the served model was trained on (against forgetting).
    """

    enabled: bool = True
    n_trials: int = Field(default=20, ge=1, le=10_000_000)
    timeout_seconds: float | None = Field(default=None, gt=0, le=10 * _YEAR_SECONDS)
    energy_joules: float | None = Field(default=None, gt=0, le=1e18)
    min_interval: float | str = "1h"
    #: least time between two manual retune requests of the study (``hpod retune``,
    #: ``POST …/retune``); earlier ones are refused (API 429 with Retry-After)
    min_manual_interval: float | str = "10m"
    warm_start: int = Field(default=20, ge=0, le=1000)
    on: list[RetuneTrigger] = Field(default_factory=lambda: list(RETUNE_TRIGGERS))
    data_records: int = Field(default=2000, ge=4, le=10_000_000)
    min_labels: int = Field(default=20, ge=4, le=10_000_000)
    validation_share: float = Field(default=0.2, gt=0.0, lt=1.0)
    replay_share: float = Field(default=0.2, ge=0.0, lt=1.0)

    @field_validator("min_interval", "min_manual_interval")
    @classmethod
    def _interval(cls, v: float | str) -> float | str:
        try:
            seconds = _duration_seconds(v)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
        if not math.isfinite(seconds) or seconds < 0 or seconds > 10 * _YEAR_SECONDS:
            raise ValueError(f"must be 0 .. {10 * _YEAR_SECONDS:.0f} seconds (found {v!r})")
        return v

    @property
    def min_interval_seconds(self) -> float:
        return _duration_seconds(self.min_interval)

    @property
    def min_manual_interval_seconds(self) -> float:
        return _duration_seconds(self.min_manual_interval)


SERVING_POLICIES = ("min-loss", "knee", "objective NAME")
_POLICY_RE = re.compile(r"^(min-loss|knee|objective[ :]([A-Za-z_][A-Za-z0-9_.]*))$")


class ServingSpec(_Strict):
    """What ``hpod serve`` (and the daemon, when ``enabled``) serves for this study.

    ``policy`` picks the served trial among feasible completed ones: ``min-loss``,
    ``knee`` (the Pareto point closest to the ideal point after scaling each objective
    to [0, 1]) or ``objective NAME`` (best on that metric). ``record_text`` keeps the
    raw served text next to its features (off: features only). ``max_body_bytes`` and
    ``max_texts`` bound one request. Concurrent requests are batched: up to
    ``max_batch_texts`` texts per model call; a batch starts once it holds the texts it
    expects (those the previous batch answered and those queued meanwhile) or
    ``batch_wait_seconds`` after its first request arrived or the model became free.
    """

    enabled: bool = False
    #: where the daemon serves this study (``hpod serve --api`` overrides it)
    address: str = "127.0.0.1:8766"
    policy: str = "min-loss"
    record_text: bool = False
    max_body_bytes: int = Field(default=1 << 20, ge=256, le=1 << 30)
    max_texts: int = Field(default=32, ge=1, le=10_000)
    #: dynamic batching: concurrent requests' texts go to the model together, up to this
    #: many texts per call, a batch waiting at most ``batch_wait_seconds`` for others
    max_batch_texts: int = Field(default=64, ge=1, le=10_000)
    batch_wait_seconds: float = Field(default=0.01, ge=0.0, le=1.0)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if not _POLICY_RE.match(v.strip()):
            raise ValueError(f"unknown serving policy {v!r}; allowed: {', '.join(SERVING_POLICIES)}")
        return v.strip()

    @property
    def policy_objective(self) -> str | None:
        """The metric of an ``objective NAME`` policy, else None."""
        m = _POLICY_RE.match(self.policy)
        return m.group(2) if m else None


class StudySpec(_Strict):
    """A validated study spec. Field docs are in ``examples/synthetic-4obj.yaml``."""

    name: str
    description: str = ""
    objective: ObjectiveRef
    space: dict[str, ParamSpec | Scalar | list[Scalar]] = Field(default_factory=dict)
    objectives: list[ObjectiveTarget] = Field(default_factory=lambda: [ObjectiveTarget(name="loss")],
                                              json_schema_extra={"minItems": 1})  # _objectives says why
    constraints: list[str] = Field(default_factory=list)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    budget: Budget
    seeds: int = Field(default=1, ge=1, le=100)
    storage: str | None = None
    reference_point: dict[str, float] | None = None
    #: the best value each objective could reach (e.g. 0 s, 0 J, loss 0, ROUGE 1): with
    #: the reference point it scales the normalized hypervolume (ideal -> 0, reference -> 1)
    ideal_point: dict[str, float] | None = None
    #: local trial slots this study may use at once (None: all the executor has)
    max_concurrency: int | None = Field(default=None, ge=1, le=100_000)
    priority: int = Field(default=0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    schedule: ScheduleSpec | None = None
    #: drift monitors (see hpod.monitors.drift.MonitorSpec); `[{kind: data}]` is enough
    monitors: list[MonitorSpec] = Field(default_factory=list)
    #: how the study searches: pareto (default), scalarized, pbt (see StrategySpec)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    #: multi-objective pruning / early stopping (see PrunerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    #: set by ``seeds: {max: k, adaptive: true}``: add seeds only while a configuration
    #: could still be on the front (``seeds`` is then the most seeds a trial gets)
    seeds_adaptive: AdaptiveSeedsSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _seeds_mapping(cls, data: Any) -> Any:
        return normalize_seeds(data)

    @model_validator(mode="before")
    @classmethod
    def _multi_fidelity_pruner(cls, data: Any) -> Any:
        # ``sampler.options.multi_fidelity`` needs trials stopped early; without a
        # ``pruner`` section it brings MO-ASHA with its defaults.
        return default_multi_fidelity_pruner(data)
    #: drift-triggered / scheduled / manual retuning (see RetuneSpec)
    retune: RetuneSpec = Field(default_factory=RetuneSpec)
    #: the serving endpoint (see ServingSpec)
    serving: ServingSpec = Field(default_factory=ServingSpec)
    #: what one trial reserves: devices, CPU cores, custom (Ray) resources (see ResourcesSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                "must be 1-100 characters of letters, digits, '_', '.', '@', '-', starting with a letter or digit"
            )
        return v

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, v: list[ObjectiveTarget]) -> list[ObjectiveTarget]:
        if not v:
            raise ValueError("at least one objective is needed")
        names = [o.name for o in v]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be distinct (found {names})")
        return v

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            try:
                parse_constraint(text)
            except SpecError as exc:
                raise ValueError(f"entry [{i}]: {str(exc).removeprefix('constraints: ')}") from None
        return v

    @model_validator(mode="after")
    def _strategy_names(self) -> StudySpec:
        names = [o.name for o in self.objectives]
        st = self.strategy
        if st.kind == "scalarized":
            if st.loss_metric is not None and st.loss_metric not in names:
                raise ValueError(f"strategy.loss_metric {st.loss_metric!r} is not one of the objectives {names}")
            for key in st.weights:
                if key not in names:
                    raise ValueError(f"strategy.weights.{key} is not one of the objectives {names}")
        if st.kind == "pbt" and st.metric is not None and st.metric not in names:
            raise ValueError(f"strategy.metric {st.metric!r} is not one of the objectives {names}")
        return self

    @model_validator(mode="after")
    def _sampler_fits_shape(self) -> StudySpec:
        # Only the pareto strategy hands spec.sampler to Optuna as named; scalarized and
        # pbt pick their own single-objective sampler and say so in the study's reason.
        if self.strategy.kind == "pareto" and self.sampler.name not in samplers_for(len(self.objectives)):
            raise SpecError(
                "sampler.name",
                f"sampler {self.sampler.name!r} needs two or more objectives; this study has one "
                f"({self.objectives[0].name})",
                found=self.sampler.name,
                allowed=", ".join(samplers_for(len(self.objectives))),
            )
        return self

    @model_validator(mode="after")
    def _multi_fidelity_fits(self) -> StudySpec:
        if self.sampler.options.get("multi_fidelity") is not True:
            return self
        if self.strategy.kind != "pareto":
            raise SpecError("sampler.options.multi_fidelity",
                            f"applies to the pareto strategy (this study's strategy is {self.strategy.kind!r})",
                            found=True, allowed="false, or strategy.kind: pareto")
        if self.pruner.kind == "none":
            raise SpecError("sampler.options.multi_fidelity", "needs a pruner that stops trials early",
                            found=True, allowed="pruner.kind: mo_asha or early_stopping (or no pruner section)")
        return self

    @property
    def directions(self) -> list[Literal["minimize", "maximize"]]:
        """Directions of the Optuna study's values (one ``minimize`` for a scalarized study)."""
        if self.strategy.kind == "scalarized":
            return ["minimize"]
        return [o.direction for o in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        """The metrics every trial must report: the spec's objectives."""
        return [o.name for o in self.objectives]

    @property
    def value_names(self) -> list[str]:
        """Names of the Optuna study's values (``["scalarized"]`` for a scalarized study)."""
        if self.strategy.kind == "scalarized":
            return ["scalarized"]
        return self.objective_names

    def parsed_constraints(self) -> list[Constraint]:
        return [parse_constraint(c) for c in self.constraints]


def spec_json_schema(*, ref_template: str = "#/$defs/{model}") -> dict[str, Any]:
    """The JSON Schema of a study spec as :func:`parse_spec` accepts it: the
    :class:`StudySpec` model's, with the ``seeds: {max, adaptive, z, noise_floor}``
    mapping form that ``parse_spec`` also takes. Rules between values (``low <= high``,
    metric names the objective reports, sampler options) are checked by ``parse_spec``
    and ``resolve`` beyond what the schema states."""
    schema = StudySpec.model_json_schema(ref_template=ref_template, mode="validation")
    # what parse_spec checks beyond the model's types: the name's and constraints' forms,
    # integers within +-2**53 (_check_numbers)
    schema["properties"]["name"].update(pattern=_NAME_RE.pattern, minLength=1, maxLength=100)
    schema["properties"]["constraints"]["items"]["pattern"] = _CONSTRAINT_RE.pattern
    _bound_integers(schema)
    plain = schema["properties"]["seeds"]
    schema["properties"]["seeds"] = {
        "title": plain.get("title", "Seeds"), "default": plain.get("default", 1),
        "description": "seeds per configuration, or adaptive seeds: {max, adaptive, z, noise_floor}",
        "anyOf": [{k: v for k, v in plain.items() if k not in ("title", "default")},
                  {"type": "object", "additionalProperties": False,
                   "properties": {"max": {k: v for k, v in plain.items() if k not in ("title", "default")},
                                  "adaptive": {"type": "boolean"},
                                  "z": {"type": "number", "exclusiveMinimum": 0},
                                  "noise_floor": {"type": "number", "minimum": 0}}}]}
    return schema


def _bound_integers(node: Any) -> None:
    """Give every integer of a JSON Schema the bounds :func:`_check_numbers` enforces."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node["minimum"] = max(node.get("minimum", -MAX_SPEC_INT), -MAX_SPEC_INT)
            node["maximum"] = min(node.get("maximum", MAX_SPEC_INT), MAX_SPEC_INT)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``; :meth:`violation` is Optuna's convention (≤ 0 feasible)."""

    text: str
    metric: str
    op: str
    bound: float

    @property
    def name(self) -> str:
        return self.text

    def violation(self, value: float) -> float:
        if self.op in ("<=", "<"):
            return float(value) - self.bound
        return self.bound - float(value)


_CONSTRAINT_RE = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)


def parse_constraint(text: str) -> Constraint:
    """Parse ``"memory_bytes <= 8e9"``. Raises SpecError for anything else."""
    m = _CONSTRAINT_RE.match(text) if isinstance(text, str) else None
    if not m:
        raise SpecError(
            "constraints",
            "cannot parse constraint",
            found=text,
            allowed="'<metric> <= <number>' or '<metric> >= <number>', e.g. 'memory_bytes <= 8e9'",
        )
    bound = float(m.group(3))
    if not math.isfinite(bound):
        raise SpecError("constraints", "bound must be finite", found=text)
    return Constraint(text=text.strip(), metric=m.group(1), op=m.group(2), bound=bound)


#: labels of the spec's own tagged unions (parameter types) in pydantic's error locations
_UNION_LABELS = frozenset({"categorical", "fixed", "FloatParam", "IntParam", "CategoricalParam", "FixedParam"})


def _first_error(exc: ValidationError) -> SpecError:
    return spec_error_from(exc, branch_labels=_UNION_LABELS, model=StudySpec)


def parse_spec(data: Any, *, source: str = "spec") -> StudySpec:
    if not isinstance(data, dict):
        raise SpecError("", f"{source}: the spec must be a YAML mapping", found=type(data).__name__)
    space = data.get("space")
    if isinstance(space, dict):
        for key, entry in space.items():
            if isinstance(entry, dict) and "type" not in entry:
                raise SpecError(
                    f"space.{key}.type", "required field is missing", allowed="float, int, categorical, fixed"
                )
            if isinstance(entry, dict) and entry.get("type") not in _PARAM_TYPES:
                raise SpecError(
                    f"space.{key}.type", "unknown parameter type", found=entry.get("type"),
                    allowed="float, int, categorical, fixed",
                )
            if isinstance(entry, dict):
                fields = _PARAM_TYPES[entry["type"]].model_fields
                for field_name in entry:
                    if field_name not in fields:
                        raise unknown_key_error(f"space.{key}.{field_name}", str(field_name), fields,
                                                message=f"not a field of a {entry['type']} parameter")
    _check_numbers(data, "", 0)
    try:
        spec = StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _first_error(exc) from None
    validate_sampler_options(spec.sampler.name, spec.sampler.options, len(spec.directions))
    return spec


def _check_numbers(value: Any, path: str, depth: int) -> None:
    """Refuse NaN, infinities and integers beyond :data:`MAX_SPEC_INT` anywhere in a spec
    (objective params and sampler options included), and nesting beyond reason."""
    if depth > _MAX_DEPTH:
        raise SpecError(path, f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(path or "spec", "must be a finite number", found=value, allowed="a finite number")
    if isinstance(value, int) and abs(value) > MAX_SPEC_INT:
        raise SpecError(path or "spec", "integer out of range", found=value,
                        allowed=f"-{MAX_SPEC_INT} .. {MAX_SPEC_INT} (2**53)")
    if isinstance(value, dict):
        for key, item in value.items():
            _check_numbers(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_numbers(item, f"{path}[{i}]", depth + 1)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a YAML spec file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("", f"spec file not found: {p}") from None
    except UnicodeDecodeError:
        raise SpecError("", f"spec file is not UTF-8 text: {p}") from None
    except OSError as exc:
        raise SpecError("", f"cannot read spec file {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError("", f"{p}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, source=str(p))


def _as_param(path: str, entry: Any) -> FloatParam | IntParam | CategoricalParam | FixedParam:
    if isinstance(entry, (FloatParam, IntParam, CategoricalParam, FixedParam)):
        return entry
    if isinstance(entry, dict):
        try:
            from pydantic import TypeAdapter

            return TypeAdapter(ParamSpec).validate_python(entry)
        except ValidationError as exc:
            raise spec_error_from(exc, prefix=path, branch_labels=_UNION_LABELS,
                                  allowed_for_unknown="see examples/synthetic-4obj.yaml for the fields") from None
    if isinstance(entry, list):
        return CategoricalParam(type="categorical", choices=entry) if entry else _empty(path)
    return FixedParam(type="fixed", value=entry)


def _kind(value: Any) -> str:
    """What sort of value a spec gives: ``bool``, ``number``, ``text`` or ``none``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "text" if isinstance(value, str) else "none"


def _names_a_non_finite_number(value: Any) -> bool:
    """``"NaN"``, ``"inf"``, ``"-Infinity"``: a number's name written as text (YAML reads
    ``nan`` and JSON's ``NaN`` as strings), which no parameter should take."""
    if not isinstance(value, str):
        return False
    try:
        return not math.isfinite(float(value))
    except ValueError:
        return False


_KIND_NOUNS = {"bool": "true or false", "number": "a number", "text": "a text", "none": "null"}
_KIND_PLURALS = {"bool": "true / false", "number": "numbers", "text": "texts", "none": "null"}


def _number_as_text_hint(value: Any) -> str:
    """For ``"1e-4"``: YAML 1.1 reads an exponent without a dot as text."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        yaml_note = " (YAML reads 1e-4 as text: write 1.0e-4)" if "e" in value.lower() else ""
        return f"; {value!r} is text: write the number without quotes{yaml_note}"
    return ""


def _check_value(path: str, value: Any, declared: FloatParam | IntParam | CategoricalParam | FixedParam | None,
                 ) -> None:
    if _names_a_non_finite_number(value):
        raise SpecError(path, "a fixed value or choice cannot be NaN or infinite (written as text)", found=value,
                        allowed="a finite number, or text that is not the name of a number")
    if isinstance(declared, FloatParam):
        if _kind(value) != "number":
            raise SpecError(path, "the objective declares this parameter as a float", found=value,
                            allowed=f"a finite number (default range {declared.low:g} .. {declared.high:g})"
                            + _number_as_text_hint(value))
    elif isinstance(declared, IntParam):
        if _kind(value) != "number" or not float(value).is_integer():
            raise SpecError(path, "the objective declares this parameter as an integer", found=value,
                            allowed=f"an integer (default range {declared.low} .. {declared.high})"
                            + _number_as_text_hint(value))
    else:
        examples = declared.choices if isinstance(declared, CategoricalParam) else \
            [declared.value] if isinstance(declared, FixedParam) else []
        kinds = {_kind(v) for v in examples}
        if len(kinds) == 1 and _kind(value) not in kinds | {"none"}:
            noun = _KIND_NOUNS[next(iter(kinds))]
            raise SpecError(path, f"the objective's values for this parameter are {_KIND_PLURALS[next(iter(kinds))]}",
                            found=value,
                            allowed=f"{noun}, like {examples[0]!r}" + _number_as_text_hint(value))


def _check_values_fit(path: str, given: FloatParam | IntParam | CategoricalParam | FixedParam,
                      declared: FloatParam | IntParam | CategoricalParam | FixedParam | None) -> None:
    """Refuse a fixed value or a choice of the wrong type for the parameter the objective
    declares (``dropout: "0.1"`` for a float), and NaN / infinity written as text
    (``x: "NaN"``), before anything is written: the trials would all fail."""
    if isinstance(given, FixedParam):
        _check_value(path, given.value, declared)
    elif isinstance(given, CategoricalParam):
        for i, choice in enumerate(given.choices):
            _check_value(f"{path}.choices[{i}]" if len(given.choices) > 1 else path, choice, declared)


def _empty(path: str) -> CategoricalParam:
    raise SpecError(path, "choices must not be empty", found=[])


@dataclass
class ResolvedStudy:
    """A spec checked against its objective: the final search space and names."""

    spec: StudySpec
    objective: Objective
    space: dict[str, FloatParam | IntParam | CategoricalParam | FixedParam]
    metric_names: frozenset[str]

    @property
    def tunable(self) -> dict[str, FloatParam | IntParam | CategoricalParam]:
        return {k: v for k, v in self.space.items() if not isinstance(v, FixedParam)}

    @property
    def fixed(self) -> dict[str, Any]:
        return {k: v.value for k, v in self.space.items() if isinstance(v, FixedParam)}

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        import optuna

        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, p in self.tunable.items():
            if isinstance(p, FloatParam):
                out[name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log, step=p.step)
            elif isinstance(p, IntParam):
                out[name] = optuna.distributions.IntDistribution(p.low, p.high, log=p.log, step=p.step)
            else:
                out[name] = optuna.distributions.CategoricalDistribution(p.choices)
        return out


def resolve(spec: StudySpec, objective: Objective | None = None) -> ResolvedStudy:
    """Build the objective, merge the search space and check every name.

    Raises SpecError for an unknown objective, a parameter error, or an objective or
    constraint name the objective does not report.
    """

    validate_sampler_options(spec.sampler.name, spec.sampler.options, len(spec.directions))
    if objective is None:
        objective = create_objective(spec.objective.name, spec.objective.params)
    space: dict[str, FloatParam | IntParam | CategoricalParam | FixedParam] = {}
    defaults = objective.default_space()
    for key, entry in defaults.items():
        space[key] = _as_param(f"objective default space.{key}", entry)
    # An objective with a default space names its parameters: a key it does not know is a
    # typo (`learning_rat`), not a new parameter, unless the objective says it takes more.
    closed = bool(defaults) and not getattr(objective, "open_space", False)
    for key, given in spec.space.items():
        if closed and key not in defaults:
            close = difflib.get_close_matches(str(key), list(defaults), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise SpecError(f"space.{key}", f"not a parameter of objective {spec.objective.name!r}{hint}",
                            allowed=", ".join(sorted(defaults)))
        space[key] = _as_param(f"space.{key}", given)
        _check_values_fit(f"space.{key}", space[key],
                          _as_param(f"objective default space.{key}", defaults[key]) if key in defaults else None)
    if not any(not isinstance(p, FixedParam) for p in space.values()):
        raise SpecError("space", "the search space has no tunable parameter", found=sorted(space))
    declared = frozenset(objective.metric_names)
    known = declared | frozenset(MEASURED_NAMES)
    if declared:  # a plain user function may not declare its metrics; checked after trial 1 then
        allowed = ", ".join(sorted(known))
        for i, target in enumerate(spec.objectives):
            if target.name not in known:
                raise SpecError(f"objectives[{i}].name", "the objective does not report this metric",
                                found=target.name, allowed=allowed)
        for i, c in enumerate(spec.parsed_constraints()):
            if c.metric not in known:
                raise SpecError(f"constraints[{i}]", "the objective does not report this metric",
                                found=c.metric, allowed=allowed)
        for field_name in ("reference_point", "ideal_point"):
            for key in getattr(spec, field_name) or {}:
                if key not in spec.objective_names:
                    raise SpecError(f"{field_name}.{key}", "not one of the study's objectives",
                                    found=key, allowed=", ".join(spec.objective_names))
        directions = {o.name: o.direction for o in spec.objectives}
        for key, ideal in (spec.ideal_point or {}).items():
            reference = (spec.reference_point or {}).get(key)
            if reference is not None and not (ideal < reference if directions[key] == "minimize"
                                              else ideal > reference):
                raise SpecError(f"ideal_point.{key}", f"must be better than reference_point.{key} "
                                f"({reference:g}) for a {directions[key]}d objective", found=ideal)
    return ResolvedStudy(spec=spec, objective=objective, space=space, metric_names=known)
