"""The control API in-process: token on every route but /healthz and /metrics, JSON
errors a user can act on, size limits, no 500 for malformed input. (The daemon's
settings and scheduling helpers are in tests/daemon_tests.)"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from hpod.core.monitoring import MonitorService
from hpod.http.api import ApiContext, create_app
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


@pytest.mark.parametrize("state,action,words", [
    ("cancelled", "resume", "submit its spec again"),
    ("completed", "resume", "larger budget"),
    ("cancelled", "cancel", "already cancelled"),
    ("completed", "pause", "nothing to pause"),
    ("completed", "cancel", "nothing to cancel"),
])
def test_an_action_the_studys_state_does_not_take_is_409_and_writes_no_event(
        client: TestClient, store: Store, state: str, action: str, words: str) -> None:
    name = f"done-{state}-{action}"
    client.post("/v1/studies", headers=AUTH, json={"spec": {**SPEC, "name": name}})
    store.update_study(name, state=state)
    before = [e.id for e in store.events(study=name)]
    resp = client.post(f"/v1/studies/{name}/{action}", headers=AUTH)
    assert resp.status_code == 409, resp.text
    assert words in resp.json()["error"] and state in resp.json()["error"]
    assert [e.id for e in store.events(study=name)] == before
    assert store.get_study(name).state == state
