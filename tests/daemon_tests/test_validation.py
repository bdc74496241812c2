"""Validate everything before writing anything: NaN and infinities, out-of-range numbers,
sampler options, typos in the space, steps, data files: one message naming the field,
CLI exit 2, API 4xx, and no study row, no trial, no file left behind."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from hpod_testing import run_cli

from hpod.errors import SpecError
from hpod.http.api import ApiContext, create_app
from hpod.spec import parse_spec, resolve
from hpod.store import Store

TOKEN = "valid-" + "c" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE: dict[str, Any] = {
    "name": "v-study",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 1},
    "budget": {"n_trials": 2},
}


def _with(path: str, value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(BASE))
    node = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return spec


#: (what is changed, its value, the field the message must name)
BAD = [
    ("space.learning_rate", {"type": "float", "low": math.nan, "high": 1e-3}, "space.learning_rate"),
    ("space.learning_rate", {"type": "float", "low": 1e-5, "high": math.inf}, "space.learning_rate"),
    ("space.dropout", math.nan, "space.dropout"),
    ("reference_point", {"loss": math.inf, "time_seconds": 1.0}, "reference_point.loss"),
    ("objective.params.noise", math.nan, "objective.params.noise"),
    ("budget.timeout_seconds", math.inf, "budget.timeout_seconds"),
    ("sampler.options", {"n_startup_trials": -1}, "sampler.options"),
    ("sampler.options", {"population_size": 5}, "sampler.options.population_size"),
    ("sampler.seed", 10**30, "sampler.seed"),
    ("priority", 10**30, "priority"),
    ("budget.n_trials", 10**20, "budget.n_trials"),
    ("space.learning_rat", {"type": "float", "low": 1e-5, "high": 1e-3}, "space.learning_rat"),
    ("space.dropout", {"type": "float", "low": 0.1, "high": 0.2, "step": 0.5}, "space.dropout"),
    ("space.epochs", {"type": "int", "low": 1, "high": 3, "step": 5}, "space.epochs"),
]


@pytest.mark.parametrize("path,value,field", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_bad_specs_are_refused_naming_the_field(path: str, value: Any, field: str) -> None:
    with pytest.raises(SpecError) as info:
        resolve(parse_spec(_with(path, value)))
    assert str(info.value).startswith(field), str(info.value)


def test_a_space_typo_gets_a_did_you_mean() -> None:
    with pytest.raises(SpecError, match=r"did you mean 'learning_rate'") as info:
        resolve(parse_spec(_with("space.learning_rat", {"type": "float", "low": 1e-5, "high": 1e-3})))
    assert "allowed: alpha, batch_size" in str(info.value)


@pytest.fixture()
def api(tmp_path: Path) -> tuple[TestClient, Store]:
    store = Store.for_state_dir(tmp_path / "state")
    ctx = ApiContext(store=store, token=TOKEN,
                     wait_handled=lambda event_id, timeout: {"ok": True, "message": "handled"})
    return TestClient(create_app(ctx), raise_server_exceptions=False), store


@pytest.mark.parametrize("path,value,field", BAD, ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD])
def test_the_api_answers_422_and_writes_nothing(api: tuple[TestClient, Store], path: str, value: Any,
                                                field: str) -> None:
    client, store = api
    body = json.dumps({"spec": _with(path, value)})  # NaN / Infinity as Python's json writes them
    resp = client.post("/v1/studies", headers={**AUTH, "Content-Type": "application/json"}, content=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"].startswith(field)
    assert store.list_studies() == [] and store.events() == []


def test_out_of_range_query_numbers_are_422_not_500(api: tuple[TestClient, Store]) -> None:
    client, _ = api
    for path in ("/v1/events?after=9223372036854775808", "/v1/events?after=-1",
                 "/v1/studies/x/trials?offset=99999999999999999999999"):
        resp = client.get(path, headers=AUTH)
        assert resp.status_code == 422, (path, resp.text)


def test_a_data_file_lacking_the_summary_field_is_refused_by_the_api(api: tuple[TestClient, Store],
                                                                     tmp_path: Path) -> None:
    client, store = api
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"article": f"text {i}", "headline": "x"}) for i in range(20)) + "\n")
    spec = {**BASE, "objective": {"name": "t5_lora", "params": {
        "model": "tiny", "data": {"source": str(data), "train_size": 10, "val_size": 5}}}}
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": spec})
    assert resp.status_code == 422, resp.text
    assert "highlights" in resp.json()["error"] and str(data.name) in resp.json()["error"]
    assert store.list_studies() == []


@pytest.mark.parametrize("path,value,field", BAD[:8], ids=[f"{p}={v!r}"[:60] for p, v, _ in BAD[:8]])
def test_hpod_run_exits_2_before_creating_anything(tmp_path: Path, path: str, value: Any, field: str) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(_with(path, value)))
    state = tmp_path / "state"
    proc = run_cli(["run", str(spec_file)], state_dir=state)
    assert proc.returncode == 2, proc.stderr
    assert field in proc.stderr and "Traceback" not in proc.stderr
    assert not (state / "hpod.db").exists()


def test_manual_retunes_are_rate_limited_with_retry_after(api: tuple[TestClient, Store]) -> None:
    client, store = api
    spec = {**BASE, "retune": {"min_manual_interval": "10m"}}
    assert client.post("/v1/studies", headers=AUTH, json={"spec": spec}).status_code == 202
    first = client.post("/v1/studies/v-study/retune", headers=AUTH, json={"reason": "new data"})
    assert first.status_code == 200, first.text
    second = client.post("/v1/studies/v-study/retune", headers=AUTH, json={"reason": "again"})
    assert second.status_code == 429, second.text
    assert 0 < int(second.headers["Retry-After"]) <= 600
    assert "retune.min_manual_interval" in second.json()["error"]
    assert len(store.events(kinds=["retune_started"])) == 1
