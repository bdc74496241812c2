"""A synthetic learning-curve problem in the shape of the t5_lora table: the held-out
problem of :mod:`benchmarks.multi_fidelity`.

The same space as :mod:`benchmarks.t5_lora_runs` (learning rate, batch size, epochs,
dropout, LoRA rank and alpha) and the same table format, so the same replay
(:class:`~benchmarks.t5_lora_runs.TabularProblem`) and harness run on it; the runs
are computed, not trained. Each configuration's validation loss falls as
``L_inf + (L0 - L_inf) * exp(-k * epoch)`` with a little deterministic noise per
evaluation. A larger effective learning rate (learning rate, raised by alpha) learns
faster (``k`` grows) but past an optimum that depends on the batch size it ends
higher (``L_inf`` grows): curves cross, so early losses mislead the way they do in
real training. Energy grows linearly with the epochs trained, at a rate set by rank
and batch size, after a fixed start-up cost.

Nothing in it was fitted to the t5 table or to any method's results.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from benchmarks.t5_lora_runs import EVALS_PER_EPOCH, SPACE, TabularProblem, _unit, design

#: scrambled-Sobol seed of the design (the t5 table's is 0)
DESIGN_SEED = 1
N_CONFIGURATIONS = 256


def _run(config: dict[str, Any], index: int) -> dict[str, Any]:
    u = _unit("learning_rate", config["learning_rate"])
    b = round(_unit("batch_size", config["batch_size"]) * 2)
    r = round(_unit("rank", config["rank"]) * 2)
    a = round(_unit("alpha", config["alpha"]) * 2)
    d = _unit("dropout", config["dropout"])
    lr = min(max(u + 0.15 * (a - 1), 0.0), 1.0)  # alpha scales LoRA's effective learning rate
    rate = 0.3 + 2.5 * lr**2  # per epoch
    optimum = 0.6 + 0.1 * b  # larger batches tolerate a larger learning rate
    final = 1.0 + 1.5 * (lr - optimum) ** 2 + 0.6 * max(0.0, lr - optimum) + 0.2 * (d - 0.3) ** 2 - 0.04 * r
    start = 3.0
    per_epoch_joules = 6.0 * (1.0 + 0.25 * r) * (1.4, 1.0, 0.75)[b]
    noise = np.random.default_rng(1000 + index).normal(0.0, 0.01, EVALS_PER_EPOCH * config["epochs"])
    curve = []
    for i in range(1, EVALS_PER_EPOCH * config["epochs"] + 1):
        epoch = i / EVALS_PER_EPOCH
        joules = 1.5 + per_epoch_joules * epoch
        loss = final + (start - final) * math.exp(-rate * epoch) + float(noise[i - 1])
        curve.append({"step": i, "epoch": epoch, "loss": round(loss, 5), "time_seconds": round(joules / 3.0, 4),
                      "energy_joules": round(joules, 4)})
    return {"config": config, "loss": min(c["loss"] for c in curve), "last_loss": curve[-1]["loss"],
            "time_seconds": curve[-1]["time_seconds"], "memory_bytes": 3e8 + 1e7 * r + 5e7 * b,
            "energy_joules": curve[-1]["energy_joules"], "steps": len(curve), "curve": curve, "index": index}


def problem() -> TabularProblem:
    """The synthetic table (256 configurations of a Sobol design) as a benchmark problem."""
    runs = [_run(cfg, i) for i, cfg in enumerate(design(N_CONFIGURATIONS, DESIGN_SEED))]
    meta = {"data": "synthetic learning curves (benchmarks/learning_curves.py)",
            "space": {k: list(v) for k, v in SPACE.items()},
            "design": {"kind": "scrambled Sobol", "n": N_CONFIGURATIONS, "seed": DESIGN_SEED}}
    return TabularProblem(runs=runs, meta=meta, name="learning_curves")
