"""Never the same configuration twice: within a run (NSGA-II on a discrete space), across
`hpod run` resumes of seeded samplers, and when the space runs out."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
import yaml
from hpod_testing import ROOT, run_cli

from hpod.core.engine import configuration_key
from hpod.core.records import REJECTED_ATTR
from hpod.store import Store

EXAMPLE = ROOT / "examples" / "synthetic-4obj.yaml"


def _evaluated(state_dir: Path, study: str) -> list[dict]:
    store = Store.for_state_dir(state_dir)
    try:
        trials = store.load_optuna_study(study).get_trials(deepcopy=False)
        return [dict(t.params) for t in trials
                if t.user_attrs.get(REJECTED_ATTR) is None and t.state.name in ("COMPLETE", "PRUNED", "RUNNING")]
    finally:
        store.close()


def _repeats(params: list[dict]) -> int:
    counts = collections.Counter(configuration_key(p) for p in params)
    return sum(n - 1 for n in counts.values())


def _status_study(state_dir: Path, name: str) -> dict:
    proc = run_cli(["status", "--json"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    return next(s for s in json.loads(proc.stdout)["studies"] if s["name"] == name)


def test_nsga2_on_the_example_runs_30_distinct_configurations(state_dir: Path) -> None:
    proc = run_cli(["run", str(EXAMPLE), "--n-trials", "30"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    evaluated = _evaluated(state_dir, "synthetic-4obj")
    assert len(evaluated) == 30
    assert _repeats(evaluated) == 0
    study = _status_study(state_dir, "synthetic-4obj")
    # NSGA-II's offspring repeat parents on this space; each repeat was asked again, and counted
    assert study["trials"]["COMPLETE"] == 30
    assert study["duplicates_rejected"] == study["trials"].get("REJECTED", 0)


@pytest.mark.parametrize("sampler", ["tpe", "random", "nsga2"])
def test_resumed_seeded_sampler_continues_instead_of_replaying(tmp_path: Path, state_dir: Path,
                                                                sampler: str) -> None:
    spec = {
        "name": f"resume-{sampler}",
        "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
        "sampler": {"name": sampler, "seed": 5, **({"options": {"population_size": 4}} if sampler == "nsga2"
                                                     else {})},
        "budget": {"n_trials": 4},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    for budget in (4, 8, 12):  # three runs of the same seeded spec: two resumes
        proc = run_cli(["run", str(path), "--n-trials", str(budget)], state_dir=state_dir)
        assert proc.returncode == 0, proc.stderr
    evaluated = _evaluated(state_dir, spec["name"])
    assert len(evaluated) == 12
    assert _repeats(evaluated) == 0


def test_exhausted_space_stops_the_study_and_says_so(tmp_path: Path, state_dir: Path) -> None:
    spec = {
        "name": "tiny-space",
        "objective": {"name": "synthetic:training_cost"},
        "space": {"learning_rate": 1.0e-4, "dropout": 0.1, "rank": 8, "alpha": 16,
                  "batch_size": [8, 16, 32], "epochs": {"type": "int", "low": 2, "high": 3}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
        "sampler": {"name": "nsga2", "seed": 1, "options": {"population_size": 4}},
        "budget": {"n_trials": 10},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli(["run", str(path)], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    evaluated = _evaluated(state_dir, "tiny-space")
    assert len(evaluated) == 6 and _repeats(evaluated) == 0  # 3 batch sizes x 2 epoch counts
    study = _status_study(state_dir, "tiny-space")
    assert study["state"] == "completed"
    assert "search space exhausted" in study["message"] and "all 6 configurations" in study["message"]
    store = Store.for_state_dir(state_dir)
    try:
        assert [e.kind for e in store.events(study="tiny-space", kinds=["search_space_exhausted"])] == \
            ["search_space_exhausted"]
        completed = store.events(study="tiny-space", kinds=["study_completed"])
        assert json.loads(completed[-1].payload_json)["reason"] == "search_space_exhausted"
    finally:
        store.close()
    # running it again does not start a 7th configuration
    again = run_cli(["run", str(path)], state_dir=state_dir)
    assert again.returncode == 0, again.stderr
    assert len(_evaluated(state_dir, "tiny-space")) == 6
