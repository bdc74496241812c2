"""Time-driven work of the daemon on an APScheduler 3.x ``BackgroundScheduler``.

Jobs never touch the controller (the main loop owns it): they append events, set
flags or call store methods, so a slow or failing job cannot stall trials. Per study:
``schedule.cron`` appends a ``retune_started`` event with reason ``schedule`` (the
main loop hands it to the retune hooks); ``schedule.window`` is checked by the main
loop through :func:`window_open` before a study may start trials. Periodic jobs:
spec-directory change detection, worker liveness (``worker_lost`` events), monitor hooks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.errors import StorageError
from hpod.store import Store

if TYPE_CHECKING:
    from hpod.spec import ScheduleSpec

__all__ = [
    "SPEC_SUFFIXES",
    "DaemonScheduler",
    "MonitorHook",
    "RetuneHook",
    "RetuneRequest",
    "spec_dir_fingerprint",
    "spec_files",
    "window_open",
]

log = logging.getLogger(__name__)

SPEC_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class RetuneRequest:
    """A retune asked for by a schedule, a user (``manual``) or a drift monitor
    (``drift:data:length``…). ``event_id`` is the ``retune_started`` event: a hook that
    runs twice for one id (a restart before the event was marked handled) must act once."""

    study: str
    reason: str
    note: str | None = None
    event_id: int | None = None


#: called by the main loop for each retune request (the retune policy's ``on_request``);
#: what it returns may say what it did (``action``, ``child``, ``detail`` attributes)
RetuneHook = Callable[[RetuneRequest], object]
#: called periodically from the scheduler thread with the store (drift monitors)
MonitorHook = Callable[[Store], None]


def _zone(tz: str | None) -> Any:
    if not tz:
        return None
    from zoneinfo import ZoneInfo

    return ZoneInfo(tz)


def window_open(window: str | None, *, timezone: str | None = None, now: datetime | None = None) -> bool:
    """Whether ``now`` lies in ``window`` (``"HH:MM-HH:MM"``, end exclusive; a window
    whose end is before its start spans midnight, ``"22:00-06:00"``). No window: always open."""
    if not window:
        return True
    start_text, end_text = window.split("-")
    start = dtime.fromisoformat(start_text)
    end = dtime.fromisoformat(end_text)
    zone = _zone(timezone)
    current = (now.astimezone(zone) if now is not None and zone is not None else
               now if now is not None else datetime.now(zone)).time().replace(second=0, microsecond=0)
    if start == end:
        return True  # "00:00-00:00": the whole day
    if start < end:
        return start <= current < end
    return current >= start or current < end


def next_window_opening(window: str, *, timezone: str | None = None, now: datetime | None = None) -> datetime:
    """When ``window`` next opens (for ``hpod status``)."""
    zone = _zone(timezone)
    now = now or datetime.now(zone)
    start = dtime.fromisoformat(window.split("-")[0])
    candidate = now.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=1)


def spec_files(spec_dir: Path) -> list[Path]:
    """Spec files in ``spec_dir`` (not recursive; hidden and editor backup files skipped)."""
    if not spec_dir.is_dir():
        return []
    return sorted(p for p in spec_dir.iterdir()
                  if p.is_file() and p.suffix.lower() in SPEC_SUFFIXES and not p.name.startswith("."))


def spec_dir_fingerprint(spec_dir: Path | None) -> tuple[tuple[str, int, int], ...]:
    """Names, sizes and mtimes of the spec files: changes when a spec is added, edited or removed."""
    if spec_dir is None:
        return ()
    out = []
    for p in spec_files(spec_dir):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


class DaemonScheduler:
    """The daemon's APScheduler jobs. Thread-safe to reconfigure from the main loop."""

    name = "scheduler"

    def __init__(self, store: Store, *, spec_dir: Path | None = None, spec_poll_seconds: float = 10.0,
                 worker_timeout_seconds: float = 60.0, monitor_interval_seconds: float = 60.0,
                 own_worker: str | None = None, on_spec_dir_change: Callable[[], None] | None = None):
        from apscheduler.schedulers.background import BackgroundScheduler

        self.store = store
        self.spec_dir = spec_dir
        self.own_worker = own_worker
        self.monitor_hooks: list[MonitorHook] = []
        self._on_spec_dir_change = on_spec_dir_change
        self._fingerprint = spec_dir_fingerprint(spec_dir)
        # A job that overran its interval is skipped, not stacked; one instance at a time.
        self._scheduler = BackgroundScheduler(job_defaults={"coalesce": True, "max_instances": 1,
                                                            "misfire_grace_time": 60})
        self._crons: dict[str, str] = {}
        if spec_dir is not None:
            self._scheduler.add_job(self._check_spec_dir, "interval", seconds=spec_poll_seconds, id="spec_dir")
        self._scheduler.add_job(self._check_workers, "interval", seconds=max(1.0, worker_timeout_seconds / 4),
                                id="worker_liveness")
        self.worker_timeout_seconds = worker_timeout_seconds
        self._scheduler.add_job(self._run_monitors, "interval", seconds=monitor_interval_seconds, id="monitors")

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def stop(self, timeout: float) -> None:
        """Stop firing jobs (a job already running ends on its own thread, unwaited)."""
        self.shutdown()

    # ------------------------------------------------------------------ studies
    def set_study_schedule(self, study: str, schedule: ScheduleSpec | None) -> None:
        """(Re)install the study's cron retune job; None or no cron removes it."""
        from apscheduler.triggers.cron import CronTrigger

        cron = schedule.cron if schedule is not None else None
        job_id = f"cron:{study}"
        key = f"{cron}|{schedule.timezone if schedule else None}"
        if cron is None:
            if self._crons.pop(study, None) is not None:
                self._remove(job_id)
            return
        if self._crons.get(study) == key:
            return
        trigger = CronTrigger.from_crontab(cron, timezone=schedule.timezone if schedule and schedule.timezone
                                           else None)
        self._scheduler.add_job(self._scheduled_retune, trigger, args=[study], id=job_id, replace_existing=True)
        self._crons[study] = key

    def remove_study(self, study: str) -> None:
        if self._crons.pop(study, None) is not None:
            self._remove(f"cron:{study}")

    def _remove(self, job_id: str) -> None:
        from apscheduler.jobstores.base import JobLookupError

        try:
            self._scheduler.remove_job(job_id)
        except JobLookupError:
            pass

    def next_run(self, study: str) -> float | None:
        """Unix time of the study's next scheduled retune, or None."""
        job = self._scheduler.get_job(f"cron:{study}")
        if job is None:
            return None
        nrt = getattr(job, "next_run_time", None)
        if nrt is None:  # scheduler not started yet: ask the trigger
            nrt = job.trigger.get_next_fire_time(None, datetime.now(job.trigger.timezone))
        return nrt.timestamp() if nrt is not None else None

    # ------------------------------------------------------------------ jobs
    def _scheduled_retune(self, study: str) -> None:
        try:
            self.store.append_event("retune_started", study=study, payload={"reason": "schedule"})
        except StorageError as exc:
            log.warning("scheduled retune of %s not recorded: %s", study, exc)

    def _check_spec_dir(self) -> None:
        fingerprint = spec_dir_fingerprint(self.spec_dir)
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            if self._on_spec_dir_change is not None:
                self._on_spec_dir_change()

    def _check_workers(self) -> None:
        try:
            self.store.mark_workers_lost(older_than=self.worker_timeout_seconds, exclude=self.own_worker)
        except StorageError as exc:
            log.warning("worker liveness check failed: %s", exc)

    def _run_monitors(self) -> None:
        for hook in list(self.monitor_hooks):
            try:
                hook(self.store)
            except Exception:  # a broken monitor must not stop the others or the daemon
                log.exception("monitor hook %r failed", hook)
