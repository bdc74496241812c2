"""What hpod's machinery costs per trial, and what measuring a trial costs.

1. Per-trial overhead of the full hpod path (spec → engine → job in the store → trial
   subprocess → meters → result in the store → tell) against a bare Optuna
   ``study.optimize`` on the same kind of storage, on an objective that costs nothing
   (:func:`constant`), with the random sampler on both sides so sampler cost is not
   counted. SQLite (a file) and PostgreSQL (127.0.0.1:5432, a temporary database,
   dropped afterwards; skipped with a note when the server is unreachable).
2. Measurement overhead of the meters on a ~10-second CPU trial (numpy work): the same
   fixed work timed bare, inside :class:`hpod.monitors.meters.TrialMeters` sections,
   and inside sections with CodeCarbon. Target: < 5 %.

Run: ``python -m benchmarks.overhead [--quick]``; writes benchmarks/results/overhead.json
and .md (``--quick``: benchmarks/results/quick/, asserts nothing about speed).
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN_URL = os.environ.get("HPOD_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TARGET_MEASUREMENT_OVERHEAD_PERCENT = 5.0
#: issue 16: hpod's full path at most this many ms per trial above bare Optuna
TARGET_OVERHEAD_MS = 50.0
#: issue 16: per-trial cost late in a study within this many percent of early
TARGET_GROWTH_PERCENT = 20.0


def constant(params: dict[str, Any]) -> dict[str, float]:
    """The near-zero-cost objective: hpod's machinery is all that is timed."""
    return {"loss": 1.0 + 0.0 * float(params["x"])}


constant.metric_names = ("loss",)  # type: ignore[attr-defined]
constant.default_space = {"x": {"type": "float", "low": 0.0, "high": 1.0}}  # type: ignore[attr-defined]


def machine() -> dict[str, Any]:
    return {**describe_machine("optuna", "codecarbon", "numpy"),
            "load_average_1min_at_start": round(os.getloadavg()[0], 2)}


