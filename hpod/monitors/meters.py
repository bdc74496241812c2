"""Meters that run inside a trial process: wall time, peak memory and energy.

Every figure carries its method so a user can tell measured from estimated:

- time: ``wall-clock`` (``time.perf_counter`` around training + evaluation).
- memory: ``cuda-max-reserved`` (``torch.cuda.max_memory_reserved`` after a reset)
  on a GPU, else ``rss-peak`` (peak resident set growth of the trial process).
- energy: ``nvml-energy-counter`` (the GPU's total-energy counter delta), else
  CodeCarbon's CPU+RAM figure (``codecarbon-rapl`` when it read RAPL counters,
  ``codecarbon-estimate`` when it fell back to a TDP/load model), else
  ``cpu-time-estimate`` (process CPU seconds × an assumed power per core).

A missing NVML, missing RAPL or a failing CodeCarbon degrade to the next method;
they never fail the trial.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hpod.objectives.base import Measurement

__all__ = ["CPU_WATTS_PER_CORE", "SectionFigures", "TrialMeters", "current_rss_bytes"]

log = logging.getLogger(__name__)

#: Assumed power per busy core for the last-resort ``cpu-time-estimate`` (watts);
#: override with ``HPOD_CPU_WATTS_PER_CORE``.
CPU_WATTS_PER_CORE = float(os.environ.get("HPOD_CPU_WATTS_PER_CORE", "10"))


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: fall back to the peak, the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss_bytes() -> int:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


class _Nvml:
    """The GPU's cumulative energy counter (millijoules), or unavailable."""

    def __init__(self, gpu_index: int | None):
        self.handle: Any = None
        self.reason = "no GPU assigned"
        if gpu_index is None:
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)  # Volta and newer
            self.handle = handle
        except Exception as exc:  # NVMLError_LibraryNotFound, NotSupported, ImportError...
            self.reason = f"NVML unavailable: {type(exc).__name__}"

    def read_joules(self) -> float | None:
        if self.handle is None:
            return None
        try:
            import pynvml

            return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)) / 1000.0
        except Exception as exc:
            self.reason = f"NVML read failed: {type(exc).__name__}"
            self.handle = None
            return None


class _ErrorsOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


