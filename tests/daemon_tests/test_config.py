"""The daemon's settings: file < environment < flags, bad settings named with where they
came from, the token file created 0600 once and a systemd credential winning."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hpod.daemon.config import load_config, resolve_token
from hpod.errors import UsageError


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
