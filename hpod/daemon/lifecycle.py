"""The daemon's parts and the one object that starts and stops them.

Every long-lived part of ``hpod daemon`` (API server, metrics server, serving servers,
scheduler, drift monitors, retune policy, the local trial slots) is a
:class:`Component`: ``start()`` brings it up, ``stop(timeout)`` brings it down within
``timeout`` seconds. :class:`Lifecycle` starts them in order and stops the started ones
in reverse order, each once, so a failed start leaves nothing running. Signal handlers
(:class:`SignalFlags`) only set flags; the main loop reads them.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from types import FrameType
from typing import Any, Protocol, runtime_checkable

__all__ = ["Component", "Lifecycle", "SignalFlags"]

log = logging.getLogger(__name__)


@runtime_checkable
class Component(Protocol):
    """A part of the daemon with a start and a bounded stop."""

    name: str

    def start(self) -> None:
        """Bring the part up; raise if it cannot (the daemon then stops what started)."""

    def stop(self, timeout: float) -> None:
        """Bring the part down within ``timeout`` seconds; never raise for a part that
        is already down."""


class Lifecycle:
    """Starts components in order, stops the started ones in reverse order."""

    def __init__(self) -> None:
        self.started: list[Component] = []

    def start(self, component: Component) -> None:
        component.start()
        self.started.append(component)
        log.debug("started %s", component.name)

    def stop(self, timeout: float, *, timeouts: Mapping[str, float] | None = None) -> None:
        """Stop every started component, last first, each within ``timeout`` seconds
        (or its own entry of ``timeouts``, by name: the trials' grace period). A
        component that fails to stop is logged; the others still stop."""
        while self.started:
            component = self.started.pop()
            try:
                component.stop((timeouts or {}).get(component.name, timeout))
            except Exception:
                log.exception("stopping %s failed", component.name)

    def names(self) -> list[str]:
        return [c.name for c in self.started]


class SignalFlags:
    """SIGTERM/SIGINT set ``stop`` (a second one sets ``abort_grace`` too: running
    trials are handed back at once); SIGHUP sets ``reload``. Nothing else happens in a
    signal handler."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.abort_grace = threading.Event()
        self.reload = threading.Event()
        self.signal_name: str | None = None
        self._old: dict[int, Any] = {}

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.stop.is_set():
            self.abort_grace.set()
        self.signal_name = signal.Signals(signum).name
        self.stop.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()

    def install(self) -> None:
        for sig, handler in ((signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
                             (signal.SIGHUP, self._on_reload)):
            self._old[sig] = signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()