# ---------------------------------------------------------------------- part 1: per-trial overhead
def _pg_database() -> tuple[str, Any] | None:
    """A fresh database on the local server: (URL, drop callback), or None if unreachable."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"hpod_bench_{uuid.uuid4().hex[:10]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        print(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        return None

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    return url, drop


def _gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def _windows(gaps: list[float]) -> dict[str, Any]:
    """Mean ms per trial early in the run (from a tenth of the trials on) and at its end,
    over a fifth of the trials each: how per-trial cost grows with the study."""
    width = max(5, len(gaps) // 5)
    start = len(gaps) // 10
    early, late = gaps[start:start + width], gaps[-width:]
    return {"early_ms_per_trial": 1000 * statistics.mean(early), "late_ms_per_trial": 1000 * statistics.mean(late),
            "early_window": [start + 1, start + width], "late_window": [len(gaps) - width + 1, len(gaps)]}


def _interleaved(hpod_url: str, bare_url: str, state_dir: Path, n_trials: int) -> dict[str, Any]:
    """hpod's full path and bare Optuna, one trial each in turn: after each trial hpod
    tells, one bare ``study.optimize(n_trials=1)`` runs in the same process (hpod's slot
    is idle then: its trial has ended and the next is not asked yet). hpod's time per
    trial is the time between its tells less the bare trial run in between; so a slow
    patch of the shared machine hits both sides alike."""
    import optuna
    from rich.console import Console

    from hpod.core.runner import run_foreground
    from hpod.execution.executor import parse_slots
    from hpod.spec import parse_spec, resolve
    from hpod.store import Store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    bare_storage = optuna.storages.RDBStorage(bare_url)
    bare = optuna.create_study(storage=bare_storage, study_name="bare",
                               sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial: optuna.Trial) -> float:
        return constant({"x": trial.suggest_float("x", 0.0, 1.0)})["loss"]

    told_at: list[float] = []
    bare_seconds: list[float] = []

    def after_tell(engine: Any, frozen: Any, job: Any) -> None:
        told_at.append(time.perf_counter())
        t0 = time.perf_counter()
        bare.optimize(objective, n_trials=1)
        bare_seconds.append(time.perf_counter() - t0)

    spec = parse_spec({
        "name": "overhead", "objective": {"name": "benchmarks.overhead:constant"},
        "objectives": [{"name": "loss", "direction": "minimize"}],
        "sampler": {"name": "random", "seed": 0}, "budget": {"n_trials": n_trials},
    })
    store = Store(hpod_url)
    t0 = time.perf_counter()
    outcome = run_foreground(resolve(spec), store=store, state_dir=state_dir, slots=parse_slots(None, 1),
                             console=Console(file=io.StringIO()), codecarbon=True,
                             engine_hooks=[lambda engine: engine.on_told.append(after_tell)])
    seconds = time.perf_counter() - t0
    assert outcome.finished == n_trials, outcome
    trials = store.load_optuna_study("overhead").get_trials(deepcopy=False)
    child = [float((t.user_attrs.get("hpod.measurements") or {}).get("time_seconds", {}).get("value", 0.0))
             for t in trials]
    store.close()
    bare_storage.engine.dispose()
    assert len(told_at) == n_trials and len(bare_seconds) == n_trials
    # hpod's time from one tell to the next, without the bare trial run in between.
    hpod_gaps = [gap - pause for gap, pause in zip(_gaps(told_at), bare_seconds)]
    hpod_w, bare_w = _windows(hpod_gaps), _windows(bare_seconds[1:])
    return {
        "seconds": seconds - sum(bare_seconds),
        # First tell to last tell: what a long-running daemon pays per trial.
        "hpod_ms_per_trial": 1000 * statistics.mean(hpod_gaps),
        "bare_optuna_ms_per_trial": 1000 * statistics.mean(bare_seconds[1:]),
        "hpod_startup_seconds": told_at[0] - t0,
        "objective_ms_per_trial": 1000 * statistics.mean(child),
        "windows": {"early": hpod_w["early_window"], "late": hpod_w["late_window"]},
        "hpod_early_ms_per_trial": hpod_w["early_ms_per_trial"], "hpod_late_ms_per_trial": hpod_w["late_ms_per_trial"],
        "bare_early_ms_per_trial": bare_w["early_ms_per_trial"], "bare_late_ms_per_trial": bare_w["late_ms_per_trial"],
    }


def per_trial_overhead(n_trials: int, pg_trials: int | None = None,
                       backends: tuple[str, ...] = ("sqlite", "postgresql")) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if "postgresql" in backends:
        pg = _pg_database()
        if pg is None:
            notes.append(f"PostgreSQL skipped: no server reachable at {PG_ADMIN_URL}")
            backends = tuple(b for b in backends if b != "postgresql")
        else:
            pg[1]()  # only probed; each side gets its own fresh database below
    for backend in backends:
        n_trials_here = pg_trials or n_trials if backend == "postgresql" else n_trials
        with tempfile.TemporaryDirectory(prefix="hpod-overhead-") as tmp:
            drops = []
            if backend == "sqlite":
                hpod_url, bare_url = f"sqlite:///{tmp}/hpod.db", f"sqlite:///{tmp}/bare.db"
            else:
                made = [_pg_database() for _ in range(2)]
                assert made[0] is not None and made[1] is not None
                (hpod_url, drop_a), (bare_url, drop_b) = made[0], made[1]
                drops = [drop_a, drop_b]
            load_before = os.getloadavg()[0]
            try:
                state_dir = Path(tmp) / "state"
                state_dir.mkdir()
                r = _interleaved(hpod_url, bare_url, state_dir, n_trials_here)
            finally:
                for drop in drops:
                    drop()
            row = {
                "storage": backend, "n_trials": n_trials_here, **r,
                "overhead_ms_per_trial": r["hpod_ms_per_trial"] - r["bare_optuna_ms_per_trial"],
                "ratio": r["hpod_ms_per_trial"] / r["bare_optuna_ms_per_trial"],
                "target_met": r["hpod_ms_per_trial"] <= r["bare_optuna_ms_per_trial"] + TARGET_OVERHEAD_MS,
                "hpod_growth_percent": 100 * (r["hpod_late_ms_per_trial"] / r["hpod_early_ms_per_trial"] - 1),
                "load_1min_before": round(load_before, 2), "load_1min_after": round(os.getloadavg()[0], 2),
            }
            row["growth_target_met"] = abs(row["hpod_growth_percent"]) <= TARGET_GROWTH_PERCENT
            rows.append(row)
            print(f"{backend:10s} bare Optuna {row['bare_optuna_ms_per_trial']:7.1f} ms/trial   hpod "
                  f"{row['hpod_ms_per_trial']:7.1f} ms/trial (start {row['hpod_startup_seconds']:.2f} s)   "
                  f"difference {row['overhead_ms_per_trial']:.1f} ms, ratio {row['ratio']:.2f}, "
                  f"growth {row['hpod_growth_percent']:+.0f} %, load {row['load_1min_before']} -> "
                  f"{row['load_1min_after']}")
    return rows, notes


# ---------------------------------------------------------------------- part 2: meters on vs off
def _work_unit() -> Any:
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((256, 256)) / 16


def _numpy_work(iterations: int) -> float:
    """Fixed CPU work (matrix products and element-wise maths), same on every call."""
    import numpy as np

    a = _work_unit()
    acc = 0.0
    for _ in range(iterations):
        b = np.tanh(a @ a.T)
        acc += float(b.sum())
    return acc


def _calibrate(seconds: float) -> int:
    probe = 20
    t0 = time.perf_counter()
    _numpy_work(probe)
    per = (time.perf_counter() - t0) / probe
    return max(1, int(seconds / per))


def _timed(mode: str, iterations: int) -> dict[str, Any]:
    """One trial's work, bare or metered; returns wall seconds and what the meters said."""
    from hpod.monitors.meters import TrialMeters

    t0 = time.perf_counter()
    if mode == "bare":
        _numpy_work(iterations)
        return {"seconds": time.perf_counter() - t0}
    meters = TrialMeters(gpu_index=None, use_codecarbon=(mode == "meters+codecarbon"))
    t1 = time.perf_counter()
    with meters.section():
        _numpy_work(iterations)
    t2 = time.perf_counter()
    meters.finish()
    seconds = time.perf_counter() - t0
    fig = meters.sections[0]
    # Split the cost: start (tracker construction), the work itself (slowed by the
    # tracker's thread competing for the cores), and finish (tracker stop + energy).
    return {"seconds": seconds, "init_seconds": t1 - t0, "section_seconds": t2 - t1,
            "finish_seconds": seconds - (t2 - t0),
            "measured_seconds": fig.time_seconds, "energy_joules": fig.energy_joules,
            "energy_method": fig.energy_method, "memory_method": fig.memory_method, "notes": meters.notes}


