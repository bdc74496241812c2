"""The objective protocol, the context a trial runs in, and the registry of objectives.

An objective is what one trial trains and evaluates. It is built in the controller
process (to validate a spec and read its default search space) and again inside the
trial child process, where :meth:`Objective.run` is called once per seed.

Concurrency: an objective instance is used by one trial process at a time; ``run``
must not rely on state shared with other trials except through files under
``ctx.artifact_dir`` / ``ctx.cache_dir``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ValidationError

from hpod.errors import ObjectiveNotAllowed, SpecError, spec_error_from, unknown_key_error
from hpod.errors import TrialPruned as TrialPruned  # re-exported for objectives that stop early
from hpod.objectives.labelled import LabelSchema

__all__ = [
    "ALLOW_BUILTIN",
    "ALLOW_ENTRY_POINTS",
    "DEFAULT_ALLOWED_OBJECTIVES",
    "ENTRY_POINT_GROUP",
    "MEMORY_INFEASIBLE",
    "QUALITY_METRICS",
    "ComparesToBaseline",
    "EstimatesMemory",
    "ExportsModel",
    "FunctionObjective",
    "LearnsFromExamples",
    "Measurement",
    "MemoryEstimate",
    "Objective",
    "Predictor",
    "ProvidesReference",
    "ScoresQuality",
    "Serves",
    "TrialContext",
    "capabilities",
    "check_allowed_entry",
    "check_objective_allowed",
    "check_param_names",
    "create_objective",
    "memory_infeasibility",
    "parse_params",
    "register_objective",
    "registered_objectives",
]

#: Canonical task-quality metric names (docs/ARCHITECTURE.md), larger is better. A
#: user's objective that reports them gets them in reports and selections without
#: declaring anything more.
QUALITY_METRICS: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "bleu", "exact_match", "accuracy", "f1")

ENTRY_POINT_GROUP = "hpod.objectives"


@dataclass(frozen=True)
class Measurement:
    """A figure with its provenance, in base units (seconds, bytes, joules).

    ``method`` says how it was obtained: ``wall-clock``, ``rss-peak``,
    ``cuda-max-reserved``, ``nvml-energy-counter``, ``codecarbon-rapl``,
    ``codecarbon-estimate``, ``synthetic-cost-model``, ``objective``...
    """

    value: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "method": self.method}


@dataclass
class TrialContext:
    """What a running trial sees.

    ``report(step, values)`` records an intermediate result (e.g. validation loss
    after an evaluation step). It raises :class:`~hpod.errors.TrialPruned` when the
    trial should stop (pruner or early stopping); objectives let it propagate, or
    catch it to finish with their best-so-far values.
    """

    params: dict[str, Any]
    seed: int
    trial_number: int
    study_name: str
    artifact_dir: Path
    cache_dir: Path
    device: str = "cpu"
    seed_index: int = 0
    #: called with (step, values); returns True when the trial should stop.
    report_hook: Callable[[int, Mapping[str, float]], bool] | None = None
    #: checkpoint to resume from (population-based training), or None.
    resume_from: Path | None = None
    intermediate: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    #: data parallelism (``resources.gpus_per_trial`` / ``processes_per_trial`` > 1): this
    #: process's rank in the trial's ``torch.distributed`` group (initialized before ``run``),
    #: the group's size and every rank's device (``cuda:0``…, or ``cpu``)
    rank: int = 0
    world_size: int = 1
    devices: list[str] = field(default_factory=list)
    #: with several ranks: called with rank 0's stop decision at every report, returns it on
    #: every rank (so all ranks leave the training loop together)
    stop_sync: Callable[[bool], bool] | None = None

    def report(self, step: int, values: Mapping[str, float]) -> None:
        """Record an intermediate result; with several ranks, call it on every rank at
        the same steps (rank 0's report is the trial's; the stop decision is shared)."""
        clean = {k: float(v) for k, v in values.items()}
        self.intermediate.append((int(step), clean))
        stop = self.report_hook is not None and bool(self.report_hook(int(step), clean))
        if self.stop_sync is not None:
            stop = self.stop_sync(stop)
        if stop:
            raise TrialPruned(f"stopped at step {step}")


@runtime_checkable
class Objective(Protocol):
    """A trainable, evaluable workload.

    Attributes:
        metric_names: every name ``run`` may return (besides the meters' ``time_seconds``,
            ``memory_bytes``, ``energy_joules``, which hpod always measures). Used to
            validate a spec's objectives and constraints at submission.
        provides: measurement names the objective computes itself (e.g. a cost model
            that returns ``energy_joules``); hpod then skips that meter and keeps the
            objective's figure with the method it gives.
        reference_point: optional known hypervolume reference point (name → value).
        heavy: True when a trial is long enough (seconds or more) that starting the
            CodeCarbon tracker (~2 s) is worth it.
        preload (optional): module names the trial fork server imports once for this
            objective's trials (``("torch", "transformers")``).

    Optional capabilities (checked with ``isinstance``): :class:`ProvidesReference`,
    :class:`LearnsFromExamples`, :class:`Serves`, :class:`ScoresQuality`,
    :class:`ExportsModel`, :class:`ComparesToBaseline`, :class:`EstimatesMemory`.

    Methods:
        default_space(): the default search space as spec dicts
            (``{"lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}``).
        validate(): check inputs (data files...) at submission; raise
            :class:`~hpod.errors.SpecError` / :class:`~hpod.errors.DataError`.
        prepare(cache_dir): one-time work shared by all trials (e.g. training a base
            model), run before the first trial; must be idempotent and cached.
        run(ctx): train and evaluate on ``ctx.params`` with ``ctx.seed``; returns a
            mapping of name → float or :class:`Measurement`. Raise
            :class:`~hpod.errors.TrialPruned` to stop early, anything else to fail.
    """

    metric_names: frozenset[str]
    provides: frozenset[str]
    reference_point: Mapping[str, float] | None
    heavy: bool

    def default_space(self) -> dict[str, dict[str, Any]]: ...

    def validate(self) -> None: ...

    def prepare(self, cache_dir: Path) -> None: ...

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]: ...


# ---------------------------------------------------------------------- capabilities
# Optional: the daemon asks ``isinstance(objective, Capability)`` and offers drift
# references, feedback-driven retunes and serving only to objectives that can.


@runtime_checkable
class ProvidesReference(Protocol):
    """Reference data for data monitors: the input texts the objective trains on
    (never a hub download); None when it cannot say."""

    def reference_texts(self, limit: int) -> list[str] | None: ...


@runtime_checkable
class LearnsFromExamples(Protocol):
    """Train on a labelled window (feedback records: input + reference output).

    ``label_schema`` names the fields a labelled record carries.
    ``training_examples(limit)``: the labelled records (dicts in ``label_schema``'s
    fields) of the data the objective trains on now (replayed into a retune against
    forgetting). ``params_for_examples(path, n_train, n_val)``: the objective's
    ``params`` for training on a JSONL file of such records whose first ``n_train``
    records are for training and the next ``n_val`` for validation.
    """

    label_schema: LabelSchema

    def training_examples(self, limit: int) -> list[dict[str, str]]: ...

    def validation_examples(self, limit: int) -> list[dict[str, str]]: ...

    def params_for_examples(self, path: Path, n_train: int, n_val: int) -> dict[str, Any]: ...


class Predictor(Protocol):
    """A loaded model: ``predict(texts)`` returns one prediction (a summary, a label...)
    per text. Thread-safe for concurrent calls."""

    def predict(self, texts: Sequence[str]) -> list[Any]: ...


@runtime_checkable
class Serves(Protocol):
    """A predictor for serving from a completed trial's artifacts (seed 0's).

    ``prediction_name``: what a prediction is, plural (``summaries``, ``labels``)."""

    prediction_name: str

    def load_predictor(self, artifact_dir: Path, cache_dir: Path) -> Predictor: ...


@runtime_checkable
class ScoresQuality(Protocol):
    """Task quality of predictions against reference outputs.

    ``quality_metric`` is the figure a retune's switch compares (higher is better,
    e.g. ``rouge2``, ``accuracy``); ``quality_names`` the figures the report shows;
    ``score(predictions, references)`` returns at least ``quality_metric``."""

    quality_metric: str
    quality_names: tuple[str, ...]

    def score(self, predictions: Sequence[Any], references: Sequence[str]) -> dict[str, float]: ...


@runtime_checkable
class ExportsModel(Protocol):
    """Write a trial's model where its framework loads it (``hpod export-adapter``);
    returns the directory written."""

    def export_model(self, artifact_dir: Path, out_dir: Path, cache_dir: Path, *, merge: bool = False) -> Path: ...


@runtime_checkable
class ComparesToBaseline(Protocol):
    """``hpod compare --baseline default``: the hand-picked configuration the
    experiment compares against (``baseline_params``, described by
    ``baseline_label``), and the before/after rows (``compare_rows(baseline, best)``,
    each ``{"metric", "key", "baseline", "best", "change_percent"}``)."""

    baseline_params: Mapping[str, Any]
    baseline_label: str

    def compare_rows(self, baseline: Mapping[str, Any], best: Mapping[str, Any]) -> list[dict[str, Any]]: ...


@dataclass(frozen=True)
class MemoryEstimate:
    """One rank's peak device memory for a configuration, estimated before it runs.

    ``peak_bytes`` is comparable with the ``memory_bytes`` meter (per device);
    ``parts`` breaks it down (bytes by name); ``details`` says what it assumed
    (micro-batch, precision, ...)."""

    peak_bytes: float
    parts: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "parts": dict(self.parts), "details": dict(self.details)}


@runtime_checkable
class EstimatesMemory(Protocol):
    """Estimate a configuration's peak memory per device before any trial runs it:
    ``estimate_memory(params, world_size=…, on_gpu=…)`` for the trial's parameters (fixed
    ones included), its number of data-parallel ranks and whether it trains on GPUs;
    None when the objective cannot say for these parameters. Cheap (no model loaded):
    the controller asks it for every suggestion of a study with a memory limit."""

    def estimate_memory(self, params: Mapping[str, Any], *, world_size: int,
                        on_gpu: bool) -> MemoryEstimate | None: ...


#: How a configuration refused for memory starts its reason (``trial_record``'s
#: ``fail_reason``, the job's fail reason): the engine records such a trial as infeasible.
MEMORY_INFEASIBLE = "infeasible: estimated peak memory"


def _gib(value: float) -> str:
    return f"{value / 2**30:.2f} GiB"


def memory_infeasibility(objective: Any, params: Mapping[str, Any], *, world_size: int, on_gpu: bool,
                         limit_bytes: float, limit_source: str) -> tuple[str, MemoryEstimate] | None:
    """``(reason, estimate)`` when ``objective`` estimates that ``params`` need more than
    ``limit_bytes`` per device (``limit_source`` says where the limit comes from, for the
    reason); None when it fits or the objective cannot estimate it."""
    if not isinstance(objective, EstimatesMemory):
        return None
    try:
        estimate = objective.estimate_memory(dict(params), world_size=world_size, on_gpu=on_gpu)
    except (ValueError, TypeError, KeyError):
        return None  # parameters the objective cannot read: the trial's own run reports that
    if estimate is None or estimate.peak_bytes <= limit_bytes:
        return None
    parts = ", ".join(f"{name} {_gib(value)}" for name, value in estimate.parts.items())
    reason = (f"{MEMORY_INFEASIBLE} {_gib(estimate.peak_bytes)} per device exceeds {_gib(limit_bytes)} "
              f"({limit_source})" + (f"; {parts}" if parts else ""))
    return reason, estimate


def capabilities(objective: Any) -> list[str]:
    """The optional capabilities ``objective`` offers, by name (for status and errors):
    ``reference``, ``examples``, ``serving``, ``quality``, ``export``, ``baseline``,
    ``memory_estimate``, ``preload``."""
    out = []
    for name, proto in (("reference", ProvidesReference), ("examples", LearnsFromExamples),
                        ("serving", Serves), ("quality", ScoresQuality), ("export", ExportsModel),
                        ("baseline", ComparesToBaseline), ("memory_estimate", EstimatesMemory)):
        if isinstance(objective, proto):
            out.append(name)
    if getattr(objective, "preload", None):
        out.append("preload")
    return out


#: Where an objective's options live in a spec.
PARAMS_PATH = "objective.params"
_Options = TypeVar("_Options", bound=BaseModel)


def parse_params(model: type[_Options], params: Mapping[str, Any] | None) -> _Options:
    """Validate ``objective.params`` with a pydantic model (``extra="forbid"``): a bad
    value, or an unknown key answered with the closest option ("did you mean") and every
    option, as a :class:`~hpod.errors.SpecError`. The built-ins use it; so can any
    objective."""
    if params is not None and not isinstance(params, Mapping):
        raise SpecError(PARAMS_PATH, "must be a mapping of option -> value", found=params)
    try:
        return model.model_validate(dict(params or {}))
    except ValidationError as exc:
        raise spec_error_from(exc, prefix=PARAMS_PATH, unknown="unknown option", model=model) from None


def check_param_names(params: Mapping[str, Any], accepted: Collection[str], *, objective: str) -> None:
    """Refuse an ``objective.params`` key ``accepted`` lacks, with a "did you mean"."""
    for key, value in params.items():
        if key not in accepted:
            raise unknown_key_error(f"{PARAMS_PATH}.{key}", str(key), accepted,
                                    message=f"not an option of objective {objective!r}",
                                    found=None if isinstance(value, (dict, list)) else value)


class BaseObjective(ABC):
    """Convenience base with the protocol's defaults; subclasses implement ``run``."""

    metric_names: frozenset[str] = frozenset()
    provides: frozenset[str] = frozenset()
    reference_point: Mapping[str, float] | None = None
    heavy: bool = False
    #: True when ``run`` takes parameters beyond ``default_space()``; otherwise a spec's
    #: ``space`` key that the default space lacks is refused as a typo (optional attribute:
    #: objectives without it are treated as False).
    open_space: bool = False

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {}

    def validate(self) -> None:
        return None

    def prepare(self, cache_dir: Path) -> None:
        return None

    @abstractmethod
    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        """Train and evaluate ``ctx.params`` with ``ctx.seed``."""


