"""hpod's GP sampler: the study's reference point inside GPSampler's hypervolume acquisition."""

from __future__ import annotations

import threading

import numpy as np
import optuna
import pytest
import torch

from hpod.core.samplers import _gp, create_sampler
from hpod.core.samplers._gp import HpodGPSampler, reference_hook_available
from hpod.core.samplers._startup import SobolStartupSampler


def test_installed_optuna_has_the_reference_point_hook() -> None:
    # hpod replaces optuna._gp.acqf._get_reference_point while it suggests; an Optuna
    # upgrade that removes it must fail here, not silently change what the sampler aims at.
    assert reference_hook_available()


def _two_objective_study(sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=sampler)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        return x + 0.5 * y**2, 1.0 - (1.0 - x) ** 2 - y

    study.optimize(objective, n_trials=n_trials)
    return study


def test_acquisition_measures_improvement_at_the_study_reference_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from optuna._gp import acqf

    boxes = acqf._get_non_dominated_box_bounds
    seen: list[np.ndarray] = []

    def spy(Y: object, ref_point: np.ndarray) -> object:
        seen.append(np.asarray(ref_point, dtype=float).copy())
        return boxes(Y, ref_point)

    monkeypatch.setattr(acqf, "_get_non_dominated_box_bounds", spy)
    reference = [1.2, -0.2]  # minimize 1st (worse above 1.2), maximize 2nd (worse below -0.2)
    sampler = HpodGPSampler(
        reference_point=reference,
        seed=0,
        n_startup_trials=6,
        independent_sampler=SobolStartupSampler(2, 6, seed=0),
        warn_independent_sampling=False,
    )
    study = _two_objective_study(sampler, n_trials=7)

    # Outside a suggestion the function in Optuna's place answers as Optuna's own does.
    y = torch.tensor([[0.0, -1.0], [-1.0, 0.0]], dtype=torch.double)
    np.testing.assert_array_equal(acqf._get_reference_point(y), _gp._optuna_reference_point(y))
    assert seen, "the GP phase never built a hypervolume acquisition"
    # The last suggestion saw the first 6 trials: the reference point in GPSampler's
    # standardized loss space is (ref - mean) / std of the minimized values.
    losses = np.array([t.values for t in study.trials[:6]]) * np.array([1.0, -1.0])
    expected = (np.array(reference) * np.array([1.0, -1.0]) - losses.mean(axis=0)) / losses.std(axis=0)
    np.testing.assert_allclose(seen[-1], expected, rtol=1e-9)


def test_without_a_reference_point_optuna_keeps_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[np.ndarray] = []
    hpod_point = _gp._study_reference_point

    def spy(Y: object) -> np.ndarray:
        point = hpod_point(Y)
        calls.append(point)
        return point

    _gp._install_hook()
    optuna_point = _gp._optuna_reference_point
    from optuna._gp import acqf

    monkeypatch.setattr(acqf, "_get_reference_point", spy)
    sampler = HpodGPSampler(seed=0, n_startup_trials=5)
    study = _two_objective_study(sampler, n_trials=6)
    assert calls, "no hypervolume acquisition was built"
    losses = np.array([t.values for t in study.trials[:5]]) * np.array([1.0, -1.0])
    y = torch.from_numpy(-(losses - losses.mean(axis=0)) / losses.std(axis=0))
    np.testing.assert_allclose(calls[-1], optuna_point(y))


def test_each_thread_sees_only_its_own_reference_point() -> None:
    _gp._install_hook()
    from optuna._gp import acqf

    y = torch.tensor([[1.0, 1.0], [0.0, 2.0]], dtype=torch.double)  # losses (-1,-1), (0,-2)
    seen: dict[str, np.ndarray] = {}
    inside = threading.Event()
    done = threading.Event()

    def other_thread() -> None:
        inside.wait(5)
        seen["other"] = acqf._get_reference_point(y)
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with _gp._reference_point_hook(np.array([0.5, 0.5])):
        seen["hpod"] = acqf._get_reference_point(y)
        inside.set()
        done.wait(5)
    thread.join(5)
    np.testing.assert_array_equal(seen["hpod"], [0.5, 0.5])
    np.testing.assert_array_equal(seen["other"], _gp._optuna_reference_point(y))


def test_spec_reference_point_reaches_auto_and_gp_and_qlognehvi() -> None:
    for name in ("auto", "gp"):
        choice = create_sampler(
            name, {}, directions=["minimize", "minimize"], n_trials=50, n_params=3, seed=0, reference_point=[5.0, 6.0]
        )
        assert choice.sampler._reference_point == [5.0, 6.0]
    assert "reference point" in create_sampler(
        "auto", {}, directions=["minimize", "minimize"], n_trials=50, n_params=3, reference_point=[5.0, 6.0]
    ).reason
    q = create_sampler(
        "qlognehvi", {}, directions=["minimize", "minimize"], n_trials=50, n_params=3, reference_point=[5.0, 6.0]
    )
    assert q.sampler._reference_point == [5.0, 6.0]
    with pytest.raises(ValueError, match="reference_point has 1 values for 2 objectives"):
        create_sampler("auto", {}, directions=["minimize", "minimize"], n_trials=50, n_params=3, reference_point=[1.0])


def test_engine_aims_auto_at_the_reference_point_the_objective_or_spec_states(tmp_path) -> None:
    from hpod.core.engine import Engine
    from hpod.spec import parse_spec
    from hpod.store import Store

    store = Store.for_state_dir(tmp_path)

    def engine(name: str, **extra: object) -> Engine:
        spec = parse_spec({
            "name": name,
            "objective": {"name": "synthetic:branin_currin"},
            "objectives": [{"name": "f0"}, {"name": "f1"}],
            "budget": {"n_trials": 30},
            "sampler": {"name": "auto", "seed": 0},
            **extra,
        })
        return Engine(store, spec, state_dir=tmp_path)

    declared = engine("declared")  # the registered objective declares BoTorch's point
    declared.start()
    assert declared.study.sampler._reference_point == [18.0, 6.0]
    assert "reference point" in declared.sampler_reason
    stated = engine("stated", reference_point={"f0": 50.0, "f1": 10.0})  # the spec wins
    stated.start()
    assert stated.study.sampler._reference_point == [50.0, 10.0]


def test_three_objective_studies_score_fewer_preliminary_points() -> None:
    assert _gp.preliminary_samples_for(2) == 2048  # GPSampler's own default
    assert _gp.preliminary_samples_for(3) == 1024
    sampler = HpodGPSampler(seed=0, n_startup_trials=4)
    study = optuna.create_study(directions=["minimize"] * 3, sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), 1 - t.suggest_float("y", 0, 1), t.params["x"] ** 2), 5)
    assert sampler._n_preliminary_samples == 1024
    with pytest.raises(ValueError, match="n_preliminary_samples must be >= 1"):
        HpodGPSampler(n_preliminary_samples=0)
