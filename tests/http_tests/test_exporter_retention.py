"""The exporter retires finished studies after a retention, and the daemon's registry
carries prometheus_client's process and Python collectors."""

from __future__ import annotations

import time

import pytest

from hpod.http.exporter import HpodCollector, Snapshot, StudySnapshot, TrialObserver, create_registry

DAY = 86400.0


def _snapshot(now: float) -> Snapshot:
    return Snapshot(version="x", started_at=now - 10 * DAY, studies=[
        StudySnapshot(name="old-done", state="completed", last_activity_ts=now - 3 * DAY, hypervolume=0.5,
                      best={"loss": 1.0}),
        StudySnapshot(name="new-done", state="completed", last_activity_ts=now - 60, hypervolume=0.4),
        StudySnapshot(name="old-running", state="running", last_activity_ts=now - 3 * DAY, hypervolume=0.3),
        StudySnapshot(name="old-cancelled", state="cancelled", last_activity_ts=now - 3 * DAY),
    ])


def test_finished_studies_are_retired_after_the_retention() -> None:
    now = time.time()
    registry = create_registry()
    observer = TrialObserver(registry)
    for name in ("old-done", "new-done"):
        observer.observe_trial(name, "complete", 10.0, None, None)
    HpodCollector(lambda: _snapshot(now), registry=registry, observer=observer, retention_seconds=DAY,
                  clock=lambda: now)
    value = registry.get_sample_value
    assert value("hpod_study_hypervolume", {"study": "old-done"}) is None
    assert value("hpod_study_best_value", {"study": "old-done", "objective": "loss"}) is None
    assert value("hpod_study_state", {"study": "old-cancelled", "state": "cancelled"}) is None
    assert value("hpod_trial_duration_seconds_count", {"study": "old-done", "state": "complete"}) is None
    # recent finished studies and unfinished ones, however quiet, stay
    assert value("hpod_study_hypervolume", {"study": "new-done"}) == 0.4
    assert value("hpod_trial_duration_seconds_count", {"study": "new-done", "state": "complete"}) == 1
    assert value("hpod_study_hypervolume", {"study": "old-running"}) == 0.3


def test_retention_zero_retires_at_once_and_bad_values_are_refused() -> None:
    now = time.time()
    registry = create_registry()
    HpodCollector(lambda: _snapshot(now), registry=registry, retention_seconds=0, clock=lambda: now)
    assert registry.get_sample_value("hpod_study_hypervolume", {"study": "new-done"}) is None
    with pytest.raises(ValueError, match="retention_seconds"):
        HpodCollector(lambda: _snapshot(now), retention_seconds=-1)


def test_the_daemon_registry_has_process_and_python_collectors() -> None:
    registry = create_registry()
    names = {metric.name for metric in registry.collect()}
    assert {"process_resident_memory_bytes", "process_cpu_seconds", "python_info", "python_gc_objects_collected"} \
        <= names
