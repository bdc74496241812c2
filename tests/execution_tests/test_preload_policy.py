"""The one fork-server preload policy (``fork_server_preload``) every process that runs
trials uses: each known objective's modules once, and the heavy stack on a machine with
GPU slots; nothing for a CPU machine running one of hpod's cheap objectives."""

from __future__ import annotations

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
