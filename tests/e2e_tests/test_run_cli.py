"""`hpod run` end to end through the CLI, as a user runs it."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from hpod_testing import ROOT, cli_env, hpod_bin, run_cli, wait_for

from hpod.core.pareto import non_dominated_mask

EXAMPLE = ROOT / "examples" / "synthetic-4obj.yaml"
TRIAL_KEYS = {"number", "state", "values", "params", "constraints", "feasible", "measurements", "seeds"}


def _json(proc: subprocess.CompletedProcess[str]):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_constrained_four_objective_nsga2_study(state_dir: Path):
    proc = run_cli(["run", str(EXAMPLE), "--n-trials", "30"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front of synthetic-4obj" in proc.stdout

    trials = _json(run_cli(["trials", "synthetic-4obj", "--json"], state_dir=state_dir))
    assert len(trials) == 30 and all(t["state"] == "COMPLETE" for t in trials)
    for t in trials:
        assert set(t) >= TRIAL_KEYS
        assert set(t["values"]) == {"loss", "time_seconds", "memory_bytes", "energy_joules"}
        assert set(t["constraints"]) == {"memory_bytes <= 2.5e9", "time_seconds <= 12000",
                                         "energy_joules <= 3.0e6"}
        assert t["feasible"] == all(v <= 0 for v in t["constraints"].values())
        for name in ("time_seconds", "memory_bytes", "energy_joules"):
            assert t["measurements"][name]["method"] == "synthetic-cost-model"
            assert t["measurements"][name]["value"] == pytest.approx(t["values"][name])

    front = _json(run_cli(["pareto", "synthetic-4obj", "--json"], state_dir=state_dir))
    assert front, "the feasible front must not be empty"
    assert all(t["feasible"] for t in front)
    pts = np.array([[t["values"][k] for k in ("loss", "time_seconds", "memory_bytes", "energy_joules")]
                    for t in front])
    assert non_dominated_mask(pts).all(), "front members must be mutually non-dominated"
    feasible = [t for t in trials if t["feasible"]]
    all_pts = np.array([[t["values"][k] for k in ("loss", "time_seconds", "memory_bytes", "energy_joules")]
                        for t in feasible])
    assert int(non_dominated_mask(all_pts).sum()) == len(front)

    status = _json(run_cli(["status", "--json"], state_dir=state_dir))
    assert status["daemon"] is None
    (study,) = status["studies"]
    assert study["name"] == "synthetic-4obj" and study["state"] == "completed"
    assert study["trials"]["COMPLETE"] == 30 and study["pareto_front_size"] == len(front)
    assert study["hypervolume"] > 0 and set(study["best"]) == {"loss", "time_seconds", "memory_bytes",
                                                                 "energy_joules"}
    text = run_cli(["status"], state_dir=state_dir)
    assert "synthetic-4obj" in text.stdout and "not reachable" in text.stdout

    exported = run_cli(["export", "synthetic-4obj", "--format", "csv"], state_dir=state_dir)
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == 30 and "value.loss" in rows[0] and "method.energy_joules" in rows[0]
    out = state_dir / "trials.json"
    run_cli(["export", "synthetic-4obj", "--format", "json", "-o", str(out)], state_dir=state_dir)
    assert len(json.loads(out.read_text())) == 30

    # running it again resumes the finished study instead of starting over
    again = run_cli(["run", str(EXAMPLE), "--n-trials", "30"], state_dir=state_dir)
    assert again.returncode == 0 and "resuming study" in again.stderr
    assert len(_json(run_cli(["trials", "synthetic-4obj", "--json"], state_dir=state_dir))) == 30


def test_unknown_study_and_format_exit_2(state_dir: Path):
    run_cli(["run", str(EXAMPLE), "--n-trials", "2"], state_dir=state_dir)
    proc = run_cli(["trials", "no-such-study"], state_dir=state_dir)
    assert proc.returncode == 2 and "no study named 'no-such-study'" in proc.stderr
    proc = run_cli(["export", "synthetic-4obj", "--format", "xml"], state_dir=state_dir)
    assert proc.returncode == 2 and "csv or json" in proc.stderr


def _spec(tmp_path: Path, name: str, **fields) -> Path:
    spec = {"name": name, "budget": {"n_trials": 6}, **fields}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _trial_states(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def test_interrupt_then_resume_keeps_completed_trials(tmp_path: Path, state_dir: Path):
    spec = _spec(tmp_path, "interrupt-me", objective={"name": "hpod_test_objectives:slow",
                                                        "params": {"seconds": 0.6}},
                 sampler={"name": "random", "seed": 3})
    proc = subprocess.Popen([hpod_bin(), "run", str(spec)], env=cli_env(state_dir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    db = state_dir / "hpod.db"
    def two_done_one_running() -> bool:
        if not db.exists():
            return False
        try:
            states = _trial_states(db)
        except sqlite3.OperationalError:
            return False
        return sum(s == "COMPLETE" for _, s in states) >= 2 and any(s == "RUNNING" for _, s in states)

    wait_for(two_done_one_running, 60, "two completed trials and a running one", interval=0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command to continue" in err

    trials = _json(run_cli(["trials", "interrupt-me", "--json"], state_dir=state_dir))
    completed_before = {t["number"] for t in trials if t["state"] == "COMPLETE"}
    interrupted = [t for t in trials if t["fail_reason"] == "interrupted"]
    assert len(completed_before) >= 2 and len(interrupted) == 1
    assert not [t for t in trials if t["state"] == "RUNNING"]

    again = run_cli(["run", str(spec)], state_dir=state_dir)
    assert again.returncode == 0, again.stderr
    trials = _json(run_cli(["trials", "interrupt-me", "--json"], state_dir=state_dir))
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(complete) == 6, "exactly the budget completes after resuming"
    assert completed_before <= {t["number"] for t in complete}, "nothing completed is lost"
    # the interrupted configuration was re-queued and ran again
    assert interrupted[0]["params"] in [t["params"] for t in complete]


@pytest.mark.parametrize("mode,reason", [
    ("raise", "RuntimeError: diverged at x="),
    ("nan", "objective returned nan for 'loss'"),
    ("exit", "exited with code 3"),
    ("kill", "killed by SIGKILL"),
    ("memory", "out of memory"),
])
def test_crashing_trials_are_isolated(mode: str, reason: str, tmp_path: Path, state_dir: Path):
    spec = _spec(tmp_path, f"crash-{mode}", objective={"name": "hpod_test_objectives:crashy",
                                                       "params": {"mode": mode}},
                 sampler={"name": "random", "seed": 11}, budget={"n_trials": 8})
    proc = run_cli(["run", str(spec)], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    trials = _json(run_cli(["trials", f"crash-{mode}", "--json"], state_dir=state_dir))
    failed = [t for t in trials if t["state"] == "FAIL"]
    ok = [t for t in trials if t["state"] == "COMPLETE"]
    assert len(trials) == 8 and failed and ok, [(t["state"], t["params"]) for t in trials]
    assert all(t["params"]["x"] > 0.5 for t in failed)
    assert all(reason in t["fail_reason"] for t in failed), [t["fail_reason"] for t in failed]
    status = _json(run_cli(["status", "--json"], state_dir=state_dir))
    assert status["studies"][0]["failed"] == len(failed)


def test_measurement_provenance_labels(tmp_path: Path, state_dir: Path):
    spec = _spec(tmp_path, "measured", objective={"name": "hpod_test_objectives:busy",
                                                   "params": {"seconds": 2.5, "megabytes": 80}},
                 sampler={"name": "random", "seed": 1}, budget={"n_trials": 1}, seeds=2,
                 objectives=[{"name": "loss"}, {"name": "energy_joules"}, {"name": "memory_bytes"}])
    assert run_cli(["run", str(spec)], state_dir=state_dir).returncode == 0
    (trial,) = _json(run_cli(["trials", "measured", "--json"], state_dir=state_dir))
    m = trial["measurements"]
    assert m["time_seconds"]["method"] == "wall-clock" and 2.4 < m["time_seconds"]["value"] < 10
    assert m["memory_bytes"]["method"] == "rss-peak" and m["memory_bytes"]["value"] > 60e6
    # no GPU and no RAPL here: CodeCarbon's estimate (or its fallback when CodeCarbon fails)
    assert m["energy_joules"]["method"] in ("codecarbon-estimate", "codecarbon-rapl", "cpu-time-estimate")
    assert m["energy_joules"]["value"] > 0
    assert len(trial["seeds"]) == 2 and {s["seed"] for s in trial["seeds"]} == {0, 1}
    assert "loss" in trial["metrics_std"]

    spec2 = _spec(tmp_path, "measured-no-cc", objective={"name": "hpod_test_objectives:busy",
                                                          "params": {"seconds": 0.5}},
                  budget={"n_trials": 1}, objectives=[{"name": "loss"}, {"name": "energy_joules"}])
    assert run_cli(["run", str(spec2), "--no-codecarbon"], state_dir=state_dir).returncode == 0
    (trial2,) = _json(run_cli(["trials", "measured-no-cc", "--json"], state_dir=state_dir))
    assert trial2["measurements"]["energy_joules"]["method"] == "cpu-time-estimate"
    assert trial2["measurements"]["energy_joules"]["value"] > 0


@pytest.mark.slow
def test_qlognehvi_on_branin_currin(tmp_path: Path, state_dir: Path):
    spec = _spec(tmp_path, "bc-qlognehvi", objective={"name": "synthetic:branin_currin"},
                 objectives=[{"name": "f0"}, {"name": "f1"}], sampler={"name": "qlognehvi", "seed": 0},
                 budget={"n_trials": 12})
    proc = run_cli(["run", str(spec)], state_dir=state_dir, timeout=600)
    assert proc.returncode == 0, proc.stderr
    trials = _json(run_cli(["trials", "bc-qlognehvi", "--json"], state_dir=state_dir))
    assert len(trials) == 12 and all(t["state"] == "COMPLETE" for t in trials)
    status = _json(run_cli(["status", "--json"], state_dir=state_dir))
    (study,) = status["studies"]
    assert study["sampler"] == "qlognehvi" and study["hypervolume"] > 0


def test_a_changed_spec_resumes_saying_what_changed_and_a_different_study_is_refused(tmp_path: Path,
                                                                                       state_dir: Path):
    objective = {"name": "synthetic:training_cost"}
    space = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}, "rank": [4, 8]}
    first = _spec(tmp_path, "grows", objective=objective, space=space, sampler={"name": "random", "seed": 1})
    assert run_cli(["run", str(first), "--n-trials", "3"], state_dir=state_dir).returncode == 0
    db = state_dir / "hpod.db"
    before = (_trial_states(db), db.stat().st_size)

    # another space, another objective parameter: another study (refused, nothing written)
    for changed, field in (({**space, "rank": [4, 8, 16]}, "space.rank"), (space, "objective.params")):
        params = {"noise": 0.5} if field == "objective.params" else {}
        spec = _spec(tmp_path, "grows", objective={**objective, "params": params}, space=changed,
                     sampler={"name": "random", "seed": 1})
        proc = run_cli(["run", str(spec)], state_dir=state_dir)
        assert proc.returncode == 2, proc.stderr
        assert field in proc.stderr and "another name" in proc.stderr and "Traceback" not in proc.stderr
        assert (_trial_states(db), db.stat().st_size) == before

    # a larger budget and another sampler: resumed, and the changes are said
    grown = _spec(tmp_path, "grows", objective=objective, space=space, sampler={"name": "tpe", "seed": 1},
                  budget={"n_trials": 5})
    proc = run_cli(["run", str(grown)], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    assert "budget.n_trials: 3 → 5" in proc.stderr and 'sampler.name: "random" → "tpe"' in proc.stderr
    assert len(_trial_states(db)) == 5


def test_a_second_hpod_run_of_a_running_study_is_refused_and_writes_nothing(tmp_path: Path, state_dir: Path):
    spec = _spec(tmp_path, "one-driver", objective={"name": "hpod_test_objectives:slow", "params": {"seconds": 1.0}},
                 sampler={"name": "random", "seed": 3}, budget={"n_trials": 4})
    first = subprocess.Popen([hpod_bin(), "run", str(spec)], env=cli_env(state_dir), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    db = state_dir / "hpod.db"
    try:
        def running() -> bool:
            try:
                return db.exists() and any(s == "RUNNING" for _, s in _trial_states(db))
            except sqlite3.OperationalError:  # the first run is still creating the tables
                return False

        wait_for(running, 120, "the first run to start a trial")
        second = run_cli(["run", str(spec)], state_dir=state_dir)
        assert second.returncode == 2, second.stderr
        assert "driven by another controller" in second.stderr and "Traceback" not in second.stderr
        assert first.wait(240) == 0, first.stderr.read() if first.stderr else ""
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(30)
    # the second controller told nothing and asked nothing: exactly the first's 4 trials
    assert [s for _, s in _trial_states(db)] == ["COMPLETE"] * 4
    # once the first is done, the study can be run again (resumed: nothing left to do)
    again = run_cli(["run", str(spec)], state_dir=state_dir)
    assert again.returncode == 0 and "resuming study" in again.stderr
