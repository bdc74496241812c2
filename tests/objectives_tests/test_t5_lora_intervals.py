"""PBT on ``t5_lora``: an interval resumes the adapter, optimizer state and step count of
the checkpoint it is given (a member's own or a copied donor's)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from hpod.objectives.base import TrialContext

os.environ.setdefault("HF_HUB_OFFLINE", "1")

FAST = {"model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 64,
        "max_target_length": 24, "max_new_tokens": 8, "generate_size": 2,
        "data": {"train_size": 16, "val_size": 4}}
PARAMS = {"learning_rate": 1e-3, "batch_size": 8, "epochs": 1, "rank": 4, "alpha": 16, "dropout": 0.1}


def _interval(objective: Any, resume: Path, artifacts: Path, cache: Path, params: dict[str, Any],
              steps: int) -> tuple[dict[str, float], list[int]]:
    (resume / "pbt.json").write_text(json.dumps({"interval_steps": steps, "member": 0, "generation": 0}))
    reported: list[int] = []

    def hook(step: int, values: Any) -> bool:
        reported.append(step)
        return False

    ctx = TrialContext(params=dict(params), seed=0, trial_number=0, study_name="pbt-t5", artifact_dir=artifacts,
                       cache_dir=cache, report_hook=hook, resume_from=resume)
    return {k: float(getattr(v, "value", v)) for k, v in objective.run(ctx).items()}, reported


def test_t5_lora_interval_resumes_adapter_optimizer_and_step(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from hpod.objectives.t5_lora import T5LoraObjective

    objective = T5LoraObjective(FAST)
    cache = tmp_path / "cache"
    objective.prepare(cache)
    fresh = tmp_path / "gen-0"
    fresh.mkdir()
    first, steps_first = _interval(objective, fresh, tmp_path / "trial-0", cache, PARAMS, steps=3)
    assert first["steps"] == 3 and steps_first == [1, 2, 3]  # evaluated every step at this data size
    saved = tmp_path / "trial-0"
    assert (saved / "optimizer.pt").exists() and json.loads((saved / "train_state.json").read_text()) == {"step": 3}

    # The engine copies the checkpoint into the next interval's resume directory.
    resume = tmp_path / "gen-1"
    shutil.copytree(saved, resume)
    # A near-zero learning rate: whatever the adapter holds afterwards, it held at the start.
    second, steps_second = _interval(objective, resume, tmp_path / "trial-1", cache,
                                     {**PARAMS, "learning_rate": 1e-12}, steps=2)
    assert second["steps"] == 5 and steps_second == [4, 5]  # step numbers continue
    before = load_file(str(saved / "adapter_model.safetensors"))
    after = load_file(str(tmp_path / "trial-1" / "adapter_model.safetensors"))
    lora_b = [k for k in before if "lora_B" in k]
    assert lora_b and any(float(before[k].abs().max()) > 0 for k in lora_b)  # trained, not LoRA's zero init
    for key in before:
        assert torch.allclose(before[key], after[key], atol=1e-6), key
    state = torch.load(tmp_path / "trial-1" / "optimizer.pt", weights_only=True)
    assert {float(s["step"]) for s in state["state"].values()} == {5.0}  # Adam moments carried over
    assert state["param_groups"][0]["lr"] == pytest.approx(1e-12)  # the perturbed rate, not the saved one
