"""Client side of the control API, used by ``hpod status|submit|pause|…``.

Reads the same settings as the daemon: ``HPOD_API`` (``127.0.0.1:8765`` or
``unix:/path``), ``HPOD_TOKEN_FILE`` (default ``<state dir>/token``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console

from hpod.errors import DaemonUnreachable, UsageError

__all__ = ["ApiClient", "try_status", "print_daemon_status", "DEFAULT_API"]

DEFAULT_API = "127.0.0.1:8765"


def _token_path(state_dir: Path | None) -> Path:
    from hpod.daemon.store import default_state_dir

    env = os.environ.get("HPOD_TOKEN_FILE")
    if env:
        return Path(env)
    return default_state_dir(state_dir) / "token"


class ApiClient:
    """A small synchronous client over httpx (TCP or a unix socket)."""

    def __init__(self, api: str | None = None, *, token: str | None = None, state_dir: Path | None = None,
                 timeout: float = 5.0):
        import httpx

        self.api = api or os.environ.get("HPOD_API") or DEFAULT_API
        if token is None:
            path = _token_path(state_dir)
            try:
                token = path.read_text().strip()
            except OSError:
                token = None
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.api.startswith("unix:"):
            transport = httpx.HTTPTransport(uds=self.api[5:])
            self._http = httpx.Client(transport=transport, base_url="http://hpod", headers=headers, timeout=timeout)
        else:
            base = self.api if self.api.startswith("http") else f"http://{self.api}"
            self._http = httpx.Client(base_url=base, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise DaemonUnreachable(f"the hpod daemon at {self.api} is not reachable ({type(exc).__name__}); "
                                    "is `hpod daemon` running? (set HPOD_API)") from None
        if resp.status_code == 401:
            raise UsageError(f"the daemon at {self.api} refused the token: set HPOD_TOKEN_FILE to the daemon's "
                             "token file (it is created with mode 0600 in the daemon's state dir)")
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail") or resp.json().get("error") or resp.text
            except ValueError:
                detail = resp.text
            if isinstance(detail, list):
                detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
            raise UsageError(f"{method} {path}: {detail}")
        return resp.json() if resp.content else None

    def close(self) -> None:
        self._http.close()


def try_status(state_dir: Path | None) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon answers."""
    try:
        client = ApiClient(state_dir=state_dir, timeout=2.0)
    except Exception:
        return None
    try:
        status: dict[str, Any] = client.request("GET", "/v1/status")
        return status
    except DaemonUnreachable:
        return None
    except UsageError as exc:  # it answers but refuses us: say why instead of "not reachable"
        Console(stderr=True).print(f"[yellow]warning:[/] {exc}", highlight=False)
        return None
    finally:
        client.close()


def print_daemon_status(status: dict[str, Any], console: Console) -> None:
    from rich.table import Table

    d = status.get("daemon") or {}
    console.print(f"hpod {d.get('version', '?')} — up {d.get('uptime_seconds', 0):.0f}s — "
                  f"storage {status.get('storage', '?')}")
    slots = status.get("slots") or []
    if slots:
        t = Table(title="slots")
        for col in ("slot", "gpu", "trial", "power W", "memory"):
            t.add_column(col)
        for s in slots:
            gpu = s.get("gpu_index")
            power, memory = s.get("power_watts"), s.get("memory_used_bytes")
            t.add_row(str(s.get("name")), "–" if gpu is None else str(gpu), str(s.get("trial") or "idle"),
                      "–" if power is None else f"{power:.0f}",
                      "–" if memory is None else f"{memory / 2**30:.1f} GiB")
        console.print(t)
    workers = status.get("workers") or []
    if workers:
        t = Table(title="workers")
        for col in ("worker", "node", "state", "slots", "current", "last heartbeat"):
            t.add_column(col)
        for w in workers:
            t.add_row(w["name"], w.get("node", ""), w.get("state", ""), str(w.get("slots", "")),
                      ", ".join(str(c) for c in w.get("current", [])) or "–", f"{w.get('heartbeat_age_seconds', 0):.0f}s ago")
        console.print(t)
    from hpod.daemon.cli import _print_studies

    studies = status.get("studies") or []
    _print_studies(studies)
    scheduled = [st for st in studies if st.get("next_run") or st.get("window")]
    if scheduled:
        import time

        t = Table(title="schedules")
        for col in ("study", "next scheduled retune", "trial window"):
            t.add_column(col)
        for st in scheduled:
            nxt = time.strftime("%Y-%m-%d %H:%M", time.localtime(st["next_run"])) if st.get("next_run") else "–"
            t.add_row(st["name"], nxt, st.get("window") or "–")
        console.print(t)
    # The same tables as the database view of `hpod status`.
    from hpod.daemon.cli import print_monitors_and_retunes

    print_monitors_and_retunes(status.get("monitors") or [], status.get("retunes") or [])
    events = status.get("events") or []
    if events:
        t = Table(title="last events")
        for col in ("id", "kind", "study", "trial", "payload"):
            t.add_column(col)
        for e in events[-10:]:
            t.add_row(str(e["id"]), e["kind"], str(e.get("study") or ""), str(e.get("trial_number") or ""),
                      str(e.get("payload"))[:80])
        console.print(t)
