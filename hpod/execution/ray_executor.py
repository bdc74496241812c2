"""Runs trials on a Ray cluster: one detached Ray actor per trial, placed by Ray.

The Ray executor is a drop-in for :class:`~hpod.execution.executor.LocalExecutor` in
the controller: it claims the store's queued jobs under a lease, renews the leases
while the trials run and stores each outcome fenced by the lease token, so the engine,
its events, metrics and budget accounting are the same. What differs is where a trial
runs: each claimed job becomes a :class:`~hpod.execution._ray_actor.TrialRunner` actor
with the study's ``resources`` (``num_cpus``, ``num_gpus``, custom resources); Ray
picks the node, and the actor runs the usual trial child there and relays its reports.

Outcomes: the child's result or error is the trial's outcome (a crash or an OOM kill of
the child is the trial's own failure, not retried); the actor's death — its node lost,
the actor killed from outside — releases the job as ``worker_lost``, which the engine
re-queues up to ``budget.max_retries``. A trial asking for more than any node of the
cluster has fails at once as infeasible instead of waiting forever.

Restarts: actors are detached and named after the job's lease token, and the worker
name is stable for a state directory, so a daemon killed with SIGKILL re-attaches on
restart to every trial it had in flight (renewing their leases before any lease check
can fail them) and collects results that finished meanwhile; a job whose actor is gone
is released as ``orphaned`` (re-queued). Actors of this daemon that no running job
names any more are killed. A clean stop (SIGTERM) waits the grace period, then kills the
actors and releases their jobs with reason ``shutdown``.

Ray is imported inside functions only (``pip install hpod[ray]``).

Concurrency: one executor per process, driven by one thread calling :meth:`poll`;
:meth:`cluster_view` may be read from any thread.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpod.errors import StorageError, UsageError
from hpod.execution._ray_actor import TrialRunner
from hpod.execution._trial_child import INFRA_REASONS
from hpod.execution.executor import LocalExecutor, Slot
from hpod.spec import ResourcesSpec
from hpod.store import JobRow, Store

__all__ = ["RayExecutor", "RayTrial", "connect_ray", "ray_available"]

log = logging.getLogger(__name__)

#: how long one long-poll of a trial actor waits for the trial's next message, seconds
_EXCHANGE_SECONDS = 1.0
#: how often the cluster view (nodes, resources) is refreshed, seconds
_VIEW_SECONDS = 5.0


def _ray() -> Any:
    """The ``ray`` module (imported here, on first use: a heavy optional library)."""
    import ray

    return ray


def ray_available() -> bool:
    """Whether Ray can be imported (``pip install hpod[ray]``)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def connect_ray(address: str, *, namespace: str) -> None:
    """Connect this process to the Ray cluster at ``address`` (``auto``, ``HOST:PORT`` of
    the GCS, or ``ray://HOST:10001`` for Ray Client); a no-op when already connected."""
    try:
        ray = _ray()
    except ImportError:
        raise UsageError("executor.kind ray: Ray is not installed; install it with `pip install hpod[ray]`") from None
    if ray.is_initialized():
        return
    _check_reachable(address)
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        raise UsageError(f"executor.address: cannot connect to the Ray cluster at {address!r}: {exc}") from None


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Refuse an address nothing listens on before ``ray.init``, which retries a dead
    address for minutes: ``HOST:PORT`` and ``ray://HOST:PORT`` are probed with one TCP
    connection (``auto`` is Ray's to resolve)."""
    target = address.removeprefix("ray://")
    if address == "auto" or "://" in target:
        return
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"executor.address: expected auto, HOST:PORT or ray://HOST:PORT (found {address!r})")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise UsageError(f"executor.address: cannot reach the Ray cluster at {address!r} "
                         f"({exc.strerror or exc}); is `ray start --head` running there?") from None


@dataclass
class RayTrial:
    """A trial in flight on the cluster (the Ray counterpart of ``RunningTrial``)."""

    job: JobRow
    slot: Slot
    actor: Any
    actor_name: str
    #: the pending ``exchange`` call
    ref: Any
    started_at: float
    timeout: float | None
    kill_reason: str | None = None
    #: ``(question number, answer)`` to the child's last question, carried by the next exchange
    answer: tuple[int, Any] | None = None
    node_id: str | None = None
    adopted: bool = False


