"""The daemon's scheduling helpers: trial windows and cron retunes."""

from __future__ import annotations

import json
import time
from datetime import datetime

import pytest

from hpod.daemon.scheduling import DaemonScheduler, window_open
from hpod.spec import parse_spec
from hpod.store import Store

SPEC = {
    "name": "api-study",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "energy_joules"}],
    "sampler": {"name": "random", "seed": 1},
    "budget": {"n_trials": 3},
}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return Store.for_state_dir(tmp_path_factory.mktemp("scheduling"))



@pytest.mark.parametrize("window,hhmm,inside", [
    ("22:00-06:00", "23:30", True), ("22:00-06:00", "05:59", True), ("22:00-06:00", "06:00", False),
    ("22:00-06:00", "12:00", False), ("09:00-17:00", "09:00", True), ("09:00-17:00", "17:00", False),
    (None, "03:00", True),
])
def test_trial_window(window: str | None, hhmm: str, inside: bool) -> None:
    now = datetime.fromisoformat(f"2026-03-01T{hhmm}:00")
    assert window_open(window, now=now) is inside


def test_cron_schedule_records_a_retune_event_and_reports_the_next_run(store: Store) -> None:
    spec = parse_spec({**SPEC, "name": "cron-study", "schedule": {"cron": "* * * * *"}})
    sched = DaemonScheduler(store)
    sched.set_study_schedule(spec.name, spec.schedule)
    nxt = sched.next_run(spec.name)
    assert nxt is not None and time.time() < nxt <= time.time() + 61
    sched._scheduled_retune(spec.name)  # what the cron trigger runs
    event = store.events(kinds=["retune_started"], study="cron-study")[-1]
    assert json.loads(event.payload_json)["reason"] == "schedule" and event.handled is False
    sched.remove_study(spec.name)
    assert sched.next_run(spec.name) is None
