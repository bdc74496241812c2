"""What hpod's exact hypervolume costs against BoTorch's box decomposition, and the
import each needs: the number a live display waits for when the front changes.

Run: ``python -m benchmarks.hypervolume [--quick]``; writes benchmarks/results/hypervolume.json
and .md (``--quick``: benchmarks/results/quick/). Fronts: points on the positive unit
sphere (all mutually non-dominated: the worst case), reference point 1.1 in every
objective, 2 to 5 objectives. Imports are timed in fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._machine import describe_machine
from hpod.core.pareto import hypervolume

RESULTS = Path(__file__).resolve().parent / "results"


def _import_seconds(statement: str) -> float:
    code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _front(n: int, m: int, seed: int) -> np.ndarray:
    points = np.abs(np.random.default_rng(seed).normal(size=(n, m)))
    return points / np.linalg.norm(points, axis=1, keepdims=True)


def _best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (CI smoke run)")
    args = parser.parse_args(argv)
    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

    cases = [(2, 50), (3, 50), (4, 20)] if args.quick else \
        [(2, 50), (2, 300), (3, 50), (3, 300), (4, 20), (4, 60), (4, 150), (5, 30)]
    repeats = 1 if args.quick else 3
    rows = []
    for m, n in cases:
        front = _front(n, m, seed=m * 1000 + n)
        reference = np.full(m, 1.1)
        ours = hypervolume(front, reference)
        theirs = float(DominatedPartitioning(ref_point=torch.tensor(-reference),
                                             Y=torch.tensor(-front)).compute_hypervolume().item())
        rows.append({
            "objectives": m, "points": n, "hypervolume": ours, "relative_difference": abs(ours - theirs) / theirs,
            "hpod_seconds": _best_of(lambda f=front, r=reference: hypervolume(f, r), repeats),
            "botorch_seconds": _best_of(lambda f=front, r=reference: DominatedPartitioning(
                ref_point=torch.tensor(-r), Y=torch.tensor(-f)).compute_hypervolume(), repeats),
        })
    result = {
        "machine": describe_machine("botorch", "numpy"),
        "load_average_1min_at_start": os.getloadavg()[0],
        "note": "other work ran beside this benchmark on a shared 2-core machine; timings are best of "
                f"{repeats} and would be lower on an idle one",
        "quick": args.quick,
        "import_seconds": {"hpod.core.pareto (numpy)": _import_seconds("import hpod.core.pareto"),
                           "botorch box decomposition (torch)": _import_seconds(
                               "import botorch.utils.multi_objective.box_decompositions.dominated")},
        "rows": rows,
    }
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "hypervolume.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Hypervolume: hpod's exact numpy code vs BoTorch's DominatedPartitioning",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"load {result['load_average_1min_at_start']:.1f} at start ({result['note']}). "
        "Command: `python -m benchmarks.hypervolume`"
        + (" --quick" if args.quick else "") + ".",
        "",
        "| import | seconds |", "|---|---|",
        *[f"| {k} | {v:.2f} |" for k, v in result["import_seconds"].items()],
        "",
        "| objectives | front points | hpod s | BoTorch s | relative difference |", "|---|---|---|---|---|",
        *[f"| {r['objectives']} | {r['points']} | {r['hpod_seconds']:.3f} | {r['botorch_seconds']:.3f} | "
          f"{r['relative_difference']:.1e} |" for r in rows],
        "",
    ]
    (out / "hypervolume.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
