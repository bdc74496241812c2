"""The adaptation loop, end to end on CPU with the offline ``text_classifier``: a study
trained on domain A (product reviews) is served; traffic switches to domain B
(restaurant reviews); the data monitor alarms; with no labels the retune waits and
says so; labelled B records are posted; the retune trains on them; serving switches;
the served model is better on held-out B records than before, and the monitor's
reference follows the served model (not the alarm).

Every component is the daemon's own (serving app, control API, MonitorService,
RetunePolicy, the controller via ``run_foreground``); the test drives their ticks
itself instead of waiting on the daemon's timers, so it asserts on states, not times."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from hpod.core.monitoring import MonitorService, monitor_states
from hpod.core.retune import RetunePolicy, retune_states, waiting_snapshots
from hpod.http.api import ApiContext, create_app
from hpod.http.serving import create_serving_app
from hpod.objectives.text_classifier import synthetic_reviews
from hpod.spec import parse_spec, resolve
from hpod.store import Store

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WINDOW = 40


def _spec() -> dict[str, Any]:
    return {
        "name": "reviews",
        "objective": {"name": "text_classifier",
                      "params": {"data": {"source": "synthetic:products", "train_size": 300, "val_size": 100}}},
        "objectives": [{"name": "loss"}],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 4},
        "space": {"learning_rate": {"type": "float", "low": 0.3, "high": 3.0, "log": True},
                  "epochs": {"type": "int", "low": 8, "high": 20}},
        "monitors": [{"kind": "data", "name": "served_inputs", "source": "served", "window": WINDOW,
                      "confirm": 2, "cooldown": 2}],
        "retune": {"n_trials": 4, "min_interval": 0, "min_labels": 80, "replay_share": 0.2},
        "serving": {"max_texts": 32},
    }


def _run(store: Store, state_dir: Path, spec: Any) -> None:
    from hpod.core.runner import run_foreground
    from hpod.execution.executor import parse_slots

    outcome = run_foreground(resolve(spec), store=store, state_dir=state_dir, slots=parse_slots(None, 1),
                             console=Console(file=io.StringIO()), codecarbon=False)
    assert not outcome.interrupted


def _predict(client: TestClient, texts: list[str]) -> list[str]:
    out: list[str] = []
    for i in range(0, len(texts), 32):
        r = client.post("/v1/predict", json={"texts": texts[i:i + 32]}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["labels"] == r.json()["predictions"]
        out += r.json()["predictions"]
    return out


def _served_accuracy(holder: Any, records: list[dict[str, str]]) -> float:
    """The served model's accuracy on ``records``, asked of the served predictor itself
    (not through the endpoint, whose inputs feed the monitor)."""
    predictions = holder.current.predictor.predict([r["text"] for r in records])
    return sum(p == r["label"] for p, r in zip(predictions, records, strict=True)) / len(records)


def _traffic(client: TestClient, monitors: MonitorService, records: list[dict[str, str]]) -> list[Any]:
    """Serve ``records``' texts, then let the monitor check every full window."""
    _predict(client, [r["text"] for r in records])
    return monitors.tick()


