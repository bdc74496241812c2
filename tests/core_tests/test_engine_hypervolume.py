"""The engine's normalized hypervolume (stated ideal and reference points), what it
stores, and the Optuna-side facts tools read (value names, the constraints list)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hpod.core.engine import Engine
from hpod.core.records import HYPERVOLUME_STATE_KEY
from hpod.core.views import study_rows
from hpod.errors import SpecError
from hpod.spec import parse_spec, resolve
from hpod.store import Store

# Also run on the lowest declared optuna/botorch (scripts/lowest-versions.sh).
pytestmark = pytest.mark.floor

SPEC: dict[str, Any] = {
    "name": "hv", "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "constraints": ["time_seconds <= 700"], "budget": {"n_trials": 10}, "sampler": {"name": "random", "seed": 0},
    "reference_point": {"loss": 3.0, "time_seconds": 1000.0}, "ideal_point": {"loss": 1.0, "time_seconds": 0.0},
}


def _tell(engine: Engine, loss: float, seconds: float) -> None:
    engine.ask(1)
    job = engine.store.claim_job("test-worker", lease_seconds=30, studies=[engine.name])
    assert job is not None
    metrics = {"loss": loss, "time_seconds": seconds, "memory_bytes": 1e9, "energy_joules": 10.0}
    result = {"metrics": metrics, "metrics_std": {}, "measurements": {}, "seeds": [], "pruned": False,
              "energy_spent_joules": 10.0}
    assert engine.store.finish_job(job.id, job.lease_token, result=result)  # type: ignore[arg-type]
    assert len(engine.collect()) == 1


def test_normalized_hypervolume_uses_the_stated_points_and_is_stored(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec(SPEC), state_dir=tmp_path)
    engine.start()
    for loss, seconds in ((2.0, 500.0), (1.5, 800.0), (2.5, 200.0)):
        _tell(engine, loss, seconds)
    # trial 1 (800 s) violates the constraint: the front is trials 0 and 2, scaled to
    # (0.5, 0.5) and (0.75, 0.2) in the unit box
    summary = engine.summary(refresh=True)
    assert summary.pareto == [0, 2]
    assert summary.hypervolume == pytest.approx(0.25 * 0.5 + 0.25 * 0.8)
    assert summary.hypervolume_raw == pytest.approx(summary.hypervolume * 2.0 * 1000.0)
    assert store.get_study("hv").hypervolume == pytest.approx(summary.hypervolume)  # type: ignore[union-attr]
    state = store.get_state("hv", HYPERVOLUME_STATE_KEY)
    assert state["ideal_point"] == [1.0, 0.0] and state["ideal_point_source"] == "spec"
    assert state["raw"] == pytest.approx(summary.hypervolume_raw)
    (row,) = study_rows(store)
    assert row["hypervolume_scale"] == {
        "ideal_point": {"loss": 1.0, "time_seconds": 0.0}, "ideal_point_source": "spec",
        "reference_point": {"loss": 3.0, "time_seconds": 1000.0}, "reference_point_source": "spec"}

    # what Optuna (and optuna-dashboard) read from the same database
    study = store.load_optuna_study("hv")
    assert study.metric_names == ["loss", "time_seconds"]
    assert [t.system_attrs["constraints"] for t in study.trials] == [[-200.0], [100.0], [-500.0]]
    assert sorted(t.number for t in study.best_trials) == [0, 2]


def test_a_maximized_objective_is_scaled_in_its_direction(tmp_path: Path) -> None:
    spec = {**SPEC, "name": "hv-max", "constraints": [],
            "objectives": [{"name": "loss", "direction": "maximize"}, {"name": "time_seconds"}],
            "reference_point": {"loss": 1.0, "time_seconds": 1000.0}, "ideal_point": {"loss": 3.0, "time_seconds": 0.0}}
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, parse_spec(spec), state_dir=tmp_path)
    engine.start()
    _tell(engine, 2.0, 500.0)
    assert engine.summary(refresh=True).hypervolume == pytest.approx(0.25)


@pytest.mark.parametrize(("ideal", "message"), [
    ({"loss": 4.0}, "must be better than reference_point.loss"),
    ({"accuracy": 1.0}, "ideal_point.accuracy"),
])
def test_bad_ideal_points_name_the_field(ideal: dict[str, float], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        resolve(parse_spec({**SPEC, "ideal_point": ideal}))
