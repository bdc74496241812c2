"""Fixed values and choices are checked against the parameter the objective declares
(type, finiteness) and unknown ``objective.params`` keys get a "did you mean", for
built-in and user objectives alike — at validation, before anything is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hpod_testing import run_cli

from hpod.errors import SpecError
from hpod.spec import parse_spec, resolve

BASE: dict[str, Any] = {
    "name": "fixed", "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}], "budget": {"n_trials": 2},
}

BAD_VALUES = [
    ("NaN as text", {"dropout": "NaN"}, "space.dropout", "NaN"),
    ("inf as text, open space", {"x": "inf"}, "space.x", "inf"),
    ("text where a float is declared", {"learning_rate": "1e-4"}, "space.learning_rate", "1.0e-4"),
    ("bool where a float is declared", {"learning_rate": True}, "space.learning_rate", "float"),
    ("text among numeric choices", {"batch_size": [8, "sixteen"]}, "space.batch_size.choices[1]", "numbers"),
    ("fixed mapping with -Infinity", {"dropout": {"type": "fixed", "value": "-Infinity"}}, "space.dropout",
     "finite"),
]


def _resolve(space: dict[str, Any], objective: dict[str, Any] | None = None) -> Any:
    return resolve(parse_spec({**BASE, "space": space, **({"objective": objective} if objective else {})}))


@pytest.mark.parametrize(("space", "path", "text"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES])
def test_a_fixed_value_of_the_wrong_type_or_not_finite_is_refused(space: dict[str, Any], path: str,
                                                                  text: str) -> None:
    objective = {"name": "hpod_test_objectives:slow"} if "x" in space else None
    with pytest.raises(SpecError) as info:
        _resolve(space, objective)
    assert info.value.path == path and text in str(info.value)
    assert info.value.allowed  # says what would be accepted


def test_fixed_values_of_the_declared_type_are_kept() -> None:
    resolved = _resolve({"dropout": 0.15, "epochs": 5, "batch_size": [8, 64], "learning_rate": 2e-4})
    assert resolved.fixed == {"dropout": 0.15, "epochs": 5, "learning_rate": 2e-4}


def test_hpod_run_refuses_a_nan_written_as_text_and_writes_nothing(tmp_path: Path, state_dir: Path) -> None:
    # JSON's NaN read as YAML is the text "NaN": the case that used to run every trial into a failure
    spec_file = tmp_path / "spec.json"
    spec_file.write_text('{"name": "nan-text", "objective": {"name": "synthetic:training_cost"}, '
                         '"space": {"dropout": NaN}, "budget": {"n_trials": 2}}')
    proc = run_cli(["run", str(spec_file)], state_dir=state_dir)
    assert proc.returncode == 2, proc.stderr
    assert "space.dropout" in proc.stderr and "allowed" in proc.stderr and "Traceback" not in proc.stderr
    assert list(state_dir.iterdir()) == []


UNKNOWN_PARAMS = [
    ("synthetic:training_cost", {"nois": 0.1}, "objective.params.nois", "noise"),
    ("synthetic:zdt1", {"noise_sd": 0.1}, "objective.params.noise_sd", "noise_std"),
    ("text_classifier", {"n_feature": 64}, "objective.params.n_feature", "n_features"),
    ("text_classifier", {"data": {"sorce": "x"}}, "objective.params.data.sorce", "source"),
    ("t5_lora", {"modle": "tiny"}, "objective.params.modle", "model"),
    ("t5_lora", {"data": {"summary_feild": "x"}}, "objective.params.data.summary_feild", "summary_field"),
    ("hpod_test_objectives:shifted", {"shfit": 0.5}, "objective.params.shfit", "shift"),
    ("hpod_test_objectives:Scaled", {"scael": 2.0}, "objective.params.scael", "scale"),
]


@pytest.mark.parametrize(("name", "params", "path", "close"), UNKNOWN_PARAMS, ids=[c[0] + "-" + c[2] for c in
                                                                                    UNKNOWN_PARAMS])
def test_an_unknown_objective_param_names_the_closest_one(name: str, params: dict[str, Any], path: str,
                                                          close: str) -> None:
    with pytest.raises(SpecError) as info:
        _resolve({}, {"name": name, "params": params})
    assert info.value.path == path
    assert info.value.suggestion == close and f"did you mean {close!r}?" in str(info.value)
    assert close in (info.value.allowed or "")


def test_declared_user_params_are_accepted() -> None:
    _resolve({}, {"name": "hpod_test_objectives:shifted", "params": {"shift": 0.5}})
    resolved = _resolve({}, {"name": "hpod_test_objectives:Scaled", "params": {"scale": 2.0, "offset": 1.0}})
    assert resolved.objective.scale == 2.0  # type: ignore[attr-defined]
    # a function that declares nothing takes any params (merged into each trial's parameters)
    _resolve({}, {"name": "hpod_test_objectives:slow", "params": {"seconds": 0.1}})


def test_a_typo_in_the_spec_itself_and_in_a_parameter_gets_a_suggestion(tmp_path: Path, state_dir: Path) -> None:
    spec = {**BASE, "budgett": {"n_trials": 2}}
    with pytest.raises(SpecError, match=r"budgett: .*did you mean 'budget'\?"):
        parse_spec(spec)
    with pytest.raises(SpecError, match=r"space\.learning_rate\.hgh: .*did you mean 'high'\?"):
        parse_spec({**BASE, "space": {"learning_rate": {"type": "float", "low": 1e-5, "hgh": 1e-3}}})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump({**BASE, "objective": {"name": "synthetic:training_cost",
                                                               "params": {"sleep_second": 1}}}))
    proc = run_cli(["run", str(spec_file)], state_dir=state_dir)
    assert proc.returncode == 2 and "did you mean 'sleep_seconds'?" in proc.stderr, proc.stderr
