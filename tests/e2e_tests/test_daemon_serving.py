"""The daemon serves a study whose spec asks for it, once it has a trial to serve."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from daemon_harness import DaemonProcess, free_port, wait_for

pytestmark = pytest.mark.slow


def test_daemon_serves_summaries_when_spec_enables_serving(tmp_path: Path):
    port = free_port()
    spec = {
        "name": "served-demo",
        "objective": {"name": "t5_lora", "params": {
            "model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 64,
            "max_target_length": 24, "max_new_tokens": 12, "data": {"train_size": 16, "val_size": 4}}},
        "space": {"epochs": 1, "batch_size": 8},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 1},
        "serving": {"enabled": True, "address": f"127.0.0.1:{port}", "policy": "min-loss"},
    }
    path = tmp_path / "served.json"
    path.write_text(json.dumps(spec))
    daemon = DaemonProcess(tmp_path).start()
    try:
        daemon.hpod("submit", str(path))
        headers = {"Authorization": f"Bearer {daemon.token}"}
        url = f"http://127.0.0.1:{port}/v1/summarize"

        def answered() -> object:
            try:
                r = httpx.post(url, json={"text": "Officials in Lagos said 12 ferries resumed service on Monday."},
                               headers=headers, timeout=30)
            except httpx.TransportError:
                return None
            return r if r.status_code == 200 else None

        resp = wait_for(answered, 300, "the serving endpoint", daemon)
        assert isinstance(resp.json()["summaries"][0], str) or "summary" in resp.json()
        assert httpx.post(url, json={"text": "x"}, timeout=10).status_code == 401
        status = daemon.get("/v1/status")
        assert any(s["study"] == "served-demo" and s["state"] == "serving" for s in status["serving"])
    finally:
        daemon.close()