class FunctionObjective(BaseObjective):
    """Wraps a user's plain function ``f(params) -> dict`` or ``f(params, ctx) -> dict``.

    The function may carry ``metric_names`` / ``default_space`` attributes; without
    them hpod cannot check objective names at submission and checks them when the
    first trial returns. A ``param_names`` attribute lists the ``objective.params`` it
    takes: any other key is refused at submission ("did you mean").
    """

    def __init__(self, func: Callable[..., Mapping[str, Any]], params: Mapping[str, Any]):
        self.func = func
        self.options = dict(params)
        self.metric_names = frozenset(getattr(func, "metric_names", ()) or ())
        self.provides = frozenset(getattr(func, "provides", ()) or ())
        self.heavy = bool(getattr(func, "heavy", False))
        self.preload = tuple(getattr(func, "preload", ()) or ())
        self._space = dict(getattr(func, "default_space", {}) or {})
        # a function that declares no space takes whatever the spec's space names
        self.open_space = bool(getattr(func, "open_space", not self._space))
        try:
            self._takes_ctx = len(inspect.signature(func).parameters) >= 2
        except (TypeError, ValueError):
            self._takes_ctx = False

    def default_space(self) -> dict[str, dict[str, Any]]:
        return dict(self._space)

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        params = {**self.options, **ctx.params}
        result = self.func(params, ctx) if self._takes_ctx else self.func(params)
        if isinstance(result, (int, float)) and not isinstance(result, bool):
            return {"loss": float(result)}
        if not isinstance(result, Mapping):
            raise TypeError(
                f"objective function returned {type(result).__name__}; "
                "return a dict of metric name -> float"
            )
        return result


