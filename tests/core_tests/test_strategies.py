"""Search strategies: scalarized cost with Lagrangian constraints, PBT, adaptive seeds,
multi-objective pruning and early stopping — through the real engine, store and
trial processes on ``synthetic:training_cost`` (milliseconds per trial)."""

from __future__ import annotations

import json
import statistics
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpod_testing import wait_for

from hpod.core.controller import Controller
from hpod.core.engine import Engine
from hpod.core.records import feasible, trial_record
from hpod.core.strategies import (
    EarlyStopping,
    MOASHAPruner,
    lagrange_multipliers,
    lambda_sweep_specs,
    multiplier_history,
    pbt_lineage,
    pbt_state,
)
from hpod.errors import SpecError
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import parse_spec, resolve
from hpod.store import Store

COST_OBJECTIVES = [{"name": "loss"}, {"name": "time_seconds"}, {"name": "energy_joules"}]


def run_study(spec_dict: dict[str, Any], state_dir: Path, *, slots: int = 2,
              limit_seconds: float = 90) -> tuple[Engine, Store]:
    """Run a study to the end of its budget on local CPU slots, as ``hpod run`` does."""
    spec = parse_spec(spec_dict)
    store = Store.for_state_dir(state_dir)
    executor = LocalExecutor(store, state_dir, slots=[Slot(f"cpu{i}") for i in range(slots)], codecarbon=False)
    controller = Controller(store, state_dir, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))
    def drive() -> None:
        if not controller.step():
            controller.wait(0.05)

    wait_for(lambda: spec.name not in controller.engines, limit_seconds, f"study {spec.name} to finish",
             interval=0, between=drive)
    return engine, store


def finish_next_job(engine: Engine, metrics: dict[str, float]) -> None:
    """Play a worker: claim the study's next job and store ``metrics`` as its result."""
    engine.ask(1)
    job = engine.store.claim_job("test-worker", lease_seconds=30, studies=[engine.name])
    assert job is not None
    result = {"metrics": metrics, "metrics_std": {}, "measurements": {}, "seeds": [{"seed": 0, "values": metrics}],
              "pruned": False, "energy_spent_joules": metrics.get("energy_joules", 0.0)}
    assert engine.store.finish_job(job.id, job.lease_token, result=result)  # type: ignore[arg-type]
    assert len(engine.collect()) == 1


# ---------------------------------------------------------------------- spec
def test_spec_accepts_strategy_pruner_and_adaptive_seeds_and_round_trips() -> None:
    spec = parse_spec({
        "name": "s", "objective": {"name": "synthetic:training_cost"}, "objectives": COST_OBJECTIVES,
        "budget": {"n_trials": 5}, "strategy": {"kind": "scalarized", "lambda": 0.5, "weights": {"energy_joules": 2}},
        "pruner": {"kind": "mo_asha", "reduction_factor": 2}, "seeds": {"max": 3, "adaptive": True},
    })
    assert spec.strategy.cost_weight == 0.5
    assert spec.seeds == 3 and spec.seeds_adaptive is not None
    assert spec.directions == ["minimize"] and spec.value_names == ["scalarized"]
    assert parse_spec(json.loads(spec.model_dump_json())) == spec  # what the store keeps parses back


@pytest.mark.parametrize("strategy, pruner, seeds, message", [
    ({"kind": "pbt", "lambda": 0.5}, None, None, "only applies to kind 'scalarized'"),
    ({"kind": "scalarized", "weights": {"rouge1": 1}}, None, None, "strategy.weights.rouge1"),
    ({"kind": "pbt", "quantile": 0.9}, None, None, "quantile"),
    (None, {"kind": "early_stopping", "reduction_factor": 2}, None, "only applies to kind 'mo_asha'"),
    (None, None, {"max": 3, "adaptve": True}, "adaptve"),
])
def test_spec_rejects_misplaced_or_invalid_strategy_options(strategy: Any, pruner: Any, seeds: Any,
                                                            message: str) -> None:
    data: dict[str, Any] = {"name": "s", "objective": {"name": "synthetic:training_cost"},
                            "objectives": COST_OBJECTIVES, "budget": {"n_trials": 5}}
    for key, value in (("strategy", strategy), ("pruner", pruner), ("seeds", seeds)):
        if value is not None:
            data[key] = value
    with pytest.raises(SpecError, match=message):
        parse_spec(data)


