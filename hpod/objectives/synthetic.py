"""Synthetic objectives: BoTorch's multi-objective test problems and a cheap cost model
of a LoRA training run. They cost milliseconds, so tests and benchmarks can run
hundreds of trials; ``training_cost`` exercises 4-objective constrained studies.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from hpod.objectives.base import (
    LORA_EXPERIMENT_SPACE,
    BaseObjective,
    Measurement,
    TrialContext,
    parse_params,
    register_objective,
)

__all__ = [
    "PROBLEMS",
    "BotorchProblemObjective",
    "TrainingCostObjective",
    "TrainingCostPBTObjective",
    "training_cost_model",
]

#: name -> (botorch class name, constructor kwargs)
PROBLEMS: dict[str, tuple[str, dict[str, Any]]] = {
    "branin_currin": ("BraninCurrin", {}),
    "dtlz2": ("DTLZ2", {"dim": 6, "num_objectives": 2}),
    "vehicle_safety": ("VehicleSafety", {}),
    "zdt1": ("ZDT1", {"dim": 6, "num_objectives": 2}),
}


def _stable_seed(*parts: Any) -> int:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


class _ProblemOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    noise_std: float = Field(default=0.0, ge=0)
    sleep_seconds: float = Field(default=0.0, ge=0)


class BotorchProblemObjective(BaseObjective):
    """A BoTorch multi-objective test problem in its raw, minimized form.

    Parameters are ``x0 … x{d-1}`` within the problem's bounds; metrics are
    ``f0 … f{m-1}`` (minimize all), with BoTorch's reference point. ``noise_std``
    adds Gaussian noise (per objective, seeded by the trial seed); the noiseless
    values are reported too as ``f{i}_true`` so benchmarks can score the front.
    """

    def __init__(self, problem: str, options: Mapping[str, Any]):
        self.options = parse_params(_ProblemOptions, options)
        self.problem_name = problem
        cls_name, kwargs = PROBLEMS[problem]
        self._cls_name, self._kwargs = cls_name, kwargs
        bounds, m, ref, max_hv = self._static_info()
        self.bounds = bounds
        self.num_objectives = m
        self.max_hv = max_hv
        self.metric_names = frozenset([f"f{i}" for i in range(m)] + [f"f{i}_true" for i in range(m)])
        self.reference_point = {f"f{i}": float(r) for i, r in enumerate(ref)}
        self._problem: Any = None

    preload = ("torch", "botorch.test_functions.multi_objective")

    def _static_info(self) -> tuple[list[tuple[float, float]], int, list[float], float | None]:
        problem = self._build()
        bounds = [(float(lo), float(hi)) for lo, hi in problem.bounds.T.tolist()]
        ref = [float(v) for v in problem._ref_point]
        max_hv = getattr(problem, "_max_hv", None)
        return bounds, int(problem.num_objectives), ref, (float(max_hv) if max_hv is not None else None)

    def _build(self) -> Any:
        from botorch.test_functions import multi_objective as mo

        return getattr(mo, self._cls_name)(**self._kwargs)

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {f"x{i}": {"type": "float", "low": lo, "high": hi} for i, (lo, hi) in enumerate(self.bounds)}

    def evaluate_true(self, x: list[float]) -> list[float]:
        import torch

        if self._problem is None:
            self._problem = self._build()
        with torch.no_grad():
            y = self._problem.evaluate_true(torch.tensor([x], dtype=torch.double))
        return [float(v) for v in y[0].tolist()]

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        x = [float(ctx.params[f"x{i}"]) for i in range(len(self.bounds))]
        if self.options.sleep_seconds:
            time.sleep(self.options.sleep_seconds)
        true = self.evaluate_true(x)
        rng = np.random.default_rng(_stable_seed(self.problem_name, x, ctx.seed))
        out: dict[str, float | Measurement] = {}
        for i, v in enumerate(true):
            noisy = v + (rng.normal(0.0, self.options.noise_std) if self.options.noise_std else 0.0)
            out[f"f{i}"] = noisy
            out[f"f{i}_true"] = v
        return out


class _CostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: training examples per epoch in the modelled run
    train_examples: int = Field(default=20000, ge=1)
    #: standard deviation of the loss noise (absolute)
    noise: float = Field(default=0.02, ge=0)
    #: relative noise on time and energy
    cost_noise: float = Field(default=0.03, ge=0)
    #: evaluations per epoch reported as intermediate values
    evals_per_epoch: int = Field(default=2, ge=1)
    #: real seconds to sleep per evaluation step (to make trials take wall time in tests)
    sleep_seconds: float = Field(default=0.0, ge=0)
    #: modelled base-model size in bytes (weights + frozen activations floor)
    base_memory_bytes: float = Field(default=1.2e9, gt=0)


def training_cost_model(params: Mapping[str, Any], *, train_examples: int = 20000) -> dict[str, Any]:
    """The noiseless cost model of a LoRA fine-tuning run.

    - loss: 2.0 plus penalties for a learning rate away from its batch-dependent
      optimum (``3e-4·sqrt(batch/16)``, quadratic in log10), dropout away from 0.2,
      LoRA scale ``alpha/rank`` away from 2–4, minus a small gain for rank and
      epochs (diminishing, ``0.45·exp(-0.55·epochs)``); overfitting when many epochs
      meet little dropout.
    - time_seconds: epochs × steps/epoch × step time, step time growing with batch
      and rank (``0.05 + 0.012·batch·(1 + rank/64)`` s).
    - memory_bytes: base model + activations (∝ batch) + adapter and optimizer state (∝ rank).
    - energy_joules: time × power, power 120 W + 6 W per batch element.

    Returns the per-epoch loss curve too (``curve``), used for intermediate reports.
    """
    lr = float(params.get("learning_rate", 3e-4))
    batch = float(params.get("batch_size", 16))
    epochs = float(params.get("epochs", 3))
    dropout = float(params.get("dropout", 0.2))
    rank = float(params.get("rank", 8))
    alpha = float(params.get("alpha", 32))
    lr_opt = 3e-4 * math.sqrt(batch / 16.0)
    scale = alpha / rank
    base = (
        2.0
        + 0.35 * math.log10(lr / lr_opt) ** 2
        + 0.6 * (dropout - 0.2) ** 2
        + 0.03 * (math.log2(scale) - 1.5) ** 2
        - 0.04 * math.log2(rank)
        + 0.02 * max(0.0, epochs - 3) * max(0.0, 0.3 - dropout) * 10
    )
    curve = [base + 0.45 * math.exp(-0.55 * e) for e in np.linspace(0.5, epochs, max(2, int(epochs * 2)))]
    steps_per_epoch = math.ceil(train_examples / batch)
    step_time = 0.05 + 0.012 * batch * (1 + rank / 64.0)
    time_seconds = epochs * steps_per_epoch * step_time
    memory = 1.2e9 + batch * 4.5e7 + rank * 1.5e6 * 3
    power = 120.0 + 6.0 * batch
    return {
        "loss": curve[-1],
        "curve": curve,
        "time_seconds": time_seconds,
        "time_per_epoch_seconds": time_seconds / epochs,
        "memory_bytes": memory,
        "energy_joules": time_seconds * power,
    }


class TrainingCostObjective(BaseObjective):
    """``synthetic:training_cost``: a modelled LoRA training run (see
    :func:`training_cost_model`) with seeded noise and intermediate loss reports.

    Its time, memory and energy are the model's figures (method
    ``synthetic-cost-model``), not the trial process's: the point is to exercise
    4-objective constrained studies in milliseconds.
    """

    metric_names = frozenset(
        ["loss", "time_seconds", "memory_bytes", "energy_joules", "time_per_epoch_seconds", "epochs_run"]
    )
    provides = frozenset(["time_seconds", "memory_bytes", "energy_joules"])

    def __init__(self, options: Mapping[str, Any]):
        self.options = parse_params(_CostOptions, options)

    def default_space(self) -> dict[str, dict[str, Any]]:
        return {name: dict(entry) for name, entry in LORA_EXPERIMENT_SPACE.items()}

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        o = self.options
        model = training_cost_model(ctx.params, train_examples=o.train_examples)
        rng = np.random.default_rng(_stable_seed(sorted(ctx.params.items()), ctx.seed))
        epochs = float(ctx.params.get("epochs", 3))
        n_evals = max(1, round(epochs * o.evals_per_epoch))
        total_time = model["time_seconds"] * (1 + rng.normal(0, o.cost_noise))
        power = model["energy_joules"] / model["time_seconds"] * (1 + rng.normal(0, o.cost_noise))
        loss = float("nan")
        done = 0
        for step in range(1, n_evals + 1):
            frac = step / n_evals
            e = max(0.5, epochs * frac)
            loss = model["loss"] - 0.45 * math.exp(-0.55 * epochs) + 0.45 * math.exp(-0.55 * e)
            loss += rng.normal(0, o.noise)
            done = step
            if o.sleep_seconds:
                time.sleep(o.sleep_seconds / n_evals)
            # Cost so far rides along, so a pruned trial keeps what it spent.
            ctx.report(step, {"loss": loss, "time_seconds": total_time * frac,
                              "energy_joules": total_time * frac * power})
        frac = done / n_evals
        return {
            "loss": loss,
            "time_seconds": Measurement(total_time * frac, "synthetic-cost-model"),
            "memory_bytes": Measurement(model["memory_bytes"], "synthetic-cost-model"),
            "energy_joules": Measurement(total_time * frac * power, "synthetic-cost-model"),
            "time_per_epoch_seconds": total_time / epochs,
            "epochs_run": epochs * frac,
        }


class _PBTOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: steps per interval when the strategy does not say (no ``pbt.json`` in resume_from)
    interval_steps: int = Field(default=4, ge=1)
    noise: float = Field(default=0.01, ge=0)
    train_examples: int = Field(default=20000, ge=1)
    #: modelled training steps per epoch-equivalent (sets time/energy per step)
    steps_per_epoch: int = Field(default=8, ge=1)
    start_loss: float = Field(default=3.0, gt=0)


class TrainingCostPBTObjective(BaseObjective):
    """``synthetic:training_cost_pbt``: a stateful, resumable version of ``training_cost``
    for population-based training.

    Each run trains ``interval_steps`` steps (from ``<resume_from>/pbt.json``, else the
    option) starting from the state in ``<resume_from>/state.json`` (step, loss) when
    there is one, and writes the new state to ``ctx.artifact_dir/state.json``. The
    loss decays toward the configuration's floor (the cost model's loss without the
    epoch term) at a rate that grows with ``learning_rate / lr_opt`` (capped), so
    hyperparameters that suit early training differ from those that suit late
    training — the case PBT is for. Time and energy are those of the interval.
    """

    metric_names = frozenset(["loss", "time_seconds", "memory_bytes", "energy_joules", "step"])
    provides = frozenset(["time_seconds", "memory_bytes", "energy_joules"])

    def __init__(self, options: Mapping[str, Any]):
        self.options = parse_params(_PBTOptions, options)

    def default_space(self) -> dict[str, dict[str, Any]]:
        space = TrainingCostObjective({}).default_space()
        space.pop("epochs")
        return space

    def run(self, ctx: TrialContext) -> Mapping[str, float | Measurement]:
        import json

        o = self.options
        steps, start_step, loss = o.interval_steps, 0, o.start_loss
        if ctx.resume_from is not None:
            meta = ctx.resume_from / "pbt.json"
            if meta.exists():
                steps = int(json.loads(meta.read_text(encoding="utf-8")).get("interval_steps", steps))
            state_file = ctx.resume_from / "state.json"
            if state_file.exists():
                state = json.loads(state_file.read_text(encoding="utf-8"))
                start_step, loss = int(state["step"]), float(state["loss"])
        model = training_cost_model({**ctx.params, "epochs": 3}, train_examples=o.train_examples)
        floor = model["loss"] - 0.45 * math.exp(-0.55 * 3)
        lr = float(ctx.params.get("learning_rate", 3e-4))
        lr_opt = 3e-4 * math.sqrt(float(ctx.params.get("batch_size", 16)) / 16.0)
        # Fast progress needs a high rate; a too-high rate raises the floor it can reach.
        rate = min(0.6, 0.15 * lr / lr_opt)
        floor += 0.25 * max(0.0, math.log10(lr / lr_opt)) ** 2
        step_time = model["time_per_epoch_seconds"] / o.steps_per_epoch
        power = model["energy_joules"] / model["time_seconds"]
        for k in range(1, steps + 1):
            rng = np.random.default_rng(_stable_seed(sorted(ctx.params.items()), ctx.seed, start_step + k))
            loss = floor + (loss - floor) * (1.0 - rate) + rng.normal(0, o.noise)
            ctx.report(start_step + k, {"loss": loss, "time_seconds": step_time * k,
                                        "energy_joules": step_time * k * power})
        ctx.artifact_dir.mkdir(parents=True, exist_ok=True)
        (ctx.artifact_dir / "state.json").write_text(json.dumps({"step": start_step + steps, "loss": loss}),
                                                      encoding="utf-8")
        return {
            "loss": loss,
            "time_seconds": Measurement(step_time * steps, "synthetic-cost-model"),
            "memory_bytes": Measurement(model["memory_bytes"], "synthetic-cost-model"),
            "energy_joules": Measurement(step_time * steps * power, "synthetic-cost-model"),
            "step": float(start_step + steps),
        }


def _problem_factory(problem: str) -> Any:
    def factory(params: Mapping[str, Any]) -> BotorchProblemObjective:
        return BotorchProblemObjective(problem, params)

    return factory


for _name in PROBLEMS:
    register_objective(f"synthetic:{_name}", _problem_factory(_name))
register_objective("synthetic:training_cost", TrainingCostObjective)
register_objective("synthetic:training_cost_pbt", TrainingCostPBTObjective)
