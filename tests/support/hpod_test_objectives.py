"""User objectives for the tests, referenced from specs as `hpod_test_objectives:NAME`
(the tests put tests/support on PYTHONPATH)."""

from __future__ import annotations

import math
import os
import signal
import time

import numpy as np


def quadratic(params):
    """A 2-objective function of x, y."""
    x, y = float(params["x"]), float(params["y"])
    return {"loss": (x - 0.3) ** 2 + y**2, "cost": (x + 0.5) ** 2 + (y - 0.2) ** 2}


quadratic.metric_names = ("loss", "cost")
quadratic.default_space = {"x": {"type": "float", "low": -1, "high": 1}, "y": {"type": "float", "low": -1, "high": 1}}


def crashy(params):
    """Fails in different ways depending on `mode`; otherwise a smooth function."""
    mode = params.get("mode", "ok")
    x = float(params["x"])
    if mode == "raise" and x > 0.5:
        raise RuntimeError(f"diverged at x={x:.3f}")
    if mode == "nan" and x > 0.5:
        return {"loss": float("nan")}
    if mode == "exit" and x > 0.5:
        os._exit(3)
    if mode == "kill" and x > 0.5:
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "memory" and x > 0.5:
        raise MemoryError("cannot allocate 64 GiB")
    return {"loss": (x - 0.2) ** 2}


crashy.metric_names = ("loss",)
crashy.default_space = {"x": {"type": "float", "low": 0, "high": 1}}


def slow(params):
    """Takes `seconds` of wall time (sleeping), for interruption tests."""
    time.sleep(float(params.get("seconds", 1.0)))
    x = float(params["x"])
    return {"loss": (x - 0.2) ** 2}


slow.metric_names = ("loss",)
slow.default_space = {"x": {"type": "float", "low": 0, "high": 1}}


def busy(params):
    """Burns CPU for `seconds` and allocates `megabytes` (for the meters)."""
    seconds = float(params.get("seconds", 0.5))
    block = np.ones(int(float(params.get("megabytes", 50)) * 1024 * 1024 / 8))
    end = time.perf_counter() + seconds
    acc = 0.0
    while time.perf_counter() < end:
        acc += float(np.sqrt(block[:100000]).sum())
    return {"loss": math.fabs(float(params["x"]) - 0.5) + 0 * acc + 0 * block[0]}


busy.metric_names = ("loss",)
busy.heavy = True
busy.default_space = {"x": {"type": "float", "low": 0, "high": 1}}


def ranks(params, ctx):
    """Data parallel: each rank adds rank+1 into an all-reduce, so every rank returns
    1 + 2 + … + world_size; one report per rank (the trial's is rank 0's)."""
    import torch
    import torch.distributed as dist

    total = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(total)
    loss = float(params["x"]) ** 2
    ctx.report(1, {"loss": loss})
    return {"loss": loss, "rank_sum": float(total.item()), "world": float(ctx.world_size),
            "devices": ",".join(ctx.devices)}


ranks.metric_names = ("loss", "rank_sum", "world")
ranks.default_space = {"x": {"type": "float", "low": -1, "high": 1}}


def shifted(params):
    """A 1-objective function whose optimum is at `shift` (an objective.params option it
    declares in `param_names`)."""
    return {"loss": (float(params["x"]) - float(params.get("shift", 0.0))) ** 2}


shifted.metric_names = ("loss",)
shifted.default_space = {"x": {"type": "float", "low": -1, "high": 1}}
shifted.param_names = ("shift",)


class Scaled:
    """An Objective class: its constructor's keywords are its objective.params."""

    metric_names = frozenset({"loss"})
    provides = frozenset()
    reference_point = None
    heavy = False

    def __init__(self, scale: float = 1.0, *, offset: float = 0.0):
        self.scale, self.offset = float(scale), float(offset)

    def default_space(self):
        return {"x": {"type": "float", "low": -1, "high": 1}}

    def validate(self):
        return None

    def prepare(self, cache_dir):
        return None

    def run(self, ctx):
        return {"loss": self.scale * float(ctx.params["x"]) ** 2 + self.offset}


def loss_curve(params, ctx):
    """A training curve that reports only its loss (as t5_lora does): 6 evaluations,
    a little CPU work before each, the loss falling towards |x - 0.5|."""
    x = float(params["x"])
    for step in range(1, 7):
        sum(i * i for i in range(20_000))  # spend some CPU so energy accrues
        ctx.report(step, {"loss": abs(x - 0.5) + 1.0 / step})
    return {"loss": abs(x - 0.5)}


loss_curve.metric_names = ("loss",)
loss_curve.default_space = {"x": {"type": "float", "low": 0, "high": 1}}