# ---------------------------------------------------------------------- scalarized
def test_lagrange_multipliers_rise_while_violated_and_fall_back_to_zero(tmp_path: Path) -> None:
    spec = parse_spec({
        "name": "lagr", "objective": {"name": "synthetic:training_cost"}, "objectives": COST_OBJECTIVES,
        "constraints": ["time_seconds <= 1000"], "budget": {"n_trials": 20},
        "sampler": {"name": "random", "seed": 0},
        "strategy": {"kind": "scalarized", "lambda": 0.2, "dual_step": 0.5},
    })
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, spec, state_dir=tmp_path)
    engine.start()
    name = "time_seconds <= 1000"
    violated = {"loss": 2.0, "time_seconds": 1500.0, "energy_joules": 2e5, "memory_bytes": 1e9}
    satisfied = {"loss": 2.1, "time_seconds": 600.0, "energy_joules": 1e5, "memory_bytes": 1e9}
    seen = []
    for _ in range(4):
        finish_next_job(engine, violated)
        seen.append(lagrange_multipliers(store, "lagr")[name])
    assert seen == sorted(seen) and seen[0] > 0 and seen[-1] == pytest.approx(4 * 0.5 * 0.5)
    for _ in range(6):
        finish_next_job(engine, satisfied)
        seen.append(lagrange_multipliers(store, "lagr")[name])
    falling = seen[4:]
    assert all(b <= a for a, b in pairwise(falling))
    assert falling[-1] == 0.0  # projected: never negative, exactly 0 once satisfied long enough
    history = multiplier_history(store, "lagr")
    assert [h["multipliers"][name] for h in history] == seen
    # The penalty μ·g is part of F: a violating trial told while μ > 0 scores worse than
    # the same metrics told at μ = 0 (the first trial).
    trials = engine.study.get_trials()
    assert trials[1].values[0] > trials[0].values[0]
    assert trials[0].user_attrs["hpod.scalarized"]["penalty"] == 0.0
    # The study's single value is F; its components stay in the metrics.
    record = trial_record(trials[0], spec.value_names)
    assert set(record["values"]) == {"scalarized"} and record["metrics"]["time_seconds"] == 1500.0


def test_scalarized_study_on_training_cost_ends_with_a_feasible_best_trial(tmp_path: Path) -> None:
    engine, store = run_study({
        "name": "scal", "objective": {"name": "synthetic:training_cost"}, "objectives": COST_OBJECTIVES,
        "constraints": ["time_seconds <= 800"], "budget": {"n_trials": 24},
        "sampler": {"name": "tpe", "seed": 2, "options": {"n_startup_trials": 8}},
        "strategy": {"kind": "scalarized", "lambda": 0.3},
    }, tmp_path)
    trials = engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 24
    assert any(not feasible(t) for t in trials), "the constraint should bind for this test to mean anything"
    best = min((t for t in trials if feasible(t)), key=lambda t: t.values[0])
    assert best.user_attrs["hpod.metrics"]["time_seconds"] <= 800
    summary = engine.summary(refresh=True)
    assert summary.best["scalarized"] == pytest.approx(best.values[0])
    assert summary.best["time_seconds"] <= 800
    # `hpod status` shows the multipliers; the exporter reads the same function.
    from hpod.core.views import study_rows

    row = next(r for r in study_rows(store) if r["name"] == "scal")
    assert row["strategy"]["kind"] == "scalarized"
    assert set(row["strategy"]["multipliers"]) == {"time_seconds <= 800"}
    assert lagrange_multipliers(store, "scal") == row["strategy"]["multipliers"]
    # Scales: the constraint bound for time, a frozen running median for energy.
    assert row["strategy"]["scales"]["time_seconds"] == 800
    assert row["strategy"]["scales"]["energy_joules"] > 0


