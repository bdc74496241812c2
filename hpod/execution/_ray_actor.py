"""The Ray side of a trial: an actor that runs one trial in a child process on its node.

:class:`TrialRunner` is a plain class; :class:`~hpod.execution.ray_executor.RayExecutor`
turns it into a Ray actor (``ray.remote(TrialRunner)``) with the trial's resources, so
this module never imports Ray. The actor starts the same trial child as the local
executor (:func:`~hpod.execution._trial_child.trial_main`: objective, seeds, meters)
and relays its messages: the driver long-polls :meth:`TrialRunner.exchange`, which
returns the child's next messages and carries the driver's answer to an intermediate
report (pruning) or a finished seed (adaptive seeds).

Why a child process and not the actor itself: a trial that crashes or is killed for
memory kills its child only, and the actor reports that as the trial's own failure
(not retried), while the actor's death — its node lost, the actor killed — reaches
the driver as a Ray actor error and becomes ``worker_lost`` (re-queued). The child
dies with the actor (``PR_SET_PDEATHSIG``), so a lost actor leaves no trial running.

The actor is detached and named, so a daemon killed with SIGKILL finds it again after
its restart and re-attaches; a result the child produced while no driver listened is
kept until the driver asks. An actor that no driver contacts for ``abandon_seconds``
stops its trial and exits (its job is then re-queued as orphaned by the next daemon).
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import types
from typing import Any

from hpod.execution._ranks import die_with_parent
from hpod.execution._trial_child import exit_reason, trial_main

__all__ = ["TrialRunner", "ray_trial_main"]

#: messages after which the child waits for the driver's answer
_QUESTIONS = ("report", "seed_done")
#: messages that end the trial
_FINAL = ("result", "error")


def ray_trial_main(payload: dict[str, Any], conn: Any) -> None:
    """The trial child's entry point under a Ray actor."""
    die_with_parent()
    trial_main(payload, conn)


class TrialRunner:
    """One trial on a Ray node (used as a Ray actor; see the module docstring)."""

    def __init__(self, payload: dict[str, Any], abandon_seconds: float = 600.0):
        import ray  # inside the actor only

        payload = dict(payload)
        gpu_ids = [int(g) for g in ray.get_gpu_ids()]
        if gpu_ids:
            # Ray chose the node's devices: the trial child sees exactly those.
            payload["gpu_index"] = gpu_ids[0]
            payload["gpu_indices"] = gpu_ids
        self.node_id = ray.get_runtime_context().get_node_id()
        self.payload = payload
        self.abandon_seconds = abandon_seconds
        self._final: tuple[Any, ...] | None = None
        #: the child's question waiting for the driver's answer, numbered
        self._question: tuple[Any, ...] | None = None
        self._asked = 0
        self._lock = threading.Lock()
        self._last_contact = time.monotonic()
        # spawn: the child's parent is this actor process, so PDEATHSIG follows the actor.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        real_main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")  # the child needs no main module
        try:
            self._proc = ctx.Process(target=ray_trial_main, args=(payload, child_conn), daemon=True,
                                     name=f"hpod-trial-{payload['study']}-{payload['trial_number']}")
            self._proc.start()
        finally:
            if real_main is not None:
                sys.modules["__main__"] = real_main
        child_conn.close()
        self.started_at = time.time()
        threading.Thread(target=self._watch_driver, name="hpod-abandon", daemon=True).start()

    # ------------------------------------------------------------------ driver calls
    def where(self) -> dict[str, Any]:
        """Node, pid and devices of this trial (for status and the tests)."""
        self._last_contact = time.monotonic()
        return {"node_id": self.node_id, "pid": os.getpid(), "child_pid": self._proc.pid,
                "gpu_indices": self.payload.get("gpu_indices") or [], "started_at": self.started_at}

    def exchange(self, answer: tuple[int, Any] | None, wait_seconds: float) -> list[tuple[Any, ...]]:
        """Send ``answer`` (``(question number, value)``, the reply to the child's
        pending question) and return the child's next messages: up to and including a
        question (``("report" | "seed_done", …, number)``) or the final ``result`` /
        ``error``, or nothing once ``wait_seconds`` pass.

        Idempotent across lost calls and driver restarts: an answer to anything but
        the pending question is ignored, and a pending question is asked again until
        it is answered (a driver killed after receiving it never answered)."""
        with self._lock:
            self._last_contact = time.monotonic()
            if self._final is not None:
                return [self._final]
            if self._question is not None:
                if answer is None or answer[0] != self._question[-1]:
                    return [self._question]
                try:
                    self._conn.send(answer[1])
                except (OSError, BrokenPipeError):
                    pass  # the child is gone; its exit is reported below
                self._question = None
            out: list[tuple[Any, ...]] = []
            deadline = time.monotonic() + max(0.0, wait_seconds)
            while True:
                remaining = deadline - time.monotonic()
                try:
                    ready = self._conn.poll(max(0.0, min(remaining, 0.5)))
                    msg = tuple(self._conn.recv()) if ready else None
                except (EOFError, OSError):
                    msg, ready = None, True
                if msg is not None:
                    if msg[0] in _FINAL:
                        if msg[0] == "result" and isinstance(msg[1], dict):
                            # Provenance: where the cluster ran this trial.
                            msg[1]["placement"] = {"executor": "ray", "node_id": self.node_id,
                                                   "gpu_indices": self.payload.get("gpu_indices") or [],
                                                   "started_at": self.started_at}
                        self._final = msg[:2]
                        self._proc.join(timeout=10)
                        return [*out, self._final]
                    if msg[0] in _QUESTIONS:
                        self._asked += 1
                        self._question = (*msg, self._asked)
                        return [*out, self._question]
                    out.append(msg)
                    continue
                if ready or not self._proc.is_alive():
                    # The pipe closed or the process ended without a result.
                    self._proc.join(timeout=10)
                    self._final = ("error", exit_reason(self._proc.exitcode))
                    return [*out, self._final]
                if remaining <= 0:
                    return out

    def stop(self) -> None:
        """Terminate the trial child (SIGTERM, then SIGKILL after 5 s)."""
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(timeout=5)
            if self._proc.is_alive():
                self._proc.kill()

    # ------------------------------------------------------------------ abandonment
    def _watch_driver(self) -> None:
        while True:
            time.sleep(min(5.0, self.abandon_seconds / 4))
            if time.monotonic() - self._last_contact > self.abandon_seconds:
                self.stop()
                os._exit(0)
