"""Every benchmark's `--quick` smoke run works and writes its results (no speed asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from hpod_testing import ROOT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["drift", "exporter", "lora", "overhead", "coordination", "strategies", "samplers",
                                  "adaptation", "tiny_t5", "reliability", "concurrent_submit",
                                  "multi_fidelity"])
def test_benchmark_quick_run_writes_results(name: str):
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = ROOT / "benchmarks" / "results" / "quick" / f"{name}.json"
    assert out.exists() and out.stat().st_mtime >= started - 1, f"{out} was not written"
    assert json.loads(out.read_text())
    assert (out.with_suffix(".md")).read_text().strip()
