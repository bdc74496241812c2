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
  the same pruner and feeds pruned trials to the GP at the values the completed
  trials' curves extrapolate them to.
- ``auto multi_fidelity (as-stood imputation)``: the earlier rule (a pruned trial's
  loss as it stood, its energy scaled by steps), for comparison.

``--problem learning_curves`` runs the same on :mod:`benchmarks.learning_curves`,
a synthetic problem held out from the choice of the imputation rule (writes
multi_fidelity_learning_curves.{json,md}).

The front counts completed trials only. Normalized hypervolume: the front's
hypervolume over the table's own front's, both against the table's worst loss and
energy. Pruner and sampler run on the defaults a spec gets; the imputation rule
was chosen looking at the t5 table (tuned on), not the synthetic problem (held out).
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
#: multi_fidelity with the earlier imputation (reported values as they stood, costs
#: scaled by steps); a --reuse file's ``auto multi_fidelity`` rows from before the change
BEFORE = "auto multi_fidelity (as-stood imputation)"
METHODS = ("auto", "auto + MO-ASHA", "auto multi_fidelity", BEFORE)
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
PROBLEMS = ("t5_lora_runs", "learning_curves")


def _hv(points: list[list[float]], reference: np.ndarray) -> float:
    from hpod.core.pareto import hypervolume

    inside = [p for p in points if np.all(np.asarray(p) < reference)]
    return hypervolume(np.asarray(inside), reference) if inside else 0.0


def run_one(problem: Any, method: str, seed: int, budget_joules: float,
            reference: np.ndarray, max_hv: float) -> dict[str, Any]:
    import optuna

    from hpod.core.samplers import MultiFidelitySampler, create_sampler
    from hpod.core.strategies import MOASHAPruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    options = {"multi_fidelity": True} if method.startswith("auto multi_fidelity") else {}
    choice = create_sampler("auto", options, directions=["minimize"] * len(OBJECTIVES), n_trials=200,
                            n_params=len(problem.space), seed=seed)
    if method == BEFORE:
        # The wrapper is auto's sampler, or sits inside its model-then-evolution sampler (a
        # private attribute) when auto hands over to NSGA-II later.
        wrapper = choice.sampler
        if not isinstance(wrapper, MultiFidelitySampler):
            wrapper = getattr(wrapper, "_model", wrapper)
        assert isinstance(wrapper, MultiFidelitySampler)
        wrapper.extrapolate = False
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
    synthetic = payload.get("problem") == "learning_curves"
    if synthetic:
        title = "synthetic learning curves, held out"
        problem_text = (f"Problem: {payload['table_runs']} computed runs of `benchmarks/learning_curves.py` "
                        "(the t5 table's space and format, crossing learning curves; nothing in it was fitted "
                        "to the t5 table or to any method's results), replayed; energy in its model's joules")
        tuning_text = ("Held out: the multi-fidelity imputation rule was chosen from the t5 table's curves and "
                       "results, not from this problem.")
    else:
        title = "real t5_lora runs"
        problem_text = (f"Problem: the table of {payload['table_runs']} real tiny-`t5_lora` training runs "
                        f"(`benchmarks/data/t5_lora_runs.json.gz`, data: {payload['table_data']}), replayed; "
                        "energy is the CPU-time estimate")
        tuning_text = ("Tuned on: the multi-fidelity imputation rule was chosen from this table's learning "
                       "curves and its earlier results; pruner and sampler settings are the spec defaults. "
                       "The held-out figures are in multi_fidelity_learning_curves.md.")
    reused = payload.get("reused")
    reused_text = "" if not reused else (
        f" Rows of {', '.join(f'`{x}`' for x in reused['methods'])} come from {', '.join(reused['from'])} "
        "(earlier runs of this command, that method's code unchanged since; `--reuse`/`--before`).")
    lines = [
        f"# Multi-fidelity `auto` at equal energy ({title})",
        "",
        f"Command: `{payload['command']}`. Machine: {m['cpu']}, {m['cores']} cores, shared; load average "
        f"{payload['load_average_before'][0]} before, {payload['load_average_after'][0]} after.{reused_text}",
        f"{problem_text}; objectives (validation loss, energy), minimized; budget per search "
        f"{payload['budget_joules']:.0f} J = {payload['budget_runs']} x the median whole-run energy "
        f"({payload['median_run_joules']:.1f} J). Seeds: {len(payload['seeds'])} "
        f"(of {payload['seeds_asked']} asked). {tuning_text}",
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
        "and each pruned trial enters the GP at the values the completed trials' curves extrapolate it to "
        "(its loss plus their median change from the step it stopped at to the end; its energy times their "
        "median ratio of whole-run to so-far energy)",
        f"`{BEFORE}`: the earlier rule — the loss as it stood when the trial stopped, energy scaled by steps "
        "to the completed trials' median length"]) + "."]
    return "\n".join(lines) + "\n"


