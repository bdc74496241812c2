"""Helpers for hpod's tests: run the CLI as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "cnndm_sample_100.jsonl"


def hpod_bin() -> str:
    exe = Path(sys.executable).with_name("hpod")
    if exe.exists():
        return str(exe)
    found = shutil.which("hpod")
    assert found, "the hpod console script is not installed (run scripts/setup.sh)"
    return found


def cli_env(state_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("HPOD_API", None)
    env["HPOD_API"] = "127.0.0.1:1"  # no daemon in CLI tests unless a test sets one
    if state_dir is not None:
        env["HPOD_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def run_cli(args: list[str], *, state_dir: Path | None = None, timeout: float = 300, **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hpod_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(state_dir, **env))


