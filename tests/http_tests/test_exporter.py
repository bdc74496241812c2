"""Tests of hpod's Prometheus exporter: values exported from a snapshot, per-trial
histograms, error isolation, the HTTP server, and `promtool check metrics` on a live scrape."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.utils import floatToGoString

from hpod.errors import UsageError
from hpod.http.exporter import (
    DriftSnapshot,
    HpodCollector,
    RetuneSnapshot,
    Snapshot,
    StudySnapshot,
    TrialObserver,
    start_metrics_server,
)
from hpod.http.server import parse_address
from hpod.monitors.gpu import GpuReading

GiB = 2**30


def realistic_snapshot() -> Snapshot:
    now = time.time()
    return Snapshot(
        version="0.1.0",
        started_at=now - 3600.0,
        studies=[
            StudySnapshot(
                name="t5_cnndm",
                trials_by_state={"COMPLETE": 18, "FAIL": 2, "PRUNED": 3, "RUNNING": 1, "WAITING": 4},
                running=1,
                hypervolume=0.62,
                pareto_front_size=5,
                best={"loss": 1.84, "time_seconds": 312.0, "memory_bytes": 3.5 * GiB, "energy_joules": 41_000.0},
                energy_joules_total=950_000.0,
                energy_budget_joules=1_000_000.0,
                n_trials_budget=40,
                last_activity_ts=now - 30.0,
                lagrange_multipliers={"time_seconds": 0.25, "memory_bytes": 0.0},
                state="running",
            ),
            StudySnapshot(
                name="t5_cnndm@v2",
                trials_by_state={"COMPLETE": 3, "WORKER_LOST": 1},
                running=0,
                hypervolume=None,  # fewer than two complete trials on the front yet
                pareto_front_size=1,
                best={"loss": 2.1},
                energy_joules_total=12_000.0,
                energy_budget_joules=None,
                n_trials_budget=None,
                last_activity_ts=now - 600.0,
                state="paused",
            ),
        ],
        workers_by_state={"busy": 2, "idle": 1, "lost": 0},
        gpus=[
            GpuReading(0, "NVIDIA H200", 512.5, 60.0 * GiB, 141.0 * GiB, 0.93, 7.2e6),
            # a MIG slice: no utilization, no energy counter
            GpuReading(1, "NVIDIA H200 MIG 1g.18gb", 80.0, 2.0 * GiB, 18.0 * GiB, None, None),
        ],
        events_by_kind={"daemon_started": 1, "trial_completed": 21, "trial_failed": 2, "drift_detected": 1},
        drift=[DriftSnapshot("t5_cnndm", "data:length", 0.31, 1), DriftSnapshot("t5_cnndm", "performance", 0.02, 0)],
        retunes=[RetuneSnapshot("t5_cnndm", "drift:data:length", 1)],
    )


def registry_with(snapshot_fn) -> tuple[CollectorRegistry, TrialObserver]:
    registry = CollectorRegistry()
    HpodCollector(snapshot_fn, registry=registry)
    return registry, TrialObserver(registry)


def test_snapshot_values_are_exported_in_base_units_with_bounded_labels() -> None:
    registry, _ = registry_with(realistic_snapshot)
    value = registry.get_sample_value

    assert value("hpod_build_info", {"version": "0.1.0"}) == 1
    assert time.time() - value("hpod_start_time_seconds") == pytest.approx(3600, abs=60)
    assert value("hpod_trials_total", {"study": "t5_cnndm", "state": "complete"}) == 18
    assert value("hpod_trials_total", {"study": "t5_cnndm", "state": "fail"}) == 2
    assert value("hpod_trials_total", {"study": "t5_cnndm", "state": "pruned"}) == 3
    # states that go down again are gauges, never part of the counter
    assert value("hpod_trials_total", {"study": "t5_cnndm", "state": "running"}) is None
    assert value("hpod_trials_running", {"study": "t5_cnndm"}) == 1
    assert value("hpod_trials_waiting", {"study": "t5_cnndm"}) == 4
    # a terminal state never seen is exported at 0 (so rate() sees the first failure);
    # one beyond Optuna's (worker_lost) is exported as it comes
    assert value("hpod_trials_total", {"study": "t5_cnndm@v2", "state": "fail"}) == 0
    assert value("hpod_trials_total", {"study": "t5_cnndm@v2", "state": "worker_lost"}) == 1
    assert value("hpod_trial_energy_joules_total", {"study": "t5_cnndm"}) == 950_000
    assert value("hpod_study_hypervolume", {"study": "t5_cnndm"}) == pytest.approx(0.62)
    assert value("hpod_study_hypervolume", {"study": "t5_cnndm@v2"}) is None
    assert value("hpod_study_pareto_front_size", {"study": "t5_cnndm"}) == 5
    # one family per unit: each series has one unit
    assert value("hpod_study_best_bytes", {"study": "t5_cnndm", "objective": "memory_bytes"}) == 3.5 * GiB
    assert value("hpod_study_best_seconds", {"study": "t5_cnndm", "objective": "time_seconds"}) == 312.0
    assert value("hpod_study_best_joules", {"study": "t5_cnndm", "objective": "energy_joules"}) == 41_000.0
    assert value("hpod_study_best_value", {"study": "t5_cnndm", "objective": "loss"}) == 1.84
    assert value("hpod_study_best_value", {"study": "t5_cnndm", "objective": "memory_bytes"}) is None
    assert value("hpod_study_energy_budget_joules", {"study": "t5_cnndm"}) == 1_000_000
    assert value("hpod_study_energy_budget_joules", {"study": "t5_cnndm@v2"}) is None
    assert value("hpod_study_trials_budget", {"study": "t5_cnndm"}) == 40
    assert value("hpod_study_last_activity_timestamp_seconds", {"study": "t5_cnndm"}) > time.time() - 60
    assert value("hpod_study_state", {"study": "t5_cnndm", "state": "running"}) == 1
    assert value("hpod_study_state", {"study": "t5_cnndm", "state": "paused"}) == 0
    assert value("hpod_study_state", {"study": "t5_cnndm@v2", "state": "paused"}) == 1
    assert value("hpod_lagrange_multiplier", {"study": "t5_cnndm", "constraint": "time_seconds"}) == 0.25
    assert value("hpod_workers", {"state": "busy"}) == 2
    assert value("hpod_gpu_power_watts", {"gpu": "0"}) == 512.5
    assert value("hpod_gpu_memory_used_bytes", {"gpu": "0"}) == 60.0 * GiB
    assert value("hpod_gpu_memory_total_bytes", {"gpu": "1"}) == 18.0 * GiB
    assert value("hpod_gpu_utilization_ratio", {"gpu": "0"}) == 0.93
    assert value("hpod_gpu_utilization_ratio", {"gpu": "1"}) is None
    assert value("hpod_gpu_energy_joules_total", {"gpu": "0"}) == 7.2e6
    assert value("hpod_gpu_info", {"gpu": "1", "name": "NVIDIA H200 MIG 1g.18gb"}) == 1
    assert value("hpod_events_total", {"kind": "trial_completed"}) == 21
    assert value("hpod_events_total", {"kind": "worker_lost"}) == 0
    assert value("hpod_drift_score", {"study": "t5_cnndm", "monitor": "data:length"}) == 0.31
    assert value("hpod_drift_alarms_total", {"study": "t5_cnndm", "monitor": "data:length"}) == 1
    assert value("hpod_retunes_total", {"study": "t5_cnndm", "reason": "drift:data:length"}) == 1
    assert value("hpod_exporter_errors_total", {"section": "snapshot"}) == 0

    # no label carries a trial number or any other unbounded value
    labels = {name for metric in registry.collect() for sample in metric.samples for name in sample.labels}
    assert labels <= {
        "version", "study", "state", "objective", "constraint", "gpu", "name", "kind",
        "monitor", "reason", "section", "le",
    }


def test_every_scrape_takes_a_fresh_snapshot() -> None:
    snapshot = realistic_snapshot()
    registry, _ = registry_with(lambda: snapshot)
    assert registry.get_sample_value("hpod_trials_total", {"study": "t5_cnndm", "state": "complete"}) == 18
    snapshot.studies[0].trials_by_state["COMPLETE"] = 19
    snapshot.gpus = []
    assert registry.get_sample_value("hpod_trials_total", {"study": "t5_cnndm", "state": "complete"}) == 19
    assert registry.get_sample_value("hpod_gpu_power_watts", {"gpu": "0"}) is None


def test_trial_observer_fills_histograms_per_study() -> None:
    registry, observer = registry_with(realistic_snapshot)
    observer.observe_trial("t5_cnndm", "COMPLETE", 120.0, 2 * GiB, 36_000.0)
    observer.observe_trial("t5_cnndm", "COMPLETE", 700.0, 6 * GiB, None)  # energy not measured
    observer.observe_trial("t5_cnndm", "FAIL", 3.0, None, None)
    observer.observe_suggest("t5_cnndm", 0.2)
    value = registry.get_sample_value

    duration = {"study": "t5_cnndm", "state": "complete"}
    assert value("hpod_trial_duration_seconds_count", duration) == 2
    assert value("hpod_trial_duration_seconds_sum", duration) == 820.0
    assert value("hpod_trial_duration_seconds_bucket", {**duration, "le": "60.0"}) == 0
    assert value("hpod_trial_duration_seconds_bucket", {**duration, "le": "120.0"}) == 1
    assert value("hpod_trial_duration_seconds_bucket", {**duration, "le": "1200.0"}) == 2
    assert value("hpod_trial_duration_seconds_count", {"study": "t5_cnndm", "state": "fail"}) == 1
    assert value("hpod_trial_memory_bytes_count", {"study": "t5_cnndm"}) == 2
    assert value("hpod_trial_memory_bytes_bucket", {"study": "t5_cnndm", "le": floatToGoString(4 * GiB)}) == 1
    assert value("hpod_trial_energy_used_joules_count", {"study": "t5_cnndm"}) == 1
    assert value("hpod_trial_energy_used_joules_sum", {"study": "t5_cnndm"}) == 36_000.0
    assert value("hpod_sampler_suggest_seconds_count", {"study": "t5_cnndm"}) == 1

    observer.forget_study("t5_cnndm")
    assert value("hpod_trial_duration_seconds_count", duration) is None
    assert value("hpod_sampler_suggest_seconds_count", {"study": "t5_cnndm"}) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda o: o.observe_trial("", "COMPLETE", 1.0, None, None), "study must be a non-empty string"),
        (lambda o: o.observe_trial("s", "COMPLETE", -1.0, None, None),
         "duration_seconds must be a finite number >= 0, got -1.0"),
        (lambda o: o.observe_trial("s", "COMPLETE", 1.0, float("nan"), None),
         "memory_bytes must be a finite number >= 0, got nan"),
        (lambda o: o.observe_trial("s", "COMPLETE", 1.0, None, -5),
         "energy_joules must be a finite number >= 0, got -5"),
        (lambda o: o.observe_suggest("s", float("inf")), "seconds must be a finite number >= 0, got inf"),
    ],
)
def test_trial_observer_rejects_impossible_figures_naming_them(call, message) -> None:
    _, observer = registry_with(realistic_snapshot)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        call(observer)


def test_a_failing_snapshot_does_not_break_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Snapshot:
        raise RuntimeError("database is locked")

    registry, observer = registry_with(broken)
    observer.observe_trial("t5_cnndm", "COMPLETE", 10.0, None, None)
    # the scrape itself succeeds, other collectors on the registry still export
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}
    assert samples[("hpod_trial_duration_seconds_count", (("state", "complete"), ("study", "t5_cnndm")))] == 1
    assert not any(name == "hpod_build_info" for name, _ in samples)
    # and the failure is visible to alerting, counted once per scrape
    assert samples[("hpod_exporter_errors_total", (("section", "snapshot"),))] == 1
    list(registry.collect())
    assert registry.get_sample_value("hpod_exporter_errors_total", {"section": "snapshot"}) == 3
    # an outage logs its traceback once, not once per scrape
    tracebacks = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info is not None]
    assert len(tracebacks) == 1
    assert "database is locked" in str(tracebacks[0].exc_info[1])


def test_a_bad_section_is_skipped_and_the_others_exported() -> None:
    snapshot = realistic_snapshot()
    snapshot.studies[0].best["loss"] = "not a number"  # type: ignore[assignment]
    registry, _ = registry_with(lambda: snapshot)
    assert registry.get_sample_value("hpod_trials_total", {"study": "t5_cnndm", "state": "complete"}) is None
    assert registry.get_sample_value("hpod_gpu_power_watts", {"gpu": "0"}) == 512.5
    assert registry.get_sample_value("hpod_drift_score", {"study": "t5_cnndm", "monitor": "data:length"}) == 0.31
    assert registry.get_sample_value("hpod_exporter_errors_total", {"section": "studies"}) >= 1
    assert registry.get_sample_value("hpod_exporter_errors_total", {"section": "gpus"}) == 0


def test_collector_uses_only_the_registry_it_is_given() -> None:
    from prometheus_client import REGISTRY

    registry_with(realistic_snapshot)
    assert REGISTRY.get_sample_value("hpod_build_info", {"version": "0.1.0"}) is None


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("[::1]:9464", ("::1", 9464)),
        (":9464", ("0.0.0.0", 9464)),
        ("localhost:0", ("localhost", 0)),
    ],
)
def test_metrics_address_forms(address, expected) -> None:
    assert parse_address(address, what="metrics address", default_host="0.0.0.0") == expected


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("9464", "metrics address: expected HOST:PORT"),
        ("unix:/run/hpod/metrics.sock", "expected HOST:PORT"),
        ("127.0.0.1:http", "port must be an integer in 0..65535, found 'http'"),
        ("127.0.0.1:70000", "port must be an integer in 0..65535, found '70000'"),
        ("::1:9464", "IPv6 host in brackets"),
    ],
)
def test_bad_metrics_addresses_are_usage_errors(address, message) -> None:
    with pytest.raises(UsageError, match=message):
        parse_address(address, what="metrics address", default_host="0.0.0.0")


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        return response.read().decode()


def test_metrics_server_serves_the_registry_and_frees_its_port() -> None:
    registry, observer = registry_with(realistic_snapshot)
    observer.observe_trial("t5_cnndm", "COMPLETE", 120.0, 2 * GiB, 36_000.0)
    with start_metrics_server("127.0.0.1:0", registry) as server:
        port = server.port
        assert port > 0
        body = scrape(server.url)
        assert 'hpod_trials_total{state="complete",study="t5_cnndm"} 18.0' in body
        assert 'hpod_trial_duration_seconds_count{state="complete",study="t5_cnndm"} 1.0' in body
        # the address is taken while serving
        with pytest.raises(UsageError, match=f"127.0.0.1:{port}' cannot be bound"):
            start_metrics_server(f"127.0.0.1:{port}", CollectorRegistry())
    # after close() the port is free again: a restarted daemon can serve on it
    with start_metrics_server(f"127.0.0.1:{port}", registry) as again:
        assert "hpod_build_info" in scrape(again.url)


@pytest.mark.prometheus
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (scripts/install-prometheus.sh)")
def test_promtool_check_metrics_reports_nothing_on_a_live_scrape() -> None:
    registry, observer = registry_with(realistic_snapshot)
    for seconds, state in ((120.0, "COMPLETE"), (45.0, "PRUNED"), (2.0, "FAIL")):
        observer.observe_trial("t5_cnndm", state, seconds, 2 * GiB, 1_000.0)
    observer.observe_suggest("t5_cnndm", 0.05)
    with start_metrics_server("127.0.0.1:0", registry) as server:
        body = scrape(server.url)
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=60
    )
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, "")


def test_a_new_study_has_empty_histograms_before_its_first_trial_ends() -> None:
    # A series that first appears already holding an observation is invisible to rate():
    # with the observer wired in, the collector creates each study's series at 0.
    snapshot = realistic_snapshot()
    snapshot.studies.append(StudySnapshot(name="old_study", state="completed"))
    registry = CollectorRegistry()
    observer = TrialObserver(registry)
    HpodCollector(lambda: snapshot, registry=registry, observer=observer)
    list(registry.collect())  # one scrape
    for state in ("complete", "fail", "pruned"):
        labels = {"study": "t5_cnndm@v2", "state": state}
        assert registry.get_sample_value("hpod_trial_duration_seconds_count", labels) == 0
    assert registry.get_sample_value("hpod_trial_energy_used_joules_count", {"study": "t5_cnndm"}) == 0
    assert registry.get_sample_value("hpod_sampler_suggest_seconds_count", {"study": "t5_cnndm"}) == 0
    # a finished study starts no trials: no empty series for it
    assert registry.get_sample_value("hpod_trial_memory_bytes_count", {"study": "old_study"}) is None
