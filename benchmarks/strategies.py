"""Search strategies at an equal energy budget: multi-objective (``auto``), scalarized +
Lagrangian, PBT, random — and a λ sweep of scalarized studies against the
multi-objective front.

Run ``python -m benchmarks.strategies [--seeds N] [--quick]``. Every run is a real hpod
study (engine, store, trial processes on 2 CPU slots) stopped by the same
``budget.energy_joules``; trials are modelled LoRA runs (``synthetic:training_cost`` and
its resumable variant ``synthetic:training_cost_pbt``), so the energy is the cost
model's, not this machine's. Scores, over the feasible outcomes of a run (constraint
``time_seconds <= T``, T the median time of the search space):

- hypervolume of (loss, energy_joules), normalized by the area between the ideal
  point and a reference point common to all runs of a problem;
- best feasible loss.

A PBT outcome is every interval's model with the cost of its whole lineage (its own
intervals and those of the members it copied), since that is what training it cost.
Writes benchmarks/results/strategies.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: What the studies optimize; time is the constraint (two objectives keep the GP of
#: ``auto`` at seconds per suggestion on a shared 2-core machine).
OBJECTIVES = [{"name": "loss"}, {"name": "energy_joules"}]
#: what every outcome records: the objectives and the constrained time
OUTCOME = ("loss", "time_seconds", "energy_joules")
#: steps of one full training run of ``training_cost_pbt`` (PBT: 4 intervals of 3)
FULL_STEPS = 12
PBT_INTERVAL = 3
LAMBDAS = (0.1, 0.3, 1.0, 3.0)


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": sys.version.split()[0],
            "platform": platform.platform()}


def _median_time(problem: str) -> float:
    """Median modelled time of a training run over the default search space (the constraint bound)."""
    import itertools

    from hpod.objectives.synthetic import training_cost_model

    times = []
    for b, e, r in itertools.product((8, 16, 32), (2, 3, 4), (4, 8, 16)):
        model = training_cost_model({"batch_size": b, "epochs": e, "rank": r})
        if problem == "training_cost":
            times.append(model["time_seconds"])
        else:
            times.append(model["time_per_epoch_seconds"] / 8 * FULL_STEPS)
    return float(statistics.median(times))


def _mean_energy(problem: str) -> float:
    import itertools

    from hpod.objectives.synthetic import training_cost_model

    energies = []
    for b, e, r in itertools.product((8, 16, 32), (2, 3, 4), (4, 8, 16)):
        model = training_cost_model({"batch_size": b, "epochs": e, "rank": r})
        per_epoch = model["energy_joules"] / e
        energies.append(model["energy_joules"] if problem == "training_cost" else per_epoch / 8 * FULL_STEPS)
    return float(statistics.fmean(energies))


def run_study(spec_dict: dict[str, Any], state_dir: Path, slots: int = 2, limit_seconds: float = 900) -> Any:
    from hpod.daemon.controller import Controller
    from hpod.daemon.executor import LocalExecutor, Slot
    from hpod.daemon.store import Store
    from hpod.spec import parse_spec, resolve

    spec = parse_spec(spec_dict)
    store = Store.for_state_dir(state_dir)
    executor = LocalExecutor(store, state_dir, slots=[Slot(f"cpu{i}") for i in range(slots)], codecarbon=False)
    controller = Controller(store, state_dir, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))
    deadline = time.monotonic() + limit_seconds
    while spec.name in controller.engines and time.monotonic() < deadline:
        if not controller.step():
            controller.wait(0.05)
    if spec.name in controller.engines:
        controller.stop(reason="interrupted")
    return engine, store


def _spec(name: str, problem: str, method: str, seed: int, energy: float, bound: float,
          cost_weight: float = 0.3) -> dict[str, Any]:
    objective: dict[str, Any] = {"name": f"synthetic:{problem}"}
    if problem == "training_cost_pbt" and method != "pbt":
        objective["params"] = {"interval_steps": FULL_STEPS}
    spec: dict[str, Any] = {
        "name": name, "objective": objective, "objectives": OBJECTIVES,
        "constraints": [f"time_seconds <= {bound:.6g}"],
        "budget": {"energy_joules": energy, "n_trials": 400}, "sampler": {"name": "auto", "seed": seed},
    }
    if method == "random":
        spec["sampler"]["name"] = "random"
    elif method == "scalarized":
        spec["strategy"] = {"kind": "scalarized", "lambda": cost_weight}
    elif method == "pbt":
        spec["strategy"] = {"kind": "pbt", "population": 6, "interval_steps": PBT_INTERVAL, "quantile": 0.34}
    return spec


def _outcomes(engine: Any, store: Any, method: str) -> list[tuple[float, float, float]]:
    """(loss, time_seconds, energy_joules) of every model the run produced."""
    import optuna

    trials = {t.number: t for t in engine.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    if method != "pbt":
        return [tuple(float(t.user_attrs["hpod.metrics"][n]) for n in OUTCOME)  # type: ignore[misc]
                for t in trials.values()]
    from hpod.daemon.strategies import pbt_state

    events = pbt_state(store, engine.name).get("events", [])
    by_key = {(e["member"], e["generation"]): e for e in events if e.get("trial") in trials}
    cumulative: dict[tuple[int, int], tuple[float, float]] = {}
    out = []
    for (member, gen), e in sorted(by_key.items(), key=lambda kv: kv[0][1]):
        metrics = trials[e["trial"]].user_attrs["hpod.metrics"]
        source = e.get("copied_from")
        parent = (source if source is not None else member, gen - 1)
        before = cumulative.get(parent, (0.0, 0.0))
        cost = (before[0] + float(metrics["time_seconds"]), before[1] + float(metrics["energy_joules"]))
        cumulative[(member, gen)] = cost
        out.append((float(metrics["loss"]), cost[0], cost[1]))
    return out


def _hypervolume(points: list[tuple[float, float, float]], ideal: np.ndarray, ref: np.ndarray) -> float:
    from hpod.daemon.pareto import hypervolume

    if not points:
        return 0.0
    pts = np.array(points)[:, [0, 2]]  # (loss, energy); time is the constraint
    return hypervolume(pts, ref) / float(np.prod(ref - ideal))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials-worth", type=float, default=30.0,
                        help="energy budget, in mean trials' energy of a random full run")
    parser.add_argument("--quick", action="store_true", help="1 seed, a budget of 10 trials' energy (CI smoke)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.trials_worth = 1, 10.0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    info = machine()
    print(f"machine: {info['cpu']} ({info['cores']} cores), torch {info['torch']}", flush=True)
    problems = {"training_cost": ("auto", "scalarized", "random"),
                "training_cost_pbt": ("auto", "scalarized", "pbt", "random")}
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpod-bench-strategies-") as tmp:
        for problem, methods in problems.items():
            bound = _median_time(problem)
            energy = args.trials_worth * _mean_energy(problem)
            for seed in range(args.seeds):
                for method in (*methods, "lambda_sweep"):
                    t0 = time.perf_counter()
                    points: list[tuple[float, float, float]] = []
                    n_trials, spent = 0, 0.0
                    if method == "lambda_sweep":
                        for lam in LAMBDAS:
                            name = f"{problem}-{method}-{seed}-{lam:g}"
                            engine, store = run_study(_spec(name, problem, "scalarized", seed, energy / len(LAMBDAS),
                                                            bound, cost_weight=lam), Path(tmp) / name)
                            from hpod.daemon.strategies import scalarized_front

                            best = scalarized_front(store, [name])
                            points += [tuple(float(engine.study.trials[b["trial"]].user_attrs["hpod.metrics"][n])
                                             for n in OUTCOME) for b in best]  # type: ignore[misc]
                            n_trials += engine.summary(refresh=True).finished
                            spent += engine.summary().energy_spent_joules
                    else:
                        name = f"{problem}-{method}-{seed}"
                        engine, store = run_study(_spec(name, problem, method, seed, energy, bound), Path(tmp) / name)
                        points = _outcomes(engine, store, method)
                        summary = engine.summary(refresh=True)
                        n_trials, spent = summary.finished, summary.energy_spent_joules
                    runs.append({"problem": problem, "method": method, "seed": seed, "bound_time_seconds": bound,
                                 "energy_budget_joules": energy, "trials": n_trials,
                                 "energy_spent_joules": spent, "points": points,
                                 "wall_seconds": time.perf_counter() - t0})
                    print(f"{problem:18s} {method:13s} seed {seed}: {n_trials:3d} trials, "
                          f"{time.perf_counter() - t0:5.1f} s", flush=True)
    # Scores against one reference point per problem (over every run's outcomes).
    rows = []
    for problem in problems:
        mine = [r for r in runs if r["problem"] == problem]
        allpts = np.array([p for r in mine for p in r["points"]])
        bound = mine[0]["bound_time_seconds"]
        ideal = allpts[:, [0, 2]].min(axis=0)
        ref = np.array([np.percentile(allpts[:, 0], 90), np.percentile(allpts[:, 2], 90)])
        for r in mine:
            feas = [p for p in r["points"] if p[1] <= bound]
            r["hypervolume"] = _hypervolume(feas, ideal, ref)
            r["best_feasible_loss"] = min((p[0] for p in feas), default=None)
            r["reference_point"] = ref.tolist()
        for method in dict.fromkeys(r["method"] for r in mine):
            sel = [r for r in mine if r["method"] == method]
            hv = [r["hypervolume"] for r in sel]
            loss = [r["best_feasible_loss"] for r in sel if r["best_feasible_loss"] is not None]
            rows.append({
                "problem": problem, "method": method, "seeds": len(sel),
                "hypervolume_mean": statistics.fmean(hv), "hypervolume_std": statistics.pstdev(hv),
                "best_feasible_loss_mean": statistics.fmean(loss) if loss else None,
                "best_feasible_loss_std": statistics.pstdev(loss) if loss else None,
                "trials_mean": statistics.fmean(r["trials"] for r in sel),
                "energy_spent_mean_joules": statistics.fmean(r["energy_spent_joules"] for r in sel),
                "energy_budget_joules": sel[0]["energy_budget_joules"],
                "wall_seconds_mean": statistics.fmean(r["wall_seconds"] for r in sel),
            })
    total = time.perf_counter() - started
    result = {"machine": info, "seeds": args.seeds, "trials_worth": args.trials_worth, "quick": args.quick,
              "wall_seconds": total, "rows": rows,
              "runs": [{k: v for k, v in r.items() if k != "points"} | {"outcomes": len(r["points"])} for r in runs]}
    out_dir = args.out / "quick" if args.quick else args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "strategies.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    (out_dir / "strategies.md").write_text(_markdown(result), encoding="utf-8")
    print(_markdown(result))
    print(f"wrote {out_dir / 'strategies.json'} and strategies.md in {total:.0f} s")
    return 0


_LABELS = {"auto": "multi-objective (auto)", "scalarized": "scalarized + Lagrangian (λ=0.3)",
           "pbt": "PBT (6 members, 3-step intervals)", "random": "random",
           "lambda_sweep": f"λ sweep ({len(LAMBDAS)} scalarized studies × budget/{len(LAMBDAS)})"}


def _fmt(mean: float | None, std: float | None, digits: int = 3) -> str:
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# Search strategies at an equal energy budget",
        "",
        f"`python -m benchmarks.strategies{' --quick' if result['quick'] else ''}` — {m['cpu']}, {m['cores']} cores, "
        f"torch {m['torch']}; {result['seeds']} seeds; budget: the energy of {result['trials_worth']:g} mean random "
        f"trials; {result['wall_seconds']:.0f} s.",
        "",
        "Objectives loss and energy, constraint `time_seconds <= T` (T: the search space's median time). "
        "Hypervolume of the feasible outcomes, normalized by the box between the ideal point and a "
        "reference point common to a problem's runs (90th percentiles of loss and energy over all runs). "
        "Mean ± std over seeds.",
        "",
        "| problem | method | hypervolume | best feasible loss | trials | energy spent (J) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['problem']} | {_LABELS.get(r['method'], r['method'])} | "
                     f"{_fmt(r['hypervolume_mean'], r['hypervolume_std'])} | "
                     f"{_fmt(r['best_feasible_loss_mean'], r['best_feasible_loss_std'])} | "
                     f"{r['trials_mean']:.1f} | {r['energy_spent_mean_joules']:.3g} |")
    lines += ["", "PBT outcomes are every interval's model, with the cost of its whole lineage (its own and its "
              "donors' intervals). On `training_cost` (not resumable) PBT does not apply; "
              "`training_cost_pbt` is its resumable variant, where the other methods train each configuration "
              f"for {FULL_STEPS} steps and PBT trains 6 members in {PBT_INTERVAL}-step intervals. The λ sweep "
              "row is the front traced by the best feasible trial of each scalarized study, to compare with the "
              "multi-objective row at the same total energy. The tiny `t5_lora` demo is not in this benchmark "
              "(PBT on it is covered by tests/daemon_tests/test_strategies_t5.py only).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
