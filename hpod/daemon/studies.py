"""The studies the daemon drives: activation (with orphan recovery and objective
preparation), the events the main loop acts on (submitted, paused, resumed, cancelled,
retune), the spec directory, and which studies may start trials now.

Everything here runs on the main loop's thread, the only one that touches the
controller; the API thread only waits for an event's outcome (:meth:`Studies.wait_handled`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.core.actions import StudyAction, action_refusal
from hpod.core.runner import pid_alive_on_this_node
from hpod.daemon.scheduling import DaemonScheduler, RetuneRequest, spec_files, window_open
from hpod.errors import HpodError, StorageError, StudyBusy, UsageError
from hpod.http.api import submit_study
from hpod.objectives.base import check_objective_allowed
from hpod.spec import load_spec, parse_spec
from hpod.store import Store

if TYPE_CHECKING:
    from hpod.core.controller import Controller
    from hpod.core.engine import Engine
    from hpod.http.exporter import TrialObserver
    from hpod.spec import StudySpec
    from hpod.store import EventRow, JobRow

__all__ = ["EVENT_HANDLER_KINDS", "Studies"]

log = logging.getLogger(__name__)

#: event kinds the main loop acts on (appended unhandled by the API, the scheduler, the spec dir)
EVENT_HANDLER_KINDS = ("study_submitted", "study_paused", "study_resumed", "study_cancelled", "retune_started")
#: outcomes kept for the API's waits (the oldest half is dropped past the maximum)
_MAX_OUTCOMES = 1000


class Studies:
    """Study activation and the events that change a study's state."""

    def __init__(self, store: Store, controller: Controller, scheduler: DaemonScheduler, *, state_dir: Path,
                 spec_dir: Path | None, observer: TrialObserver | None, retune: Callable[[RetuneRequest], str],
                 wake: Callable[[], None], allowed_objectives: tuple[str, ...]):
        self.store = store
        self.controller = controller
        self.scheduler = scheduler
        self.state_dir = state_dir
        self.spec_dir = spec_dir
        self.observer = observer
        self.retune = retune
        self.wake = wake
        #: the daemon's ``allowed_objectives`` setting
        self.allowed_objectives = allowed_objectives
        #: event kind -> handler; a handler that raises HpodError marks the event handled
        #: with the error recorded, StorageError leaves it for the next iteration
        self.event_handlers: dict[str, Callable[[EventRow], str]] = {
            "study_submitted": self._on_submitted, "study_paused": self._on_paused,
            "study_resumed": self._on_resumed, "study_cancelled": self._on_cancelled,
            "retune_started": self._on_retune_event,
        }
        self.preparing: dict[str, Future[None]] = {}
        self._handled = threading.Condition()
        self._outcomes: dict[int, dict[str, Any]] = {}
        self._cancelling: set[str] = set()
        self._spec_errors: dict[str, str] = {}
        controller.engine_hooks.append(self._attach_engine)
        controller.on_study_completed.append(self._on_study_completed)

    # ------------------------------------------------------------------ start
    def recover(self) -> None:
        """Before any new work: studies left running are driven again (their orphans
        failed and re-queued), then unhandled events and the spec directory are acted on."""
        for row in self.store.list_studies():
            if row.state in ("running", "queued", "paused"):
                self._activate_safely(row.name, paused=row.state == "paused")
            self._schedule_from_row(row)
        self.process_events()
        self.scan_spec_dir()
        self.process_events()

    # ------------------------------------------------------------------ activation
    def activate(self, spec: StudySpec | str, *, paused: bool = False) -> Engine:
        """Drive a study: register it, recover its orphans, tell what finished, prepare its objective."""
        executor = self.controller.executor
        own = executor.worker_name if executor is not None else None

        def alive(job: JobRow) -> bool:
            # Our own executor's jobs are alive (a study re-activated after a spec update);
            # a previous daemon that had our pid is caught by its lease expiring instead.
            if own is not None and job.worker == own:
                return True
            return pid_alive_on_this_node(job)

        engine = self.controller.activate(spec, submitted_by="daemon")
        recovered = engine.recover_orphans(alive=alive)
        if recovered:
            log.warning("study %s: %d trial(s) left running by a previous daemon failed as orphaned and re-queued",
                        engine.name, recovered)
        engine.collect()
        self.controller.engines[engine.name].paused = paused
        self.store.update_study(engine.name, state="paused" if paused else "running")
        prepare = getattr(engine.resolved.objective, "prepare", None)
        if prepare is not None:
            self.preparing[engine.name] = _in_background(prepare, self.state_dir / "cache",
                                                         name=f"hpod-prepare-{engine.name}")
            warm_up = getattr(executor, "warm_up", None)  # a local executor's fork server
            if warm_up is not None:
                try:
                    warm_up(engine.resolved.objective)
                except OSError as exc:  # the first trial starts the server instead
                    log.warning("study %s: cannot start the fork server early (%s)", engine.name, exc)
        return engine

    def activate_new_version(self, name: str) -> None:
        """The retune policy's way to drive the study version it just registered."""
        if name not in self.controller.engines:
            self.activate(name)

    def _activate_safely(self, name: str, *, paused: bool = False) -> None:
        try:
            self.activate(name, paused=paused)
        except StorageError:
            raise
        except StudyBusy as exc:  # an `hpod run` drives it: left as it is, not failed
            log.warning("study %s is not resumed: %s", name, exc)
        except Exception as exc:  # a study whose spec no longer resolves must not stop the others
            log.exception("study %s cannot be resumed", name)
            self._fail_study(name, f"cannot resume: {exc}")

    def _fail_study(self, name: str, message: str) -> None:
        self.controller.deactivate(name)
        self.store.update_study(name, state="failed", message=message[:2000])

    def _attach_engine(self, engine: Engine) -> None:
        observer = self.observer
        if observer is None:
            return
        observer.add_study(engine.name)
        engine.on_told.append(self._observe_told)
        engine.on_suggest.append(observer.observe_suggest)
        self.scheduler.set_study_schedule(engine.name, engine.spec.schedule)

    def _observe_told(self, engine: Engine, frozen: Any, job: JobRow) -> None:
        assert self.observer is not None
        duration = frozen.duration.total_seconds() if frozen.duration is not None else 0.0
        measurements = frozen.user_attrs.get("hpod.measurements") or {}
        memory = (measurements.get("memory_bytes") or {}).get("value")
        info = frozen.user_attrs.get("hpod.info") or {}
        energy = info.get("energy_spent_joules")
        self.observer.observe_trial(engine.name, frozen.state.name, max(0.0, duration),
                                    float(memory) if memory is not None and memory >= 0 else None,
                                    float(energy) if energy is not None and energy >= 0 else None)

    def _on_study_completed(self, engine: Engine) -> None:
        log.info("study %s completed: %d trials, hypervolume %s", engine.name, engine.summary().finished,
                 engine.summary().hypervolume)

    def _schedule_from_row(self, row: Any) -> None:
        if row.state in ("cancelled", "failed"):
            return
        try:
            spec = parse_spec(json.loads(row.spec_json))
        except HpodError:
            return
        if spec.schedule is not None:
            self.scheduler.set_study_schedule(spec.name, spec.schedule)

    # ------------------------------------------------------------------ each loop iteration
    def allowed(self) -> list[str] | None:
        """Studies that may start trials now: not paused, window open, objective prepared.
        None means all (the common case, no filtering)."""
        names = self.controller.active_names()
        allowed = []
        for name in names:
            if self.controller.engines[name].paused:
                continue  # its queued trials stay queued: paused means no new trial starts
            fut = self.preparing.get(name)
            if fut is not None:
                if not fut.done():
                    continue
                self.preparing.pop(name)
                exc = fut.exception()
                if exc is not None:
                    self._fail_study(name, f"objective preparation failed: {exc}")
                    continue
            sched = self.controller.engines[name].engine.spec.schedule
            if sched is not None and sched.window and not window_open(sched.window, timezone=sched.timezone):
                continue
            allowed.append(name)
        return None if len(allowed) == len(names) else allowed

    def finish_cancelled(self) -> None:
        for name in list(self._cancelling):
            active = self.controller.engines.get(name)
            if active is None or active.engine.summary(refresh=True).running == 0:
                if active is not None:
                    active.engine.update_store_summary(final=True)
                self.controller.deactivate(name)
                self.store.update_study(name, state="cancelled")
                self._cancelling.discard(name)

    def scan_spec_dir(self) -> None:
        """Submit specs of the spec directory that are new or changed."""
        spec_dir = self.spec_dir
        if spec_dir is None:
            return
        if not spec_dir.is_dir():
            log.warning("spec directory %s does not exist", spec_dir)
            return
        for path in spec_files(spec_dir):
            try:
                spec = load_spec(path)
                row = self.store.get_study(spec.name, missing_ok=True)
                if row is not None and row.spec_json == spec.model_dump_json():
                    continue
                submit_study(self.store, spec, by=f"spec_dir:{path.name}",
                             allowed_objectives=self.allowed_objectives)
                self._spec_errors.pop(str(path), None)
            except StorageError:
                raise
            except HpodError as exc:
                if self._spec_errors.get(str(path)) != str(exc):  # once per distinct error, not every scan
                    self._spec_errors[str(path)] = str(exc)
                    log.error("spec directory: %s: %s", path.name, exc)

    # ------------------------------------------------------------------ events
    def process_events(self) -> None:
        for ev in self.store.unhandled_events(kinds=self.event_handlers):
            assert ev.id is not None, "a stored event has an id"
            handler = self.event_handlers[ev.kind]
            try:
                message = handler(ev)
                outcome = {"ok": True, "message": message}
            except StorageError:
                raise  # the event stays unhandled and is retried
            except Exception as exc:  # a bad event is recorded, never retried forever
                if not isinstance(exc, HpodError):
                    log.exception("handling event %d (%s) failed", ev.id, ev.kind)
                outcome = {"ok": False, "message": str(exc)}
            self.store.mark_handled(ev.id)
            with self._handled:
                self._outcomes[ev.id] = outcome
                if len(self._outcomes) > _MAX_OUTCOMES:
                    for key in sorted(self._outcomes)[:_MAX_OUTCOMES // 2]:
                        del self._outcomes[key]
                self._handled.notify_all()

    def wait_handled(self, event_id: int, timeout: float) -> dict[str, Any] | None:
        """The outcome of an event once the main loop handled it, or None after ``timeout``
        (called from the API's threads)."""
        self.wake()
        with self._handled:
            self._handled.wait_for(lambda: event_id in self._outcomes, timeout=timeout)
            return self._outcomes.get(event_id)

    @staticmethod
    def _payload(ev: EventRow) -> dict[str, Any]:
        try:
            data = json.loads(ev.payload_json or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _on_submitted(self, ev: EventRow) -> str:
        payload = self._payload(ev)
        if "spec" not in payload:
            return "no spec in the event (registered by `hpod run`)"
        spec = parse_spec(payload["spec"], source=f"event {ev.id}")
        # The settings in force now decide (the event may predate a narrower allowed_objectives).
        check_objective_allowed(spec.objective.name, self.allowed_objectives)
        active = self.controller.engines.get(spec.name)
        if active is not None:
            if active.engine.spec == spec:
                return f"study {spec.name} is already running"
            paused = active.paused
            self.controller.deactivate(spec.name)
            self.activate(spec, paused=paused)
            return f"study {spec.name} updated"
        row = self.store.get_study(spec.name, missing_ok=True)
        if row is not None and row.state == "completed" and row.spec_json == spec.model_dump_json():
            return f"study {spec.name} is already completed; raise its budget to continue it"
        self._cancelling.discard(spec.name)
        self.activate(spec)
        return f"study {spec.name} running"

    def _refuse(self, action: StudyAction, study: str) -> None:
        """The API refuses an action the study's state does not take; the state may have
        changed since (the study completed meanwhile): refused the same way here."""
        refusal = action_refusal(action, study, self.store.get_study(study).state)
        if refusal is not None:
            raise UsageError(refusal)

    def _on_paused(self, ev: EventRow) -> str:
        assert ev.study
        self._refuse("pause", ev.study)
        active = self.controller.engines.get(ev.study)
        if active is not None:
            active.paused = True
        self.store.update_study(ev.study, state="paused")
        return f"study {ev.study} paused: running trials finish, no new ones start"

    def _on_resumed(self, ev: EventRow) -> str:
        assert ev.study
        self._refuse("resume", ev.study)
        active = self.controller.engines.get(ev.study)
        if active is None:
            self.activate(ev.study)
        else:
            active.paused = False
            self.store.update_study(ev.study, state="running")
        return f"study {ev.study} running"

    def _on_cancelled(self, ev: EventRow) -> str:
        assert ev.study
        self._refuse("cancel", ev.study)
        n = self.store.cancel_queued(ev.study)
        active = self.controller.engines.get(ev.study)
        if active is not None:
            active.paused = True
            self._cancelling.add(ev.study)
        self.store.update_study(ev.study, state="cancelled")
        self.scheduler.remove_study(ev.study)
        return f"study {ev.study} cancelled: {n} queued trial(s) cancelled, running ones finish"

    def _on_retune_event(self, ev: EventRow) -> str:
        payload = self._payload(ev)
        request = RetuneRequest(study=ev.study or "", reason=str(payload.get("reason") or "manual"),
                                note=payload.get("note"), event_id=ev.id)
        return self.retune(request)


def _in_background(fn: Callable[..., Any], *args: Any, name: str) -> Future[None]:
    """Run ``fn`` on a daemon thread: a long objective preparation (downloading or
    training a base model) must neither block the main loop nor delay exit on SIGTERM,
    as a ThreadPoolExecutor's worker (joined at interpreter exit) would."""
    future: Future[None] = Future()

    def run() -> None:
        try:
            fn(*args)
        except BaseException as exc:
            future.set_exception(exc)
        else:
            future.set_result(None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future