def measurement_overhead(trial_seconds: float, repeats: int) -> dict[str, Any]:
    import logging

    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    iterations = _calibrate(trial_seconds)
    modes = ("bare", "meters", "meters+codecarbon")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    # Interleave the modes so a slow patch of the shared machine hits all of them alike.
    _timed("meters+codecarbon", max(1, iterations // 20))  # warm-up: CodeCarbon's first import
    for r in range(repeats):
        for mode in (modes if r % 2 == 0 else tuple(reversed(modes))):
            runs[mode].append(_timed(mode, iterations))
            print(f"  {mode:18s} repeat {r + 1}: {runs[mode][-1]['seconds']:.2f} s")
    bare = statistics.median(x["seconds"] for x in runs["bare"])
    out: dict[str, Any] = {"iterations": iterations, "repeats": repeats, "bare_seconds": bare, "modes": {}}
    for mode in modes:
        median = statistics.median(x["seconds"] for x in runs[mode])
        last = runs[mode][-1]
        out["modes"][mode] = {
            "median_seconds": median,
            "all_seconds": [x["seconds"] for x in runs[mode]],
            "overhead_percent": 100 * (median - bare) / bare,
            "median_section_seconds": statistics.median(x.get("section_seconds", x["seconds"]) for x in runs[mode]),
            "median_fixed_seconds": statistics.median(x.get("init_seconds", 0.0) + x.get("finish_seconds", 0.0)
                                                      for x in runs[mode]),
            "energy_method": last.get("energy_method"),
            "energy_joules": last.get("energy_joules"),
        }
    return out


# ---------------------------------------------------------------------- output
def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        "# hpod overhead",
        "",
        f"`python -m benchmarks.overhead{' --quick' if result['quick'] else ''}{result.get('arguments', '')}` "
        f"on {m['cpu']}, {m['cores']} cores "
        f"(shared with other jobs: 1-min load average {m['load_average_1min_at_start']} at the start, "
        f"{result['load_average_1min_at_end']} at the end), Python {m['python']}, torch {m['torch']}, "
        f"Optuna {m['optuna']}, CodeCarbon {m['codecarbon']}.",
        "",
        "## Per-trial overhead of the full hpod path",
        "",
        "Near-zero-cost objective (`benchmarks.overhead:constant`), random sampler on both sides, one trial at a "
        "time. hpod: `run_foreground` (spec → engine → job in the store → forkserver trial process → meters → "
        "result in the store → tell). Bare: `study.optimize(…, n_trials=1)` on a study of its own on the same "
        "backend. The two are interleaved in one process: after each hpod tell one bare trial runs, and hpod's "
        "time per trial is the time from one tell to the next less that bare trial, so the machine's load hits "
        "both sides alike. Both are from the second trial on (hpod's one-time start, the fork server and the "
        f"study's registration, is apart). Target: hpod ≤ bare + {TARGET_OVERHEAD_MS:.0f} ms per trial.",
        "",
        "| storage | trials | load (1 min) before → after | bare Optuna (ms/trial) | hpod (ms/trial) | "
        "difference (ms/trial) | ratio | target | hpod one-time start (s) |",
        "|---|---:|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["per_trial"]:
        lines.append(f"| {r['storage']} | {r['n_trials']} | {r['load_1min_before']} → {r['load_1min_after']} | "
                     f"{r['bare_optuna_ms_per_trial']:.1f} | {r['hpod_ms_per_trial']:.1f} | "
                     f"{r['overhead_ms_per_trial']:+.1f} | {r['ratio']:.2f} | "
                     f"{'met' if r['target_met'] else 'not met'} | {r['hpod_startup_seconds']:.2f} |")
    lines += [
        "",
        "Growth with the study: mean ms per trial early in the run and at its end (a fifth of the trials each; "
        f"target: late within {TARGET_GROWTH_PERCENT:.0f} % of early).",
        "",
        "| storage | trials | early window | late window | bare Optuna early / late (ms) | "
        "hpod early / late (ms) | hpod growth | target |",
        "|---|---:|---|---|---:|---:|---:|---|",
    ]
    for r in result["per_trial"]:
        w = r["windows"]
        lines.append(f"| {r['storage']} | {r['n_trials']} | trials {w['early'][0]}-{w['early'][1]} | "
                     f"trials {w['late'][0]}-{w['late'][1]} | {r['bare_early_ms_per_trial']:.1f} / "
                     f"{r['bare_late_ms_per_trial']:.1f} | {r['hpod_early_ms_per_trial']:.1f} / "
                     f"{r['hpod_late_ms_per_trial']:.1f} | {r['hpod_growth_percent']:+.0f} % | "
                     f"{'met' if r['growth_target_met'] else 'not met'} |")
    for note in result["notes"]:
        lines.append(f"\n{note}")
    lines += [
        "",
        "## Measurement overhead of the meters",
        "",
    ]
    mo = result["meters"]
    lines += [
        f"The same fixed numpy work ({mo['iterations']} iterations, ~{mo['bare_seconds']:.1f} s bare), "
        f"median of {mo['repeats']} interleaved repeats. Target: < {TARGET_MEASUREMENT_OVERHEAD_PERCENT:.0f} %.",
        "",
        "| mode | median total (s) | of which work (s) | of which meter start + stop (s) | overhead vs bare | "
        "runs (s) | energy method |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for mode, r in mo["modes"].items():
        target = "" if mode == "bare" else (" ✅" if r["overhead_percent"] < TARGET_MEASUREMENT_OVERHEAD_PERCENT
                                            else " ❌ over target")
        runs = ", ".join(f"{x:.2f}" for x in r["all_seconds"])
        lines.append(f"| {mode} | {r['median_seconds']:.2f} | {r['median_section_seconds']:.2f} | "
                     f"{r['median_fixed_seconds']:.2f} | {r['overhead_percent']:+.1f} %{target} | {runs} | "
                     f"{r['energy_method'] or '–'} |")
    spread = max((max(r["all_seconds"]) - min(r["all_seconds"])) / r["median_seconds"] * 100
                 for r in mo["modes"].values())
    fixed = max(r["median_fixed_seconds"] for r in mo["modes"].values())
    lines += [
        "",
        f"Meter start + stop, timed directly: at most {fixed:.2f} s per trial "
        f"({100 * fixed / mo['bare_seconds']:.1f} % "
        f"of the bare trial). Repeats of one mode differ by up to {spread:.0f} % on this shared machine, so "
        "differences between the medians within that spread are the machine's load, not the meters.",
    ]
    lines += [
        "",
        "`meters`: wall time, RSS peak, CPU time per section; `meters+codecarbon`: plus CodeCarbon's tracker "
        "(started in a background thread, stopped after the section), the default for heavy objectives on "
        "machines without NVML. On a GPU the NVML energy counter replaces CodeCarbon.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 trials and a 1-second trial: a smoke run")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per side (default 100)")
    parser.add_argument("--pg-n-trials", type=int, default=None, help="trials on PostgreSQL (default --n-trials)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default benchmarks/results)")
    parser.add_argument("--trial-seconds", type=float, default=None, help="metered trial length (default 10)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per meter mode (default 3)")
    parser.add_argument("--skip-meters", action="store_true",
                        help="measure the per-trial overhead only; keep the meters section of the existing JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n_trials = args.n_trials or (10 if args.quick else 100)
    trial_seconds = args.trial_seconds or (1.0 if args.quick else 10.0)
    repeats = args.repeats or (1 if args.quick else 3)
    if n_trials < 2:
        parser.error(f"--n-trials must be >= 2 (got {n_trials})")
    if trial_seconds <= 0 or repeats < 1:
        parser.error(f"--trial-seconds must be > 0 and --repeats >= 1 (got {trial_seconds}, {repeats})")

    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, optuna {info['optuna']}, "
          f"load {info['load_average_1min_at_start']}")
    print(f"per-trial overhead, {n_trials} trials per side:")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = [b for b in backends if b not in ("sqlite", "postgresql")]
    if unknown or not backends:
        parser.error(f"--backends: expected sqlite and/or postgresql (got {args.backends!r})")
    if args.pg_n_trials is not None and args.pg_n_trials < 2:
        parser.error(f"--pg-n-trials must be >= 2 (got {args.pg_n_trials})")
    per_trial, notes = per_trial_overhead(n_trials, args.pg_n_trials, backends)
    out = args.output or (RESULTS / "quick" if args.quick else RESULTS)
    previous = out / "overhead.json"
    if args.skip_meters and previous.exists():
        meters = json.loads(previous.read_text())["meters"]
        notes.append("The meters section below is kept from the previous run of this command "
                     "(`--skip-meters`): its machine line is that run's.")
    else:
        print(f"measurement overhead, ~{trial_seconds:.0f} s trial x {repeats} repeats:")
        meters = measurement_overhead(trial_seconds, repeats)
    for mode, r in meters["modes"].items():
        print(f"  {mode:18s} median {r['median_seconds']:.2f} s  overhead {r['overhead_percent']:+.2f} %")
    arguments = (f" --n-trials {args.n_trials}" if args.n_trials else "") + \
        (f" --pg-n-trials {args.pg_n_trials}" if args.pg_n_trials else "") + \
        (f" --backends {args.backends}" if backends != ("sqlite", "postgresql") else "") + \
        (" --skip-meters" if args.skip_meters else "")
    result = {"quick": args.quick, "arguments": arguments, "machine": info, "per_trial": per_trial, "notes": notes,
              "meters": meters,
              "load_average_1min_at_end": round(os.getloadavg()[0], 2),
              "target_measurement_overhead_percent": TARGET_MEASUREMENT_OVERHEAD_PERCENT}
    out.mkdir(parents=True, exist_ok=True)
    (out / "overhead.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "overhead.md").write_text(markdown(result))
    print(f"wrote {out / 'overhead.json'} and {out / 'overhead.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
