"""Multi-fidelity ``auto``: the spec switch (and the pruner it brings), pruned trials
imputed at the fidelity they reached, and a GP that learns from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from hpod_testing import wait_for
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from hpod.core.controller import Controller
from hpod.core.engine import Engine
from hpod.core.samplers import MultiFidelitySampler, create_sampler
from hpod.core.samplers._auto import build_gp_sampler
from hpod.core.samplers._multifidelity import impute_pruned
from hpod.errors import SpecError
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import parse_spec, resolve
from hpod.store import Store

NAMES = ["loss", "energy_joules", "memory_bytes"]
SPACE = {"x": FloatDistribution(0.0, 1.0), "y": FloatDistribution(0.0, 1.0)}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def run_study(spec_dict: dict[str, Any], state_dir: Path, limit_seconds: float = 120) -> Engine:
    """Run a study to the end of its budget on two local CPU slots, as ``hpod run`` does."""
    spec = parse_spec(spec_dict)
    store = Store.for_state_dir(state_dir)
    executor = LocalExecutor(store, state_dir, slots=[Slot("cpu0"), Slot("cpu1")], codecarbon=False)
    controller = Controller(store, state_dir, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))

    def drive() -> None:
        if not controller.step():
            controller.wait(0.05)

    wait_for(lambda: spec.name not in controller.engines, limit_seconds, f"study {spec.name} to finish",
             interval=0, between=drive)
    return engine


def _spec(**extra: Any) -> dict[str, Any]:
    return {"name": "mf", "objective": {"name": "synthetic:training_cost"},
            "objectives": [{"name": "loss"}, {"name": "energy_joules"}], "budget": {"n_trials": 5},
            "sampler": {"name": "auto", "options": {"multi_fidelity": True}}, **extra}


def test_spec_multi_fidelity_brings_mo_asha_and_keeps_a_stated_pruner() -> None:
    assert parse_spec(_spec()).pruner.kind == "mo_asha"
    stated = parse_spec(_spec(pruner={"kind": "early_stopping", "patience": 2}))
    assert stated.pruner.kind == "early_stopping" and stated.pruner.patience == 2
    assert parse_spec({**_spec(), "sampler": {"name": "auto"}}).pruner.kind == "none"


@pytest.mark.parametrize("extra, field", [
    ({"pruner": {"kind": "none"}}, "sampler.options.multi_fidelity"),
    ({"strategy": {"kind": "scalarized"}}, "sampler.options.multi_fidelity"),
    ({"sampler": {"name": "auto", "options": {"multi_fidelity": "yes"}}}, "sampler.options.multi_fidelity"),
    ({"sampler": {"name": "tpe", "options": {"multi_fidelity": True}}}, "sampler.options.multi_fidelity"),
])
def test_spec_refuses_multi_fidelity_where_it_cannot_apply(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(_spec(**extra))


def test_auto_with_multi_fidelity_says_so_in_its_reason() -> None:
    choice = create_sampler("auto", {"multi_fidelity": True}, directions=["minimize", "minimize"],
                            n_trials=20, n_params=2, seed=0)
    assert isinstance(choice.sampler, MultiFidelitySampler) and choice.name == "gp"
    assert "multi-fidelity" in choice.reason
    plain = create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=20, n_params=2, seed=0)
    assert not isinstance(plain.sampler, MultiFidelitySampler) and "multi-fidelity" not in plain.reason


def _add(study: optuna.Study, x: float, state: TrialState, metrics: dict[str, float], last_step: int) -> None:
    reports = [[0, s, {"loss": metrics["loss"] + 0.1 * (last_step - s)}] for s in range(1, last_step + 1)]
    study.add_trial(optuna.trial.create_trial(
        params={"x": x, "y": 0.5}, distributions=SPACE, state=state,
        values=[metrics[n] for n in NAMES] if state == TrialState.COMPLETE else None,
        user_attrs={"hpod.metrics": metrics, "hpod.info": {"intermediate": reports}},
    ))


def _study() -> optuna.Study:
    study = optuna.create_study(directions=["minimize"] * 3)
    study.set_metric_names(NAMES)
    return study


def test_pruned_trials_enter_at_the_values_completed_curves_extrapolate_to() -> None:
    study = _study()
    # Completed curves fall by 0.1 a step to their end: trial 0 by 1.0 from step 2, trial 1 by 0.6.
    _add(study, 0.1, TrialState.COMPLETE, {"loss": 1.0, "energy_joules": 40.0, "memory_bytes": 5.0}, 12)
    _add(study, 0.2, TrialState.COMPLETE, {"loss": 1.1, "energy_joules": 30.0, "memory_bytes": 6.0}, 8)
    _add(study, 0.9, TrialState.PRUNED, {"loss": 3.0, "energy_joules": 2.5, "memory_bytes": 7.0}, 2)
    _add(study, 0.8, TrialState.PRUNED, {"loss": 3.0}, 2)  # nothing measured: cannot be imputed
    trials = study.get_trials()
    imputed = impute_pruned(trials[:2], trials[2:], NAMES)
    assert len(imputed) == 1 and imputed[0].state == TrialState.COMPLETE
    # loss: 3.0 plus the completed trials' median change from step 2 to their end (-0.8);
    # energy (not in the reports): scaled from step 2 to the completed trials' median last
    # step (10); memory (a peak) as measured.
    assert imputed[0].values == pytest.approx([2.2, 12.5, 7.0])
    assert imputed[0].params == {"x": 0.9, "y": 0.5}
    # The earlier rule, kept for the benchmark's comparison: the loss as it stood.
    as_stood = impute_pruned(trials[:2], trials[2:], NAMES, extrapolate=False)
    assert as_stood[0].values == pytest.approx([3.0, 12.5, 7.0])


def _add_curve(study: optuna.Study, x: float, state: TrialState, losses: list[float], joules: list[float]) -> None:
    """A trial whose reports carry its loss and the energy spent so far, step by step."""
    reports = [[0, s, {"loss": v, "energy_joules": e}] for s, (v, e) in enumerate(zip(losses, joules), start=1)]
    metrics = {"loss": min(losses), "energy_joules": joules[-1], "memory_bytes": 5.0}
    study.add_trial(optuna.trial.create_trial(
        params={"x": x, "y": 0.5}, distributions=SPACE, state=state,
        values=[metrics[n] for n in NAMES] if state == TrialState.COMPLETE else None,
        user_attrs={"hpod.metrics": metrics, "hpod.info": {"intermediate": reports}},
    ))


def test_a_pruned_trials_cost_grows_as_completed_runs_did_from_the_same_step() -> None:
    study = _study()
    # 10 J to start, then 2 J a step, 10 steps: 30 J in all; at step 2, 14 J spent.
    joules = [10.0 + 2.0 * s for s in range(1, 11)]
    for x, drop in ((0.1, 0.05), (0.2, 0.1), (0.3, 0.15)):
        _add_curve(study, x, TrialState.COMPLETE, [2.0 - drop * s for s in range(1, 11)], joules)
    _add_curve(study, 0.9, TrialState.PRUNED, [2.5, 2.4], joules[:2])
    _add_curve(study, 0.8, TrialState.PRUNED, [2.5, 2.4, 2.3, 2.2], joules[:4])
    trials = study.get_trials()
    early, later = impute_pruned(trials[:3], trials[3:], NAMES)
    # Energy: 14 J x (30 / 14), what the completed runs spent in all; scaling by steps
    # (10 / 2) would have multiplied the 10 J start-up cost too (70 J).
    assert early.values[1] == pytest.approx(30.0)
    assert impute_pruned(trials[:3], trials[3:], NAMES, extrapolate=False)[0].values[1] == pytest.approx(70.0)
    # Loss: the median completed change from the step the trial stopped at: 8 x 0.1 from
    # step 2, 6 x 0.1 from step 4.
    assert early.values[0] == pytest.approx(2.4 - 0.8)
    assert later.values[0] == pytest.approx(2.2 - 0.6)


def test_the_model_starts_from_completed_and_pruned_trials_together() -> None:
    def sampler() -> optuna.samplers.GPSampler:
        return build_gp_sampler(n_params=2, n_startup_trials=4, seed=0)

    study = _study()
    for i, x in enumerate((0.1, 0.3)):
        _add(study, x, TrialState.COMPLETE, {"loss": 1.0 + i, "energy_joules": 40.0 - 5 * i, "memory_bytes": 5.0}, 8)
    for x in (0.7, 0.9):
        _add(study, x, TrialState.PRUNED, {"loss": 4.0, "energy_joules": 5.0, "memory_bytes": 5.0}, 2)
    trial = study.ask()
    frozen = study._storage.get_trial(trial._trial_id)
    mf, plain = MultiFidelitySampler(sampler()), sampler()
    # Two completed trials are below the start-up count: a plain GP is still in its design ...
    assert plain.sample_relative(study, frozen, SPACE) == {}
    # ... the multi-fidelity GP counts the pruned trials too and proposes from its model.
    assert len(mf.observations(study, SPACE)) == 4
    proposal = mf.sample_relative(study, frozen, SPACE)
    assert set(proposal) == {"x", "y"} and all(0.0 <= v <= 1.0 for v in proposal.values())


def test_constrained_studies_leave_pruned_trials_out() -> None:
    study = _study()
    metrics = {"loss": 1.0, "energy_joules": 40.0, "memory_bytes": 5.0}
    study.add_trial(optuna.trial.create_trial(
        params={"x": 0.1, "y": 0.5}, distributions=SPACE, values=[metrics[n] for n in NAMES],
        user_attrs={"hpod.metrics": metrics}, system_attrs={"constraints": [0.0]}))
    _add(study, 0.9, TrialState.PRUNED, {"loss": 3.0, "energy_joules": 2.5, "memory_bytes": 7.0}, 2)
    mf = MultiFidelitySampler(build_gp_sampler(n_params=2, n_startup_trials=1, seed=0))
    assert [t.number for t in mf.observations(study, SPACE)] == [0]


def test_a_loss_only_curve_is_pruned_and_its_cost_so_far_reported(tmp_path: Path) -> None:
    """An objective that reports only its loss (as t5_lora does) is still ranked on (loss,
    energy so far): the trial process adds what the seed has spent to every report."""
    spec = {"name": "mfcurve", "objective": {"name": "hpod_test_objectives:loss_curve"},
            "objectives": [{"name": "loss"}, {"name": "energy_joules"}], "budget": {"n_trials": 8},
            "sampler": {"name": "auto", "seed": 1, "options": {"multi_fidelity": True, "n_startup_trials": 4}}}
    engine = run_study(spec, tmp_path)
    trials = engine.study.get_trials()
    assert len(trials) == 8 and any(t.state == TrialState.PRUNED for t in trials)
    for t in trials:
        reports = t.user_attrs["hpod.info"]["intermediate"]
        assert reports and all(v["energy_joules"] >= 0 and v["time_seconds"] > 0 for _, _, v in reports)
    assert "multi-fidelity" in engine.sampler_reason
