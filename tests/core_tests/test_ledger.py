"""The running totals over finished trials agree with a full pass over the study."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from hpod.core._ledger import FinishedTrials
from hpod.core.pareto import non_dominated_mask
from hpod.core.records import FAIL_REASON_ATTR, feasible


def _study(seed: int) -> optuna.Study:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["minimize", "maximize", "minimize"])
    for i in range(120):
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        kind = rng.choice(["complete", "complete", "complete", "fail", "infra", "pruned"])
        if kind == "fail" or kind == "infra":
            trial.set_user_attr(FAIL_REASON_ATTR, "interrupted" if kind == "infra" else "diverged")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if kind == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        trial.set_user_attr("hpod.info", {"energy_spent_joules": float(i)})
        trial.set_constraint("memory <= 1", float(rng.normal(-0.5, 1.0)))
        # Coarse values, so ties and duplicates occur.
        study.tell(trial, [float(v) for v in np.round(rng.uniform(0, 1, 3), 1)])
    return study


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_folding_trials_in_any_order_matches_a_full_pass(seed: int) -> None:
    study = _study(seed)
    trials = study.get_trials(deepcopy=False)
    ledger = FinishedTrials(["minimize", "maximize", "minimize"], keep_first_complete=6)
    for t in np.random.default_rng(seed).permutation(len(trials)):
        ledger.fold(trials[t])
        ledger.fold(trials[t])  # twice: counted once

    signs = np.array([1.0, -1.0, 1.0])
    ok = [t for t in trials if t.state.name == "COMPLETE" and feasible(t)]
    points = np.array([np.array(t.values) * signs for t in ok])
    mask = non_dominated_mask(points)
    assert ledger.pareto_numbers() == [t.number for t, m in zip(ok, mask) if m]
    assert ledger.best() == pytest.approx([min(t.values[0] for t in ok), max(t.values[1] for t in ok),
                                           min(t.values[2] for t in ok)])
    states = [t.state.name for t in trials]
    assert ledger.counts == {s: states.count(s) for s in set(states)}
    assert ledger.energy_joules == pytest.approx(
        sum(float((t.user_attrs.get("hpod.info") or {}).get("energy_spent_joules", 0.0)) for t in trials))
    fails = [t for t in trials if t.state.name == "FAIL"]
    assert ledger.infra_failures == sum(t.user_attrs[FAIL_REASON_ATTR] == "interrupted" for t in fails)
    assert ledger.objective_failures == len(fails) - ledger.infra_failures
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert [n for n, _ in ledger.first_complete] == [t.number for t in complete[:6]]
