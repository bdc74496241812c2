"""The daemon's components (see :mod:`hpod.daemon.lifecycle`): the control API server,
the Prometheus metrics server, the drift monitors, the retune policy and the local
trial slots. The serving servers (:class:`~hpod.daemon.serving.DaemonServing`) and the
scheduler (:class:`~hpod.daemon.scheduling.DaemonScheduler`) are components too.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.core.controller import Controller
from hpod.core.monitoring import MonitorService
from hpod.core.retune import RetunePolicy
from hpod.daemon.config import DaemonConfig
from hpod.daemon.scheduling import DaemonScheduler, RetuneHook, RetuneRequest
from hpod.errors import HpodError, StorageError, UsageError
from hpod.execution.executor import LocalExecutor, fork_server_preload, parse_slots
from hpod.execution.ray_executor import RayExecutor
from hpod.http.exporter import MetricsServer, start_metrics_server
from hpod.http.server import ThreadedServer, start_server
from hpod.objectives.base import check_objective_allowed, create_objective
from hpod.spec import parse_spec
from hpod.store import Store

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["ApiServer", "LocalTrials", "MetricsEndpoint", "Monitors", "Retune"]

log = logging.getLogger(__name__)


class ApiServer:
    """The control API (``--api``): the app is built when the server starts."""

    name = "api"

    def __init__(self, address: str, make_app: Callable[[], Any]):
        self.address = address
        self.make_app = make_app
        self.served: ThreadedServer | None = None

    def start(self) -> None:
        try:
            self.served = start_server(self.make_app(), self.address, name="hpod-api",
                                       what="the control API (--api / HPOD_API)", lifespan="off")
        except UsageError as exc:
            raise HpodError(str(exc)) from None

    def stop(self, timeout: float) -> None:
        if self.served is None:
            return
        self.served.stop(timeout)
        self.served = None
        if self.address.startswith("unix:"):
            try:
                os.unlink(self.address[5:])
            except OSError:
                pass


class MetricsEndpoint:
    """The Prometheus endpoint (``--metrics``) serving ``registry``."""

    name = "metrics"

    def __init__(self, address: str, registry: CollectorRegistry):
        self.address = address
        self.registry = registry
        self.server: MetricsServer | None = None

    def start(self) -> None:
        self.server = start_metrics_server(self.address, self.registry)

    def stop(self, timeout: float) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None


class Monitors:
    """The drift monitors: they run on the scheduler's thread (they only read their
    sources and append ``drift_detected`` events); the API posts observations to them."""

    name = "monitors"

    def __init__(self, store: Store, state_dir: Path, scheduler: DaemonScheduler):
        self.service = MonitorService(store, state_dir)
        self.scheduler = scheduler

    def _tick(self, _store: Store) -> None:
        self.service.tick()

    def start(self) -> None:
        self.scheduler.monitor_hooks.append(self._tick)

    def stop(self, timeout: float) -> None:
        if self._tick in self.scheduler.monitor_hooks:
            self.scheduler.monitor_hooks.remove(self._tick)


class Retune:
    """The retune policy: drift alarms, schedules and ``hpod retune`` become retunes
    (run from the main loop); finished retunes switch what is served."""

    name = "retune"
    #: seconds between two looks at pending drift alarms and finished retunes
    CHECK_SECONDS = 2.0

    def __init__(self, store: Store, state_dir: Path, activate: Callable[[str], None]):
        self.store = store
        self.state_dir = state_dir
        self.activate = activate
        self.policy: RetunePolicy | None = None
        #: called for each retune request (the policy's, plus any an embedder adds)
        self.hooks: list[RetuneHook] = []
        self._last_check = 0.0

    def start(self) -> None:
        self.policy = RetunePolicy(self.store, self.state_dir, activate=self.activate)
        self.hooks.append(self.policy.on_request)

    def stop(self, timeout: float) -> None:
        if self.policy is not None and self.policy.on_request in self.hooks:
            self.hooks.remove(self.policy.on_request)
        self.policy = None

    def check(self) -> None:
        """Drift alarms become retunes; finished retunes switch the serving choice."""
        if self.policy is None or time.monotonic() - self._last_check < self.CHECK_SECONDS:
            return
        self._last_check = time.monotonic()
        for outcome in self.policy.handle_pending():
            log.info("retune of %s: %s (%s)%s", outcome.study, outcome.action, outcome.reason,
                     f" -> {outcome.child}" if outcome.child else "")

    def request(self, request: RetuneRequest) -> str:
        """Hand a retune request to the hooks; returns what they did, in words."""
        if not self.hooks:
            log.info("retune of %s requested (%s); no retune policy is installed", request.study, request.reason)
            return f"retune of {request.study} recorded ({request.reason}); no retune policy is installed"
        messages = []
        for hook in self.hooks:
            outcome = hook(request)
            action = getattr(outcome, "action", None)
            if action is not None:
                child = getattr(outcome, "child", None)
                detail = getattr(outcome, "detail", None)
                messages.append(f"retune of {request.study} {action} ({request.reason})"
                                + (f": {child}" if child else "") + (f" — {detail}" if detail else ""))
        return "; ".join(messages) or f"retune of {request.study} started ({request.reason})"


class LocalTrials:
    """This node's trial slots (``--gpus`` / ``--cpu-slots``) and the controller the
    main loop drives. Stopping gives running trials the grace period (cut short by
    ``should_abort``), then hands the rest back to the queue."""

    name = "trials"
    #: seconds between two heartbeats of this node's worker row
    HEARTBEAT_SECONDS = 5.0

    def __init__(self, store: Store, config: DaemonConfig, *, should_abort: Callable[[], bool],
                 stop_signal: Callable[[], str | None]):
        self.store = store
        self.config = config
        self.should_abort = should_abort
        self.stop_signal = stop_signal
        self.node = socket.gethostname()
        self.controller: Controller | None = None
        #: the slots as the API shows them (published by :meth:`heartbeat`)
        self.slots_view: list[dict[str, Any]] = []
        self._last_heartbeat = 0.0

    @property
    def executor(self) -> LocalExecutor | None:
        return self.controller.executor if self.controller is not None else None

    @property
    def n_slots(self) -> int:
        return len(self.executor.slots) if self.executor is not None else 0

    def start(self) -> None:
        self.controller = Controller(self.store, self.config.state_dir, executor=self._make_executor())

    def _make_executor(self) -> LocalExecutor | None:
        ex = self.config.executor
        if ex.kind == "ray":
            # Trials run on the Ray cluster; this also re-attaches to the trials a killed
            # daemon left running there, before the first lease check.
            return RayExecutor(self.store, self.config.state_dir, address=ex.address, slots=ex.slots,
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
        preload = fork_server_preload(_active_objectives(self.store, self.config.allowed_objectives), slots)
        return LocalExecutor(self.store, self.config.state_dir, slots=slots, lease_seconds=self.config.lease_seconds,
                             heartbeat_seconds=min(5.0, self.config.lease_seconds / 3), preload=preload,
                             codecarbon=self.config.codecarbon)

    def stop(self, timeout: float) -> None:
        controller = self.controller
        if controller is None:
            return
        running = len(controller.executor.running) if controller.executor is not None else 0
        log.info("stopping (%s): %d trial(s) running, grace period %g s", self.stop_signal() or "request",
                 running, timeout)
        try:
            self.store.append_event("daemon_stopping", payload={"signal": self.stop_signal(), "running": running,
                                                                "grace_seconds": timeout}, handled=True)
        except StorageError as exc:
            log.warning("cannot record daemon_stopping: %s", exc)
        controller.stop(reason="shutdown", grace_seconds=timeout, should_abort=self.should_abort)
        if controller.executor is not None:
            try:
                self.store.set_worker_state(controller.executor.worker_name, "stopped")
            except StorageError:
                pass

    def heartbeat(self, *, force: bool = False) -> None:
        """Publish the slots view for the API and renew this node's worker row."""
        executor = self.executor
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
        self.slots_view = view
        if not force and now_mono - self._last_heartbeat < self.HEARTBEAT_SECONDS:
            return
        self._last_heartbeat = now_mono
        # The same shape as a remote worker's (hpod.daemon.worker): one dict per running trial.
        current = [{"study": v["study"], "trial": v["trial"], "slot": v["name"], "gpu_index": v["gpu_index"]}
                   for v in view if v["study"] is not None]
        joined = self.store.heartbeat_worker(executor.worker_name, slots=len(executor.slots),
                                             state="busy" if current else "idle", current=current,
                                             gpus=self.config.gpus, studies=None)
        if joined:
            self.store.append_event("worker_joined", payload={"worker": executor.worker_name, "node": self.node,
                                                              "slots": len(executor.slots), "local": True},
                                    handled=True)


def _active_objectives(store: Store, allowed: tuple[str, ...]) -> list[Any]:
    """The objectives of the studies that may run trials here (for the preload policy);
    an objective the settings no longer allow is not imported."""
    objectives = []
    for row in store.list_studies():
        if row.state not in ("running", "queued", "paused"):
            continue
        try:
            spec = parse_spec(json.loads(row.spec_json))
            check_objective_allowed(spec.objective.name, allowed)
            objectives.append(create_objective(spec.objective.name, spec.objective.params))
        except HpodError as exc:  # the study fails on its own when it runs; preload without it
            log.info("study %s: objective not loaded for the fork server (%s)", row.name, exc)
    return objectives
