"""Multi-fidelity ``auto`` against the same sampler without it, at equal energy, on
the table of real ``t5_lora`` training runs (:mod:`benchmarks.t5_lora_runs`).

Run: ``python -m benchmarks.multi_fidelity [--seeds 5] [--budget-runs 30] [--workers 2]``;
writes benchmarks/results/multi_fidelity.{json,md} (``--quick``: results/quick/).

Each method searches the table's space for (validation loss, energy), both
minimized, until it has spent ``--budget-runs`` times the table's median energy of
one whole run. A trial replays its tabulated learning curve one evaluation at a
time (a quarter epoch per step) and pays the energy recorded up to where it stops.

- ``auto``: hpod's ``auto`` sampler (``create_sampler("auto")``), no pruning.
- ``auto + MO-ASHA``: the same sampler with hpod's MO-ASHA pruner (its spec
  defaults: min_resource 1, reduction factor 3, ranking loss and energy so far);
  pruned trials are ignored by the model, as a plain GP sampler does.
- ``auto multi_fidelity``: ``sampler.options.multi_fidelity: true``, which brings
  the same pruner and feeds pruned trials to the GP at the fidelity they reached.

The front counts completed trials only. Normalized hypervolume: the front's
hypervolume over the table's own front's, both against the table's worst loss and
energy. Nothing here was tuned on this table: pruner and sampler run on the
defaults a spec gets.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.t5_lora_runs import EVALS_PER_EPOCH

RESULTS = Path(__file__).resolve().parent / "results"
OBJECTIVES = ("loss", "energy_joules")
METHODS = ("auto", "auto + MO-ASHA", "auto multi_fidelity")
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _hv(points: list[list[float]], reference: np.ndarray) -> float:
    from hpod.core.pareto import hypervolume

    inside = [p for p in points if np.all(np.asarray(p) < reference)]
    return hypervolume(np.asarray(inside), reference) if inside else 0.0


def run_one(problem: Any, method: str, seed: int, budget_joules: float,
            reference: np.ndarray, max_hv: float) -> dict[str, Any]:
    import optuna

    from hpod.core.samplers import create_sampler
    from hpod.core.strategies import MOASHAPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"multi_fidelity": True} if method == "auto multi_fidelity" else {}
    choice = create_sampler("auto", options, directions=["minimize"] * len(OBJECTIVES), n_trials=200,
                            n_params=len(problem.space), seed=seed)
    study = optuna.create_study(directions=["minimize"] * len(OBJECTIVES), sampler=choice.sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(OBJECTIVES))
    pruner = None if method == "auto" else MOASHAPruner(metrics=list(OBJECTIVES), signs=[1.0, 1.0],
                                                          min_resource=1, reduction_factor=3)
    spent, front_points = 0.0, []
    trace: list[list[float]] = []  # (energy spent, normalized hypervolume) after each trial
    n_pruned, sampler_seconds = 0, 0.0
    while spent < budget_joules:
        started = time.perf_counter()
        trial = study.ask(problem.space)
        sampler_seconds += time.perf_counter() - started
        run = problem.evaluate(trial.params, seed)
        memory = run["values"][2]
        reports: list[list[Any]] = []
        stopped_at = None
        for i, point in enumerate(run["curve"]):
            # The fidelity unit is a quarter epoch, whatever the batch size (steps differ).
            step = round(point["epoch"] * EVALS_PER_EPOCH)
            values = {"loss": point["loss"], "energy_joules": point["energy_joules"]}
            reports.append([0, step, values])
            is_last = i == len(run["curve"]) - 1
            if pruner is not None and not is_last and pruner.should_stop(trial.number, 0, step, values):
                stopped_at = point
                break
        info = {"intermediate": reports}
        if stopped_at is not None:
            metrics = {"loss": stopped_at["loss"], "energy_joules": stopped_at["energy_joules"],
                       "time_seconds": stopped_at["time_seconds"], "memory_bytes": memory}
            trial.set_user_attr("hpod.metrics", metrics)
            trial.set_user_attr("hpod.info", info)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            spent += stopped_at["energy_joules"]
            n_pruned += 1
        else:
            loss, seconds, _, joules = run["values"]
            trial.set_user_attr("hpod.metrics", {"loss": loss, "energy_joules": joules, "time_seconds": seconds,
                                                 "memory_bytes": memory})
            trial.set_user_attr("hpod.info", info)
            study.tell(trial, [loss, joules])
            spent += joules
            front_points.append([loss, joules])
        trace.append([round(spent, 3), _hv(front_points, reference) / max_hv])
    return {"method": method, "seed": seed, "trials": len(study.trials), "pruned": n_pruned,
            "completed": len(front_points), "energy_spent_joules": round(spent, 3),
            "sampler_seconds_per_trial": round(sampler_seconds / max(len(study.trials), 1), 4),
            "trace": trace}


def _at(trace: list[list[float]], joules: float) -> float:
    """Normalized hypervolume reached with at most ``joules`` spent."""
    best = 0.0
    for spent, hv in trace:
        if spent <= joules + 1e-9:
            best = hv
    return best


def _first_reaching(trace: list[list[float]], target: float) -> float | None:
    return next((spent for spent, hv in trace if hv >= target - 1e-12), None)


def summarize(rows: list[dict[str, Any]], budget: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seeds = sorted({r["seed"] for r in rows})
    finals = {s: _at(next(r for r in rows if r["method"] == "auto" and r["seed"] == s)["trace"], budget)
              for s in seeds}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        at = {f: [_at(r["trace"], f * budget) for r in mine] for f in FRACTIONS}
        reach = []
        for r in mine:
            spent = _first_reaching(r["trace"], finals[r["seed"]])
            reach.append(None if spent is None or spent > budget else spent / budget)
        reached = [x for x in reach if x is not None]
        out[method] = {
            "normalized_hypervolume": {str(f): {"median": statistics.median(v), "min": min(v), "max": max(v)}
                                       for f, v in at.items()},
            "energy_fraction_to_reach_auto_final": {
                "median": statistics.median(reached) if len(reached) * 2 > len(reach) else None,
                "reached": f"{len(reached)}/{len(reach)}"},
            "trials_median": statistics.median(r["trials"] for r in mine),
            "pruned_median": statistics.median(r["pruned"] for r in mine),
            "sampler_seconds_per_trial_median": statistics.median(r["sampler_seconds_per_trial"] for r in mine),
        }
    return out


def markdown(payload: dict[str, Any]) -> str:
    s, m = payload["summary"], payload["machine"]
    lines = [
        "# Multi-fidelity `auto` at equal energy (real t5_lora runs)",
        "",
        f"Command: `{payload['command']}`. Machine: {m['cpu']}, {m['cores']} cores, shared; load average "
        f"{payload['load_average_before'][0]} before, {payload['load_average_after'][0]} after.",
        f"Problem: the table of {payload['table_runs']} real tiny-`t5_lora` training runs "
        f"(`benchmarks/data/t5_lora_runs.json.gz`, data: {payload['table_data']}), replayed; objectives "
        "(validation loss, energy), minimized; budget per search "
        f"{payload['budget_joules']:.0f} J = {payload['budget_runs']} x the median whole-run energy "
        f"({payload['median_run_joules']:.1f} J, CPU-time estimate). Seeds: {len(payload['seeds'])} "
        f"(of {payload['seeds_asked']} asked). "
        "Nothing was tuned on this table (pruner and sampler at their spec defaults); it is the only "
        "problem measured here, so these figures are held-out ones, not a general claim.",
        "",
        "Normalized hypervolume (completed trials' front / the table's front) by share of the energy "
        "budget spent: median (min–max over seeds).",
        "",
        "| method | " + " | ".join(f"{int(f * 100)} % energy" for f in FRACTIONS)
        + " | energy share to reach `auto`'s final (reached) | trials | pruned | sampler s/trial |",
        "|---|" + "---:|" * (len(FRACTIONS) + 4),
    ]
    for method, row in s.items():
        cells = [f"{v['median']:.3f} ({v['min']:.3f}–{v['max']:.3f})" for v in row["normalized_hypervolume"].values()]
        reach = row["energy_fraction_to_reach_auto_final"]
        reach_text = "–" if reach["median"] is None else f"{reach['median']:.2f}"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {reach_text} ({reach['reached']}) | "
                     f"{row['trials_median']:.0f} | {row['pruned_median']:.0f} | "
                     f"{row['sampler_seconds_per_trial_median']:.2f} |")
    lines += ["", "Methods: " + "; ".join([
        "`auto`: hpod's auto sampler, every trial trained to the end",
        "`auto + MO-ASHA`: the same with the MO-ASHA pruner (spec defaults); pruned trials unseen by the model",
        "`auto multi_fidelity`: `sampler: {name: auto, options: {multi_fidelity: true}}` — the same pruner, "
        "and pruned trials enter the GP at the fidelity they reached"]) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-runs", type=float, default=30.0,
                        help="energy budget as a multiple of the table's median whole-run energy")
    parser.add_argument("--table", type=Path, default=None, help="a table other than the committed one")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1, help="searches run at once (processes)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, a budget of 6 runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget_runs = 1, 6.0
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    from benchmarks._machine import describe_machine
    from benchmarks.t5_lora_runs import TABLE, problem

    prob = problem(args.table or TABLE)
    table = np.array([[r["loss"], r["energy_joules"]] for r in prob.runs])
    reference = table.max(axis=0) * (1 + 1e-6)
    max_hv = _hv(table.tolist(), reference)
    median_run = float(np.median(table[:, 1]))
    budget = args.budget_runs * median_run
    load_before = os.getloadavg()
    jobs = [(seed, method) for seed in range(args.seeds) for method in METHODS]
    command = "python -m benchmarks.multi_fidelity " + ("--quick" if args.quick else
                                                         f"--seeds {args.seeds} --budget-runs {args.budget_runs:g}")
    machine = describe_machine("optuna")
    rows: list[dict[str, Any]] = []

    def save() -> dict[str, Any]:
        # Written after every search, over the seeds every method has finished, so an
        # interrupted run still leaves a consistent table (its seeds listed).
        done = sorted(s for s in range(args.seeds) if sum(r["seed"] == s for r in rows) == len(METHODS))
        kept = [r for r in rows if r["seed"] in done]
        payload = {
            "benchmark": "multi_fidelity", "command": command, "machine": machine,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "table_runs": len(prob.runs), "table_data": prob.meta.get("data"),
            "objectives": list(OBJECTIVES), "reference_point": reference.tolist(),
            "table_front_hypervolume": max_hv, "median_run_joules": median_run, "budget_runs": args.budget_runs,
            "budget_joules": budget, "seeds": done, "seeds_asked": args.seeds,
            "summary": summarize(kept, budget) if kept else {}, "rows": kept,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "multi_fidelity.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        if kept:
            (out_dir / "multi_fidelity.md").write_text(markdown(payload), encoding="utf-8")
        return payload

    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("fork")) as pool:
        # Seed by seed, so the first seeds complete first.
        futures = {pool.submit(run_one, prob, method, seed, budget, reference, max_hv): (seed, method)
                   for seed, method in jobs}
        for future in as_completed(futures):
            seed, method = futures[future]
            row = future.result()
            rows.append(row)
            print(f"seed {seed} {method}: {row['trials']} trials ({row['pruned']} pruned), "
                  f"final {row['trace'][-1][1]:.3f}", flush=True)
            payload = save()
    print(markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
