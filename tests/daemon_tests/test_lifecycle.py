"""The daemon's Lifecycle: components start in order and stop in reverse order, each
once, with its own timeout; a component that fails to start or stop does not leave
the others running. SignalFlags: handlers only set flags, a second stop signal cuts
the grace period short."""

from __future__ import annotations

import os
import signal

import pytest

from hpod.daemon.lifecycle import Component, Lifecycle, SignalFlags


class Part:
    def __init__(self, name: str, log: list[str], *, fail_start: bool = False, fail_stop: bool = False):
        self.name, self.log, self.fail_start, self.fail_stop = name, log, fail_start, fail_stop

    def start(self) -> None:
        if self.fail_start:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"start {self.name}")

    def stop(self, timeout: float) -> None:
        self.log.append(f"stop {self.name} {timeout:g}")
        if self.fail_stop:
            raise RuntimeError(f"{self.name} cannot stop")


def test_components_stop_in_reverse_order_each_once_with_its_timeout() -> None:
    log: list[str] = []
    life = Lifecycle()
    for name in ("metrics", "api", "trials", "scheduler"):
        part = Part(name, log)
        assert isinstance(part, Component)
        life.start(part)
    assert life.names() == ["metrics", "api", "trials", "scheduler"]
    life.stop(10, timeouts={"trials": 300})
    life.stop(10)  # a second stop stops nothing again
    assert log == ["start metrics", "start api", "start trials", "start scheduler",
                   "stop scheduler 10", "stop trials 300", "stop api 10", "stop metrics 10"]


def test_a_failed_start_leaves_the_started_ones_to_stop_and_a_failed_stop_does_not_block_the_rest() -> None:
    log: list[str] = []
    life = Lifecycle()
    life.start(Part("metrics", log))
    life.start(Part("api", log, fail_stop=True))
    with pytest.raises(RuntimeError, match="trials cannot start"):
        life.start(Part("trials", log, fail_start=True))
    assert life.names() == ["metrics", "api"]
    life.stop(5)
    assert log == ["start metrics", "start api", "stop api 5", "stop metrics 5"]


def test_signal_handlers_only_set_flags() -> None:
    flags = SignalFlags()
    flags.install()
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert flags.reload.is_set() and not flags.stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flags.stop.is_set() and flags.signal_name == "SIGTERM" and not flags.abort_grace.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # a second stop signal: hand running trials back now
        assert flags.abort_grace.is_set() and flags.signal_name == "SIGINT"
    finally:
        flags.restore()
    assert signal.getsignal(signal.SIGTERM) is not flags._on_stop
