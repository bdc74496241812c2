"""optuna-dashboard (and plain Optuna) on an hpod database show the study hpod shows:
named objectives, the constraints, and the same feasible Pareto front as `hpod pareto`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hpod_testing import ROOT, run_cli, wait_for

from hpod.core.pareto import non_dominated_mask
from hpod.core.records import REJECTED_ATTR

pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is in the dev extra")

EXAMPLE = ROOT / "examples" / "synthetic-4obj.yaml"


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _dashboard_front(study: dict[str, Any]) -> list[int]:
    """The front optuna-dashboard's Pareto-front plot draws: complete trials whose
    constraints are all <= 0, then the non-dominated ones among them (its bundle.js)."""
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in study["directions"]])
    feasible = [t for t in study["trials"] if t["state"] == "Complete"
                and all(c <= 0 for c in t["constraints"])]
    if not feasible:
        return []
    points = np.array([[float(v) for v in t["values"]] for t in feasible]) * signs
    return sorted(t["number"] for t, keep in zip(feasible, non_dominated_mask(points)) if keep)


@pytest.mark.slow
def test_optuna_dashboard_shows_hpods_front(state_dir: Path) -> None:
    import optuna

    proc = run_cli(["run", str(EXAMPLE), "--n-trials", "16"], state_dir=state_dir)
    assert proc.returncode == 0, proc.stderr
    spec = yaml.safe_load(EXAMPLE.read_text())
    names = [o["name"] for o in spec["objectives"]]
    constraints = spec["constraints"]
    trials = {t["number"]: t for t in _json(run_cli(["trials", "synthetic-4obj", "--json"], state_dir=state_dir))}
    front = sorted(t["number"] for t in _json(run_cli(["pareto", "synthetic-4obj", "--json"],
                                                      state_dir=state_dir)))
    assert front and any(not t["feasible"] for t in trials.values()), \
        "the example must have feasible and infeasible trials for this test to mean something"

    url = f"sqlite:///{state_dir / 'hpod.db'}"
    # Plain Optuna reads the names and excludes infeasible trials from best_trials.
    study = optuna.load_study(study_name="synthetic-4obj", storage=url)
    assert study.metric_names == names
    assert sorted(t.number for t in study.best_trials) == front
    # suggestions hpod closed unrun as repeats (issue 14) stay in Optuna's table as failed
    # trials; hpod's own listings leave them out
    rejected = {t.number for t in study.trials if REJECTED_ATTR in t.user_attrs}

    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", "import sys; from optuna_dashboard import run_server; "
         "run_server(sys.argv[1], host='127.0.0.1', port=int(sys.argv[2]))", url, str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        def studies() -> list[dict[str, Any]] | None:
            assert server.poll() is None, f"optuna-dashboard exited: {server.stderr.read() if server.stderr else ''}"
            try:
                return list(_get(f"{base}/api/studies")["study_summaries"])
            except OSError:
                return None

        summaries = wait_for(studies, 240, "optuna-dashboard to answer", interval=1)
        (summary,) = [s for s in summaries if s["study_name"] == "synthetic-4obj"]
        shown = _get(f"{base}/api/studies/{summary['study_id']}?after=0")
    finally:
        server.terminate()
        server.wait(timeout=60)

    assert shown["objective_names"] == names
    ran = [t for t in shown["trials"] if t["number"] not in rejected]
    assert len(ran) == len(trials)
    for trial in ran:
        ours = trials[trial["number"]]
        if ours["state"] == "COMPLETE":
            # one list, in the spec's order, as hpod names them
            assert trial["constraints"] == pytest.approx([ours["constraints"][c] for c in constraints])
            assert trial["values"] == pytest.approx([ours["values"][n] for n in names])
    assert _dashboard_front(shown) == front
