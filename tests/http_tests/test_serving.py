"""``POST /v1/summarize`` on a real server with the tiny T5: the adapter is swapped
under a concurrent client loop with zero failed requests; bad requests get 4xx."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hpod_testing import wait_for

from hpod.monitors.drift import DEFAULT_BUCKETS
from hpod.spec import parse_spec
from hpod.store import Store

TOKEN = "test-token-0123456789"
PARAMS = {"model": "tiny", "base_steps": 10, "max_new_tokens": 8, "cpu_threads": 1,
          "data": {"train_size": 8, "val_size": 2}}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import optuna
    import uvicorn

    from hpod.http.serving import create_serving_app
    from hpod.objectives.t5_lora.model import apply_lora, load_base_model
    from hpod.objectives.t5_lora.options import parse_options

    root = tmp_path_factory.mktemp("serving")
    cache = root / "cache"
    dirs = []
    for rank in (4, 8):  # two adapters of the tiny base: what a retune would switch between
        base, _, _ = load_base_model(parse_options(PARAMS), cache)
        out = root / f"trial-rank{rank}"
        apply_lora(base, rank=rank, alpha=16, dropout=0.0, target_modules=["q", "v"]).save_pretrained(out)
        dirs.append(out)
    store = Store.for_state_dir(root)
    spec = parse_spec({"name": "sum", "objective": {"name": "t5_lora", "params": PARAMS},
                       "objectives": [{"name": "loss"}], "budget": {"n_trials": 2},
                       "monitors": [{"kind": "data", "name": "served_inputs", "window": 20}],
                       "serving": {"max_body_bytes": 4096, "max_texts": 4}})
    store.register_study(spec, state="completed")
    study = store.load_optuna_study("sum")
    dist = {"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)}
    for loss, d in zip((0.9, 1.1), dirs):
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": 1e-3}, distributions=dist, values=[loss],
                                                  user_attrs={"hpod.info": {"artifact_dir": str(d)}}))
    app = create_serving_app(store, "sum", state_dir=root, token=TOKEN, poll_seconds=0.2, cache_dir=cache)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the serving app to listen", interval=0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield {"url": f"http://127.0.0.1:{port}", "store": store, "app": app, "dirs": dirs}
    server.should_exit = True
    thread.join(timeout=10)


def _client(url: str, token: str = TOKEN) -> Any:
    import httpx

    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_swap_under_concurrent_load_drops_nothing(served: dict[str, Any]) -> None:
    from hpod.core.selection import current_serving

    store, holder = served["store"], served["app"].state.holder
    assert current_serving(store, "sum")["trial"] == 0  # min-loss picked the 0.9 trial
    results: list[tuple[int, Any]] = []
    stop = threading.Event()

    def loop() -> None:
        with _client(served["url"]) as client:
            while not stop.is_set():
                try:
                    r = client.post("/v1/summarize", json={"texts": ["7 bridges were closed in Oslo after a storm."]})
                    results.append((r.status_code, r.json().get("model", {}).get("trial")))
                except Exception as exc:  # a dropped connection counts as a failed request
                    results.append((0, repr(exc)))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: len(results) >= 6, 45, "six answers before the swap", interval=0.05)
    swaps_before = holder.swaps
    # what RetunePolicy does when a retune wins: the poll thread loads it, then swaps
    store.put_state("sum", "serving", {**current_serving(store, "sum"), "trial": 1,
                                       "artifact_dir": str(served["dirs"][1])})
    wait_for(lambda: holder.swaps != swaps_before and sum(1 for _, trial in results if trial == 1) >= 6, 45,
             "the swap and six answers from the new trial", interval=0.05)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert results and all(code == 200 for code, _ in results), [r for r in results if r[0] != 200][:3]
    trials = [trial for _, trial in results]
    assert 0 in trials and 1 in trials and trials[-1] == 1
    # served inputs reached the data monitor's queue as features only
    with store.session() as s:
        rows = [r[0] for r in s.connection().exec_driver_sql(
            "SELECT value_json FROM hpod_observations WHERE channel = 'served'")]
    assert len(rows) >= len(results) - 3 and not any("bridges" in v for v in rows)
    assert json.loads(rows[0])["features"][str(DEFAULT_BUCKETS)]["n_tokens"] > 0


@pytest.mark.parametrize(("body", "status", "message"), [
    (b'{"texts": ["' + b"x" * 5000 + b'"]}', 413, "max_body_bytes=4096"),
    (b'{"texts": ["unterminated', 400, "not JSON"),
    (b'["a list"]', 422, "JSON object"),
    (b'{"texts": []}', 422, "non-empty list"),
    (b'{"texts": ["a", 3]}', 422, "texts[1] must be a non-empty string"),
    (b'{"texts": ["a", "b", "c", "d", "e"]}', 422, "max_texts=4"),
    (b'{"prompt": "a"}', 422, "unknown field"),
], ids=["oversized", "malformed", "not-object", "empty", "not-string", "too-many", "unknown-field"])
def test_bad_requests_get_a_clear_4xx(served: dict[str, Any], body: bytes, status: int, message: str) -> None:
    with _client(served["url"]) as client:
        r = client.post("/v1/summarize", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status and message in r.json()["detail"]


def test_token_is_required(served: dict[str, Any]) -> None:
    with _client(served["url"], token="wrong") as client:
        r = client.post("/v1/summarize", json={"text": "hello"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    import httpx

    assert httpx.post(served["url"] + "/v1/summarize", json={"text": "hello"}).status_code == 401
    with _client(served["url"]) as client:
        r = client.post("/v1/summarize", json={"text": "5 ports were sold in Lima."})
        assert r.status_code == 200 and isinstance(r.json()["summaries"][0], str)