def _as_resources(spec: ResourcesSpec) -> dict[str, Any]:
    return {"num_cpus": float(spec.cpus_per_trial), "num_gpus": float(spec.gpus_per_trial),
            "resources": dict(spec.custom)}


class RayExecutor(LocalExecutor):
    """Claims queued jobs and runs each as a Ray actor on the cluster."""

    def __init__(self, store: Store, state_dir: Path, *, address: str = "auto", slots: int | None = None,
                 namespace: str = "hpod", worker_name: str | None = None, lease_seconds: float = 30.0,
                 heartbeat_seconds: float = 5.0, codecarbon: bool = True, abandon_seconds: float = 600.0,
                 cluster_dir: Path | None = None, preload: Iterable[str] = ()):
        """
        Args:
            address: the Ray cluster (``auto``, ``HOST:PORT``, ``ray://HOST:10001``).
            slots: trials in flight at once; None: the cluster's GPUs if it has any, else its CPUs.
            namespace: the Ray namespace of the trial actors.
            worker_name: the name jobs are claimed under; default ``ray@<host>:<hash of
                state_dir>``, the same after a restart so the daemon re-attaches.
            abandon_seconds: an actor no driver contacted for this long stops its trial.
            cluster_dir: where trials keep artifacts and caches on the nodes (storage the
                whole cluster can read, for PBT checkpoints); default ``state_dir``.
        """
        del preload  # each actor is a fresh process: nothing to preload into
        connect_ray(address, namespace=namespace)
        ray = _ray()

        self.address = address
        self.namespace = namespace
        self.abandon_seconds = abandon_seconds
        self.cluster_dir = cluster_dir or state_dir
        digest = hashlib.sha1(str(Path(state_dir).resolve()).encode()).hexdigest()[:8]
        name = worker_name or f"ray@{socket.gethostname()}:{digest}"
        self._prefix = f"hpod-{hashlib.sha1(name.encode()).hexdigest()[:8]}-"
        if slots is None:
            total = ray.cluster_resources()
            slots = int(total.get("GPU", 0)) or int(total.get("CPU", 1))
        if slots < 1:
            raise UsageError(f"executor.slots: must be >= 1 (found {slots})")
        super().__init__(store, state_dir, slots=[Slot(name=f"ray{i}") for i in range(slots)], worker_name=name,
                         lease_seconds=lease_seconds, heartbeat_seconds=heartbeat_seconds, codecarbon=codecarbon)
        self.running: dict[int, RayTrial] = {}  # type: ignore[assignment]  # a RayTrial holds an actor where the parent's RunningTrial holds a process
        self._runner_class = ray.remote(TrialRunner)
        self._to_kill: dict[int, Any] = {}
        self._view: dict[str, Any] = {}
        self._view_at = 0.0
        self.refresh_cluster_view()
        self._adopt()

    def _preload(self, modules: Iterable[str]) -> None:
        """Nothing to preload: trials start in the actors' own processes on the nodes."""

    # ------------------------------------------------------------------ names
    def artifact_dir(self, study: str, trial_number: int) -> Path:
        return self.cluster_dir / "artifacts" / study / f"trial-{trial_number}"

    def _actor_name(self, job: JobRow) -> str:
        return f"{self._prefix}{job.id}-{job.lease_token}"

    # ------------------------------------------------------------------ cluster
    def refresh_cluster_view(self) -> dict[str, Any]:
        """Nodes and resources as Ray reports them (also published for :meth:`cluster_view`)."""
        ray = _ray()

        try:
            per_node: dict[str, dict[str, float]] = ray._private.state.available_resources_per_node()
        except Exception:  # a private helper: per-node availability is a bonus
            per_node = {}
        nodes = []
        for n in ray.nodes():
            total = {k: float(v) for k, v in (n.get("Resources") or {}).items() if not k.startswith("node:")}
            avail = {k: float(v) for k, v in per_node.get(n["NodeID"], {}).items() if not k.startswith("node:")}
            nodes.append({"node_id": n["NodeID"], "address": n.get("NodeManagerAddress"),
                          "alive": bool(n.get("Alive")), "resources_total": total,
                          "resources_available": avail if n.get("Alive") else {}})
        self._view = {
            "kind": "ray", "address": self.address, "namespace": self.namespace,
            "nodes": nodes,
            "resources_total": {k: float(v) for k, v in ray.cluster_resources().items() if not k.startswith("node:")},
            "resources_available": {k: float(v) for k, v in ray.available_resources().items()
                                    if not k.startswith("node:")},
            "updated_at": time.time(),
        }
        self._view_at = time.monotonic()
        return self._view

    def cluster_view(self) -> dict[str, Any]:
        """The last published view of the cluster (thread-safe: a dict swapped whole)."""
        return self._view

    def _infeasible(self, resources: dict[str, Any]) -> str | None:
        """Why no alive node could ever host these resources, or None."""
        need = {"CPU": resources["num_cpus"], "GPU": resources["num_gpus"], **resources["resources"]}
        need = {k: v for k, v in need.items() if v > 0}
        nodes = [n for n in self._view.get("nodes", []) if n["alive"]]
        if any(all(n["resources_total"].get(k, 0.0) >= v for k, v in need.items()) for n in nodes):
            return None
        wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(need.items()))
        biggest = ", ".join(sorted({f"{k}={v:g}" for n in nodes for k, v in n["resources_total"].items()
                                    if k in need})) or "none of them"
        return f"infeasible: no node of the Ray cluster offers {wanted} (nodes have: {biggest})"

    # ------------------------------------------------------------------ main step
    def poll(self, *, studies: Iterable[str] | None = None, start_new: bool = True,
             exclude_studies: Iterable[str] | None = None) -> list[JobRow]:
        if time.monotonic() - self._view_at >= _VIEW_SECONDS:
            try:
                self.refresh_cluster_view()
            except Exception as exc:  # the GCS restarting: keep the last view
                log.warning("cannot read the Ray cluster's state: %s", exc)
        return super().poll(studies=studies, start_new=start_new, exclude_studies=exclude_studies)

    def _started_at_claim(self, job: JobRow, slot: Slot, announced: list[JobRow]) -> dict[str, Any] | None:
        return None  # a Ray trial is placed by the cluster: its event is stored once the actor is created

    def _start(self, job: JobRow, slot: Slot, *, announced: bool = False) -> None:
        prepared = self._payload(job, slot)
        if prepared is None:
            return
        payload, spec = prepared
        resources = _as_resources(spec.resources)
        why = self._infeasible(resources)
        if why is not None:
            self._pending_results.append((job, None, why))
            return
        name = self._actor_name(job)
        actor = self._runner_class.options(
            name=name, namespace=self.namespace, lifetime="detached", max_restarts=0, max_concurrency=4,
            num_cpus=resources["num_cpus"], num_gpus=resources["num_gpus"], resources=resources["resources"] or None,
        ).remote(payload, self.abandon_seconds)
        rt = RayTrial(job=job, slot=slot, actor=actor, actor_name=name,
                      ref=actor.exchange.remote(None, _EXCHANGE_SECONDS), started_at=time.monotonic(),
                      timeout=spec.budget.trial_timeout_seconds)
        self.running[job.id] = rt  # type: ignore[index]  # a stored row has an id; SQLModel types it Optional for inserts
        try:
            self.store.append_event("trial_started", study=job.study, trial_number=job.trial_number,
                                    payload={"worker": self.worker_name, "slot": slot.name, "attempt": job.attempt,
                                             "params": payload["params"], "executor": "ray", "actor": name,
                                             "resources": resources}, handled=True)
        except StorageError as exc:
            log.warning("cannot record trial_started: %s", exc)

    def _reap(self) -> list[JobRow]:
        ray = _ray()

        done: list[JobRow] = []
        if not self.running:
            return done
        by_ref = {rt.ref: rt for rt in self.running.values()}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        for ref in ready:
            rt = by_ref[ref]
            outcome = self._receive(rt)
            if outcome is not None:
                done.append(self._finish(rt, *outcome))
        now = time.monotonic()
        for rt in list(self.running.values()):
            if rt.timeout is not None and rt.kill_reason is None and now - rt.started_at > rt.timeout:
                self._kill(rt, f"timeout: trial ran longer than {rt.timeout:g} s")
        return done

    def _receive(self, rt: RayTrial) -> tuple[dict[str, Any] | None, str | None] | None:
        """Handle the answer of ``rt``'s pending exchange; the trial's outcome, or None
        while it runs (a new exchange is then pending)."""
        ray = _ray()
        from ray.exceptions import ActorUnavailableError, RayActorError

        try:
            messages = ray.get(rt.ref)
        except ActorUnavailableError:
            # A transient loss of contact (the actor's node is busy or reconnecting): ask again.
            rt.ref = rt.actor.exchange.remote(rt.answer, _EXCHANGE_SECONDS)
            return None
        except RayActorError as exc:
            if rt.kill_reason is None:
                log.warning("trial %s/%d: its Ray actor died (%s); worker_lost", rt.job.study, rt.job.trial_number,
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return None, rt.kill_reason or "worker_lost"
        rt.answer = None
        for msg in messages:
            kind = msg[0]
            if kind == "result":
                return msg[1], None
            if kind == "error":
                return None, rt.kill_reason or msg[1]
            if kind == "report":
                _, seed_index, step, values, number = msg
                stop = False
                handler = self.report_handlers.get(rt.job.study)
                if handler is not None:
                    try:
                        stop = bool(handler(rt.job, seed_index, step, values))
                    except Exception:  # a pruner bug must not kill trials
                        log.exception("report handler failed")
                rt.answer = (number, stop)
            elif kind == "seed_done":
                _, seed_index, values, number = msg
                more = True
                seed_handler = self.seed_handlers.get(rt.job.study)
                if seed_handler is not None:
                    try:
                        more = bool(seed_handler(rt.job, seed_index, values))
                    except Exception:  # a bug here must not kill trials: run every seed
                        log.exception("seed handler failed")
                rt.answer = (number, more)
        rt.ref = rt.actor.exchange.remote(rt.answer, _EXCHANGE_SECONDS)
        return None

    def _finish(self, rt: RayTrial, result: dict[str, Any] | None, reason: str | None) -> JobRow:
        del self.running[rt.job.id]  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
        if rt.kill_reason and result is None:
            reason = rt.kill_reason
        # The actor holds the result until it is stored: a crash before then re-attaches.
        self._to_kill[rt.job.id] = rt.actor  # type: ignore[index]  # a stored row has an id; SQLModel types it Optional for inserts
        self._pending_results.append((rt.job, result, reason))
        return rt.job

    def _kill(self, rt: RayTrial, reason: str) -> None:  # type: ignore[override]  # only ever called with this executor's own RayTrials
        ray = _ray()

        rt.kill_reason = reason
        try:
            ray.kill(rt.actor, no_restart=True)
        except Exception as exc:  # already gone
            log.debug("ray.kill(%s): %s", rt.actor_name, exc)

    def _flush_results(self) -> None:
        """Store outcomes (``worker_lost`` and other infrastructure reasons release the
        job, which the engine re-queues); then end the finished trials' actors."""
        ray = _ray()

        remaining = []
        for job, result, reason in self._pending_results:
            try:
                if result is None and reason in INFRA_REASONS:
                    self.store.release_jobs([job.id], reason=reason, worker=self.worker_name)  # type: ignore[list-item]  # a stored row has an id; SQLModel types it Optional for inserts
                    stored = True
                else:
                    stored = self.store.finish_job(job.id, job.lease_token or "", result=result,  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                                                   fail_reason=None if result is not None else reason)
            except StorageError as exc:
                log.warning("cannot store result of job %s (will retry): %s", job.id, exc)
                remaining.append((job, result, reason))
                continue
            if not stored:
                log.warning("job %s: lease lost before the result was stored; result dropped", job.id)
            actor = self._to_kill.pop(job.id, None)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
            if actor is not None:
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
            for cb in self.on_finished:
                cb(job, result, reason)
        self._pending_results = remaining

    def wait(self, timeout: float, *, extra: Iterable[Any] = ()) -> None:
        """Sleep until a trial's actor answers, or ``timeout`` passes (``extra``, file
        descriptors to wake on, are not watched here: Ray's wait takes object refs)."""
        ray = _ray()

        refs = [rt.ref for rt in self.running.values()]
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)

    # ------------------------------------------------------------------ restart
    def _adopt(self) -> None:
        """Re-attach to the trials this worker name had in flight before a restart;
        release the ones whose actor is gone, kill actors no running job names."""
        ray = _ray()

        try:
            held = [j for j in self.store.jobs(states=["running"]) if j.worker == self.worker_name]
        except StorageError as exc:
            log.warning("cannot look for trials to re-attach to: %s", exc)
            held = []
        wanted = set()
        orphans: list[int] = []
        free = list(self.slots)
        for job in held:
            name = self._actor_name(job)
            try:
                actor = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                orphans.append(job.id)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                continue
            wanted.add(name)
            slot = free.pop(0) if free else Slot(name=f"ray-adopted{job.id}")
            spec_timeout = None
            try:
                spec_timeout = self._study(job.study).spec.budget.trial_timeout_seconds
            except Exception:
                pass
            self.running[job.id] = RayTrial(  # type: ignore[index]  # a stored row has an id; SQLModel types it Optional for inserts
                job=job, slot=slot, actor=actor, actor_name=name, ref=actor.exchange.remote(None, _EXCHANGE_SECONDS),
                started_at=time.monotonic(), timeout=spec_timeout, adopted=True)
        if self.running:
            # Renew now: the controller's first lease check must not fail adopted trials.
            self._renew()
            self._last_heartbeat = time.monotonic()
            log.info("re-attached to %d trial(s) running on the Ray cluster", len(self.running))
            self.store.append_event("trials_reattached", payload={
                "worker": self.worker_name, "trials": [f"{rt.job.study}#{rt.job.trial_number}"
                                                       for rt in self.running.values()]}, handled=True)
        if orphans:
            log.warning("%d trial(s) of a previous run have no Ray actor any more; released as orphaned", len(orphans))
            self.store.release_jobs(orphans, reason="orphaned", worker=self.worker_name)
        try:
            names = ray.util.list_named_actors(all_namespaces=True)
        except Exception:
            names = []
        for entry in names:
            ns, actor_name = (entry.get("namespace"), str(entry.get("name"))) if isinstance(entry, dict) else \
                (self.namespace, str(entry))
            if ns == self.namespace and actor_name.startswith(self._prefix) and actor_name not in wanted:
                try:
                    ray.kill(ray.get_actor(actor_name, namespace=self.namespace), no_restart=True)
                    log.info("killed stale trial actor %s", actor_name)
                except Exception:
                    pass

    # ------------------------------------------------------------------ stopping
    def stop(self, *, reason: str, grace_seconds: float = 0.0, should_abort: Callable[[], bool] | None = None) -> None:
        """Wait up to ``grace_seconds`` for running trials, then kill the rest's actors
        and release their jobs with ``reason`` (the engine re-queues them)."""
        deadline = time.monotonic() + grace_seconds
        while self.running and time.monotonic() < deadline:
            if should_abort is not None and should_abort():
                break
            self.poll(start_new=False)
            self.wait(0.2)
        jobs = [rt.job.id for rt in self.running.values()]
        for rt in self.running.values():
            self._kill(rt, reason)
        self.running.clear()
        self._flush_results()
        for _ in range(20):
            try:
                self.store.release_jobs(jobs, reason=reason, worker=self.worker_name)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                break
            except StorageError:
                time.sleep(0.5)

    def where(self, job_id: int, timeout: float = 30.0) -> dict[str, Any] | None:
        """Node, pid and devices of a running trial (None when it is not running here)."""
        ray = _ray()

        rt = self.running.get(job_id)
        if rt is None:
            return None
        info: dict[str, Any] = ray.get(rt.actor.where.remote(), timeout=timeout)
        rt.node_id = info["node_id"]
        return info

