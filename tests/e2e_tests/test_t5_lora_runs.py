"""The committed table of real t5_lora runs replays as a benchmark problem, and the
multi-fidelity benchmark charges pruned trials only the energy they spent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks import learning_curves
from benchmarks.multi_fidelity import _hv, run_one
from benchmarks.t5_lora_runs import OBJECTIVES, SPACE, TabularProblem, design, problem


@pytest.fixture(scope="module")
def table() -> TabularProblem:
    return problem()


def test_table_runs_hold_learning_curves_and_costs(table: TabularProblem) -> None:
    assert table.name == "t5_lora_runs" and table.directions == ["minimize"] * 4
    assert len(table.runs) == table.meta["design"]["n"] == 256  # the whole Sobol design was trained
    assert "python -m benchmarks.t5_lora_runs build --n 256 --seed 0" in table.meta["command"]
    for run in table.runs:
        energies = [c["energy_joules"] for c in run["curve"]]
        assert energies == sorted(energies) and energies[-1] <= run["energy_joules"] + 1e-6
        assert run["loss"] == pytest.approx(min(c["loss"] for c in run["curve"]))
        assert all(math.isfinite(run[k]) and run[k] >= 0 for k in OBJECTIVES)


def test_a_tabulated_configuration_replays_its_own_run_and_others_the_nearest(table: TabularProblem) -> None:
    run = table.runs[3]
    out = table.evaluate(run["config"], seed=0)
    assert out["values"] == [run[k] for k in OBJECTIVES] and out["cost_joules"] == run["energy_joules"]
    assert out["curve"] == run["curve"]
    # Off the grid (a learning rate a hair away): still that run, the nearest one.
    nudged = {**run["config"], "learning_rate": run["config"]["learning_rate"] * 1.0001}
    assert table.evaluate(nudged, seed=1)["config"] == run["config"]
    for name, dist in table.space.items():
        assert name in SPACE and dist._contains(dist.to_internal_repr(run["config"][name]))


def test_design_covers_the_space() -> None:
    configs = design(64, seed=0)
    assert {c["batch_size"] for c in configs} == set(SPACE["batch_size"])
    lrs = np.log10([c["learning_rate"] for c in configs])
    assert -5 <= lrs.min() < -4.5 and -3.5 < lrs.max() <= -3


def test_pruned_trials_pay_only_what_they_spent(table: TabularProblem) -> None:
    points = np.array([[r["loss"], r["energy_joules"]] for r in table.runs])
    reference = points.max(axis=0) * 1.000001
    budget = 4 * float(np.median(points[:, 1]))  # within the Sobol start-up: no model fitted
    row = run_one(table, "auto + MO-ASHA", 0, budget, reference, _hv(points.tolist(), reference))
    assert row["pruned"] >= 1 and row["energy_spent_joules"] >= budget
    spent = [s for s, _ in row["trace"]]
    assert spent == sorted(spent) and 0 <= row["trace"][-1][1] <= 1
    plain = run_one(table, "auto", 0, budget, reference, _hv(points.tolist(), reference))
    assert plain["pruned"] == 0 and row["trials"] > plain["trials"]  # stopping early buys more trials


def test_the_held_out_synthetic_problem_has_crossing_curves_in_the_same_format() -> None:
    synthetic = learning_curves.problem()
    assert synthetic.name == "learning_curves" and len(synthetic.runs) == 256
    assert set(synthetic.space) == set(SPACE)
    again = learning_curves.problem()  # computed, deterministic
    assert [r["curve"] for r in again.runs] == [r["curve"] for r in synthetic.runs]
    first = np.array([r["curve"][0]["loss"] for r in synthetic.runs])
    final = np.array([r["loss"] for r in synthetic.runs])
    # Early losses mislead: some pair of runs swaps order between the first evaluation and the end.
    ahead_early = first[:, None] < first[None, :]
    assert np.any(ahead_early & (final[:, None] > final[None, :]))
    for run in synthetic.runs:
        energies = [c["energy_joules"] for c in run["curve"]]
        assert energies == sorted(energies) and run["energy_joules"] == energies[-1]
