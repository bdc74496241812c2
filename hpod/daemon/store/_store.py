"""One database is the truth: Optuna's RDB tables and hpod's tables on one URL.

:class:`Store` owns the process's single SQLAlchemy engine (Optuna's RDBStorage
creates it; hpod's tables reuse it), so a process holds one pool.

Concurrency: every method opens its own short transaction and may be called from
any thread. Claiming a job is atomic across processes and nodes: PostgreSQL uses
``SELECT … FOR UPDATE SKIP LOCKED``; SQLite serialises writers and the claim is a
conditional ``UPDATE … WHERE state='queued'``. Results are fenced by a lease token:
a worker whose lease expired cannot overwrite the re-run's result.

Errors: :class:`~hpod.errors.StorageUrlError` when the URL cannot be opened at all;
:class:`~hpod.errors.StorageError` for an outage (retry with backoff);
:class:`~hpod.errors.StudyNotFound` for an unknown study.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, or_, select, text, update
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel

from hpod.daemon.store._tables import EventRow, JobRow, StateRow, StudyRow, WorkerRow
from hpod.errors import SpecError, StorageError, StorageUrlError, StudyNotFound

if TYPE_CHECKING:
    import optuna

    from hpod.spec import StudySpec

__all__ = ["Store", "default_state_dir", "default_storage_url", "config_key", "EVENT_KINDS"]

EVENT_KINDS = (
    "daemon_started", "study_submitted", "trial_started", "trial_completed", "trial_failed",
    "trial_pruned", "study_completed", "drift_detected", "retune_started", "worker_joined",
    "worker_lost", "daemon_stopping", "study_paused", "study_resumed", "study_cancelled",
    "retune_completed", "serving_switched", "monitor_checked",
)


def default_state_dir(explicit: str | Path | None = None) -> Path:
    """``--state-dir`` > ``$HPOD_STATE_DIR`` > ``$STATE_DIRECTORY`` (systemd) > the
    platform's user state dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("HPOD_STATE_DIR") or os.environ.get("STATE_DIRECTORY")
    if env:
        return Path(env.split(":")[0]).expanduser()
    import platformdirs

    return Path(platformdirs.user_state_dir("hpod"))


def default_storage_url(state_dir: Path) -> str:
    return f"sqlite:///{(state_dir / 'hpod.db').resolve()}"


def config_key(params: dict[str, Any]) -> str:
    """A stable hash of a configuration (retries of one configuration share it)."""
    blob = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _now() -> float:
    return time.time()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False) if value is not None else "null"


