"""Objectives for the worker tests, referenced as `hpod_worker_objectives:NAME`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpod.objectives.base import BaseObjective, TrialContext


class NeedsPrepare(BaseObjective):
    """Fails unless ``prepare(cache_dir)`` ran before the trial (as a base model must be
    trained once before LoRA trials use it)."""

    metric_names = frozenset({"loss"})

    def __init__(self, seconds: float = 0.0):
        self.seconds = float(seconds)

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {"x": {"type": "float", "low": 0.0, "high": 1.0}}

    def prepare(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        time.sleep(0.5)  # slow enough that a worker not waiting for it would be caught
        (cache_dir / "prepared.marker").write_text("ok")

    def run(self, ctx: TrialContext) -> Mapping[str, float]:
        if not (ctx.cache_dir / "prepared.marker").exists():
            raise RuntimeError("prepare() did not run before this trial")
        time.sleep(self.seconds)
        return {"loss": (float(ctx.params["x"]) - 0.3) ** 2}
