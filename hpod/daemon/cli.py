"""The ``hpod`` console script.

User errors (bad spec, unknown study, unreachable storage URL) print one message
and exit with code 2; hpod never prints a traceback for them. Heavy libraries are
imported inside the commands that need them, so ``hpod status`` starts fast.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from hpod import __version__
from hpod.errors import HpodError, UsageError

app = typer.Typer(
    name="hpod",
    help="hpod — multi-objective hyperparameter optimization of LoRA fine-tuning (and any objective), "
         "measuring loss, time, memory and energy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

StateDirOpt = Annotated[Optional[Path], typer.Option("--state-dir", help="State directory (default: $HPOD_STATE_DIR "
                                                                           "or the user state dir).")]
StorageOpt = Annotated[Optional[str], typer.Option("--storage", help="Database URL (default: $HPOD_STORAGE or "
                                                                      "sqlite in the state dir).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]

# Piped output keeps whole tables instead of wrapping them at 80 columns.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 240)


def _storage_url(storage: str | None) -> str | None:
    return storage or os.environ.get("HPOD_STORAGE") or None


def _open_store(state_dir: Path | None, storage: str | None, *, light: bool = False) -> tuple[Any, Path]:
    from hpod.daemon.store import Store, default_state_dir

    sd = default_state_dir(state_dir)
    return Store.for_state_dir(sd, _storage_url(storage), light=light), sd


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, allow_nan=True) + "\n")


@app.callback(invoke_without_command=True)
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False) -> None:
    if version:
        out.print(f"hpod {__version__}")
        raise typer.Exit(0)


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Study spec (YAML).")],
    n_trials: Annotated[Optional[int], typer.Option("--n-trials", min=1, help="Override budget.n_trials.")] = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
    cpu_slots: Annotated[Optional[int], typer.Option("--cpu-slots", min=0, help="Trials at once on CPU (0: controller only, "
                                                           "remote `hpod worker`s run the trials).")] = None,
    gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU indices, one trial per GPU, e.g. 0,1.")] = None,
    no_codecarbon: Annotated[bool, typer.Option("--no-codecarbon", help="Skip CodeCarbon energy tracking.")] = False,
) -> None:
    """Run a study in the foreground (resumes an unfinished study of the same name)."""
    from hpod.daemon.executor import parse_slots
    from hpod.daemon.runner import run_foreground
    from hpod.spec import load_spec, resolve

    spec = load_spec(spec_path)
    if n_trials is not None:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"n_trials": n_trials})})
    resolved = resolve(spec)
    resolved.objective.validate()
    slots = parse_slots(gpus, cpu_slots)
    store, sd = _open_store(state_dir, storage or spec.storage)
    outcome = run_foreground(resolved, store=store, state_dir=sd, slots=slots, console=err,
                             codecarbon=not no_codecarbon)
    if outcome.interrupted:
        err.print(f"interrupted: {outcome.finished} trials kept; run the same command to continue.")
        raise typer.Exit(130)
    _print_pareto_table(store, spec.name)


def _study_rows(store: Any) -> list[dict[str, Any]]:
    rows = []
    for r in store.list_studies():
        spec = json.loads(r.spec_json)
        counts = json.loads(r.counts_json) if r.counts_json else {}
        rows.append({
            "name": r.name,
            "state": r.state,
            "objective": spec.get("objective", {}).get("name"),
            "objectives": {o["name"]: o.get("direction", "minimize") for o in spec.get("objectives", [])},
            "n_trials": spec.get("budget", {}).get("n_trials"),
            "trials": counts,
            "failed": counts.get("FAIL", 0),
            "best": json.loads(r.best_json) if r.best_json else {},
            "hypervolume": r.hypervolume,
            "pareto_front_size": r.pareto_front_size,
            "energy_spent_joules": r.energy_spent_joules,
            "sampler": r.sampler_name,
            "sampler_reason": r.sampler_reason,
            "parent": r.parent,
            "version": r.version,
            "reason": r.reason,
            "last_activity": r.last_activity_at,
            "message": r.message,
            # scalarized: Lagrange multipliers and scales; pbt: generation, medians, exploits
            "strategy": json.loads(r.strategy_json) if r.strategy_json else None,
        })
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ago(ts: float | None) -> str:
    import time

    if not ts:
        return "–"
    d = time.time() - ts
    if d < 60:
        return f"{d:.0f}s ago"
    if d < 3600:
        return f"{d / 60:.0f}m ago"
    if d < 86400:
        return f"{d / 3600:.1f}h ago"
    return f"{d / 86400:.1f}d ago"


@app.command()
def status(state_dir: StateDirOpt = None, storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """Every study: state, trials by state, best per objective, hypervolume, last activity."""
    from hpod.daemon import client

    daemon_status = client.try_status(state_dir)
    if daemon_status is not None:
        if as_json:
            _print_json(daemon_status)
        else:
            client.print_daemon_status(daemon_status, out)
        return
    from hpod.daemon.monitoring import monitor_states
    from hpod.daemon.retune import retune_states

    store, sd = _open_store(state_dir, storage, light=True)
    studies = _study_rows(store)
    monitors, retunes = monitor_states(store), retune_states(store)
    workers = worker_rows(store)
    if as_json:
        _print_json({"daemon": None, "storage": store.safe_url, "studies": studies, "monitors": monitors,
                     "retunes": retunes, "workers": workers})
        return
    out.print(f"daemon: [yellow]not reachable[/] — showing what {store.safe_url} holds")
    _print_studies(studies)
    print_monitors_and_retunes(monitors, retunes)
    print_workers(workers)


def worker_rows(store: Any) -> list[dict[str, Any]]:
    """Rows of ``hpod_workers`` as JSON; a worker silent for longer than the controller
    waits (WORKER_STALE_SECONDS) is shown as ``lost``."""
    import time

    from hpod.daemon.controller import WORKER_STALE_SECONDS
    from hpod.errors import StorageError

    try:
        rows = store.workers()
    except StorageError:
        return []
    now = time.time()
    result = []
    for w in rows:
        state = w.state
        if state in ("idle", "busy") and now - w.last_heartbeat > WORKER_STALE_SECONDS:
            state = "lost"
        result.append({"name": w.name, "node": w.node, "pid": w.pid, "state": state, "slots": w.slots,
                       "gpus": w.gpus, "studies": w.studies, "current": json.loads(w.current_json or "[]"),
                       "last_heartbeat": w.last_heartbeat, "started_at": w.started_at})
    return result


def print_workers(workers: list[dict[str, Any]]) -> None:
    """Workers: node, state, slots, the trials they run, last heartbeat."""
    if not workers:
        return
    t = Table(title="workers")
    for col in ("worker", "node", "state", "slots", "running", "last heartbeat"):
        t.add_column(col)
    for w in workers:
        running = ", ".join(f"{c.get('study')}#{c.get('trial')}" for c in w["current"]) or "–"
        slots = str(w["slots"]) + (f" (GPU {w['gpus']})" if w["gpus"] else "")
        t.add_row(w["name"], w["node"], w["state"], slots, running, _ago(w["last_heartbeat"]))
    out.print(t)


def print_monitors_and_retunes(monitors: list[dict[str, Any]], retunes: list[dict[str, Any]]) -> None:
    """Drift monitors (score, alarms) and study versions (reason, outcome, serving)."""
    if monitors:
        t = Table(title="monitors")
        for col in ("study", "monitor", "kind", "source", "score", "alarms", "last alarm", "last check", "error"):
            t.add_column(col)
        for m in monitors:
            t.add_row(m["study"], m["monitor"], str(m.get("kind") or "–"), str(m.get("source") or "–"),
                      _fmt(m.get("score")), str(m.get("alarms_total", 0)), _ago(m.get("last_alarm")),
                      _ago(m.get("last_check")), (m.get("error") or "")[:60])
        out.print(t)
    if retunes:
        t = Table(title="versions and retunes")
        for col in ("study", "version", "parent", "reason", "state", "outcome", "serving"):
            t.add_column(col)
        for r in retunes:
            history = {h["child"]: h for h in r.get("history", [])}
            serving = r.get("serving") or {}
            for v in r["versions"]:
                outcome = (history.get(v["name"]) or {}).get("outcome") or {}
                text = ("switched" if outcome.get("switched") else outcome.get("why") or "kept") if outcome \
                    else ("running" if r.get("active") == v["name"] else "–")
                served = f"trial {serving.get('trial')}" if serving.get("study") == v["name"] else ""
                t.add_row(r["study"], v["name"], str(v.get("parent") or "–"), str(v.get("reason") or "–"),
                          v["state"], text, served)
        out.print(t)


def _print_studies(studies: list[dict[str, Any]]) -> None:
    if not studies:
        out.print("no studies yet: `hpod run SPEC.yaml` starts one")
        return
    t = Table(title="studies")
    for col in ("study", "state", "done", "running", "failed", "pruned", "front", "hypervolume", "best", "energy",
                "last activity"):
        t.add_column(col)
    for s in studies:
        c = s["trials"]
        done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
        best = ", ".join(f"{k}={_fmt(v)}" for k, v in s["best"].items())
        t.add_row(s["name"], s["state"], f"{done}/{s['n_trials'] or '∞'}", str(c.get("RUNNING", 0)),
                  str(c.get("FAIL", 0)), str(c.get("PRUNED", 0)), str(s["pareto_front_size"]),
                  _fmt(s["hypervolume"]), best, f"{s['energy_spent_joules']:.4g} J", _ago(s["last_activity"]))
    out.print(t)
    _print_strategies(studies)


def _print_strategies(studies: list[dict[str, Any]]) -> None:
    """One line per study whose strategy keeps state (Lagrange multipliers, PBT progress)."""
    for s in studies:
        st = s.get("strategy") or {}
        if st.get("kind") == "scalarized":
            mu = ", ".join(f"μ[{k}]={_fmt(float(v))}" for k, v in (st.get("multipliers") or {}).items())
            out.print(f"{s['name']}: scalarized, λ={_fmt(st.get('cost_weight'))}"
                      + (f", Lagrange multipliers {mu}" if mu else ""))
        elif st.get("kind") == "pbt":
            medians = [m for m in st.get("median_by_generation") or [] if m is not None]
            trend = f", median {_fmt(medians[0])} → {_fmt(medians[-1])}" if medians else ""
            out.print(f"{s['name']}: pbt, generation {st.get('generation')}, population {st.get('population')}, "
                      f"{st.get('exploits', 0)} exploit steps{trend}")


def _records(store: Any, name: str, *, pareto_only: bool = False) -> list[dict[str, Any]]:
    from hpod.daemon.engine import trial_record
    from hpod.daemon.runner import study_records

    names, trials = study_records(store, name)
    recs = [trial_record(t, names) for t in trials]
    if pareto_only:
        front = set(_pareto_numbers(store, name, recs))
        recs = [r for r in recs if r["number"] in front]
    return recs


def _pareto_numbers(store: Any, name: str, recs: list[dict[str, Any]]) -> list[int]:
    import numpy as np

    from hpod.daemon.pareto import non_dominated_mask

    from hpod.spec import parse_spec

    row = store.get_study(name)
    spec = parse_spec(json.loads(row.spec_json))
    # The study's Optuna values: the objectives, or F alone for a scalarized study.
    targets = list(zip(spec.value_names, spec.directions))
    ok = [r for r in recs if r["feasible"] and r["values"] is not None]
    if not ok:
        return []
    pts = np.array([[r["values"][n] if d == "minimize" else -r["values"][n] for n, d in targets] for r in ok])
    return [r["number"] for r, m in zip(ok, non_dominated_mask(pts)) if m]


@app.command()
def trials(study: Annotated[str, typer.Argument(help="Study name.")], state_dir: StateDirOpt = None,
           storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """All trials of a study."""
    store, _ = _open_store(state_dir, storage)
    recs = _records(store, study)
    if as_json:
        _print_json(recs)
        return
    _print_records(recs, title=f"trials of {study}")


@app.command()
def pareto(study: Annotated[str, typer.Argument(help="Study name.")], state_dir: StateDirOpt = None,
           storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """The study's Pareto front: feasible, mutually non-dominated trials."""
    store, _ = _open_store(state_dir, storage)
    recs = _records(store, study, pareto_only=True)
    if as_json:
        _print_json(recs)
        return
    _print_records(recs, title=f"Pareto front of {study}")