class Store:
    """Optuna RDB storage + hpod's tables on one SQLAlchemy engine."""

    def __init__(self, url: str, *, pool_size: int = 5, create: bool = True, light: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        if self.is_sqlite:
            self._check_sqlite_path(url)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.is_sqlite:
            # Several processes write one file: wait for the lock instead of failing at once.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs.update(pool_size=pool_size, max_overflow=2, pool_recycle=1800)
        self._engine_kwargs = engine_kwargs
        self._optuna_storage: Any = None
        if light:
            # Read-only views (`hpod status`) skip importing Optuna: a fast start.
            from sqlalchemy import create_engine

            try:
                self.engine = create_engine(url, **engine_kwargs)
                with self.engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
            except (ArgumentError, ImportError, ValueError) as exc:
                raise StorageUrlError(f"storage URL {url!r} cannot be opened: {exc}") from None
            except SQLAlchemyError as exc:
                raise StorageUrlError(f"storage URL {url!r} cannot be opened: "
                                      f"{str(exc).splitlines()[0]}") from None
        else:
            self.engine = self._open_optuna(create).engine
        if self.is_sqlite:
            with self.engine.begin() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        if create and not light:
            SQLModel.metadata.create_all(
                self.engine,
                tables=[t.__table__ for t in (StudyRow, EventRow, JobRow, WorkerRow, StateRow)],  # type: ignore[attr-defined]
            )

    def _open_optuna(self, create: bool = True) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        url = self.url
        try:
            self._optuna_storage = optuna.storages.RDBStorage(
                url, engine_kwargs=self._engine_kwargs, skip_table_creation=not create
            )
        except (ArgumentError, ImportError, ModuleNotFoundError, ValueError) as exc:
            raise StorageUrlError(
                f"storage URL {url!r} cannot be opened: {exc}. Use sqlite:///PATH or "
                "postgresql+psycopg://USER@HOST:PORT/DB"
            ) from None
        except (OperationalError, SQLAlchemyError) as exc:
            raise StorageUrlError(f"storage URL {url!r} cannot be opened: {exc.__class__.__name__}: "
                                  f"{str(exc).splitlines()[0]}") from None
        return self._optuna_storage

    @property
    def optuna_storage(self) -> Any:
        """Optuna's RDBStorage (created on first use in a light store)."""
        if self._optuna_storage is None:
            self._open_optuna(create=False)
        return self._optuna_storage

    @staticmethod
    def _check_sqlite_path(url: str) -> None:
        path = url.split(":///", 1)[-1] if ":///" in url else ""
        if not path or path == ":memory:":
            return
        parent = Path(path).expanduser().parent
        if not parent.exists():
            raise StorageUrlError(f"storage URL {url!r}: directory {parent} does not exist")

    @classmethod
    def for_state_dir(cls, state_dir: Path, url: str | None = None, *, light: bool = False) -> Store:
        if url is None:
            if light and not (state_dir / "hpod.db").exists():
                raise StorageUrlError(f"no hpod database in {state_dir} (set --state-dir, HPOD_STATE_DIR "
                                      "or --storage)")
            state_dir.mkdir(parents=True, exist_ok=True)
            url = default_storage_url(state_dir)
        return cls(url, light=light)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
        except OperationalError as exc:
            raise StorageError(f"database unavailable: {str(exc).splitlines()[0]}") from exc

    # ------------------------------------------------------------------ studies
    def register_study(self, spec: StudySpec, *, state: str = "queued", parent: str | None = None,
                       version: int = 1, reason: str | None = None) -> tuple[StudyRow, bool]:
        """Create the study (Optuna + registry) or return the existing one.

        Returns ``(row, created)``. An existing study must have the same objectives
        and directions; otherwise SpecError (a different study needs another name).
        """
        import optuna

        existing = self.get_study(spec.name, missing_ok=True)
        if existing is not None:
            old = json.loads(existing.spec_json)
            old_targets = [(o["name"], o.get("direction", "minimize")) for o in old.get("objectives", [])]
            new_targets = [(o.name, o.direction) for o in spec.objectives]
            if old_targets != new_targets:
                raise SpecError("objectives", f"study {spec.name!r} exists with objectives {old_targets}; "
                                "change the study name to start a different study", found=new_targets)
            with self.session() as s:
                row = s.get(StudyRow, spec.name)
                assert row is not None
                row.spec_json = spec.model_dump_json()
                row.priority = spec.priority
                row.updated_at = _now()
            return self.get_study(spec.name), False  # type: ignore[return-value]
        optuna.create_study(
            storage=self.optuna_storage, study_name=spec.name, directions=spec.directions, load_if_exists=True
        )
        now = _now()
        row = StudyRow(name=spec.name, spec_json=spec.model_dump_json(), state=state, priority=spec.priority,
                       parent=parent, version=version, reason=reason, created_at=now, updated_at=now)
        with self.session() as s:
            s.add(row)
        return row, True

    def get_study(self, name: str, *, missing_ok: bool = False) -> StudyRow | None:
        with self.session() as s:
            row = s.get(StudyRow, name)
        if row is None and not missing_ok:
            raise StudyNotFound(f"no study named {name!r} in {self.safe_url}; `hpod status` lists the studies")
        return row

    def list_studies(self) -> list[StudyRow]:
        with self.session() as s:
            return list(s.scalars(select(StudyRow).order_by(StudyRow.created_at)))

    def update_study(self, name: str, **fields: Any) -> None:
        fields.setdefault("updated_at", _now())
        with self.session() as s:
            s.execute(update(StudyRow).where(StudyRow.name == name).values(**fields))

    def load_optuna_study(self, name: str, sampler: Any = None) -> optuna.Study:
        import optuna

        try:
            return optuna.load_study(study_name=name, storage=self.optuna_storage, sampler=sampler)
        except KeyError:
            raise StudyNotFound(f"no study named {name!r} in {self.safe_url}") from None

    @property
    def safe_url(self) -> str:
        """The URL without a password."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return self.url

    # ------------------------------------------------------------------ events
    def append_event(self, kind: str, *, study: str | None = None, trial_number: int | None = None,
                     payload: dict[str, Any] | None = None, source: str | None = None,
                     handled: bool = False) -> int:
        row = EventRow(ts=_now(), kind=kind, study=study, trial_number=trial_number,
                       payload_json=_dumps(payload or {}), source=source or _node_name(), handled=handled)
        with self.session() as s:
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    def events(self, *, study: str | None = None, after_id: int = 0, limit: int = 200,
               kinds: Iterable[str] | None = None, newest: bool = False) -> list[EventRow]:
        q = select(EventRow).where(EventRow.id > after_id)  # type: ignore[operator]
        if study:
            q = q.where(or_(EventRow.study == study, EventRow.study.like(f"{study}@%")))  # type: ignore[union-attr]
        if kinds:
            q = q.where(EventRow.kind.in_(list(kinds)))  # type: ignore[attr-defined]
        q = q.order_by(EventRow.id.desc() if newest else EventRow.id).limit(limit)  # type: ignore[union-attr]
        with self.session() as s:
            rows = list(s.scalars(q))
        return list(reversed(rows)) if newest else rows

    def unhandled_events(self, kinds: Iterable[str] | None = None) -> list[EventRow]:
        q = select(EventRow).where(EventRow.handled == False)  # noqa: E712
        if kinds:
            q = q.where(EventRow.kind.in_(list(kinds)))  # type: ignore[attr-defined]
        with self.session() as s:
            return list(s.scalars(q.order_by(EventRow.id)))  # type: ignore[arg-type]

    def mark_handled(self, event_id: int) -> bool:
        """Mark an event handled; False if another process did it first (idempotence)."""
        with self.session() as s:
            res = s.execute(update(EventRow).where(EventRow.id == event_id, EventRow.handled == False)  # noqa: E712
                            .values(handled=True))
            return bool(res.rowcount)  # type: ignore[attr-defined]

    def event_counts(self) -> dict[str, int]:
        with self.session() as s:
            return {k: int(n) for k, n in s.execute(select(EventRow.kind, func.count()).group_by(EventRow.kind))}

    # ------------------------------------------------------------------ jobs
    def create_job(self, *, study: str, trial_id: int, trial_number: int, params: dict[str, Any],
                   attempt: int = 1, priority: int = 0) -> JobRow:
        row = JobRow(study=study, trial_id=trial_id, trial_number=trial_number, params_json=_dumps(params),
                     config_key=config_key(params), attempt=attempt, priority=priority, created_at=_now())
        with self.session() as s:
            s.add(row)
        return row

    def claim_job(self, worker: str, *, lease_seconds: float, studies: Iterable[str] | None = None,
                  exclude_studies: Iterable[str] | None = None) -> JobRow | None:
        """Atomically claim the next queued job (highest priority, oldest first)."""
        token = uuid.uuid4().hex
        now = _now()
        q = select(JobRow.id).where(JobRow.state == "queued")
        if studies is not None:
            q = q.where(JobRow.study.in_(list(studies)))  # type: ignore[attr-defined]
        if exclude_studies:
            q = q.where(JobRow.study.not_in(list(exclude_studies)))  # type: ignore[attr-defined]
        q = q.order_by(JobRow.priority.desc(), JobRow.id).limit(1)  # type: ignore[attr-defined]
        if self.is_postgres:
            q = q.with_for_update(skip_locked=True)
        for _ in range(5):
            with self.session() as s:
                job_id = s.scalar(q)
                if job_id is None:
                    return None
                res = s.execute(
                    update(JobRow).where(JobRow.id == job_id, JobRow.state == "queued").values(
                        state="running", worker=worker, lease_token=token, claimed_at=now,
                        heartbeat_at=now, lease_expires_at=now + lease_seconds)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    return s.get(JobRow, job_id)
        return None

    def renew_leases(self, worker: str, tokens: dict[int, str], *, lease_seconds: float) -> set[int]:
        """Renew the leases this worker holds; returns the job ids it still holds."""
        if not tokens:
            return set()
        now = _now()
        held: set[int] = set()
        with self.session() as s:
            for job_id, token in tokens.items():
                res = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_token == token,
                                                     JobRow.state == "running")
                                .values(heartbeat_at=now, lease_expires_at=now + lease_seconds))
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    held.add(job_id)
        return held

    def finish_job(self, job_id: int, token: str, *, result: dict[str, Any] | None = None,
                   fail_reason: str | None = None) -> bool:
        """Store a job's outcome if ``token`` still holds its lease. False: the lease
        was lost (expired and re-queued) and the result is dropped."""
        state = "done" if result is not None else "failed"
        with self.session() as s:
            res = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_token == token,
                                                 JobRow.state == "running")
                            .values(state=state, result_json=_dumps(result) if result is not None else None,
                                    fail_reason=fail_reason, finished_at=_now(), lease_expires_at=None))
            return res.rowcount == 1  # type: ignore[attr-defined,no-any-return]

    def expire_leases(self, *, now: float | None = None) -> list[JobRow]:
        """Mark running jobs whose lease expired as ``lost``; returns them."""
        now = now or _now()
        with self.session() as s:
            q = select(JobRow).where(JobRow.state == "running", JobRow.lease_expires_at < now)  # type: ignore[operator]
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            rows = list(s.scalars(q))
            for row in rows:
                row.state, row.fail_reason, row.finished_at = "lost", "worker_lost", now
        return rows

    def release_jobs(self, job_ids: Iterable[int], *, reason: str) -> None:
        """Give up running jobs this process holds (shutdown / interrupt)."""
        ids = list(job_ids)
        if not ids:
            return
        with self.session() as s:
            s.execute(update(JobRow).where(JobRow.id.in_(ids), JobRow.state.in_(["running", "queued"]))  # type: ignore[union-attr,attr-defined]
                      .values(state="lost", fail_reason=reason, finished_at=_now(), lease_expires_at=None))

    def cancel_queued(self, study: str, *, reason: str = "cancelled") -> int:
        with self.session() as s:
            res = s.execute(update(JobRow).where(JobRow.study == study, JobRow.state == "queued")
                            .values(state="cancelled", fail_reason=reason, finished_at=_now()))
            return int(res.rowcount)  # type: ignore[attr-defined]

    def jobs_to_tell(self, study: str) -> list[JobRow]:
        with self.session() as s:
            q = select(JobRow).where(JobRow.study == study, JobRow.told == False,  # noqa: E712
                                     JobRow.state.in_(["done", "failed", "lost", "cancelled"]))  # type: ignore[attr-defined]
            return list(s.scalars(q.order_by(JobRow.id)))  # type: ignore[arg-type]

    def mark_told(self, job_id: int) -> None:
        with self.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job_id).values(told=True))

    def jobs(self, study: str | None = None, states: Iterable[str] | None = None) -> list[JobRow]:
        q = select(JobRow)
        if study:
            q = q.where(JobRow.study == study)
        if states:
            q = q.where(JobRow.state.in_(list(states)))  # type: ignore[attr-defined]
        with self.session() as s:
            return list(s.scalars(q.order_by(JobRow.id)))  # type: ignore[arg-type]

    def job_for_trial(self, trial_id: int) -> JobRow | None:
        with self.session() as s:
            return s.scalar(select(JobRow).where(JobRow.trial_id == trial_id))

    def attempts_of(self, study: str, key: str) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow)
                                .where(JobRow.study == study, JobRow.config_key == key)) or 0)

    # ------------------------------------------------------------------ workers
    def heartbeat_worker(self, name: str, *, slots: int, state: str, current: list[dict[str, Any]],
                         gpus: str | None = None, studies: str | None = None) -> bool:
        """Upsert this worker's row. Returns True when the row was new (worker joined)."""
        now = _now()
        with self.session() as s:
            row = s.get(WorkerRow, name)
            created = row is None or row.state in ("lost", "stopped")
            if row is None:
                row = WorkerRow(name=name, node=_node_name(), started_at=now)
                s.add(row)
            if created:
                row.started_at = now
            row.pid, row.slots, row.state, row.gpus, row.studies = os.getpid(), slots, state, gpus, studies
            row.node = _node_name()
            row.last_heartbeat = now
            row.current_json = _dumps(current)
        return created

    def workers(self) -> list[WorkerRow]:
        with self.session() as s:
            return list(s.scalars(select(WorkerRow).order_by(WorkerRow.name)))

    def mark_workers_lost(self, *, older_than: float) -> list[WorkerRow]:
        cutoff = _now() - older_than
        with self.session() as s:
            rows = list(s.scalars(select(WorkerRow).where(WorkerRow.state.in_(["idle", "busy"]),  # type: ignore[attr-defined]
                                                          WorkerRow.last_heartbeat < cutoff)))
            for r in rows:
                r.state = "lost"
        return rows

    def set_worker_state(self, name: str, state: str) -> None:
        with self.session() as s:
            s.execute(update(WorkerRow).where(WorkerRow.name == name).values(state=state, current_json="[]"))

    # ------------------------------------------------------------------ keyed state
    def get_state(self, study: str, key: str, default: Any = None) -> Any:
        with self.session() as s:
            row = s.get(StateRow, (study, key))
        return json.loads(row.value_json) if row is not None else default

    def put_state(self, study: str, key: str, value: Any) -> None:
        with self.session() as s:
            row = s.get(StateRow, (study, key))
            if row is None:
                s.add(StateRow(study=study, key=key, value_json=_dumps(value), updated_at=_now()))
            else:
                row.value_json, row.updated_at = _dumps(value), _now()

    def states(self, key_prefix: str) -> list[StateRow]:
        with self.session() as s:
            return list(s.scalars(select(StateRow).where(StateRow.key.like(f"{key_prefix}%"))))  # type: ignore[attr-defined]

    def ping(self) -> None:
        with self.session() as s:
            s.execute(text("SELECT 1"))


def _node_name() -> str:
    return os.environ.get("HPOD_NODE_NAME") or socket.gethostname()
