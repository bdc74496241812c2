"""The controller's own cost per trial, and whether it grows with the study.

hpod's single controller asks, tells and summarises every trial of a study; on cheap
objectives it bounds the throughput (issue 16). This benchmark runs that path alone, in
one process, without trial processes: for each trial ``Engine.ask`` (random sampler),
the job is claimed and its result stored as an executor would, then ``Engine.collect``
(tell, constraints, events, summary, hypervolume, the study's row). Per trial it records
wall and CPU (process) time, and compares a window early in the study with its last
trials. Two objectives and one constraint, SQLite in a temporary directory.

Run: ``python -m benchmarks.tell_path [--n-trials N] [--label TEXT]``; appends a row per
run to benchmarks/results/tell_path.json and rewrites tell_path.md. Run it once with an
older hpod on the path (``PYTHONPATH=/path/to/old/checkout``) to compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    import hpod

    root = Path(hpod.__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(n_trials: int) -> dict[str, Any]:
    from hpod.core.engine import Engine
    from hpod.spec import parse_spec
    from hpod.store import Store

    spec = parse_spec({
        "name": "tell-path", "objective": {"name": "synthetic:training_cost"},
        "objectives": [{"name": "loss"}, {"name": "energy_joules"}], "constraints": ["energy_joules <= 9e5"],
        "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": n_trials},
    })
    rng = np.random.default_rng(0)
    wall: list[float] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hpod-tell-path-") as tmp:
        store = Store.for_state_dir(Path(tmp))
        engine = Engine(store, spec, state_dir=Path(tmp))
        engine.start()
        for _ in range(n_trials):
            w0, c0 = time.perf_counter(), time.process_time()
            engine.ask(1)
            job = store.claim_job("bench", lease_seconds=60, studies=[spec.name])
            assert job is not None
            loss, energy = float(rng.uniform(1, 3)), float(rng.uniform(1e5, 1e6))
            metrics = {"loss": loss, "energy_joules": energy, "time_seconds": 1.0, "memory_bytes": 1e9}
            result = {"metrics": metrics, "measurements": {k: {"value": v, "method": "benchmark"}
                                                           for k, v in metrics.items()},
                      "seeds": [metrics], "metrics_std": {}, "energy_spent_joules": energy, "notes": []}
            assert store.finish_job(job.id, job.lease_token or "", result=result)  # type: ignore[arg-type]
            told = engine.collect()
            assert len(told) == 1
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
        summary = engine.summary()
        assert summary.finished == n_trials
        store.close()
    width = max(10, n_trials // 5)
    start = max(10, n_trials // 10)
    return {
        "n_trials": n_trials, "window": width,
        "early_window": [start, start + width - 1], "late_window": [n_trials - width, n_trials - 1],
        "early_wall_ms": 1000 * statistics.mean(wall[start:start + width]),
        "late_wall_ms": 1000 * statistics.mean(wall[-width:]),
        "early_cpu_ms": 1000 * statistics.mean(cpu[start:start + width]),
        "late_cpu_ms": 1000 * statistics.mean(cpu[-width:]),
        "pareto_front_size": len(summary.pareto),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "# The controller's tell path per trial",
        "",
        "`python -m benchmarks.tell_path`: ask (random sampler) → job claimed and result stored as an executor "
        "would → collect (tell, constraint, events, summary, hypervolume, study row), in one process, no trial "
        "process; SQLite, two objectives, one constraint. Wall and CPU (process) time per trial, early in the "
        "study and at its end. The machine is shared (2 cores, several other people's jobs): the load is in "
        "each row; CPU time is less disturbed by it than wall time.",
        "",
        "| label | hpod commit | trials | early trials | late trials | wall early / late (ms) | "
        "CPU early / late (ms) | CPU growth | load at start / end |",
        "|---|---|---:|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        growth = 100 * (r["late_cpu_ms"] / r["early_cpu_ms"] - 1)
        lines.append(
            f"| {r['label']} | {r['commit']} | {r['n_trials']} | {r['early_window'][0]}-{r['early_window'][1]} | "
            f"{r['late_window'][0]}-{r['late_window'][1]} | {r['early_wall_ms']:.1f} / {r['late_wall_ms']:.1f} | "
            f"{r['early_cpu_ms']:.1f} / {r['late_cpu_ms']:.1f} | {growth:+.0f} % | "
            f"{r['load_average_1min_at_start']} / {r['load_average_1min_at_end']} |")
    m = rows[-1]["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, Optuna {m['optuna']}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-trials", type=int, default=300)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load_start = round(os.getloadavg()[0], 2)
    row = {"label": args.label, "commit": _commit(), "machine": describe_machine("optuna"),
           "load_average_1min_at_start": load_start, **run(args.n_trials),
           "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    print(json.dumps({k: v for k, v in row.items() if k != "machine"}, indent=1))
    path = RESULTS / "tell_path.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rows.append(row)
    path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    (RESULTS / "tell_path.md").write_text(markdown(rows))


if __name__ == "__main__":
    main()
