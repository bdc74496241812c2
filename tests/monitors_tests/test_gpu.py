"""Tests of hpod.monitors.gpu: NVML readings in base units, and no exception ever
escaping to the exporter, on machines with and without GPUs."""

from __future__ import annotations

import threading
import types

import pytest

from hpod.monitors import gpu as gpu_module
from hpod.monitors.gpu import GpuReading, gpu_count, gpu_snapshot


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


def fake_nvml(devices: list[dict], *, init_error: Exception | None = None) -> types.ModuleType:
    """A stand-in for the pynvml module, answering in NVML's own units (mW, %, mJ)."""
    module = types.ModuleType("pynvml")
    module.init_calls = 0  # type: ignore[attr-defined]

    def nvmlInit() -> None:
        module.init_calls += 1  # type: ignore[attr-defined]
        if init_error is not None:
            raise init_error

    def handle(index: int) -> dict:
        device = devices[index]
        if device.get("lost"):
            raise NVMLError("GPU is lost")
        return device

    def field(name: str):
        def query(device: dict):
            value = device.get(name)
            if value is None:
                raise NVMLError_NotSupported("Not Supported")
            return value

        return query

    module.nvmlInit = nvmlInit  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: len(devices)  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = field("name")  # type: ignore[attr-defined]
    module.nvmlDeviceGetPowerUsage = field("power_mw")  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = field("memory")  # type: ignore[attr-defined]
    module.nvmlDeviceGetUtilizationRates = field("utilization")  # type: ignore[attr-defined]
    module.nvmlDeviceGetTotalEnergyConsumption = field("energy_mj")  # type: ignore[attr-defined]
    return module


H200 = {
    "name": "NVIDIA H200",
    "power_mw": 512_500,
    "memory": types.SimpleNamespace(used=60 * 2**30, total=141 * 2**30, free=81 * 2**30),
    "utilization": types.SimpleNamespace(gpu=93, memory=40),
    "energy_mj": 7_200_000_000,
}
MIG = {"name": b"NVIDIA H200 MIG 1g.18gb", "power_mw": 80_000,
       "memory": types.SimpleNamespace(used=2 * 2**30, total=18 * 2**30, free=16 * 2**30)}


@pytest.fixture
def use_nvml(monkeypatch: pytest.MonkeyPatch):
    """Install a fake pynvml and a fresh per-process NVML cache for one test."""

    def install(module: types.ModuleType) -> types.ModuleType:
        monkeypatch.setitem(__import__("sys").modules, "pynvml", module)
        monkeypatch.setattr(gpu_module, "_NVML", gpu_module._Nvml())
        return module

    return install


def test_readings_are_converted_to_base_units(use_nvml) -> None:
    use_nvml(fake_nvml([H200, MIG]))
    readings = gpu_snapshot()
    assert readings[0] == GpuReading(
        index=0, name="NVIDIA H200", power_watts=512.5, memory_used_bytes=60.0 * 2**30,
        memory_total_bytes=141.0 * 2**30, utilization_ratio=0.93, energy_joules_counter=7.2e6,
    )
    # unsupported queries (MIG: no utilization, no energy counter) read as None, bytes names decoded
    assert readings[1].name == "NVIDIA H200 MIG 1g.18gb"
    assert (readings[1].utilization_ratio, readings[1].energy_joules_counter) == (None, None)
    assert readings[1].power_watts == 80.0
    assert gpu_count() == 2


def test_indices_select_gpus_and_unknown_ones_are_left_out(use_nvml) -> None:
    use_nvml(fake_nvml([H200, MIG]))
    assert [r.index for r in gpu_snapshot([1])] == [1]
    assert [r.index for r in gpu_snapshot([1, 7])] == [1]
    assert gpu_snapshot([]) == []
    with pytest.raises(ValueError, match=r"indices\[0\] must be an int >= 0, got -1"):
        gpu_snapshot([-1])


def test_a_lost_gpu_is_left_out_and_the_others_still_read(use_nvml) -> None:
    use_nvml(fake_nvml([{"lost": True}, H200]))
    assert [r.index for r in gpu_snapshot()] == [1]


def test_no_driver_means_no_gpus_and_nvml_is_tried_once(use_nvml) -> None:
    nvml = use_nvml(fake_nvml([], init_error=NVMLError("NVML Shared Library Not Found")))
    assert gpu_snapshot() == []
    assert gpu_count() == 0
    assert gpu_snapshot([0]) == []
    # a machine without a GPU pays for the failed nvmlInit once, not on every scrape
    assert nvml.init_calls == 1


def test_nvml_is_initialised_once_under_concurrent_scrapes(use_nvml) -> None:
    nvml = use_nvml(fake_nvml([H200]))
    results: list[list[GpuReading]] = []
    threads = [threading.Thread(target=lambda: results.append(gpu_snapshot())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert nvml.init_calls == 1
    assert len(results) == 16 and all(len(r) == 1 for r in results)


def test_real_nvml_on_this_machine_never_raises() -> None:
    # On CI (no GPU) this is the NVMLError_LibraryNotFound path; on a GPU node, real readings.
    readings = gpu_snapshot()
    assert len(readings) == gpu_count()
    for reading in readings:
        assert reading.memory_total_bytes is None or reading.memory_total_bytes > 0
        assert reading.utilization_ratio is None or 0.0 <= reading.utilization_ratio <= 1.0
