"""What coordinating trials through the database costs: hpod workers vs plain Optuna.

Run: ``python -m benchmarks.coordination [--quick]``; writes
benchmarks/results/coordination.json and .md. Needs PostgreSQL on 127.0.0.1:5432
(trust auth, as in the tests); each configuration gets a fresh database.

For SQLite (1 worker) and PostgreSQL (1, 2, 4, 8 workers), with a near-zero-cost
objective (``synthetic:training_cost`` without sleeping, ~1 ms):

- hpod: a controller-only ``hpod run --cpu-slots 0`` plus n ``hpod worker``
  processes; trials per second from the first claim to the last stored result
  (process start-up excluded).
- claim latency: n processes (one pool each) claiming pre-queued jobs as fast as
  they can through :meth:`Store.claim_job`; median and p99 of one claim.
- Optuna: n processes each running ``study.optimize`` on the same storage with the
  same cost model and the random sampler; trials per second from the first trial
  start to the last completion. ``ratio`` is hpod's rate over Optuna's.
- Ray (``--only ray`` runs just these and merges them into the existing results): the
  Ray executor on a local one-node Ray cluster with 1, 2, 4 slots; trials per second and
  scheduling latency (claim to trial process start on the node).

hpod's rate includes what Optuna's loop does not: a separate measured trial process
per trial, leases, events and the controller's tell/summary per trial.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
PG = "postgresql+psycopg://postgres@127.0.0.1:5432"


def machine() -> dict[str, Any]:
    pg = "unknown"
    try:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", connect_timeout=3) as conn:
            pg = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    except Exception:
        pass
    return {**describe_machine("optuna", "sqlalchemy", "psycopg"), "postgresql": pg}


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'bench-{uuid.uuid4().hex[:8]}.db'}"
        return
    import psycopg

    name = f"hpod_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _spec(path: Path, name: str, n_trials: int) -> Path:
    path.write_text(json.dumps({
        "name": name,
        "objective": {"name": "synthetic:training_cost", "params": {}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
        "sampler": {"name": "random", "seed": 1},
        "budget": {"n_trials": n_trials},
    }))
    return path


def _hpod() -> str:
    return str(Path(sys.executable).with_name("hpod"))


def hpod_rate(url: str, workers: int, n_trials: int, tmp: Path) -> dict[str, Any]:
    from hpod.store import Store

    Store(url).close()
    spec = _spec(tmp / f"spec-{uuid.uuid4().hex[:6]}.yaml", "coord", n_trials)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HPOD_API": "127.0.0.1:1"}
    logs = open(tmp / "hpod.log", "a")  # noqa: SIM115 - shared by the worker processes, closed in finally
    # SQLite: workers poll every 20 ms; PostgreSQL: a queued job wakes them (LISTEN/NOTIFY), so they
    # keep the default 0.5 s poll instead of loading the database with empty claims.
    poll = "0.02" if url.startswith("sqlite") else "0.5"
    procs = [subprocess.Popen([_hpod(), "worker", "--storage", url, "--cpu-slots", "1", "--name", f"w{i}",
                               "--state-dir", str(tmp / f"w{i}"), "--poll-seconds", poll, "--no-codecarbon"],
                              env=env, stdout=logs, stderr=subprocess.STDOUT) for i in range(workers)]
    try:
        ctl = subprocess.run([_hpod(), "run", str(spec), "--cpu-slots", "0", "--storage", url, "--state-dir",
                              str(tmp / "ctl"), "--no-codecarbon"], env=env, stdout=logs, stderr=subprocess.STDOUT,
                             timeout=1800)
        if ctl.returncode != 0:
            raise RuntimeError(f"controller failed ({ctl.returncode}); see {tmp / 'hpod.log'}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
        logs.close()
    store = Store(url, create=False)
    jobs = [j for j in store.jobs("coord") if j.state == "done"]
    store.close()
    span = max(j.finished_at or 0 for j in jobs) - min(j.claimed_at or 0 for j in jobs)
    return {"trials": len(jobs), "seconds": span, "trials_per_second": len(jobs) / span}


def _claimer(url: str, name: str, out: Any) -> None:
    from hpod.store import Store

    store = Store(url, create=False, pool_size=1)
    latencies = []
    while True:
        t0 = time.perf_counter()
        job = store.claim_job(name, lease_seconds=60)
        latencies.append(time.perf_counter() - t0)
        if job is None:
            break
    store.close()
    out.put(latencies[:-1])  # the last one found nothing


def claim_latency(url: str, workers: int, jobs_per_worker: int) -> dict[str, Any]:
    from hpod.store import Store

    store = Store(url)
    for i in range(workers * jobs_per_worker):
        store.create_job(study="claims", trial_id=10_000_000 + i, trial_number=i, params={"i": i})
    store.close()
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, f"c{i}", queue)) for i in range(workers)]
    for p in procs:
        p.start()
    lat: list[float] = []
    for _ in procs:
        lat += queue.get(timeout=600)
    for p in procs:
        p.join(60)
    lat.sort()
    return {"claims": len(lat), "median_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))]}


def _optuna_worker(url: str, n_trials: int) -> None:
    import optuna

    from hpod.objectives.synthetic import training_cost_model

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name="plain", storage=url, sampler=optuna.samplers.RandomSampler())

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        params = {
            "learning_rate": trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True),
            "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
            "epochs": trial.suggest_categorical("epochs", [2, 3, 4]),
            "dropout": trial.suggest_categorical("dropout", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]),
            "rank": trial.suggest_categorical("rank", [4, 8, 16]),
            "alpha": trial.suggest_categorical("alpha", [16, 32, 64]),
        }
        m = training_cost_model(params)
        return m["loss"], m["time_seconds"]

    study.optimize(objective, n_trials=n_trials)


def optuna_rate(url: str, workers: int, n_trials: int) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="plain", storage=url, directions=["minimize", "minimize"])
    ctx = multiprocessing.get_context("spawn")
    per = [n_trials // workers + (1 if i < n_trials % workers else 0) for i in range(workers)]
    procs = [ctx.Process(target=_optuna_worker, args=(url, k)) for k in per]
    for p in procs:
        p.start()
    for p in procs:
        p.join(1800)
    trials = optuna.load_study(study_name="plain", storage=url).get_trials(deepcopy=False)
    done = [t for t in trials if t.state.name == "COMPLETE"]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"trials": len(done), "seconds": span, "trials_per_second": len(done) / span}


def ray_rate(slots: int, n_trials: int, tmp: Path) -> dict[str, Any]:
    """hpod's Ray executor on a local one-node Ray cluster with ``slots`` logical CPUs (one
    trial actor per CPU): trials per second from the first claim to the last stored
    result, and scheduling latency — from the claim (the actor is submitted) to the trial
    process starting on its node."""
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # everything on 127.0.0.1
    import ray
    from ray.cluster_utils import Cluster

    from hpod.core.controller import Controller
    from hpod.execution.ray_executor import RayExecutor
    from hpod.spec import parse_spec, resolve
    from hpod.store import Store

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": slots, "object_store_memory": 80 * 1024 * 1024, "include_dashboard": False,
        "node_ip_address": "127.0.0.1"})
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        state = tmp / f"ray-{slots}"
        store = Store.for_state_dir(state)
        spec = parse_spec(json.loads(_spec(tmp / f"ray-{slots}.json", "coord", n_trials).read_text()))
        executor = RayExecutor(store, state, slots=slots, namespace=f"coord-{slots}", codecarbon=False)
        controller = Controller(store, state, executor=executor, remote_workers=False)
        engine = controller.activate(spec, resolved=resolve(spec))
        deadline = time.monotonic() + 1800
        while spec.name in controller.engines and time.monotonic() < deadline:
            if not controller.step():
                controller.wait(0.05)
        executor.stop(reason="shutdown")
        jobs = {j.trial_id: j for j in store.jobs("coord") if j.state == "done"}
        latencies = []
        for t in engine.study.get_trials(deepcopy=False):
            placement = (t.user_attrs.get("hpod.info") or {}).get("placement") or {}
            job = jobs.get(t._trial_id)
            if job is not None and placement.get("started_at") and job.claimed_at:
                latencies.append(1000.0 * (placement["started_at"] - job.claimed_at))
        store.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
    span = max(j.finished_at or 0 for j in jobs.values()) - min(j.claimed_at or 0 for j in jobs.values())
    latencies.sort()
    return {"slots": slots, "trials": len(jobs), "seconds": span, "trials_per_second": len(jobs) / span,
            "schedule_p50_ms": statistics.median(latencies),
            "schedule_p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]}


def run_ray(quick: bool) -> dict[str, Any]:
    n_trials = 4 if quick else 24
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpod-coord-ray-") as tmp_name:
        for slots in (1,) if quick else (1, 2, 4):
            print(f"ray × {slots} slot(s)…", flush=True)
            load = os.getloadavg()[0]
            row = {**ray_rate(slots, n_trials, Path(tmp_name)), "load_before": load,
                   "load_after": os.getloadavg()[0]}
            print(f"  {row['trials_per_second']:.2f}/s, scheduling p50 {row['schedule_p50_ms']:.0f} ms", flush=True)
            rows.append(row)
    import ray

    return {"n_trials": n_trials, "ray": ray.__version__, "results": rows}


def run(quick: bool, n_trials: int | None = None, pg_workers: tuple[int, ...] | None = None,
        repeats: int = 1, sqlite: bool = True) -> dict[str, Any]:
    n_trials = n_trials or (16 if quick else 80)
    claims_per_worker = 20 if quick else 100
    pg_workers = pg_workers or ((1, 2) if quick else (1, 2, 4, 8))
    configs = ([("sqlite", 1)] if sqlite else []) + [("postgresql", n) for n in pg_workers]
    load_start = round(os.getloadavg()[0], 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="hpod-coord-") as tmp_name:
        tmp = Path(tmp_name)
        for kind, n in configs:
            print(f"{kind} × {n} worker(s)…", flush=True)
            work = tmp / f"{kind}-{n}"
            work.mkdir()
            load_before = round(os.getloadavg()[0], 2)
            # hpod and plain Optuna alternate (A B B A …) so the shared machine's load hits both alike.
            hpod_runs: list[dict[str, Any]] = []
            plain_runs: list[dict[str, Any]] = []
            for rep in range(repeats):
                for side in (("hpod", "optuna") if rep % 2 == 0 else ("optuna", "hpod")):
                    with database(kind, work) as url:
                        if side == "hpod":
                            hpod_runs.append(hpod_rate(url, n, n_trials, work))
                        else:
                            plain_runs.append(optuna_rate(url, n, n_trials))
            with database(kind, work) as url:
                claims = claim_latency(url, n, claims_per_worker)
            hpod = {"trials_per_second": statistics.median(r["trials_per_second"] for r in hpod_runs),
                    "runs": hpod_runs}
            plain = {"trials_per_second": statistics.median(r["trials_per_second"] for r in plain_runs),
                     "runs": plain_runs}
            row = {"storage": kind, "workers": n, "hpod": hpod, "claim": claims, "optuna": plain,
                   "ratio": hpod["trials_per_second"] / plain["trials_per_second"], "repeats": repeats,
                   "load_1min_before": load_before, "load_1min_after": round(os.getloadavg()[0], 2)}
            print(f"  hpod {hpod['trials_per_second']:.2f}/s, claim p50 {claims['median_ms']:.1f} ms "
                  f"p99 {claims['p99_ms']:.1f} ms, optuna {plain['trials_per_second']:.2f}/s", flush=True)
            rows.append(row)
    return {"machine": machine(), "quick": quick, "n_trials": n_trials, "claims_per_worker": claims_per_worker,
            "objective": "synthetic:training_cost (no sleep)", "sampler": "random", "results": rows,
            "load_average_1min_at_start": load_start, "load_average_1min_at_end": round(os.getloadavg()[0], 2)}


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Coordination: hpod workers vs plain Optuna on the same storage",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, PostgreSQL {m['postgresql']}, "
        f"optuna {m['optuna']}, SQLAlchemy {m['sqlalchemy']}, psycopg {m['psycopg']}, torch {m['torch']}.",
        f"{data['n_trials']} trials per run of {data['objective']}, sampler {data['sampler']}; claim latency "
        f"over {data['claims_per_worker']} claims per process. Command: `python -m benchmarks.coordination"
        + (" --quick" if data["quick"] else "") + (data.get("arguments") or "") + "`.",
        "",
        "The machine was shared with other people's jobs while this ran: 1-min load average "
        f"{data.get('load_average_1min_at_start', '?')} at the start, {data.get('load_average_1min_at_end', '?')} "
        "at the end (2 cores). Rates are therefore lower than on an idle machine, for hpod and Optuna alike.",
        "",
        "hpod and Optuna alternate within each row (hpod, Optuna, Optuna, hpod, …); the rates are the medians "
        "of the runs, listed in brackets. Target (issue 16): with 4 PostgreSQL workers hpod completes at least "
        "as many trials per second as Optuna (ratio ≥ 1).",
        "",
        *[line for note in data.get("notes", []) for line in (note, "")],
        "| storage | workers | load (1 min) before → after | hpod trials/s | Optuna optimize trials/s | ratio | "
        "claim p50 (ms) | claim p99 (ms) |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in data["results"]:
        runs_h = ", ".join(f"{x['trials_per_second']:.2f}" for x in r["hpod"].get("runs", []))
        runs_o = ", ".join(f"{x['trials_per_second']:.2f}" for x in r["optuna"].get("runs", []))
        lines.append(f"| {r['storage']} | {r['workers']} | {r.get('load_1min_before', '?')} → "
                     f"{r.get('load_1min_after', '?')} | {r['hpod']['trials_per_second']:.2f} [{runs_h}] | "
                     f"{r['optuna']['trials_per_second']:.2f} [{runs_o}] | {r['ratio']:.2f} | "
                     f"{r['claim']['median_ms']:.1f} | {r['claim']['p99_ms']:.1f} |")
    ray_rows = data.get("ray")
    if ray_rows:
        lines += [
            "",
            f"Ray executor (Ray {ray_rows['ray']}, measured on {ray_rows['machine']['cpu']}, "
            f"{ray_rows['machine']['cores']} cores; a local one-node Ray cluster with one logical CPU per slot, "
            f"SQLite; {ray_rows['n_trials']} trials per run of the same objective): scheduling latency is from "
            "the claim (the trial's actor submitted) to the trial process starting on its node. Other people's "
            "work ran on the machine meanwhile (the load column)."
            + (" These rows are kept from the previous run of this command (`--keep-ray`)."
               if "--keep-ray" in (data.get("arguments") or "") else ""),
            "",
            "| executor | slots | trials/s | scheduling p50 (ms) | scheduling p99 (ms) | load (1 min) before → after |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for r in ray_rows["results"]:
            lines.append(f"| ray | {r['slots']} | {r['trials_per_second']:.2f} | {r['schedule_p50_ms']:.0f} | "
                         f"{r['schedule_p99_ms']:.0f} | {r['load_before']:.1f} → {r['load_after']:.1f} |")
        lines += ["", "Each Ray trial starts a fresh actor process and, in it, a fresh trial process (the "
                  "Python interpreter and hpod's imports: seconds on a loaded machine); a local slot forks "
                  "its trial from a warm fork server. On trials of minutes that start-up is noise."]
    lines += [
        "",
        "hpod's rate counts, per trial, a separate measured trial process, a lease, events and the "
        "controller's tell and study summary; Optuna's loop evaluates the function in-process. On a "
        "near-zero-cost objective that is the whole difference; on real trials (minutes) both are "
        "bounded by the trials.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer trials, 1–2 workers")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default benchmarks/results, "
                        "or benchmarks/results/quick with --quick)")
    parser.add_argument("--only", choices=("all", "ray"), default="all",
                        help="ray: run only the Ray executor rows and merge them into the existing results")
    parser.add_argument("--n-trials", type=int, default=None, help="trials per run (default 80; 16 with --quick)")
    parser.add_argument("--pg-workers", default=None,
                        help="comma-separated PostgreSQL worker counts (default 1,2,4,8; 1,2 with --quick)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of hpod and of Optuna per row, alternating (default 1)")
    parser.add_argument("--no-sqlite", action="store_true", help="PostgreSQL rows only")
    parser.add_argument("--keep-ray", action="store_true",
                        help="keep the Ray rows of the existing results instead of measuring them again")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1 (got {args.repeats})")
    pg_workers = tuple(int(n) for n in args.pg_workers.split(",")) if args.pg_workers else None
    if args.n_trials is not None and args.n_trials < 2:
        parser.error(f"--n-trials must be >= 2 (got {args.n_trials})")
    print(json.dumps(machine()), flush=True)
    out = args.output or (RESULTS / "quick" if args.quick else RESULTS)
    if args.only == "ray":
        data = json.loads((out / "coordination.json").read_text())
    else:
        previous = out / "coordination.json"
        kept_ray = json.loads(previous.read_text()).get("ray") if args.keep_ray and previous.exists() else None
        data = run(args.quick, args.n_trials, pg_workers, repeats=args.repeats, sqlite=not args.no_sqlite)
        data["arguments"] = (f" --n-trials {args.n_trials}" if args.n_trials else "") + \
            (f" --pg-workers {args.pg_workers}" if args.pg_workers else "") + \
            (f" --repeats {args.repeats}" if args.repeats != 1 else "") + (" --no-sqlite" if args.no_sqlite else "") + \
            (" --keep-ray" if args.keep_ray else "")
        if kept_ray:
            data["ray"] = kept_ray
    if not (args.keep_ray and data.get("ray")):
        try:
            data["ray"] = {**run_ray(args.quick), "machine": machine()}
        except ImportError:
            print("ray is not installed (pip install hpod[ray]): no Ray rows", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coordination.json").write_text(json.dumps(data, indent=2) + "\n")
    (out / "coordination.md").write_text(markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
