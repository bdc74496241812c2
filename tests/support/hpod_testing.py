"""Helpers for hpod's tests: run the CLI as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "cnndm_sample_100.jsonl"


def hpod_bin() -> str:
    exe = Path(sys.executable).with_name("hpod")
    if exe.exists():
        return str(exe)
    found = shutil.which("hpod")
    assert found, "the hpod console script is not installed (run scripts/setup.sh)"
    return found


def cli_env(state_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SUPPORT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("HPOD_API", None)
    env["HPOD_API"] = "127.0.0.1:1"  # no daemon in CLI tests unless a test sets one
    if state_dir is not None:
        env["HPOD_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def run_cli(args: list[str], *, state_dir: Path | None = None, timeout: float = 300, **env: str
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([hpod_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=cli_env(state_dir, **env))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.2,
             between: Callable[[], Any] | None = None, details: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    The one polling loop of the tests: states and events are waited for, never a
    duration assumed (the machine may be loaded). ``between`` runs after each false
    answer (drive a loop, drain a socket, check that a process is alive: it may fail
    the test itself); after ``timeout`` seconds the test fails naming ``what``, with
    ``details()`` (a log) appended.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}" + (f"\n{details()}" if details else ""))
        if between is not None:
            between()
        if interval:
            time.sleep(interval)


@contextlib.contextmanager
def fake_daemon_api(status: Callable[[], dict[str, Any]]) -> Iterator[str]:
    """A stand-in for the daemon's API on 127.0.0.1: every GET answers ``status()`` as
    JSON. Yields its ``HOST:PORT`` (for ``HPOD_API``); shut down on exit."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(status()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass  # no request lines in the test output

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
