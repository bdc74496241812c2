"""hpod's own tables, next to Optuna's in the same database.

Timestamps are Unix epoch seconds (float) so SQLite and PostgreSQL agree.
JSON payloads are stored as text for the same reason.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "JOB_STATES",
    "WINDOW_KINDS",
    "DataRecordRow",
    "DataWindowRow",
    "EventRow",
    "JobRow",
    "StateRow",
    "StudyRow",
    "WorkerRow",
]

#: ``labelled``: feedback records (input + reference output) a retune trains on;
#: ``reference``: input texts set as the data monitors' reference
WINDOW_KINDS = ("labelled", "reference")

#: queued → running → done | failed | lost | cancelled
JOB_STATES = ("queued", "running", "done", "failed", "lost", "cancelled")


class StudyRow(SQLModel, table=True):
    """The studies registry: the spec, the daemon's view of the state, cached summary."""

    __tablename__ = "hpod_studies"

    name: str = Field(primary_key=True, max_length=200)
    spec_json: str = Field(sa_column=Column(Text, nullable=False))
    #: queued | running | paused | completed | cancelled | failed
    state: str = Field(default="queued", max_length=32, index=True)
    priority: int = 0
    parent: str | None = Field(default=None, max_length=200)
    version: int = 1
    reason: str | None = Field(default=None, max_length=200)
    created_at: float = 0.0
    updated_at: float = 0.0
    last_activity_at: float | None = None
    sampler_name: str | None = Field(default=None, max_length=64)
    sampler_reason: str | None = Field(default=None, sa_column=Column(Text))
    reference_point_json: str | None = Field(default=None, sa_column=Column(Text))
    reference_point_source: str | None = Field(default=None, max_length=64)
    hypervolume: float | None = None
    pareto_front_size: int = 0
    energy_spent_joules: float = 0.0
    #: JSON: {"COMPLETE": n, "FAIL": n, ...} cached at each tell
    counts_json: str | None = Field(default=None, sa_column=Column(Text))
    #: JSON: {objective: best value}
    best_json: str | None = Field(default=None, sa_column=Column(Text))
    #: strategy state (Lagrange multipliers, PBT population...) as JSON
    strategy_json: str | None = Field(default=None, sa_column=Column(Text))
    message: str | None = Field(default=None, sa_column=Column(Text))


class EventRow(SQLModel, table=True):
    """Append-only facts. ``handled`` flips once a handler has acted on it."""

    __tablename__ = "hpod_events"
    __table_args__ = (Index("ix_hpod_events_study_id", "study", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    ts: float = Field(index=True)
    kind: str = Field(max_length=64, index=True)
    study: str | None = Field(default=None, max_length=200)
    trial_number: int | None = None
    payload_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    handled: bool = Field(default=False, index=True)
    source: str | None = Field(default=None, max_length=200)


class JobRow(SQLModel, table=True):
    """One trial to run: created when the engine asks the sampler, claimed by exactly
    one executor slot (local or a remote worker) under a lease."""

    __tablename__ = "hpod_jobs"
    __table_args__ = (
        UniqueConstraint("trial_id", name="uq_hpod_jobs_trial"),
        Index("ix_hpod_jobs_state_priority", "state", "priority", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    study: str = Field(max_length=200, index=True)
    trial_id: int
    trial_number: int
    params_json: str = Field(sa_column=Column(Text, nullable=False))
    #: stable hash of the configuration: retries of one configuration share it
    config_key: str = Field(max_length=64, index=True)
    attempt: int = 1
    priority: int = 0
    state: str = Field(default="queued", max_length=16)
    worker: str | None = Field(default=None, max_length=200)
    #: fencing token: bumped on every claim; a result is accepted only with the current one
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: float | None = None
    heartbeat_at: float | None = None
    created_at: float = 0.0
    claimed_at: float | None = None
    finished_at: float | None = None
    #: the trial process's result payload (JSON), written by the worker
    result_json: str | None = Field(default=None, sa_column=Column(Text))
    fail_reason: str | None = Field(default=None, sa_column=Column(Text))
    #: the engine has told Optuna about the outcome
    told: bool = Field(default=False, index=True)


class WorkerRow(SQLModel, table=True):
    __tablename__ = "hpod_workers"

    name: str = Field(primary_key=True, max_length=200)
    node: str = Field(max_length=200)
    pid: int = 0
    slots: int = 1
    gpus: str | None = Field(default=None, max_length=200)
    #: idle | busy | lost | stopped
    state: str = Field(default="idle", max_length=16)
    started_at: float = 0.0
    last_heartbeat: float = 0.0
    current_json: str = Field(default="[]", sa_column=Column(Text, nullable=False))
    studies: str | None = Field(default=None, max_length=1000)


class StateRow(SQLModel, table=True):
    """Small keyed JSON state (monitor state, drift scores, serving selection...)."""

    __tablename__ = "hpod_state"

    study: str = Field(primary_key=True, max_length=200)
    key: str = Field(primary_key=True, max_length=200)
    value_json: str = Field(sa_column=Column(Text, nullable=False))
    updated_at: float = 0.0


class DataWindowRow(SQLModel, table=True):
    """A versioned window of data posted for a study (its submitted name): labelled
    feedback or a monitor reference. Written with all its records in one transaction;
    never changed afterwards (a newer window supersedes it)."""

    __tablename__ = "hpod_data_windows"
    __table_args__ = (Index("ix_hpod_data_windows_study_kind_id", "study", "kind", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    study: str = Field(max_length=200)
    #: one of WINDOW_KINDS
    kind: str = Field(max_length=16)
    #: the monitor a reference is for (None: every data monitor of the study)
    monitor: str | None = Field(default=None, max_length=200)
    #: where it came from: ``api``, ``cli:<file>``, ``path:<file>`` (a monitored file at an alarm)
    source: str = Field(max_length=1000)
    n_records: int = 0
    #: JSON list of the record fields, e.g. ["text", "label"]
    fields_json: str = Field(sa_column=Column(Text, nullable=False))
    created_at: float = 0.0


class DataRecordRow(SQLModel, table=True):
    """One record of a data window, in the order it was posted."""

    __tablename__ = "hpod_data_records"
    __table_args__ = (Index("ix_hpod_data_records_window_position", "window_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    window_id: int
    position: int
    record_json: str = Field(sa_column=Column(Text, nullable=False))
