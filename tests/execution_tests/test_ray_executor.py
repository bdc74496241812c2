"""The Ray executor against a real local Ray cluster (head + simulated worker nodes on
127.0.0.1, CPU only): a 4-objective study of 30 trials completes exactly its budget;
a worker node lost mid-trial re-runs that configuration elsewhere (``worker_lost``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Everything on the loopback interface: Ray otherwise rewrites 127.0.0.1 to the host's
# address when a driver connects (this variable only switches that lookup off).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install hpod[ray])")

from hpod_testing import wait_for  # noqa: E402

from hpod.core.controller import Controller  # noqa: E402
from hpod.core.engine import Engine  # noqa: E402
from hpod.execution.ray_executor import RayExecutor  # noqa: E402
from hpod.spec import parse_spec, resolve  # noqa: E402
from hpod.store import Store  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::ResourceWarning")]

_NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024, "node_ip_address": "127.0.0.1"}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """Head (1 CPU) + one worker node (1 CPU); always shut down."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={**_NODE, "include_dashboard": False})
    try:
        cluster.add_node(**_NODE)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, namespace="hpod-tests", log_to_driver=False, configure_logging=False)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def _spec(name: str, n_trials: int, *, sleep: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"name": "synthetic:training_cost", "params": {"sleep_seconds": sleep}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}, {"name": "memory_bytes"},
                       {"name": "energy_joules"}],
        "sampler": {"name": "random", "seed": 7},
        "budget": {"n_trials": n_trials, "trial_timeout_seconds": 600, "max_retries": 2},
        **extra,
    }


def _drive(controller: Controller, name: str, *, limit: float, each: Any = None) -> None:
    def drive() -> None:
        if each is not None:
            each()
        if not controller.step():
            controller.wait(0.2)

    wait_for(lambda: name not in controller.engines, limit, f"study {name} to finish", interval=0, between=drive)


def _states(engine: Engine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in engine.study.get_trials(deepcopy=False):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def test_ray_executor_runs_a_four_objective_study_of_30_trials(ray_cluster: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.for_state_dir(state)
    spec = parse_spec(_spec("ray30", 30))
    executor = RayExecutor(store, state, slots=2, namespace="hpod-t30", codecarbon=False)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    view = executor.cluster_view()
    assert sum(1 for n in view["nodes"] if n["alive"]) == 2 and view["resources_total"]["CPU"] == 2.0
    assert all(n["resources_available"].get("CPU") == 1.0 for n in view["nodes"] if n["alive"])
    engine = controller.activate(spec, resolved=resolve(spec))
    _drive(controller, spec.name, limit=900)

    counts = _states(engine)
    assert counts == {"COMPLETE": 30}, counts
    assert engine.summary(refresh=True).finished == 30
    assert not store.jobs(states=["running", "queued"])
    trials = engine.study.get_trials(deepcopy=False)
    # Same provenance as local trials, plus where the cluster ran them.
    nodes = set()
    for t in trials:
        assert len(t.values) == 4
        assert t.user_attrs["hpod.measurements"]["energy_joules"]["method"] == "synthetic-cost-model"
        placement = t.user_attrs["hpod.info"]["placement"]
        assert placement["executor"] == "ray"
        nodes.add(placement["node_id"])
    assert len(nodes) == 2, "both nodes of the cluster ran trials"
    started = [e for e in store.events(study=spec.name, limit=1000) if e.kind == "trial_started"]
    assert len(started) == 30 and all(json.loads(e.payload_json)["executor"] == "ray" for e in started)
    executor.stop(reason="shutdown")
    # Every trial actor is gone once its result is stored.
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "hpod-t30"]


def test_lost_ray_node_reruns_its_trial_elsewhere(ray_cluster: Any, tmp_path: Path) -> None:
    victim = ray_cluster.add_node(**_NODE)
    ray_cluster.wait_for_nodes()
    state = tmp_path / "state"
    store = Store.for_state_dir(state)
    spec = parse_spec(_spec("raylost", 6, sleep=4.0))
    executor = RayExecutor(store, state, slots=3, namespace="hpod-tlost", codecarbon=False)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))
    killed: dict[str, Any] = {}

    def kill_victim_once() -> None:
        if killed:
            return
        for job_id, rt in list(executor.running.items()):
            try:
                where = executor.where(job_id, timeout=2)  # an actor still starting answers later
            except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
                continue
            if where and where["node_id"] == victim.node_id:
                killed["job"] = rt.job
                ray_cluster.remove_node(victim, allow_graceful=False)
                return

    _drive(controller, spec.name, limit=900, each=kill_victim_once)
    assert killed, "no trial ran on the node that was to be lost"
    lost_job = killed["job"]
    counts = _states(engine)
    assert counts.get("COMPLETE") == 6 and counts.get("RUNNING", 0) == 0, counts
    trials = engine.study.get_trials(deepcopy=False)
    # Every attempt the lost node took with it (the one we saw there, and any actor Ray
    # placed there meanwhile) failed as worker_lost and was re-queued, not counted.
    failed = [t for t in trials if t.state.name == "FAIL"]
    assert failed and all(t.user_attrs["hpod.fail_reason"] == "worker_lost" for t in failed)
    assert lost_job.trial_number in {t.number for t in failed}
    lost_params = next(t.params for t in failed if t.number == lost_job.trial_number)
    rerun = [t for t in trials if t.state.name == "COMPLETE" and t.params == lost_params]
    assert len(rerun) == 1 and rerun[0].user_attrs["hpod.retry_of"] is not None
    assert rerun[0].user_attrs["hpod.info"]["placement"]["node_id"] != victim.node_id
    events = [json.loads(e.payload_json) for e in store.events(study=spec.name, limit=1000)
              if e.kind == "trial_failed"]
    assert len(events) == len(failed) and all(e["requeued"] and e["infrastructure"] for e in events)
    assert not store.jobs(states=["running", "queued"])
    executor.stop(reason="shutdown")


