"""A constraint that bounds an objective in the direction it is optimised is where the
user stops valuing improvement: it becomes that objective's reference coordinate, for the
study's hypervolume and for the model-based samplers' aim."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna

from hpod.core.engine import Engine
from hpod.core.samplers._gp import HpodGPSampler
from hpod.spec import parse_spec
from hpod.store import Store


def _engine(tmp_path: Path, name: str, **extra: object) -> Engine:
    spec = parse_spec({
        "name": name,
        "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}, {"name": "time_seconds"}],
        "budget": {"n_trials": 12},
        "sampler": {"name": "auto", "seed": 0},
        **extra,
    })
    return Engine(Store.for_state_dir(tmp_path), spec, state_dir=tmp_path)


def test_constraint_bounds_become_reference_coordinates(tmp_path: Path) -> None:
    partial = _engine(tmp_path, "partial", constraints=["energy_joules <= 5e5", "energy_joules <= 4e5",
                                                         "memory_bytes <= 9e9", "loss >= 0.1"])
    # The tightest upper bound on a minimized objective; a lower bound on it says nothing.
    assert partial.stated_reference_point() == [None, 4e5, None]
    partial.start()
    assert partial.study.sampler._reference_point[1] == 4e5
    assert math.isnan(partial.study.sampler._reference_point[0])
    assert "bounds the study states for 1 of 3 objectives" in partial.sampler_reason

    full = _engine(tmp_path, "full", constraints=["energy_joules <= 5e5", "time_seconds <= 3600"],
                   reference_point={"loss": 3.0})
    assert full.stated_reference_point() == [3.0, 5e5, 3600.0]
    full.start()
    assert full.reference_point([]) == ([3.0, 5e5, 3600.0], "constraints")

    unbounded = _engine(tmp_path, "unbounded")
    assert unbounded.stated_reference_point() is None


def test_study_hypervolume_uses_the_bounds_with_derived_coordinates_elsewhere(tmp_path: Path) -> None:
    engine = _engine(tmp_path, "hv", constraints=["energy_joules <= 5e5"])
    engine.start()
    study = engine.study
    rng = np.random.default_rng(0)
    for _ in range(8):
        trial = study.ask(engine.distributions)
        trial.set_constraint("energy_joules <= 5e5", -1.0)
        study.tell(trial, [float(rng.uniform(1, 3)), float(rng.uniform(1e5, 4e5)), float(rng.uniform(10, 100))])
    summary = engine.update_store_summary(final=True)
    assert summary.reference_point is not None and summary.reference_point[1] == 5e5
    assert summary.hypervolume is not None and summary.hypervolume > 0
    row = engine.store.get_study("hv")
    assert row is not None and row.reference_point_source == "derived+constraints"


def test_gp_sampler_aims_at_a_partial_reference_point() -> None:
    sampler = HpodGPSampler(reference_point=[None, 0.8], seed=0, n_startup_trials=4)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.params["x"] ** 0.5 + t.suggest_float("y", 0, 1)),
                   n_trials=7)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 7
