"""Runs trials in child processes on local slots (one per GPU, or N CPU slots).

Trial processes come from a ``forkserver`` that has already imported the heavy
libraries (torch, transformers, peft), so a trial starts in milliseconds instead of
the 5–13 s a cold interpreter needs, while each trial still gets its own process:
a CUDA OOM, a segfault or a kill costs that trial only. If the fork server itself
dies, multiprocessing starts a new one on the next trial.

The executor claims jobs from the store under a lease, renews the leases while the
trials run, and stores each outcome fenced by the lease token. It never talks to
Optuna: the engine tells Optuna what the jobs produced.

Concurrency: one executor per process, driven by one thread calling :meth:`poll`.
"""

from __future__ import annotations

import functools
import json
import logging
import multiprocessing
import os
import socket
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpod.errors import StorageError, UsageError
from hpod.execution._trial_child import exit_reason, trial_main
from hpod.monitors.gpu import gpu_count, gpu_snapshot
from hpod.objectives.base import FunctionObjective, memory_infeasibility
from hpod.spec import StudySpec, parse_spec, resolve
from hpod.store import JobRow, Store

__all__ = [
    "HEAVY_PRELOAD",
    "LocalExecutor",
    "RunningTrial",
    "Slot",
    "fork_server_preload",
    "parse_slots",
    "preload_for",
]

log = logging.getLogger(__name__)

HEAVY_PRELOAD = ("torch", "transformers", "peft")
#: What the process's fork server imports before forking a trial (hpod's own trial code
#: first); grows as studies with other objectives arrive.
_preloaded: list[str] = ["hpod.execution._trial_child", "hpod.objectives.base", "hpod.monitors.meters",
                         "hpod.execution._warm"]

#: (job, seed_index, step, values) -> stop?
ReportHandler = Callable[[JobRow, int, int, dict[str, float]], bool]
#: (job, seed_index just finished, its values) -> run another seed? (adaptive seeds)
SeedHandler = Callable[[JobRow, int, dict[str, float]], bool]
#: job parameter carrying a checkpoint to resume from (population-based training)
RESUME_KEY = "hpod.resume_from"
#: Device memory a trial cannot use for tensors (the CUDA context and kernels, which
#: ``torch.cuda.max_memory_reserved`` does not count), bytes: an allowance, not measured.
CUDA_CONTEXT_BYTES = 512 * 2**20


def _defining_module(objective: Any) -> str | None:
    """The importable module that defines ``objective`` (a user's function or class), or
    None for code that lives in a script's ``__main__`` or in hpod itself (preloaded)."""
    target = objective.func if isinstance(objective, FunctionObjective) else type(objective)
    module = getattr(target, "__module__", None)
    if not isinstance(module, str) or module in ("__main__", "builtins") or module.split(".")[0] == "hpod":
        return None
    return module


def preload_for(objective: Any) -> tuple[str, ...]:
    """Modules the fork server imports once, so that no trial process imports them again.

    The module that defines the objective (a user's ``package.module:callable`` or
    objective class) is always preloaded: with it come whatever it imports at module
    level (BoTorch, scikit-learn, ...), which a trial process would otherwise import
    afresh. An objective may name more modules itself (``preload``); heavy objectives
    without their own list get torch, transformers and peft.
    """

    modules: list[str] = []
    explicit = getattr(objective, "preload", None)
    if explicit:
        modules += list(explicit)
    elif getattr(objective, "heavy", False) and not isinstance(objective, FunctionObjective):
        modules += HEAVY_PRELOAD
    defining = _defining_module(objective)
    if defining is not None:
        modules.append(defining)
    return tuple(dict.fromkeys(modules))


def fork_server_preload(objectives: Iterable[Any] = (), slots: Iterable[Slot] = ()) -> tuple[str, ...]:
    """The one preload policy of every process that runs trials (``hpod run``, the
    daemon, ``hpod worker``, isolated runs): what each known objective asks for
    (:func:`preload_for`), plus the heavy stack on a machine with GPU slots, whose
    trials train models there. An objective first met later adds its own modules when
    its first trial starts (``LocalExecutor._preload``)."""
    modules: dict[str, None] = {}
    if any(slot.gpu_index is not None for slot in slots):
        modules.update(dict.fromkeys(HEAVY_PRELOAD))
    for objective in objectives:
        modules.update(dict.fromkeys(preload_for(objective)))
    return tuple(modules)


@dataclass(frozen=True)
class Slot:
    """Where a trial runs: ``gpu_index`` (physical NVML/CUDA index) or None for CPU."""

    name: str
    gpu_index: int | None = None


