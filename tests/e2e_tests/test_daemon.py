"""``hpod daemon`` as a real process: readiness over the notify socket, ``hpod submit``
to completion, ``hpod status``, 401 without the token, SIGTERM mid-trial (exit 0
within the grace period, trial re-queued), kill -9 and restart (no orphan left
RUNNING, exactly n_trials completed), and pause / resume / cancel with two studies
sharing the slots."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from daemon_harness import DaemonProcess, wait_for, write_spec

from hpod.store import Store


@pytest.fixture()
def daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DaemonProcess]:
    options = getattr(request, "param", {})
    proc = DaemonProcess(tmp_path, **options)
    try:
        yield proc
    finally:
        proc.close()


def trial_states(state_dir: Path, study: str) -> dict[str, int]:
    store = Store.for_state_dir(state_dir)
    try:
        counts: dict[str, int] = {}
        for t in store.load_optuna_study(study).get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts
    finally:
        store.close()


@pytest.mark.parametrize("daemon", [{"cpu_slots": 2}], indirect=True)
def test_submitted_study_runs_to_completion_and_status_reports_it(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    assert httpx.get(daemon.api_url + "/healthz").json()["ready"] is True
    # requests without the token (or with another) are refused
    assert httpx.get(daemon.api_url + "/v1/status").status_code == 401
    assert httpx.get(daemon.api_url + "/v1/status", headers={"Authorization": "Bearer nope"}).status_code == 401
    spec = write_spec(tmp_path / "study.yaml", "e2e-submit", n_trials=8, sleep_seconds=0.2)
    out = daemon.hpod("submit", str(spec))
    assert "submitted e2e-submit (new)" in out.stdout
    wait_for(lambda: daemon.events("study_completed", "e2e-submit"), 150, "the study to complete", daemon)

    status = json.loads(daemon.hpod("status", "--json").stdout)
    assert status["daemon"]["version"] and status["daemon"]["uptime_seconds"] > 0
    assert [s["name"] for s in status["slots"]] == ["cpu0", "cpu1"]
    study = next(s for s in status["studies"] if s["name"] == "e2e-submit")
    assert study["state"] == "completed" and study["trials"].get("COMPLETE") == 8
    assert study["hypervolume"] > 0 and study["pareto_front_size"] >= 1
    assert set(study["best"]) == {"loss", "time_seconds", "energy_joules"}
    assert any(e["kind"] == "study_completed" for e in status["events"])
    plain = daemon.hpod("status").stdout  # piped: plain tables
    assert "e2e-submit" in plain and "completed" in plain and "\x1b[" not in plain
    assert trial_states(daemon.state_dir, "e2e-submit") == {"COMPLETE": 8}
    # the submission event was appended, then acted on and marked handled
    submitted = daemon.events("study_submitted", "e2e-submit")
    assert len(submitted) == 1 and submitted[0]["handled"] is True

    assert "WATCHDOG=1" in daemon.read_notifications()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert "STOPPING=1" in daemon.read_notifications()


@pytest.mark.parametrize("daemon", [{"grace_seconds": 2.0}], indirect=True)
def test_sigterm_mid_trial_requeues_the_trial_and_exits_0_within_the_grace_period(daemon: DaemonProcess,
                                                                                   tmp_path: Path) -> None:
    daemon.start()
    spec = write_spec(tmp_path / "long.yaml", "e2e-sigterm", n_trials=2, sleep_seconds=120)
    daemon.hpod("submit", str(spec))
    wait_for(lambda: daemon.events("trial_started", "e2e-sigterm"), 60, "a trial to start", daemon)
    time.sleep(0.5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    elapsed = time.monotonic() - started
    # waited for the 2 s grace period, not for the 120 s trial (a loaded machine adds seconds)
    assert 1.5 <= elapsed < 90, elapsed
    assert "STOPPING=1" in daemon.read_notifications()

    store = Store.for_state_dir(daemon.state_dir)
    try:
        failed = store.events(kinds=["trial_failed"], study="e2e-sigterm")
        assert len(failed) == 1
        payload = json.loads(failed[0].payload_json)
        assert payload["reason"] == "shutdown" and payload["requeued"] is True
        assert store.events(kinds=["daemon_stopping"])
        states = {t.state.name for t in store.load_optuna_study("e2e-sigterm").get_trials(deepcopy=False)}
        assert "WAITING" in states  # the configuration is queued again for the next start
    finally:
        store.close()


def test_kill_9_mid_trial_then_restart_leaves_no_orphan_and_completes_exactly_n_trials(
        daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    spec = write_spec(tmp_path / "crash.yaml", "e2e-crash", n_trials=4, sleep_seconds=2.0)
    daemon.hpod("submit", str(spec))
    wait_for(lambda: daemon.events("trial_completed", "e2e-crash"), 90, "a first trial to complete", daemon)
    wait_for(lambda: len(daemon.events("trial_started", "e2e-crash")) >= 2, 60, "a second trial", daemon)
    daemon.signal(signal.SIGKILL)
    daemon.wait_exit(10)
    assert trial_states(daemon.state_dir, "e2e-crash").get("RUNNING", 0) >= 1

    daemon.start()  # same state dir and token, new ports
    wait_for(lambda: daemon.events("study_completed", "e2e-crash"), 150, "the study to complete", daemon)
    states = trial_states(daemon.state_dir, "e2e-crash")
    assert states.get("COMPLETE") == 4 and states.get("RUNNING", 0) == 0 and states.get("WAITING", 0) == 0
    orphaned = [e for e in daemon.events("trial_failed", "e2e-crash") if e["payload"]["reason"] == "orphaned"]
    assert len(orphaned) >= 1 and all(e["payload"]["requeued"] for e in orphaned)
    starts = daemon.events("daemon_started")
    first_orphan = min(e["id"] for e in orphaned)
    # recovery happened before the restarted daemon started any new trial
    restart_id = starts[-1]["id"]
    new_starts = [e["id"] for e in daemon.events("trial_started", "e2e-crash") if e["id"] > restart_id]
    assert new_starts and first_orphan < min(new_starts)


@pytest.mark.parametrize("daemon", [{"cpu_slots": 2}], indirect=True)
def test_two_studies_share_the_slots_and_obey_pause_resume_cancel(daemon: DaemonProcess, tmp_path: Path) -> None:
    daemon.start()
    # Each study is still running when the `hpod pause` / `cancel` meant for it arrives
    # (cold CLI processes: seconds each on a loaded machine, the second submit included,
    # while share-a has both slots): share-a needs >= 24 s on both slots, share-b >= 45 s.
    a = write_spec(tmp_path / "a.yaml", "share-a", n_trials=24, sleep_seconds=2.0)
    b = write_spec(tmp_path / "b.yaml", "share-b", n_trials=30, sleep_seconds=3.0)
    daemon.hpod("submit", str(a))
    daemon.hpod("submit", str(b))
    # fair share: both studies run at the same time, one slot each
    wait_for(lambda: {e["study"] for e in daemon.events("trial_started")} == {"share-a", "share-b"}, 60,
             "both studies to start trials", daemon)

    out = daemon.hpod("pause", "share-a").stdout
    assert "paused" in out
    paused_at = daemon.events()[-1]["id"]
    # While share-a is paused, share-b goes on: wait (on events, however slow the machine)
    # until share-b has started two more trials, then check share-a started none meanwhile.
    wait_for(lambda: len([e for e in daemon.events("trial_started", "share-b") if e["id"] > paused_at]) >= 2,
             120, "share-b to start two trials while share-a is paused", daemon)
    late = [e for e in daemon.events("trial_started", "share-a") if e["id"] > paused_at]
    assert late == [], "a paused study started a trial"
    assert daemon.study("share-a")["state"] == "paused"

    daemon.hpod("resume", "share-a")
    out = daemon.hpod("cancel", "share-b").stdout
    assert "cancelled" in out
    wait_for(lambda: daemon.events("study_completed", "share-a"), 90, "share-a to complete", daemon)
    assert daemon.study("share-b")["state"] == "cancelled"
    wait_for(lambda: trial_states(daemon.state_dir, "share-b").get("RUNNING", 0) == 0, 30,
             "share-b's last trial to be told", daemon)
    assert trial_states(daemon.state_dir, "share-b").get("COMPLETE", 0) < 30
    assert trial_states(daemon.state_dir, "share-a") == {"COMPLETE": 24}

    retune = daemon.hpod("retune", "share-a", "--reason", "nightly data refresh", "--json")
    result = json.loads(retune.stdout)
    assert result["handled"] is True and result["ok"] is True
    assert "share-a@v2" in result["message"]  # the retune policy started a new version
    event = daemon.events("retune_started", "share-a")[-1]
    assert event["payload"] == {"reason": "manual", "note": "nightly data refresh", "by": "api"}
    assert event["handled"] is True
    lines = daemon.hpod("events", "--study", "share-a", "--json").stdout.splitlines()
    assert "retune_started" in [json.loads(line)["kind"] for line in lines]
    status = json.loads(daemon.hpod("status", "--json").stdout)
    child = next(s for s in status["studies"] if s["name"] == "share-a@v2")
    assert child["parent"] == "share-a" and child["reason"] == "manual"
    assert status["retunes"][0]["study"] == "share-a" and status["retunes"][0]["active"] == "share-a@v2"
    assert "retunes" in daemon.hpod("status").stdout


def test_spec_directory_is_run_and_reread_on_sighup_with_windows_and_cron(tmp_path: Path) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    write_spec(specs / "first.yaml", "dir-first", n_trials=3, sleep_seconds=0.0,
               schedule={"cron": "0 3 * * *"})
    daemon = DaemonProcess(tmp_path, extra_args=["--spec-dir", str(specs)])
    try:
        daemon.start()
        wait_for(lambda: daemon.events("study_completed", "dir-first"), 90, "the spec-dir study", daemon)
        now = datetime.now()
        closed = f"{(now + timedelta(hours=2)):%H}:00-{(now + timedelta(hours=3)):%H}:00"
        write_spec(specs / "later.yaml", "dir-window", n_trials=2, sleep_seconds=0.0, schedule={"window": closed})
        write_spec(specs / "second.yaml", "dir-second", n_trials=2, sleep_seconds=0.0)
        (specs / "broken.yaml").write_text("name: [unclosed\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.events("study_completed", "dir-second"), 90, "the study added on SIGHUP", daemon)
        status = json.loads(daemon.hpod("status", "--json").stdout)
        by_name = {s["name"]: s for s in status["studies"]}
        assert by_name["dir-window"]["state"] == "running" and by_name["dir-window"]["window"] == closed
        assert daemon.events("trial_started", "dir-window") == []  # outside its window: no trial starts
        next_run = by_name["dir-first"]["next_run"]
        assert next_run is not None and 0 < next_run - time.time() <= 86400
        assert "broken.yaml" in daemon.log_text()  # reported, and the daemon goes on
        daemon.signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
    finally:
        daemon.close()


def test_resubmitting_a_running_study_with_a_larger_budget_keeps_its_running_trial(daemon: DaemonProcess,
                                                                                    tmp_path: Path) -> None:
    daemon.start()
    # Trials long enough that the second `hpod submit` (seconds on a loaded machine)
    # arrives while the first one runs.
    spec = write_spec(tmp_path / "grow.yaml", "e2e-grow", n_trials=2, sleep_seconds=8.0)
    daemon.hpod("submit", str(spec))
    wait_for(lambda: daemon.events("trial_started", "e2e-grow"), 60, "a trial to start", daemon)
    write_spec(spec, "e2e-grow", n_trials=4, sleep_seconds=8.0)
    assert "(updated)" in daemon.hpod("submit", str(spec)).stdout
    wait_for(lambda: daemon.events("study_completed", "e2e-grow"), 120, "the study to complete", daemon)
    assert trial_states(daemon.state_dir, "e2e-grow") == {"COMPLETE": 4}
    assert daemon.events("trial_failed", "e2e-grow") == []


def test_events_left_unhandled_before_a_start_are_acted_on_once(daemon: DaemonProcess, tmp_path: Path) -> None:
    from hpod.http.api import submit_study
    from hpod.spec import load_spec

    spec = load_spec(write_spec(tmp_path / "pending.yaml", "e2e-pending", n_trials=2, sleep_seconds=0.0))
    store = Store.for_state_dir(daemon.state_dir)
    try:
        # as the API does, with no daemon to act
        event_id, created = submit_study(store, spec, by="test", allowed_objectives=("builtin",))
        paused = store.append_event("study_paused", study="e2e-pending", payload={"by": "test"})
        resumed = store.append_event("study_resumed", study="e2e-pending", payload={"by": "test"})
    finally:
        store.close()
    assert created
    daemon.start()
    wait_for(lambda: daemon.events("study_completed", "e2e-pending"), 60, "the pending study", daemon)
    handled = {e["id"]: e["handled"] for e in daemon.events(study="e2e-pending")}
    assert handled[event_id] and handled[paused] and handled[resumed]
    assert len(daemon.events("study_submitted", "e2e-pending")) == 1
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    daemon.start()  # nothing left to act on: the completed study stays completed
    time.sleep(1.0)
    assert daemon.study("e2e-pending")["state"] == "completed"
    assert len(daemon.events("study_completed", "e2e-pending")) == 1
