"""The ``monitors:`` entries of a study spec: what a drift monitor watches and when it fires.

A user who writes only ``{kind: data}`` gets a working monitor; every default is
filled in at validation time so ``model_dump()`` shows what will actually run.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "COST_DETECTORS",
    "DATA_DETECTORS",
    "DEFAULT_THRESHOLDS",
    "PERFORMANCE_DETECTORS",
    "MonitorKind",
    "MonitorSource",
    "MonitorSpec",
    "parse_duration_seconds",
]

MonitorKind = Literal["data", "performance", "cost"]

DATA_DETECTORS = ("ks", "wasserstein", "js", "psi", "mmd", "novelty")
PERFORMANCE_DETECTORS = ("page_hinkley", "adwin", "cusum")
COST_DETECTORS = ("relative_change",)
_DETECTORS: dict[str, tuple[str, ...]] = {
    "data": DATA_DETECTORS,
    "performance": PERFORMANCE_DETECTORS,
    "cost": COST_DETECTORS,
}

#: Threshold of each performance and cost detector on its own statistic (see
#: ``hpod.monitors.drift``): Page-Hinkley and CUSUM statistics in reference standard
#: deviations; ADWIN detects or not (1.0); relative change of the median cost
#: (0.15 = 15 %). Data detectors have none: their threshold is the permutation
#: null's critical value (novelty: the binomial tail's) at ``alpha / number of tests``,
#: computed for each window
#: (a ``threshold`` given for a data detector is an extra floor on its statistic).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "page_hinkley": 15.0,
    "adwin": 1.0,
    "cusum": 8.0,
    "relative_change": 0.15,
}

#: Detector options and their defaults (``options:`` in the spec).
DEFAULT_OPTIONS: dict[str, dict[str, float]] = {
    # slack per sample, in reference standard deviations; river's own default (0.005)
    # assumes raw values of unit scale and alarms on noise once standardised
    "page_hinkley": {"delta": 0.25, "min_instances": 30, "alpha": 0.9999},
    "adwin": {"delta": 0.002, "grace_period": 10},
    # CUSUM slack k: half of the smallest shift (in SDs) worth detecting
    "cusum": {"k": 0.5},
    # novelty (data): a document is novel beyond this tail quantile of the reference's
    # distances; the test counts novel documents over the last `pool` windows
    # (benchmarks/drift.py chose 0.003 and 2 on its tuning domain)
    "novelty": {"tail": 0.003, "pool": 2},
}

_DEFAULT_WINDOW = {"data": 30, "performance": 50, "cost": 3}
_DEFAULT_MIN_SAMPLES = {"data": 20, "performance": 10, "cost": 3}
_DEFAULT_DETECTOR = {"data": ["ks", "js", "novelty"], "performance": ["page_hinkley"], "cost": ["relative_change"]}
_DEFAULT_SOURCE = {"data": "served", "performance": "observations", "cost": "trials"}
_DEFAULT_METRIC = {"performance": "loss", "cost": "energy_joules"}
_SOURCES_BY_KIND = {
    "data": ("served", "path", "observations"),
    "performance": ("observations", "trials"),
    "cost": ("trials", "observations"),
}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d)\s*$")
_UNIT_SECONDS = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration_seconds(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"6h"``, ``"1d"`` in seconds."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f"a duration looks like '90s', '15m', '6h' or '1d', got {text!r}")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


class MonitorSource(BaseModel):
    """Where a monitor's windows come from.

    ``served``: the features of inputs the serving endpoint receives.
    ``path``: a watched directory (``*.jsonl`` files in it) or JSONL file where new
    data lands, read every ``poll_seconds`` by a scheduler job; ``text_field`` names
    the field holding the text. ``observations``: values (or text features) posted to
    ``POST /v1/studies/{id}/observations`` under ``metric``. ``trials``: the study's
    own trial measurements of ``metric`` (for cost drift: trials of the reference
    configuration).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["served", "path", "observations", "trials"]
    path: Path | None = None
    text_field: str = "text"
    metric: str | None = None
    poll_seconds: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MonitorSource:
        if self.type == "path" and self.path is None:
            raise ValueError("source.path is required when source.type is 'path'")
        if self.type != "path" and self.path is not None:
            raise ValueError(f"source.path is only used with source.type 'path', not {self.type!r}")
        return self