@pytest.mark.slow
def test_classifier_adapts_to_a_new_domain_through_labelled_feedback(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path)
    spec = parse_spec(_spec())
    store.register_study(spec, state="queued")
    _run(store, tmp_path, spec)

    serving_app = create_serving_app(store, "reviews", state_dir=tmp_path, token=TOKEN, poll_seconds=3600)
    holder = serving_app.state.holder
    api = TestClient(create_app(ApiContext(store=store, token=TOKEN)))
    monitors, policy = MonitorService(store, tmp_path), RetunePolicy(store, tmp_path)
    held_out_b = synthetic_reviews("restaurants", 300, seed=2002)  # never trained on, never posted

    with TestClient(serving_app) as client:
        assert holder.current.selection["study"] == "reviews"
        before = _served_accuracy(holder, held_out_b)

        # held-out domain-A traffic: the reference is A's training data, so no alarm
        checks = _traffic(client, monitors, synthetic_reviews("products", 4 * WINDOW, seed=1001))
        assert len(checks) >= 4 and not any(c.check.fired for c in checks)
        (state,) = monitor_states(store)
        assert state["reference"]["source"] == "training data of reviews" and state["reference"]["size"] == 300

        # traffic switches to domain B: the monitor alarms
        checks = _traffic(client, monitors, synthetic_reviews("restaurants", 4 * WINDOW, seed=3003))
        assert any(c.check.fired for c in checks)

        # no labels yet: the retune waits, visibly, and does not retrain on old data
        (outcome,) = policy.handle_pending()
        assert outcome.action == "waiting" and store.get_study("reviews@v2", missing_ok=True) is None
        (family,) = retune_states(store)
        assert family["waiting"]["state"] == "waiting_for_labels" and family["waiting"]["need"] == 80
        waiting_event = store.events(study="reviews", kinds=["retune_waiting"])[-1]
        assert "does not retrain on the old data" in json.loads(waiting_event.payload_json)["message"]
        assert [w.waiting for w in waiting_snapshots(store)] == [True]

        # the alarm did not adopt B as the reference: held-out A traffic raises no new alarm
        alarms = monitor_states(store)[0]["alarms_total"]
        checks = _traffic(client, monitors, synthetic_reviews("products", 4 * WINDOW, seed=1002))
        assert not any(c.check.fired for c in checks) and monitor_states(store)[0]["alarms_total"] == alarms
        assert policy.handle_pending() == []

        # a bad labelled record is refused whole (4xx naming the record and field); nothing stored
        labelled_b = synthetic_reviews("restaurants", 100, seed=4004)
        bad = [*labelled_b[:3], {"text": "the soup was cold"}, *labelled_b[3:]]
        r = api.post("/v1/studies/reviews/examples", json={"records": bad}, headers=AUTH)
        assert r.status_code == 400 and "records[3]" in r.json()["error"] and "'label'" in r.json()["error"]
        assert store.data_windows("reviews", "labelled") == []

        # labelled B records arrive: the waiting retune starts on them
        r = api.post("/v1/studies/reviews/examples", json={"records": labelled_b}, headers=AUTH)
        assert r.status_code == 201 and r.json()["records"] == 100, r.text
        (started,) = policy.handle_pending()
        assert started.action == "started" and started.child == "reviews@v2"
        data = started.info["data"]
        assert (data["source"], data["train_new"], data["validation"], data["replay"]) == ("labelled", 80, 20, 20)
        child_spec = parse_spec(json.loads(store.get_study("reviews@v2").spec_json))
        assert child_spec.sampler.seed != spec.sampler.seed
        assert retune_states(store)[0]["waiting"] is None

        _run(store, tmp_path, child_spec)
        child_trials = store.load_optuna_study("reviews@v2").get_trials()
        warm = [t for t in child_trials if "hpod.warm_start" in t.user_attrs]
        assert len(warm) == len(started.info["warm_start"]) >= 1  # the parent's front, enqueued once
        keys = [json.dumps(t.params, sort_keys=True) for t in child_trials]
        assert len(keys) == len(set(keys))  # no configuration evaluated twice
        (done,) = policy.handle_pending()
        assert done.action == "completed" and done.info["switched"] is True, done.info
        quality = done.info["quality"]
        assert quality["metric"] == "accuracy" and quality["candidate"] > quality["served"]
        assert "held out from training" in quality["measured_on"]

        # serving follows; the served model is better on held-out B records than before
        assert holder.refresh() is True and holder.current.selection["study"] == "reviews@v2"
        after = _served_accuracy(holder, held_out_b)
        assert before < 0.7 and after > before + 0.2, (before, after)

        # the reference is now the new model's training data (the labelled B window, without the
        # replayed A records): held-out B traffic raises no alarm
        alarms = monitor_states(store)[0]["alarms_total"]
        checks = _traffic(client, monitors, synthetic_reviews("restaurants", 4 * WINDOW, seed=5005))
        (state,) = monitor_states(store)
        assert state["reference"]["source"].startswith("training data of reviews@v2: labelled window(s) [1]")
        assert state["reference"]["size"] == 100
        assert not any(c.check.fired for c in checks) and state["alarms_total"] == alarms
