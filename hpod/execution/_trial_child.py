"""The code that runs inside a trial's child process.

The parent (executor) sends a payload; the child builds the objective, runs it once
per seed under the meters, and sends back one ``("result", …)`` or ``("error", …)``
message. Intermediate reports go up as ``("report", …)`` and wait for the parent's
yes/no on stopping (only when the payload's ``ask_on_report`` says someone answers: a
study with a pruner; otherwise they travel with the result). A crash of the child costs this trial only.
"""

from __future__ import annotations

import math
import os
import signal
import statistics
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hpod.errors import TrialPruned
from hpod.execution._ranks import RankGroup, aggregate_figures, rank_devices, seed_everything
from hpod.monitors.meters import TrialMeters
from hpod.objectives.base import Measurement, TrialContext, create_objective

__all__ = ["INFRA_REASONS", "exit_reason", "trial_main"]

#: Failure reasons that are not the configuration's fault: the trial is re-queued
#: and does not count toward the budget.
INFRA_REASONS = frozenset({"interrupted", "shutdown", "orphaned", "worker_lost"})


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    if isinstance(exc, MemoryError) or "OutOfMemoryError" in name:
        return f"out of memory ({name}: {str(exc).splitlines()[0] if str(exc) else ''})".rstrip(": )") + ")"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {first}{where}"[:2000]


def _seed_values(out: dict[str, Any], fig: Any) -> dict[str, float]:
    values = {"time_seconds": float(fig.time_seconds), "memory_bytes": float(fig.memory_bytes),
              "energy_joules": float(fig.energy_joules or 0.0)}
    for name, raw in out.items():
        v = getattr(raw, "value", raw)
        if isinstance(v, (int, float)):
            values[name] = float(v)
    return values


def trial_main(payload: dict[str, Any], conn: Any) -> None:
    """Entry point of the trial process (``multiprocessing`` target)."""
    try:
        result = _run(payload, conn)
        conn.send(("result", result))
    except BaseException as exc:
        try:
            conn.send(("error", _describe(exc), traceback.format_exc()[-8000:]))
        except Exception:
            pass
    finally:
        try:
            conn.close()
        except Exception:
            pass


