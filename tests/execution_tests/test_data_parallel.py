"""A trial that spans several ranks: ``resources.processes_per_trial: 2`` runs a tiny
t5_lora trial as two CPU processes in one gloo group (the path ``gpus_per_trial: 2``
takes with NCCL on two GPUs). Both ranks train the same adapter, the loss curve is
reported once, and the meters aggregate over the ranks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from hpod.core.controller import Controller
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import parse_spec, resolve
from hpod.store import Store

pytestmark = pytest.mark.slow


def _spec(data: Path, *, processes: int) -> dict[str, Any]:
    return {
        "name": f"t5-dp{processes}",
        "objective": {"name": "t5_lora", "params": {
            "model": "tiny", "base_steps": 10, "cpu_threads": 1, "max_source_length": 48,
            "max_target_length": 16, "max_new_tokens": 8, "eval_steps": 1,
            "data": {"source": str(data), "train_size": 16, "val_size": 4},
        }},
        "space": {"epochs": 1, "batch_size": 8, "rank": 4, "alpha": 8, "dropout": 0.0,
                  "learning_rate": {"type": "float", "low": 1e-3, "high": 2e-3, "log": True}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}, {"name": "memory_bytes"}],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 1, "max_retries": 0},
        "resources": {"processes_per_trial": processes},
    }


def _run(spec_dict: dict[str, Any], state: Path) -> Any:
    spec = parse_spec(spec_dict)
    store = Store.for_state_dir(state)
    # A long lease: the first trial start waits for the fork server to import torch/transformers/peft.
    executor = LocalExecutor(store, state, slots=[Slot("cpu0")], codecarbon=False, lease_seconds=600)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))
    engine.resolved.objective.prepare(state / "cache")
    deadline = time.monotonic() + 900
    while spec.name in controller.engines:
        assert time.monotonic() < deadline, "the study did not finish"
        if not controller.step():
            controller.wait(0.2)
    (trial,) = engine.study.get_trials(deepcopy=False)
    return trial


def test_two_gloo_ranks_train_one_adapter(tmp_path: Path, shared_cnndm: Path) -> None:
    trial = _run(_spec(shared_cnndm, processes=2), tmp_path / "state")
    info = trial.user_attrs["hpod.info"]
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("hpod.fail_reason")
    (seed,) = info["ranks"]
    ranks = seed["ranks"]
    assert len(ranks) == 2
    # Both ranks trained, and ended with the same adapter weights (gradients all-reduced).
    digests = [r["values"]["adapter_sha256"] for r in ranks]
    assert digests[0] == digests[1] and len(digests[0]) == 64
    assert ranks[1]["values"]["loss"] == pytest.approx(ranks[0]["values"]["loss"])
    # The loss curve is reported once (rank 0), one report per evaluation step.
    steps = [step for _, step, _ in info["intermediate"]]
    assert steps == sorted(set(steps)) and len(steps) == 2  # 16 examples, batch 8, eval every step
    # Meters aggregate over the ranks: peak memory per device (max) and over devices (sum).
    metrics = trial.user_attrs["hpod.metrics"]
    memories = [r["memory_bytes"] for r in ranks]
    assert metrics["memory_bytes"] == pytest.approx(max(memories))
    assert metrics["memory_bytes_sum"] == pytest.approx(sum(memories))
    assert metrics["world_size"] == 2.0
    assert trial.user_attrs["hpod.measurements"]["memory_bytes"]["method"].endswith("max over 2 ranks")
    assert all(r["time_seconds"] > 0 for r in ranks)
    assert "rouge2" in metrics  # rank 0 scored and saved the adapter
    assert (Path(info["artifact_dir"]) / "adapter_config.json").exists()