def test_trial_no_node_can_host_fails_as_infeasible_without_retry(ray_cluster: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.for_state_dir(state)
    spec = parse_spec(_spec("rayinfeasible", 2, resources={"cpus_per_trial": 64}))
    executor = RayExecutor(store, state, slots=2, namespace="hpod-tinf", codecarbon=False)
    controller = Controller(store, state, executor=executor, remote_workers=False)
    engine = controller.activate(spec, resolved=resolve(spec))
    _drive(controller, spec.name, limit=120)
    trials = engine.study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]  # not re-queued: the configuration's own need
    reason = trials[0].user_attrs["hpod.fail_reason"]
    assert reason.startswith("infeasible: no node of the Ray cluster offers CPU=64")
    assert not ray.util.list_named_actors(all_namespaces=True) or all(
        a["namespace"] != "hpod-tinf" for a in ray.util.list_named_actors(all_namespaces=True))


def test_daemon_sigkill_reattaches_to_its_ray_trials(ray_cluster: Any, tmp_path: Path) -> None:
    """``hpod daemon --executor ray:ADDRESS`` killed with SIGKILL while trials run on the
    cluster: the restarted daemon re-attaches to them — no trial lost, none run twice."""
    import httpx
    from daemon_harness import DaemonProcess, wait_for, write_spec

    spec_dir = tmp_path / "specs"
    spec_dir.mkdir()
    write_spec(spec_dir / "s.json", "rayrestart", n_trials=6, sleep_seconds=6.0)
    daemon = DaemonProcess(tmp_path, extra_args=["--executor", f"ray:{ray_cluster.address}",
                                                 "--spec-dir", str(spec_dir)])
    try:
        daemon.start()
        store = Store.for_state_dir(daemon.state_dir)
        wait_for(lambda: len(store.jobs("rayrestart", states=["running"])) == 2, 180, "two trials running")
        status = httpx.get(f"{daemon.api_url}/v1/status", headers={"Authorization": f"Bearer {daemon.token}"},
                           timeout=30).json()
        assert status["cluster"]["kind"] == "ray"
        assert sum(1 for n in status["cluster"]["nodes"] if n["alive"]) >= 2
        metrics = httpx.get(daemon.metrics_url, timeout=30).text
        assert 'hpod_cluster_resources_total{resource="CPU"}' in metrics
        in_flight = {j.trial_number for j in store.jobs("rayrestart", states=["running"])}

        assert daemon.process is not None
        daemon.process.kill()
        daemon.wait_exit(30)
        # The trials go on without their daemon: detached actors.
        assert len([a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "hpod"]) == 2

        daemon.start()
        wait_for(lambda: (store.get_study("rayrestart").state == "completed"), 600, "study completed", daemon)
        events = store.events(study=None, limit=2000)
        reattached = [json.loads(e.payload_json) for e in events if e.kind == "trials_reattached"]
        assert len(reattached) == 1 and {int(t.split("#")[1]) for t in reattached[0]["trials"]} == in_flight
        study_events = store.events(study="rayrestart", limit=2000)
        started = [e.trial_number for e in study_events if e.kind == "trial_started"]
        assert sorted(started) == list(range(6)), "every trial started exactly once"
        assert not [e for e in study_events if e.kind == "trial_failed"]
        assert not store.jobs("rayrestart", states=["running", "queued"])
        assert sorted(j.state for j in store.jobs("rayrestart")) == ["done"] * 6
    finally:
        daemon.close()
    assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "hpod"]
