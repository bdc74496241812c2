"""The contract every registered objective keeps (as Optuna's test suites for its
storages and samplers): what a user relies on when naming an objective in a spec.

Each registered objective (built-in or an installed plugin) must: declare a valid
search space and metric names that a spec can use; reject unknown options with a
:class:`SpecError` naming ``objective.params``; and, when trials are cheap (it does
not say it is ``heavy``), run once on its default space and return finite values for
names it declared, in base units (seconds, bytes, joules), the same for the same seed.
Heavy objectives (``t5_lora``: minutes per trial on CPU) get the cheap checks only;
their training is covered by tests/objectives_tests/test_t5_lora.py.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hpod.errors import SpecError
from hpod.objectives import Measurement, Objective, TrialContext, create_objective, registered_objectives
from hpod.spec import MEASURED_NAMES, parse_spec, resolve

OBJECTIVES = registered_objectives()
#: unit suffixes of hpod's names: the values are in these base units
BASE_UNITS = ("_seconds", "_bytes", "_joules")


def _first_configuration(space: Mapping[str, Any]) -> dict[str, Any]:
    """One configuration of a resolved space: the midpoint of a range (geometric for a
    log scale), the first choice of a categorical, the value of a fixed parameter."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        kind = p.type
        if kind == "fixed":
            params[name] = p.value
        elif kind == "categorical":
            params[name] = p.choices[0]
        else:
            low, high = float(p.low), float(p.high)
            mid = math.sqrt(low * high) if getattr(p, "log", False) else (low + high) / 2
            params[name] = round(mid) if kind == "int" else mid
    return params


def _spec_for(name: str, objective: Objective) -> dict[str, Any]:
    metric = sorted(objective.metric_names)[0]
    return {"name": "contract", "objective": {"name": name}, "objectives": [{"name": metric}],
            "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": 1}}


def _run(objective: Objective, params: dict[str, Any], tmp: Path, seed: int) -> Mapping[str, Any]:
    ctx = TrialContext(params=params, seed=seed, trial_number=0, study_name="contract",
                       artifact_dir=tmp / f"artifacts-{seed}", cache_dir=tmp / "cache")
    ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
    ctx.cache_dir.mkdir(parents=True, exist_ok=True)
    objective.prepare(ctx.cache_dir)
    return objective.run(ctx)


def _value(v: Any) -> float:
    return float(v.value) if isinstance(v, Measurement) else float(v)


def test_the_built_in_objectives_are_registered() -> None:
    assert {"t5_lora", "text_classifier", "synthetic:training_cost", "synthetic:zdt1"} <= set(OBJECTIVES)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_declares_metrics_and_a_space_a_spec_can_use(name: str) -> None:
    objective = create_objective(name)
    assert isinstance(objective, Objective)
    assert objective.metric_names and all(isinstance(m, str) and m for m in objective.metric_names)
    assert set(objective.provides) <= set(objective.metric_names) | set(MEASURED_NAMES), \
        f"{name} provides measurements it does not declare"
    assert isinstance(objective.heavy, bool)
    # A spec naming only the objective resolves: its default space is valid hpod parameters
    # with at least one to tune, and each declared metric can be an objective of a study.
    resolved = resolve(parse_spec(_spec_for(name, objective)), objective=objective)
    assert resolved.space, f"{name} has an empty default space"
    for metric in sorted(objective.metric_names):
        parse_spec({**_spec_for(name, objective), "objectives": [{"name": metric}]})


@pytest.mark.parametrize("name", OBJECTIVES)
def test_an_unknown_option_is_a_spec_error_naming_objective_params(name: str) -> None:
    with pytest.raises(SpecError) as info:
        create_objective(name, {"no_such_option_xyz": 1})
    assert info.value.path.startswith("objective.params"), info.value.path
    assert "no_such_option_xyz" in str(info.value)


@pytest.mark.parametrize("name", OBJECTIVES)
def test_a_cheap_trial_returns_its_declared_metrics_in_base_units(name: str, tmp_path: Path) -> None:
    objective = create_objective(name)
    if objective.heavy:
        pytest.skip(f"{name} says its trials are heavy (minutes); its own tests train it")
    objective.validate()
    resolved = resolve(parse_spec(_spec_for(name, objective)), objective=objective)
    params = {**_first_configuration(resolved.space), **resolved.fixed}
    first = _run(objective, params, tmp_path, seed=7)
    assert first, f"{name} returned no metrics"
    undeclared = set(first) - set(objective.metric_names) - set(MEASURED_NAMES)
    assert not undeclared, f"{name} returned undeclared names {sorted(undeclared)}"
    values = {k: _value(v) for k, v in first.items()}
    for key, value in values.items():
        assert math.isfinite(value), f"{name}: {key} = {value}"
        if key.endswith(BASE_UNITS):
            assert value >= 0, f"{name}: {key} = {value} is negative"
    if "memory_bytes" in values:  # bytes, not MiB or GiB: any training holds more than 1 MiB
        assert values["memory_bytes"] >= 2**20, f"{name}: memory_bytes = {values['memory_bytes']}"
    # The same configuration and seed give the same figures (wall-clock ones aside).
    again = {k: _value(v) for k, v in _run(objective, params, tmp_path, seed=7).items()}
    steady = {k for k in values if k not in MEASURED_NAMES and not k.endswith("_seconds")}
    assert {k: again[k] for k in steady} == pytest.approx({k: values[k] for k in steady}, rel=1e-9, abs=1e-12)