def _print_pareto_table(store: Any, study: str) -> None:
    recs = _records(store, study, pareto_only=True)
    _print_records(recs, title=f"Pareto front of {study} ({len(recs)} trials)")
    _print_selected(store, study, recs)


#: metrics shown for the selected configuration when the objective reports them
_QUALITY_METRICS = ("rouge1", "rouge2", "rougeL", "bleu", "exact_match")


def _print_selected(store: Any, study: str, front: list[dict[str, Any]]) -> None:
    """The configuration a user would take (the front's knee) with its quality metrics."""
    if not front:
        return
    from hpod.daemon._selection import select_trial

    selection, _ = select_trial(store, study, policy="knee")
    if selection is None:
        return
    rec = next((r for r in front if r["number"] == selection.trial), None)
    if rec is None:
        return
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(rec["params"].items()))
    out.print(f"[bold]selected (knee of the front): trial {rec['number']}[/] — {params}")
    shown = {k: rec["metrics"][k] for k in _QUALITY_METRICS if k in rec["metrics"]}
    values = {**(rec["values"] or {}), **shown}
    out.print("  " + ", ".join(f"{k}={_fmt(v)}" for k, v in values.items()))


def _print_records(recs: list[dict[str, Any]], *, title: str) -> None:
    if not recs:
        out.print(f"{title}: none")
        return
    value_names = next((list(r["values"]) for r in recs if r["values"]), [])
    param_names = sorted({k for r in recs for k in r["params"]})
    t = Table(title=title)
    t.add_column("#", justify="right")
    t.add_column("state")
    for n in value_names:
        t.add_column(n, justify="right")
    for p in param_names:
        t.add_column(p, justify="right")
    t.add_column("feasible")
    t.add_column("energy method")
    for r in recs:
        vals = [_fmt(r["values"][n]) if r["values"] else "–" for n in value_names]
        params = [_fmt(r["params"].get(p)) for p in param_names]
        state = r["state"] if not r["fail_reason"] else f"FAIL: {r['fail_reason'][:40]}"
        method = (r["measurements"].get("energy_joules") or {}).get("method", "–")
        t.add_row(str(r["number"]), state, *vals, *params, "yes" if r["feasible"] else "no", method)
    out.print(t)


