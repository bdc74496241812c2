"""Optuna's own sampler test cases (``optuna.testing.pytest_samplers``) run against every
sampler name hpod accepts, built the way a study builds it (``create_sampler``), and the
refusal of a sampler for a study shape it cannot serve.

Start-up settings that apply: Optuna's relative-sampling cases call ``sample_relative``
after one completed trial, so the relative cases run the model-based samplers with a
one-trial start-up (a sampler still in its start-up phase samples independently and
returns nothing there, Optuna's own defaults included). ``nsga2`` and ``random`` sample
independently until a population exists (random always), so they run the basic and
multi-objective cases only. ``qlognehvi`` serves two or more objectives: it runs the
multi-objective cases and is refused, naming what is allowed, for one objective.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hpod_testing import ROOT, run_cli
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

from hpod.core.samplers import SAMPLER_NAMES, create_sampler
from hpod.errors import SpecError
from hpod.spec import MULTI_OBJECTIVE_ONLY_SAMPLERS, parse_spec, samplers_for

# (sampler name, options): every accepted name, and auto's GP-to-NSGA-II handover
# early enough that the basic cases cross it.
_SINGLE_OBJECTIVE = [
    ("auto", {}),
    ("auto", {"switch_after": 6, "population_size": 2, "n_startup_trials": 3}),
    ("gp", {}),
    ("tpe", {}),
    ("nsga2", {}),
    ("random", {}),
]
_MULTI_OBJECTIVE = [*_SINGLE_OBJECTIVE, ("qlognehvi", {})]
_RELATIVE = [
    ("auto", {"n_startup_trials": 1}),
    ("gp", {"n_startup_trials": 1}),
    ("tpe", {"n_startup_trials": 0, "multivariate": True}),
]
#: Samplers that fit a Gaussian process per suggestion (0.3-2 s each on two shared
#: cores): their runs of the cases that reach the model are marked slow.
_GP_BACKED = {"auto", "gp"}


def _params(configs: list[tuple[str, dict[str, Any]]], *, slow_gp: bool) -> list[Any]:
    out = []
    for name, options in configs:
        marks = [pytest.mark.slow] if slow_gp and name in _GP_BACKED else []
        out.append(pytest.param((name, options), marks=marks,
                                id=name + "".join(f"-{k}={v}" for k, v in options.items())))
    return out


def _factory(name: str, options: dict[str, Any], directions: list[str]) -> Callable[[], optuna.samplers.BaseSampler]:
    def build() -> optuna.samplers.BaseSampler:
        # n_trials=None: the study is bounded by time or energy, so auto keeps its
        # hand-over to NSGA-II in the sampler it returns.
        return create_sampler(name, options, directions=directions, n_trials=None, n_params=2, seed=0).sampler

    return build


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_the_configurations_cover_every_sampler_name() -> None:
    assert {name for name, _ in _MULTI_OBJECTIVE} == set(SAMPLER_NAMES)
    assert {name for name, _ in _SINGLE_OBJECTIVE} == set(samplers_for(1))


class TestSingleObjectiveCases(BasicSamplerTestCase):
    @pytest.fixture(params=_params(_SINGLE_OBJECTIVE, slow_gp=True))
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], optuna.samplers.BaseSampler]:
        return _factory(*request.param, ["minimize"])


def _covering_pairs(test: Callable[..., None]) -> list[tuple[Any, Any]]:
    """The (x, y) distribution pairs of one of Optuna's two-way parametrized cases, cut
    from the full cross product to a covering set: every x distribution once and every y
    distribution once (y rotated by one), read from Optuna's own parametrization."""
    values = {mark.args[0]: list(mark.args[1]) for mark in getattr(test, "pytestmark", [])
              if mark.name == "parametrize"}
    xs, ys = values["x_distribution"], values["y_distribution"]
    return list(zip(xs, ys[1:] + ys[:1], strict=False))


class TestRelativeCases(RelativeSamplerTestCase):
    # The samplers that do not fit a model per suggestion: every case, in full.
    @pytest.fixture(params=_params([c for c in _RELATIVE if c[0] not in _GP_BACKED], slow_gp=True))
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], optuna.samplers.BaseSampler]:
        return _factory(*request.param, ["minimize"])


class TestRelativeCasesGP(RelativeSamplerTestCase):
    """The same cases for the GP-backed samplers, with the numerical case's 36 pairs of
    distributions cut to the 6 that cover each distribution on each axis: each of its
    runs fits the GP ten times (0.3-2 s a fit on two shared cores), and the full cross
    product alone took most of the suite's time under load."""

    @pytest.fixture(params=_params([c for c in _RELATIVE if c[0] in _GP_BACKED], slow_gp=True))
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], optuna.samplers.BaseSampler]:
        return _factory(*request.param, ["minimize"])

    @pytest.mark.parametrize(("x_distribution", "y_distribution"),
                             _covering_pairs(RelativeSamplerTestCase.test_sample_relative_numerical))
    def test_sample_relative_numerical(self, sampler: Callable[[], optuna.samplers.BaseSampler],
                                       x_distribution: Any, y_distribution: Any) -> None:
        super().test_sample_relative_numerical(sampler, x_distribution, y_distribution)


class TestMultiObjectiveCases(MultiObjectiveSamplerTestCase):
    # Independent sampling only: quick for every sampler.
    @pytest.fixture(params=_params(_MULTI_OBJECTIVE, slow_gp=False))
    def sampler(self, request: pytest.FixtureRequest) -> Callable[[], optuna.samplers.BaseSampler]:
        return _factory(*request.param, ["minimize", "maximize"])


@pytest.mark.parametrize("name", MULTI_OBJECTIVE_ONLY_SAMPLERS)
def test_multi_objective_only_sampler_is_refused_for_one_objective(name: str) -> None:
    with pytest.raises(SpecError) as caught:
        create_sampler(name, {}, directions=["minimize"], n_trials=10, n_params=2)
    assert caught.value.path == "sampler.name"
    assert "two or more objectives" in str(caught.value)
    assert caught.value.allowed is not None and name not in caught.value.allowed.split(", ")

    spec = {
        "name": "one-objective",
        "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}],
        "sampler": {"name": name},
        "budget": {"n_trials": 3},
    }
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert caught.value.path == "sampler.name" and "auto" in str(caught.value)
    # The scalarized strategy optimizes one value with a sampler of its own choosing
    # (it says which in the study's reason), so the same name is accepted there.
    parse_spec({**spec, "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
                "strategy": {"kind": "scalarized"}})


def test_single_objective_qlognehvi_spec_exits_2_and_writes_nothing(state_dir: Path) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "synthetic-4obj.yaml").read_text())
    spec.update(name="qlognehvi-one", objectives=[{"name": "loss", "direction": "minimize"}],
                constraints=[], sampler={"name": "qlognehvi"}, budget={"n_trials": 3})
    spec.pop("reference_point", None)
    path = state_dir / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    before = sorted(p.name for p in state_dir.iterdir())
    proc = run_cli(["run", str(path)], state_dir=state_dir)
    assert proc.returncode == 2, proc.stderr
    assert "sampler.name" in proc.stderr and "two or more objectives" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in state_dir.iterdir()) == before
