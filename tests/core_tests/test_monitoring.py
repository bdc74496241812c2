"""MonitorService with posted observations, served-input features and trial
measurements: alarms, persisted state across restarts, errors kept per monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hpod.core.monitoring import MonitorService, monitor_states, record_served
from hpod.errors import UsageError
from hpod.spec import parse_spec
from hpod.store import Store


def _register(tmp_path: Path, monitors: list[dict[str, Any]], **extra: Any) -> tuple[Store, Any]:
    store = Store.for_state_dir(tmp_path)
    spec = parse_spec({"name": "quality", "objective": {"name": "synthetic:training_cost"},
                       "budget": {"n_trials": 4}, "monitors": monitors, **extra})
    store.register_study(spec, state="completed")
    return store, spec


def _stream(step: float, seed: int) -> list[float]:
    """40 windows of 20 validation losses around 1.0; from window 25 on, ``step`` higher."""
    rng = np.random.default_rng(seed)
    return [float(x) + (step if i >= 25 * 20 else 0.0) for i, x in enumerate(rng.normal(1.0, 0.05, 40 * 20))]


@pytest.mark.parametrize(("step", "alarms"), [(0.0, 0), (0.15, 1)], ids=["no-step", "step"])
def test_performance_monitor_on_posted_observations(tmp_path: Path, step: float, alarms: int) -> None:
    store, _ = _register(tmp_path, [{"kind": "performance", "name": "val_loss", "window": 20, "confirm": 1,
                                     "cooldown": 100, "direction": "increase"}])
    service = MonitorService(store, tmp_path)
    values = _stream(step, seed=3)
    checks = []
    for start in range(0, len(values), 20):
        assert service.add_observations("quality", "val_loss", values[start: start + 20])["accepted"] == 20
        checks.extend(service.tick())
    fired = [i for i, t in enumerate(checks) if t.check.fired]
    assert len(fired) == alarms
    if alarms:
        assert 25 <= fired[0] <= 28 and checks[fired[0]].check.reason == "drift:performance"
    events = store.events(study="quality", kinds=["drift_detected"])
    assert len(events) == alarms
    (state,) = monitor_states(store)
    assert state["alarms_total"] == alarms and state["score"] is not None and state["last_check"] is not None


def test_state_survives_a_restart(tmp_path: Path) -> None:
    store, _ = _register(tmp_path, [{"kind": "performance", "name": "val_loss", "window": 20, "confirm": 2}])
    first = MonitorService(store, tmp_path)
    first.add_observations("quality", "val_loss", [1.0 + 0.01 * (i % 5) for i in range(30)])
    assert [t.check.status for t in first.tick()] == ["reference"]  # 10 samples wait for the next window
    # what `hpod status` states: values per check and how many it takes before any alarm
    (state,) = monitor_states(store)
    assert state["window"] == 20 and state["samples_to_alarm"] == 40, state
    # a new service (daemon restart) resumes the reference, counters and the half window
    second = MonitorService(Store.for_state_dir(tmp_path), tmp_path)
    second.add_observations("quality", "val_loss", [3.0] * 30)
    checks = second.tick()
    assert [t.check.status for t in checks] == ["checked", "checked"]
    assert [t.check.fired for t in checks] == [False, True]  # confirm: 2 counts across the restart


def test_observations_are_validated_where_they_enter(tmp_path: Path) -> None:
    store, _ = _register(tmp_path, [{"kind": "performance", "name": "val_loss"},
                                    {"kind": "data", "name": "inputs", "source": "observations"},
                                    {"kind": "data", "name": "served_inputs"}])
    service = MonitorService(store, tmp_path)
    with pytest.raises(UsageError, match="no monitor named 'nope'"):
        service.add_observations("quality", "nope", [1.0])
    with pytest.raises(UsageError, match=r"items\[1\]: a performance monitor takes finite numbers"):
        service.add_observations("quality", "val_loss", [1.0, float("nan")])
    with pytest.raises(UsageError, match="reads source 'served'"):
        service.add_observations("quality", "served_inputs", ["text"])
    with pytest.raises(UsageError, match="features hashed into 64 buckets"):
        service.add_observations("quality", "inputs", [{"n_tokens": 3, "n_bytes": 9, "n_buckets": 64}])
    assert service.add_observations("quality", "inputs", ["a posted text"])["accepted"] == 1
    # texts are reduced to features on the way in: the raw text is not stored
    with store.session() as s:
        stored = [r[0] for r in s.connection().exec_driver_sql("SELECT value_json FROM hpod_observations")]
    assert stored and not any("a posted text" in v for v in stored)


def test_served_features_feed_data_monitors_without_the_text(tmp_path: Path) -> None:
    store, spec = _register(tmp_path, [{"kind": "data", "name": "served_inputs", "window": 20}])
    service = MonitorService(store, tmp_path)
    rng = np.random.default_rng(0)
    long_texts = [" ".join(f"word{j}" for j in rng.integers(50, size=rng.integers(150, 250))) for _ in range(40)]
    assert record_served(store, spec, long_texts[:20]) == 20
    assert [t.check.status for t in service.tick()] == ["reference"]
    record_served(store, spec, long_texts[20:])
    (calm,) = service.tick()
    assert calm.check.status == "checked" and not calm.check.over_threshold
    short = [f"word{i} word{i + 1}" for i in range(20)]
    record_served(store, spec, short)
    record_served(store, spec, short)
    over = service.tick()
    assert [t.check.over_threshold for t in over] == [True, True] and over[1].check.fired
    with store.session() as s:
        rows = [r[0] for r in s.connection().exec_driver_sql("SELECT value_json FROM hpod_observations")]
    assert not any("word1 word2" in v for v in rows)


def test_a_broken_source_is_reported_and_others_go_on(tmp_path: Path) -> None:
    store, _ = _register(tmp_path, [{"kind": "data", "name": "landing", "source": {"type": "path",
                                                                                    "path": "missing/dir"}},
                                    {"kind": "performance", "name": "val_loss", "window": 10}])
    service = MonitorService(store, tmp_path)
    service.add_observations("quality", "val_loss", [1.0] * 10)
    checks = service.tick(force=True)
    assert [t.monitor for t in checks] == ["val_loss"]
    states = {m["monitor"]: m for m in monitor_states(store)}
    assert "does not exist" in states["landing"]["error"]
    assert states["val_loss"]["error"] is None


def test_cost_monitor_watches_the_reference_configuration(tmp_path: Path) -> None:
    import optuna

    from hpod.spec import resolve

    store, spec = _register(tmp_path, [{"kind": "cost", "name": "energy", "window": 3, "confirm": 1}],
                            objectives=[{"name": "loss"}])
    study = store.load_optuna_study("quality")
    dist = resolve(spec).distributions()
    ref = {"learning_rate": 3e-4, "batch_size": 16, "epochs": 3, "dropout": 0.2, "rank": 8, "alpha": 32}
    other = {**ref, "batch_size": 32}

    def add(params: dict[str, Any], joules: float) -> None:
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dist, values=[2.0],
                                                  user_attrs={"hpod.metrics": {"energy_joules": joules}}))

    for joules in (5000.0, 5050.0, 4980.0):
        add(ref, joules)
        add(other, 99999.0)  # another configuration's cost says nothing about the hardware
    service = MonitorService(store, tmp_path)
    assert [t.check.status for t in service.tick()] == ["reference"]
    for joules in (6400.0, 6500.0, 6450.0):  # a slower GPU / throttling: +29 %
        add(ref, joules)
    (check,) = service.tick()
    assert check.check.fired and check.check.reason == "drift:cost"


def test_a_reference_of_two_parts_judges_each_window_against_the_closer_part(tmp_path: Path) -> None:
    """After a retune on feedback the reference is the new model's training data: records
    replayed from domain A and new labelled records of domain B. Held-out windows of either
    domain raise no alarm (a single mixed reference flags both); a third domain does."""
    from hpod.core.monitoring import REFERENCE_PART
    from hpod.objectives.text_classifier import synthetic_reviews

    store, _ = _register(tmp_path, [{"kind": "data", "name": "inputs", "source": "observations", "window": 40,
                                     "confirm": 2, "cooldown": 2, "permutations": 199}])
    a, b = synthetic_reviews("products", 30, seed=1), synthetic_reviews("restaurants", 120, seed=2)
    records = [*({"text": r["text"], REFERENCE_PART: "replayed"} for r in a),
               *({"text": r["text"], REFERENCE_PART: "new"} for r in b)]
    store.add_data_window("quality", "reference", records, fields=["text"], source="training data of quality@v2")
    service = MonitorService(store, tmp_path)

    def windows(texts: list[str]) -> list[Any]:
        service.add_observations("quality", "inputs", texts)
        return service.tick()

    held_out_b = windows([r["text"] for r in synthetic_reviews("restaurants", 120, seed=3)])
    held_out_a = windows([r["text"] for r in synthetic_reviews("products", 120, seed=4)])
    assert len(held_out_a) == len(held_out_b) == 3
    assert not any(t.check.fired for t in held_out_a + held_out_b)
    (state,) = monitor_states(store)
    assert state["reference"]["size"] == 150 and state["alarms_total"] == 0
    other = [f"error {i}: segmentation fault in module kernel{i % 7} at address 0x{i:04x}" for i in range(80)]
    assert any(t.check.fired for t in windows(other))
