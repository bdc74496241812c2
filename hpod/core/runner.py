"""``hpod run``: one study in the foreground, with a live progress display.

Ctrl-C (SIGINT) or SIGTERM only sets a flag; the loop then stops the running
trials, records them as failed with reason ``interrupted`` and re-queues their
configurations, so the next ``hpod run`` of the same spec continues the study.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.live import Live
from rich.table import Table

from hpod.core.controller import Controller
from hpod.core.engine import Engine
from hpod.execution.executor import LocalExecutor, Slot, fork_server_preload
from hpod.spec import ResolvedStudy, spec_changes
from hpod.store import JobRow, Store

__all__ = ["RunOutcome", "pid_alive_on_this_node", "run_foreground"]


@dataclass
class RunOutcome:
    study: str
    interrupted: bool
    finished: int
    reason: str | None


def pid_alive_on_this_node(job: JobRow, lease_grace: float = 0.0) -> bool:
    """Whether the holder of ``job`` may still run it. Jobs held by a process on this
    node are judged by their pid; others by their lease."""
    import socket

    if job.state == "queued":
        return True
    holder = job.worker or ""
    node, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if node == socket.gethostname() and pid_text.isdigit():
        pid = int(pid_text)
        if pid == os.getpid():
            return False  # this process has just started: whatever it held before is gone
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return bool(job.lease_expires_at and job.lease_expires_at + lease_grace > time.time())


class _Flags:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.signal_name: str | None = None


def _progress_table(engine: Engine, elapsed: float, eta: float | None) -> Table:
    s = engine.summary()
    table = Table(title=f"hpod run — {engine.name}", show_header=False, expand=False)
    table.add_column(style="bold")
    table.add_column()
    budget = engine.spec.budget.n_trials
    table.add_row("trials done", f"{s.finished}" + (f" / {budget}" if budget else ""))
    table.add_row("running", str(s.running))
    table.add_row("failed", f"{s.objective_failures} (+{s.infra_failures} re-queued)" if s.infra_failures
                  else str(s.objective_failures))
    table.add_row("pruned", str(s.counts.get("PRUNED", 0)))
    table.add_row("Pareto front", str(len(s.pareto)))
    table.add_row("hypervolume (normalized, 0-1)", f"{s.hypervolume:.4f}" if s.hypervolume is not None else "–")
    for name, value in s.best.items():
        table.add_row(f"best {name}", f"{value:.6g}")
    table.add_row("energy spent", f"{s.energy_spent_joules:.4g} J")
    table.add_row("elapsed", _fmt_seconds(elapsed))
    table.add_row("ETA", _fmt_seconds(eta) if eta is not None else "–")
    table.add_row("sampler", f"{engine.sampler_name}")
    return table


def _fmt_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def run_foreground(resolved: ResolvedStudy, *, store: Store, state_dir: Path, slots: list[Slot],
                   console: Console | None = None, codecarbon: bool = True,
                   executor: LocalExecutor | None = None,
                   engine_hooks: Iterable[Callable[[Engine], None]] = ()) -> RunOutcome:
    """Run (or resume) a study until its budget is spent or the user interrupts.

    Trials run on ``slots`` of this machine, or on ``executor`` when one is given (a
    :class:`~hpod.execution.ray_executor.RayExecutor`: trials on a Ray cluster).
    ``engine_hooks`` are called with the study's engine once it is active (to add
    ``on_told`` callbacks, as the daemon does)."""
    console = console or Console(stderr=True)
    spec = resolved.spec
    if executor is None:
        preload = fork_server_preload([resolved.objective], slots)
        executor = LocalExecutor(store, state_dir, slots=slots, preload=preload, codecarbon=codecarbon) \
            if slots else None
    else:
        slots = executor.slots
    controller = Controller(store, state_dir, executor=executor)
    controller.engine_hooks.extend(engine_hooks)
    stored = store.get_study(spec.name, missing_ok=True)
    existed = stored is not None
    engine = controller.activate(spec, resolved=resolved, submitted_by="hpod run")
    # Tell what finished while no controller ran first: recover_orphans() takes a RUNNING
    # trial whose job is done but untold for an orphan and would drop its result.
    engine.collect()
    recovered = engine.recover_orphans(alive=pid_alive_on_this_node)
    engine.collect()
    if existed:
        s = engine.summary(refresh=True)
        console.print(f"resuming study [bold]{spec.name}[/]: {s.finished} trials finished"
                      + (f", {recovered} orphaned trial(s) re-queued" if recovered else ""))
        assert stored is not None
        # activate() refused a change to what the study keeps; say what else changed
        for change in spec_changes(json.loads(stored.spec_json), spec.model_dump(mode="json")):
            console.print(f"  changed since the last run: {change}", markup=False, highlight=False)
    if engine.sampler_reason:
        console.print(f"sampler: [bold]{engine.sampler_name}[/] — {engine.sampler_reason}")
    if not slots:
        console.print("no local slots: waiting for `hpod worker` processes to run the trials")
    if getattr(resolved.objective, "heavy", False):
        console.print("preparing the objective…")
    resolved.objective.prepare(state_dir / "cache")

    flags = _Flags()

    def handler(signum: int, frame: FrameType | None) -> None:
        flags.signal_name = signal.Signals(signum).name
        flags.stop.set()

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    durations: list[float] = []
    engine.on_told.append(lambda e, t, j: durations.append(t.duration.total_seconds()) if t.duration else None)
    interactive = console.is_terminal
    last_printed = -1

    def eta() -> float | None:
        remaining = engine.remaining_trials()
        if not durations or remaining is None:
            return None
        per = sum(durations[-20:]) / len(durations[-20:])
        return per * (remaining + engine.summary().running) / max(1, len(slots))

    live = Live(console=console, refresh_per_second=4, transient=False) if interactive else None
    try:
        if live is not None:
            live.start()
        while not flags.stop.is_set():
            busy = controller.step(studies=[spec.name])
            if spec.name not in controller.engines:
                break  # budget spent and nothing in flight: the controller finished it
            if live is not None:
                live.update(_progress_table(engine, time.monotonic() - started, eta()))
            else:
                s = engine.summary()
                if s.finished != last_printed:
                    last_printed = s.finished
                    hv = f"{s.hypervolume:.6g}" if s.hypervolume is not None else "–"
                    console.print(f"[{spec.name}] done {s.finished}/{spec.budget.n_trials or '∞'} "
                                  f"running {s.running} failed {s.objective_failures} front {len(s.pareto)} "
                                  f"hv {hv} elapsed {_fmt_seconds(time.monotonic() - started)}")
            if not busy:
                controller.wait(0.25 if executor is not None and executor.running else controller.idle_wait_seconds())
        interrupted = flags.stop.is_set()
        if interrupted:
            controller.stop(reason="interrupted")
            store.update_study(spec.name, state="paused", message=f"interrupted by {flags.signal_name}")
            reason: str | None = "interrupted"
        else:
            reason = engine.budget_exhausted()
        if live is not None:
            live.update(_progress_table(engine, time.monotonic() - started, 0 if not interrupted else None))
    finally:
        if live is not None:
            live.stop()
        for sig, h in old.items():
            signal.signal(sig, h)
        if executor is not None and executor.running:
            executor.stop(reason="interrupted")
        controller.close()
    return RunOutcome(study=spec.name, interrupted=interrupted, finished=engine.summary().finished, reason=reason)
