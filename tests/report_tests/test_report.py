"""``hpod report``: figures and the HTML page for finished, small and running-size studies."""

from __future__ import annotations

import base64
import io
import json
import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hpod_testing import ROOT, SUPPORT, run_cli
from rich.console import Console

from hpod.core.pareto import hypervolume
from hpod.core.runner import run_foreground
from hpod.errors import StudyNotFound, UsageError
from hpod.execution.executor import parse_slots
from hpod.report import build_report, load_report_data, report_html, select_trial
from hpod.spec import parse_spec, resolve
from hpod.store import Store

EXAMPLE = ROOT / "examples" / "synthetic-4obj.yaml"
HERE = Path(__file__).resolve().parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_study(state_dir: Path, spec: dict[str, Any]) -> Store:
    resolved = resolve(parse_spec(spec))
    store = Store.for_state_dir(state_dir)
    outcome = run_foreground(resolved, store=store, state_dir=state_dir, slots=parse_slots(None, 1),
                             console=Console(file=io.StringIO()), codecarbon=False)
    assert not outcome.interrupted and outcome.finished == spec["budget"]["n_trials"]
    return store


def _assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    image = imread(path)
    height, width = image.shape[:2]
    assert width >= 400 and height >= 300, f"{path.name} is only {width}x{height}"
    assert float(image[..., :3].std()) > 0, f"{path.name} is blank"


def _img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


@pytest.fixture(scope="module")
def four_objective(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, Any]]:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["budget"]["n_trials"] = 24
    state_dir = tmp_path_factory.mktemp("state4")
    return _run_study(state_dir, spec), spec


def test_four_objective_constrained_report(four_objective: tuple[Store, dict[str, Any]], tmp_path: Path):
    store, spec = four_objective
    out = tmp_path / "report"
    result = build_report(store, spec["name"], out)

    names = {p.name for p in result.pngs}
    assert {"pareto_front.png", "hypervolume.png", "objectives.png", "parallel_coordinates.png",
            "importances.png", "front_costs.png", "constraints.png"} <= names
    assert "quality.png" not in names, "no ROUGE/BLEU in a synthetic study"
    for png in result.pngs:
        assert png.parent == out and png.exists()
        _assert_valid_png(png)
    assert result.html == out / "report.html" and result.paths[-1] == result.html
    page = result.html.read_text()
    assert sorted(_img_sources(page)) == sorted(names), "the page shows every PNG, by relative path"
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary files left behind"

    # The selected (knee) trial is on the feasible front, and the page says which it is.
    front = {r["number"] for r in json.loads(run_cli(["pareto", spec["name"], "--json"],
                                                     state_dir=store_dir(store)).stdout)}
    assert result.selected in front
    assert f"Trial <b>#{result.selected}</b>" in page

    # Hypervolume after each trial: one point per completed trial, never decreasing, ending
    # where the engine's own summary ended (same stored reference point).
    summary = json.loads((out / "report.json").read_text())
    curve = [p["hypervolume"] for p in summary["hypervolume_by_trial"]]
    assert len(curve) == 24
    assert all(b >= a for a, b in pairwise(curve))
    assert curve[-1] == pytest.approx(store.get_study(spec["name"]).hypervolume, rel=1e-9)
    assert curve[-1] > curve[0]


def store_dir(store: Store) -> Path:
    return Path(store.url.split(":///", 1)[1]).parent


def test_html_only_is_one_self_contained_page(four_objective: tuple[Store, dict[str, Any]], tmp_path: Path):
    store, spec = four_objective
    result = build_report(store, spec["name"], tmp_path, formats=["html"])
    assert result.pngs == [] and [p.name for p in tmp_path.iterdir()] == ["report.html"]
    sources = _img_sources(result.html.read_text())
    assert len(sources) >= 7
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE
    # The API's page is the same self-contained rendering.
    api_page = report_html(store, spec["name"])
    assert len(_img_sources(api_page)) == len(sources) and "Pareto front" in api_page


def test_two_objective_study_with_seeds_selects_by_objective(tmp_path: Path):
    spec = {
        "name": "two-obj", "objective": {"name": "synthetic:training_cost", "params": {"noise": 0.05}},
        "objectives": [{"name": "loss", "direction": "minimize"}, {"name": "energy_joules", "direction": "minimize"}],
        "sampler": {"name": "random", "seed": 3}, "budget": {"n_trials": 8}, "seeds": 2,
    }
    store = _run_study(tmp_path / "state", spec)
    data = load_report_data(store, "two-obj", selection="energy_joules")
    front = [r for r in data.records if r["number"] in data.front]
    cheapest = min(front, key=lambda r: (r["values"]["energy_joules"], r["number"]))
    assert data.selected == cheapest["number"]
    assert all(len(r["seeds"]) == 2 for r in data.complete)

    result = build_report(store, "two-obj", tmp_path / "out", selection="energy_joules")
    names = {p.name for p in result.pngs}
    assert "pareto_front.png" in names and "constraints.png" not in names
    assert any("no constraints" in n for n in result.notes)
    for png in result.pngs:
        _assert_valid_png(png)
    with pytest.raises(UsageError, match="selection"):
        build_report(store, "two-obj", tmp_path / "bad", selection="rouge9")


