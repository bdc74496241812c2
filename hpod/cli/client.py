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
from hpod.store import default_state_dir

__all__ = ["DEFAULT_API", "ApiClient", "try_status"]

DEFAULT_API = "127.0.0.1:8765"


def _token_path(state_dir: Path | None) -> Path:

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


def try_status(state_dir: Path | None, *, quiet: bool = False) -> dict[str, Any] | None:
    """The daemon's status, or None when no daemon answers (or, ``quiet``, refuses us
    without a warning)."""
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
        if quiet:
            return None
        Console(stderr=True).print(f"[yellow]warning:[/] {exc}", highlight=False)
        return None
    finally:
        client.close()
