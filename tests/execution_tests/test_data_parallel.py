"""A trial that spans several ranks: ``resources.processes_per_trial: 2`` runs a tiny
t5_lora trial as two CPU processes in one gloo group (the path ``gpus_per_trial: 2``
takes with NCCL on two GPUs). Both ranks train the same adapter, the loss curve is
reported once, and the meters aggregate over the ranks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hpod_testing import wait_for

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
    def drive() -> None:
        if not controller.step():
            controller.wait(0.2)

    wait_for(lambda: spec.name not in controller.engines, 900, "the study to finish", interval=0, between=drive)
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


def _gpu_study(name: str, gpus: int) -> dict[str, Any]:
    return {"name": name, "objective": {"name": "synthetic:training_cost", "params": {"sleep_seconds": 30}},
            "objectives": [{"name": "loss"}, {"name": "time_seconds"}], "budget": {"n_trials": 1, "max_retries": 0},
            "resources": {"gpus_per_trial": gpus}}


def test_local_executor_reserves_all_gpus_of_a_trial_on_one_node(tmp_path: Path) -> None:
    """Slots only (no GPU needed: the trial is stopped before it uses them)."""
    state = tmp_path / "state"
    store = Store.for_state_dir(state)
    executor = LocalExecutor(store, state, slots=[Slot("gpu0", 0), Slot("gpu1", 1)], codecarbon=False)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    two = controller.activate(parse_spec(_gpu_study("two-gpus", 2)))
    three = controller.activate(parse_spec(_gpu_study("three-gpus", 3)))
    try:
        assert two.ask(1) and three.ask(1)
        executor.poll(studies=["three-gpus"])
        executor.poll(start_new=False)  # stores the outcome
        controller.step(start_new=False)  # tells Optuna
        (failed,) = three.study.get_trials(deepcopy=False)
        assert failed.user_attrs["hpod.fail_reason"] == \
            "infeasible: resources.gpus_per_trial is 3 but this executor has 2 GPU slot(s)"
        executor.poll(studies=["two-gpus"])
        (rt,) = executor.running.values()
        assert (rt.slot.name, [s.name for s in rt.extra_slots]) == ("gpu0", ["gpu1"])
        assert executor.free_slots() == []
        started = [e for e in store.events(study="two-gpus") if e.kind == "trial_started"]
        assert '"slot": "gpu0,gpu1"' in started[0].payload_json
    finally:
        executor.stop(reason="shutdown")


def test_multi_gpu_trial_waits_in_the_queue_for_enough_free_gpus(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.for_state_dir(state)
    executor = LocalExecutor(store, state, slots=[Slot("gpu0", 0), Slot("gpu1", 1)], codecarbon=False)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    one = controller.activate(parse_spec(_gpu_study("one-gpu", 1)))
    two = controller.activate(parse_spec(_gpu_study("two-gpus", 2)))
    try:
        assert one.ask(1)
        executor.poll(studies=["one-gpu"])
        assert len(executor.running) == 1
        assert two.ask(1)
        executor.poll(studies=["two-gpus"])
        # Handed back untouched: still queued, no attempt spent, one GPU still free.
        (job,) = store.jobs("two-gpus")
        assert (job.state, job.worker, job.attempt) == ("queued", None, 1)
        assert len(executor.running) == 1 and [s.name for s in executor.free_slots()] == ["gpu1"]
    finally:
        executor.stop(reason="shutdown")


def test_user_objective_sees_rank_world_size_and_devices(tmp_path: Path) -> None:
    trial = _run({"name": "ranks", "objective": {"name": "hpod_test_objectives:ranks"},
                  "objectives": [{"name": "loss"}], "budget": {"n_trials": 1, "max_retries": 0},
                  "resources": {"processes_per_trial": 3}}, tmp_path / "state")
    assert trial.state.name == "COMPLETE", trial.user_attrs.get("hpod.fail_reason")
    metrics = trial.user_attrs["hpod.metrics"]
    assert (metrics["rank_sum"], metrics["world"], metrics["world_size"]) == (6.0, 3.0, 3.0)
    (seed,) = trial.user_attrs["hpod.info"]["ranks"]
    assert [r["values"]["rank_sum"] for r in seed["ranks"]] == [6.0, 6.0, 6.0]
    assert all(r["values"]["devices"] == "cpu,cpu,cpu" for r in seed["ranks"])
    assert [step for _, step, _ in trial.user_attrs["hpod.info"]["intermediate"]] == [1]
