"""Node GPU telemetry through NVML (pynvml): power, memory, utilization and energy per GPU.

Read by the exporter on every scrape and by ``hpod status``; on a machine without a GPU
or a driver every function returns an empty answer instead of raising.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuReading", "gpu_count", "gpu_snapshot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one instant, in base units.

    ``index`` is the NVML index (the one ``CUDA_VISIBLE_DEVICES`` and ``--gpus`` use).
    A field is ``None`` when the device or driver does not support that query (MIG
    instances report no utilization; pre-Volta GPUs have no energy counter).
    ``energy_joules_counter`` is the driver's cumulative energy since it was loaded:
    only differences between two readings mean anything.
    """

    index: int
    name: str
    power_watts: float | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    utilization_ratio: float | None
    energy_joules_counter: float | None = None


class _Nvml:
    """Process-wide NVML handle: initialised at most once per process, under a lock.

    The outcome (module or failure) is cached so that a machine without a GPU pays
    the failed ``nvmlInit`` once, not on every scrape. A forked child re-initialises,
    because NVML state does not survive ``fork``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._module: Any = None

    def get(self) -> Any:
        """The initialised ``pynvml`` module, or ``None`` when NVML is unusable here."""
        with self._lock:
            if self._pid == os.getpid():
                return self._module
            self._pid = os.getpid()
            self._module = None
            try:
                import pynvml  # lazy: a heavy-ish C binding, absent on some CPU installs

                pynvml.nvmlInit()
            except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ImportError, ...
                log.debug("NVML unavailable, GPU telemetry disabled: %s", exc)
                return None
            self._module = pynvml
            return pynvml


_NVML = _Nvml()


def _optional(call: Any, *args: Any) -> Any:
    """Result of one NVML query, or ``None`` when this device does not support it."""
    try:
        return call(*args)
    except Exception:  # NVMLError_NotSupported, NVMLError_NoPermission, GPU lost, ...
        return None


def gpu_count() -> int:
    """Number of GPUs NVML sees on this node; 0 without a GPU, a driver or pynvml."""
    nvml = _NVML.get()
    if nvml is None:
        return 0
    try:
        return int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        log.warning("nvmlDeviceGetCount failed: %s", exc)
        return 0


def _read_one(nvml: Any, index: int) -> GpuReading | None:
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except Exception as exc:
        log.warning("GPU %d: nvmlDeviceGetHandleByIndex failed: %s", index, exc)
        return None
    name = _optional(nvml.nvmlDeviceGetName, handle)
    if isinstance(name, bytes):  # nvidia-ml-py < 11.5 returns bytes
        name = name.decode(errors="replace")
    power_mw = _optional(nvml.nvmlDeviceGetPowerUsage, handle)
    memory = _optional(nvml.nvmlDeviceGetMemoryInfo, handle)
    utilization = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
    energy_mj = _optional(nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
    return GpuReading(
        index=index,
        name=str(name) if name is not None else f"gpu{index}",
        # NVML reports milliwatts, percent and millijoules; hpod speaks base units.
        power_watts=power_mw / 1000.0 if power_mw is not None else None,
        memory_used_bytes=float(memory.used) if memory is not None else None,
        memory_total_bytes=float(memory.total) if memory is not None else None,
        utilization_ratio=utilization.gpu / 100.0 if utilization is not None else None,
        energy_joules_counter=energy_mj / 1000.0 if energy_mj is not None else None,
    )


def gpu_snapshot(indices: list[int] | None = None) -> list[GpuReading]:
    """Read every GPU (or the NVML ``indices`` given) now; never raises.

    Returns an empty list when there is no GPU, no driver, no ``pynvml`` or NVML fails;
    a GPU whose handle cannot be opened (or an index that does not exist) is left out
    and logged. Safe to call from several threads.
    """
    if indices is not None:
        for position, index in enumerate(indices):
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise ValueError(f"indices[{position}] must be an int >= 0, got {index!r}")
    nvml = _NVML.get()
    if nvml is None:
        return []
    count = gpu_count()
    wanted = range(count) if indices is None else [i for i in indices if i < count]
    readings = []
    for index in wanted:
        reading = _read_one(nvml, index)
        if reading is not None:
            readings.append(reading)
    return readings