@app.command("export")
def export_cmd(
    study: Annotated[str, typer.Argument(help="Study name.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Export every trial of a study as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise UsageError(f"--format: expected csv or json (found {fmt!r})")
    store, _ = _open_store(state_dir, storage)
    recs = _records(store, study)
    if fmt == "json":
        text = json.dumps(recs, indent=2, default=str)
    else:
        buf = io.StringIO()
        value_names = sorted({k for r in recs if r["values"] for k in r["values"]})
        param_names = sorted({k for r in recs for k in r["params"]})
        metric_names = sorted({k for r in recs for k in r["metrics"]})
        meas_names = sorted({k for r in recs for k in r["measurements"]})
        w = csv.writer(buf)
        w.writerow(["number", "state", "feasible", "fail_reason"] + [f"value.{n}" for n in value_names]
                   + [f"param.{n}" for n in param_names] + [f"metric.{n}" for n in metric_names]
                   + [f"method.{n}" for n in meas_names])
        for r in recs:
            w.writerow([r["number"], r["state"], r["feasible"], r["fail_reason"] or ""]
                       + [(r["values"] or {}).get(n, "") for n in value_names]
                       + [r["params"].get(n, "") for n in param_names]
                       + [r["metrics"].get(n, "") for n in metric_names]
                       + [(r["measurements"].get(n) or {}).get("method", "") for n in meas_names])
        text = buf.getvalue()
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(output)
        err.print(f"wrote {len(recs)} trials to {output}")


def _load_command_modules() -> None:
    """Import ``hpod/daemon/_cli_*.py``: each adds its commands to ``app``.

    Keeps command groups (daemon, worker, report, compare…) in their own modules."""
    import importlib
    import pkgutil

    import hpod.daemon as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_cli_"):
            importlib.import_module(f"hpod.daemon.{info.name}")


_load_command_modules()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: user errors exit 2 with one message."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    # Library deprecation notices (transformers, peft) are for developers, not CLI users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        app(args=argv, standalone_mode=True)
    except UsageError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except HpodError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
