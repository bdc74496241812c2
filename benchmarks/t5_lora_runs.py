"""A table of real ``t5_lora`` training runs, and its replay as a benchmark problem.

``python -m benchmarks.t5_lora_runs build`` trains the offline tiny T5 with LoRA
(``t5_lora`` with ``model: tiny``) once per configuration of a scrambled Sobol
design over the experiment's space (learning rate 1e-5..1e-3 log, batch 8/16/32,
epochs 2/3/4, dropout 0.1..0.6, rank 4/8/16, alpha 16/32/64) and records, per
configuration, the validation loss at every evaluation (four per epoch, two at
batch 32, whose epoch of 64 articles is two steps: the learning curve) with the
wall time and energy spent up to it, the best validation loss, wall time, peak
memory and energy. Each run is a forked child of one
process that imported torch and loaded the base once, so its memory figure is its
own. Data: the CNN/DailyMail sample ``../shared/data/cnndm_sample_100.jsonl``
where present (64 training / 16 validation articles), else the synthetic
match-report corpus. Written to ``benchmarks/data/t5_lora_runs.json.gz``.

Energy is hpod's ``cpu-time-estimate`` (process CPU seconds x
``CPU_WATTS_PER_CORE``): on a shared machine without RAPL it is the figure that
does not grow with other people's load. Time is wall clock, which does.

:func:`problem` replays the table (the way tabular HPO benchmarks are built): a
suggested configuration is mapped to the nearest tabulated one (see
:func:`TabularProblem.nearest`) and returns its recorded objectives, cost and
learning curve, so methods are compared on real curves and costs without training.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SPACE", "TabularProblem", "design", "problem"]

DATA = Path(__file__).resolve().parent / "data"
TABLE = DATA / "t5_lora_runs.json.gz"
CNNDM = Path(__file__).resolve().parents[2] / "shared" / "data" / "cnndm_sample_100.jsonl"

#: The experiment's space (issue 3): continuous bounds or the allowed values.
SPACE: dict[str, Any] = {
    "learning_rate": (1e-5, 1e-3),  # log-uniform
    "batch_size": (8, 16, 32),
    "epochs": (2, 3, 4),
    "dropout": (0.1, 0.6),
    "rank": (4, 8, 16),
    "alpha": (16, 32, 64),
}
ORDER = ("learning_rate", "batch_size", "epochs", "dropout", "rank", "alpha")
OBJECTIVES = ("loss", "time_seconds", "memory_bytes", "energy_joules")
TRAIN_SIZE, VAL_SIZE = 64, 16
#: evaluations per epoch where an epoch has that many steps (the fidelity unit: a quarter epoch)
EVALS_PER_EPOCH = 4


def design(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` configurations from a scrambled Sobol sequence over :data:`SPACE`."""
    from scipy.stats import qmc

    u = qmc.Sobol(d=len(ORDER), scramble=True, seed=seed).random(n)
    out = []
    for row in u:
        cfg: dict[str, Any] = {}
        for j, name in enumerate(ORDER):
            spec = SPACE[name]
            if name == "learning_rate":
                lo, hi = math.log10(spec[0]), math.log10(spec[1])
                cfg[name] = float(f"{10 ** (lo + row[j] * (hi - lo)):.4g}")
            elif name == "dropout":
                cfg[name] = round(float(spec[0] + row[j] * (spec[1] - spec[0])), 4)
            else:
                cfg[name] = int(spec[min(int(row[j] * len(spec)), len(spec) - 1)])
        out.append(cfg)
    return out


# ----------------------------------------------------------------------------- build
def _options(data_source: str) -> dict[str, Any]:
    data: dict[str, Any] = {"train_size": TRAIN_SIZE, "val_size": VAL_SIZE}
    if data_source == "cnndm":
        data.update(source=str(CNNDM))
    else:
        data.update(source="synthetic", synthetic_domain="sports", synthetic_seed=7)
    return {"model": "tiny", "cpu_threads": 1, "data": data, "patience": 100}


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


_STATE: dict[str, Any] = {}


