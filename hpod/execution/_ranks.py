"""Trials that span several devices: one process per rank in a ``torch.distributed`` group.

The trial process is rank 0: it talks to the executor as any trial does (reports,
seeds, the result). With ``world_size`` N > 1 it starts ranks 1..N-1 (spawned children
that die with it), and all ranks join one process group — NCCL over the trial's GPUs
(rank r on ``cuda:r`` of the trial's ``CUDA_VISIBLE_DEVICES``), or gloo with N CPU
processes (how CI runs it). Rank 0 tells the others which seed to run next; each rank
runs the objective under its own meters; after every seed the ranks' figures are
gathered on rank 0, which aggregates them (:func:`aggregate_figures`). A stop decision
(pruning, early stopping) taken on rank 0 reaches every rank at the same report, so all
ranks leave the training loop together.

The objective sees ``ctx.rank``, ``ctx.world_size`` and ``ctx.devices``; only rank 0's
reports reach the executor, so the trial's loss curve is reported once.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

from hpod.errors import TrialPruned
from hpod.monitors.meters import TrialMeters
from hpod.objectives.base import TrialContext, create_objective

__all__ = ["RankGroup", "aggregate_figures", "die_with_parent", "rank_devices", "seed_everything"]

#: how long a collective may wait for a rank (a rank that died makes the others fail, not hang)
_TIMEOUT = timedelta(minutes=30)
#: the command that ends the ranks' seed loop
_DONE = -1


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no rank or trial outlives its owner)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    import numpy as np

    np.random.seed(seed % (2**32))
    if "torch" in sys.modules:
        import torch

        torch.manual_seed(seed)


def rank_devices(gpu_indices: list[int], world_size: int) -> list[str]:
    """The device of each rank: ``cuda:r`` over the trial's GPUs, else ``cpu``."""
    return [f"cuda:{r}" for r in range(world_size)] if gpu_indices else ["cpu"] * world_size


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _init_group(rank: int, world_size: int, port: int, on_gpu: bool) -> None:
    import torch.distributed as dist

    if on_gpu:
        import torch

        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if on_gpu else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world_size, timeout=_TIMEOUT)


def _broadcast(value: Any) -> Any:
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _figures(fig: Any, out: dict[str, Any]) -> dict[str, Any]:
    """One rank's figures for one seed, as sent to rank 0."""
    values: dict[str, Any] = {}
    for name, raw in out.items():
        v = getattr(raw, "value", raw)
        if isinstance(v, (int, float, str)) and not isinstance(v, bool):
            values[name] = v
    return {"time_seconds": float(fig.time_seconds), "memory_bytes": float(fig.memory_bytes),
            "memory_method": fig.memory_method, "energy_joules": fig.energy_joules,
            "energy_method": fig.energy_method, "values": values}


def _gather(record: dict[str, Any]) -> list[dict[str, Any]]:
    import torch.distributed as dist

    records: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(records, record)
    return records


def aggregate_figures(fig: Any, ranks: list[dict[str, Any]]) -> dict[str, float]:
    """Fold the ranks' meters into rank 0's section figures ``fig``: time is wall time
    (rank 0's section, which the collectives keep in step with the others), energy the
    sum over the ranks' devices, peak memory the largest per device (``memory_bytes``)
    and the sum over devices (returned as ``memory_bytes_sum``)."""
    n = len(ranks)
    memories = [r["memory_bytes"] for r in ranks]
    fig.memory_bytes = max(memories)
    fig.memory_method = f"{ranks[0]['memory_method']}, max over {n} ranks"
    energies = [r["energy_joules"] for r in ranks]
    if all(e is not None for e in energies):
        fig.energy_joules = float(sum(energies))
        fig.energy_method = f"{ranks[0]['energy_method']}, sum over {n} ranks"
    return {"memory_bytes_sum": float(sum(memories)), "world_size": float(n)}


class RankGroup:
    """Rank 0's handle on the trial's other ranks (see the module docstring)."""

    def __init__(self, payload: dict[str, Any], world_size: int, gpu_indices: list[int]):
        self.world_size = world_size
        self.on_gpu = bool(gpu_indices)
        self.devices = rank_devices(gpu_indices, world_size)
        port = _free_port()
        # Plain child processes (the trial process is a daemonic multiprocessing child,
        # which may not start multiprocessing children); they see this process's sys.path.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        self.procs: list[subprocess.Popen[bytes]] = []
        for rank in range(1, world_size):
            proc = subprocess.Popen([sys.executable, "-m", "hpod.execution._ranks", str(rank), str(world_size),
                                     str(port)], stdin=subprocess.PIPE, env=env)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps({"payload": payload, "gpu_indices": gpu_indices}).encode())
            proc.stdin.close()
            self.procs.append(proc)
        _init_group(0, world_size, port, self.on_gpu)

    def begin_seed(self, index: int) -> None:
        _broadcast(index)

    def stop_sync(self, stop: bool) -> bool:
        return bool(_broadcast(bool(stop)))

    def gather(self, fig: Any, out: dict[str, Any]) -> list[dict[str, Any]]:
        return _gather(_figures(fig, out))

    def close(self) -> None:
        import torch.distributed as dist

        try:
            _broadcast(_DONE)
            dist.destroy_process_group()
        finally:
            for proc in self.procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def rank_main(payload: dict[str, Any], rank: int, world_size: int, port: int, gpu_indices: list[int]) -> None:
    """Entry point of ranks 1..N-1: run the seeds rank 0 names until it says done."""
    die_with_parent()
    try:
        _rank_loop(payload, rank, world_size, port, gpu_indices)
    except BaseException:  # a failed rank must end, so that rank 0's collectives fail too
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)


def _rank_loop(payload: dict[str, Any], rank: int, world_size: int, port: int, gpu_indices: list[int]) -> None:
    if gpu_indices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpu_indices)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _init_group(rank, world_size, port, bool(gpu_indices))
    import torch.distributed as dist

    objective = create_objective(payload["objective"]["name"], payload["objective"].get("params") or {})
    artifact_dir, cache_dir = Path(payload["artifact_dir"]), Path(payload["cache_dir"])
    objective.prepare(cache_dir)
    meters = TrialMeters(gpu_index=gpu_indices[rank] if gpu_indices else None, use_codecarbon=False)
    devices = rank_devices(gpu_indices, world_size)
    seeds: list[int] = list(payload["seeds"])
    while True:
        index = _broadcast(None)
        if index == _DONE:
            break
        ctx = TrialContext(
            params=dict(payload["params"]), seed=seeds[index], seed_index=index, trial_number=payload["trial_number"],
            study_name=payload["study"], artifact_dir=artifact_dir, cache_dir=cache_dir, device=devices[rank],
            resume_from=Path(payload["resume_from"]) if payload.get("resume_from") else None,
            rank=rank, world_size=world_size, devices=devices, stop_sync=lambda stop: bool(_broadcast(bool(stop))),
        )
        seed_everything(seeds[index])
        with meters.section() as fig:
            try:
                out = dict(objective.run(ctx))
            except TrialPruned:
                out = {}
        _gather(_figures(fig, out))
    meters.finish()
    dist.destroy_process_group()


if __name__ == "__main__":  # a rank process: ``python -m hpod.execution._ranks RANK WORLD PORT`` < payload
    _job = json.loads(sys.stdin.read())
    rank_main(_job["payload"], int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), _job["gpu_indices"])
