"""The controller: drives the engines of active studies over one store.

Each :meth:`Controller.step` tells Optuna what finished, expires lost leases (the
trial is failed with reason ``worker_lost`` and its configuration re-queued),
asks the samplers for as many configurations as there are idle slots — local ones
and those of remote workers heartbeating in the ``hpod_workers`` table — and lets
the local executor (if any) claim and run jobs. ``hpod run`` uses it for one study;
the daemon uses it for every active study, sharing the slots fairly (the study
with the fewest running trials relative to its priority asks first).

Concurrency: one controller per database is the rule (it is the only writer of
trial outcomes); it is driven by one thread.
"""

from __future__ import annotations

import json
import logging
import select
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from hpod.core.engine import Engine
from hpod.errors import StorageError, StudyBusy
from hpod.execution.executor import LocalExecutor
from hpod.spec import ResolvedStudy, StudySpec, parse_spec, resolve
from hpod.store import RESULTS_CHANNEL, JobListener, Store, worker_state

__all__ = ["Controller"]

log = logging.getLogger(__name__)

#: A randomly sampled study whose trials' recent median run time is under this many
#: seconds gets jobs queued ahead for remote workers (see ``Controller._queue_ahead``).
QUEUE_AHEAD_BELOW_SECONDS = 5.0
#: Longest idle wait on the results listener (``Controller.wait``).
IDLE_WAIT_SECONDS = 0.5


@dataclass
class _Active:
    engine: Engine
    paused: bool = False


