"""``hpod worker``: runs trials of the studies in a shared database on this node's slots.

A worker claims queued jobs (trials the controller asked for) atomically under a
lease, runs them with the same measured trial processes as the local executor,
renews the leases while they run, heartbeats its row in ``hpod_workers`` (node,
slots, current trials) and stores each result fenced by its lease token. A
database outage pauses claiming; running trials go on and their results are kept
in memory and retried until stored. SIGTERM (or SIGINT) stops claiming, lets the
running trials finish for up to ``grace_seconds`` and hands the rest back with
reason ``shutdown`` (the controller re-queues them); a second signal hands them
back at once.

Concurrency: one worker per process, driven by the thread that calls :meth:`Worker.run`;
objectives are prepared (``objective.prepare(cache_dir)``) on a helper thread so
heartbeats go on meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from hpod.core.engine import trial_handlers
from hpod.daemon._sd_notify import sd_notify, watchdog_interval
from hpod.errors import StorageError
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import parse_spec, resolve
from hpod.store import JobListener, Store

__all__ = ["Worker", "WorkerStats", "default_worker_name"]

log = logging.getLogger(__name__)

#: PostgreSQL: an idle worker woken by a queued job waits a random part of this before
#: claiming it, so that of the idle workers woken together one claims and the others,
#: hearing the claim (``JobListener.queued``), do not spend a claim that finds nothing.
#: Doubled after each such claim that found nothing, up to 2**CLAIM_SPREAD_DOUBLINGS
#: times (a loaded machine delays the notice of a claim), and reset by a successful one.
CLAIM_SPREAD_SECONDS = 0.02
CLAIM_SPREAD_DOUBLINGS = 3


def default_worker_name() -> str:
    """``<node>:<pid>``: unique on a node, and lets ``hpod run`` on the same node tell
    whether the holder of a job is alive."""
    return f"{os.environ.get('HPOD_NODE_NAME') or socket.gethostname()}:{os.getpid()}"


@dataclass
class WorkerStats:
    """What one :meth:`Worker.run` did."""

    claimed: int = 0
    finished: int = 0
    released: int = 0
    storage_errors: int = 0
    #: claims that found no queued job: each is a wasted transaction
    empty_claims: int = 0


class _Preparer:
    """Prepares each study's objective once (on a thread), before its first trial here."""

    def __init__(self, store: Store, cache_dir: Path, on_ready: Any = None):
        self.store = store
        self.cache_dir = cache_dir
        #: called with (study name, spec) after a successful prepare, on the helper thread
        self.on_ready = on_ready
        self.ready: set[str] = set()
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    def request(self, study: str) -> None:
        with self._lock:
            if study in self.ready or study in self._busy:
                return
            self._busy.add(study)
        threading.Thread(target=self._prepare, args=(study,), name=f"hpod-prepare-{study}", daemon=True).start()

    def _prepare(self, study: str) -> None:

        try:
            row = self.store.get_study(study)
            assert row is not None
            resolved = resolve(parse_spec(json.loads(row.spec_json)))
            log.info("preparing objective %s of study %s", resolved.spec.objective.name, study)
            resolved.objective.prepare(self.cache_dir)
            if self.on_ready is not None:
                self.on_ready(study, resolved.spec)
        except StorageError as exc:
            # The study is retried on the next round: an outage is not the study's fault.
            log.warning("cannot prepare study %s yet: %s", study, exc)
            with self._lock:
                self._busy.discard(study)
            return
        except Exception:
            # A broken spec or a failing prepare(): let the trials run and fail with
            # their own reason, so the user sees it in the study rather than in this log.
            log.exception("preparing the objective of study %s failed; its trials will report why", study)
        with self._lock:
            self._busy.discard(study)
            self.ready.add(study)


