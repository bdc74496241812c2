"""The one fork-server preload policy (``fork_server_preload``) every process that runs
trials uses: each known objective's modules once, and the heavy stack on a machine with
GPU slots; nothing for a CPU machine running one of hpod's cheap objectives."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hpod_testing import cli_env

from hpod.execution.executor import HEAVY_PRELOAD, Slot, fork_server_preload
from hpod.objectives import create_objective


def test_cheap_objective_on_cpu_preloads_only_its_own_modules() -> None:
    modules = fork_server_preload([create_objective("synthetic:training_cost")], [Slot("cpu0")])
    assert modules == ()  # its module is hpod's own, which every fork server imports


def test_heavy_objective_or_gpu_slot_preloads_the_heavy_stack_once() -> None:
    t5 = create_objective("t5_lora")
    on_cpu = fork_server_preload([t5, t5], [Slot("cpu0")])
    assert set(HEAVY_PRELOAD) <= set(on_cpu) and len(on_cpu) == len(set(on_cpu))
    gpu_worker = fork_server_preload(slots=[Slot("gpu0", gpu_index=0)])
    assert list(gpu_worker) == list(HEAVY_PRELOAD)
    assert fork_server_preload() == ()


def test_objectives_asking_for_modules_get_them_in_order() -> None:
    zdt1 = create_objective("synthetic:zdt1")
    modules = fork_server_preload([zdt1, create_objective("synthetic:training_cost")])
    assert modules[:2] == ("torch", "botorch.test_functions.multi_objective")


def test_trial_of_a_cheap_objective_forks_from_a_server_that_imported_hpods_trial_code() -> None:
    # A fresh interpreter: the fork server is one per process and starts with its first trial.
    # Nothing asked beyond hpod's own modules used to leave multiprocessing's default
    # preload (``__main__`` only): every trial process imported numpy, pydantic and the
    # objective registry afresh (~0.3-0.9 s a trial).
    code = textwrap.dedent("""
        from hpod.execution.executor import Slot, _context, _without_main, fork_server_preload
        from hpod.objectives import create_objective
        import hpod_preload_probe

        ctx = _context(fork_server_preload([create_objective("synthetic:training_cost")], [Slot("cpu0")]))
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=hpod_preload_probe.trial_modules, args=(child,), daemon=True)
        with _without_main():
            proc.start()
        child.close()
        print(json.dumps(parent.recv()))
        proc.join(30)
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                         timeout=300, env=cli_env())
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"hpod.execution._warm": True,
                                                               "hpod.objectives.synthetic": True}
