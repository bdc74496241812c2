"""The core commands: ``run``, ``trials``, ``pareto``, ``export``."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from hpod.cli._common import (
    JsonOpt,
    StateDirOpt,
    StorageOpt,
    _print_json,
    app,
    err,
)
from hpod.cli._render import (
    print_pareto_table,
    print_records,
)
from hpod.cli._storage import _named_url, _open_store
from hpod.cli.client import try_status
from hpod.core.runner import run_foreground
from hpod.core.views import trial_records
from hpod.daemon.config import ExecutorConfig
from hpod.errors import UsageError, first_validation_issue
from hpod.execution.executor import LocalExecutor, parse_slots
from hpod.execution.ray_executor import RayExecutor, connect_ray
from hpod.spec import load_spec, resolve
from hpod.store import same_database

#: the states of a study the daemon is running (or will again, when resumed)
_DAEMON_ACTIVE = ("running", "queued", "paused")


@app.command()
def run(
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC.yaml", help="Study spec (YAML).")],
    n_trials: Annotated[int | None, typer.Option("--n-trials", min=1, help="Override budget.n_trials.")] = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
    cpu_slots: Annotated[int | None, typer.Option(
        "--cpu-slots", min=0,
        help="Trials at once on CPU (0: controller only, remote `hpod worker`s run the trials).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices, one trial per GPU, e.g. 0,1.")] = None,
    no_codecarbon: Annotated[bool, typer.Option("--no-codecarbon", help="Skip CodeCarbon energy tracking.")] = False,
    executor: Annotated[str, typer.Option(
        "--executor", help="Where trials run: local (this machine's slots) or ray (a Ray cluster; "
                           "pip install hpod[ray]).")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="With --executor ray: auto (the cluster this node belongs to), HOST:PORT of "
                              "its head, or ray://HOST:10001 (Ray Client). Default auto.")] = None,
) -> None:
    """Run a study in the foreground (resumes an unfinished study of the same name)."""

    ray_config = _ray_executor_config(executor, ray_address, gpus=gpus, cpu_slots=cpu_slots)
    spec = load_spec(spec_path)
    if n_trials is not None:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"n_trials": n_trials})})
    resolved = resolve(spec)
    resolved.objective.validate()
    slots = parse_slots(gpus, cpu_slots) if ray_config is None else []
    _refuse_a_daemon_study(spec.name, state_dir, storage or spec.storage)
    if ray_config is not None:
        # Connect before anything is written: an unreachable cluster leaves no study behind.
        connect_ray(ray_config.address, namespace=ray_config.namespace)
    store, sd = _open_store(state_dir, storage or spec.storage, create=True)
    trials_executor: LocalExecutor | None = None
    if ray_config is not None:
        trials_executor = RayExecutor(store, sd, address=ray_config.address, namespace=ray_config.namespace,
                                      codecarbon=not no_codecarbon)
        err.print(f"executor: Ray cluster at {ray_config.address} ({len(trials_executor.slots)} trial slots)")
    outcome = run_foreground(resolved, store=store, state_dir=sd, slots=slots, console=err,
                             codecarbon=not no_codecarbon, executor=trials_executor)
    if outcome.interrupted:
        err.print(f"interrupted: {outcome.finished} trials kept; run the same command to continue.")
        raise typer.Exit(130)
    print_pareto_table(store, spec.name)


def _refuse_a_daemon_study(name: str, state_dir: Path | None, storage: str | None) -> None:
    """A study the daemon serving this database is running has one controller: the
    daemon. A second one (this command) would tell the same trials (a traceback) and
    wait on trials the daemon's slots run; it is refused before anything is written."""
    status = try_status(state_dir, quiet=True)
    if status is None or not same_database(str(status.get("storage") or ""), _named_url(state_dir, storage)):
        return
    for study in status.get("studies") or []:
        if study.get("name") == name and study.get("state") in _DAEMON_ACTIVE:
            raise UsageError(f"study {name!r} is {study['state']} in the hpod daemon serving this database; "
                             f"follow it with `hpod status`, or `hpod cancel {name}` before running it here")


def _ray_executor_config(executor: str, ray_address: str | None, *, gpus: str | None,
                         cpu_slots: int | None) -> ExecutorConfig | None:
    """The Ray executor's settings for ``--executor ray`` (the daemon's ``executor``
    setting, validated the same way), None for ``local``; raises UsageError (exit 2)."""
    if executor not in ("local", "ray"):
        raise UsageError(f"--executor: expected local or ray (found {executor!r})")
    if executor == "local":
        if ray_address is not None:
            raise UsageError("--ray-address: only with --executor ray")
        return None
    for flag, value in (("--gpus", gpus), ("--cpu-slots", cpu_slots)):
        if value is not None:
            raise UsageError(f"{flag}: not with --executor ray (the Ray cluster places trials; a study asks for "
                             "devices with resources.gpus_per_trial)")
    try:
        return ExecutorConfig.model_validate({"kind": "ray", "address": ray_address or "auto"})
    except ValidationError as exc:
        raise UsageError(f"--ray-address: {first_validation_issue(exc).message} (found {ray_address!r})") from None


@app.command()
def trials(study: Annotated[str, typer.Argument(help="Study name.")], state_dir: StateDirOpt = None,
           storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """All trials of a study."""
    store, _ = _open_store(state_dir, storage)
    recs = trial_records(store, study)
    if as_json:
        _print_json(recs)
        return
    print_records(recs, title=f"trials of {study}")


@app.command()
def pareto(study: Annotated[str, typer.Argument(help="Study name.")], state_dir: StateDirOpt = None,
           storage: StorageOpt = None, as_json: JsonOpt = False) -> None:
    """The study's Pareto front: feasible, mutually non-dominated trials."""
    store, _ = _open_store(state_dir, storage)
    recs = trial_records(store, study, pareto_only=True)
    if as_json:
        _print_json(recs)
        return
    print_records(recs, title=f"Pareto front of {study}")


@app.command("export")
def export_cmd(
    study: Annotated[str, typer.Argument(help="Study name.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or json.")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    state_dir: StateDirOpt = None,
    storage: StorageOpt = None,
) -> None:
    """Export every trial of a study as CSV or JSON."""
    if fmt not in ("csv", "json"):
        raise UsageError(f"--format: expected csv or json (found {fmt!r})")
    store, _ = _open_store(state_dir, storage)
    recs = trial_records(store, study)
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