class Worker:
    """Claims and runs jobs of a shared store on local slots until stopped."""

    def __init__(self, store: Store, state_dir: Path, *, slots: list[Slot], name: str | None = None,
                 studies: Iterable[str] | None = None, lease_seconds: float = 30.0,
                 heartbeat_seconds: float = 5.0, poll_seconds: float = 0.5, grace_seconds: float = 300.0,
                 codecarbon: bool = True, preload: Iterable[str] = ()):
        """
        Args:
            slots: where trials run (``parse_slots``: one per GPU, or N CPU slots); at least one.
            name: unique worker name (default ``<node>:<pid>``).
            studies: claim only jobs of these studies (default: every study).
            lease_seconds: a trial's lease; if this worker stops renewing it (killed,
                node lost) the controller fails the trial as ``worker_lost`` this long
                after the last renewal and re-queues its configuration.
            heartbeat_seconds: how often leases and the worker row are renewed; must be
                less than ``lease_seconds``.
            poll_seconds: how often an idle worker looks for queued jobs. On PostgreSQL a
                notice wakes it for each queued job instead, and it claims without one
                only every ``max(poll_seconds, heartbeat_seconds)`` (jobs queued before
                it listened, or handed back without a notice).
            grace_seconds: on SIGTERM, how long running trials may take to finish
                before they are handed back with reason ``shutdown``.
        """
        if not slots:
            raise ValueError("slots: a worker needs at least one slot (found none; use --cpu-slots N or --gpus)")
        if lease_seconds <= heartbeat_seconds:
            raise ValueError(f"lease_seconds ({lease_seconds}) must exceed heartbeat_seconds ({heartbeat_seconds})")
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0 (found {poll_seconds})")
        if grace_seconds < 0:
            raise ValueError(f"grace_seconds must be >= 0 (found {grace_seconds})")
        self.store = store
        self.state_dir = state_dir
        self.name = name or default_worker_name()
        self.studies = sorted(set(studies)) if studies is not None else None
        self.heartbeat_seconds = heartbeat_seconds
        self.poll_seconds = poll_seconds
        self.grace_seconds = grace_seconds
        self.executor = LocalExecutor(store, state_dir, slots=slots, worker_name=self.name,
                                      lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds,
                                      preload=preload, codecarbon=codecarbon)
        self.preparer = _Preparer(store, state_dir / "cache", on_ready=self._install_trial_handlers)
        self.stats = WorkerStats()
        self.stop_requested = threading.Event()
        self.abort_requested = threading.Event()
        self._db_ok = True
        self._db_retry_at = 0.0
        self._db_delay = 0.5
        #: PostgreSQL: readable when a job is queued, so an idle worker claims it at once
        self._listener: JobListener | None = None
        #: written by request_stop, so a waiting worker wakes up for it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._last_row = 0.0
        self._last_scan = 0.0
        #: when a claim is due whatever the listener heard (monotonic; 0: at once)
        self._poll_claim_at = 0.0
        #: an idle worker woken by a queued job claims it from then on (CLAIM_SPREAD_SECONDS)
        self._claim_not_before = 0.0
        #: idle claims in a row that found nothing (widen this worker's spread)
        self._lost_races = 0
        #: the last claim without a notice filled every free slot: more jobs may wait that no
        #: notice announced (queued before this worker listened), so a freed slot claims at once
        self._backlog = False
        self._ready_seen = 0
        self._reported: frozenset[int] = frozenset()

    def _install_trial_handlers(self, study: str, spec: Any) -> None:
        """The study's pruner / adaptive-seed handlers, as the controller installs them
        for its local executor (they read the study's trials from the shared store)."""

        report, seeds = trial_handlers(self.store, spec, self.state_dir)
        if report is not None:
            self.executor.report_handlers[study] = report
        if seeds is not None:
            self.executor.seed_handlers[study] = seeds

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        """Stop claiming; a second request hands running trials back at once."""
        if self.stop_requested.is_set():
            self.abort_requested.set()
        self.stop_requested.set()
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):  # the pipe is full: already woken
                os.write(self._wake_w, b"x")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.warning("worker %s: %s received, %s", self.name, signal.Signals(signum).name,
                    "handing running trials back" if self.stop_requested.is_set() else
                    f"finishing running trials (up to {self.grace_seconds:g} s)")
        self.request_stop()

    # ------------------------------------------------------------------ main loop
    def run(self, *, install_signal_handlers: bool = True) -> WorkerStats:
        """Run until :meth:`request_stop` (or SIGTERM/SIGINT), then drain and return."""
        old: dict[int, Any] = {}
        if install_signal_handlers:
            old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        watchdog = watchdog_interval()
        last_watchdog = 0.0
        try:
            self._heartbeat(force=True)
            # The fork server imports hpod's trial code now, not in the first trial's time.
            self.executor.warm_up()
            self._listener = self.store.job_listener(own_claims=self.name)
            sd_notify(f"READY=1\nSTATUS=worker {self.name}: {len(self.executor.slots)} slot(s)")
            while not self.stop_requested.is_set():
                claimed = self._step()
                if watchdog is not None and time.monotonic() - last_watchdog >= watchdog:
                    sd_notify("WATCHDOG=1")
                    last_watchdog = time.monotonic()
                if claimed or self.stop_requested.is_set():
                    continue
                timeout = min(self.poll_seconds, self.heartbeat_seconds) if self.executor.running \
                    else self.poll_seconds
                wait_left = self._claim_not_before - time.monotonic()
                if wait_left > 0:
                    timeout = min(timeout, wait_left)
                self._wait(timeout)
            sd_notify("STOPPING=1\nSTATUS=finishing running trials")
            self._drain()
            self.stats.empty_claims = self.executor.empty_claims
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            wake_r, wake_w, self._wake_w = self._wake_r, self._wake_w, -1
            os.close(wake_w)
            os.close(wake_r)
        return self.stats

    def _wait(self, timeout: float) -> None:
        """Until a running trial sends a message or ends, a job is queued (PostgreSQL,
        with a free slot), a stop is requested, or ``timeout`` passes."""
        listener = self._listener
        extra: list[Any] = [self._wake_r]
        if listener is not None and not listener.broken and self.executor.free_slots():
            extra.append(listener)
        self.executor.wait(timeout, extra=extra)
        if listener is not None:
            before = listener.queued
            listener.drain()
            if before <= 0 < listener.queued:
                # A new job while idle: so do the other idle workers; spread the claims.
                spread = CLAIM_SPREAD_SECONDS * 2 ** min(self._lost_races, CLAIM_SPREAD_DOUBLINGS)
                self._claim_not_before = time.monotonic() + random.uniform(0.0, spread)
        with contextlib.suppress(BlockingIOError):  # nothing written: not woken by a stop
            os.read(self._wake_r, 64)

    def _claimable(self) -> list[str]:
        """Studies whose jobs this worker may claim now: prepared, and within ``--studies``."""
        now = time.monotonic()
        if self._db_ok and now - self._last_scan >= min(2.0, self.heartbeat_seconds):
            self._last_scan = now
            try:
                queued = self.store.queued_studies()
            except StorageError as exc:
                self._storage_failed(exc)
                queued = set()
            for study in queued:
                if self.studies is None or study in self.studies:
                    self.preparer.request(study)
        ready = self.preparer.ready
        if len(ready) != self._ready_seen:
            self._ready_seen = len(ready)
            self._poll_claim_at = 0.0  # a study just prepared: look for its jobs now
        return sorted(ready if self.studies is None else ready & set(self.studies))

    def _step(self) -> bool:
        """One round: reap, store results, renew leases, claim. True if a job was claimed."""
        before = set(self.executor.running)
        claimable = self._claimable()
        # Slots freed by trials reaped in this same poll count: a finished trial's slot is
        # refilled at once when jobs are queued, not after the next wait.
        start_new = self._db_ok and bool(claimable)
        if not self._db_ok and time.monotonic() >= self._db_retry_at:
            start_new = False
            self._heartbeat(force=True)  # the probe: a success lifts the pause
        finished = self.executor.poll(studies=claimable, start_new=False)
        self.stats.finished += len(finished)
        if start_new and self.executor.free_slots():
            budget = self._claim_budget(reaped=bool(finished))
            if budget != 0:
                got = self.executor.claim(studies=claimable, max_claims=budget)
                self._claimed(got, idle=not finished, announced=budget is not None)
        new = set(self.executor.running) - before
        self.stats.claimed += len(new)
        # The row (state, current trials) is rewritten every heartbeat, not per trial: a
        # worker fed one short trial at a time turns busy and idle with each (its row is
        # at most one heartbeat old; leases are renewed on their own schedule).
        self._heartbeat()
        return bool(new)

    def _claim_budget(self, *, reaped: bool) -> int | None:
        """How many jobs to claim now: None for as many as there are free slots (no
        listener, or a claim is due: the study was just prepared, a heartbeat passed
        since the last one, or a trial ended while a backlog no notice announced waits),
        0 for none.

        With a listener (PostgreSQL) a worker claims only what was announced and not yet
        claimed (``JobListener.queued``): at once after a trial of its own ended, and
        otherwise (idle, woken together with the other idle workers) after a random part
        of :data:`CLAIM_SPREAD_SECONDS`, unless another worker's claim was heard first.
        A claim that finds nothing costs a transaction; with four idle workers woken by
        each job, three did."""
        listener = self._listener
        now = time.monotonic()
        if listener is None or listener.broken or now >= self._poll_claim_at or (reaped and self._backlog):
            return None
        if listener.queued <= 0 or (not reaped and now < self._claim_not_before):
            return 0
        return listener.queued

    def _claimed(self, got: int, *, idle: bool, announced: bool) -> None:
        """After a claim: the next one due without a notice is a heartbeat away; what the
        listener counts as unclaimed drops by what this worker got (its own claims are not
        counted twice), or to zero when the queue was found empty; an idle worker that
        found nothing widens its spread, one that got a job narrows it again. A claim not
        limited to announced jobs (``announced`` False) that found no end of the queue
        leaves a backlog to claim from as slots free up."""
        self._poll_claim_at = time.monotonic() + max(self.poll_seconds, self.heartbeat_seconds)
        empty = self.executor.last_claim_empty
        if empty:
            self._backlog = False
        elif not announced and got:
            self._backlog = True
        listener = self._listener
        if listener is None:
            return
        listener.queued = 0 if empty else max(0, listener.queued - got)
        if got:
            self._lost_races = 0
        elif empty and idle:
            self._lost_races += 1

    def _state(self) -> str:
        return "busy" if self.executor.running else "idle"

    def _current(self) -> list[dict[str, Any]]:
        return [{"job_id": jid, "study": rt.job.study, "trial": rt.job.trial_number, "slot": rt.slot.name,
                 "gpu_index": rt.slot.gpu_index, "attempt": rt.job.attempt,
                 "running_seconds": round(time.monotonic() - rt.started_at, 1)}
                for jid, rt in self.executor.running.items()]

    def _heartbeat(self, *, force: bool = False, state: str | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last_row < self.heartbeat_seconds:
            return
        if not self._db_ok and now < self._db_retry_at and state is None:
            return
        self._last_row = now
        gpus = ",".join(str(s.gpu_index) for s in self.executor.slots if s.gpu_index is not None) or None
        try:
            joined = self.store.heartbeat_worker(
                self.name, slots=len(self.executor.slots), current=self._current(), gpus=gpus,
                state=state or self._state(),
                studies=",".join(self.studies) if self.studies is not None else None)
            if joined:
                self.store.append_event("worker_joined", payload={
                    "worker": self.name, "slots": len(self.executor.slots), "gpus": gpus,
                    "studies": self.studies}, handled=True)
        except StorageError as exc:
            self._storage_failed(exc)
            return
        if not self._db_ok:
            log.warning("worker %s: database reachable again; resuming", self.name)
        self._db_ok, self._db_delay = True, 0.5

    def _storage_failed(self, exc: BaseException) -> None:
        self.stats.storage_errors += 1
        if self._db_ok:
            log.warning("worker %s: database unavailable, pausing claims (running trials go on, results are "
                        "kept until stored): %s", self.name, exc)
        self._db_ok = False
        self._db_retry_at = time.monotonic() + self._db_delay
        self._db_delay = min(15.0, self._db_delay * 2)

    # ------------------------------------------------------------------ stopping
    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while self.executor.running and time.monotonic() < deadline and not self.abort_requested.is_set():
            self.stats.finished += len(self.executor.poll(start_new=False))
            self._heartbeat(state="stopping")
            self.executor.wait(0.25)
        held = list(self.executor.running)
        self.stats.released += len(held)
        self.executor.stop(reason="shutdown", grace_seconds=0)
        # Results computed before the stop are worth waiting for a short outage.
        end = time.monotonic() + min(60.0, max(5.0, self.grace_seconds))
        delay = 0.5
        while self.executor._pending_results and time.monotonic() < end:
            time.sleep(delay)
            delay = min(5.0, delay * 2)
            self.executor.poll(start_new=False)
        if self.executor._pending_results:
            log.error("worker %s: %d result(s) could not be stored before exit; their leases will expire and "
                      "the controller re-runs them", self.name, len(self.executor._pending_results))
        try:
            self.store.set_worker_state(self.name, "stopped")
        except StorageError as exc:
            log.warning("cannot mark worker %s stopped: %s", self.name, exc)
