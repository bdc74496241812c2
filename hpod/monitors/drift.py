"""Data, performance and cost drift monitors (river + scipy).

Public names live here; the implementation is split over ``_drift_*`` modules:
``_drift_spec`` (the ``monitors:`` spec entry), ``_drift_features`` (text
features that keep no raw text), ``_drift_detectors`` (the tests) and
``_drift_novelty`` (documents unlike the reference) and ``_drift_monitor`` (alarm
discipline and persisted state).

Score scale: every test reports a score that is 1.0 at its threshold (see
``_drift_detectors``); a check's largest is exported as ``hpod_drift_score{study,monitor}``.
"""

from __future__ import annotations

from hpod.monitors._drift_detectors import (
    REASONS,
    DriftResult,
    adjust_p_values,
    cost_drift,
    embedding_drift,
    length_drift,
    novelty_drift,
    performance_drift,
    vocabulary_drift,
)
from hpod.monitors._drift_features import (
    DEFAULT_BUCKETS,
    TextFeatures,
    as_features,
    bucket_matrix,
    features_from_path,
    stable_bucket,
    text_features,
)
from hpod.monitors._drift_monitor import STATE_VERSION, Monitor, MonitorCheck
from hpod.monitors._drift_novelty import NoveltyReference, novelty_reference
from hpod.spec._monitors import (
    COST_DETECTORS,
    DATA_DETECTORS,
    DEFAULT_OPTIONS,
    DEFAULT_THRESHOLDS,
    PERFORMANCE_DETECTORS,
    MonitorKind,
    MonitorSource,
    MonitorSpec,
    parse_duration_seconds,
)

__all__ = [
    "COST_DETECTORS",
    "DATA_DETECTORS",
    "DEFAULT_BUCKETS",
    "DEFAULT_OPTIONS",
    "DEFAULT_THRESHOLDS",
    "PERFORMANCE_DETECTORS",
    "REASONS",
    "STATE_VERSION",
    "DriftResult",
    "Monitor",
    "MonitorCheck",
    "MonitorKind",
    "MonitorSource",
    "MonitorSpec",
    "NoveltyReference",
    "TextFeatures",
    "adjust_p_values",
    "as_features",
    "bucket_matrix",
    "cost_drift",
    "embedding_drift",
    "features_from_path",
    "length_drift",
    "novelty_drift",
    "novelty_reference",
    "parse_duration_seconds",
    "performance_drift",
    "stable_bucket",
    "text_features",
    "vocabulary_drift",
]
