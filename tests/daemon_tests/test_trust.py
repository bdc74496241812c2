"""What a token holder can make the daemon run: only the objectives its
``allowed_objectives`` lists. Anything else is refused with 403 before it is imported,
so neither a module's import-time code nor a callable's constructor ever runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hpod.daemon.config import load_config
from hpod.errors import ObjectiveNotAllowed, UsageError
from hpod.http.api import ApiContext, create_app
from hpod.objectives.base import DEFAULT_ALLOWED_OBJECTIVES, check_objective_allowed
from hpod.store import Store

TOKEN = "trust-" + "b" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _client(store: Store, allowed: tuple[str, ...] = DEFAULT_ALLOWED_OBJECTIVES) -> TestClient:
    ctx = ApiContext(store=store, token=TOKEN, allowed_objectives=allowed,
                     wait_handled=lambda event_id, timeout: {"ok": True, "message": "handled"})
    return TestClient(create_app(ctx), raise_server_exceptions=False)


def _spec(name: str, objective: dict) -> dict:
    return {"name": name, "objective": objective, "objectives": [{"name": "loss"}],
            "sampler": {"name": "random"}, "budget": {"n_trials": 2}}


def test_a_callable_with_a_side_effect_is_refused_403_and_never_runs(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path / "state")
    pwned = tmp_path / "pwned.txt"
    client = _client(store)
    resp = client.post("/v1/studies", headers=AUTH, json={"spec": _spec("evil", {
        "name": "subprocess:Popen", "params": {"args": f"id > {pwned}", "shell": True}})})
    assert resp.status_code == 403, resp.text
    error = resp.json()["error"]
    assert error.startswith("objective.name:") and "'subprocess:Popen'" in error
    assert "allowed_objectives" in error and "synthetic:training_cost" in error
    assert not pwned.exists(), "the command ran"
    assert store.get_study("evil", missing_ok=True) is None
    assert store.events(study="evil") == []


def test_a_module_with_import_time_code_is_refused_before_it_is_imported(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "imported.txt"
    (tmp_path / "hpod_trust_probe.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n\ndef objective(params):\n    return {{'loss': 0.0}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    store = Store.for_state_dir(tmp_path / "state")
    resp = _client(store).post("/v1/studies", headers=AUTH,
                               json={"spec": _spec("probe", {"name": "hpod_trust_probe:objective"})})
    assert resp.status_code == 403, resp.text
    assert not marker.exists() and "hpod_trust_probe" not in sys.modules
    assert store.get_study("probe", missing_ok=True) is None


def test_modules_the_operator_lists_are_accepted(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path / "state")
    client = _client(store, allowed=("builtin", "hpod_test_objectives"))
    resp = client.post("/v1/studies", headers=AUTH,
                       json={"spec": _spec("mine", {"name": "hpod_test_objectives:busy"})})
    assert resp.status_code == 202, resp.text
    assert store.get_study("mine") is not None
    # a built-in stays allowed; a module outside the list does not
    assert client.post("/v1/studies", headers=AUTH, json={"spec": _spec("cost", {
        "name": "synthetic:training_cost"})}).status_code == 202
    assert client.post("/v1/studies", headers=AUTH, json={"spec": _spec("other", {
        "name": "hpod_worker_objectives:NeedsPrepare"})}).status_code == 403


@pytest.mark.parametrize("name,allowed,ok", [
    ("synthetic:zdt1", ("builtin",), True),
    ("synthetic:zdt1", ("entry-points",), False),
    ("mylab.objectives:train", ("mylab",), True),
    ("mylab.objectives.deep:train", ("mylab.objectives",), True),
    ("mylabx.objectives:train", ("mylab",), False),
    ("mylab.objectives:other", ("mylab.objectives:train",), False),
    ("mylab.objectives:train", ("mylab.objectives:train",), True),
    ("os:system", ("builtin", "entry-points"), False),
    ("t5_lora", (), False),
])
def test_allowed_objectives_entries(name: str, allowed: tuple[str, ...], ok: bool) -> None:
    if ok:
        check_objective_allowed(name, allowed)
    else:
        with pytest.raises(ObjectiveNotAllowed, match=r"objective\.name"):
            check_objective_allowed(name, allowed)


def test_allowed_objectives_setting_from_file_and_environment(tmp_path: Path) -> None:
    assert load_config(None, env={"HPOD_STATE_DIR": str(tmp_path)}).allowed_objectives == DEFAULT_ALLOWED_OBJECTIVES
    env = {"HPOD_STATE_DIR": str(tmp_path), "HPOD_ALLOWED_OBJECTIVES": "builtin, mylab.objectives"}
    assert load_config(None, env=env).allowed_objectives == ("builtin", "mylab.objectives")
    toml = tmp_path / "hpod.toml"
    toml.write_text('allowed_objectives = ["builtin", "mylab:train"]\n')
    assert load_config(toml, env={"HPOD_STATE_DIR": str(tmp_path)}).allowed_objectives == ("builtin", "mylab:train")
    toml.write_text('allowed_objectives = ["builtin", "rm -rf /"]\n')
    with pytest.raises(UsageError, match="allowed_objectives"):
        load_config(toml, env={"HPOD_STATE_DIR": str(tmp_path)})


def test_a_submitted_spec_cannot_choose_the_database(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path / "state")
    spec = {**_spec("elsewhere", {"name": "synthetic:training_cost"}),
            "storage": f"sqlite:///{tmp_path / 'other.db'}"}
    resp = _client(store).post("/v1/studies", headers=AUTH, json={"spec": spec})
    assert resp.status_code == 422 and resp.json()["error"].startswith("storage:")
    assert store.get_study("elsewhere", missing_ok=True) is None and not (tmp_path / "other.db").exists()


def test_state_dir_is_0700_and_the_database_0600(tmp_path: Path) -> None:
    import stat

    state = tmp_path / "fresh" / "state"
    Store.for_state_dir(state).close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "hpod.db").stat().st_mode) == 0o600
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    Store.for_state_dir(loose).close()
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    for extra in loose.glob("hpod.db*"):
        assert stat.S_IMODE(extra.stat().st_mode) & 0o077 == 0, extra


def test_concurrent_first_checks_see_every_built_in() -> None:
    """The daemon's API checks concurrent submissions in a thread pool; the first checks
    in a fresh process load the built-ins once and none sees a half-filled registry
    (it was: every study of a burst right after start was refused, "built-ins ()")."""
    import subprocess

    code = (
        "import threading\n"
        "from hpod.objectives.base import check_objective_allowed\n"
        "barrier, refused = threading.Barrier(8), []\n"
        "def check():\n"
        "    barrier.wait()\n"
        "    try:\n"
        "        check_objective_allowed('t5_lora', ('builtin',))\n"
        "    except Exception as exc:\n"
        "        refused.append(str(exc))\n"
        "threads = [threading.Thread(target=check) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "print(len(refused), refused[:1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "0", out.stdout