def test_lambda_sweep_specs_are_scalarized_studies_one_per_lambda() -> None:
    base = parse_spec({"name": "sweep", "objective": {"name": "synthetic:training_cost"},
                       "objectives": COST_OBJECTIVES, "budget": {"n_trials": 5}})
    specs = lambda_sweep_specs(base, [0.0, 0.5, 2.0])
    assert [s.name for s in specs] == ["sweep.lambda-0", "sweep.lambda-0.5", "sweep.lambda-2"]
    assert {s.strategy.kind for s in specs} == {"scalarized"}
    assert [s.strategy.cost_weight for s in specs] == [0.0, 0.5, 2.0]
    with pytest.raises(ValueError, match="lambdas must be >= 0"):
        lambda_sweep_specs(base, [-1.0])


# ---------------------------------------------------------------------- PBT
def test_pbt_of_six_members_exploits_explores_and_improves_the_median(tmp_path: Path) -> None:
    engine, store = run_study({
        "name": "pbt", "objective": {"name": "synthetic:training_cost_pbt"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}], "budget": {"n_trials": 100},
        "sampler": {"seed": 4},
        "strategy": {"kind": "pbt", "population": 6, "generations": 4, "interval_steps": 3, "quantile": 0.34},
    }, tmp_path)
    state = pbt_state(store, "pbt")
    assert state["done"] and len(state["medians"]) == 4
    assert state["medians"][-1] < state["medians"][0]
    lineage = pbt_lineage(store, "pbt")
    assert len(lineage) == 3 * 2  # 2 of 6 members replaced after each of generations 0, 1, 2
    for step in lineage:
        assert step["copied_from"] != step["member"]
        assert step["donor_score"] < step["replaced_score"]
        assert step["mutation"] and set(step["mutation"]) <= {"learning_rate", "dropout"}
        assert all(m in ("x0.8", "x1.2", "resample") for m in step["mutation"].values())
    trials = engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 6 * 4
    # Every interval resumed where its checkpoint (own or copied) left off: 3 steps per generation.
    by_generation: dict[int, set[float]] = {}
    for t in trials:
        generation = t.user_attrs["hpod.pbt"]["generation"]
        by_generation.setdefault(generation, set()).add(t.user_attrs["hpod.metrics"]["step"])
    assert by_generation == {0: {3.0}, 1: {6.0}, 2: {9.0}, 3: {12.0}}
    # A copied member continues from its donor's checkpoint with the mutated hyperparameters.
    first = lineage[0]
    nxt = next(t for t in trials if t.user_attrs["hpod.pbt"] == {**t.user_attrs["hpod.pbt"], "member": first["member"],
                                                                   "generation": first["generation"] + 1})
    resumed = json.loads((Path(nxt.user_attrs["hpod.pbt"]["resume_from"]) / "state.json").read_text())
    donor_state = json.loads((Path(first["donor_checkpoint"]) / "state.json").read_text())
    assert resumed == donor_state
    from hpod.core.views import study_rows

    row = next(r for r in study_rows(store) if r["name"] == "pbt")
    assert row["strategy"]["exploits"] == 6