def _run_one(cfg: dict[str, Any], conn: Any) -> None:
    """In a forked child: train one configuration on the parent's base, send the row."""
    from hpod.monitors.meters import CPU_WATTS_PER_CORE, current_rss_bytes
    from hpod.objectives.t5_lora.model import apply_lora
    from hpod.objectives.t5_lora.train import Hyperparameters, seed_everything, train_lora

    try:
        opts, model, tokenizer, train, val = (_STATE[k] for k in ("options", "model", "tokenizer", "train", "val"))
        rss0, cpu0, t0 = current_rss_bytes(), _cpu_seconds(), time.perf_counter()
        hp = Hyperparameters.from_params(cfg)
        seed_everything(0)
        lora = apply_lora(model, rank=hp.rank, alpha=hp.alpha, dropout=hp.dropout,
                          target_modules=opts.target_modules)
        steps_per_epoch = math.ceil(TRAIN_SIZE / hp.batch_size)
        curve: list[dict[str, float]] = []

        def report(step: int, values: Mapping[str, float]) -> None:
            cpu = _cpu_seconds() - cpu0
            curve.append({"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": float(values["loss"]),
                          "time_seconds": round(time.perf_counter() - t0, 3),
                          "energy_joules": round(cpu * CPU_WATTS_PER_CORE, 3)})

        eval_steps = max(1, steps_per_epoch // EVALS_PER_EPOCH)
        result = train_lora(lora, tokenizer, train, val, hp, opts.model_copy(update={"eval_steps": eval_steps}),
                            seed=0, device="cpu", report=report)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
        conn.send({"config": cfg, "loss": float(result.best_val_loss), "last_loss": curve[-1]["loss"],
                   "time_seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
                   "memory_bytes": float(max(0, _peak_rss() - rss0)),
                   "energy_joules": round(cpu * CPU_WATTS_PER_CORE, 3), "steps": result.steps, "curve": curve})
    except Exception as exc:  # the parent records the failure; one bad run does not stop the build
        conn.send({"config": cfg, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        conn.close()


def build(n: int, seed: int, cache: Path, progress: Path, limit_seconds: float | None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from benchmarks._machine import describe_machine
    from hpod.objectives.t5_lora import T5LoraObjective, parse_options
    from hpod.objectives.t5_lora.data import load_splits
    from hpod.objectives.t5_lora.model import load_base_model

    data_source = "cnndm" if CNNDM.exists() else "synthetic-sports"
    raw = _options(data_source)
    T5LoraObjective(raw).prepare(cache)
    opts = parse_options(raw)
    torch.set_num_threads(1)
    model, tokenizer, _ = load_base_model(opts, cache)
    train, val = load_splits(opts.data)
    _STATE.update(options=opts, model=model, tokenizer=tokenizer, train=train, val=val)

    configs = design(n, seed)
    done: dict[int, dict[str, Any]] = {}
    if progress.exists():
        for line in progress.read_text().splitlines():
            row = json.loads(line)
            done[int(row["index"])] = row
    load_before = os.getloadavg()
    started = time.perf_counter()
    ctx = mp.get_context("fork")
    with progress.open("a") as out:
        for i, cfg in enumerate(configs):
            if i in done:
                continue
            if limit_seconds is not None and time.perf_counter() - started > limit_seconds:
                print(f"time limit reached after {len(done)} configurations", file=sys.stderr)
                break
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_run_one, args=(cfg, child))
            proc.start()
            child.close()
            row = parent.recv()
            proc.join()
            row["index"] = i
            done[i] = row
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(f"[{len(done)}/{n}] {cfg} -> loss {row.get('loss')} time {row.get('time_seconds')} s",
                  file=sys.stderr)
    rows = [done[i] for i in sorted(done)]
    return {
        "table": "t5_lora_runs",
        "command": f"nice -n 10 python -m benchmarks.t5_lora_runs build --n {n} --seed {seed}"
                   + (f" --limit-seconds {limit_seconds:g}" if limit_seconds is not None else ""),
        "machine": describe_machine("transformers", "peft"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "data": data_source,
        "options": raw,
        "space": {k: list(v) for k, v in SPACE.items()},
        "design": {"kind": "scrambled Sobol", "n": n, "seed": seed, "runs_done": len(rows)},
        "energy_method": "cpu-time-estimate (process CPU seconds x hpod's CPU_WATTS_PER_CORE)",
        "memory_method": "rss-peak growth of the forked run",
        "training_seed": 0,
        "evaluations_per_epoch": EVALS_PER_EPOCH,
        "runs": rows,
    }


# ----------------------------------------------------------------------------- replay
def _unit(name: str, value: Any) -> float:
    """A parameter's value on [0, 1] (log for the learning rate, value index for discrete ones)."""
    spec = SPACE[name]
    if name == "learning_rate":
        lo, hi = math.log10(spec[0]), math.log10(spec[1])
        return (math.log10(float(value)) - lo) / (hi - lo)
    if name == "dropout":
        return (float(value) - spec[0]) / (spec[1] - spec[0])
    values = list(spec)
    # nearest allowed value's index (a suggestion may be any number in range)
    idx = min(range(len(values)), key=lambda k: abs(math.log2(values[k]) - math.log2(float(value))))
    return idx / (len(values) - 1)


@dataclass
class TabularProblem:
    """The table replayed: ``evaluate`` returns a tabulated run's objectives.

    ``space`` is the experiment's own space (continuous learning rate and dropout,
    the discrete values as categorical choices), so a sampler sees the real problem;
    a suggestion is mapped to the nearest tabulated configuration in the unit cube
    (learning rate on a log scale, a discrete parameter by the index of its value).
    The replay is deterministic: one training run per configuration.
    """

    runs: list[dict[str, Any]]
    meta: dict[str, Any]
    name: str = "t5_lora_runs"

    def __post_init__(self) -> None:
        import optuna

        self.runs = [r for r in self.runs if "error" not in r]
        self._points = np.array([[_unit(k, r["config"][k]) for k in ORDER] for r in self.runs])
        self.space: dict[str, Any] = {
            "learning_rate": optuna.distributions.FloatDistribution(*SPACE["learning_rate"], log=True),
            "batch_size": optuna.distributions.CategoricalDistribution(list(SPACE["batch_size"])),
            "epochs": optuna.distributions.CategoricalDistribution(list(SPACE["epochs"])),
            "dropout": optuna.distributions.FloatDistribution(*SPACE["dropout"]),
            "rank": optuna.distributions.CategoricalDistribution(list(SPACE["rank"])),
            "alpha": optuna.distributions.CategoricalDistribution(list(SPACE["alpha"])),
        }
        self.directions = ["minimize"] * len(OBJECTIVES)
        self.objective_names = list(OBJECTIVES)

    def nearest(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The tabulated run nearest to ``params`` (Euclidean distance in the unit cube)."""
        x = np.array([_unit(k, params[k]) for k in ORDER])
        return self.runs[int(np.argmin(((self._points - x) ** 2).sum(axis=1)))]

    def evaluate(self, params: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
        """``values`` (loss, seconds, bytes, joules; all minimized), ``cost_joules`` and the
        learning ``curve`` (per evaluation: step, epoch, loss and the time and energy
        spent up to it). ``seed`` is accepted for the common problem interface; the
        table holds one run per configuration."""
        run = self.nearest(params)
        return {"values": [float(run[k]) for k in OBJECTIVES], "cost_joules": float(run["energy_joules"]),
                "curve": [dict(c) for c in run["curve"]], "config": dict(run["config"])}


def load_table(path: Path = TABLE) -> dict[str, Any]:
    """The table at ``path`` (a ``.jsonl`` build-progress file reads as its runs, without metadata)."""
    if path.suffix == ".jsonl":
        return {"runs": [json.loads(line) for line in path.read_text().splitlines() if line.strip()]}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return dict(json.load(f))


def problem(path: Path = TABLE) -> TabularProblem:
    """The committed table as a benchmark problem (see :class:`TabularProblem`)."""
    table = load_table(path)
    return TabularProblem(runs=table["runs"], meta={k: v for k, v in table.items() if k != "runs"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train the design and write benchmarks/data/t5_lora_runs.json.gz")
    b.add_argument("--n", type=int, default=256, help="configurations (a power of two suits Sobol)")
    b.add_argument("--seed", type=int, default=0, help="the design's scrambling seed")
    b.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hpod-bench")
    b.add_argument("--progress", type=Path, default=Path("/tmp/t5_lora_runs.progress.jsonl"),
                   help="one line per finished run; a rerun resumes from it")
    b.add_argument("--limit-seconds", type=float, default=None, help="stop starting runs after this long")
    args = parser.parse_args()
    table = build(args.n, args.seed, args.cache, args.progress, args.limit_seconds)
    DATA.mkdir(parents=True, exist_ok=True)
    with gzip.open(TABLE, "wt", encoding="utf-8") as f:
        json.dump(table, f, separators=(",", ":"))
    ok = sum("error" not in r for r in table["runs"])
    print(f"wrote {TABLE} ({TABLE.stat().st_size} bytes): {ok} runs, {len(table['runs']) - ok} failed")


if __name__ == "__main__":
    main()
