"""sd_notify over a datagram socket: the messages arrive, an absent or full socket never
blocks or raises, and the watchdog interval is half of WATCHDOG_USEC for this process only."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from hpod.daemon._sd_notify import sd_notify
from hpod.daemon._sd_notify import watchdog_interval as _watchdog_interval


def test_sd_notify_sends_datagrams_and_never_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1") is True
        assert receiver.recv(100) == b"READY=1"
        # nobody reads: the queue fills, and sd_notify reports failure instead of hanging
        results = [sd_notify("WATCHDOG=1") for _ in range(2000)]
        assert results[0] is True and results[-1] is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert sd_notify("STOPPING=1") is False
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("READY=1") is False


def test_watchdog_interval_is_half_the_usec_for_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "120000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert _watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert _watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert _watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_USEC")
    assert _watchdog_interval() is None
