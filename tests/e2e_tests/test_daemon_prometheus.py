"""A real Prometheus scrapes a live ``hpod daemon`` running a study: the core series
have data, every dashboard and alert expression evaluates without error, and
``promtool check metrics`` finds nothing to complain about on the live scrape."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from daemon_harness import DaemonProcess, free_port, wait_for, write_spec

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None or shutil.which("promtool") is None,
                       reason="prometheus/promtool not installed (scripts/install-prometheus.sh)"),
]


def _deploy_helpers():  # the dashboard walker and Grafana variable substitution of the deploy tests
    spec = importlib.util.spec_from_file_location("_hpod_deploy_tests", REPO / "tests/daemon_tests/test_deploy.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


class Prom:
    def __init__(self, base_url: str):
        self.base_url = base_url

    def query(self, expr: str) -> dict:
        try:
            resp = httpx.get(f"{self.base_url}/api/v1/query", params={"query": expr}, timeout=10)
        except httpx.TransportError:
            return {"status": "unreachable", "data": {"result": []}}
        try:
            return resp.json()
        except ValueError:  # a starting Prometheus answers "Service Unavailable" in plain text
            return {"status": f"not ready ({resp.status_code})", "data": {"result": []}}

    def values(self, expr: str) -> list[float]:
        return [float(r["value"][1]) for r in self.query(expr).get("data", {}).get("result", [])]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, Prom]]:
    tmp = tmp_path_factory.mktemp("daemon-prometheus")
    daemon = DaemonProcess(tmp, cpu_slots=2)
    process = None
    try:
        daemon.start()
        target = f"127.0.0.1:{daemon.metrics_port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus/alerts.yml")],
            "scrape_configs": [{"job_name": "hpod", "static_configs": [{"targets": [target]}]}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp / "prometheus.log").open("w")
        process = subprocess.Popen(["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}",
                                    "--log.level=warn"], stdout=log, stderr=subprocess.STDOUT)
        prom = Prom(f"http://127.0.0.1:{port}")
        wait_for(lambda: prom.values(f'up{{instance="{target}"}}') == [1.0], 60, "the first scrape", daemon)
        spec = write_spec(tmp / "prom.yaml", "prom-study", n_trials=10, sleep_seconds=0.5)
        daemon.hpod("submit", str(spec))
        wait_for(lambda: daemon.events("study_completed", "prom-study"), 180, "the study to complete", daemon)
        # a scrape taken after the last trial was told and the study's summary caught up
        # (the histogram and the summary's counts can be one scrape apart)
        wait_for(lambda: prom.values('hpod_trial_duration_seconds_count{study="prom-study",state="complete"}')
                 == [10.0] and prom.values('hpod_trials_total{study="prom-study",state="complete"}') == [10.0],
                 60, "a scrape after the last trial", daemon)
        yield daemon, prom
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=15)
        daemon.close()


def test_prometheus_has_the_core_series_of_the_live_daemon(live: tuple[DaemonProcess, Prom]) -> None:
    _daemon, prom = live
    assert prom.values('hpod_trials_total{study="prom-study",state="complete"}') == [10.0]
    assert prom.values('hpod_trials_total{study="prom-study",state="fail"}') == [0.0]
    hv = prom.values('hpod_study_hypervolume{study="prom-study"}')
    assert len(hv) == 1 and hv[0] > 0
    assert prom.values('hpod_study_pareto_front_size{study="prom-study"}')[0] >= 1
    assert prom.values('hpod_trial_duration_seconds_count{study="prom-study",state="complete"}') == [10.0]
    assert prom.values('hpod_sampler_suggest_seconds_count{study="prom-study"}')[0] >= 10
    assert prom.values('hpod_events_total{kind="trial_completed"}') == [10.0]
    assert prom.values('sum(hpod_workers{state=~"idle|busy"})') == [1.0]  # this daemon's local slots
    assert prom.values('max_over_time(hpod_trials_running{study="prom-study"}[5m])')[0] >= 1
    assert prom.values('hpod_trial_energy_joules_total{study="prom-study"}')[0] > 0


def test_every_dashboard_and_alert_expression_evaluates(live: tuple[DaemonProcess, Prom]) -> None:
    daemon, prom = live
    helpers = _deploy_helpers()
    instance = f"127.0.0.1:{daemon.metrics_port}"
    errors = []
    core_without_data = []
    for title, target in helpers.panel_targets(helpers.dashboard()):
        expr = helpers.substitute(target["expr"], instance).replace("t5_cnndm|t5_cnndm@v2", "prom-study")
        response = prom.query(expr)
        if response.get("status") != "success":
            errors.append(f"{title}: {response.get('error')} in {expr}")
        elif any(word in expr for word in ("hpod_trials_total", "hpod_study_hypervolume")) \
                and not response["data"]["result"]:
            core_without_data.append(f"{title}: {expr}")
    rules = yaml.safe_load((DEPLOY / "prometheus/alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            response = prom.query(rule["expr"])
            if response.get("status") != "success":
                errors.append(f"alert {rule.get('alert')}: {response.get('error')}")
    assert errors == []
    assert core_without_data == []


def test_promtool_finds_nothing_wrong_with_the_live_scrape(live: tuple[DaemonProcess, Prom]) -> None:
    daemon, _ = live
    exposition = httpx.get(daemon.metrics_url, timeout=10).text
    assert "hpod_trials_total" in exposition
    result = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "" and result.stderr.strip() == "", \
        result.stdout + result.stderr
    # the API serves the same registry without a token
    via_api = httpx.get(daemon.api_url + "/metrics", timeout=10)
    assert via_api.status_code == 200 and "hpod_build_info" in via_api.text