#: The search space of the experiment hpod grew from (T5-small + LoRA on CNN/DailyMail):
#: the default space of ``t5_lora`` and of its cost model ``synthetic:training_cost``.
LORA_EXPERIMENT_SPACE: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "batch_size": {"type": "categorical", "choices": [8, 16, 32]},
    "epochs": {"type": "categorical", "choices": [2, 3, 4]},
    "dropout": {"type": "categorical", "choices": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
    "rank": {"type": "categorical", "choices": [4, 8, 16]},
    "alpha": {"type": "categorical", "choices": [16, 32, 64]},
}

ObjectiveFactory = Callable[[Mapping[str, Any]], Objective]
_REGISTRY: dict[str, ObjectiveFactory] = {}
#: names registered by hpod's own modules / by installed ``hpod.objectives`` entry points
_BUILTIN_NAMES: set[str] = set()
_ENTRY_POINT_NAMES: set[str] = set()

#: ``allowed_objectives`` entry for hpod's built-in objectives (``synthetic:*``, ``t5_lora``)
ALLOW_BUILTIN = "builtin"
#: ``allowed_objectives`` entry for objectives installed under the ``hpod.objectives`` entry point group
ALLOW_ENTRY_POINTS = "entry-points"
DEFAULT_ALLOWED_OBJECTIVES: tuple[str, ...] = (ALLOW_BUILTIN, ALLOW_ENTRY_POINTS)
_MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CALLABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def register_objective(name: str, factory: ObjectiveFactory | None = None) -> Any:
    """Register ``factory(params) -> Objective`` under ``name``; usable as a decorator.

    Raises ValueError for a duplicate name.
    """

    def _register(f: ObjectiveFactory) -> ObjectiveFactory:
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"objective {name!r} is already registered")
        _REGISTRY[name] = f
        return f

    return _register(factory) if factory is not None else _register


