"""Listening addresses and the uvicorn-in-a-thread server every hpod HTTP app runs in
(control API, serving, and ``hpod serve``)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from hpod.errors import UsageError

__all__ = ["ThreadedServer", "parse_address", "start_server"]


def parse_address(address: str, *, what: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT`` (``127.0.0.1:8765``, ``[::1]:8765``, ``:8765`` = ``default_host``) ->
    (host, port). Port 0 asks the OS for a free port.

    Raises :class:`UsageError` naming ``what`` (the setting), what was found and what
    is allowed.
    """
    if not isinstance(address, str) or ":" not in address or address.startswith("unix:"):
        raise UsageError(f"{what}: expected HOST:PORT such as 127.0.0.1:8765, found {address!r}")
    host, _, port_text = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"{what}: write an IPv6 host in brackets, e.g. [::1]:8765, found {address!r}")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"{what}: the port must be an integer in 0..65535, found {port_text!r} in {address!r}")
    return host or default_host, int(port_text)


@dataclass
class ThreadedServer:
    """A uvicorn server running in a daemon thread."""

    server: Any
    thread: threading.Thread
    address: str

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait up to ``timeout`` seconds for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)


def start_server(app: Any, address: str, *, name: str, what: str, lifespan: str = "auto",
                 timeout: float = 30.0) -> ThreadedServer:
    """Serve ``app`` on ``address`` (``HOST:PORT`` or ``unix:/path``, the socket made 0660)
    in a thread; returns once it listens. Raises :class:`UsageError` naming ``what`` when
    it cannot listen within ``timeout`` seconds."""
    import uvicorn

    kwargs: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": lifespan,
                              "timeout_graceful_shutdown": 5}
    if address.startswith("unix:"):
        path = address[5:]
        try:
            os.unlink(path)  # a stale socket of a crashed process
        except FileNotFoundError:
            pass
        kwargs["uds"] = path
    else:
        host, port = parse_address(address, what=what)
        kwargs.update(host=host, port=port)
    server = uvicorn.Server(uvicorn.Config(app, **kwargs))
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise UsageError(f"{what}: cannot listen on {address} (in use, or not an address of this host?)")
        time.sleep(0.02)
    if address.startswith("unix:"):
        os.chmod(address[5:], 0o660)
    return ThreadedServer(server=server, thread=thread, address=address)
