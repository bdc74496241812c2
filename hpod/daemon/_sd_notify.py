"""systemd's notify protocol (READY=1, WATCHDOG=1, STOPPING=1) in a few lines, no
libsystemd: one datagram on the Unix socket named by ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["sd_notify", "watchdog_interval"]

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send ``message`` (``READY=1``…) to systemd over ``$NOTIFY_SOCKET``; False when
    not run by systemd or the socket is gone. Never raises."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Never block the main loop: a receiver that stopped reading fills its queue.
            sock.setblocking(False)
            sock.connect(address)
            sock.send(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify(%r) failed: %s", message, exc)
        return False


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when the watchdog is meant for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6