def test_pbt_interval_lost_with_its_node_is_requeued_from_the_same_checkpoint(tmp_path: Path) -> None:
    spec = parse_spec({
        "name": "pbt-lost", "objective": {"name": "synthetic:training_cost_pbt"}, "budget": {"n_trials": 50},
        "strategy": {"kind": "pbt", "population": 2, "generations": 2, "interval_steps": 2},
    })
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, spec, state_dir=tmp_path)
    engine.start()
    jobs = engine.ask(4)
    assert len(jobs) == 2  # one interval per member; the next generation waits for both
    claimed = store.claim_job("node-that-dies", lease_seconds=1, studies=["pbt-lost"])
    assert claimed is not None
    resume = json.loads(claimed.params_json)["hpod.resume_from"]
    assert json.loads((Path(resume) / "pbt.json").read_text())["interval_steps"] == 2
    assert store.expire_leases(now=time.time() + 60)
    engine.collect()
    queued = store.jobs("pbt-lost", states=["queued"])
    retry = next(j for j in queued if j.trial_number != jobs[1].trial_number)
    assert json.loads(retry.params_json)["hpod.resume_from"] == resume
    assert retry.attempt == 2
    assert {k: v for k, v in json.loads(retry.params_json).items() if k != "hpod.resume_from"} == \
        {k: v for k, v in json.loads(claimed.params_json).items() if k != "hpod.resume_from"}


# ---------------------------------------------------------------------- adaptive seeds
def test_adaptive_seeds_spend_fewer_evaluations_with_the_same_front(tmp_path: Path) -> None:
    def study(name: str, seeds: Any) -> tuple[int, set[tuple[Any, ...]], Engine]:
        engine, _ = run_study({
            "name": name, "objective": {"name": "synthetic:training_cost", "params": {"noise": 0.05,
                                                                                       "cost_noise": 0.05}},
            "objectives": [{"name": "loss"}, {"name": "time_seconds"}], "budget": {"n_trials": 24},
            "sampler": {"name": "random", "seed": 3}, "seeds": seeds,
        }, tmp_path / name)
        trials = engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        front = set(engine.summary(refresh=True).pareto)
        evaluations = sum(len(t.user_attrs["hpod.seeds"]) for t in trials)
        return evaluations, {tuple(sorted(t.params.items())) for t in trials if t.number in front}, engine

    fixed_evals, fixed_front, _ = study("fixed", 3)
    adaptive_evals, adaptive_front, engine = study("adaptive", {"max": 3, "adaptive": True})
    assert fixed_evals == 24 * 3
    assert adaptive_evals < 0.85 * fixed_evals
    assert adaptive_front == fixed_front
    # Per-seed values are kept; the told values are their means.
    trials = engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    one_seed = [t for t in trials if len(t.user_attrs["hpod.seeds"]) == 1]
    several = [t for t in trials if len(t.user_attrs["hpod.seeds"]) == 3]
    assert one_seed and several
    t = several[0]
    assert t.values[0] == pytest.approx(statistics.fmean(s["values"]["loss"] for s in t.user_attrs["hpod.seeds"]))


# ---------------------------------------------------------------------- pruning
def test_mo_asha_ranks_by_non_dominated_sorting_at_each_rung() -> None:
    pruner = MOASHAPruner(metrics=["loss", "energy_joules"], signs=[1.0, 1.0], min_resource=1, reduction_factor=2)
    assert [pruner.rung_of(s) for s in (1, 2, 3, 4, 8)] == [0, 1, 1, 2, 3]
    assert not pruner.should_stop(0, 0, 1, {"loss": 1.0, "energy_joules": 10.0})  # alone: promoted
    assert not pruner.should_stop(1, 0, 1, {"loss": 2.0, "energy_joules": 5.0})  # trade-off: same front
    # Dominated by both on (loss, energy so far): stopped.
    assert pruner.should_stop(2, 0, 1, {"loss": 3.0, "energy_joules": 20.0})
    assert pruner.should_stop(2, 0, 2, {"loss": 3.0, "energy_joules": 20.0})  # stays stopped
    # A report that lacks a ranked metric never stops a trial blindly.
    assert not pruner.should_stop(3, 0, 1, {"loss": 0.5})
    # Later seeds of a configuration are not judged.
    assert not pruner.should_stop(4, 1, 1, {"loss": 9.0, "energy_joules": 99.0})


