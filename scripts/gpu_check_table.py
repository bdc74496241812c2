"""Format `hpod trials gpu-check --json` as the GPU check's table and JSON result.

Usage: python scripts/gpu_check_table.py TRIALS.json OUT.json [SPEC.yaml]
Prints per trial: time per epoch, peak memory, joules, and how each was measured; with
the study's spec also the objective's memory estimate for the trial's configuration and
its error against the measured peak (the estimate's only GPU check).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def _measurement(trial: dict[str, Any], name: str) -> tuple[float | None, str]:
    m = (trial.get("measurements") or {}).get(name)
    if isinstance(m, dict):
        return m.get("value"), str(m.get("method", "?"))
    return None, "absent"


def _gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def estimates(spec_path: str, trials: list[dict[str, Any]]) -> dict[Any, float]:
    """Trial number -> the objective's estimated peak memory per device, bytes (none when
    the objective cannot estimate)."""
    from hpod.objectives.base import EstimatesMemory
    from hpod.spec import load_spec, resolve

    resolved = resolve(load_spec(Path(spec_path)))
    objective = resolved.objective
    if not isinstance(objective, EstimatesMemory):
        return {}
    out = {}
    for t in trials:
        estimate = objective.estimate_memory({**resolved.fixed, **(t.get("params") or {})},
                                             world_size=resolved.spec.resources.world_size, on_gpu=True)
        if estimate is not None:
            out[t.get("number")] = estimate.peak_bytes
    return out


def rows(trials: list[dict[str, Any]], estimated: dict[Any, float] | None = None) -> list[dict[str, Any]]:
    out = []
    for t in trials:
        time_s, time_method = _measurement(t, "time_seconds")
        mem, mem_method = _measurement(t, "memory_bytes")
        joules, energy_method = _measurement(t, "energy_joules")
        metrics = t.get("metrics") or {}
        out.append({
            "number": t.get("number"), "state": t.get("state"), "params": t.get("params"),
            "loss": metrics.get("loss"), "rouge1": metrics.get("rouge1"),
            "time_per_epoch_seconds": metrics.get("time_per_epoch_seconds"),
            "time_seconds": time_s, "time_method": time_method,
            "memory_bytes": mem, "memory_method": mem_method,
            "energy_joules": joules, "energy_method": energy_method,
            "memory_estimate_bytes": (estimated or {}).get(t.get("number")),
        })
        estimate, measured = out[-1]["memory_estimate_bytes"], mem
        out[-1]["memory_estimate_error"] = (estimate - measured) / measured \
            if isinstance(estimate, float) and isinstance(measured, (int, float)) and measured > 0 else None
    return out


def _f(value: Any, fmt: str) -> str:
    return format(value, fmt) if isinstance(value, (int, float)) else "-"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    data = json.loads(Path(argv[0]).read_text())
    trials = data["trials"] if isinstance(data, dict) and "trials" in data else data
    table = rows(trials, estimates(argv[2], trials) if len(argv) == 3 else None)
    header = (f"{'trial':>5} {'state':<9} {'s/epoch':>8} {'trial s':>8} {'peak MiB':>9} {'est MiB':>8} "
              f"{'joules':>9}  methods (time / memory / energy)")
    print(header)
    print("-" * len(header))
    for r in table:
        mib = r["memory_bytes"] / 2**20 if isinstance(r["memory_bytes"], (int, float)) else None
        est = r["memory_estimate_bytes"] / 2**20 if isinstance(r["memory_estimate_bytes"], float) else None
        print(f"{r['number']!s:>5} {r['state']!s:<9} {_f(r['time_per_epoch_seconds'], '8.2f')} "
              f"{_f(r['time_seconds'], '8.1f')} {_f(mib, '9.0f')} {_f(est, '8.0f')} {_f(r['energy_joules'], '9.1f')}  "
              f"{r['time_method']} / {r['memory_method']} / {r['energy_method']}")
    result = {"benchmark": "gpu-check", "gpu": _gpu_name(), "python": platform.python_version(), "trials": table}
    try:
        import torch

        result["torch"] = torch.__version__
        result["cuda"] = torch.version.cuda
    except ImportError:
        pass
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    Path(argv[1]).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
