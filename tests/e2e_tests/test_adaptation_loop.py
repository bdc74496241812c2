"""The adaptation loop, end to end on CPU, for two objectives through the same
capabilities: the offline ``text_classifier`` (product reviews -> restaurant reviews)
and the tiny offline ``t5_lora`` (news -> sports reports).

A study trained on domain A is served; traffic switches to domain B; the data monitor
alarms; with no labels the retune waits and says so (and held-out A traffic raises no
new alarm: the reference stays the served model's training data); labelled B records
are posted; the retune trains on them; serving switches; the served model is better on
held-out B records than before; afterwards neither held-out B traffic nor held-out A
traffic raises an alarm (the reference followed the switch: it is the new model's
training data, the replayed A records and the labelled B records, and each window is
judged against the part it resembles).

Every component is the daemon's own (serving app, control API, MonitorService,
RetunePolicy, the controller via ``run_foreground``); the test drives their ticks
itself instead of waiting on the daemon's timers, so it asserts on states, not times."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rich.console import Console

from hpod.core.monitoring import MonitorService, monitor_states
from hpod.core.retune import RetunePolicy, retune_states, waiting_snapshots
from hpod.http.api import ApiContext, create_app
from hpod.http.serving import create_serving_app
from hpod.objectives.t5_lora.data import synthetic_corpus
from hpod.objectives.t5_lora.metrics import summary_metrics
from hpod.objectives.text_classifier import synthetic_reviews
from hpod.spec import parse_spec, resolve
from hpod.store import Store

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Task:
    """One objective's loop: its spec, documents of both domains (``docs(domain, n,
    seed)`` -> labelled records; seeds here are never the training data's), its fields
    and how quality is measured on held-out records."""

    spec: dict[str, Any]
    docs: Callable[[str, int, int], list[dict[str, str]]]
    domains: tuple[str, str]
    fields: tuple[str, str]
    quality: Callable[[list[str], list[str]], float]
    window: int
    labelled: int
    held_out: int
    prediction_name: str
    gain: float


def _classifier() -> Task:
    window = 40
    return Task(
        spec={
            "name": "reviews",
            "objective": {"name": "text_classifier",
                          "params": {"data": {"source": "synthetic:products", "train_size": 300, "val_size": 100}}},
            "objectives": [{"name": "loss"}],
            "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": 4},
            "space": {"learning_rate": {"type": "float", "low": 0.3, "high": 3.0, "log": True},
                      "epochs": {"type": "int", "low": 8, "high": 20}},
            "monitors": [{"kind": "data", "name": "served_inputs", "source": "served", "window": window,
                          "confirm": 2, "cooldown": 2}],
            "retune": {"n_trials": 4, "min_interval": 0, "min_labels": 80, "replay_share": 0.2},
            "serving": {"max_texts": 32},
        },
        docs=lambda domain, n, seed: synthetic_reviews(domain, n, seed=seed),
        domains=("products", "restaurants"), fields=("text", "label"),
        quality=lambda p, r: sum(a == b for a, b in zip(p, r, strict=True)) / len(r),
        window=window, labelled=100, held_out=300, prediction_name="labels", gain=0.2)


def _t5() -> Task:
    window = 16
    # 10 epochs: on 256 sports records LoRA reaches ROUGE-2 ~0.5 on held-out reports; 3 epochs
    # only ~0.08-0.18 (benchmarks/results/tiny_t5.md)
    fixed = {"batch_size": 8, "epochs": 10, "rank": 8, "alpha": 16, "dropout": 0.1}
    return Task(
        spec={
            "name": "news",
            "objective": {"name": "t5_lora", "params": {"model": "tiny", "cpu_threads": 1,
                                                        "data": {"train_size": 64, "val_size": 8}}},
            "objectives": [{"name": "loss"}],
            "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": 1},
            "space": {"learning_rate": {"type": "float", "low": 2e-3, "high": 4e-3, "log": True}, **fixed},
            "monitors": [{"kind": "data", "name": "served_inputs", "source": "served", "window": window,
                          "confirm": 2, "cooldown": 2}],
            "retune": {"n_trials": 2, "min_interval": 0, "min_labels": 200, "replay_share": 0.1,
                       "validation_share": 0.1},
            "serving": {"max_texts": 32},
        },
        docs=lambda domain, n, seed: [{"article": e.text, "highlights": e.summary}
                                      for e in synthetic_corpus(n, seed=seed, domain=domain)],
        domains=("news", "sports"), fields=("article", "highlights"),
        quality=lambda p, r: summary_metrics(p, r)["rouge2"],
        window=window, labelled=256, held_out=48, prediction_name="summaries", gain=0.15)


def _run(store: Store, state_dir: Path, spec: Any) -> None:
    from hpod.core.runner import run_foreground
    from hpod.execution.executor import parse_slots

    outcome = run_foreground(resolve(spec), store=store, state_dir=state_dir, slots=parse_slots(None, 1),
                             console=Console(file=io.StringIO()), codecarbon=False)
    assert not outcome.interrupted


def _loop(tmp_path: Path, task: Task) -> None:
    a, b = task.domains
    field_in, field_out = task.fields
    name = task.spec["name"]
    store = Store.for_state_dir(tmp_path)
    spec = parse_spec(task.spec)
    store.register_study(spec, state="queued")
    _run(store, tmp_path, spec)

    serving_app = create_serving_app(store, name, state_dir=tmp_path, token=TOKEN, poll_seconds=3600)
    holder = serving_app.state.holder
    api = TestClient(create_app(ApiContext(store=store, token=TOKEN)))
    monitors, policy = MonitorService(store, tmp_path), RetunePolicy(store, tmp_path)
    held_out_b = task.docs(b, task.held_out, 2002)  # never trained on, never posted

    def served_quality() -> float:
        # asked of the served predictor itself (the endpoint's inputs feed the monitor)
        predictions = holder.current.predictor.predict([r[field_in] for r in held_out_b])
        return task.quality(predictions, [r[field_out] for r in held_out_b])

    def traffic(client: TestClient, records: list[dict[str, str]]) -> list[Any]:
        texts = [r[field_in] for r in records]
        for i in range(0, len(texts), 32):
            r = client.post("/v1/predict", json={"texts": texts[i:i + 32]}, headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()[task.prediction_name] == r.json()["predictions"]
        return monitors.tick()

    with TestClient(serving_app) as client:
        assert holder.current.selection["study"] == name
        before = served_quality()

        # held-out domain-A traffic: the reference is A's training data, so no alarm
        checks = traffic(client, task.docs(a, 4 * task.window, 1001))
        assert len(checks) >= 4 and not any(c.check.fired for c in checks)
        (state,) = monitor_states(store)
        assert state["reference"]["source"] == f"training data of {name}"

        # traffic switches to domain B: the monitor alarms
        checks = traffic(client, task.docs(b, 4 * task.window, 3003))
        assert any(c.check.fired for c in checks)

        # no labels yet: the retune waits, visibly, and does not retrain on old data
        (outcome,) = policy.handle_pending()
        assert outcome.action == "waiting" and store.get_study(f"{name}@v2", missing_ok=True) is None
        (family,) = retune_states(store)
        assert family["waiting"]["state"] == "waiting_for_labels"
        waiting_event = store.events(study=name, kinds=["retune_waiting"])[-1]
        assert "does not retrain on the old data" in json.loads(waiting_event.payload_json)["message"]
        assert [w.waiting for w in waiting_snapshots(store)] == [True]

        # the alarm did not adopt B as the reference: held-out A traffic raises no new alarm
        alarms = monitor_states(store)[0]["alarms_total"]
        checks = traffic(client, task.docs(a, 4 * task.window, 1002))
        assert not any(c.check.fired for c in checks) and monitor_states(store)[0]["alarms_total"] == alarms
        assert policy.handle_pending() == []

        # a bad labelled record is refused whole (4xx naming the record and field); nothing stored
        labelled_b = task.docs(b, task.labelled, 4004)
        bad = [*labelled_b[:3], {field_in: "a record without its reference output"}, *labelled_b[3:]]
        r = api.post(f"/v1/studies/{name}/examples", json={"records": bad}, headers=AUTH)
        assert r.status_code == 422 and "records[3]" in r.json()["error"] and repr(field_out) in r.json()["error"]
        assert store.data_windows(name, "labelled") == []

        # labelled B records arrive: the waiting retune starts on them
        r = api.post(f"/v1/studies/{name}/examples", json={"records": labelled_b}, headers=AUTH)
        assert r.status_code == 201 and r.json()["records"] == task.labelled, r.text
        (started,) = policy.handle_pending()
        assert started.action == "started" and started.child == f"{name}@v2"
        data = started.info["data"]
        assert data["source"] == "labelled" and data["train_new"] + data["validation"] == task.labelled
        assert data["replay"] >= 1
        child_spec = parse_spec(json.loads(store.get_study(f"{name}@v2").spec_json))
        assert child_spec.sampler.seed != spec.sampler.seed
        assert retune_states(store)[0]["waiting"] is None

        _run(store, tmp_path, child_spec)
        child_trials = store.load_optuna_study(f"{name}@v2").get_trials()
        warm = [t for t in child_trials if "hpod.warm_start" in t.user_attrs]
        assert len(warm) == len(started.info["warm_start"]) >= 1  # the parent's front, enqueued once
        keys = [json.dumps(t.params, sort_keys=True) for t in child_trials]
        assert len(keys) == len(set(keys))  # no configuration evaluated twice
        (done,) = policy.handle_pending()
        assert done.action == "completed" and done.info["switched"] is True, done.info
        quality = done.info["quality"]
        assert quality["candidate"] > quality["served"]
        assert "held out from training" in quality["measured_on"]

        # serving follows; the served model is better on held-out B records than before
        assert holder.refresh() is True and holder.current.selection["study"] == f"{name}@v2"
        after = served_quality()
        print(f"{name}: served quality on held-out B records {before:.3f} -> {after:.3f}")
        assert after > before + task.gain, (before, after)

        # the reference is now the new model's training data (the replayed A records and the
        # labelled B records): neither held-out B nor held-out A traffic raises an alarm
        alarms = monitor_states(store)[0]["alarms_total"]
        checks = traffic(client, task.docs(b, 4 * task.window, 5005))
        (state,) = monitor_states(store)
        assert state["reference"]["source"].startswith(
            f"training data of {name}@v2: {data['replay']} records replayed from {name}'s training data + "
            f"{task.labelled} labelled records of window(s) [1]")
        assert state["reference"]["size"] == task.labelled + data["replay"]
        assert len(checks) >= 4 and not any(c.check.fired for c in checks) and state["alarms_total"] == alarms
        checks = traffic(client, task.docs(a, 4 * task.window, 6006))
        assert len(checks) >= 4 and not any(c.check.fired for c in checks)
        assert monitor_states(store)[0]["alarms_total"] == alarms


@pytest.mark.slow
def test_classifier_adapts_to_a_new_domain_through_labelled_feedback(tmp_path: Path) -> None:
    _loop(tmp_path, _classifier())


@pytest.mark.slow
@pytest.mark.timeout(3600)  # three LoRA trials (and the session's tiny base when no test built it yet)
def test_t5_lora_adapts_to_a_new_domain_through_labelled_feedback(tmp_path: Path, tiny_t5_cache: Path) -> None:
    # the daemon's cache under the state dir starts with the session's tiny base (built once per session)
    shutil.copytree(tiny_t5_cache / "t5_lora", tmp_path / "cache" / "t5_lora")
    _loop(tmp_path, _t5())
