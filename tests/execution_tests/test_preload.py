"""The fork server preloads the module of a user's objective: a trial process finds it
imported already, with nothing written in the objective for it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hpod_testing import run_cli

from hpod.execution.executor import HEAVY_PRELOAD, preload_for
from hpod.objectives.base import create_objective


def test_preload_names_the_objectives_module_and_keeps_what_it_asks_for() -> None:
    assert preload_for(create_objective("hpod_preload_probe:probe")) == ("hpod_preload_probe",)
    # A built-in keeps its own list; hpod's modules are in every fork server anyway.
    assert preload_for(create_objective("synthetic:branin_currin")) == (
        "torch", "botorch.test_functions.multi_objective")
    assert "hpod" not in {m.split(".")[0] for m in preload_for(create_objective("t5_lora"))}
    assert set(HEAVY_PRELOAD) <= set(preload_for(create_objective("t5_lora")))


def test_user_function_module_is_imported_once_in_the_fork_server(state_dir: Path) -> None:
    spec = {
        "name": "preload-probe",
        "objective": {"name": "hpod_preload_probe:probe"},
        "objectives": [{"name": "loss"}, {"name": "imported_in_trial"}],
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 4},
    }
    path = state_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli(["run", str(path), "--cpu-slots", "2"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    trials = json.loads(run_cli(["trials", "preload-probe", "--json"], state_dir=state_dir).stdout)
    assert len(trials) == 4 and all(t["state"] == "COMPLETE" for t in trials)
    assert [t["values"]["imported_in_trial"] for t in trials] == [0.0] * 4
