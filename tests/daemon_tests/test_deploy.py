"""Tests of deploy/: the systemd units pass `systemd-analyze verify`, the Prometheus config,
alert rules and their unit tests pass promtool, and every PromQL expression of the Grafana
dashboard and the alert rules evaluates on a real Prometheus scraping a live hpod exporter."""

from __future__ import annotations

import json
import math
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hpod_testing import wait_for
from prometheus_client import CollectorRegistry

from hpod.http.exporter import (
    DriftSnapshot,
    HpodCollector,
    RetuneSnapshot,
    Snapshot,
    StudySnapshot,
    TrialObserver,
    start_metrics_server,
)
from hpod.monitors.gpu import GpuReading

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = DEPLOY / "systemd"
PROMETHEUS_DIR = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "hpod.json"
GiB = 2**30

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (scripts/install-prometheus.sh)"
)
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="prometheus not installed (scripts/install-prometheus.sh)"
)


# --- systemd -----------------------------------------------------------------------


def unit_settings(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) of a unit file, in order; keys may repeat (Environment=)."""
    settings = []
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.append((section, key.strip(), value.strip()))
    return settings


def verify_unit(unit: Path, tmp_path: Path, instance_name: str | None = None) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a copy whose ExecStart points at an executable that exists here."""
    executable = tmp_path / "hpod"
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    copy = tmp_path / (instance_name or unit.name)
    copy.write_text(unit.read_text().replace("/usr/local/bin/hpod", str(executable)))
    return subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("unit", "instance_name"),
    [("hpod.service", None), ("hpod-worker@.service", "hpod-worker@0.service")],
)
def test_systemd_units_verify_without_warnings(unit: str, instance_name: str | None, tmp_path: Path) -> None:
    result = verify_unit(UNITS / unit, tmp_path, instance_name)
    assert (result.returncode, result.stderr) == (0, "")


@needs_systemd_analyze
def test_systemd_verify_check_catches_a_bad_unit(tmp_path: Path) -> None:
    # systemd-analyze only warns (exit 0) on unknown keys: the stderr check is what catches them
    broken = tmp_path / "src" / "hpod.service"
    broken.parent.mkdir()
    broken.write_text((UNITS / "hpod.service").read_text().replace("[Service]", "[Service]\nProtectHomee=yes"))
    result = verify_unit(broken, tmp_path)
    assert "Unknown key 'ProtectHomee'" in result.stderr


@pytest.mark.parametrize("unit", ["hpod.service", "hpod-worker@.service"])
def test_systemd_units_have_the_service_properties_users_rely_on(unit: str) -> None:
    settings = unit_settings(UNITS / unit)
    service = {key: value for section, key, value in settings if section == "Service"}
    environment = [value for section, key, value in settings if section == "Service" and key == "Environment"]
    assert service["Type"] == "notify"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "root")
    assert service["StateDirectory"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    # PrivateDevices and a closed device policy would hide /dev/nvidia*
    assert service.get("PrivateDevices", "no") == "no"
    assert service.get("DevicePolicy", "auto") == "auto"
    assert service["LoadCredential"].startswith("hpod-token:")
    assert "HF_HUB_OFFLINE=1" in environment
    # SIGTERM to the daemon only, with time beyond the trial grace period
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) > 300


def test_worker_unit_takes_the_storage_from_an_environment_file() -> None:
    settings = unit_settings(UNITS / "hpod-worker@.service")
    service = {key: value for section, key, value in settings if section == "Service"}
    assert service["EnvironmentFile"] == "/etc/hpod/worker.env"
    assert service["ExecStart"].startswith("/usr/local/bin/hpod worker ")
    assert "--gpus %i" in service["ExecStart"]
    # the database password stays out of the command line (ps, journal)
    assert "postgresql" not in service["ExecStart"]
    example = (UNITS / "worker.env.example").read_text()
    assert re.search(r"^HPOD_STORAGE=postgresql\+psycopg://", example, re.MULTILINE)


# --- promtool ----------------------------------------------------------------------