_BUILTINS_LOADED = False
#: held while the built-ins load: a caller in another thread (the daemon's API answers
#: concurrent submissions in a thread pool) waits for the complete registry instead of
#: seeing an empty one ("built-ins ()": every study refused)
_BUILTINS_LOCK = threading.RLock()
_builtins_loading = False


def _load_builtins() -> None:
    # Importing registers; t5_lora's module keeps torch lazy. Once per process.
    global _BUILTINS_LOADED, _builtins_loading
    if _BUILTINS_LOADED:
        return
    with _BUILTINS_LOCK:
        if _BUILTINS_LOADED or _builtins_loading:  # loaded meanwhile, or re-entered by an import below
            return
        _builtins_loading = True
        try:
            _import_builtins()
        finally:
            _builtins_loading = False
        _BUILTINS_LOADED = True


def _import_builtins() -> None:
    importlib.import_module("hpod.objectives.synthetic")
    importlib.import_module("hpod.objectives.text_classifier")
    try:
        importlib.import_module("hpod.objectives.t5_lora")
    except ImportError:  # pragma: no cover - partial installs
        pass
    _BUILTIN_NAMES.update(_REGISTRY)
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in _REGISTRY:
                _REGISTRY[ep.name] = ep.load()
                _ENTRY_POINT_NAMES.add(ep.name)
    except Exception:  # pragma: no cover - a broken third-party plugin must not break hpod
        pass


