"""``hpod daemon``: startup, the main loop and shutdown of the long-running service.

:class:`Daemon` owns the store and one :class:`~hpod.daemon.lifecycle.Lifecycle` of
components, started in this order and stopped in the reverse one: metrics endpoint,
control API, serving servers, local trial slots (the controller), drift monitors,
retune policy, scheduler. So on SIGTERM the scheduler stops first, running trials get
the grace period while the API still answers, and the servers go last.

Startup recovers before it starts new work: trials a crashed daemon left RUNNING are
failed as ``orphaned`` and re-queued, and unhandled events are acted on once
(:class:`~hpod.daemon.studies.Studies`). The main loop is the only thread that drives
the controller; the API, the metrics server and the scheduler only append events, read
the store, or read views the loop publishes. Signal handlers only set flags
(:class:`~hpod.daemon.lifecycle.SignalFlags`). systemd's notify protocol (``READY=1``,
``WATCHDOG=1``, ``STOPPING=1``) is a datagram on ``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from hpod import __version__
from hpod.core.monitoring import drift_snapshots, monitor_states
from hpod.core.retune import retune_snapshots, retune_states, waiting_snapshots
from hpod.core.views import Snapshot, event_dict, study_rows, study_snapshots, worker_rows
from hpod.daemon._sd_notify import sd_notify, watchdog_interval
from hpod.daemon.components import ApiServer, LocalTrials, MetricsEndpoint, Monitors, Retune
from hpod.daemon.config import DaemonConfig, log_format, resolve_token
from hpod.daemon.lifecycle import Lifecycle, SignalFlags
from hpod.daemon.scheduling import DaemonScheduler
from hpod.daemon.serving import DaemonServing
from hpod.daemon.studies import EVENT_HANDLER_KINDS, Studies
from hpod.errors import StorageError
from hpod.execution.ray_executor import RayExecutor
from hpod.http.api import ApiContext, create_app
from hpod.http.exporter import HpodCollector, TrialObserver, create_registry
from hpod.monitors.gpu import gpu_snapshot
from hpod.store import Store, private_state_dir

__all__ = ["EVENT_HANDLER_KINDS", "Daemon", "run_daemon"]

log = logging.getLogger(__name__)

#: consecutive failed loop iterations after which the daemon exits (systemd restarts it)
_MAX_LOOP_FAILURES = 30
#: how long each server component may take to stop
_SERVER_STOP_SECONDS = 10.0


class Daemon:
    """One daemon process: the store and the lifecycle of its components."""

    def __init__(self, config: DaemonConfig):
        self.config = config
        self.started_at = time.time()
        self.node = socket.gethostname()
        self.flags = SignalFlags()
        self.lifecycle = Lifecycle()
        self.token: str | None = None
        self.store: Store | None = None
        self.trials: LocalTrials | None = None
        self.studies: Studies | None = None
        self.scheduler: DaemonScheduler | None = None
        self.monitors: Monitors | None = None
        self.retune: Retune | None = None
        self.serving: DaemonServing | None = None
        self.observer: TrialObserver | None = None
        self.registry: Any = None
        self._wake = threading.Event()
        self._ready = False
        self._stopping = False
        self._watchdog = watchdog_interval()
        self._last_watchdog = 0.0

    # ================================================================== lifecycle
    def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
        self.flags.install()
        try:
            self.start()
            sd_notify(f"READY=1\nSTATUS=serving {self.config.api_display}\nMAINPID={os.getpid()}")
            log.info("hpod %s ready: API %s, metrics %s, %d local slot(s)", __version__, self.config.api_display,
                     self.config.metrics or "off", self._n_slots())
            failures = self._loop()
            code = 0 if failures < _MAX_LOOP_FAILURES else 1
        finally:
            self.shutdown()
            self.flags.restore()
        return code

    def request_stop(self) -> None:
        """Stop as SIGTERM would (for embedding and tests)."""
        self.flags.stop.set()

    def start(self) -> None:
        """Open the store, then start the components in order; recover before the
        scheduler starts and the daemon says it is ready."""
        cfg = self.config
        private_state_dir(cfg.state_dir)
        self.token, token_path = resolve_token(cfg)
        log.info("API token: %s", token_path)
        self.store = store = Store.for_state_dir(cfg.state_dir, cfg.storage)
        self.registry = create_registry()
        self.observer = TrialObserver(self.registry)
        HpodCollector(self._snapshot, registry=self.registry, observer=self.observer,
                      retention_seconds=cfg.metrics_retention_seconds)

        self.scheduler = DaemonScheduler(
            store, spec_dir=cfg.spec_dir, spec_poll_seconds=cfg.spec_poll_seconds,
            worker_timeout_seconds=cfg.worker_timeout_seconds, monitor_interval_seconds=cfg.monitor_interval_seconds,
            on_spec_dir_change=self.flags.reload.set)
        self.monitors = Monitors(store, cfg.state_dir, self.scheduler)
        self.retune = Retune(store, cfg.state_dir, activate=self._activate_new_version)
        self.trials = LocalTrials(store, cfg, should_abort=self._abort_grace,
                                  stop_signal=lambda: self.flags.signal_name)
        self.serving = DaemonServing(store, cfg.state_dir, self.token)

        if cfg.metrics:
            self.lifecycle.start(MetricsEndpoint(cfg.metrics, self.registry))
        self.lifecycle.start(ApiServer(cfg.api, self._make_api))
        self.lifecycle.start(self.serving)
        self.lifecycle.start(self.trials)
        controller = self.trials.controller
        assert controller is not None
        if controller.executor is not None:  # its own row is never "lost" to the scheduler
            self.scheduler.own_worker = controller.executor.worker_name
        self.studies = Studies(store, controller, self.scheduler, state_dir=cfg.state_dir, spec_dir=cfg.spec_dir,
                               observer=self.observer, retune=self.retune.request, wake=self._wake.set,
                               allowed_objectives=self.config.allowed_objectives)
        self.lifecycle.start(self.monitors)
        self.lifecycle.start(self.retune)

        store.append_event("daemon_started", payload={
            "version": __version__, "pid": os.getpid(), "node": self.node, "slots": self._n_slots(),
            "api": cfg.api, "metrics": cfg.metrics, "storage": store.safe_url}, handled=True)
        self.studies.recover()
        self.trials.heartbeat(force=True)
        self.lifecycle.start(self.scheduler)
        self._ready = True

    def _make_api(self) -> Any:
        assert self.store is not None and self.token is not None and self.monitors is not None
        return create_app(ApiContext(
            store=self.store, token=self.token, status=self.status, registry=self.registry,
            max_request_bytes=self.config.max_request_bytes, wait_handled=self.wait_handled,
            ready=lambda: self._ready and not self._stopping, wake=self._wake.set,
            add_observations=self.monitors.service.add_observations,
            allowed_objectives=self.config.allowed_objectives))

    def _activate_new_version(self, name: str) -> None:
        assert self.studies is not None
        self.studies.activate_new_version(name)

    def _abort_grace(self) -> bool:
        self._ping_watchdog()
        return self.flags.abort_grace.is_set()

    def _n_slots(self) -> int:
        return self.trials.n_slots if self.trials is not None else 0

    def wait_handled(self, event_id: int, timeout: float) -> dict[str, Any] | None:
        """The outcome of an event once the main loop handled it, or None after ``timeout``."""
        if self.studies is None:
            self._wake.set()
            return None
        return self.studies.wait_handled(event_id, timeout)

    def shutdown(self) -> None:
        """Stop the components, last started first: the scheduler stops firing, running
        trials get the grace period (the API still answers), then the servers stop."""
        self._stopping = True
        sd_notify("STOPPING=1")
        self.lifecycle.stop(_SERVER_STOP_SECONDS, timeouts={"trials": self.config.grace_seconds})
        if self.store is not None:
            self.store.close()
        log.info("stopped")

    # ================================================================== main loop
    def _loop(self) -> int:
        assert self.trials is not None and self.trials.controller is not None and self.studies is not None
        controller, studies, flags = self.trials.controller, self.studies, self.flags
        failures = 0
        while not flags.stop.is_set():
            try:
                if flags.reload.is_set():
                    flags.reload.clear()
                    log.info("reloading the spec directory")
                    studies.scan_spec_dir()
                studies.process_events()
                if self.retune is not None:
                    self.retune.check()
                if self.serving is not None:
                    self.serving.ensure()
                busy = controller.step(studies=studies.allowed())
                studies.finish_cancelled()
                self.trials.heartbeat()
                failures = 0
            except StorageError as exc:
                failures += 1
                log.warning("database unavailable (attempt %d): %s", failures, exc)
                busy = False
                flags.stop.wait(min(30.0, 0.5 * 2 ** min(failures, 6)))
            except Exception:
                failures += 1
                log.exception("main loop iteration failed (%d in a row)", failures)
                busy = False
                flags.stop.wait(1.0)
            if failures >= _MAX_LOOP_FAILURES:
                log.error("giving up after %d failed iterations; exiting so that systemd restarts hpod", failures)
                break
            self._ping_watchdog()
            if not busy and not flags.stop.is_set():
                if controller.executor is not None and controller.executor.running:
                    controller.wait(0.2)
                else:
                    self._wake.wait(0.2)
                    self._wake.clear()
        return failures

    def _ping_watchdog(self) -> None:
        if self._watchdog is None:
            return
        now = time.monotonic()
        if now - self._last_watchdog >= self._watchdog:
            self._last_watchdog = now
            sd_notify("WATCHDOG=1")

    # ================================================================== views
    def status(self) -> dict[str, Any]:
        """What ``GET /v1/status`` and ``hpod status`` show (called from the API thread)."""

        assert self.store is not None
        store = self.store
        now = time.time()
        slots = [dict(s) for s in self.trials.slots_view] if self.trials is not None else []
        gpu_indices = [s["gpu_index"] for s in slots if s["gpu_index"] is not None]
        readings = {g.index: g for g in gpu_snapshot(gpu_indices)} if gpu_indices else {}
        for s in slots:
            g = readings.get(s["gpu_index"])
            s["power_watts"] = g.power_watts if g else None
            s["memory_used_bytes"] = g.memory_used_bytes if g else None
            s["trial"] = f"{s['study']}#{s['trial']}" if s["study"] is not None else None
        workers = worker_rows(store)
        studies = study_rows(store)
        controller = self.trials.controller if self.trials is not None else None
        for st in studies:
            st["next_run"] = self.scheduler.next_run(st["name"]) if self.scheduler is not None else None
            spec_schedule = (json.loads(store.get_study(st["name"]).spec_json).get("schedule")
                             or {})
            st["window"] = spec_schedule.get("window")
            st["active"] = controller is not None and st["name"] in controller.engines
            st["preparing"] = self.studies is not None and st["name"] in self.studies.preparing
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
        executor = self.trials.executor if self.trials is not None else None
        return executor.cluster_view() if isinstance(executor, RayExecutor) else None

    def _snapshot(self) -> Snapshot:
        """The exporter's view of the store (called on each scrape, from the metrics threads)."""

        assert self.store is not None
        store = self.store
        studies = study_snapshots(store)
        workers = store.workers_by_state()
        drift = drift_snapshots(store)

        retunes = retune_snapshots(store)
        executor = self.trials.executor if self.trials is not None else None
        gpu_indices = [s.gpu_index for s in executor.slots if s.gpu_index is not None] if executor is not None else []
        return Snapshot(version=__version__, started_at=self.started_at, studies=studies, workers_by_state=workers,
                        gpus=gpu_snapshot(gpu_indices or None), events_by_kind=store.event_counts(),
                        drift=drift, retunes=retunes, cluster=self._cluster_view(),
                        waiting=waiting_snapshots(store))


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