def _run(payload: dict[str, Any], conn: Any) -> dict[str, Any]:
    gpu = payload.get("gpu_index")
    gpu_indices = [int(g) for g in payload.get("gpu_indices") or ([] if gpu is None else [gpu])]
    world_size = max(1, int(payload.get("world_size") or 1))
    if gpu_indices:
        # Before CUDA initialises: this process sees exactly the trial's GPUs, as cuda:0…
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_indices[:world_size])
        gpu_indices = gpu_indices[:world_size]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    objective = create_objective(payload["objective"]["name"], payload["objective"].get("params") or {})
    artifact_dir = Path(payload["artifact_dir"])
    cache_dir = Path(payload["cache_dir"])
    artifact_dir.mkdir(parents=True, exist_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    objective.prepare(cache_dir)

    provided = frozenset(getattr(objective, "provides", frozenset()))
    meters = TrialMeters(
        gpu_index=gpu,
        use_codecarbon=bool(payload.get("codecarbon", True)) and bool(getattr(objective, "heavy", False))
        and "energy_joules" not in provided,
    )
    seeds: list[int] = list(payload["seeds"])
    # Several ranks: this process is rank 0 and starts the others (see _ranks).
    group = RankGroup(payload, world_size, gpu_indices) if world_size > 1 else None
    devices = rank_devices(gpu_indices, world_size)
    per_seed: list[dict[str, Any]] = []
    intermediate: list[list[Any]] = []
    rank_records: list[dict[str, Any]] = []
    pruned = False
    ask_on_report = bool(payload.get("ask_on_report", True))

    def hook(seed_index: int) -> Callable[[int, Mapping[str, float]], bool]:
        def report(step: int, values: Mapping[str, float]) -> bool:
            # What the seed has cost so far goes with each report (the objective's own
            # figures win): MO-ASHA ranks loss against it at every rung.
            values = {**meters.spent_so_far(), **values}
            intermediate.append([seed_index, step, values])
            if not ask_on_report:
                return False
            conn.send(("report", seed_index, step, values))
            return bool(conn.recv())

        return report

    for i, seed in enumerate(seeds):
        ctx = TrialContext(
            params=dict(payload["params"]), seed=seed, seed_index=i, trial_number=payload["trial_number"],
            study_name=payload["study"], artifact_dir=artifact_dir, cache_dir=cache_dir,
            device=("cuda" if group is None else devices[0]) if gpu_indices else "cpu", report_hook=hook(i),
            resume_from=Path(payload["resume_from"]) if payload.get("resume_from") else None,
            rank=0, world_size=world_size, devices=devices,
            stop_sync=group.stop_sync if group is not None else None,
        )
        if group is not None:
            group.begin_seed(i)
        seed_everything(seed)
        out: dict[str, Any]
        with meters.section() as fig:
            try:
                out = dict(objective.run(ctx))
            except TrialPruned:
                pruned = True
                out = dict(ctx.intermediate[-1][1]) if ctx.intermediate else {}
        if group is not None:
            # The ranks' meters, folded into this seed's figures (energy summed, memory max and sum).
            ranks = group.gather(fig, out)
            out.update(aggregate_figures(fig, ranks))
            rank_records.append({"seed": seed, "ranks": ranks})
        per_seed.append({"seed": seed, "out": out, "fig": fig})
        if pruned:
            break
        if payload.get("adaptive_seeds") and i < len(seeds) - 1:
            # Adaptive seeds: the parent says whether this configuration is worth another seed.
            conn.send(("seed_done", i, _seed_values(out, fig)))
            if not conn.recv():
                break
    if group is not None:
        group.close()
    meters.finish()

    seeds_out: list[dict[str, Any]] = []
    methods: dict[str, str] = {}
    for entry in per_seed:
        values: dict[str, float] = {}
        for name, v in entry["out"].items():
            if isinstance(v, Measurement):
                values[name] = float(v.value)
                methods[name] = v.method
            elif (isinstance(v, (int, float)) and not isinstance(v, bool)) or isinstance(v, bool):
                values[name] = float(v)
        fig = entry["fig"]
        if "time_seconds" not in provided or "time_seconds" not in values:
            values["time_seconds"], methods["time_seconds"] = fig.time_seconds, "wall-clock"
        if "memory_bytes" not in provided or "memory_bytes" not in values:
            values["memory_bytes"], methods["memory_bytes"] = fig.memory_bytes, fig.memory_method
        if "energy_joules" not in provided or "energy_joules" not in values:
            values["energy_joules"] = float(fig.energy_joules or 0.0)
            methods["energy_joules"] = fig.energy_method or "unmeasured"
        seeds_out.append({"seed": entry["seed"], "values": values})

    required = list(payload.get("required", []))
    for name in required:
        for s in seeds_out:
            if name not in s["values"] and not pruned:
                reported = ", ".join(sorted(s["values"])) or "nothing"
                raise ValueError(f"objective did not report {name!r} (it reported: {reported})")
            v = s["values"].get(name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"objective returned {v} for {name!r} (seed {s['seed']})")

    names = sorted(set().union(*(s["values"].keys() for s in seeds_out))) if seeds_out else []
    metrics: dict[str, float] = {}
    metrics_std: dict[str, float] = {}
    for name in names:
        vals = [s["values"][name] for s in seeds_out if name in s["values"]]
        if name == "memory_bytes":
            metrics[name] = max(vals)  # a resource need: the peak over seeds
        else:
            metrics[name] = statistics.fmean(vals)
        metrics_std[name] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    measurements = {
        name: {"value": metrics[name], "method": methods.get(name, "objective")}
        for name in ("time_seconds", "memory_bytes", "energy_joules") if name in metrics
    }
    spent = sum(s["values"].get("energy_joules", 0.0) for s in seeds_out)
    return {
        "metrics": metrics,
        "metrics_std": metrics_std,
        "measurements": measurements,
        "seeds": seeds_out,
        "pruned": pruned,
        "intermediate": intermediate[-200:],
        "energy_spent_joules": spent,
        "notes": meters.notes,
        "artifact_dir": str(artifact_dir),
        **({"ranks": rank_records} if rank_records else {}),
    }


def exit_reason(code: int | None) -> str:
    """Why a trial process ended without sending a result, from its exit code."""
    if code is None:
        return "trial process did not exit"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (likely out of memory: the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"trial process killed by {name}{hint}"
    return f"trial process exited with code {code} without a result"
