"""What one Prometheus scrape of hpod costs: time to render /metrics and its size, for a
daemon holding 10 to 1000 studies, plus one NVML GPU reading.

Run: ``python -m benchmarks.exporter [--quick]``; writes benchmarks/results/exporter.json and .md
(``--quick``: benchmarks/results/quick/).
Worst case measured: every study ran trials since the daemon started, so each exports its
four histograms. Target: 100 such studies render in under 250 ms (under 2 % of one core
at the 15 s scrape interval, far inside the 10 s scrape timeout).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from benchmarks._machine import describe_machine
from hpod.http.exporter import (
    DriftSnapshot,
    HpodCollector,
    RetuneSnapshot,
    Snapshot,
    StudySnapshot,
    TrialObserver,
    start_metrics_server,
)
from hpod.monitors.gpu import GpuReading, gpu_snapshot

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_MS_AT_100_STUDIES = 250.0


def machine() -> dict[str, Any]:
    return describe_machine("prometheus-client")


def snapshot_with(n_studies: int) -> Snapshot:
    now = time.time()
    studies = [
        StudySnapshot(
            name=f"study_{i:04d}",
            trials_by_state={"COMPLETE": 40, "FAIL": 2, "PRUNED": 5, "RUNNING": 1, "WAITING": 2},
            running=1,
            hypervolume=0.5,
            pareto_front_size=6,
            best={"loss": 1.9, "time_seconds": 300.0, "memory_bytes": 3e9, "energy_joules": 4e4},
            energy_joules_total=1e6,
            energy_budget_joules=2e6,
            n_trials_budget=100,
            last_activity_ts=now,
            lagrange_multipliers={"time_seconds": 0.1},
        )
        for i in range(n_studies)
    ]
    return Snapshot(
        version="bench",
        started_at=now,
        studies=studies,
        workers_by_state={"busy": 8, "idle": 0},
        gpus=[GpuReading(i, "GPU", 300.0, 4e10, 8e10, 0.9, 1e6) for i in range(8)],
        events_by_kind={"trial_completed": 40 * n_studies},
        drift=[DriftSnapshot(s.name, "data", 0.1, 0) for s in studies],
        retunes=[RetuneSnapshot(s.name, "schedule", 1) for s in studies],
    )


def measure(n_studies: int, repeats: int) -> dict[str, Any]:
    registry = CollectorRegistry()
    snapshot = snapshot_with(n_studies)
    observer = TrialObserver(registry)
    HpodCollector(lambda: snapshot, registry=registry, observer=observer)
    for study in snapshot.studies:
        for seconds in (60.0, 300.0, 900.0):
            observer.observe_trial(study.name, "COMPLETE", seconds, 3e9, 4e4)
        observer.observe_suggest(study.name, 0.3)
    with start_metrics_server("127.0.0.1:0", registry) as server:
        timings = []
        size = 0
        for _ in range(repeats):
            start = time.perf_counter()
            with urllib.request.urlopen(server.url, timeout=30) as response:
                size = len(response.read())
            timings.append((time.perf_counter() - start) * 1000.0)
    return {
        "studies": n_studies,
        "scrape_ms_median": statistics.median(timings),
        "scrape_ms_max": max(timings),
        "bytes": size,
        "repeats": repeats,
    }


def gpu_read_ms(repeats: int) -> dict[str, Any]:
    gpu_snapshot()  # the first call pays nvmlInit (or its failure)
    start = time.perf_counter()
    for _ in range(repeats):
        readings = gpu_snapshot()
    return {"gpus": len(readings), "gpu_snapshot_ms": (time.perf_counter() - start) * 1000.0 / repeats}


def markdown(result: dict[str, Any]) -> str:
    info = result["machine"]
    lines = [
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, "
        f"prometheus_client {info['prometheus_client']}. Command: `python -m benchmarks.exporter`"
        + (" --quick" if result["quick"] else "") + ".",
        "",
        "| studies (all with trials) | scrape median (ms) | scrape max (ms) | /metrics size (KiB) |",
        "|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['studies']} | {row['scrape_ms_median']:.1f} | {row['scrape_ms_max']:.1f} "
            f"| {row['bytes'] / 1024:.0f} |"
        )
    gpu = result["gpu"]
    lines += [
        "",
        f"`gpu_snapshot()`: {gpu['gpu_snapshot_ms']:.3f} ms for {gpu['gpus']} GPU(s). "
        f"Target: under {TARGET_MS_AT_100_STUDIES:.0f} ms per scrape at 100 studies: "
        f"{'met' if result['target_met'] else 'NOT met'}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (CI smoke run)")
    args = parser.parse_args(argv)
    sizes = [10, 100] if args.quick else [10, 100, 1000]
    repeats = 3 if args.quick else 20
    info = machine()
    print(f"machine: {info}")
    rows = []
    for n_studies in sizes:
        row = measure(n_studies, repeats)
        print(f"{n_studies:5d} studies: {row['scrape_ms_median']:.1f} ms median, {row['bytes'] / 1024:.0f} KiB")
        rows.append(row)
    at_100 = next(row for row in rows if row["studies"] == 100)
    result = {
        "machine": info,
        "quick": args.quick,
        "rows": rows,
        "gpu": gpu_read_ms(10 if args.quick else 100),
        "target_ms_at_100_studies": TARGET_MS_AT_100_STUDIES,
        "target_met": at_100["scrape_ms_median"] < TARGET_MS_AT_100_STUDIES,
    }
    # A --quick smoke run must not replace the committed default-size results.
    out = RESULTS / "quick" if args.quick else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / "exporter.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / "exporter.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
