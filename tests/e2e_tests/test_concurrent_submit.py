"""Eight tiny ``t5_lora`` studies submitted to a running daemon at the same moment
prepare their shared base exactly once, and every one of them then runs its trial
(counted from the base's build log and the daemon's events, never from times)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import DaemonProcess, wait_for

from hpod.objectives.prepared import BUILD_LOG

pytestmark = pytest.mark.slow

STUDIES = 8


def _spec(i: int) -> dict[str, Any]:
    return {
        "name": f"tiny-{i}",
        "objective": {"name": "t5_lora", "params": {
            "model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 64, "max_target_length": 24,
            "max_new_tokens": 8, "data": {"train_size": 8, "val_size": 2, "synthetic_seed": 100 + i}}},
        "space": {"epochs": 1, "batch_size": 8},
        "objectives": [{"name": "loss"}],
        "sampler": {"name": "random", "seed": i},
        "budget": {"n_trials": 1},
    }


@pytest.mark.timeout(1800)
def test_eight_studies_submitted_at_once_prepare_the_base_once(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path).start()
    try:
        headers = {"Authorization": f"Bearer {daemon.token}"}
        barrier = threading.Barrier(STUDIES)
        answers: list[httpx.Response | BaseException] = []

        def submit(i: int) -> None:
            barrier.wait()
            try:
                answers.append(httpx.post(f"{daemon.api_url}/v1/studies", json={"spec": _spec(i)}, headers=headers,
                                          timeout=240))
            except httpx.HTTPError as exc:
                answers.append(exc)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(STUDIES)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert [a.status_code if isinstance(a, httpx.Response) else repr(a) for a in answers] == [202] * STUDIES, \
            [a.text if isinstance(a, httpx.Response) else repr(a) for a in answers]

        def all_completed() -> bool:
            return all(daemon.study(f"tiny-{i}")["state"] == "completed" for i in range(STUDIES))

        wait_for(all_completed, 1500, "every study to run its trial", daemon)
        log = daemon.state_dir / "cache" / "t5_lora" / BUILD_LOG
        builds = [json.loads(line) for line in log.read_text().splitlines()]
        assert [b["directory"] for b in builds] == [builds[0]["directory"]], builds  # built once
        started = {e["study"] for e in daemon.events("trial_started")}
        assert started == {f"tiny-{i}" for i in range(STUDIES)}
        # each study completed its trial, on the one shared base
        for i in range(STUDIES):
            assert daemon.study(f"tiny-{i}")["trials"].get("COMPLETE") == 1, daemon.study(f"tiny-{i}")
    finally:
        daemon.close()
