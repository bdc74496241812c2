"""Persistence: Optuna's RDB storage and hpod's own tables on one database URL."""

from hpod.daemon.store._store import (
    EVENT_KINDS,
    StorageUnreachable,
    Store,
    config_key,
    default_state_dir,
    default_storage_url,
    is_disconnect,
    retry_storage,
)
from hpod.daemon.store._tables import EventRow, JobRow, StateRow, StudyRow, WorkerRow

__all__ = [
    "EVENT_KINDS",
    "EventRow",
    "JobRow",
    "StateRow",
    "StorageUnreachable",
    "Store",
    "StudyRow",
    "WorkerRow",
    "config_key",
    "default_state_dir",
    "default_storage_url",
    "is_disconnect",
    "retry_storage",
]