@pytest.mark.prometheus
@needs_promtool
@pytest.mark.parametrize(
    "command",
    [
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules"],
)
def test_promtool_accepts_the_prometheus_files(command: list[str]) -> None:
    result = subprocess.run(
        ["promtool", *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "SUCCESS" in output
    assert "WARNING" not in output and "FAILED" not in output


# --- Grafana files -------------------------------------------------------------------


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_targets(board: dict) -> Iterator[tuple[str, dict]]:
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target


def test_grafana_provisioning_points_at_the_dashboard_datasource() -> None:
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/hpod.yaml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/hpod.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]

    board = dashboard()
    uids = {target["datasource"]["uid"] for _, target in panel_targets(board)}
    uids |= {panel["datasource"]["uid"] for panel in board["panels"] if "datasource" in panel}
    uids |= {variable["datasource"]["uid"] for variable in board["templating"]["list"]}
    assert uids == {datasource["uid"]}


def test_dashboard_layout_and_variables_are_consistent() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} has no query"
            # every panel with a value says its unit (Grafana's "short" for plain counts)
            assert panel.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"panel {panel['title']!r}: no unit"
    defined = {variable["name"] for variable in board["templating"]["list"]}
    used = {
        name
        for _, target in panel_targets(board)
        for name in re.findall(r"\$(\w+)", target["expr"])
        if not name.startswith("__")
    }
    assert used <= defined
    assert {"study", "instance"} <= used
    titles = " ".join(panel["title"].lower() for panel in board["panels"])
    for topic in ("throughput", "hypervolume", "pareto", "best", "energy per trial", "energy per study",
                  "duration", "memory", "gpu power", "gpu memory", "gpu utilization", "sampler",
                  "drift", "retunes", "events"):
        assert topic in titles, f"no panel about {topic}"


def exported_metric_names() -> set[str]:
    registry = CollectorRegistry()
    HpodCollector(lambda: demo_snapshot(time.time()), registry=registry)
    observer = TrialObserver(registry)
    observer.observe_trial("t5_cnndm", "COMPLETE", 60.0, GiB, 100.0)
    observer.observe_suggest("t5_cnndm", 0.1)
    return {sample.name for metric in registry.collect() for sample in metric.samples}


def test_dashboard_and_alerts_only_use_metrics_hpod_exports() -> None:
    exported = exported_metric_names()
    texts = [target["expr"] for _, target in panel_targets(dashboard())]
    texts += [rule["expr"] for group in yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
              for rule in group["rules"]]
    used = {name for text in texts for name in re.findall(r"\bhpod_[a-z_]+", text)}
    assert used - exported == set()


# --- a real Prometheus scraping a live exporter ------------------------------------------


def demo_snapshot(now: float) -> Snapshot:
    return Snapshot(
        version="0.1.0",
        started_at=now - 7200,
        studies=[
            StudySnapshot(
                name="t5_cnndm",
                trials_by_state={"COMPLETE": 18, "FAIL": 2, "PRUNED": 3, "RUNNING": 1, "WAITING": 2},
                running=1,
                hypervolume=0.62,
                pareto_front_size=5,
                best={"loss": 1.84, "time_seconds": 312.0, "memory_bytes": 3.5 * GiB, "energy_joules": 41_000.0},
                energy_joules_total=950_000.0,  # 95 % of the budget: the energy alert fires
                energy_budget_joules=1_000_000.0,
                n_trials_budget=40,
                last_activity_ts=now - 20,
                lagrange_multipliers={"time_seconds": 0.25},
                state="running",
            ),
            StudySnapshot(
                name="t5_cnndm@v2",
                trials_by_state={"COMPLETE": 4, "RUNNING": 1},
                running=1,
                hypervolume=0.4,
                pareto_front_size=2,
                best={"loss": 2.02},
                energy_joules_total=80_000.0,
                energy_budget_joules=500_000.0,
                n_trials_budget=20,
                last_activity_ts=now - 5,
                state="running",
            ),
        ],
        workers_by_state={"busy": 2, "idle": 1},
        gpus=[
            GpuReading(0, "NVIDIA H200", 512.5, 60.0 * GiB, 141.0 * GiB, 0.93, 7.2e6),
            GpuReading(1, "NVIDIA H200", 402.0, 30.0 * GiB, 141.0 * GiB, 0.71, 5.1e6),
        ],
        events_by_kind={"daemon_started": 1, "trial_completed": 22, "trial_failed": 2, "drift_detected": 1,
                        "retune_started": 1},
        drift=[DriftSnapshot("t5_cnndm", "data:length", 0.31, 1)],
        retunes=[RetuneSnapshot("t5_cnndm", "drift:data:length", 1)],
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LivePrometheus:
    base_url: str
    instance: str

    def query(self, expr: str) -> dict:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:  # 400/422: a bad expression; the body says why
            return json.load(error)

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"{self.base_url}{path}", timeout=10) as response:
            return json.load(response)




@pytest.fixture(scope="module")
def live_prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LivePrometheus]:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus not installed (scripts/install-prometheus.sh)")
    tmp = tmp_path_factory.mktemp("prometheus")
    snapshot = demo_snapshot(time.time())
    registry = CollectorRegistry()
    observer = TrialObserver(registry)
    HpodCollector(lambda: snapshot, registry=registry, observer=observer)
    server = start_metrics_server("127.0.0.1:0", registry)
    instance = f"127.0.0.1:{server.port}"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "alerts.yml")],
        "scrape_configs": [{"job_name": "hpod", "static_configs": [{"targets": [instance]}]}],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    live = LivePrometheus(f"http://127.0.0.1:{port}", instance)

    def answers(expr: str) -> list:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited with {process.returncode}: {(tmp / 'prometheus.log').read_text()}")
        try:
            return live.query(expr)["data"]["result"]
        except OSError:
            return []

    def scrapes() -> int:
        result = answers(f'count_over_time(up{{instance="{instance}"}}[5m])')
        return int(result[0]["value"][1]) if result else 0

    try:
        wait_for(lambda: answers(f'up{{instance="{instance}"}} == 1'), 30, "the first scrape")
        # The studies' histogram series exist, at 0, before their first trial ends (the
        # collector creates them from the snapshot), as they would on a running daemon.
        wait_for(lambda: answers("hpod_sampler_suggest_seconds_count == 0"), 30, "empty histograms")
        # Activity after the first scrape, so that rate()/increase()/histogram_quantile()
        # see counters rising, as they would on a daemon that runs trials.
        for duration, state, memory, energy in [
            (95.0, "COMPLETE", 2.5 * GiB, 30_000.0),
            (310.0, "COMPLETE", 3.5 * GiB, 41_000.0),
            (12.0, "FAIL", 0.5 * GiB, 800.0),
            (150.0, "PRUNED", 2.0 * GiB, 12_000.0),
        ]:
            observer.observe_trial("t5_cnndm", state, duration, memory, energy)
            observer.observe_trial("t5_cnndm@v2", state, duration * 1.1, memory, energy)
        for seconds in (0.08, 0.4, 1.3):
            observer.observe_suggest("t5_cnndm", seconds)
            observer.observe_suggest("t5_cnndm@v2", seconds)
        snapshot.studies[0].trials_by_state.update(COMPLETE=20, FAIL=3, PRUNED=4)
        snapshot.studies[1].trials_by_state.update(COMPLETE=5)
        snapshot.events_by_kind["trial_completed"] = 25
        snapshot.drift[0].alarms_total = 2
        snapshot.retunes[0].count = 2
        seen = scrapes()
        wait_for(lambda: scrapes() >= seen + 3, 30, "three scrapes after the activity")
        yield live
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        server.close()