def test_study_with_two_trials_still_reports(tmp_path: Path):
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec.update(name="tiny", budget={"n_trials": 2})
    store = _run_study(tmp_path / "state", spec)
    result = build_report(store, "tiny", tmp_path / "out")
    assert result.html is not None and result.html.exists()
    assert any("importances need at least" in n for n in result.notes)
    assert "importances.png" not in {p.name for p in result.pngs}
    for png in result.pngs:
        _assert_valid_png(png)
    assert sorted(_img_sources(result.html.read_text())) == sorted(p.name for p in result.pngs)


def test_unknown_study(four_objective: tuple[Store, dict[str, Any]], tmp_path: Path):
    store, _ = four_objective
    with pytest.raises(StudyNotFound):
        build_report(store, "no-such-study", tmp_path)
    proc = run_cli(["report", "no-such-study", "--out", str(tmp_path / "x")], state_dir=store_dir(store))
    assert proc.returncode == 2
    assert "no study named 'no-such-study'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_knee_is_the_balanced_trade_off():
    points = np.array([[0.0, 1.0], [0.45, 0.45], [1.0, 0.0], [0.2, 0.9]])
    assert select_trial(points, [10, 11, 12, 13], ["loss", "energy_joules"], "knee") == 11
    assert select_trial(points, [10, 11, 12, 13], ["loss", "energy_joules"], "energy_joules") == 12
    with pytest.raises(UsageError, match="knee"):
        select_trial(points, [10, 11, 12, 13], ["loss", "energy_joules"], "median")


def test_hypervolume_curve_ignores_infeasible_and_dominated_trials():
    from hpod.report._data import hypervolume_curve

    ref = [4.0, 4.0]
    trials = [(0, [3.0, 3.0]), (1, None), (2, [3.5, 3.5]), (3, [1.0, 2.0]), (4, [2.0, 1.0])]
    curve = hypervolume_curve(trials, ref)
    assert [n for n, _ in curve] == [0, 1, 2, 3, 4]
    assert [v for _, v in curve][:3] == [1.0, 1.0, 1.0]
    assert curve[-1][1] == pytest.approx(hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array(ref)))


def test_cli_summarization_study_with_compare_and_strategy_state(tmp_path: Path):
    """Through the CLI as a user runs it: ROUGE/BLEU of the front, the before/after table,
    and the PBT lineage and Lagrange multipliers other parts of hpod store."""
    state_dir = tmp_path / "state"
    spec = {
        "name": "summ", "objective": {"name": "test_report_objectives:summarizer"},
        "objectives": [{"name": "loss", "direction": "minimize"}, {"name": "rouge2", "direction": "maximize"}],
        "sampler": {"name": "random", "seed": 1}, "budget": {"n_trials": 8},
    }
    spec_path = tmp_path / "summ.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    pythonpath = f"{SUPPORT}:{HERE}"
    proc = run_cli(["run", str(spec_path), "--no-codecarbon"], state_dir=state_dir, PYTHONPATH=pythonpath)
    assert proc.returncode == 0, proc.stderr

    store = Store.for_state_dir(state_dir)
    store.put_state("summ", "compare", {"baseline": "t5-small, default hyperparameters", "rows": [
        {"metric": "ROUGE-2", "key": "rouge2", "baseline": 0.11, "best": 0.16, "change_percent": 45.5,
         "better": "higher", "improved": True},
        {"metric": "Peak memory", "key": "memory_bytes", "baseline": 3e9, "best": 2e9, "change_percent": -33.3,
         "better": "lower", "improved": True}]})
    store.put_state("summ", "lagrange_history", [{"trial": i, "multipliers": {"time_seconds <= 100": max(0, 2 - i)}}
                                                 for i in range(6)])
    store.put_state("summ", "pbt_lineage", [{"generation": g, "member": m, "source": 0 if m == 2 and g else None,
                                             "score": g + m} for g in range(3) for m in range(3)])
    store.close()

    out = tmp_path / "out"
    proc = run_cli(["report", "summ", "--out", str(out), "--select", "rouge2"], state_dir=state_dir,
                   PYTHONPATH=pythonpath)
    assert proc.returncode == 0, proc.stderr
    names = {p.name for p in out.glob("*.png")}
    assert {"quality.png", "compare.png", "lagrange.png", "pbt_lineage.png", "pareto_front.png"} <= names
    for name in names:
        _assert_valid_png(out / name)
    page = (out / "report.html").read_text()
    assert "Before / after" in page and "Peak memory" in page and "+45.5 %" in page
    assert str(out / "report.html") in proc.stdout

    # With rouge2 maximized, the selected trial has the front's highest ROUGE-2.
    summary = json.loads((out / "report.json").read_text())
    trials = {t["number"]: t for t in json.loads(run_cli(["trials", "summ", "--json"], state_dir=state_dir,
                                                         PYTHONPATH=pythonpath).stdout)}
    best = max(trials[n]["values"]["rouge2"] for n in summary["pareto_front"])
    assert trials[summary["selected"]]["values"]["rouge2"] == best