class _CodeCarbon:
    """CodeCarbon's tracker, started in a background thread (it takes ~2 s to start)
    so the objective does not wait for it; its energy rate is applied to each
    section's wall time."""

    def __init__(self) -> None:
        self.tracker: Any = None
        self.error: str | None = None
        self.started_at: float | None = None
        self._thread = threading.Thread(target=self._start, name="hpod-codecarbon", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        try:
            from codecarbon import OfflineEmissionsTracker

            # CodeCarbon logs an INFO and a WARNING line on every start whatever its
            # log_level says; a filter on its logger keeps trial output clean.
            cc_logger = logging.getLogger("codecarbon")
            if not any(isinstance(f, _ErrorsOnly) for f in cc_logger.filters):
                cc_logger.addFilter(_ErrorsOnly())

            tracker = OfflineEmissionsTracker(
                country_iso_code=os.environ.get("HPOD_COUNTRY_ISO_CODE", "USA"),
                log_level="error",
                output_methods=[],
                measure_power_secs=5,
                tracking_mode="process",
                allow_multiple_runs=True,
            )
            tracker.start()
            self.tracker = tracker
            self.started_at = time.perf_counter()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> tuple[float, float, str] | None:
        """Return (joules, tracked seconds, method) or None when unavailable."""
        self._thread.join(timeout=30)
        if self.tracker is None or self.started_at is None:
            return None
        try:
            self.tracker.stop()
            data = self.tracker.final_emissions_data
            joules = float(data.energy_consumed) * 3.6e6  # kWh -> J
            seconds = time.perf_counter() - self.started_at
            modes = [str(getattr(h, "_mode", "")) for h in getattr(self.tracker, "_hardware", [])]
            method = "codecarbon-rapl" if any("rapl" in m for m in modes) else "codecarbon-estimate"
            return joules, seconds, method
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return None


@dataclass
class SectionFigures:
    """What one measured section (one seed's training + evaluation) cost."""

    time_seconds: float = 0.0
    memory_bytes: float = 0.0
    memory_method: str = "rss-peak"
    energy_joules: float | None = None
    energy_method: str | None = None
    cpu_seconds: float = 0.0


@dataclass
class TrialMeters:
    """Meters for one trial process. Use :meth:`section` around each seed's run,
    then :meth:`finish` to fill energy for sections NVML did not measure.

    ``gpu_index`` is the NVML index of the trial's GPU (None on CPU);
    ``use_codecarbon`` starts CodeCarbon (worth it for trials of seconds or more).
    """

    gpu_index: int | None = None
    use_codecarbon: bool = False
    sections: list[SectionFigures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        #: (wall start, CPU seconds, NVML joules) of the section running now
        self._running: tuple[float, float, float | None] | None = None
        self._nvml = _Nvml(self.gpu_index)
        if self._nvml.handle is None and self.gpu_index is not None:
            self.notes.append(self._nvml.reason)
        self._cuda = self.gpu_index is not None and self._cuda_available()
        self._codecarbon = _CodeCarbon() if (self.use_codecarbon and self._nvml.handle is None) else None

    @staticmethod
    def _cuda_available() -> bool:
        try:
            import torch

            return bool(torch.cuda.is_available())
        except Exception:
            return False

    @contextmanager
    def section(self) -> Iterator[SectionFigures]:
        fig = SectionFigures()
        if self._cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        rss0 = current_rss_bytes()
        cpu0 = _cpu_seconds()
        e0 = self._nvml.read_joules()
        t0 = time.perf_counter()
        self._running = (t0, cpu0, e0)
        try:
            yield fig
        finally:
            self._running = None
            if self._cuda:
                import torch

                torch.cuda.synchronize()
            fig.time_seconds = time.perf_counter() - t0
            fig.cpu_seconds = _cpu_seconds() - cpu0
            e1 = self._nvml.read_joules()
            if e0 is not None and e1 is not None:
                fig.energy_joules, fig.energy_method = max(0.0, e1 - e0), "nvml-energy-counter"
            if self._cuda:
                import torch

                fig.memory_bytes = float(torch.cuda.max_memory_reserved())
                fig.memory_method = "cuda-max-reserved"
            else:
                fig.memory_bytes = float(max(0, _peak_rss_bytes() - rss0))
                fig.memory_method = "rss-peak"
            self.sections.append(fig)

    def spent_so_far(self) -> dict[str, float]:
        """Wall seconds and joules of the section running now (``{}`` outside one), for
        intermediate reports: the GPU's energy counter when NVML reads, else process CPU
        seconds x :data:`CPU_WATTS_PER_CORE` (CodeCarbon's rate is known only at the end)."""
        running = self._running
        if running is None:
            return {}
        t0, cpu0, e0 = running
        e1 = self._nvml.read_joules() if e0 is not None else None
        joules = max(0.0, e1 - e0) if e0 is not None and e1 is not None else \
            (_cpu_seconds() - cpu0) * CPU_WATTS_PER_CORE
        return {"time_seconds": time.perf_counter() - t0, "energy_joules": joules}

    def finish(self) -> None:
        """Fill the energy of sections NVML did not measure (CodeCarbon, else CPU time)."""
        missing = [s for s in self.sections if s.energy_joules is None]
        cc = self._codecarbon.stop() if self._codecarbon is not None else None
        if self._codecarbon is not None and cc is None and self._codecarbon.error:
            self.notes.append(f"CodeCarbon failed: {self._codecarbon.error}")
        if not missing:
            return
        if cc is not None and cc[1] > 0:
            joules, tracked, method = cc
            rate = joules / tracked  # watts over the tracked span
            for s in missing:
                s.energy_joules, s.energy_method = rate * s.time_seconds, method
            return
        for s in missing:
            s.energy_joules = s.cpu_seconds * CPU_WATTS_PER_CORE
            s.energy_method = "cpu-time-estimate"


def mean_measurement(values: list[float], method: str) -> Measurement:
    return Measurement(sum(values) / len(values), method)
