"""``hpod worker``: run trials of a shared database on this node (added to ``hpod.cli.commands.app``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from hpod.cli._common import app, err
from hpod.daemon.config import log_format
from hpod.daemon.worker import Worker, default_worker_name
from hpod.errors import UsageError
from hpod.execution.executor import fork_server_preload, parse_slots
from hpod.store import Store, default_state_dir, private_state_dir, retry_storage

__all__ = ["worker"]


@app.command()
def worker(
    storage: Annotated[str | None, typer.Option(
        "--storage", help="Database URL shared with the controller, e.g. postgresql+psycopg://hpod@db:5432/hpod "
                          "(default: $HPOD_STORAGE).")] = None,
    gpus: Annotated[str | None, typer.Option("--gpus", help="GPU indices, one trial per GPU, e.g. 0,1.")] = None,
    cpu_slots: Annotated[int | None, typer.Option("--cpu-slots", min=1, help="Trials at once on CPU "
                                                     "(default 1 without --gpus).")] = None,
    studies: Annotated[str | None, typer.Option("--studies", envvar="HPOD_STUDIES", help="Only run trials of "
                                                   "these studies (comma-separated names).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Unique worker name (default NODE:PID).")] = None,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", min=1.0, help="A trial's lease: this long "
                                                 "after the last renewal a silent worker's trial is failed as "
                                                 "worker_lost and re-queued.")] = 30.0,
    heartbeat_seconds: Annotated[float | None, typer.Option(
        "--heartbeat-seconds", min=0.1, help="How often leases and the worker row are renewed "
                                             "(default: a sixth of the lease, at most 5 s).")] = None,
    poll_seconds: Annotated[float, typer.Option("--poll-seconds", min=0.01, help="How often an idle worker looks "
                                                "for queued trials.")] = 0.5,
    grace_seconds: Annotated[float, typer.Option("--grace-seconds", min=0.0, help="On SIGTERM, how long running "
                                                 "trials may take to finish before they are handed back.")] = 300.0,
    state_dir: Annotated[Path | None, typer.Option(
        "--state-dir",
        help="Artifacts and model cache of this worker (default: $HPOD_STATE_DIR or the user state dir).")] = None,
    no_codecarbon: Annotated[bool, typer.Option("--no-codecarbon", help="Skip CodeCarbon energy tracking.")] = False,
    startup_wait_seconds: Annotated[float, typer.Option(
        "--startup-wait-seconds", min=0.0, help="How long to wait for an unreachable database at start.")] = 300.0,
) -> None:
    """Claim and run trials from a shared database (PostgreSQL for several nodes) until SIGTERM."""

    url = storage or os.environ.get("HPOD_STORAGE")
    if not url:
        raise UsageError("--storage: a worker needs the controller's database URL "
                         "(e.g. postgresql+psycopg://hpod@db-host:5432/hpod), or set HPOD_STORAGE")
    if gpus and cpu_slots is not None:
        raise UsageError(f"--gpus and --cpu-slots: give one of them (found --gpus {gpus} --cpu-slots {cpu_slots})")
    heartbeat = heartbeat_seconds if heartbeat_seconds is not None else min(5.0, lease_seconds / 6)
    if heartbeat >= lease_seconds:
        raise UsageError(f"--heartbeat-seconds must be less than --lease-seconds ({lease_seconds:g}); "
                         f"found {heartbeat:g}")
    slots = parse_slots(gpus, cpu_slots)
    # An empty HPOD_STUDIES= in the unit's environment file means: every study.
    study_names = [s.strip() for s in studies.split(",") if s.strip()] if studies and studies.strip() else None
    if studies and studies.strip() and not study_names:
        raise UsageError(f"--studies: expected comma-separated study names (found {studies!r})")
    worker_name = name or default_worker_name()
    logging.basicConfig(level=logging.INFO, format=log_format())
    sd = default_state_dir(state_dir)
    private_state_dir(sd)
    # A small pool: one loop thread plus the objective-preparing thread.
    store = retry_storage(lambda: Store(url, pool_size=2, create=False, application_name=f"hpod-worker {worker_name}"),
                          what=f"worker {worker_name}: opening {url.split('@')[-1]}",
                          deadline_seconds=startup_wait_seconds)
    w = Worker(store, sd, slots=slots, name=worker_name, studies=study_names, lease_seconds=lease_seconds,
               heartbeat_seconds=heartbeat, poll_seconds=poll_seconds, grace_seconds=grace_seconds,
               codecarbon=not no_codecarbon, preload=fork_server_preload(slots=slots))
    err.print(f"worker {worker_name}: {len(slots)} slot(s) ({', '.join(s.name for s in slots)}) on "
              f"{store.safe_url}" + (f", studies {', '.join(study_names)}" if study_names else ""))
    stats = w.run()
    store.close()
    err.print(f"worker {worker_name} stopped: {stats.finished} trial(s) run, {stats.released} handed back, "
              f"{stats.empty_claims} claim(s) found no job")
