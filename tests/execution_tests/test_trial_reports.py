"""A trial's intermediate reports wait for the parent's answer only when someone answers
them (a study with a pruner); otherwise they travel with the result."""

from __future__ import annotations

import json
from pathlib import Path

from hpod_testing import wait_for

from hpod.core.engine import Engine
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import parse_spec
from hpod.store import Store


def _executor(tmp_path: Path, pruner: dict[str, object] | None) -> tuple[Store, LocalExecutor, Engine]:
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    spec = parse_spec({
        "name": "reports",
        "objective": {"name": "synthetic:training_cost", "params": {}},
        "objectives": [{"name": "loss"}],
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": 2},
        **({"pruner": pruner} if pruner else {}),
    })
    engine = Engine(store, spec, state_dir=tmp_path)
    engine.start()
    engine.ask(1)
    executor = LocalExecutor(store, tmp_path, slots=[Slot("cpu0")], codecarbon=False)
    if engine.report_handler is not None:
        executor.report_handlers[spec.name] = engine.report_handler
    return store, executor, engine


def test_without_a_pruner_a_trial_runs_to_its_end_unanswered_and_keeps_its_reports(tmp_path: Path) -> None:
    store, executor, _ = _executor(tmp_path, None)
    executor.poll(studies=["reports"])
    (trial,) = executor.running.values()
    # Nobody polls the executor meanwhile: a trial waiting for an answer would never end.
    wait_for(lambda: not trial.process.is_alive(), 120, "the trial process to end by itself", interval=0.05)
    assert executor.poll(start_new=False) == [trial.job]
    (job,) = store.jobs("reports")
    assert job.state == "done", job.fail_reason
    result = json.loads(job.result_json or "{}")
    assert result["intermediate"] and [r[1] for r in result["intermediate"]] == \
        list(range(1, len(result["intermediate"]) + 1))


def test_with_a_pruner_each_report_is_asked_about(tmp_path: Path) -> None:
    store, executor, _ = _executor(tmp_path, {"kind": "early_stopping", "patience": 2})
    asked: list[int] = []
    handler = executor.report_handlers["reports"]

    def counting(job, seed_index, step, values):  # type: ignore[no-untyped-def]
        asked.append(step)
        return handler(job, seed_index, step, values)

    executor.report_handlers["reports"] = counting
    executor.poll(studies=["reports"])
    wait_for(lambda: executor.poll(start_new=False), 120, "the trial to finish", interval=0.05)
    (job,) = store.jobs("reports")
    assert job.state == "done", job.fail_reason
    assert asked == [r[1] for r in json.loads(job.result_json or "{}")["intermediate"]] and asked
