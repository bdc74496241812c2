"""The OpenAPI document states the study spec's schema for ``POST /v1/studies`` (the
model the server validates with), so what the schema refuses the server refuses (422,
naming the field) and what the examples hold the schema accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from hpod.http.api import ApiContext, create_app
from hpod.store import Store

jsonschema = pytest.importorskip("jsonschema")  # schemathesis' dependency (the dev extra)

TOKEN = "s" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SPEC: dict[str, Any] = {"name": "schema", "objective": {"name": "synthetic:training_cost"},
                        "objectives": [{"name": "loss"}], "budget": {"n_trials": 2}}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    store = Store.for_state_dir(tmp_path_factory.mktemp("schema"))
    ctx = ApiContext(store=store, token=TOKEN, wait_handled=lambda event_id, timeout: None)
    return TestClient(create_app(ctx), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def validator(client: TestClient) -> Any:
    document = client.get("/openapi.json", headers=AUTH).json()
    body = document["paths"]["/v1/studies"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    schema = {**body, "components": document["components"]}
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_submit_body_documents_the_spec_model(client: TestClient) -> None:
    document = client.get("/openapi.json", headers=AUTH).json()
    spec = document["components"]["schemas"]["StudySpec"]
    assert document["components"]["schemas"]["SubmitRequest"]["properties"]["spec"]["$ref"] == \
        "#/components/schemas/StudySpec"
    assert {"name", "objective", "space", "objectives", "sampler", "budget"} <= set(spec["properties"])
    assert set(spec["required"]) == {"name", "objective", "budget"} and spec["additionalProperties"] is False
    assert "storage" not in spec["properties"]  # the daemon keeps every study in its own database


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_spec_is_valid_under_the_documented_schema(validator: Any, path: Path) -> None:
    spec = yaml.safe_load(path.read_text())
    spec.pop("storage", None)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors({"spec": spec})]
    assert errors == []


REFUSED = [
    ("unknown field", {"colour": "blue"}, "colour"),
    ("wrong type", {"budget": {"n_trials": "many"}}, "budget.n_trials"),
    ("out of range", {"seeds": 0}, "seeds"),
    ("unknown parameter type", {"space": {"rank": {"type": "choice", "choices": [4]}}}, "space.rank.type"),
    ("unknown parameter field", {"space": {"learning_rate": {"type": "float", "low": 1e-5, "hgh": 1e-3}}},
     "space.learning_rate.hgh"),
    ("storage", {"storage": "sqlite:///elsewhere.db"}, "storage"),
    ("budget without a limit", {"budget": {"max_retries": 2}}, "budget"),
    ("unknown sampler", {"sampler": {"name": "cmaes"}}, "sampler.name"),
    ("name with a space", {"name": "two words"}, "name"),
    ("no objective", {"objectives": []}, "objectives"),
    ("adaptive seeds' unknown key", {"seeds": {"max": 3, "sigma": 1}}, "seeds"),
]


@pytest.mark.parametrize(("change", "field"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_what_the_schema_refuses_the_server_refuses_naming_the_field(
        client: TestClient, validator: Any, change: dict[str, Any], field: str) -> None:
    body = {"spec": {**SPEC, **change}}
    assert not validator.is_valid(body)
    resp = client.post("/v1/studies", headers=AUTH, json=body)
    assert resp.status_code == 422 and resp.json()["error"].startswith(field), resp.text


def test_the_adaptive_seeds_form_is_documented_and_accepted(client: TestClient, validator: Any) -> None:
    body = {"spec": {**SPEC, "name": "adaptive", "seeds": {"max": 3, "adaptive": True, "z": 1.5}}}
    assert validator.is_valid(body)
    assert client.post("/v1/studies", headers=AUTH, json=body).status_code == 202
