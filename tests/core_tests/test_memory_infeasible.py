"""Configurations that cannot fit in memory are refused before they run: the engine asks
the objective for its estimate against the spec's limit (``resources.memory_limit_bytes``
or a ``memory_bytes <= M`` constraint), the local executor against the reserved GPUs'
memory per NVML; either way the trial is recorded as infeasible and never run again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
import pytest

import hpod.execution.executor as executor_module
from hpod.core.engine import SPACE_EXHAUSTED, Engine
from hpod.core.records import CONSTRAINTS_ATTR, FAIL_REASON_ATTR, INFEASIBLE_ATTR
from hpod.execution.executor import LocalExecutor, Slot
from hpod.monitors.gpu import GpuReading
from hpod.objectives.base import MEMORY_INFEASIBLE
from hpod.spec import parse_spec
from hpod.store import Store

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# t5-base at 512/128 tokens, rank 8, bf16 on a GPU: batch 8 is estimated at ~6.4 GB and
# batch 32 (micro-batch 16 with the preset) at ~12 GB.
_FIXED = {"learning_rate": {"type": "fixed", "value": 1e-4}, "epochs": {"type": "fixed", "value": 1},
          "rank": {"type": "fixed", "value": 8}, "alpha": {"type": "fixed", "value": 16},
          "dropout": {"type": "fixed", "value": 0.1}}


def _spec(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "objective": {"name": "t5_lora", "params": {"preset": "t5-base"}},
            "objectives": [{"name": "loss"}, {"name": "memory_bytes"}],
            "space": {"batch_size": {"type": "categorical", "choices": [8, 32]}, **_FIXED},
            "resources": {"gpus_per_trial": 1}, "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": 10}, **extra}


def _ask_until_exhausted(engine: Engine) -> list[Any]:
    jobs = []
    for _ in range(50):
        if engine.budget_exhausted() is not None:
            break
        jobs += engine.ask(1)
    return jobs


def _infeasible(engine: Engine) -> list[optuna.trial.FrozenTrial]:
    return [t for t in engine.study.get_trials(deepcopy=False) if INFEASIBLE_ATTR in t.user_attrs]


def test_a_configuration_over_the_constraint_is_recorded_infeasible_without_a_job(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec(_spec("mem-constraint", constraints=["memory_bytes <= 8e9"])),
                    state_dir=tmp_path)
    engine.start()
    jobs = _ask_until_exhausted(engine)
    # Only batch 8 became a job; batch 32 was refused once and never asked again.
    assert [json.loads(j.params_json)["batch_size"] for j in jobs] == [8]
    assert engine.budget_exhausted() == SPACE_EXHAUSTED
    (refused,) = _infeasible(engine)
    assert refused.params["batch_size"] == 32 and refused.state == optuna.trial.TrialState.PRUNED
    reason = refused.user_attrs[FAIL_REASON_ATTR]
    assert reason.startswith(MEMORY_INFEASIBLE) and "constraint memory_bytes <= 8e9" in reason
    estimate = refused.user_attrs[INFEASIBLE_ATTR]["estimate"]
    assert estimate["peak_bytes"] > 8e9 and estimate["details"]["micro_batch"] == 16
    # What the samplers read: the memory constraint violated by the estimate.
    assert refused.system_attrs[CONSTRAINTS_ATTR] == [pytest.approx(estimate["peak_bytes"] - 8e9)]
    assert not [j for j in store.jobs(engine.name) if j.trial_id == refused._trial_id]
    events = [json.loads(e.payload_json) for e in store.events(study=engine.name, limit=100)
              if e.kind == "trial_pruned"]
    assert [e["infeasible"] for e in events] == [reason]
    assert engine.summary(refresh=True).finished == 1  # it counts as an evaluated trial


def test_memory_limit_bytes_refuses_and_no_limit_runs_everything(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path)
    limited = Engine(store, parse_spec(_spec("mem-limit", resources={"gpus_per_trial": 1,
                                                                    "memory_limit_bytes": 8e9})), state_dir=tmp_path)
    limited.start()
    assert [json.loads(j.params_json)["batch_size"] for j in _ask_until_exhausted(limited)] == [8]
    (refused,) = _infeasible(limited)
    assert "resources.memory_limit_bytes" in refused.user_attrs[FAIL_REASON_ATTR]
    assert CONSTRAINTS_ATTR not in refused.system_attrs  # the spec has no constraints to violate

    free = Engine(store, parse_spec(_spec("mem-free")), state_dir=tmp_path)
    free.start()
    assert sorted(json.loads(j.params_json)["batch_size"] for j in _ask_until_exhausted(free)) == [8, 32]
    assert not _infeasible(free)


def test_the_executor_refuses_what_cannot_fit_the_reserved_gpu(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # No GPU here: NVML's answer is faked (a 4 GiB device); nothing may start on it.
    monkeypatch.setattr(executor_module, "gpu_snapshot", lambda indices=None: [
        GpuReading(index=0, name="fake", power_watts=None, memory_used_bytes=0.0,
                   memory_total_bytes=4.0 * 2**30, utilization_ratio=None)])
    monkeypatch.setattr(LocalExecutor, "_preload", lambda self, modules: None)
    started: list[Any] = []
    monkeypatch.setattr(executor_module, "trial_main", lambda *args: started.append(args))
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec(_spec("mem-gpu", space={
        "batch_size": {"type": "categorical", "choices": [8]}, **_FIXED})), state_dir=tmp_path)
    engine.start()
    executor = LocalExecutor(store, tmp_path, slots=[Slot(name="gpu0", gpu_index=0)], codecarbon=False)
    assert len(engine.ask(1)) == 1
    executor.poll()
    executor.poll()
    assert not executor.running and not started
    (stored,) = store.jobs(engine.name)
    assert stored.state == "failed" and stored.fail_reason.startswith(MEMORY_INFEASIBLE)
    assert "GPU 0: 4.00 GiB per NVML" in stored.fail_reason
    (told,) = engine.collect()
    assert told.state == optuna.trial.TrialState.PRUNED and INFEASIBLE_ATTR in told.user_attrs
    assert told.user_attrs[INFEASIBLE_ATTR]["estimate"]["peak_bytes"] > 3.5 * 2**30
    # Never run again: the only configuration of the space is evaluated.
    assert engine.ask(1) == [] and engine.budget_exhausted() == SPACE_EXHAUSTED