def parse_slots(gpus: str | None, cpu_slots: int | None) -> list[Slot]:
    """``--gpus 0,1`` → one slot per GPU (each an NVML index of a GPU this machine has;
    UsageError otherwise, before anything runs); otherwise ``cpu_slots`` CPU slots
    (default 1)."""
    if gpus:
        out: list[Slot] = []
        for raw in gpus.split(","):
            part = raw.strip()
            if not part.isdigit():

                raise UsageError(f"--gpus: expected comma-separated GPU indices like 0,1 (found {gpus!r})")
            if any(slot.gpu_index == int(part) for slot in out):
                raise UsageError(f"--gpus: GPU {int(part)} is given twice (found {gpus!r})")
            out.append(Slot(name=f"gpu{part}", gpu_index=int(part)))
        present = gpu_count()
        missing = [slot.gpu_index for slot in out if slot.gpu_index is not None and slot.gpu_index >= present]
        if missing:
            seen = f"NVML sees {present} GPU(s), indices 0-{present - 1}" if present else \
                "NVML sees no GPU: no device, driver or pynvml"
            raise UsageError(f"--gpus: GPU {missing[0]} is not on this machine ({seen}); use --cpu-slots N to run "
                             "trials on the CPU")
        return out
    n = 1 if cpu_slots is None else cpu_slots
    if n < 0:

        raise UsageError(f"--cpu-slots must be >= 0 (found {n})")
    return [Slot(name=f"cpu{i}") for i in range(n)]


@dataclass
class RunningTrial:
    job: JobRow
    slot: Slot
    process: Any
    conn: Any
    started_at: float
    timeout: float | None
    kill_reason: str | None = None
    terminated_at: float | None = None
    #: further GPU slots a multi-GPU trial holds (``resources.gpus_per_trial`` > 1)
    extra_slots: list[Slot] = field(default_factory=list)


@dataclass
class _StudyInfo:
    spec: StudySpec
    fixed: dict[str, Any]
    required: list[str]
    objective: Any = None
    loaded_at: float = field(default_factory=time.monotonic)


@contextmanager
def _without_main() -> Iterator[None]:
    """Hide the caller's ``__main__`` while a trial process starts.

    multiprocessing re-imports the parent's main script in every forkserver child
    (spawn semantics); for ``hpod`` or pytest that costs 0.1–0.5 s per trial and
    runs code that trials never need. The trial entry point is importable by
    module name, so the child needs no main module at all.
    """
    real = sys.modules.get("__main__")
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        if real is not None:
            sys.modules["__main__"] = real


def _context(preload: Iterable[str]) -> Any:
    """The fork-server context, its server importing ``preload`` (and hpod's trial code).

    The fork server is one per process and imports its modules when it starts (with
    the first trial). Asked for modules it has not imported, before it started, the list
    grows; once it runs, :func:`_restart_forkserver` starts a new one when no trial runs.
    """
    ctx = multiprocessing.get_context("forkserver")
    _preloaded.extend(m for m in preload if m not in _preloaded)
    # Always: with nothing asked beyond hpod's own trial code the server must still import
    # that (multiprocessing's default preloads only ``__main__``, which trials never need).
    ctx.set_forkserver_preload(list(_preloaded))
    return ctx


def _forkserver_running() -> bool:
    from multiprocessing import forkserver

    return getattr(getattr(forkserver, "_forkserver", None), "_forkserver_pid", None) is not None


def _restart_forkserver() -> bool:
    """Stop the running fork server, so the next trial starts one that imports the current
    preload list. Only call it with no trial process of this process alive: a trial's exit
    status comes through the server that forked it. False when the installed Python
    lacks the (private) ``ForkServer._stop``."""
    from multiprocessing import forkserver

    stop = getattr(getattr(forkserver, "_forkserver", None), "_stop", None)
    if stop is None:
        return False
    stop()
    return True


