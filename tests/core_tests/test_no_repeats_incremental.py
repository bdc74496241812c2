"""The engine's record of evaluated configurations is read from the study once and then
kept up to date on ask and tell: no configuration runs twice, a configuration whose
trial failed for an infrastructure reason runs again, and a resumed engine (a new
process) reads the study once and continues without repeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpod.core.engine import Engine, configuration_key
from hpod.core.records import REJECTED_ATTR
from hpod.spec import parse_spec
from hpod.store import Store

SPEC: dict[str, Any] = {
    "name": "incremental", "objective": {"name": "synthetic:training_cost"},
    # 3 batch sizes x 3 ranks = 9 configurations
    "space": {"learning_rate": 1e-4, "dropout": 0.1, "alpha": 16, "epochs": 2,
              "batch_size": [8, 16, 32], "rank": [4, 8, 16]},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 3}, "budget": {"n_trials": 9},
}
RESULT = {"metrics": {"loss": 1.0, "time_seconds": 2.0, "memory_bytes": 1e9, "energy_joules": 3.0},
          "metrics_std": {}, "measurements": {}, "seeds": [0], "pruned": False, "energy_spent_joules": 3.0}


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The engines' full reads of their studies' trials, by study."""
    seen: list[str] = []
    original = Engine._read_evaluated_configurations

    def counting(self: Engine) -> dict[str, int]:
        seen.append(self.name)
        return original(self)

    monkeypatch.setattr(Engine, "_read_evaluated_configurations", counting)
    return seen


def _run_one(engine: Engine, *, lose: str | None = None) -> dict[str, Any]:
    (asked,) = engine.ask(1)
    job = engine.store.claim_job("w", lease_seconds=60, studies=[engine.name])
    assert job is not None and job.id == asked.id
    if lose is None:
        assert engine.store.finish_job(job.id, job.lease_token, result=RESULT)  # type: ignore[arg-type]
    else:
        engine.store.release_jobs([job.id], reason=lose)  # type: ignore[list-item]
    engine.collect()
    return dict(engine.study.trials[job.trial_number].params)


def _evaluations(engine: Engine) -> list[str]:
    return [configuration_key(dict(t.params)) for t in engine.study.get_trials(deepcopy=False)
            if t.user_attrs.get(REJECTED_ATTR) is None and t.state.name == "COMPLETE"]


def test_no_repeats_within_a_run_with_one_read_of_the_study(tmp_path: Path, reads: list[str]) -> None:
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec(SPEC), state_dir=tmp_path)
    engine.start()
    for _ in range(9):
        _run_one(engine)
    assert engine.ask(1) == []  # all 9 configurations evaluated: nothing left to ask
    done = _evaluations(engine)
    assert len(done) == 9 and len(set(done)) == 9
    assert reads == ["incremental"]  # the study's trials were read once, not on every ask


def test_a_configuration_lost_to_the_infrastructure_runs_again(
        tmp_path: Path, reads: list[str]) -> None:
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec({**SPEC, "budget": {"n_trials": 4}}), state_dir=tmp_path)
    engine.start()
    first = _run_one(engine)
    lost = _run_one(engine, lose="worker_lost")  # re-queued: not an evaluation
    retried = _run_one(engine)
    assert retried == lost  # the retry ran (it was not refused as a repeat of the lost trial)
    rejected = [t for t in engine.study.trials if t.user_attrs.get(REJECTED_ATTR) is not None]
    assert all(configuration_key(dict(t.params)) != configuration_key(lost) for t in rejected)
    fourth = _run_one(engine)
    done = _evaluations(engine)
    assert sorted(done) == sorted({configuration_key(p) for p in (first, lost, fourth)})
    assert reads == ["incremental"]


def test_a_resumed_engine_reads_the_study_once_and_does_not_repeat(tmp_path: Path, reads: list[str]) -> None:
    store = Store.for_state_dir(tmp_path)
    first = Engine(store, parse_spec(SPEC), state_dir=tmp_path)
    first.start()
    for _ in range(4):
        _run_one(first)
    # an orphan: asked (RUNNING, with a job) when its process died
    first.ask(1)
    store.close()

    store = Store.for_state_dir(tmp_path)
    resumed = Engine(store, parse_spec(SPEC), state_dir=tmp_path)  # a new process: same spec, same seed
    resumed.start()
    assert resumed.recover_orphans(alive=lambda job: False) == 1
    resumed.collect()  # the orphan is failed and re-queued: its configuration runs again
    for _ in range(5):
        _run_one(resumed)
    assert resumed.ask(1) == []
    done = _evaluations(resumed)
    assert len(done) == 9 and len(set(done)) == 9
    assert reads == ["incremental", "incremental"]  # once per engine
