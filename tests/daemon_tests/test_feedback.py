"""Labelled feedback and monitor references: ``hpod feedback``, ``hpod monitor
set-reference`` and their API routes validate everything before writing one row, and
store versioned windows the retune and the monitors read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hpod.cli._common import app
from hpod.core.feedback import add_examples
from hpod.core.monitoring import MonitorService, monitor_states
from hpod.core.retune import RetunePolicy, retune_states
from hpod.errors import UsageError
from hpod.http.api import ApiContext, create_app
from hpod.objectives.text_classifier import synthetic_reviews
from hpod.spec import parse_spec
from hpod.store import Store

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _store(tmp_path: Path, objective: str = "text_classifier") -> Store:
    store = Store.for_state_dir(tmp_path)
    params = {"data": {"train_size": 60, "val_size": 20}} if objective == "text_classifier" else {}
    spec = parse_spec({"name": "reviews", "objective": {"name": objective, "params": params},
                       "objectives": [{"name": "loss"}], "budget": {"n_trials": 2},
                       "monitors": [{"kind": "data", "name": "inputs", "source": "served", "window": 10}],
                       "retune": {"min_labels": 8, "min_interval": 0}})
    store.register_study(spec, state="completed")
    return store


def _write(path: Path, rows: list[dict], csv: bool = False) -> Path:
    if csv:
        lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(tmp_path: Path, *args: str) -> tuple[int, str]:
    """Exit code and output as ``hpod.cli.main`` gives them (a UsageError: exit 2, its message)."""
    result = CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path)],
                                env={"COLUMNS": "200", "HPOD_API": "127.0.0.1:9"})  # no daemon: the database
    if isinstance(result.exception, UsageError):
        return 2, result.output + str(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("csv", [False, True])
def test_feedback_file_is_one_window_or_nothing(tmp_path: Path, csv: bool) -> None:
    store = _store(tmp_path)
    good = synthetic_reviews("restaurants", 12, seed=1)
    suffix = ".csv" if csv else ".jsonl"
    bad = [*good[:4], {"text": "the soup was cold", "label": ""}, *good[4:]]
    code, output = _cli(tmp_path, "feedback", "reviews", str(_write(tmp_path / f"bad{suffix}", bad, csv)))
    assert code == 2 and f"bad{suffix}:{6 if csv else 5}" in output and "'label' is empty" in output, output
    assert store.data_windows("reviews", "labelled") == []
    code, output = _cli(tmp_path, "feedback", "reviews", str(_write(tmp_path / f"good{suffix}", good, csv)))
    assert code == 0, output
    (window,) = store.data_windows("reviews", "labelled")
    assert window.n_records == 12 and store.window_records([window.id]) == good
    assert retune_states(store)[0]["labels"]["pending_records"] == 12
    code, output = _cli(tmp_path, "feedback", "reviews", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "file not found" in output


def test_feedback_needs_an_objective_that_learns_from_examples(tmp_path: Path) -> None:
    store = _store(tmp_path, objective="synthetic:zdt1")
    code, output = _cli(tmp_path, "feedback", "reviews", str(_write(tmp_path / "a.jsonl",
                                                                    synthetic_reviews("products", 3))))
    assert code == 2 and "cannot train on labelled examples" in output
    assert store.data_windows("reviews", "labelled") == []


def test_api_examples_and_reference(tmp_path: Path) -> None:
    store = _store(tmp_path)
    api = TestClient(create_app(ApiContext(store=store, token=TOKEN)))
    r = api.post("/v1/studies/reviews/examples", json={"records": [{"text": "ok", "label": 3}]}, headers=AUTH)
    assert r.status_code == 422 and "records[0]" in r.json()["error"] and "must be text" in r.json()["error"]
    r = api.post("/v1/studies/nope/examples", json={"records": [{"text": "a", "label": "b"}]}, headers=AUTH)
    assert r.status_code == 404
    assert api.post("/v1/studies/reviews/examples", json={"records": []}, headers=AUTH).status_code == 422
    r = api.post("/v1/studies/reviews/examples", json={"records": synthetic_reviews("products", 5)}, headers=AUTH)
    assert r.status_code == 201 and r.json()["records"] == 5
    assert [w["records"] for w in api.get("/v1/studies/reviews/examples", headers=AUTH).json()] == [5]

    r = api.put("/v1/studies/reviews/monitors/reference", json={"texts": ["too few"]}, headers=AUTH)
    assert r.status_code == 400 and "at least one window's worth (10" in r.json()["error"]
    r = api.put("/v1/studies/reviews/monitors/reference", json={"texts": ["x"] * 10, "monitor": "other"},
                headers=AUTH)
    assert r.status_code == 400 and "no data monitor named 'other'" in r.json()["error"]
    texts = [r["text"] for r in synthetic_reviews("restaurants", 30, seed=3)]
    r = api.put("/v1/studies/reviews/monitors/reference", json={"texts": texts}, headers=AUTH)
    assert r.status_code == 200 and r.json()["monitors"] == ["inputs"]
    MonitorService(store, tmp_path).tick()
    (state,) = monitor_states(store)
    assert state["reference"]["size"] == 30 and state["reference"]["source"].startswith("set via api")


def test_set_reference_cli_is_adopted_and_kept_through_alarms(tmp_path: Path) -> None:
    store = _store(tmp_path)
    monitors = MonitorService(store, tmp_path)
    monitors.tick()
    assert monitor_states(store)[0]["reference"]["source"] == "training data of reviews"
    ref = _write(tmp_path / "ref.jsonl", synthetic_reviews("restaurants", 40, seed=9))
    code, output = _cli(tmp_path, "monitor", "set-reference", "reviews", str(ref))
    assert code == 0, output
    monitors.tick()
    (state,) = monitor_states(store)
    assert state["reference"]["size"] == 40 and "set via cli" in state["reference"]["source"]
    code, output = _cli(tmp_path, "status")
    assert code == 0 and "set via cli" in output, output
    code, output = _cli(tmp_path, "monitor", "set-reference", "reviews", str(ref), "--monitor", "nope")
    assert code == 2 and "no data monitor named 'nope'" in output
    assert len(store.data_windows("reviews", "reference")) == 1


def test_alarm_without_labels_waits_and_starts_when_they_arrive(tmp_path: Path) -> None:
    store = _store(tmp_path)
    policy = RetunePolicy(store, tmp_path, clock=lambda: 1000.0)
    store.append_event("drift_detected", study="reviews", payload={"reason": "drift:data:vocabulary", "kind": "data"})
    (outcome,) = policy.handle_pending()
    assert outcome.action == "waiting" and "0 of 8" in outcome.detail
    store.append_event("drift_detected", study="reviews", payload={"reason": "drift:data:vocabulary", "kind": "data"})
    (again,) = policy.handle_pending()
    assert again.action == "skipped" and again.detail.startswith("waiting_for_labels")
    code, output = _cli(tmp_path, "status")
    assert code == 0 and "waiting_for_labels" in output and "0 of 8" in output, output

    add_examples(store, "reviews", synthetic_reviews("restaurants", 5, seed=2))
    assert policy.handle_pending() == [] and retune_states(store)[0]["waiting"]["have"] == 5
    add_examples(store, "reviews", synthetic_reviews("restaurants", 5, seed=3))
    (started,) = policy.handle_pending()
    assert started.action == "started" and started.info["data"]["windows"] == [1, 2]
    assert started.info["data"]["records"] == 10 and retune_states(store)[0]["waiting"] is None


def test_watched_file_records_become_windows_once(tmp_path: Path) -> None:
    """A path-sourced alarm turns the labelled records the file gained since the last
    alarm into a window; a later alarm never re-reads them as new."""
    store = _store(tmp_path)
    src = tmp_path / "landed.jsonl"
    first = synthetic_reviews("restaurants", 10, seed=1)
    src.write_text("".join(json.dumps(r) + "\n" for r in first) + json.dumps({"text": "unlabelled"}) + "\n")
    policy = RetunePolicy(store, tmp_path, clock=lambda: 1000.0)

    def alarm() -> Any:
        store.append_event("drift_detected", study="reviews", payload={
            "reason": "drift:data", "kind": "data",
            "data": {"path": str(src), "text_field": "text", "offsets": {str(src): src.stat().st_size}}})
        return policy.handle_pending()

    (started,) = alarm()  # 10 labelled records >= min_labels 8
    assert started.action == "started" and started.info["data"]["records"] == 10
    store.update_study("reviews@v2", state="completed")
    policy.check_completed()
    second = synthetic_reviews("restaurants", 3, seed=2)
    with src.open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in second))
    (waiting,) = alarm()
    assert waiting.action == "waiting" and "3 of 8" in waiting.detail
    assert [w.n_records for w in store.data_windows("reviews", "labelled")] == [10, 3]
    assert store.window_records([2]) == second