class LocalExecutor:
    """Claims queued jobs into free local slots and runs them as child processes."""

    def __init__(self, store: Store, state_dir: Path, *, slots: list[Slot], worker_name: str | None = None,
                 lease_seconds: float = 30.0, heartbeat_seconds: float = 5.0, preload: Iterable[str] = (),
                 codecarbon: bool = True):
        if lease_seconds <= heartbeat_seconds:
            raise ValueError(f"lease_seconds ({lease_seconds}) must exceed heartbeat_seconds ({heartbeat_seconds})")
        self.store = store
        self.state_dir = state_dir
        self.slots = slots
        self.worker_name = worker_name or f"{socket.gethostname()}:{os.getpid()}"
        self.lease_seconds = lease_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.codecarbon = codecarbon
        self.ctx = _context(preload)
        self.running: dict[int, RunningTrial] = {}
        self.report_handlers: dict[str, ReportHandler] = {}
        self.seed_handlers: dict[str, SeedHandler] = {}
        self.on_finished: list[Callable[[JobRow, dict[str, Any] | None, str | None], None]] = []
        self._studies: dict[str, _StudyInfo] = {}
        self._last_heartbeat = 0.0
        self._pending_results: list[tuple[JobRow, dict[str, Any] | None, str | None]] = []
        self._restart_pending = False
        #: claims made, and those that found no queued job (each costs a transaction)
        self.claims = 0
        self.empty_claims = 0
        #: whether the last :meth:`claim` found the queue empty
        self.last_claim_empty = False

    # ------------------------------------------------------------------ capacity
    def free_slots(self) -> list[Slot]:
        busy = {rt.slot for rt in self.running.values()}
        busy.update(s for rt in self.running.values() for s in getattr(rt, "extra_slots", ()))
        return [s for s in self.slots if s not in busy]

    def running_by_study(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rt in self.running.values():
            out[rt.job.study] = out.get(rt.job.study, 0) + 1
        return out

    # ------------------------------------------------------------------ main step
    def poll(self, *, studies: Iterable[str] | None = None, start_new: bool = True,
             exclude_studies: Iterable[str] | None = None) -> list[JobRow]:
        """Handle messages and exits of running trials, renew leases, store pending
        results, and (if ``start_new``) claim jobs into free slots. Returns the jobs
        that finished in this step."""
        finished = self._reap()
        self._flush_results()
        now = time.monotonic()
        if now - self._last_heartbeat >= self.heartbeat_seconds:
            self._renew()
            self._last_heartbeat = now
        if start_new:
            self.claim(studies=studies, exclude_studies=exclude_studies)
        return finished

    def claim(self, *, studies: Iterable[str] | None = None, exclude_studies: Iterable[str] | None = None,
              max_claims: int | None = None) -> int:
        """Claim jobs into free slots and start them: one per free slot, at most
        ``max_claims`` (None: until the queue is empty or the slots are full). Returns how
        many were claimed; ``last_claim_empty`` says whether a claim found no job."""
        study_list = list(studies) if studies is not None else None
        claimed = 0
        self.last_claim_empty = False
        for slot in self.free_slots():
            if max_claims is not None and claimed >= max_claims:
                break
            if slot not in self.free_slots():
                continue  # taken by a multi-GPU trial started in this round
            announced: list[JobRow] = []  # the claim stored the job's trial_started event
            try:
                job = self.store.claim_job(self.worker_name, lease_seconds=self.lease_seconds,
                                           studies=study_list, exclude_studies=exclude_studies,
                                           event=functools.partial(self._started_at_claim, slot=slot,
                                                                   announced=announced))
            except StorageError as exc:
                log.warning("cannot claim a job: %s", exc)
                break
            self.claims += 1
            if job is None:
                self.empty_claims += 1
                self.last_claim_empty = True
                break
            claimed += 1
            if self._start(job, slot, announced=bool(announced)) is False:
                break  # the job waits for more free GPUs: it keeps its place in the queue
        return claimed

    def _study(self, name: str) -> _StudyInfo:
        info = self._studies.get(name)
        if info is None or time.monotonic() - info.loaded_at > 30:
            try:
                row = self.store.get_study(name)
            except StorageError:
                if info is not None:
                    return info  # an outage: the spec read 30 s ago is still good
                raise
            assert row is not None
            spec = parse_spec(json.loads(row.spec_json))
            resolved = resolve(spec)
            required = list(spec.objective_names) + [c.metric for c in spec.parsed_constraints()]
            info = _StudyInfo(spec=spec, fixed=resolved.fixed, required=required, objective=resolved.objective)
            if name not in self._studies:
                self._preload(preload_for(resolved.objective))
            self._studies[name] = info
        return info

    def _preload(self, modules: Iterable[str]) -> None:
        """Have the fork server import ``modules`` (a study's objective module), restarting
        it when it already runs without them and no trial of this executor is running."""
        missing = [m for m in modules if m not in _preloaded]
        if not missing:
            return
        running = _forkserver_running()
        _context(missing)
        if running:
            self._restart_pending = True
        self._restart_if_idle()

    def warm_up(self, objective: Any = None) -> None:
        """Have the fork server import ``objective``'s modules now, while the study is
        still preparing (a base model can take minutes), so its first trial does not
        also wait for them: starts the server, or restarts it to import them when no
        trial runs (otherwise they are imported at the next restart, as before).
        Without an objective: start the server with what it preloads already (a worker
        at start-up, before any job: its first trial then forks at once)."""
        from multiprocessing import forkserver

        if objective is not None:
            self._preload(preload_for(objective))
        if not self._restart_pending:
            with _without_main():
                forkserver.ensure_running()

    def _restart_if_idle(self) -> None:
        if self._restart_pending and not self.running and _restart_forkserver():
            log.info("fork server restarted to preload %s", ", ".join(_preloaded))
            self._restart_pending = False

    def artifact_dir(self, study: str, trial_number: int) -> Path:
        return self.state_dir / "artifacts" / study / f"trial-{trial_number}"

    def _payload(self, job: JobRow, slot: Slot) -> tuple[dict[str, Any], StudySpec] | None:
        """What the trial child needs to run ``job`` (and the study's spec); None when
        the study's spec cannot be loaded (the job then fails with that reason)."""
        try:
            info = self._study(job.study)
        except Exception as exc:  # a broken spec fails its job, not the executor
            self._pending_results.append((job, None, f"cannot load study spec: {exc}"))
            return None
        spec = info.spec
        params, resume_from = self._params(info, job)
        payload = {
            "study": job.study,
            "trial_number": job.trial_number,
            "objective": {"name": spec.objective.name, "params": spec.objective.params},
            "params": params,
            # Seeds 0..k-1 for every configuration: common random numbers make
            # configurations comparable.
            "seeds": list(range(spec.seeds)),
            "artifact_dir": str(self.artifact_dir(job.study, job.trial_number)),
            "cache_dir": str(self.state_dir / "cache"),
            "gpu_index": slot.gpu_index,
            "required": info.required,
            "codecarbon": self.codecarbon,
            "resume_from": resume_from,
            "adaptive_seeds": spec.seeds_adaptive is not None,
            # Without a pruner nobody answers a report: the trial keeps its reports (they
            # go up with the result) instead of waiting for a "go on" at each one.
            "ask_on_report": job.study in self.report_handlers,
            # Data parallel: ranks of the trial (one per device, or CPU processes over gloo).
            "world_size": spec.resources.world_size,
        }
        return payload, spec

    @staticmethod
    def _params(info: _StudyInfo, job: JobRow) -> tuple[dict[str, Any], Any]:
        """The trial's parameters (the study's fixed ones and the job's), and the checkpoint
        it resumes from (population-based training) or None."""
        params = {**info.fixed, **json.loads(job.params_json)}
        return params, params.pop(RESUME_KEY, None)

    def _started_event(self, job: JobRow, slots: list[Slot], params: dict[str, Any]) -> dict[str, Any]:
        """The ``trial_started`` event of ``job`` on ``slots`` (keyword arguments of
        :meth:`Store.append_event`)."""
        return {"kind": "trial_started", "study": job.study, "trial_number": job.trial_number, "handled": True,
                "payload": {"worker": self.worker_name, "slot": ",".join(s.name for s in slots),
                            "attempt": job.attempt, "params": params}}

    def _started_at_claim(self, job: JobRow, slot: Slot, announced: list[JobRow]) -> dict[str, Any] | None:
        """The ``trial_started`` event to store with the claim of ``job`` when nothing
        between claim and start can stop it (a CPU trial of a study whose spec this
        executor holds: no GPUs to reserve, no device memory to refuse); else None and
        :meth:`_start` appends it once the trial process runs. Appends ``job`` to
        ``announced`` when it returns the event."""
        info = self._studies.get(job.study)
        if info is None or slot.gpu_index is not None or info.spec.resources.gpus_per_trial > 0 \
                or time.monotonic() - info.loaded_at > 30:
            return None
        announced.append(job)
        return self._started_event(job, [slot], self._params(info, job)[0])

    def _reserve_gpus(self, job: JobRow, slot: Slot, need: int) -> list[Slot] | None:
        """The further GPU slots a trial of ``need`` GPUs takes beside ``slot``; None when
        it cannot start now (handed back to the queue, or failed when it never can)."""
        gpu_slots = [s for s in self.slots if s.gpu_index is not None]
        if need > len(gpu_slots):
            have = f"{len(gpu_slots)} GPU slot(s)" if gpu_slots else "no GPU slots (CPU slots only)"
            self._pending_results.append((job, None, f"infeasible: resources.gpus_per_trial is {need} but this "
                                                     f"executor has {have}"))
            return None
        others = [s for s in self.free_slots() if s != slot and s.gpu_index is not None]
        if len(others) < need - 1:
            try:
                self.store.unclaim_job(job.id, job.lease_token or "")  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
            except StorageError as exc:  # its lease expires and the controller re-queues it
                log.warning("cannot hand job %s back: %s", job.id, exc)
            return None
        return others[: need - 1]

    def _memory_refusal(self, study: str, params: dict[str, Any], gpu_indices: list[int]) -> str | None:
        """Why ``params`` cannot fit on the GPUs reserved for it (the objective's memory
        estimate against the smallest device's memory per NVML, less
        :data:`CUDA_CONTEXT_BYTES`), or None: it fits, there is no GPU, NVML cannot say,
        or the objective cannot estimate."""
        if not gpu_indices:
            return None
        readings = {r.index: r.memory_total_bytes for r in gpu_snapshot(gpu_indices)}
        if any(readings.get(i) is None for i in gpu_indices):
            return None
        index = min(gpu_indices, key=lambda i: float(readings[i] or 0.0))
        total = float(readings[index] or 0.0)
        info = self._study(study)
        refusal = memory_infeasibility(
            info.objective, params, world_size=info.spec.resources.world_size, on_gpu=True,
            limit_bytes=total - CUDA_CONTEXT_BYTES,
            limit_source=f"GPU {index}: {total / 2**30:.2f} GiB per NVML less {CUDA_CONTEXT_BYTES / 2**30:.2f} GiB "
                         "for the CUDA context")
        return refusal[0] if refusal is not None else None

    def _start(self, job: JobRow, slot: Slot, *, announced: bool = False) -> bool | None:
        """Start ``job``'s trial process on ``slot`` (``announced``: its trial_started
        event was stored with the claim). False: it waits for more free GPUs (handed back
        to the queue); None: it cannot start (its failure is pending)."""
        prepared = self._payload(job, slot)
        if prepared is None:
            return None
        need = prepared[1].resources.gpus_per_trial
        extra: list[Slot] = []
        if need > 1 or (need == 1 and slot.gpu_index is None):
            reserved = self._reserve_gpus(job, slot, need)
            if reserved is None:
                failed = any(pending[0].id == job.id for pending in self._pending_results)
                return None if failed else False
            extra = reserved
        payload, spec = prepared
        payload["gpu_indices"] = [s.gpu_index for s in [slot, *extra] if s.gpu_index is not None]
        refusal = self._memory_refusal(job.study, payload["params"], payload["gpu_indices"])
        if refusal is not None:
            self._pending_results.append((job, None, refusal))
            return None
        self._restart_if_idle()
        params = payload["params"]
        parent_conn, child_conn = self.ctx.Pipe()
        proc = self.ctx.Process(target=trial_main, args=(payload, child_conn), daemon=True,
                                name=f"hpod-trial-{job.study}-{job.trial_number}")
        with _without_main():
            proc.start()
        child_conn.close()
        assert job.id is not None, "a claimed job is a stored row"
        self.running[job.id] = RunningTrial(job=job, slot=slot, process=proc, conn=parent_conn,
                                            started_at=time.monotonic(),
                                            timeout=spec.budget.trial_timeout_seconds, extra_slots=extra)
        if announced:  # stored with the claim
            return True
        try:
            self.store.append_event(**self._started_event(job, [slot, *extra], params))
        except StorageError as exc:
            log.warning("cannot record trial_started: %s", exc)
        return True

    def _reap(self) -> list[JobRow]:
        done: list[JobRow] = []
        for job_id, rt in list(self.running.items()):
            outcome = self._drain(rt)
            if outcome is None:
                if rt.timeout is not None and rt.kill_reason is None and \
                        time.monotonic() - rt.started_at > rt.timeout:
                    self._kill(rt, f"timeout: trial ran longer than {rt.timeout:g} s")
                if rt.terminated_at is not None and time.monotonic() - rt.terminated_at > 5:
                    rt.process.kill()
                if rt.process.is_alive():
                    continue
                outcome = self._drain(rt)  # a last message may have arrived before exit
            if outcome is None:
                outcome = (None, rt.kill_reason or exit_reason(rt.process.exitcode))
            rt.process.join(timeout=1)
            rt.conn.close()
            del self.running[job_id]
            result, reason = outcome
            if rt.kill_reason and result is None:
                reason = rt.kill_reason
            self._pending_results.append((rt.job, result, reason))
            done.append(rt.job)
        return done

    def _drain(self, rt: RunningTrial) -> tuple[dict[str, Any] | None, str | None] | None:
        try:
            while rt.conn.poll():
                msg = rt.conn.recv()
                if msg[0] == "report":
                    _, seed_index, step, values = msg
                    stop = False
                    handler = self.report_handlers.get(rt.job.study)
                    if handler is not None:
                        try:
                            stop = bool(handler(rt.job, seed_index, step, values))
                        except Exception:  # a pruner bug must not kill trials
                            log.exception("report handler failed")
                    rt.conn.send(stop)
                elif msg[0] == "seed_done":
                    _, seed_index, values = msg
                    more = True
                    seed_handler = self.seed_handlers.get(rt.job.study)
                    if seed_handler is not None:
                        try:
                            more = bool(seed_handler(rt.job, seed_index, values))
                        except Exception:  # a bug here must not kill trials: run every seed
                            log.exception("seed handler failed")
                    rt.conn.send(more)
                elif msg[0] == "result":
                    return msg[1], None
                elif msg[0] == "error":
                    return None, msg[1]
        except (EOFError, OSError, BrokenPipeError):
            return None
        return None


    def _kill(self, rt: RunningTrial, reason: str) -> None:
        rt.kill_reason = reason
        rt.terminated_at = time.monotonic()
        if rt.process.is_alive():
            rt.process.terminate()

    def _renew(self) -> None:
        tokens = {jid: rt.job.lease_token for jid, rt in self.running.items() if rt.job.lease_token}
        try:
            held = self.store.renew_leases(self.worker_name, tokens, lease_seconds=self.lease_seconds)
        except StorageError as exc:
            log.warning("cannot renew leases (will retry): %s", exc)
            return
        for jid in set(tokens) - held:
            rt = self.running.get(jid)
            if rt is not None and rt.kill_reason is None:
                log.warning("lease on job %s was lost; stopping its trial", jid)
                self._kill(rt, "worker_lost")

    def _flush_results(self) -> None:
        """Store outcomes; on a database outage keep them and retry on the next poll."""
        remaining = []
        for job, result, reason in self._pending_results:
            try:
                stored = self.store.finish_job(job.id, job.lease_token or "", result=result,  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                                               fail_reason=None if result is not None else reason)
            except StorageError as exc:
                log.warning("cannot store result of job %s (will retry): %s", job.id, exc)
                remaining.append((job, result, reason))
                continue
            if not stored:
                log.warning("job %s: lease lost before the result was stored; result dropped", job.id)
            for cb in self.on_finished:
                cb(job, result, reason)
        self._pending_results = remaining

    def wait(self, timeout: float, *, extra: Iterable[Any] = ()) -> None:
        """Sleep until a running trial sends a message or exits, one of ``extra`` (file
        descriptors or objects with ``fileno``) is readable, or ``timeout`` passes."""
        from multiprocessing.connection import wait

        handles: list[Any] = list(extra)
        for rt in self.running.values():
            handles += [rt.conn, rt.process.sentinel]
        if handles:
            wait(handles, timeout=timeout)
        else:
            time.sleep(timeout)

    # ------------------------------------------------------------------ stopping
    def stop(self, *, reason: str, grace_seconds: float = 0.0, should_abort: Callable[[], bool] | None = None) -> None:
        """Wait up to ``grace_seconds`` for running trials, then terminate the rest and
        release their jobs with ``reason`` (they are re-queued by the engine)."""
        deadline = time.monotonic() + grace_seconds
        while self.running and time.monotonic() < deadline:
            if should_abort is not None and should_abort():
                break
            self.poll(start_new=False)
            time.sleep(0.05)
        for rt in self.running.values():
            self._kill(rt, reason)
        end = time.monotonic() + 10
        while any(rt.process.is_alive() for rt in self.running.values()) and time.monotonic() < end:
            time.sleep(0.05)
        for rt in self.running.values():
            if rt.process.is_alive():
                rt.process.kill()
            rt.process.join(timeout=2)
        jobs = [rt.job.id for rt in self.running.values() if rt.job.id is not None]
        self.running.clear()
        self._flush_results()
        for _ in range(20):
            try:
                self.store.release_jobs(jobs, reason=reason)
                break
            except StorageError:
                time.sleep(0.5)
