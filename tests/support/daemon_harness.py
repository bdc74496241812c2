"""A real ``hpod daemon`` process for end-to-end tests: free ports, a state dir, a
systemd-style notify socket, the CLI and the API with the daemon's token."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hpod_testing
import httpx
import pytest

HPOD = str(Path(sys.executable).parent / "hpod")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_spec(path: Path, name: str, *, n_trials: int, sleep_seconds: float, **extra: Any) -> Path:
    """A small synthetic:training_cost study whose trials take ``sleep_seconds``."""
    spec = {
        "name": name,
        "objective": {"name": "synthetic:training_cost", "params": {"sleep_seconds": sleep_seconds}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}, {"name": "energy_joules"}],
        "sampler": {"name": "random", "seed": 3},
        "budget": {"n_trials": n_trials, "trial_timeout_seconds": 300},
        **extra,
    }
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def wait_for(condition: Callable[[], Any], timeout: float, what: str, proc: DaemonProcess | None = None) -> Any:
    """:func:`hpod_testing.wait_for` that, given the daemon ``proc``, fails at once if
    the daemon exits."""
    if proc is None:
        return hpod_testing.wait_for(condition, timeout, what)

    def between() -> None:
        if proc.process is not None and proc.process.poll() is not None:
            pytest.fail(f"daemon exited ({proc.process.returncode}) while waiting for {what}:\n{proc.log_text()}")

    return hpod_testing.wait_for(condition, timeout, what, between=between, details=proc.log_text)


class DaemonProcess:
    def __init__(self, tmp: Path, *, cpu_slots: int = 1, grace_seconds: float = 5.0,
                 extra_args: list[str] | None = None):
        self.tmp = tmp
        self.state_dir = tmp / "state"
        self.cpu_slots = cpu_slots
        self.grace_seconds = grace_seconds
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None
        self.notify_path = tmp / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.notifications: list[str] = []
        self.starts = 0
        # Like systemd, read the notify socket all the time: its queue holds only
        # net.unix.max_dgram_qlen (10) datagrams, and a full queue drops STOPPING=1.
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read_socket, name="notify-reader", daemon=True)
        self._reader.start()

    def _read_socket(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.notify.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.notifications.append(data.decode())

    # ------------------------------------------------------------------ process
    def start(self) -> DaemonProcess:
        self.api_port, self.metrics_port = free_port(), free_port()
        self.starts += 1
        with self._lock:
            self.notifications = []  # READY=1 of this start, not of the last one
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "NOTIFY_SOCKET": str(self.notify_path),
               "WATCHDOG_USEC": "1000000"}
        for key in ("HPOD_API", "HPOD_TOKEN_FILE", "HPOD_STATE_DIR", "HPOD_STORAGE", "HPOD_METRICS"):
            env.pop(key, None)
        self.log_path = self.tmp / f"daemon-{self.starts}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [HPOD, "daemon", "--state-dir", str(self.state_dir), "--api", f"127.0.0.1:{self.api_port}",
             "--metrics", f"127.0.0.1:{self.metrics_port}", "--cpu-slots", str(self.cpu_slots),
             "--grace-seconds", str(self.grace_seconds), "--no-codecarbon", *self.extra_args],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)
        wait_for(lambda: "READY=1" in self.read_notifications(), 90, "READY=1", self)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def read_notifications(self) -> str:
        """Every notification of this start so far (the socket is read continuously)."""
        with self._lock:
            return "\n".join(self.notifications)

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the daemon to exit, draining its notifications meanwhile: the socket
        queues only a few datagrams, and a slow shutdown on a loaded machine sends
        watchdog pings that would crowd out STOPPING=1."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.read_notifications()
                try:
                    return self.process.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    if time.monotonic() > deadline:
                        raise
        finally:
            self.read_notifications()
            self._log.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._closed.set()
        self._reader.join(timeout=5)
        self.notify.close()

    # ------------------------------------------------------------------ clients
    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def client_env(self) -> dict[str, str]:
        env = {**os.environ, "HPOD_API": f"127.0.0.1:{self.api_port}",
               "HPOD_TOKEN_FILE": str(self.state_dir / "token"), "HPOD_STATE_DIR": str(self.state_dir),
               "HF_HUB_OFFLINE": "1"}
        env.pop("HPOD_STORAGE", None)
        return env

    def hpod(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([HPOD, *args], env=self.client_env(), capture_output=True, text=True,
                                timeout=timeout)
        if check and result.returncode != 0:
            pytest.fail(f"hpod {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def get(self, path: str, **params: Any) -> Any:
        resp = httpx.get(self.api_url + path, params=params, headers={"Authorization": f"Bearer {self.token}"},
                         timeout=30)
        resp.raise_for_status()
        return resp.json()

    def events(self, kind: str | None = None, study: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 5000}
        if kind:
            params["kind"] = kind
        if study:
            params["study"] = study
        return self.get("/v1/events", **params)

    def study(self, name: str) -> dict[str, Any]:
        return self.get(f"/v1/studies/{name}")
