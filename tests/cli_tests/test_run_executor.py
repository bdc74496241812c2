"""``hpod run --executor ray --ray-address …``: the options are checked before anything is
written (exit 2, one message, no database left behind), and a foreground study runs
its trials on a local Ray cluster (head on 127.0.0.1, one CPU)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hpod_testing import run_cli

from hpod.store import Store

SPEC = {
    "name": "ray-run",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 3},
    "budget": {"n_trials": 3, "trial_timeout_seconds": 600},
}


def _spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(SPEC), encoding="utf-8")
    return path


def _absent_gpu() -> str:
    from hpod.monitors.gpu import gpu_count

    return str(gpu_count())  # the first index past this machine's GPUs (0 without any)


@pytest.mark.parametrize(("args", "message"), [
    (["--gpus", _absent_gpu()], f"--gpus: GPU {_absent_gpu()} is not on this machine (NVML sees"),
    (["--gpus", "0,0"], "--gpus: GPU 0 is given twice"),
    (["--gpus", "0,x"], "--gpus: expected comma-separated GPU indices like 0,1 (found '0,x')"),
])
def test_gpus_this_machine_does_not_have_exit_2_and_write_nothing(tmp_path: Path, args: list[str],
                                                                  message: str) -> None:
    state = tmp_path / "state"
    proc = run_cli(["run", str(_spec_file(tmp_path)), *args], state_dir=state, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert not (state / "hpod.db").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "rya"], "--executor: expected local or ray (found 'rya')"),
    (["--ray-address", "auto"], "--ray-address: only with --executor ray"),
    (["--executor", "ray", "--gpus", "0"], "--gpus: not with --executor ray"),
    (["--executor", "ray", "--cpu-slots", "2"], "--cpu-slots: not with --executor ray"),
    (["--executor", "ray", "--ray-address", " "], "--ray-address: needs auto, HOST:PORT or ray://HOST:PORT"),
    # Nothing listens on port 1: refused at once, before the study is registered.
    (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "cannot reach the Ray cluster at '127.0.0.1:1'"),
])
def test_bad_executor_options_exit_2_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    state = tmp_path / "state"
    if "127.0.0.1:1" in args:
        pytest.importorskip("ray", reason="Ray is not installed (pip install hpod[ray])")
    proc = run_cli(["run", str(_spec_file(tmp_path)), *args], state_dir=state, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert message in " ".join(proc.stderr.split())
    assert not (state / "hpod.db").exists()


@pytest.fixture
def ray_head() -> Iterator[Any]:
    """A one-CPU Ray head on 127.0.0.1 (small object store), always shut down."""
    # Everything on the loopback interface (set before Ray is imported: Ray otherwise
    # rewrites 127.0.0.1 to the host's address when a driver connects).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    pytest.importorskip("ray", reason="Ray is not installed (pip install hpod[ray])")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1",
        "include_dashboard": False})
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.mark.slow
def test_foreground_run_on_a_ray_cluster(tmp_path: Path, ray_head: Any) -> None:
    state = tmp_path / "state"
    proc = run_cli(["run", str(_spec_file(tmp_path)), "--executor", "ray", "--ray-address", ray_head.address,
                    "--no-codecarbon"], state_dir=state, timeout=300, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"executor: Ray cluster at {ray_head.address}" in proc.stderr
    trials = json.loads(run_cli(["trials", "ray-run", "--json"], state_dir=state).stdout)
    assert [t["state"] for t in trials] == ["COMPLETE"] * 3
    assert all(t["worker"].startswith("ray@") for t in trials)
    started = [json.loads(e.payload_json) for e in Store.for_state_dir(state).events(study="ray-run", limit=100)
               if e.kind == "trial_started"]
    assert len(started) == 3 and all(p["executor"] == "ray" for p in started)
    # No trial actor outlives the run.
    import ray

    ray.init(address=ray_head.address, log_to_driver=False, configure_logging=False)
    try:
        assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "hpod"]
    finally:
        ray.shutdown()