class Controller:
    """Engines of the active studies, the local executor, and lease expiry."""

    def __init__(self, store: Store, state_dir: Path, *, executor: LocalExecutor | None,
                 remote_workers: bool = True, lease_check_seconds: float = 2.0):
        self.store = store
        self.state_dir = state_dir
        self.executor = executor
        self.remote_workers = remote_workers
        self.lease_check_seconds = lease_check_seconds
        self.engines: dict[str, _Active] = {}
        self._last_lease_check = 0.0
        self._last_collect = -float("inf")
        self._results_pending = False
        self._remote_capacity = (0.0, 0)
        self._results_listener: JobListener | None = None
        self._listener_failed = False
        self._results_notified = False
        #: called after each study completes: (engine)
        self.on_study_completed: list[Callable[[Engine], None]] = []
        #: hooks the daemon adds to every engine it activates
        self.engine_hooks: list[Callable[[Engine], None]] = []

    # ------------------------------------------------------------------ studies
    def activate(self, spec: StudySpec | str, *, resolved: ResolvedStudy | None = None,
                 submitted_by: str = "daemon") -> Engine:
        """Start driving a study (registering it if new). Idempotent."""
        if isinstance(spec, str):
            row = self.store.get_study(spec)
            assert row is not None
            spec = parse_spec(json.loads(row.spec_json))
        active = self.engines.get(spec.name)
        if active is not None:
            return active.engine
        # One controller per study: refused before anything is written (StudyBusy, exit 2).
        if not self.store.lock_study(spec.name):
            raise StudyBusy(f"study {spec.name!r} is driven by another controller on this database (an `hpod run` "
                            "or a daemon): wait for it to finish, or stop it, then run the study again")
        try:
            parallel = len(self.executor.slots) if self.executor is not None else 1
            engine = Engine(self.store, spec, state_dir=self.state_dir, resolved=resolved or resolve(spec),
                            parallelism=max(1, parallel + self._remote_slots()))
            engine.start(submitted_by=submitted_by)
        except BaseException:
            self.store.unlock_study(spec.name)
            raise
        if self.executor is not None:
            # Pruning / early stopping and adaptive seeds answer the study's trial processes.
            if engine.report_handler is not None:
                self.executor.report_handlers[spec.name] = engine.report_handler
            if engine.seed_handler is not None:
                self.executor.seed_handlers[spec.name] = engine.seed_handler
        for hook in self.engine_hooks:
            hook(engine)
        self.engines[spec.name] = _Active(engine)
        return engine

    def deactivate(self, name: str) -> None:
        if self.engines.pop(name, None) is not None:
            self.store.unlock_study(name)

    def active_names(self) -> list[str]:
        return list(self.engines)

    # ------------------------------------------------------------------ capacity
    def _remote_slots(self) -> int:
        """Slots of remote workers with a fresh heartbeat (cached for a second)."""
        if not self.remote_workers:
            return 0
        at, n = self._remote_capacity
        if time.monotonic() - at < 1.0:
            return n
        try:
            now = time.time()
            own = self.executor.worker_name if self.executor is not None else None
            n = sum(w.slots for w in self.store.workers()
                    if worker_state(w, now) in ("idle", "busy")
                    and w.name != own)
        except StorageError:
            n = 0
        self._remote_capacity = (time.monotonic(), n)
        return n

    def capacity(self) -> int:
        """Free local slots plus idle remote worker slots."""
        return self._capacity()[0]

    def _capacity(self) -> tuple[int, int, int | None]:
        """``(free slots, jobs to queue ahead, queued jobs)``: free local slots plus idle
        remote worker slots; how many jobs beyond those to keep queued for the remote
        workers (:meth:`_queue_ahead`); and the jobs queued now (None: not counted,
        there are no remote slots)."""
        local = len(self.executor.free_slots()) if self.executor is not None else 0
        remote = self._remote_slots()
        if not remote:
            return local, 0, None
        own = self.executor.worker_name if self.executor is not None else None
        queued, busy_remote = self.store.count_jobs(exclude_worker=own)
        return local + max(0, remote - busy_remote), self._queue_ahead(remote), queued

    def _queue_ahead(self, remote_slots: int) -> int:
        """Jobs queued beyond the idle slots, one per remote slot, while an active study
        samples at random (its suggestions do not depend on results) and its trials are
        short (the median of its recent trials runs under
        :data:`QUEUE_AHEAD_BELOW_SECONDS`): a remote worker that finishes a trial then
        claims its next job at once instead of waiting for the controller to tell the
        result and ask again — on short trials that wait is most of a trial's cycle.
        A sampler that learns from results gets each suggestion as late as possible, and
        long trials need no queue ahead (the wait is negligible beside them)."""
        for active in self.engines.values():
            run = active.engine.recent_run_seconds()
            if not active.paused and active.engine.sampler_name == "random" and run is not None \
                    and run < QUEUE_AHEAD_BELOW_SECONDS:
                return remote_slots
        return 0

    # ------------------------------------------------------------------ step
    def expire_leases(self) -> int:
        try:
            lost = self.store.expire_leases()
        except StorageError as exc:
            log.warning("lease check failed: %s", exc)
            return 0
        for job in lost:
            log.warning("trial %s/%d: lease expired on %s (worker_lost)", job.study, job.trial_number, job.worker)
        return len(lost)

    def step(self, *, start_new: bool = True, studies: Iterable[str] | None = None) -> bool:
        """One round of collect / expire / ask / run. Returns True when anything happened."""
        busy = False
        now = time.monotonic()
        names = list(studies) if studies is not None else list(self.engines)
        if self.executor is not None:
            # Ended trials first: their results are stored, told and their slots refilled
            # in this same step (claiming waits for the ask below).
            reaped = self.executor.poll(studies=names, start_new=False)
            busy |= bool(reaped)
            self._results_pending |= bool(reaped)
        if now - self._last_lease_check >= self.lease_check_seconds:
            self._last_lease_check = now
            busy |= self.expire_leases() > 0
        completed = []
        collect = self._collect_due(now) or busy
        for name, active in list(self.engines.items()):
            if not collect:
                continue
            try:
                # The summary's write goes with the next ask (one transaction less).
                told = active.engine.collect(defer_summary=True)
            except StorageError as exc:
                log.warning("study %s: cannot collect results (will retry): %s", name, exc)
                continue
            busy |= bool(told)
            if active.engine.done():
                completed.append(name)
        for name in completed:
            engine = self.engines.pop(name).engine
            try:
                engine.finish("completed")
            finally:
                self.store.unlock_study(name)
            for cb in self.on_study_completed:
                cb(engine)
        if start_new:
            busy |= self._ask(studies)
        for name, active in self.engines.items():
            try:
                active.engine.flush_summary()  # no ask took it
            except StorageError as exc:
                log.warning("study %s: cannot store its summary (will retry): %s", name, exc)
        if self.executor is not None:
            finished = self.executor.poll(studies=names, start_new=start_new)
            busy |= bool(finished)
            self._results_pending |= bool(finished)
        return busy

    def _collect_due(self, now: float) -> bool:
        """Whether the engines should look for finished jobs in this step: the local
        executor stored results since the last look, remote workers may have, or a
        second has passed (a job cancelled or finished by another process). Saves two
        queries per idle step."""
        if self._results_pending or self._remote_results() or now - self._last_collect >= 1.0:
            self._results_pending = self._results_notified = False
            self._last_collect = now
            return True
        return False

    def _ask(self, studies: Iterable[str] | None) -> bool:
        """Queue one configuration per free slot, fairly across studies. A database
        outage here skips this round (the next step retries)."""
        try:
            return self._ask_unsafe(studies)
        except StorageError as exc:
            log.warning("cannot ask for new trials (will retry): %s", exc)
        except SQLAlchemyError as exc:  # Optuna's own sessions report outages this way
            log.warning("cannot ask for new trials (will retry): %s", str(exc).splitlines()[0])
        except Exception as exc:
            if type(exc).__name__ != "StorageInternalError":  # optuna.exceptions, imported lazily
                raise
            log.warning("cannot ask for new trials (will retry): %s", exc)
        return False

    def _ask_unsafe(self, studies: Iterable[str] | None) -> bool:
        allowed = set(studies) if studies is not None else None
        candidates = [a.engine for n, a in self.engines.items()
                      if not a.paused and (allowed is None or n in allowed) and a.engine.budget_exhausted() is None]
        if not candidates:
            return False
        capacity, ahead, queued = self._capacity()
        if capacity + ahead <= 0:
            return False  # no free slot: the queue need not be counted
        if queued is None:
            queued = self.store.count_jobs()[0]
        free = capacity + ahead - queued
        if free <= 0:
            return False
        # In flight (running + queued) per study, counted here rather than re-read
        # from the database after every ask.
        inflight = {e.name: e.summary().running for e in candidates}
        asked = False
        # Fair share: fewest in flight per unit of priority first.
        while free > 0 and candidates:
            candidates.sort(key=lambda e: (inflight[e.name] / (1 + max(0, e.spec.priority)), -e.spec.priority))
            engine = candidates[0]
            cap = engine.spec.max_concurrency
            if cap is not None and inflight[engine.name] >= cap:
                candidates.pop(0)
                continue
            jobs = engine.ask(1)
            if not jobs:
                candidates.pop(0)
                continue
            inflight[engine.name] += len(jobs)
            asked = True
            free -= len(jobs)
        return asked

    def _remote_results(self) -> bool:
        """Whether remote workers may have stored results since the last look: on
        PostgreSQL, whether the results channel was notified (:meth:`wait` also listens);
        elsewhere (no listener), whenever remote workers are up."""
        if self._remote_slots() <= 0:
            return False
        listener = self._listener()
        if listener is None:
            return True
        return listener.drain() > 0 or self._results_notified

    def _listener(self) -> JobListener | None:
        """The controller's listener on stored results (PostgreSQL, remote workers), or
        None (SQLite, or it broke: then the controller polls)."""
        if self._results_listener is None and self.remote_workers and self.store.is_postgres \
                and not self._listener_failed:
            self._results_listener = self.store.job_listener(RESULTS_CHANNEL)
            self._listener_failed = self._results_listener is None
        if self._results_listener is not None and self._results_listener.broken:
            return None
        return self._results_listener

    def idle_wait_seconds(self) -> float:
        """How long an idle loop may wait in :meth:`wait`: :data:`IDLE_WAIT_SECONDS`
        while a stored result wakes it (PostgreSQL, remote workers; nothing else needs a
        step sooner: leases are checked every ``lease_check_seconds``, workers counted
        every second), else 20 ms (it polls)."""
        return IDLE_WAIT_SECONDS if self._remote_slots() > 0 and self._listener() is not None else 0.02

    def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for something to do: a local trial ending, or
        with remote workers on PostgreSQL a stored result."""
        if self.executor is not None and self.executor.running:
            self.executor.wait(timeout)
            return
        listener = self._listener() if self._remote_slots() > 0 else None
        if listener is None:
            time.sleep(timeout)
            return
        if select.select([listener], [], [], timeout)[0]:
            self._results_notified = listener.drain() > 0 or listener.broken or self._results_notified

    def close(self) -> None:
        """Close the results listener (if any)."""
        if self._results_listener is not None:
            self._results_listener.close()
            self._results_listener = None

    def stop(self, *, reason: str, grace_seconds: float = 0.0,
             should_abort: Callable[[], bool] | None = None) -> None:
        """Stop local trials (after the grace period) and record them as ``reason``."""
        if self.executor is not None:
            self.executor.stop(reason=reason, grace_seconds=grace_seconds, should_abort=should_abort)
        for active in self.engines.values():
            try:
                active.engine.collect()
                active.engine.update_store_summary(final=True)
            except StorageError as exc:
                log.warning("cannot record the stop of %s: %s", active.engine.name, exc)

    def snapshot_running(self) -> list[dict[str, Any]]:
        if self.executor is None:
            return []
        return [{"slot": rt.slot.name, "gpu_index": rt.slot.gpu_index, "study": rt.job.study,
                 "trial": rt.job.trial_number, "started_at": rt.started_at}
                for rt in self.executor.running.values()]
