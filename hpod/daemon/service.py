"""``hpod daemon``: startup, the main loop and shutdown of the long-running service.

Startup recovers before it starts new work: trials a crashed daemon left RUNNING are
failed as ``orphaned`` and re-queued, and unhandled events are acted on once. The main
loop is the only thread that drives the controller (engines, local executor); the API,
the metrics server and the scheduler only append events, read the store, or read views
the loop publishes. Signal handlers only set flags. systemd's notify protocol
(``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``) is a datagram on ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import FrameType
from typing import TYPE_CHECKING, Any

from hpod import __version__
from hpod.core.controller import Controller
from hpod.core.monitoring import MonitorService, monitor_states
from hpod.core.retune import RetunePolicy, retune_snapshots, retune_states, waiting_snapshots
from hpod.core.runner import pid_alive_on_this_node
from hpod.core.views import event_dict, study_rows
from hpod.daemon._sd_notify import sd_notify, watchdog_interval
from hpod.daemon.config import DaemonConfig, log_format, resolve_token
from hpod.daemon.scheduling import (
    DaemonScheduler,
    RetuneHook,
    RetuneRequest,
    spec_files,
    window_open,
)
from hpod.daemon.serving import DaemonServing
from hpod.errors import HpodError, StorageError, UsageError
from hpod.execution.executor import LocalExecutor, parse_slots, preload_for
from hpod.execution.ray_executor import RayExecutor
from hpod.http.api import ApiContext, create_app, submit_study
from hpod.http.exporter import (
    DriftSnapshot,
    HpodCollector,
    RetuneSnapshot,
    Snapshot,
    StudySnapshot,
    TrialObserver,
    start_metrics_server,
)
from hpod.http.server import start_server
from hpod.monitors.gpu import gpu_snapshot
from hpod.objectives.base import check_objective_allowed, create_objective
from hpod.spec import load_spec, parse_spec
from hpod.store import Store, private_state_dir

if TYPE_CHECKING:
    from hpod.core.controller import Controller
    from hpod.core.engine import Engine
    from hpod.http.exporter import Snapshot, TrialObserver
    from hpod.spec import StudySpec
    from hpod.store import EventRow, JobRow, Store

__all__ = ["EVENT_HANDLER_KINDS", "Daemon", "run_daemon"]

log = logging.getLogger(__name__)

#: event kinds the main loop acts on (appended unhandled by the API, the scheduler, the spec dir)
EVENT_HANDLER_KINDS = ("study_submitted", "study_paused", "study_resumed", "study_cancelled", "retune_started")
#: consecutive failed loop iterations after which the daemon exits (systemd restarts it)
_MAX_LOOP_FAILURES = 30


class Daemon:
    """One daemon process: store, controller, local executor, API, metrics, scheduler."""

    def __init__(self, config: DaemonConfig):
        self.config = config
        self.started_at = time.time()
        self.node = socket.gethostname()
        self.token: str | None = None
        self.store: Store | None = None
        self.controller: Controller | None = None
        self.scheduler: DaemonScheduler | None = None
        self.observer: TrialObserver | None = None
        self.registry: Any = None
        #: retune policy hooks: called in the main loop for each retune request
        self.retune_hooks: list[RetuneHook] = []
        self.retune_policy: Any = None
        self.monitor_service: Any = None
        self._last_retune_check = 0.0
        #: event kind -> handler; a handler that raises HpodError marks the event handled
        #: with the error recorded, StorageError leaves it for the next iteration
        self.event_handlers: dict[str, Callable[[EventRow], str]] = {
            "study_submitted": self._on_submitted, "study_paused": self._on_paused,
            "study_resumed": self._on_resumed, "study_cancelled": self._on_cancelled,
            "retune_started": self._on_retune_event,
        }
        self._stop = threading.Event()
        self._abort_grace = threading.Event()
        self._reload = threading.Event()
        self._wake = threading.Event()
        self._stop_signal: str | None = None
        self._ready = False
        self._stopping = False
        self._handled = threading.Condition()
        self._outcomes: dict[int, dict[str, Any]] = {}
        self._cancelling: set[str] = set()
        self._preparing: dict[str, Future[None]] = {}
        self._slots_view: list[dict[str, Any]] = []
        self._last_heartbeat = 0.0
        self._watchdog = watchdog_interval()
        self._last_watchdog = 0.0
        self.serving: Any = None
        self._api_server: Any = None
        self._api_thread: threading.Thread | None = None
        self._metrics_server: Any = None
        self._old_handlers: dict[int, Any] = {}
        self._spec_errors: dict[str, str] = {}

    # ================================================================== lifecycle
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
        self._install_signals()
        try:
            self.start()
            sd_notify(f"READY=1\nSTATUS=serving {self.config.api_display}\nMAINPID={os.getpid()}")
            log.info("hpod %s ready: API %s, metrics %s, %d local slot(s)", __version__, self.config.api_display,
                     self.config.metrics or "off", self._n_slots())
            failures = self._loop()
            code = 0 if failures < _MAX_LOOP_FAILURES else 1
        finally:
            self.shutdown()
            self._restore_signals()
        return code

    def _install_signals(self) -> None:
        def stop(signum: int, frame: FrameType | None) -> None:
            if self._stop.is_set():
                self._abort_grace.set()  # a second SIGTERM/SIGINT cuts the grace period short
            self._stop_signal = signal.Signals(signum).name
            self._stop.set()

        def reload(signum: int, frame: FrameType | None) -> None:
            self._reload.set()

        for sig, handler in ((signal.SIGTERM, stop), (signal.SIGINT, stop), (signal.SIGHUP, reload)):
            self._old_handlers[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers.clear()

    def request_stop(self) -> None:
        """Stop as SIGTERM would (for embedding and tests)."""
        self._stop.set()

    def start(self) -> None:
        """Open the store, recover, start the servers and the scheduler."""
        from prometheus_client import CollectorRegistry


        cfg = self.config
        private_state_dir(cfg.state_dir)
        self.token, token_path = resolve_token(cfg)
        log.info("API token: %s", token_path)
        self.store = store = Store.for_state_dir(cfg.state_dir, cfg.storage)
        executor = self._make_executor(store)
        self.controller = Controller(store, cfg.state_dir, executor=executor)
        self.controller.engine_hooks.append(self._attach_engine)
        self.controller.on_study_completed.append(self._on_study_completed)
        self.scheduler = DaemonScheduler(
            store, spec_dir=cfg.spec_dir, spec_poll_seconds=cfg.spec_poll_seconds,
            worker_timeout_seconds=cfg.worker_timeout_seconds, monitor_interval_seconds=cfg.monitor_interval_seconds,
            own_worker=executor.worker_name if executor is not None else None, on_spec_dir_change=self._reload.set)
        self._install_retune_and_monitors(store)
        self.registry = CollectorRegistry()
        self.observer = TrialObserver(self.registry)
        HpodCollector(self._snapshot, registry=self.registry, observer=self.observer)

        store.append_event("daemon_started", payload={
            "version": __version__, "pid": os.getpid(), "node": self.node, "slots": self._n_slots(),
            "api": cfg.api, "metrics": cfg.metrics, "storage": store.safe_url}, handled=True)
        # Recovery comes before any new work: orphans of a crashed daemon are failed and
        # re-queued, then unhandled events (submissions, pauses…) are acted on once.
        for row in store.list_studies():
            if row.state in ("running", "queued", "paused"):
                self._activate_safely(row.name, paused=row.state == "paused")
            self._schedule_from_row(row)
        self._process_events()
        self._scan_spec_dir()
        self._process_events()
        self._heartbeat(force=True)

        if cfg.metrics:
            self._metrics_server = start_metrics_server(cfg.metrics, self.registry)
        self._start_api()

        self.serving = DaemonServing(store, cfg.state_dir, self.token)
        self.scheduler.start()
        self._ready = True

    def _install_retune_and_monitors(self, store: Store) -> None:
        """The retune policy (drift alarms, schedule, ``hpod retune``) and the drift
        monitors: monitors run on the scheduler thread (they only read sources and
        append ``drift_detected`` events); retunes run on the main loop."""

        assert self.scheduler is not None
        self.retune_policy = RetunePolicy(store, self.config.state_dir, activate=self._activate_new_version)
        self.retune_hooks.append(self.retune_policy.on_request)
        self.monitor_service = MonitorService(store, self.config.state_dir)
        self.scheduler.monitor_hooks.append(lambda _store: self.monitor_service.tick())

    def _activate_new_version(self, name: str) -> None:
        assert self.controller is not None
        if name not in self.controller.engines:
            self._activate(name)

    def _n_slots(self) -> int:
        ex = self.controller.executor if self.controller is not None else None
        return len(ex.slots) if ex is not None else 0

    def _make_executor(self, store: Store) -> Any:
        ex = self.config.executor
        if ex.kind == "ray":
            # Trials run on the Ray cluster; this also re-attaches to the trials a killed
            # daemon left running there, before the first lease check.
            return RayExecutor(store, self.config.state_dir, address=ex.address, slots=ex.slots,
                               namespace=ex.namespace, cluster_dir=ex.cluster_dir,
                               abandon_seconds=ex.abandon_seconds, lease_seconds=self.config.lease_seconds,
                               heartbeat_seconds=min(5.0, self.config.lease_seconds / 3),
                               codecarbon=self.config.codecarbon)
        slots = parse_slots(self.config.gpus, self.config.cpu_slots)
        if not slots:
            log.info("no local slots: trials run on remote `hpod worker` processes only")
            return None
        # The fork server imports what the known studies' trials need once (each objective
        # says what: its own module, heavy libraries for heavy objectives); a study
        # submitted later adds its modules when its first trial starts.
        preload: list[str] = []
        for row in store.list_studies():
            if row.state not in ("running", "queued", "paused"):
                continue
            try:
                ref = json.loads(row.spec_json).get("objective") or {}
                modules = preload_for(create_objective(str(ref.get("name")), ref.get("params") or {}))
            except HpodError as exc:  # an objective that no longer loads fails its own trials, not the daemon
                log.warning("study %s: objective not loadable for preloading (%s)", row.name, exc)
                continue
            preload += [m for m in modules if m not in preload]
        return LocalExecutor(store, self.config.state_dir, slots=slots, lease_seconds=self.config.lease_seconds,
                             heartbeat_seconds=min(5.0, self.config.lease_seconds / 3), preload=tuple(preload),
                             codecarbon=self.config.codecarbon)

    def _start_api(self) -> None:

        assert self.store is not None and self.token is not None
        ctx = ApiContext(store=self.store, token=self.token, status=self.status, registry=self.registry,
                         max_request_bytes=self.config.max_request_bytes, wait_handled=self.wait_handled,
                         ready=lambda: self._ready and not self._stopping, wake=self._wake.set,
                         add_observations=self.monitor_service.add_observations
                         if self.monitor_service is not None else None,
                         allowed_objectives=self.config.allowed_objectives)
        app = create_app(ctx)
        try:
            served = start_server(app, self.config.api, name="hpod-api", what="the control API (--api / HPOD_API)",
                                  lifespan="off")
        except UsageError as exc:
            raise HpodError(str(exc)) from None
        self._api_server, self._api_thread = served.server, served.thread

    def shutdown(self) -> None:
        """Stop starting trials, give running ones the grace period, release the rest."""
        self._stopping = True
        sd_notify("STOPPING=1")
        store, controller = self.store, self.controller
        if self.scheduler is not None:
            self.scheduler.shutdown()
        if store is not None and controller is not None:
            running = len(controller.executor.running) if controller.executor is not None else 0
            log.info("stopping (%s): %d trial(s) running, grace period %g s", self._stop_signal or "request",
                     running, self.config.grace_seconds)
            try:
                store.append_event("daemon_stopping", payload={"signal": self._stop_signal, "running": running,
                                                               "grace_seconds": self.config.grace_seconds},
                                   handled=True)
            except StorageError as exc:
                log.warning("cannot record daemon_stopping: %s", exc)

            def abort() -> bool:
                self._ping_watchdog()
                return self._abort_grace.is_set()

            controller.stop(reason="shutdown", grace_seconds=self.config.grace_seconds, should_abort=abort)
            if controller.executor is not None:
                try:
                    store.set_worker_state(controller.executor.worker_name, "stopped")
                except StorageError:
                    pass
        if self.serving is not None:
            self.serving.stop()
        if self._api_server is not None:
            self._api_server.should_exit = True
            assert self._api_thread is not None
            self._api_thread.join(timeout=10)
            if self.config.api.startswith("unix:"):
                try:
                    os.unlink(self.config.api[5:])
                except OSError:
                    pass
        if self._metrics_server is not None:
            self._metrics_server.close()
        if store is not None:
            store.close()
        log.info("stopped")

    # ================================================================== main loop
    def _loop(self) -> int:
        assert self.controller is not None
        controller = self.controller
        failures = 0
        while not self._stop.is_set():
            try:
                if self._reload.is_set():
                    self._reload.clear()
                    log.info("reloading the spec directory")
                    self._scan_spec_dir()
                self._process_events()
                self._check_retunes()
                if self.serving is not None:
                    self.serving.ensure()
                busy = controller.step(studies=self._allowed_studies())
                self._finish_cancelled()
                self._heartbeat()
                failures = 0
            except StorageError as exc:
                failures += 1
                log.warning("database unavailable (attempt %d): %s", failures, exc)
                busy = False
                self._stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
            except Exception:
                failures += 1
                log.exception("main loop iteration failed (%d in a row)", failures)
                busy = False
                self._stop.wait(1.0)
            if failures >= _MAX_LOOP_FAILURES:
                log.error("giving up after %d failed iterations; exiting so that systemd restarts hpod", failures)
                break
            self._ping_watchdog()
            if not busy and not self._stop.is_set():
                if controller.executor is not None and controller.executor.running:
                    controller.wait(0.2)
                else:
                    self._wake.wait(0.2)
                    self._wake.clear()
        return failures

    def _check_retunes(self) -> None:
        """Drift alarms become retunes; finished retunes switch the serving choice."""
        if self.retune_policy is None or time.monotonic() - self._last_retune_check < 2.0:
            return
        self._last_retune_check = time.monotonic()
        for outcome in self.retune_policy.handle_pending():
            log.info("retune of %s: %s (%s)%s", outcome.study, outcome.action, outcome.reason,
                     f" -> {outcome.child}" if outcome.child else "")

    def _ping_watchdog(self) -> None:
        if self._watchdog is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self._watchdog:
            self._last_watchdog = now
            sd_notify("WATCHDOG=1")

    def _allowed_studies(self) -> list[str] | None:
        """Studies that may start trials now: not paused, window open, objective prepared.
        None means all (the common case, no filtering)."""
        assert self.controller is not None
        names = self.controller.active_names()
        allowed = []
        for name in names:
            if self.controller.engines[name].paused:
                continue  # its queued trials stay queued: paused means no new trial starts
            fut = self._preparing.get(name)
            if fut is not None:
                if not fut.done():
                    continue
                self._preparing.pop(name)
                exc = fut.exception()
                if exc is not None:
                    self._fail_study(name, f"objective preparation failed: {exc}")
                    continue
            sched = self.controller.engines[name].engine.spec.schedule
            if sched is not None and sched.window and not window_open(sched.window, timezone=sched.timezone):
                continue
            allowed.append(name)
        return None if len(allowed) == len(names) else allowed

    def _heartbeat(self, *, force: bool = False) -> None:
        """Publish the slots view for the API and renew this node's worker row."""
        assert self.controller is not None and self.store is not None
        executor = self.controller.executor
        if executor is None:
            return
        now_wall, now_mono = time.time(), time.monotonic()
        by_slot = {rt.slot.name: rt for rt in executor.running.values()}
        view = []
        for slot in executor.slots:
            rt = by_slot.get(slot.name)
            view.append({"name": slot.name, "gpu_index": slot.gpu_index,
                         "study": rt.job.study if rt else None, "trial": rt.job.trial_number if rt else None,
                         "started_at": now_wall - (now_mono - rt.started_at) if rt else None})
        self._slots_view = view
        if not force and now_mono - self._last_heartbeat < 5.0:
            return
        self._last_heartbeat = now_mono
        current = [f"{v['study']}#{v['trial']}" for v in view if v["study"] is not None]
        joined = self.store.heartbeat_worker(executor.worker_name, slots=len(executor.slots),
                                             state="busy" if current else "idle", current=current,
                                             gpus=self.config.gpus, studies=None)
        if joined:
            self.store.append_event("worker_joined", payload={"worker": executor.worker_name, "node": self.node,
                                                              "slots": len(executor.slots), "local": True},
                                    handled=True)

    # ================================================================== studies
    def _activate(self, spec: StudySpec | str, *, paused: bool = False) -> Engine:
        """Drive a study: register it, recover its orphans, tell what finished, prepare its objective."""

        assert self.controller is not None
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
        self.store.update_study(engine.name, state="paused" if paused else "running")  # type: ignore[union-attr]
        prepare = getattr(engine.resolved.objective, "prepare", None)
        if prepare is not None:
            self._preparing[engine.name] = _in_background(prepare, self.config.state_dir / "cache",
                                                          name=f"hpod-prepare-{engine.name}")
        return engine

    def _activate_safely(self, name: str, *, paused: bool = False) -> None:
        try:
            self._activate(name, paused=paused)
        except StorageError:
            raise
        except Exception as exc:  # a study whose spec no longer resolves must not stop the others
            log.exception("study %s cannot be resumed", name)
            self._fail_study(name, f"cannot resume: {exc}")

    def _fail_study(self, name: str, message: str) -> None:
        assert self.controller is not None and self.store is not None
        self.controller.deactivate(name)
        self.store.update_study(name, state="failed", message=message[:2000])

    def _attach_engine(self, engine: Engine) -> None:
        observer = self.observer
        if observer is None:
            return
        observer.add_study(engine.name)
        engine.on_told.append(self._observe_told)
        engine.on_suggest.append(observer.observe_suggest)
        assert self.scheduler is not None
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

        assert self.scheduler is not None
        if row.state in ("cancelled", "failed"):
            return
        try:
            spec = parse_spec(json.loads(row.spec_json))
        except HpodError:
            return
        if spec.schedule is not None:
            self.scheduler.set_study_schedule(spec.name, spec.schedule)

    def _finish_cancelled(self) -> None:
        assert self.controller is not None and self.store is not None
        for name in list(self._cancelling):
            active = self.controller.engines.get(name)
            if active is None or active.engine.summary(refresh=True).running == 0:
                if active is not None:
                    active.engine.update_store_summary()
                self.controller.deactivate(name)
                self.store.update_study(name, state="cancelled")
                self._cancelling.discard(name)

    def _scan_spec_dir(self) -> None:
        """Submit specs of the spec directory that are new or changed."""

        spec_dir = self.config.spec_dir
        if spec_dir is None or self.store is None:
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
                             allowed_objectives=self.config.allowed_objectives)
                self._spec_errors.pop(str(path), None)
            except StorageError:
                raise
            except HpodError as exc:
                if self._spec_errors.get(str(path)) != str(exc):  # once per distinct error, not every scan
                    self._spec_errors[str(path)] = str(exc)
                    log.error("spec directory: %s: %s", path.name, exc)

    # ================================================================== events
    def _process_events(self) -> None:
        assert self.store is not None
        for ev in self.store.unhandled_events(kinds=self.event_handlers):
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
            self.store.mark_handled(ev.id)  # type: ignore[arg-type]
            with self._handled:
                self._outcomes[ev.id] = outcome  # type: ignore[index]
                if len(self._outcomes) > 1000:
                    for key in sorted(self._outcomes)[:500]:
                        del self._outcomes[key]
                self._handled.notify_all()

    def wait_handled(self, event_id: int, timeout: float) -> dict[str, Any] | None:
        """The outcome of an event once the main loop handled it, or None after ``timeout``."""
        self._wake.set()
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

        assert self.controller is not None and self.store is not None
        payload = self._payload(ev)
        if "spec" not in payload:
            return "no spec in the event (registered by `hpod run`)"
        spec = parse_spec(payload["spec"], source=f"event {ev.id}")
        # The settings in force now decide (the event may predate a narrower allowed_objectives).
        check_objective_allowed(spec.objective.name, self.config.allowed_objectives)
        active = self.controller.engines.get(spec.name)
        if active is not None:
            if active.engine.spec == spec:
                return f"study {spec.name} is already running"
            paused = active.paused
            self.controller.deactivate(spec.name)
            self._activate(spec, paused=paused)
            return f"study {spec.name} updated"
        row = self.store.get_study(spec.name, missing_ok=True)
        if row is not None and row.state == "completed" and row.spec_json == spec.model_dump_json():
            return f"study {spec.name} is already completed; raise its budget to continue it"
        self._cancelling.discard(spec.name)
        self._activate(spec)
        return f"study {spec.name} running"

    def _on_paused(self, ev: EventRow) -> str:
        assert self.controller is not None and self.store is not None and ev.study
        active = self.controller.engines.get(ev.study)
        if active is None:
            row = self.store.get_study(ev.study)
            assert row is not None
            if row.state not in ("queued", "running"):
                return f"study {ev.study} is {row.state}; nothing to pause"
        else:
            active.paused = True
        self.store.update_study(ev.study, state="paused")
        return f"study {ev.study} paused: running trials finish, no new ones start"

    def _on_resumed(self, ev: EventRow) -> str:
        assert self.controller is not None and self.store is not None and ev.study
        row = self.store.get_study(ev.study)
        assert row is not None
        if row.state in ("completed", "cancelled"):
            return f"study {ev.study} is {row.state}; submit it again to continue"
        active = self.controller.engines.get(ev.study)
        if active is None:
            self._activate(ev.study)
        else:
            active.paused = False
            self.store.update_study(ev.study, state="running")
        return f"study {ev.study} running"

    def _on_cancelled(self, ev: EventRow) -> str:
        assert self.controller is not None and self.store is not None and self.scheduler is not None and ev.study
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
        return self.on_retune(request)

    def on_retune(self, request: RetuneRequest) -> str:
        """Hand a retune request to the retune hooks (the retune policy of issue 5)."""
        if not self.retune_hooks:
            log.info("retune of %s requested (%s); no retune policy is installed", request.study, request.reason)
            return f"retune of {request.study} recorded ({request.reason}); no retune policy is installed"
        messages = []
        for hook in self.retune_hooks:
            outcome = hook(request)
            action = getattr(outcome, "action", None)
            if action is not None:
                child = getattr(outcome, "child", None)
                detail = getattr(outcome, "detail", None)
                messages.append(f"retune of {request.study} {action} ({request.reason})"
                                + (f": {child}" if child else "") + (f" — {detail}" if detail else ""))
        return "; ".join(messages) or f"retune of {request.study} started ({request.reason})"

    # ================================================================== views
    def status(self) -> dict[str, Any]:
        """What ``GET /v1/status`` and ``hpod status`` show (called from the API thread)."""

        assert self.store is not None
        store = self.store
        now = time.time()
        slots = [dict(s) for s in self._slots_view]
        gpu_indices = [s["gpu_index"] for s in slots if s["gpu_index"] is not None]
        readings = {g.index: g for g in gpu_snapshot(gpu_indices)} if gpu_indices else {}
        for s in slots:
            g = readings.get(s["gpu_index"])
            s["power_watts"] = g.power_watts if g else None
            s["memory_used_bytes"] = g.memory_used_bytes if g else None
            s["trial"] = f"{s['study']}#{s['trial']}" if s["study"] is not None else None
        workers = [{"name": w.name, "node": w.node, "state": w.state, "slots": w.slots, "gpus": w.gpus,
                    "current": json.loads(w.current_json or "[]"), "last_heartbeat": w.last_heartbeat,
                    "heartbeat_age_seconds": max(0.0, now - w.last_heartbeat)} for w in store.workers()]
        studies = study_rows(store)
        controller = self.controller
        for st in studies:
            st["next_run"] = self.scheduler.next_run(st["name"]) if self.scheduler is not None else None
            spec_schedule = (json.loads(store.get_study(st["name"]).spec_json).get("schedule")  # type: ignore[union-attr]
                             or {})
            st["window"] = spec_schedule.get("window")
            st["active"] = controller is not None and st["name"] in controller.engines
            st["preparing"] = st["name"] in self._preparing
        events = [event_dict(e) for e in store.events(limit=20, newest=True)]
        return {
            "daemon": {"version": __version__, "pid": os.getpid(), "node": self.node, "started_at": self.started_at,
                       "uptime_seconds": now - self.started_at, "api": self.config.api, "metrics": self.config.metrics,
                       "state": "stopping" if self._stopping else "ready" if self._ready else "starting",
                       "grace_seconds": self.config.grace_seconds,
                       "spec_dir": str(self.config.spec_dir) if self.config.spec_dir else None},
            "storage": store.safe_url,
            "slots": slots,
            "cluster": self._cluster_view(),
            "workers": workers,
            "studies": studies,
            "monitors": monitor_states(store),
            "retunes": retune_states(store),
            "serving": self.serving.status() if self.serving is not None else [],
            "events": events,
        }

    def _cluster_view(self) -> dict[str, Any] | None:
        """The Ray cluster's nodes and resources (published by the executor), or None."""
        executor = self.controller.executor if self.controller is not None else None
        return executor.cluster_view() if isinstance(executor, RayExecutor) else None

    def _snapshot(self) -> Snapshot:
        """The exporter's view of the store (called on each scrape, from the metrics threads)."""

        assert self.store is not None
        store = self.store
        studies = []
        for row in store.list_studies():
            spec = json.loads(row.spec_json)
            counts = json.loads(row.counts_json) if row.counts_json else {}
            strategy = json.loads(row.strategy_json) if row.strategy_json else {}
            multipliers = strategy.get("multipliers") if isinstance(strategy, dict) else None
            budget = spec.get("budget") or {}
            studies.append(StudySnapshot(
                name=row.name, trials_by_state=counts, running=int(counts.get("RUNNING", 0)),
                hypervolume=row.hypervolume, pareto_front_size=row.pareto_front_size,
                best=json.loads(row.best_json) if row.best_json else {},
                energy_joules_total=row.energy_spent_joules or 0.0,
                energy_budget_joules=budget.get("energy_joules"), n_trials_budget=budget.get("n_trials"),
                last_activity_ts=row.last_activity_at,
                lagrange_multipliers={str(k): float(v) for k, v in multipliers.items()}
                if isinstance(multipliers, dict) else {},
                state="pending" if row.state == "queued" else row.state))
        workers: dict[str, int] = {}
        for w in store.workers():
            workers[w.state] = workers.get(w.state, 0) + 1
        drift = [DriftSnapshot(m["study"], m["monitor"], float(m["score"]) if m.get("score") is not None
                               else float("nan"), int(m.get("alarms_total") or 0)) for m in monitor_states(store)]

        retunes: list[RetuneSnapshot] = retune_snapshots(store)
        gpu_indices = [s.gpu_index for s in self.controller.executor.slots if s.gpu_index is not None] \
            if self.controller is not None and self.controller.executor is not None else []
        return Snapshot(version=__version__, started_at=self.started_at, studies=studies, workers_by_state=workers,
                        gpus=gpu_snapshot(gpu_indices or None), events_by_kind=store.event_counts(),
                        drift=drift, retunes=retunes, cluster=self._cluster_view(),
                        waiting=waiting_snapshots(store))


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


def _configure_logging(level: str) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(log_format()))
        root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "uvicorn.error", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def run_daemon(config: DaemonConfig) -> int:
    """Run the daemon in this process until stopped; returns the exit code."""
    _configure_logging(config.log_level)
    return Daemon(config).run()
