"""``auto``'s cost-aware acquisition: hypervolume improvement per expected cost."""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from hpod_testing import run_cli

from hpod.core.samplers import create_sampler
from hpod.core.samplers._auto import build_gp_sampler
from hpod.core.samplers._cost import CostAwareGPSampler, trial_cost
from hpod.errors import SpecError


def _gp_of(sampler: optuna.samplers.BaseSampler) -> optuna.samplers.GPSampler:
    # Without a cost or a reference point, auto's GP is Optuna's GPSampler itself.
    assert isinstance(sampler, optuna.samplers.GPSampler)
    return sampler


def test_auto_is_cost_aware_in_the_currency_of_the_budget() -> None:
    energy = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=None, n_params=3,
                            energy_budget_joules=5000.0, time_budget_seconds=60.0)
    sampler = energy.sampler._model if hasattr(energy.sampler, "_model") else energy.sampler
    assert isinstance(sampler, CostAwareGPSampler)
    assert sampler.cost_metric == "energy_joules" and "per expected energy_joules" in energy.reason

    timed = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=40, n_params=3,
                           time_budget_seconds=600.0)
    assert isinstance(timed.sampler, CostAwareGPSampler)
    assert timed.sampler.cost_metric == "time_seconds"


def test_a_trial_budget_or_cost_aware_false_leaves_auto_cost_blind() -> None:
    trials = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=40, n_params=3)
    assert not isinstance(_gp_of(trials.sampler), CostAwareGPSampler)
    assert "per expected" not in trials.reason
    off = create_sampler("auto", {"cost_aware": False}, directions=["minimize"] * 2, n_trials=40, n_params=3,
                         energy_budget_joules=100.0)
    assert not isinstance(_gp_of(off.sampler), CostAwareGPSampler)
    forced = create_sampler("auto", {"cost_metric": "time_seconds"}, directions=["minimize"], n_trials=40,
                            n_params=3)
    assert isinstance(forced.sampler, CostAwareGPSampler) and forced.sampler.cost_metric == "time_seconds"


def test_a_cost_that_is_also_an_objective_is_not_weighed_again() -> None:
    # The hypervolume already rewards a cheap trial when energy is an objective.
    names = ["loss", "energy_joules"]
    both = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=40, n_params=3,
                          energy_budget_joules=5000.0, objective_names=names)
    assert not isinstance(_gp_of(both.sampler), CostAwareGPSampler)
    assert "cost-blind: the cost (energy_joules) is an objective" in both.reason
    # Another cost than the objectives' stays weighed; so does one the user asks for.
    timed = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=40, n_params=3,
                           time_budget_seconds=60.0, objective_names=names)
    assert isinstance(timed.sampler, CostAwareGPSampler) and timed.sampler.cost_metric == "time_seconds"
    asked = create_sampler("auto", {"cost_aware": True}, directions=["minimize"] * 2, n_trials=40, n_params=3,
                           energy_budget_joules=5000.0, objective_names=names)
    assert isinstance(asked.sampler, CostAwareGPSampler) and "per expected energy_joules" in asked.reason
    with pytest.raises(ValueError, match="objective_names"):
        create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=40, n_params=3, objective_names=["loss"])


@pytest.mark.parametrize(
    ("options", "field", "shown"),
    [
        ({"cost_aware": "yes"}, "sampler.options.cost_aware", "true or false"),
        ({"cost_metric": "memory_bytes"}, "sampler.options.cost_metric", "one of energy_joules, time_seconds"),
    ],
)
def test_bad_cost_options_name_the_field(options: dict[str, object], field: str, shown: str) -> None:
    with pytest.raises(SpecError) as caught:
        create_sampler("auto", options, directions=["minimize"] * 2, n_trials=10, n_params=2)
    assert caught.value.path == field and shown in str(caught.value)


def _trial(energy: float | None, seconds: float | None = None) -> optuna.trial.FrozenTrial:
    start = datetime.datetime(2026, 1, 1)
    return optuna.trial.create_trial(
        params={}, distributions={}, values=[0.0],
        user_attrs={"hpod.info": {"energy_spent_joules": energy}} if energy is not None else {},
    ) if seconds is None else optuna.trial.FrozenTrial(
        number=0, state=optuna.trial.TrialState.COMPLETE, value=0.0, values=None, datetime_start=start,
        datetime_complete=start + datetime.timedelta(seconds=seconds), params={}, distributions={},
        user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=0)


