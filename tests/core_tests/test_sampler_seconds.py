"""The sampler's seconds per suggestion reach users: per trial in ``hpod trials --json``,
per study (mean, last, max) in ``hpod status``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hpod_testing import run_cli


def test_sampler_seconds_in_trials_and_status(state_dir: Path) -> None:
    spec = {
        "name": "sampler-seconds",
        "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
        "sampler": {"name": "tpe", "seed": 0},
        "budget": {"n_trials": 4},
    }
    path = state_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    proc = run_cli(["run", str(path)], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr

    trials = json.loads(run_cli(["trials", "sampler-seconds", "--json"], state_dir=state_dir).stdout)
    seconds = [t["sampler_seconds"] for t in trials]
    assert len(seconds) == 4 and all(isinstance(s, float) and s >= 0 for s in seconds)

    status = json.loads(run_cli(["status", "--json"], state_dir=state_dir).stdout)
    (study,) = status["studies"]
    stats = study["sampler_seconds"]
    assert stats["trials"] == 4
    assert stats["mean"] == pytest.approx(sum(seconds) / 4)
    assert stats["max"] == pytest.approx(max(seconds))
    text = run_cli(["status"], state_dir=state_dir, COLUMNS="250").stdout
    assert "sampler s/trial" in text