def substitute(expr: str, instance: str) -> str:
    """Grafana's variables as a user with two studies and one daemon selected would see them."""
    values = {
        "$__rate_interval": "1m",
        "$__interval": "1m",
        # Grafana regex-escapes a value and then doubles the backslashes for PromQL strings
        "$instance": re.escape(instance).replace("\\", "\\\\"),
        "$study": "t5_cnndm|t5_cnndm@v2",
        "$objective": ".*",
        "$gpu": "0|1",
    }
    for name, value in values.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def finite_values(response: dict) -> list[float]:
    values = []
    for series in response["data"]["result"]:
        value = float(series["value"][1])
        if math.isfinite(value):
            values.append(value)
    return values


@pytest.mark.prometheus
@needs_prometheus
def test_every_dashboard_query_returns_data_on_a_real_prometheus(live_prometheus: LivePrometheus) -> None:
    board = dashboard()
    failures = []
    for title, target in panel_targets(board):
        expr = substitute(target["expr"], live_prometheus.instance)
        response = live_prometheus.query(expr)
        if response.get("status") != "success":
            failures.append(f"{title}: {response.get('error')} in {expr}")
        elif not finite_values(response):
            failures.append(f"{title}: no data for {expr}")
    for variable in board["templating"]["list"]:
        inner, label = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"]).groups()
        response = live_prometheus.query(f"group by ({label}) ({substitute(inner, live_prometheus.instance)})")
        if response.get("status") != "success" or not response["data"]["result"]:
            failures.append(f"variable {variable['name']}: {response}")
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            response = live_prometheus.query(substitute(annotation["expr"], live_prometheus.instance))
            if response.get("status") != "success":
                failures.append(f"annotation {annotation['name']}: {response.get('error')}")
    assert failures == []


@pytest.mark.prometheus
@needs_prometheus
def test_every_alert_rule_evaluates_and_the_energy_alert_fires(live_prometheus: LivePrometheus) -> None:
    groups = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"]
    for rule in (rule for group in groups for rule in group["rules"]):
        response = live_prometheus.query(rule["expr"])
        assert response.get("status") == "success", (rule["alert"], response.get("error"))

    def evaluated_rules() -> list[dict]:
        rules = [rule for group in live_prometheus.get("/api/v1/rules")["data"]["groups"] for rule in group["rules"]]
        return rules if all(rule["health"] != "unknown" for rule in rules) else []

    wait_for(evaluated_rules, 15, "the rule group to be evaluated")
    rules = {rule["name"]: rule for rule in evaluated_rules()}
    assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(rules, "ok")
    firing = {
        (alert["labels"]["alertname"], alert["labels"].get("study"))
        for alert in live_prometheus.get("/api/v1/alerts")["data"]["alerts"]
        if alert["state"] == "firing"
    }
    # 95 % of t5_cnndm's energy budget is spent, 16 % of t5_cnndm@v2's; the daemon is up
    assert ("HpodEnergyBudgetNearlySpent", "t5_cnndm") in firing
    assert ("HpodEnergyBudgetNearlySpent", "t5_cnndm@v2") not in firing
    assert not any(name == "HpodDown" for name, _ in firing)
