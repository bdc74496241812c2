"""The database a command reads: ``--storage``, ``$HPOD_STORAGE`` or SQLite in the state dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hpod.store import Store, default_state_dir

__all__ = ["_open_store", "_storage_url"]


def _storage_url(storage: str | None) -> str | None:
    return storage or os.environ.get("HPOD_STORAGE") or None


def _open_store(state_dir: Path | None, storage: str | None, *, light: bool = False) -> tuple[Any, Path]:

    sd = default_state_dir(state_dir)
    return Store.for_state_dir(sd, _storage_url(storage), light=light), sd