def test_early_stopping_stops_after_patience_evaluations_without_improvement() -> None:
    stop = EarlyStopping(metric="loss", min_delta=0.01, patience=3)
    losses = [2.0, 1.5, 1.2, 1.195, 1.19, 1.199]
    decisions = [stop.should_stop(0, 0, {"loss": v}) for v in losses]
    assert decisions == [False, False, False, False, False, True]
    # Another seed of the same trial has its own history.
    assert not stop.should_stop(0, 1, {"loss": 5.0})


def test_mo_pruning_stops_trials_and_cuts_the_energy_spent(tmp_path: Path) -> None:
    base = {"objective": {"name": "synthetic:training_cost", "params": {"evals_per_epoch": 3}},
            "objectives": COST_OBJECTIVES, "budget": {"n_trials": 16}, "sampler": {"name": "random", "seed": 5}}
    plain, _ = run_study({"name": "plain", **base}, tmp_path / "plain")
    pruned, _store = run_study({"name": "asha", **base, "pruner": {"kind": "mo_asha", "min_resource": 2,
                                                                  "reduction_factor": 3}}, tmp_path / "asha")
    s_plain, s_pruned = plain.summary(refresh=True), pruned.summary(refresh=True)
    assert s_plain.counts.get("PRUNED", 0) == 0
    assert s_pruned.counts.get("PRUNED", 0) >= 4
    assert s_pruned.energy_spent_joules < 0.8 * s_plain.energy_spent_joules
    # Pruned trials keep what they measured, and their energy counts as spent.
    records = [trial_record(t, pruned.spec.value_names) for t in pruned.study.get_trials()]
    stopped = [r for r in records if r["state"] == "PRUNED"]
    assert all(r["energy_spent_joules"] > 0 and r["metrics"]["energy_joules"] > 0 for r in stopped)
    assert s_pruned.energy_spent_joules == pytest.approx(sum(r["energy_spent_joules"] for r in records))
    # The same configurations were sampled in both studies (same random sampler seed).
    assert [t.params for t in plain.study.get_trials()] == [t.params for t in pruned.study.get_trials()]


def test_worker_side_handlers_prune_and_decide_seeds_from_the_store(tmp_path: Path) -> None:
    from hpod.core.engine import trial_handlers

    spec = parse_spec({"name": "remote", "objective": {"name": "synthetic:training_cost"},
                       "objectives": [{"name": "loss"}, {"name": "time_seconds"}], "budget": {"n_trials": 5},
                       "pruner": {"kind": "early_stopping", "patience": 1}, "seeds": {"max": 2, "adaptive": True}})
    store = Store.for_state_dir(tmp_path)
    engine = Engine(store, spec, state_dir=tmp_path)
    engine.start()
    finish_next_job(engine, {"loss": 1.0, "time_seconds": 100.0, "energy_joules": 1.0, "memory_bytes": 1.0})
    report, more_seeds = trial_handlers(store, spec, tmp_path)  # as an `hpod worker` would build them
    job = store.create_job(study="remote", trial_id=999, trial_number=7, params={})
    assert not report(job, 0, 1, {"loss": 2.0}) and report(job, 0, 2, {"loss": 2.0})  # no improvement: stop
    assert not more_seeds(job, 0, {"loss": 3.0, "time_seconds": 900.0})  # dominated by the stored trial
    assert more_seeds(job, 0, {"loss": 0.5, "time_seconds": 900.0})  # a trade-off: worth another seed


@pytest.mark.parametrize("path", ["examples/synthetic-scalarized.yaml", "examples/synthetic-pbt.yaml"])
def test_example_strategy_specs_resolve(path: str) -> None:
    from hpod.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / path)
    assert resolve(spec).spec.strategy.kind in ("scalarized", "pbt")
