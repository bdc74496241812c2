"""Bad study specs exit with code 2 and one message naming the field; nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hpod_testing import run_cli

from hpod.errors import SpecError
from hpod.spec import load_spec, parse_constraint, parse_spec, resolve

BASE = {
    "name": "bad-input",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
    "budget": {"n_trials": 3},
}


def _spec(**changes):
    d = {**BASE, **changes}
    return {k: v for k, v in d.items() if v is not None}


BAD = [
    ("unknown field", _spec(colour="blue"), "colour", "unknown field"),
    ("wrong type", _spec(budget={"n_trials": "many"}), "budget.n_trials", "integer"),
    ("inverted range", _spec(space={"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-5, "log": True}}),
     "space.learning_rate", "must be <= high"),
    ("log with low <= 0", _spec(space={"dropout": {"type": "float", "low": 0.0, "high": 0.5, "log": True}}),
     "space.dropout", "log: true needs low > 0"),
    ("empty categorical", _spec(space={"rank": {"type": "categorical", "choices": []}}),
     "space.rank.choices", "must not be empty"),
    ("unknown objective name", _spec(objectives=[{"name": "rouge9"}]), "objectives[0].name",
     "does not report"),
    ("unknown constraint metric", _spec(constraints=["gpu_hours <= 3"]), "constraints[0]", "does not report"),
    ("unparsable constraint", _spec(constraints=["memory_bytes is small"]), "constraints",
     "cannot parse constraint"),
    ("unknown sampler", _spec(sampler={"name": "cmaes"}), "sampler.name", "unknown sampler"),
    ("unknown objective", _spec(objective={"name": "synthetic:nope"}), "objective.name", "unknown objective"),
    ("bad direction", _spec(objectives=[{"name": "loss", "direction": "down"}]), "objectives[0].direction",
     "minimize"),
    ("unknown parameter type", _spec(space={"rank": {"type": "choice", "choices": [4]}}), "space.rank.type",
     "unknown parameter type"),
]


@pytest.mark.parametrize("case,spec,path,text", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_is_rejected_with_field_path(case, spec, path, text, tmp_path: Path, state_dir: Path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    with pytest.raises(SpecError) as exc_info:
        resolve(load_spec(spec_file))
    assert exc_info.value.path.startswith(path), str(exc_info.value)
    assert text in str(exc_info.value)

    proc = run_cli(["run", str(spec_file)], state_dir=state_dir)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert path in proc.stderr and text in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert not (state_dir / "hpod.db").exists(), "a rejected spec must not create or touch the store"


@pytest.mark.parametrize("url,text", [
    ("sqlite:////no/such/dir/hpod.db", "does not exist"),
    ("nosuchdb://host/db", "cannot be opened"),
])
def test_unopenable_storage_url_exits_2(url, text, tmp_path: Path, state_dir: Path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(BASE))
    proc = run_cli(["run", str(spec_file), "--storage", url], state_dir=state_dir)
    assert proc.returncode == 2, proc.stderr
    assert text in proc.stderr and "Traceback" not in proc.stderr


def test_spec_file_errors(tmp_path: Path, state_dir: Path):
    missing = run_cli(["run", str(tmp_path / "nope.yaml")], state_dir=state_dir)
    assert missing.returncode == 2 and "not found" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nobjective: [unclosed\n")
    proc = run_cli(["run", str(broken)], state_dir=state_dir)
    assert proc.returncode == 2 and "invalid YAML at line" in proc.stderr
    not_a_mapping = tmp_path / "list.yaml"
    not_a_mapping.write_text("- a\n- b\n")
    proc = run_cli(["run", str(not_a_mapping)], state_dir=state_dir)
    assert proc.returncode == 2 and "mapping" in proc.stderr


def test_valid_spec_resolves_space_and_fixed_values():
    spec = parse_spec(_spec(space={"epochs": 2, "rank": [4, 8], "dropout": {"type": "fixed", "value": 0.1}}))
    resolved = resolve(spec)
    assert resolved.fixed == {"epochs": 2, "dropout": 0.1}
    dists = resolved.distributions()
    assert "epochs" not in dists and dists["rank"].choices == (4, 8)
    # the objective's default space fills in what the spec leaves out
    assert dists["learning_rate"].log is True


def test_constraint_parsing():
    c = parse_constraint("memory_bytes <= 8e9")
    assert (c.metric, c.op, c.bound) == ("memory_bytes", "<=", 8e9)
    assert c.violation(9e9) == pytest.approx(1e9) and c.violation(1e9) < 0
    g = parse_constraint("rouge2 >= 0.15")
    assert g.violation(0.2) < 0 and g.violation(0.1) > 0


def test_examples_are_valid():
    root = Path(__file__).resolve().parents[2] / "examples"
    for path in sorted(root.glob("*.yaml")):
        resolve(load_spec(path))


def test_spec_changes_name_each_changed_leaf_and_which_the_study_keeps() -> None:
    from hpod.spec import check_identity, parse_spec, spec_changes

    base = {"name": "s", "objective": {"name": "synthetic:training_cost"}, "budget": {"n_trials": 4},
            "space": {"lr": {"type": "float", "low": 0.1, "high": 1.0}}}
    stored = parse_spec(base).model_dump(mode="json")
    same = parse_spec(base).model_dump(mode="json")
    assert spec_changes(stored, same) == []
    grown = parse_spec({**base, "budget": {"n_trials": 9}, "storage": "sqlite:////tmp/x.db"})
    (change,) = spec_changes(stored, grown.model_dump(mode="json"))  # storage is where, not what
    assert (change.path, change.old, change.new, change.identity) == ("budget.n_trials", 4, 9, False)
    check_identity("s", [change])
    moved = parse_spec({**base, "space": {"lr": {"type": "float", "low": 0.2, "high": 1.0}}, "seeds": 2})
    changes = spec_changes(stored, moved.model_dump(mode="json"))
    assert [c.path for c in changes] == ["seeds", "space.lr.low"] and all(c.identity for c in changes)
    with pytest.raises(SpecError, match=r"^seeds: study 's' exists with 1 here \(and 1 more: space.lr.low\)"):
        check_identity("s", changes)