def registered_objectives() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def check_allowed_entry(entry: str) -> str | None:
    """What is wrong with one ``allowed_objectives`` entry, or None when it is valid:
    ``builtin``, ``entry-points``, a module (``mylab.objectives`` allows every
    ``mylab.objectives[.sub]:callable``) or one ``module:callable`` / registered name."""
    if entry in DEFAULT_ALLOWED_OBJECTIVES:
        return None
    module, colon, attr = entry.partition(":")
    if _MODULE_RE.match(module) and (not colon or _CALLABLE_RE.match(attr)):
        return None
    return (f"{entry!r} is neither {ALLOW_BUILTIN!r}, {ALLOW_ENTRY_POINTS!r}, a module name (mylab.objectives) "
            "nor module:callable")


def _allows(entry: str, name: str) -> bool:
    if entry == ALLOW_BUILTIN:
        return name in _BUILTIN_NAMES
    if entry == ALLOW_ENTRY_POINTS:
        return name in _ENTRY_POINT_NAMES
    if entry == name:
        return True
    if ":" in entry:
        return False
    module = name.partition(":")[0]
    return ":" in name and (module == entry or module.startswith(entry + "."))


def check_objective_allowed(name: str, allowed: tuple[str, ...] | list[str], *,
                            path: str = "objective.name") -> None:
    """Refuse an objective the operator's ``allowed_objectives`` does not list, before
    anything is imported: a registered name is looked up among hpod's built-ins and the
    installed entry points (which the operator installed); any other ``module:callable``
    must fall under an allowed module. Raises :class:`~hpod.errors.ObjectiveNotAllowed`.
    """
    _load_builtins()
    if isinstance(name, str) and any(_allows(entry, name) for entry in allowed):
        return
    shown = []
    for entry in allowed:
        if entry == ALLOW_BUILTIN:
            shown.append("built-ins (" + ", ".join(sorted(_BUILTIN_NAMES)) + ")")
        elif entry == ALLOW_ENTRY_POINTS:
            shown.append("entry points (" + (", ".join(sorted(_ENTRY_POINT_NAMES)) or "none installed") + ")")
        else:
            shown.append(entry if ":" in entry else f"module {entry} and its submodules (any callable)")
    raise ObjectiveNotAllowed(
        path, "this daemon does not run that objective: its allowed_objectives setting does not list it "
              "(`hpod run` runs any local module:callable)", found=name,
        allowed="; ".join(shown) or "nothing (allowed_objectives is empty)")


