"""scripts/gpu-check.sh on a machine without a GPU: its plan (one-GPU run, and the 2-GPU
data-parallel run when two GPUs are present) is checked in dry-run mode, which runs
nothing; without a GPU a real run stops at once saying so. The table script puts the
objective's memory estimate beside each trial's measured peak."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpod.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"


def _run(state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), str(state)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env}, check=False)


def _results() -> dict[str, float]:
    results = ROOT / "benchmarks" / "results"
    return {p.name: p.stat().st_mtime for p in results.glob("gpu-check*.json")}


def test_two_gpus_plan_a_data_parallel_run_over_gpus_0_and_1(tmp_path: Path) -> None:
    before = _results()
    proc = _run(tmp_path, GPU_CHECK_DRY_RUN="1", GPU_CHECK_GPUS="2")
    assert proc.returncode == 0, proc.stderr
    planned = [line for line in proc.stdout.splitlines() if line.startswith("would run: ")]
    assert "run examples/gpu-check.yaml" in planned[0] and planned[0].endswith("--gpus 0")
    two = [line for line in planned if "gpu-check-2gpu.yaml" in line and " run " in line]
    assert len(two) == 1 and two[0].endswith("--gpus 0,1")
    spec = load_spec(tmp_path / "gpu-check-2gpu.yaml")
    assert spec.name == "gpu-check-2gpu" and spec.resources.gpus_per_trial == 2 and spec.resources.world_size == 2
    assert proc.stdout.rstrip().endswith("dry run: nothing was run")
    assert _results() == before  # nothing measured, nothing written


def test_one_gpu_plans_no_two_gpu_run(tmp_path: Path) -> None:
    proc = _run(tmp_path, GPU_CHECK_DRY_RUN="1", GPU_CHECK_GPUS="1")
    assert proc.returncode == 0, proc.stderr
    assert "one GPU: no 2-GPU run" in proc.stdout and "0,1" not in proc.stdout
    assert not (tmp_path / "gpu-check-2gpu.yaml").exists()


def test_without_a_gpu_a_real_run_stops_saying_so(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run scripts/gpu-check.sh itself")
    proc = _run(tmp_path)
    assert proc.returncode != 0
    assert "no CUDA device visible" in proc.stderr
    assert not (tmp_path / "hpod.db").exists()


def test_the_table_puts_the_memory_estimate_beside_the_measured_peak(tmp_path: Path) -> None:
    trials = [{"number": 0, "state": "COMPLETE", "params": {"learning_rate": 1e-3},
               "metrics": {"loss": 1.0, "time_per_epoch_seconds": 2.0},
               "measurements": {"memory_bytes": {"value": 5e7, "method": "cuda-max-reserved"}}}]
    (tmp_path / "trials.json").write_text(json.dumps(trials))
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check_table.py"), str(tmp_path / "trials.json"),
                           str(out), str(ROOT / "examples" / "gpu-check.yaml")], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(out.read_text())["trials"]
    assert row["memory_estimate_bytes"] > 0
    assert row["memory_estimate_error"] == pytest.approx((row["memory_estimate_bytes"] - 5e7) / 5e7)
    assert "est MiB" in proc.stdout