class MonitorSpec(BaseModel):
    """One drift monitor of a study (``monitors: [...]`` in the spec).

    Fields: ``kind`` (data | performance | cost); ``name`` (default: the kind;
    the ``monitor`` label of ``hpod_drift_score``); ``source`` (a
    :class:`MonitorSource` or its type as a string); ``detector`` (one name or a
    list: data ``ks``/``wasserstein`` on lengths, ``js``/``psi`` on tokens,
    ``mmd`` on embeddings, ``novelty`` on documents unlike the reference (default
    ``ks``, ``js`` and ``novelty``); performance ``page_hinkley``/``adwin``/``cusum``; cost
    ``relative_change``); ``threshold`` (one float for every detector, a mapping
    detector -> float, or None: performance and cost detectors then use
    :data:`DEFAULT_THRESHOLDS`; for a data detector it is only an extra floor on
    the statistic, whose threshold is calibrated per window: by permutation, or
    for novelty by a binomial tail);
    ``alpha`` (family level of the data tests' p-values, corrected over
    the monitor's tests by ``correction``; each test's score reaches 1.0 at
    ``alpha / tests``); ``window`` (samples per window); ``min_samples`` (fewest
    samples in the reference and in a window for a check to count); ``confirm``
    (consecutive windows over threshold before firing: no alarm before
    ``confirm x window`` samples, see :meth:`facts`); ``cooldown`` (windows as
    an int, or a duration such as ``"6h"``, after firing before it can fire
    again); ``direction`` (performance/cost: which change matters);
    ``n_buckets``, ``permutations``, ``seed`` (data tests); ``options`` (detector
    parameters, see ``DEFAULT_OPTIONS``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: MonitorKind
    name: str
    source: MonitorSource
    detector: list[str]
    threshold: float | dict[str, float] | None = None
    alpha: float = Field(default=0.05, gt=0.0, le=0.5)
    correction: Literal["holm", "bonferroni"] = "holm"
    window: int = Field(ge=1, le=1_000_000)
    min_samples: int = Field(ge=1)
    confirm: int = Field(default=2, ge=1, le=100)
    cooldown: int | str = 10
    direction: Literal["increase", "decrease", "both"] = "both"
    # 4096: fewer collisions between a domain's own words and common ones than 512
    # (the novelty test separates other domains better; benchmarks/drift.py)
    n_buckets: int = Field(default=4096, ge=16, le=1 << 20)
    permutations: int = Field(default=999, ge=19, le=100_000)
    seed: int = 0
    options: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        kind = data.get("kind")
        if kind not in _DETECTORS:
            return data  # the Literal check reports it
        data.setdefault("name", kind)
        source = data.get("source", _DEFAULT_SOURCE[kind])
        if isinstance(source, str):
            source = {"type": source}
        if isinstance(source, dict) and source.get("metric") is None and kind in _DEFAULT_METRIC:
            source = {**source, "metric": _DEFAULT_METRIC[kind]}
        data["source"] = source
        detector = data.get("detector", _DEFAULT_DETECTOR[kind])
        data["detector"] = [detector] if isinstance(detector, str) else detector
        if data.get("window") is None:
            data["window"] = _DEFAULT_WINDOW[kind]
        if data.get("min_samples") is None:
            window = data["window"] if isinstance(data["window"], int) else _DEFAULT_WINDOW[kind]
            data["min_samples"] = min(_DEFAULT_MIN_SAMPLES[kind], window)
        return data

    @model_validator(mode="after")
    def _check(self) -> MonitorSpec:
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"name must be 1-64 characters of letters, digits, '_', '.', ':' or '-', got {self.name!r}"
            )
        allowed = _DETECTORS[self.kind]
        if not self.detector:
            raise ValueError(f"detector must name at least one of {', '.join(allowed)}")
        for name in self.detector:
            if name not in allowed:
                raise ValueError(
                    f"detector {name!r} is not a {self.kind} detector; allowed: {', '.join(allowed)}"
                )
        if len(set(self.detector)) != len(self.detector):
            raise ValueError(f"detector lists a detector twice: {self.detector}")
        if self.kind != "data" and len(self.detector) != 1:
            raise ValueError(f"a {self.kind} monitor takes one detector, got {self.detector}")
        if self.source.type not in _SOURCES_BY_KIND[self.kind]:
            raise ValueError(
                f"source {self.source.type!r} cannot feed a {self.kind} monitor; "
                f"allowed: {', '.join(_SOURCES_BY_KIND[self.kind])}"
            )
        if isinstance(self.threshold, dict):
            for name, value in self.threshold.items():
                if name not in self.detector:
                    raise ValueError(f"threshold names {name!r}, which is not in detector {self.detector}")
                _check_threshold(name, value)
        elif self.threshold is not None:
            for name in self.detector:
                _check_threshold(name, self.threshold)
        if self.min_samples > self.window:
            raise ValueError(f"min_samples ({self.min_samples}) must be <= window ({self.window})")
        if isinstance(self.cooldown, str):
            parse_duration_seconds(self.cooldown)
        elif self.cooldown < 0:
            raise ValueError(f"cooldown must be >= 0 windows, got {self.cooldown}")
        if self.kind == "data" and (self.permutations + 1) * self.test_level < 1:
            raise ValueError(
                f"permutations ({self.permutations}) cannot give p-values as small as alpha / tests = "
                f"{self.test_level:.3g}; use at least {math.ceil(1 / self.test_level) - 1} permutations"
            )
        if "novelty" in self.detector:
            tail, pool = self.option("novelty", "tail"), self.option("novelty", "pool")
            if not 0.0 < tail < 0.5:
                raise ValueError(f"options.tail must be in (0, 0.5), got {tail}")
            if pool != int(pool) or not 1 <= pool <= 100:
                raise ValueError(f"options.pool must be a whole number of windows in [1, 100], got {pool}")
        known = {key for name in self.detector for key in DEFAULT_OPTIONS.get(name, {})}
        for key in self.options:
            if key not in known:
                raise ValueError(
                    f"options.{key} is not an option of {self.detector}; allowed: {', '.join(sorted(known)) or 'none'}"
                )
        return self

    # -- resolved values -------------------------------------------------

    def threshold_for(self, detector: str) -> float:
        """The threshold of a performance or cost ``detector`` (spec value or default)."""
        if detector in DATA_DETECTORS:
            raise ValueError(f"data detector {detector!r} is calibrated per window; see floor_for")
        if isinstance(self.threshold, dict):
            return float(self.threshold.get(detector, DEFAULT_THRESHOLDS[detector]))
        if self.threshold is not None:
            return float(self.threshold)
        return DEFAULT_THRESHOLDS[detector]

    def floor_for(self, detector: str) -> float | None:
        """The optional floor on a data ``detector``'s statistic (None: significance alone)."""
        if isinstance(self.threshold, dict):
            value = self.threshold.get(detector)
            return None if value is None else float(value)
        return None if self.threshold is None else float(self.threshold)

    @property
    def test_level(self) -> float:
        """The level of each test: ``alpha`` over the number of tests of a data monitor
        (Bonferroni; the monitor's Holm correction is never stricter), ``alpha`` otherwise."""
        return self.alpha / len(self.detector) if self.kind == "data" else self.alpha

    @property
    def samples_to_alarm(self) -> int:
        """The fewest samples (texts, metric values or runs) after which this monitor can
        fire, its reference already set: ``confirm`` full windows of ``window`` samples.
        Without a reference the first full window becomes it: add one ``window``."""
        return self.confirm * self.window

    def facts(self) -> dict[str, Any]:
        """What a user needs to read this monitor's alarms: sample size per window, the
        fewest samples before an alarm, the alarm discipline and the tests' level."""
        return {
            "window": self.window,
            "min_samples": self.min_samples,
            "confirm": self.confirm,
            "samples_to_alarm": self.samples_to_alarm,
            "cooldown": self.cooldown,
            "detectors": list(self.detector),
            "alpha": self.alpha,
            "test_level": self.test_level if self.kind == "data" else None,
            "permutations": self.permutations if self.kind == "data" else None,
        }

    def option(self, detector: str, key: str) -> float:
        """A detector option: the spec's ``options[key]`` or its default."""
        return float(self.options.get(key, DEFAULT_OPTIONS[detector][key]))

    @property
    def cooldown_windows(self) -> int:
        """Cooldown in windows (0 when it is given as a duration)."""
        return self.cooldown if isinstance(self.cooldown, int) else 0

    @property
    def cooldown_seconds(self) -> float:
        """Cooldown in seconds (0 when it is given in windows)."""
        return parse_duration_seconds(self.cooldown) if isinstance(self.cooldown, str) else 0.0


def _check_threshold(detector: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"threshold for {detector} must be > 0, got {value}")
    if detector in ("ks", "js") and value > 1:
        raise ValueError(f"threshold for {detector} must be in (0, 1], got {value}")
