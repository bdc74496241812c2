"""The database a command reads: ``--storage``, ``$HPOD_STORAGE`` or SQLite in the state dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpod.store import Store, default_state_dir, default_storage_url

__all__ = ["_named_url", "_open_store", "_storage_url"]


def _storage_url(storage: str | None) -> str | None:
    return storage or os.environ.get("HPOD_STORAGE") or None


def _named_url(state_dir: Path | None, storage: str | None) -> str:
    """The database URL that ``--state-dir`` / ``--storage`` (or their variables) name."""
    return _storage_url(storage) or default_storage_url(default_state_dir(state_dir))


def _open_store(state_dir: Path | None, storage: str | None, *, light: bool = False,
                create: bool = False) -> tuple[Any, Path]:
    """The store a command uses. Only commands that write (``hpod run``) pass ``create``:
    the others never make a directory, a database file or a table, and a missing SQLite
    database is :class:`~hpod.store.NoDatabase`."""
    sd = default_state_dir(state_dir)
    return Store.for_state_dir(sd, _storage_url(storage), light=light, create=create), sd
