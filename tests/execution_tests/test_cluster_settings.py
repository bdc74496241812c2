"""Settings and views of cluster execution that need no cluster: the daemon's
``executor`` setting, the spec's ``resources`` section, the cluster's metrics and the
``hpod status`` table (what the Ray executor publishes)."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from hpod.cli._render import print_cluster
from hpod.core.views import Snapshot
from hpod.daemon.config import load_config
from hpod.errors import SpecError, UsageError
from hpod.execution.ray_executor import _check_reachable
from hpod.http.exporter import HpodCollector
from hpod.spec import parse_spec

VIEW = {
    "kind": "ray", "address": "127.0.0.1:6379", "namespace": "hpod",
    "nodes": [
        {"node_id": "a" * 56, "address": "10.0.0.1", "alive": True,
         "resources_total": {"CPU": 8.0, "GPU": 2.0, "memory": 2**34},
         "resources_available": {"CPU": 6.0, "GPU": 0.0, "memory": 2**33}},
        {"node_id": "b" * 56, "address": "10.0.0.2", "alive": False,
         "resources_total": {"CPU": 4.0}, "resources_available": {}},
    ],
    "resources_total": {"CPU": 8.0, "GPU": 2.0, "memory": 2**34},
    "resources_available": {"CPU": 6.0, "GPU": 0.0, "memory": 2**33},
}


@pytest.mark.parametrize("value, kind, address", [
    ("ray", "ray", "auto"), ("ray:ray://head:10001", "ray", "ray://head:10001"),
    ("ray:10.0.0.1:6379", "ray", "10.0.0.1:6379"), ("local", "local", "auto"),
    ({"kind": "ray", "address": "auto", "slots": 4}, "ray", "auto"),
    ('{"kind": "ray", "namespace": "team-a"}', "ray", "auto"),
])
def test_executor_setting_forms(value: object, kind: str, address: str) -> None:
    cfg = load_config(None, overrides={"executor": value}, env={})
    assert cfg.executor.kind == kind and cfg.executor.address == address


def test_executor_setting_from_environment_and_default() -> None:
    assert load_config(None, env={}).executor.kind == "local"
    assert load_config(None, env={"HPOD_EXECUTOR": "ray:ray://h:10001"}).executor.address == "ray://h:10001"


@pytest.mark.parametrize("value, field", [
    ("kubernetes", "'executor'"), ({"kind": "ray", "slots": 0}, "'executor.slots'"),
    ({"kind": "ray", "adress": "x"}, "'executor.adress'"), ({"kind": "ray", "address": " "}, "'executor.address'"),
])
def test_bad_executor_setting_names_the_field(value: object, field: str) -> None:
    with pytest.raises(UsageError) as err:
        load_config(None, overrides={"executor": value}, env={})
    assert field in str(err.value) and "found" in str(err.value)


def _spec(resources: dict[str, object]) -> dict[str, object]:
    return {"name": "r", "objective": {"name": "synthetic:training_cost"}, "budget": {"n_trials": 2},
            "resources": resources}


def test_spec_resources_section() -> None:
    spec = parse_spec(_spec({"gpus_per_trial": 2, "cpus_per_trial": 4, "custom": {"accelerator_type:A100": 0.001}}))
    assert spec.resources.gpus_per_trial == 2 and spec.resources.cpus_per_trial == 4
    default = parse_spec({"name": "r", "objective": {"name": "synthetic:training_cost"}, "budget": {"n_trials": 2}})
    assert default.resources.gpus_per_trial == 0 and default.resources.cpus_per_trial == 1
    # Ranks of one trial: one per GPU, or CPU processes over gloo, else one.
    assert (spec.resources.world_size, default.resources.world_size) == (2, 1)
    assert parse_spec(_spec({"processes_per_trial": 3})).resources.world_size == 3


@pytest.mark.parametrize("resources, where", [
    ({"gpus_per_trial": -1}, "resources.gpus_per_trial"), ({"cpus_per_trial": 0}, "resources.cpus_per_trial"),
    ({"custom": {"GPU": 1}}, "resources.custom"), ({"custom": {"x": 0}}, "resources.custom"),
    ({"gpu_per_trial": 1}, "resources.gpu_per_trial"),
    ({"gpus_per_trial": 2, "processes_per_trial": 3}, "processes_per_trial (3) must equal gpus_per_trial (2)"),
    ({"processes_per_trial": 0}, "resources.processes_per_trial"),
])
def test_bad_spec_resources_name_the_field(resources: dict[str, object], where: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec(_spec(resources))
    assert where in str(err.value)


def test_cluster_metrics_show_nodes_and_free_resources() -> None:
    registry = CollectorRegistry()
    HpodCollector(lambda: Snapshot(version="t", started_at=0.0, cluster=VIEW), registry=registry)
    text = generate_latest(registry).decode()
    assert 'hpod_cluster_nodes{state="alive"} 1.0' in text
    assert 'hpod_cluster_nodes{state="dead"} 1.0' in text
    assert 'hpod_cluster_resources_total{resource="GPU"} 2.0' in text
    assert 'hpod_cluster_resources_available{resource="CPU"} 6.0' in text
    assert 'hpod_cluster_node_resources_available{node="10.0.0.1/aaaaaaaaaaaa",resource="CPU"} 6.0' in text
    # Without a cluster executor: no cluster series at all.
    plain = CollectorRegistry()
    HpodCollector(lambda: Snapshot(version="t", started_at=0.0), registry=plain)
    assert "hpod_cluster_nodes{" not in generate_latest(plain).decode()


def test_status_prints_the_cluster_nodes() -> None:
    buf = io.StringIO()
    print_cluster(VIEW, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "10.0.0.1" in text and "alive" in text and "dead" in text
    assert "CPU 6" in text and "GPU 2" in text


def test_executor_table_in_a_toml_settings_file(tmp_path: Path) -> None:
    path = tmp_path / "hpod.toml"
    path.write_text(f'state_dir = "{tmp_path}"\n[executor]\nkind = "ray"\naddress = "ray://head:10001"\nslots = 8\n')
    cfg = load_config(path, env={})
    assert (cfg.executor.kind, cfg.executor.address, cfg.executor.slots) == ("ray", "ray://head:10001", 8)
    path.write_text('[executor]\nkind = "slurm"\n')
    with pytest.raises(UsageError) as err:
        load_config(path, env={"HPOD_STATE_DIR": str(tmp_path)})
    assert f"{path}: setting 'executor.kind'" in str(err.value) and "'slurm'" in str(err.value)


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:{port}", "cannot reach the Ray cluster at '127.0.0.1:{port}'"),
    ("ray://127.0.0.1:{port}", "cannot reach the Ray cluster at 'ray://127.0.0.1:{port}'"),
    ("head-without-port", "expected auto, HOST:PORT or ray://HOST:PORT (found 'head-without-port')"),
])
def test_unreachable_ray_address_is_refused_at_once(address: str, message: str) -> None:
    """Before ray.init, which would retry a dead address for minutes (no Ray needed)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UsageError) as err:
        _check_reachable(address.format(port=port), timeout=5)
    assert message.format(port=port) in str(err.value) and "executor.address" in str(err.value)