def test_a_trial_costs_the_energy_hpod_charged_and_its_duration() -> None:
    assert trial_cost(_trial(12.5), "energy_joules") == 12.5
    assert trial_cost(_trial(None), "energy_joules") is None
    assert trial_cost(_trial(float("nan")), "energy_joules") is None
    assert trial_cost(_trial(None, seconds=3.0), "time_seconds") == pytest.approx(3.0)
    with pytest.raises(ValueError, match="cost_metric"):
        CostAwareGPSampler(cost_metric="memory_bytes", seed=0)  # type: ignore[arg-type]


def _suggestions_after_startup(cost_aware: bool, cost_of_x: float, n_model: int, sobol: bool = False) -> list[float]:
    """x of the model-based suggestions on a front where every x is Pareto-optimal
    (f1 = x, f2 = 1 - x), with a trial at x costing ``exp(cost_of_x * x)`` joules: of
    ``auto`` with an energy budget (no reference point: GPSampler's random start), or with
    ``sobol`` of hpod's GP from its Sobol start (as ``auto`` builds it with a reference point)."""
    sampler: optuna.samplers.BaseSampler
    if sobol:
        sampler = build_gp_sampler(n_params=2, n_startup_trials=6, seed=1,
                                   cost_metric="energy_joules" if cost_aware else None)
    else:
        sampler = create_sampler("auto", {"cost_aware": cost_aware, "n_startup_trials": 6},
                                 directions=["minimize", "minimize"], n_trials=6 + n_model, n_params=2, seed=1,
                                 energy_budget_joules=1e9).sampler
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    chosen = []
    for number in range(6 + n_model):
        trial = study.ask()
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        trial.set_user_attr("hpod.info", {"energy_spent_joules": math.exp(cost_of_x * x)})
        study.tell(trial, [x + 0.2 * y, 1.0 - x + 0.2 * y])
        if number >= 6:
            chosen.append(x)
    return chosen


def test_cost_aware_auto_spends_where_improvement_is_cheap() -> None:
    # Improvement is symmetric in x; cost grows e-fold every 0.2 of x. The cost-blind
    # sampler fills the front evenly, the cost-aware one keeps to its cheap end. (From
    # GPSampler's random start, 5 suggestions of either kept to x < 0.5 with this seed.)
    aware = _suggestions_after_startup(True, cost_of_x=5.0, n_model=5, sobol=True)
    blind = _suggestions_after_startup(False, cost_of_x=5.0, n_model=5, sobol=True)
    assert np.mean(aware) < 0.35 < np.mean(blind)


def test_uniform_cost_changes_nothing() -> None:
    # The same configurations as the cost-blind sampler when every trial costs the same.
    assert _suggestions_after_startup(True, cost_of_x=0.0, n_model=2) == \
        _suggestions_after_startup(False, cost_of_x=0.0, n_model=2)


def test_an_energy_budget_stops_the_study_and_status_shows_spent_of_limit(state_dir: Path) -> None:
    # synthetic:training_cost charges 1e5-4e5 J per trial: a 4e5 J budget ends in a few trials.
    spec = {
        "name": "energy-budget",
        "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
        "sampler": {"name": "auto", "seed": 0},
        "budget": {"energy_joules": 4e5},
    }
    path = state_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli(["run", str(path)], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(run_cli(["status", "--json"], state_dir=state_dir).stdout)
    (study,) = status["studies"]
    assert study["state"] == "completed" and study["energy_budget_joules"] == 4e5
    assert 4e5 <= study["energy_spent_joules"] < 4e5 + 5e5
    # energy_joules is both the budget's currency and an objective: weighed once, by the hypervolume.
    assert "cost-blind: the cost (energy_joules) is an objective" in study["sampler_reason"]
    text = run_cli(["status"], state_dir=state_dir, COLUMNS="250").stdout
    assert "/ 4e+05 J" in text
