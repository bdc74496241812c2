"""``hpod run`` on a study that the daemon serving the same database is running is
refused (exit 2, one message, nothing written): one controller per study. A daemon that
serves another database, or runs other studies, does not stop it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml
from hpod_testing import fake_daemon_api, run_cli

from hpod.store import Store, default_storage_url

SPEC = {
    "name": "owned",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 3},
    "budget": {"n_trials": 1},
}


class _Daemon:
    status: ClassVar[dict[str, Any]] = {}


@pytest.fixture
def daemon_api() -> Iterator[str]:
    with fake_daemon_api(lambda: _Daemon.status) as api:
        yield api


def test_run_refuses_a_study_the_daemon_runs(tmp_path: Path, daemon_api: str) -> None:
    state = tmp_path / "state"
    Store.for_state_dir(state).close()
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    _Daemon.status = {"daemon": {"version": "fake"}, "storage": default_storage_url(state),
                      "studies": [{"name": "owned", "state": "running"}]}
    proc = run_cli(["run", str(spec), "--state-dir", str(state)], HPOD_API=daemon_api)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "study 'owned' is running in the hpod daemon" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1
    store = Store.for_state_dir(state)
    try:
        assert [row.name for row in store.list_studies()] == []
    finally:
        store.close()

    # The daemon serves another database: this one is ours to run.
    _Daemon.status = {**_Daemon.status, "storage": default_storage_url(tmp_path / "other")}
    proc = run_cli(["run", str(spec), "--state-dir", str(state)], HPOD_API=daemon_api)
    assert proc.returncode == 0, proc.stderr
