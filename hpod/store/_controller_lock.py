"""One controller per study: the lock a controller holds while it drives a study.

Two controllers on one study (two ``hpod run``s, or ``hpod run`` beside a daemon that
resumes the same study) would both ask and tell its trials. The second is refused,
before it writes anything, by a lock that dies with its holder — even with ``kill -9``:

- PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) taken on one
  connection per database per process, kept for the process's life in autocommit mode
  (no transaction stays open); the server releases it when the connection ends.
- SQLite: a POSIX record lock (``fcntl.lockf``) on one byte of ``<database>.hpod-lock``
  beside the database file; the kernel releases it when the process ends. An in-memory
  database has nothing another process could open, so needs none.

Within one process a study's lock is counted, not exclusive (the daemon re-activates a
study whose spec it updates; tests drive several controllers in one process).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text

__all__ = ["acquire_study", "release_study"]

_lock = threading.Lock()
#: (database, study) -> how many activations of this process hold it
_held: dict[tuple[str, str], int] = {}
#: PostgreSQL URL -> the connection this process's advisory locks live on
_pg: dict[str, Any] = {}
#: lock file path -> its descriptor (one per file: closing any descriptor of a file
#: drops every POSIX lock the process holds on it)
_files: dict[str, int] = {}


def _key(study: str) -> int:
    """A signed 64-bit key for ``study`` (PostgreSQL's advisory lock key space)."""
    digest = hashlib.blake2b(f"hpod-controller:{study}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _lock_file(sqlite_file: Path) -> int:
    path = str(sqlite_file) + ".hpod-lock"
    fd = _files.get(path)
    if fd is None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        _files[path] = fd
    return fd


def _try(store: Any, study: str) -> bool:
    key = _key(study)
    if store.is_postgres:
        conn = _pg.get(store.url)
        if conn is None or conn.closed:
            conn = store.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            _pg[store.url] = conn
        return bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
    sqlite_file = store.sqlite_file
    if sqlite_file is None:
        return True
    try:
        fcntl.lockf(_lock_file(sqlite_file), fcntl.LOCK_EX | fcntl.LOCK_NB, 1, key % (2**31 - 1))
    except (BlockingIOError, PermissionError):
        return False
    return True


def _release(store: Any, study: str) -> None:
    key = _key(study)
    if store.is_postgres:
        conn = _pg.get(store.url)
        if conn is not None and not conn.closed:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    sqlite_file = store.sqlite_file
    if sqlite_file is not None:
        fcntl.lockf(_lock_file(sqlite_file), fcntl.LOCK_UN, 1, key % (2**31 - 1))


def acquire_study(store: Any, study: str) -> bool:
    """Take ``study``'s controller lock on ``store``'s database; False when another
    process holds it."""
    held = (store.url, study)
    with _lock:
        if _held.get(held, 0) > 0:
            _held[held] += 1
            return True
        if not _try(store, study):
            return False
        _held[held] = 1
        return True


def release_study(store: Any, study: str) -> None:
    """Give back one activation's hold on ``study``'s lock (the lock itself once none is left)."""
    held = (store.url, study)
    with _lock:
        count = _held.get(held, 0)
        if count <= 0:
            return
        if count > 1:
            _held[held] = count - 1
            return
        del _held[held]
        # The lock's connection or file is gone with its process anyway; a failed release
        # here only means the lock is already released.
        with contextlib.suppress(Exception):
            _release(store, study)
