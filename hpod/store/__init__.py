"""Persistence: Optuna's RDB storage and hpod's own tables on one database URL."""

from hpod.store._store import (
    EVENT_KINDS,
    WORKER_STALE_SECONDS,
    StorageUnreachable,
    Store,
    config_key,
    default_state_dir,
    default_storage_url,
    is_disconnect,
    retry_storage,
    worker_state,
)
from hpod.store._tables import (
    WINDOW_KINDS,
    DataRecordRow,
    DataWindowRow,
    EventRow,
    JobRow,
    StateRow,
    StudyRow,
    WorkerRow,
)

__all__ = [
    "EVENT_KINDS",
    "WINDOW_KINDS",
    "WORKER_STALE_SECONDS",
    "DataRecordRow",
    "DataWindowRow",
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
    "worker_state",
]