def _so_far(curve: list[dict[str, Any]], step: int, key: str) -> float | None:
    reached = [c for c in curve if round(c["epoch"] * EVALS_PER_EPOCH) <= step]
    return float(reached[-1][key]) if reached else None


def imputation_error(prob: Any, rungs: tuple[int, ...] = (1, 3, 9)) -> list[dict[str, Any]]:
    """How far each imputation rule lands from a run's true final loss and energy, with no
    search: every run stopped at its first evaluation at or past a rung (MO-ASHA's defaults:
    1, 3, 9), the other runs of the table standing for the completed trials."""
    import statistics as st

    out = []
    for rung in rungs:
        errors: dict[str, list[float]] = {k: [] for k in ("loss_as_stood", "loss_extrapolated",
                                                          "energy_as_stood", "energy_extrapolated")}
        for i, run in enumerate(prob.runs):
            steps = [round(c["epoch"] * EVALS_PER_EPOCH) for c in run["curve"]]
            later = [x for x in steps if x >= rung]
            if not later or later[0] == steps[-1]:
                continue  # never stopped there: the run ends at or before the rung
            step = later[0]
            others = [q for j, q in enumerate(prob.runs) if j != i and _so_far(q["curve"], step, "loss") is not None]
            loss, joules = _so_far(run["curve"], step, "loss"), _so_far(run["curve"], step, "energy_joules")
            assert loss is not None and joules is not None
            change = st.median(q["loss"] - (_so_far(q["curve"], step, "loss") or 0.0) for q in others)
            ratio = st.median(q["energy_joules"] / (_so_far(q["curve"], step, "energy_joules") or 1.0) for q in others)
            full = st.median(round(q["curve"][-1]["epoch"] * EVALS_PER_EPOCH) for q in others)
            errors["loss_as_stood"].append(abs(loss - run["loss"]))
            errors["loss_extrapolated"].append(abs(loss + change - run["loss"]))
            errors["energy_as_stood"].append(abs(joules * max(1.0, full / step) - run["energy_joules"])
                                             / run["energy_joules"])
            errors["energy_extrapolated"].append(abs(joules * max(1.0, ratio) - run["energy_joules"])
                                                 / run["energy_joules"])
        out.append({"rung_step": rung, "runs": len(errors["loss_as_stood"]),
                    **{k: round(float(np.mean(v)), 4) for k, v in errors.items()}})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget-runs", type=float, default=30.0,
                        help="energy budget as a multiple of the table's median whole-run energy")
    parser.add_argument("--table", type=Path, default=None, help="a table other than the committed one")
    parser.add_argument("--problem", choices=PROBLEMS, default="t5_lora_runs",
                        help="the real t5_lora table, or the held-out synthetic learning curves")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=1, help="searches run at once (processes)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, a budget of 6 runs")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated methods to run (default: all)")
    parser.add_argument("--reuse", type=Path, action="append", default=[],
                        help="a results JSON of the same problem and budget whose rows stand in for the "
                             "methods not run (their code unchanged since); repeatable, the first file's "
                             "row of a (method, seed) wins")
    parser.add_argument("--imputation-error", action="store_true",
                        help="no search: print how far each imputation rule lands from the runs' true final "
                             "loss (mean absolute error) and energy (mean relative error)")
    parser.add_argument("--before", type=Path, default=None,
                        help=f"a results JSON from before the imputation change: its multi_fidelity rows "
                             f"stand in for {BEFORE!r}")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.budget_runs = 1, 6.0
    out_dir = args.out or (RESULTS / "quick" if args.quick else RESULTS)
    from benchmarks import learning_curves
    from benchmarks._machine import describe_machine
    from benchmarks.t5_lora_runs import TABLE, problem

    prob = problem(args.table or TABLE) if args.problem == "t5_lora_runs" else learning_curves.problem()
    if args.imputation_error:
        print(json.dumps({"problem": prob.name, "rows": imputation_error(prob)}, indent=1))
        return 0
    table = np.array([[r["loss"], r["energy_joules"]] for r in prob.runs])
    reference = table.max(axis=0) * (1 + 1e-6)
    max_hv = _hv(table.tolist(), reference)
    median_run = float(np.median(table[:, 1]))
    budget = args.budget_runs * median_run
    load_before = os.getloadavg()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if unknown := sorted(set(methods) - set(METHODS)):
        parser.error(f"--methods: unknown {unknown}; known: {list(METHODS)}")
    reused: list[dict[str, Any]] = []
    sources = [(path, False) for path in args.reuse] + ([(args.before, True)] if args.before else [])
    for path, before in sources:
        old = json.loads(path.read_text(encoding="utf-8"))
        if (old.get("problem", "t5_lora_runs"), old["budget_runs"]) != (prob.name, args.budget_runs):
            parser.error(f"--reuse/--before: {path} is of another problem or budget")
        for row in old["rows"]:
            if before and row["method"] != "auto multi_fidelity":
                continue
            r = {**row, "method": BEFORE} if before else row
            if r["seed"] >= args.seeds or r["method"] in methods:
                continue
            if not any((q["method"], q["seed"]) == (r["method"], r["seed"]) for q in reused):
                reused.append(r)
    expected = set(methods) | {r["method"] for r in reused}
    jobs = [(seed, method) for seed in range(args.seeds) for method in methods]
    command = "python -m benchmarks.multi_fidelity " + ("--quick" if args.quick else
                                                         f"--seeds {args.seeds} --budget-runs {args.budget_runs:g}")
    if methods != list(METHODS):
        command += f" --methods '{','.join(methods)}'"
    command += "".join(f" --reuse {p.name}" for p in args.reuse)
    command += f" --before {args.before.name}" if args.before else ""
    stem = "multi_fidelity"
    if args.problem != "t5_lora_runs":
        command += f" --problem {args.problem}"
        stem += f"_{args.problem}"
    machine = describe_machine("optuna")
    rows: list[dict[str, Any]] = list(reused)

    def save() -> dict[str, Any]:
        # Written after every search, over the seeds every method has finished, so an
        # interrupted run still leaves a consistent table (its seeds listed).
        done = sorted(s for s in range(args.seeds) if {r["method"] for r in rows if r["seed"] == s} >= expected)
        kept = [r for r in rows if r["seed"] in done]
        payload = {
            "benchmark": "multi_fidelity", "problem": prob.name, "command": command, "machine": machine,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "table_runs": len(prob.runs), "table_data": prob.meta.get("data"),
            "objectives": list(OBJECTIVES), "reference_point": reference.tolist(),
            "table_front_hypervolume": max_hv, "median_run_joules": median_run, "budget_runs": args.budget_runs,
            "budget_joules": budget, "seeds": done, "seeds_asked": args.seeds,
            "reused": {"from": [p.name for p, _ in sources], "methods": sorted({r["method"] for r in reused})}
            if sources else None,
            # The summary compares with `auto`: without its rows (a partial run to combine
            # later with --reuse) only the rows are written.
            "summary": summarize(kept, budget) if "auto" in expected and kept else {}, "rows": kept,
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
        if payload["summary"]:
            (out_dir / f"{stem}.md").write_text(markdown(payload), encoding="utf-8")
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
    payload = save()  # also when nothing ran (only --reuse/--before rows combined)
    print(markdown(payload) if payload["summary"] else f"{len(payload['rows'])} rows, no summary")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
