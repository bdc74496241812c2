"""Run one configuration in a measured trial process outside any study.

``hpod compare`` retrains a baseline and a selected configuration this way: the same
child process, meters and objective as a study's trials, but no sampler, job or
Optuna trial.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hpod.execution._trial_child import exit_reason, trial_main
from hpod.execution.executor import Slot, _context, _without_main, fork_server_preload

__all__ = ["run_configuration"]


def run_configuration(*, objective_name: str, objective_params: dict[str, Any], params: dict[str, Any],
                      seeds: int, artifact_dir: Path, cache_dir: Path, required: list[str],
                      objective: Any = None, gpu_index: int | None = None, codecarbon: bool = True,
                      label: str = "isolated",
                      timeout: float | None = None) -> tuple[dict[str, Any] | None, str | None]:
    """Train and evaluate ``params`` once per seed in a child process.

    Returns ``(result, None)`` like a trial's result payload, or ``(None, reason)``.
    """
    ctx = _context(fork_server_preload([objective] if objective is not None else [], [Slot("isolated", gpu_index)]))
    payload = {
        "study": label, "trial_number": 0,
        "objective": {"name": objective_name, "params": objective_params},
        "params": params, "seeds": list(range(seeds)),
        "artifact_dir": str(artifact_dir), "cache_dir": str(cache_dir),
        "gpu_index": gpu_index, "required": required, "codecarbon": codecarbon,
        "ask_on_report": False,  # no pruner here: every report would be answered "go on"
    }
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=trial_main, args=(payload, child_conn), daemon=True, name=f"hpod-{label}")
    with _without_main():
        proc.start()
    child_conn.close()
    started = time.monotonic()
    try:
        while True:
            if parent_conn.poll(0.2):
                try:
                    msg = parent_conn.recv()
                except EOFError:
                    break
                if msg[0] == "report":
                    parent_conn.send(False)
                elif msg[0] == "result":
                    return msg[1], None
                elif msg[0] == "error":
                    return None, msg[1]
            elif not proc.is_alive():
                break
            if timeout is not None and time.monotonic() - started > timeout:
                proc.terminate()
                return None, f"timeout: ran longer than {timeout:g} s"
        proc.join(timeout=5)
        return None, exit_reason(proc.exitcode)
    finally:
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        parent_conn.close()