def create_objective(name: str, params: Mapping[str, Any] | None = None, *, path: str = "objective.name") -> Objective:
    """Build an objective from a registered name (``synthetic:zdt1``, ``t5_lora``) or
    ``package.module:callable``.

    Raises :class:`~hpod.errors.SpecError` naming ``path`` when it cannot be found.
    """
    params = dict(params or {})
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name](params)
    prefix = name.split(":", 1)[0] + ":"
    family = [n for n in _REGISTRY if n.startswith(prefix)]
    if family:
        raise SpecError(path, "unknown objective", found=name, allowed=", ".join(sorted(family)))
    if ":" not in name:
        raise SpecError(
            path,
            "unknown objective",
            found=name,
            allowed=", ".join(sorted(_REGISTRY)) + ", or package.module:callable",
        )
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecError(path, f"cannot import module {module_name!r}: {exc}", found=name) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SpecError(path, f"module {module_name!r} has no attribute {attr!r}", found=name)
    _check_declared_params(target, params, name)
    if inspect.isclass(target):
        obj = target(**params) if params else target()
        if not isinstance(obj, Objective):
            raise SpecError(path, "class does not implement the hpod Objective protocol", found=name)
        return obj
    if callable(target):
        return FunctionObjective(target, params)
    raise SpecError(path, "not callable", found=name)


def _check_declared_params(target: Any, params: Mapping[str, Any], name: str) -> None:
    """A user objective's ``objective.params`` against what it declares: a
    ``param_names`` attribute (functions and classes), else a class's constructor
    keywords (unless it takes ``**kwargs``). A function that declares nothing takes any
    params (they are merged into each trial's parameters)."""
    declared = getattr(target, "param_names", None)
    if declared is not None:
        check_param_names(params, [str(n) for n in declared], objective=name)
        return
    if not inspect.isclass(target):
        return
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return
    keywords = {n: p for n, p in signature.parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        return
    check_param_names(params, list(keywords), objective=name)
    for key, parameter in keywords.items():
        if parameter.default is inspect.Parameter.empty and key not in params:
            raise SpecError(f"{PARAMS_PATH}.{key}", f"required by objective {name!r}", allowed=", ".join(keywords))


def finite_or_fail(name: str, value: float) -> float:
    """Return ``value`` as float, raising ValueError when it is NaN or infinite."""
    v = float(value)
    if math.isnan(v) or math.isinf(v):
        raise ValueError(f"objective returned {v} for {name!r}")
    return v

