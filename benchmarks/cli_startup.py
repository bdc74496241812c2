"""How long the console script takes to answer its fast commands: ``hpod --help``,
``hpod status --help`` and ``hpod status`` on a SQLite database holding one study.

Run: ``python -m benchmarks.cli_startup [--repeats N]``; writes
benchmarks/results/cli_startup.json and .md. Each command runs N times as a fresh
process (the console script, as a user starts it); the table gives the median and the
fastest run with the 1-minute load average before and after, since other work on a
shared machine slows a process start. The lazy CLI's target is ``hpod --help`` under
0.5 s (issue 12); tests assert on what is imported (tests/cli_tests), never on time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_HELP_SECONDS = 0.5


def _hpod() -> str:
    exe = Path(sys.executable).with_name("hpod")
    return str(exe) if exe.exists() else (shutil.which("hpod") or "hpod")


def _env(state_dir: Path) -> dict[str, str]:
    # HPOD_API points nowhere: `hpod status` reads the database, as without a daemon.
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HPOD_STATE_DIR": str(state_dir), "HPOD_API": "127.0.0.1:1"}


def _cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(args: list[str], env: dict[str, str], repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (user + system) seconds of each run. CPU time hardly depends
    on what else the machine runs; wall time does."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu_before, start = _cpu_of_children(), time.perf_counter()
        proc = subprocess.run([_hpod(), *args], env=env, capture_output=True, text=True, timeout=120)
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu_of_children() - cpu_before)
        if proc.returncode != 0:
            raise RuntimeError(f"hpod {' '.join(args)} failed ({proc.returncode}): {proc.stderr[-500:]}")
    return walls, cpus


def run(repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="hpod-cli-startup-") as tmp:
        state_dir = Path(tmp) / "state"
        spec = Path(tmp) / "spec.yaml"
        spec.write_text(json.dumps({
            "name": "startup", "objective": {"name": "synthetic:training_cost"},
            "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
            "sampler": {"name": "random", "seed": 1}, "budget": {"n_trials": 3},
        }))
        env = _env(state_dir)
        subprocess.run([_hpod(), "run", str(spec), "--no-codecarbon"], env=env, check=True, capture_output=True,
                       timeout=600)
        rows = []
        for args in (["--help"], ["status", "--help"], ["status"]):
            load_before = os.getloadavg()[0]
            times, cpus = _time(args, env, repeats)
            rows.append({"command": "hpod " + " ".join(args), "repeats": repeats,
                         "median_seconds": statistics.median(times), "min_seconds": min(times),
                         "max_seconds": max(times), "median_cpu_seconds": statistics.median(cpus),
                         "min_cpu_seconds": min(cpus), "load_1min_before": round(load_before, 2),
                         "load_1min_after": round(os.getloadavg()[0], 2)})
            print(f"  {rows[-1]['command']:<20} wall median {rows[-1]['median_seconds']:.3f} s, "
                  f"min {rows[-1]['min_seconds']:.3f} s; CPU median {rows[-1]['median_cpu_seconds']:.3f} s",
                  flush=True)
    return {"machine": describe_machine(), "command": f"python -m benchmarks.cli_startup --repeats {repeats}",
            "target_help_seconds": TARGET_HELP_SECONDS, "rows": rows}


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# CLI start-up time",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, torch {m['torch']}. "
        f"Command: `{result['command']}`. Each command is a fresh `hpod` process; other people's "
        "tests and benchmarks ran on the same machine at the time (1-minute load averages below, "
        "on 2 cores), so wall times are inflated by waiting for a core; the CPU time (user + system "
        "of the process) is the command's own cost and what an idle machine's wall time approaches.",
        "",
        "| command | wall median (s) | wall fastest (s) | wall slowest (s) | CPU median (s) | CPU least (s) "
        "| load before | load after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| `{r['command']}` | {r['median_seconds']:.3f} | {r['min_seconds']:.3f} "
                     f"| {r['max_seconds']:.3f} | {r['median_cpu_seconds']:.3f} | {r['min_cpu_seconds']:.3f} "
                     f"| {r['load_1min_before']} | {r['load_1min_after']} |")
    lines += ["", f"Target: `hpod --help` under {result['target_help_seconds']} s (the lazy CLI imports a "
              "command's module only when that command runs; tests/cli_tests/test_lazy_imports.py checks "
              "that `hpod --help` and `hpod status` import neither torch nor Optuna)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    result = run(args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "cli_startup.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "cli_startup.md").write_text(to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
