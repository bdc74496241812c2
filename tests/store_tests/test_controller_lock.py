"""One controller per study: the lock is exclusive across processes, counted within
one, per study, and dies with its holder (``kill -9``), on SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hpod_pg import fresh_database
from hpod_testing import wait_for

from hpod.store import Store

HOLD = ("import sys, time\nfrom hpod.store import Store\nstore = Store(sys.argv[1])\n"
        "print('held' if store.lock_study(sys.argv[2]) else 'refused', flush=True)\ntime.sleep(600)\n")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpod.db'}"
    else:
        with fresh_database("hpod_lock") as pg_url:
            yield pg_url


def _holder(url: str, study: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, url, study], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_study_has_one_controller_process_until_its_holder_dies(url: str) -> None:
    store = Store(url)
    try:
        holder = _holder(url, "busy")
        try:
            assert store.lock_study("busy") is False  # another process drives it
            assert store.lock_study("other") is True  # per study, not per database
            store.unlock_study("other")
        finally:
            holder.send_signal(signal.SIGKILL)
            holder.wait(30)
        # the lock died with its holder (kill -9: no clean-up ran)
        wait_for(lambda: store.lock_study("busy"), 30, "the dead holder's lock to be released")
        # counted within a process: a second hold and one release keep it held
        assert store.lock_study("busy") is True
        store.unlock_study("busy")
        other = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", ""), url, "busy"],
                               capture_output=True, text=True, timeout=120)
        assert other.stdout.strip() == "refused", other.stderr
        store.unlock_study("busy")
        freed = subprocess.run([sys.executable, "-c", HOLD.replace("time.sleep(600)", ""), url, "busy"],
                               capture_output=True, text=True, timeout=120)
        assert freed.stdout.strip() == "held", freed.stderr
    finally:
        store.close()
