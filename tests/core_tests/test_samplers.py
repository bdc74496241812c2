"""create_sampler: every name builds and samples in-domain, bad input names its field,
qLogNEHVI finds a better front than random, respects constraints and spreads batches."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hpod.core.pareto import hypervolume
from hpod.core.samplers import (
    SAMPLER_NAMES,
    QLogNEHVISampler,
    SamplerChoice,
    create_sampler,
)
from hpod.errors import SpecError

MIXED_SPACE = {
    "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
    "rank": IntDistribution(4, 32, step=4),
    "optimizer": CategoricalDistribution(["adamw", "sgd", "adafactor"]),
}
BRANIN_SPACE = {"x0": FloatDistribution(0.0, 1.0), "x1": FloatDistribution(0.0, 1.0)}
BRANIN_REFERENCE = np.array([18.0, 6.0])  # BoTorch's reference point for BraninCurrin
# Smaller acquisition optimization than the defaults: these tests check behaviour, and
# must stay quick on two shared cores.
LIGHT = {"num_restarts": 2, "raw_samples": 64, "mc_samples": 32, "max_iterations": 30}


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _branin_currin(params: dict[str, float]) -> list[float]:
    import torch
    from botorch.test_functions.multi_objective import BraninCurrin

    x = torch.tensor([[params["x0"], params["x1"]]], dtype=torch.double)
    return BraninCurrin()(x)[0].tolist()


def _in_domain(params: dict[str, object]) -> bool:
    return all(MIXED_SPACE[name]._contains(MIXED_SPACE[name].to_internal_repr(v)) for name, v in params.items())


@pytest.mark.floor  # also on the lowest declared optuna/botorch (scripts/lowest-versions.sh)
@pytest.mark.parametrize("name", SAMPLER_NAMES)
def test_each_sampler_name_builds_and_samples_a_mixed_space(name: str) -> None:
    options: dict[str, object] = {"n_startup_trials": 2} if name in ("gp", "auto") else {}
    if name == "qlognehvi":
        options = {"n_startup_trials": 2, **LIGHT}
    choice = create_sampler(
        name, options, directions=["minimize", "maximize"], n_trials=20, n_params=3, seed=1
    )
    assert isinstance(choice, SamplerChoice) and choice.reason
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=choice.sampler)
    for _ in range(4):  # two startup trials, then two model-based ones for the GP samplers
        trial = study.ask(MIXED_SPACE)
        assert _in_domain(trial.params), trial.params
        study.tell(trial, [np.log10(trial.params["learning_rate"]) ** 2, float(trial.params["rank"])])
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 4


def test_unknown_sampler_name_is_a_spec_error_listing_the_allowed_names() -> None:
    with pytest.raises(SpecError) as caught:
        create_sampler("cmaes", {}, directions=["minimize"], n_trials=10, n_params=2)
    assert caught.value.path == "sampler.name"
    assert "cmaes" in str(caught.value)
    assert all(name in str(caught.value) for name in SAMPLER_NAMES)


@pytest.mark.parametrize(
    ("name", "options", "field", "shown"),
    [
        ("nsga2", {"population_size": 1}, "sampler.options.population_size", "integer from 2 to 10000"),
        ("nsga2", {"population_size": 10**9}, "sampler.options.population_size", "integer from 2 to 10000"),
        ("nsga2", {"popsize": 10}, "sampler.options.popsize", "population_size"),
        ("random", {"seed": 3}, "sampler.options.seed", "takes no options"),
        ("qlognehvi", {"reference_point": [1.0]}, "sampler.options.reference_point", "list of 2 finite numbers"),
        ("qlognehvi", {"reference_point": [1.0, float("nan")]}, "sampler.options.reference_point",
         "list of 2 finite numbers"),
        ("qlognehvi", {"n_startup_trials": 1}, "sampler.options.n_startup_trials", "integer from 2 to"),
        ("tpe", {"multivariate": "yes"}, "sampler.options.multivariate", "true or false"),
        ("auto", {"switch_after": 0}, "sampler.options.switch_after", "integer from 2 to"),
    ],
)
def test_bad_sampler_options_name_the_field(name: str, options: dict[str, object], field: str, shown: str) -> None:
    with pytest.raises(SpecError) as caught:
        create_sampler(name, options, directions=["minimize", "minimize"], n_trials=10, n_params=2)
    assert caught.value.path == field
    assert shown in str(caught.value)


def test_auto_explains_its_choice_by_budget_dimension_and_objectives() -> None:
    small = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=50, n_params=6)
    assert small.name == "gp" and "budget 50" in small.reason and "GP" in small.reason
    large = create_sampler("auto", {}, directions=["minimize"] * 4, n_trials=1000, n_params=6, parallelism=4)
    assert large.name == "gp+nsga2" and "NSGA-II" in large.reason and "4 concurrent" in large.reason
    wide = create_sampler("auto", {}, directions=["minimize"] * 2, n_trials=50, n_params=40)
    assert wide.name == "tpe" and "40 parameters" in wide.reason
    many = create_sampler("auto", {}, directions=["minimize"] * 6, n_trials=50, n_params=4)
    assert many.name == "nsga2" and "6 objectives" in many.reason


def test_auto_hands_over_to_nsga2_bred_from_the_model_phase() -> None:
    choice = create_sampler(
        "auto",
        {"switch_after": 12, "population_size": 4, "n_startup_trials": 12},
        directions=["minimize", "minimize"],
        n_trials=400,
        n_params=2,
        seed=5,
    )
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=choice.sampler)
    for _ in range(16):
        trial = study.ask(BRANIN_SPACE)
        study.tell(trial, _branin_currin(trial.params))
    nsga2 = optuna.samplers.NSGAIISampler
    key = nsga2._get_generation_key()
    trials = study.get_trials()
    # The model phase's last 4 trials form generation 0; every later trial is an offspring.
    assert [t.number for t in trials if t.system_attrs.get(key) == 0] == [8, 9, 10, 11]
    assert all(t.system_attrs.get(key) == 1 for t in trials[12:])
    study_attrs = study._storage.get_study_system_attrs(study._study_id)
    parent_ids = study_attrs[nsga2._get_parent_cache_key_prefix() + "1"]
    assert parent_ids and set(parent_ids) <= {t._trial_id for t in trials[8:12]}


def _run_branin(sampler: optuna.samplers.BaseSampler, n_trials: int, constrained: bool = False) -> optuna.Study:
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for _ in range(n_trials):
        trial = study.ask(BRANIN_SPACE)
        if constrained:
            # Feasible (<= 0) only in the left half of the box.
            trial.set_constraint("x0_at_most_half", trial.params["x0"] - 0.5)
        study.tell(trial, _branin_currin(trial.params))
    return study


def _front_hypervolume(trials: list[optuna.trial.FrozenTrial]) -> float:
    return hypervolume(np.array([t.values for t in trials]), BRANIN_REFERENCE)


@pytest.mark.slow
def test_qlognehvi_beats_random_search_on_branin_currin() -> None:
    model_study = _run_branin(QLogNEHVISampler(n_startup_trials=5, n_params=2, seed=0, **LIGHT), 12)
    random_study = _run_branin(optuna.samplers.RandomSampler(seed=0), 12)
    model_hv = _front_hypervolume(model_study.trials)
    assert model_hv > _front_hypervolume(random_study.trials)
    assert model_hv > _front_hypervolume(model_study.trials[:5])


@pytest.mark.slow
def test_qlognehvi_model_based_suggestions_are_mostly_feasible() -> None:
    study = _run_branin(QLogNEHVISampler(n_startup_trials=6, n_params=2, seed=2, **LIGHT), 14, constrained=True)
    model_based = study.trials[6:]
    feasible = [t for t in model_based if t.params["x0"] <= 0.5]
    assert len(feasible) >= 6, [round(t.params["x0"], 3) for t in model_based]


def test_qlognehvi_concurrent_asks_give_distinct_candidates() -> None:
    study = _run_branin(QLogNEHVISampler(n_startup_trials=6, n_params=2, seed=4, **LIGHT), 6)
    pending = [study.ask(BRANIN_SPACE) for _ in range(4)]  # four workers ask before any reports
    assert all(t.state == TrialState.RUNNING for t in study.get_trials()[6:])
    points = np.array([[t.params["x0"], t.params["x1"]] for t in pending])
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    assert distances[np.triu_indices(4, k=1)].min() > 1e-3, points


@pytest.mark.floor
def test_sobol_startup_spreads_the_first_trials_over_the_box() -> None:
    choice = create_sampler("gp", {"n_startup_trials": 8}, directions=["minimize"], n_trials=8, n_params=2, seed=9)
    study = optuna.create_study(sampler=choice.sampler)
    xs = []
    for _ in range(8):
        trial = study.ask(BRANIN_SPACE)
        xs.append(trial.params["x0"])
        study.tell(trial, trial.params["x0"])
    # 8 Sobol points put exactly one point in each eighth of every axis.
    assert sorted(np.floor(np.array(xs) * 8).astype(int).tolist()) == list(range(8))


def test_auto_without_reference_point_or_cost_is_gpsampler_itself() -> None:
    # Issue 16's parity: with nothing to aim at or weigh, auto must propose what GPSampler
    # proposes (its 10 random startup points, then its model's), not hpod's Sobol variant.
    choice = create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=50, n_params=2, seed=3)
    assert type(choice.sampler) is optuna.samplers.GPSampler
    assert "Optuna's GPSampler" in choice.reason and "10 random startup trials" in choice.reason
    # A budget under 20 trials keeps half of it (at least hpod's n_params + 1) for the model.
    small = create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=8, n_params=5, seed=3)
    assert small.sampler._n_startup_trials == 6 and "6 random startup trials" in small.reason
    auto_study = _run_branin(choice.sampler, 12)
    gp_study = _run_branin(optuna.samplers.GPSampler(seed=3), 12)
    assert [t.params for t in auto_study.trials] == [t.params for t in gp_study.trials]



def test_auto_keeps_hpods_sobol_start_only_with_a_reference_point() -> None:
    from hpod.core.samplers._cost import CostAwareGPSampler
    from hpod.core.samplers._gp import HpodGPSampler
    from hpod.core.samplers._startup import SobolStartupSampler

    aimed = create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=50, n_params=6,
                           reference_point=[18.0, 6.0])
    assert type(aimed.sampler) is HpodGPSampler and "7 Sobol startup trials" in aimed.reason
    assert isinstance(aimed.sampler._independent_sampler, SobolStartupSampler)
    # A cost budget without a reference point: weighed, from GPSampler's own random start.
    weighed = create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=50, n_params=6,
                             energy_budget_joules=1000.0)
    assert isinstance(weighed.sampler, CostAwareGPSampler) and "10 random startup trials" in weighed.reason
    assert type(weighed.sampler._independent_sampler) is optuna.samplers.RandomSampler
    assert weighed.sampler._n_startup_trials == 10
