"""The control API in-process: token on every route but /healthz and /metrics, JSON
errors a user can act on, size limits, no 500 for malformed input; plus the daemon's
settings (file < environment < flags, token file 0600, systemd credential) and the
scheduling helpers (trial windows, cron retunes, lost workers)."""

from __future__ import annotations

import json
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from hpod.core.monitoring import MonitorService
from hpod.daemon.config import load_config, resolve_token
from hpod.daemon.scheduling import DaemonScheduler, window_open
from hpod.errors import UsageError
from hpod.http.api import ApiContext, create_app
from hpod.spec import parse_spec
from hpod.store import Store

TOKEN = "t0k3n-" + "a" * 40
SPEC = {
    "name": "api-study",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
    "sampler": {"name": "random", "seed": 1},
    "budget": {"n_trials": 3},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store.for_state_dir(tmp_path_factory.mktemp("api"))


@pytest.fixture()
def client(store: Store) -> TestClient:
    registry = CollectorRegistry()
    Counter("hpod_test_things", "A counter for the test.", registry=registry).inc()
    ctx = ApiContext(store=store, token=TOKEN, registry=registry, max_request_bytes=4096,
                     wait_handled=lambda event_id, timeout: {"ok": True, "message": f"handled {event_id}"})
    return TestClient(create_app(ctx), raise_server_exceptions=False)


AUTH = {"Authorization": f"Bearer {TOKEN}"}

PROTECTED = [
    ("GET", "/v1/status"), ("GET", "/v1/studies"), ("POST", "/v1/studies"), ("GET", "/v1/studies/x"),
    ("GET", "/v1/studies/x/trials"), ("GET", "/v1/studies/x/pareto"), ("POST", "/v1/studies/x/pause"),
    ("POST", "/v1/studies/x/resume"), ("POST", "/v1/studies/x/cancel"), ("POST", "/v1/studies/x/retune"),
    ("POST", "/v1/studies/x/observations"), ("GET", "/v1/events"), ("GET", "/openapi.json"),
]


@pytest.mark.parametrize("method,path", PROTECTED)
def test_every_control_route_refuses_requests_without_the_right_token(client: TestClient, method: str,
                                                                     path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN}x"}):
        resp = client.request(method, path, headers=headers, json={"spec": SPEC})
        assert resp.status_code == 401, (method, path, headers, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "token" in resp.json()["error"]


def test_health_and_metrics_need_no_token(client: TestClient) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json()["ready"] is True
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "hpod_test_things_total 1.0" in metrics.text


def test_openapi_schema_lists_the_routes(client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=AUTH).json()
    for path in ("/v1/status", "/v1/studies", "/v1/studies/{name}/pareto", "/v1/studies/{name}/retune",
                 "/v1/events"):
        assert path in schema["paths"]


def test_submit_registers_the_study_and_appends_an_unhandled_event(client: TestClient, store: Store) -> None:
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": SPEC})
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["study"] == "api-study" and body["created"] is True and body["ok"] is True
    assert store.get_study("api-study").state == "queued"
    event = next(e for e in store.events(kinds=["study_submitted"]) if e.id == body["event_id"])
    assert event.handled is False  # the main loop acts on it, then marks it handled
    assert json.loads(event.payload_json)["spec"]["name"] == "api-study"
    # a resubmission is an update, not a second study
    again = client.post("/v1/studies", headers=AUTH, json={"spec": SPEC}).json()
    assert again["created"] is False
    listed = client.get("/v1/studies", headers=AUTH).json()
    assert [s["name"] for s in listed].count("api-study") == 1
    detail = client.get("/v1/studies/api-study", headers=AUTH).json()
    assert detail["spec"]["budget"]["n_trials"] == 3 and detail["trials"] == {}


def test_spec_mistakes_come_back_as_422_naming_the_field(client: TestClient) -> None:
    bad_budget = dict(SPEC, budget={"n_trials": 0})
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": bad_budget})
    assert resp.status_code == 422 and "budget.n_trials" in resp.json()["error"]
    unknown_objective = dict(SPEC, name="x2", objective={"name": "nope:missing"})
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": unknown_objective})
    # not among the allowed objectives: refused before the daemon tries to import it
    assert resp.status_code == 403 and "nope:missing" in resp.json()["error"]
    bad_param = dict(SPEC, name="x3", objective={"name": "synthetic:training_cost", "params": {"noise": -1}})
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": bad_param})
    assert resp.status_code == 422 and "objective.params.noise" in resp.json()["error"]
    clash = dict(SPEC, objectives=[{"name": "loss"}])
    client.post("/v1/studies", headers=AUTH, json={"spec": SPEC})
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": clash})
    assert resp.status_code == 422 and "another name" in resp.json()["error"]


def test_malformed_requests_get_json_4xx_never_500(client: TestClient) -> None:
    cases = [
        ("POST", "/v1/studies", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422),
        ("POST", "/v1/studies", {"content": b"\xff\xfe\x00garbage"}, 422),
        ("POST", "/v1/studies", {"json": {"spec": "a string"}}, 422),
        ("POST", "/v1/studies", {"json": [1, 2, 3]}, 422),
        ("POST", "/v1/studies", {"json": {}}, 422),
        ("POST", "/v1/studies", {"json": {"spec": {"name": "../../etc"}}}, 422),
        ("GET", "/v1/events?after=-1", {}, 422),
        ("GET", "/v1/events?limit=abc", {}, 422),
        ("GET", "/v1/studies/nope", {}, 404),
        ("POST", "/v1/studies/nope/pause", {}, 404),
        ("POST", "/v1/studies/api-study/retune", {"json": {"reason": ""}}, 422),
        ("GET", "/v1/nothing-here", {}, 404),
        ("DELETE", "/v1/studies", {}, 405),
        ("POST", "/v1/studies", {"content": b"x" * 5000}, 413),
        ("POST", "/v1/studies", {"content": b"x", "headers": {"content-length": "99999999999"}}, 413),
    ]
    for method, path, kwargs, expected in cases:
        headers = {**AUTH, **kwargs.pop("headers", {})}
        resp = client.request(method, path, headers=headers, **kwargs)
        assert resp.status_code == expected, (method, path, resp.status_code, resp.text)
        assert resp.json()["error"], (method, path)


def test_an_unexpected_error_is_a_json_500_and_the_api_keeps_serving(store: Store) -> None:
    def broken_status() -> dict:
        raise RuntimeError("boom")

    app = create_app(ApiContext(store=store, token=TOKEN, status=broken_status))
    client = TestClient(app, raise_server_exceptions=False)
    resp = client.get("/v1/status", headers=AUTH)
    assert resp.status_code == 500
    assert "RuntimeError" in resp.json()["error"] and "log" in resp.json()["error"]
    assert client.get("/healthz").status_code == 200


def test_actions_append_events_and_report_the_outcome(client: TestClient, store: Store) -> None:
    client.post("/v1/studies", headers=AUTH, json={"spec": SPEC})
    for action, kind in (("pause", "study_paused"), ("resume", "study_resumed"), ("cancel", "study_cancelled")):
        body = client.post(f"/v1/studies/api-study/{action}", headers=AUTH).json()
        assert body["handled"] is True and body["message"] == f"handled {body['event_id']}"
        assert store.events(kinds=[kind])[-1].id == body["event_id"]
    body = client.post("/v1/studies/api-study/retune", headers=AUTH, json={"reason": "new data landed"}).json()
    event = store.events(kinds=["retune_started"])[-1]
    assert event.id == body["event_id"] and event.study == "api-study"
    assert json.loads(event.payload_json) == {"reason": "manual", "note": "new data landed", "by": "api"}
    events = client.get("/v1/events", headers=AUTH, params={"study": "api-study"}).json()
    assert [e["kind"] for e in events][-1] == "retune_started"
    after = client.get("/v1/events", headers=AUTH, params={"after": events[-2]["id"]}).json()
    assert [e["id"] for e in after] == [events[-1]["id"]]


# ---------------------------------------------------------------------------- settings


def test_settings_flags_override_environment_override_file(tmp_path: Path) -> None:
    toml = tmp_path / "hpod.toml"
    toml.write_text(f'state_dir = "{tmp_path / "s"}"\napi = "127.0.0.1:1111"\nmetrics = "127.0.0.1:2222"\n'
                    'cpu_slots = 3\ngrace_seconds = 5\ngpus = [0, 1]\n')
    cfg = load_config(toml, env={})
    assert (cfg.api, cfg.metrics, cfg.cpu_slots, cfg.grace_seconds, cfg.gpus) == \
        ("127.0.0.1:1111", "127.0.0.1:2222", 3, 5.0, "0,1")
    env = {"HPOD_API": "unix:/run/hpod.sock", "HPOD_METRICS": "127.0.0.1:3333", "HPOD_CPU_SLOTS": "2"}
    cfg = load_config(toml, env=env)
    assert (cfg.api, cfg.metrics, cfg.cpu_slots) == ("unix:/run/hpod.sock", "127.0.0.1:3333", 2)
    cfg = load_config(toml, env=env, overrides={"api": "127.0.0.1:4444", "cpu_slots": 0, "metrics": None})
    assert (cfg.api, cfg.metrics, cfg.cpu_slots) == ("127.0.0.1:4444", "127.0.0.1:3333", 0)
    yaml_file = tmp_path / "hpod.yaml"
    yaml_file.write_text(f"daemon:\n  state_dir: {tmp_path}\n  spec_dir: {tmp_path / 'specs'}\n")
    assert load_config(yaml_file, env={}).spec_dir == tmp_path / "specs"


def test_the_deploy_example_settings_file_loads(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy/hpod.toml.example"
    cfg = load_config(example, env={"HPOD_STATE_DIR": str(tmp_path)})
    assert (cfg.api, cfg.metrics, cfg.grace_seconds, cfg.state_dir) == \
        ("127.0.0.1:8765", "127.0.0.1:9464", 300.0, tmp_path)


@pytest.mark.parametrize("content,env,message", [
    ("colour = 'blue'\n", {}, "unknown setting 'colour'"),
    ("cpu_slots = -1\n", {}, "cpu_slots"),
    ("", {"HPOD_API": "localhost"}, "environment: setting 'api'"),
    ("metrics = 'unix:/x'\n", {}, "metrics"),
    ("grace_seconds = 'soon'\n", {}, "grace_seconds"),
    ("api = [1\n", {}, "invalid TOML"),
])
def test_bad_settings_name_the_key_and_where_it_came_from(tmp_path: Path, content: str, env: dict,
                                                          message: str) -> None:
    path = tmp_path / "hpod.toml"
    path.write_text(content)
    with pytest.raises(UsageError, match=message):
        load_config(path, env={"HPOD_STATE_DIR": str(tmp_path), **env})
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "missing.toml", env={})


def test_token_file_is_created_0600_once_and_the_credential_wins(tmp_path: Path) -> None:
    cfg = load_config(None, env={"HPOD_STATE_DIR": str(tmp_path / "state")})
    token, path = resolve_token(cfg, env={})
    assert path == tmp_path / "state" / "token" and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_token(cfg, env={}) == (token, path)  # kept across restarts
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "hpod-token").write_text("credential-token-0123456789\n")
    assert resolve_token(cfg, env={"CREDENTIALS_DIRECTORY": str(creds)}) == \
        ("credential-token-0123456789", creds / "hpod-token")
    explicit = load_config(None, env={"HPOD_STATE_DIR": str(tmp_path), "HPOD_TOKEN_FILE": str(tmp_path / "t")})
    (tmp_path / "t").write_text("")
    with pytest.raises(UsageError, match="empty"):
        resolve_token(explicit, env={"CREDENTIALS_DIRECTORY": str(creds)})


# ---------------------------------------------------------------------------- scheduling


@pytest.mark.parametrize("window,hhmm,inside", [
    ("22:00-06:00", "23:30", True), ("22:00-06:00", "05:59", True), ("22:00-06:00", "06:00", False),
    ("22:00-06:00", "12:00", False), ("09:00-17:00", "09:00", True), ("09:00-17:00", "17:00", False),
    (None, "03:00", True),
])
def test_trial_window(window: str | None, hhmm: str, inside: bool) -> None:
    now = datetime.fromisoformat(f"2026-03-01T{hhmm}:00")
    assert window_open(window, now=now) is inside


def test_cron_schedule_records_a_retune_event_and_reports_the_next_run(store: Store) -> None:
    spec = parse_spec({**SPEC, "name": "cron-study", "schedule": {"cron": "* * * * *"}})
    sched = DaemonScheduler(store)
    sched.set_study_schedule(spec.name, spec.schedule)
    nxt = sched.next_run(spec.name)
    assert nxt is not None and time.time() < nxt <= time.time() + 61
    sched._scheduled_retune(spec.name)  # what the cron trigger runs
    event = store.events(kinds=["retune_started"], study="cron-study")[-1]
    assert json.loads(event.payload_json)["reason"] == "schedule" and event.handled is False
    sched.remove_study(spec.name)
    assert sched.next_run(spec.name) is None


def test_a_silent_worker_is_marked_lost_with_an_event(store: Store) -> None:
    store.heartbeat_worker("node9:123", slots=2, state="busy", current=["s#1"])
    store.heartbeat_worker("self:1", slots=1, state="idle", current=[])
    time.sleep(0.05)
    assert store.mark_workers_lost(older_than=0.01, exclude="self:1") == ["node9:123"]
    states = {w.name: w.state for w in store.workers()}
    assert states["node9:123"] == "lost" and states["self:1"] == "idle"
    event = store.events(kinds=["worker_lost"])[-1]
    assert json.loads(event.payload_json)["worker"] == "node9:123"
    assert store.mark_workers_lost(older_than=0.01, exclude="self:1") == []  # once


def test_observations_reach_the_study_monitor_and_bad_ones_are_400(store: Store) -> None:
    spec = {**SPEC, "name": "observed", "monitors": [
        {"kind": "performance", "name": "val_loss", "source": {"type": "observations", "metric": "loss"}}]}
    monitors = MonitorService(store)
    app = create_app(ApiContext(store=store, token=TOKEN, add_observations=monitors.add_observations))
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/v1/studies", headers=AUTH, json={"spec": spec}).status_code == 202
    resp = client.post("/v1/studies/observed/observations", headers=AUTH,
                       json={"monitor": "val_loss", "items": [0.5, 0.52, 0.49]})
    assert resp.status_code == 202 and resp.json()["accepted"] == 3
    for body, status, words in (
        ({"monitor": "nope", "items": [1.0]}, 400, "nope"),
        ({"monitor": "val_loss", "items": ["text"]}, 400, "items[0]"),
        ({"monitor": "val_loss", "items": []}, 422, "items"),
    ):
        resp = client.post("/v1/studies/observed/observations", headers=AUTH, json=body)
        assert resp.status_code == status and words in resp.json()["error"], resp.text
