"""The daemon's serving endpoints: one ``POST /v1/summarize`` server per study whose
spec sets ``serving.enabled``, on its ``serving.address``.

A study starts being served once it has a trial to serve (checked every few seconds);
after a retune the serving app itself follows the new selection.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpod.errors import HpodError, UsageError
from hpod.http.server import start_server
from hpod.http.serving import create_serving_app
from hpod.spec import parse_spec

__all__ = ["DaemonServing"]

log = logging.getLogger(__name__)
_RETRY_SECONDS = 10.0


@dataclass
class _Served:
    address: str
    server: Any
    thread: threading.Thread
    started_at: float


class DaemonServing:
    """Starts and stops the serving servers of the studies that ask for one.

    Driven by the daemon's main loop (``ensure``) and its shutdown (``stop``)."""

    name = "serving"

    def __init__(self, store: Any, state_dir: Path, token: str):
        self.store = store
        self.state_dir = state_dir
        self.token = token
        self.served: dict[str, _Served] = {}
        self.waiting: dict[str, str] = {}
        self._next_try: dict[str, float] = {}
        self._last_check = 0.0

    def ensure(self) -> None:
        """Start servers for enabled studies that have something to serve."""
        if time.monotonic() - self._last_check < 2.0:
            return
        self._last_check = time.monotonic()

        for row in self.store.list_studies():
            if row.parent is not None or row.name in self.served or row.state == "cancelled":
                continue
            if time.monotonic() < self._next_try.get(row.name, 0.0):
                continue
            try:
                spec = parse_spec(json.loads(row.spec_json))
            except HpodError:
                continue
            if not spec.serving.enabled:
                continue
            try:
                self._start(row.name, spec.serving.address)
                self.waiting.pop(row.name, None)
            except UsageError as exc:  # nothing to serve yet, or a bad address
                self.waiting[row.name] = str(exc)
                self._next_try[row.name] = time.monotonic() + _RETRY_SECONDS

    def _start(self, study: str, address: str) -> None:

        app = create_serving_app(self.store, study, state_dir=self.state_dir, token=self.token)
        served = start_server(app, address, name=f"hpod-serve-{study}", what=f"serving {study!r} (serving.address)")
        server, thread = served.server, served.thread
        self.served[study] = _Served(address=address, server=server, thread=thread, started_at=time.time())
        log.info("serving %s on http://%s/v1/summarize", study, address)
        self.store.append_event("serving_switched", study=study, payload={"address": address, "started": True},
                                handled=True)

    def status(self) -> list[dict[str, Any]]:
        rows = [{"study": s, "address": v.address, "since": v.started_at, "state": "serving"}
                for s, v in self.served.items()]
        rows += [{"study": s, "address": None, "state": "waiting", "reason": r} for s, r in self.waiting.items()]
        return rows

    def start(self) -> None:
        """Nothing to start: :meth:`ensure` starts each server when its study has
        something to serve."""

    def stop(self, timeout: float = 10.0) -> None:
        for served in self.served.values():
            served.server.should_exit = True
        for served in self.served.values():
            served.thread.join(timeout=timeout)
        self.served.clear()
