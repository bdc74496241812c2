"""Shared fixtures: a fresh state dir per test, the test objectives on the path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parent / "support"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if str(SUPPORT) not in sys.path:
    sys.path.insert(0, str(SUPPORT))

from hpod_testing import SHARED_DATA  # noqa: E402


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir()
    return d


@pytest.fixture
def shared_cnndm() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_t5_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache directory holding the default tiny T5 base (``t5_lora`` with ``model:
    tiny``), trained once per test session (minutes on 2 cores) for every test that
    needs the real base rather than a 10-step one."""
    from hpod.objectives.t5_lora import T5LoraObjective

    path = tmp_path_factory.mktemp("tiny-t5-cache")
    T5LoraObjective({"model": "tiny", "cpu_threads": 1}).prepare(path)
    return path
