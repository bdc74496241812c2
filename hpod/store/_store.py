"""One database is the truth: Optuna's RDB tables and hpod's tables on one URL.

:class:`Store` owns the process's single SQLAlchemy engine (Optuna's RDBStorage
creates it; hpod's tables reuse it), so a process holds one pool.

Concurrency: every method opens its own short transaction and may be called from
any thread. Claiming a job is atomic across processes and nodes: PostgreSQL uses
``SELECT … FOR UPDATE SKIP LOCKED``; SQLite serialises writers and the claim is a
conditional ``UPDATE … WHERE state='queued'``. Results are fenced by a lease token:
a worker whose lease expired cannot overwrite the re-run's result.

Connections: one engine and pool per process (Optuna's RDBStorage creates it;
hpod's tables reuse it), a connection idle in the pool for
:data:`PING_IDLE_SECONDS` or more pinged on checkout so connections a database
restart killed are replaced (:func:`_ping_if_idle`), a bounded pool (``pool_size`` + 2 overflow,
``pool_timeout``), and on PostgreSQL a connect timeout and TCP keepalives so a
vanished server is noticed in seconds. Lease times on PostgreSQL come from the
database's clock, so nodes with skewed clocks agree on when a lease expires.

Errors: :class:`~hpod.errors.StorageUrlError` when the URL cannot be opened at all;
:class:`StorageUnreachable` (both a StorageUrlError and a StorageError) when the
server did not answer at open time; :class:`~hpod.errors.StorageError` for an
outage (retry with backoff, e.g. :func:`retry_storage`);
:class:`~hpod.errors.StudyNotFound` for an unknown study.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast, overload

from sqlalchemy import delete, func, insert, or_, select, text, update
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session
from sqlmodel import SQLModel, col

from hpod.errors import SpecError, StorageError, StorageUrlError, StudyNotFound
from hpod.spec import check_identity, spec_changes
from hpod.store._controller_lock import acquire_study, release_study
from hpod.store._optuna_storage import HeldParam, insert_params
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

if TYPE_CHECKING:
    import optuna
    from sqlalchemy import Table
    from sqlalchemy.engine import CursorResult

    from hpod.spec import StudySpec

__all__ = [
    "EVENT_KINDS",
    "JOBS_CHANNEL",
    "WORKER_STALE_SECONDS",
    "JobListener",
    "NoDatabase",
    "StorageUnreachable",
    "Store",
    "config_key",
    "default_state_dir",
    "default_storage_url",
    "is_disconnect",
    "name_values",
    "private_state_dir",
    "retry_storage",
    "same_database",
    "worker_state",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class StorageUnreachable(StorageUrlError, StorageError):
    """The database server did not answer when the store was opened.

    A :class:`~hpod.errors.StorageUrlError` for one-shot commands (the CLI prints it
    and exits 2) and a :class:`~hpod.errors.StorageError` for long-running processes
    (workers wait and retry: the server may be restarting)."""


class NoDatabase(StorageUnreachable):
    """A command that only reads was pointed at an SQLite database file that does not
    exist: nothing is created; ``hpod status`` says "no studies yet", other commands
    exit 2 naming the path (a worker waits for the controller to create it)."""


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it wraps) is a lost or refused database connection,
    a pool timeout, or Optuna's wrapper around one: transient, worth a retry."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, (OperationalError, InterfaceError, PoolTimeoutError, StorageError)):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def retry_storage(fn: Callable[[], _T], *, what: str, deadline_seconds: float | None = None,
                  initial_delay: float = 0.5, max_delay: float = 15.0,
                  should_stop: Callable[[], bool] | None = None) -> _T:
    """Call ``fn`` until it does not fail with a database outage.

    Waits with exponential backoff and jitter (``initial_delay`` doubling up to
    ``max_delay`` seconds) between tries, logging each failure with ``what``. Errors
    that are not outages propagate at once. Raises the last StorageError when
    ``deadline_seconds`` pass or ``should_stop()`` turns true.
    """
    if initial_delay <= 0 or max_delay < initial_delay:
        raise ValueError(f"initial_delay must be > 0 and <= max_delay (found {initial_delay}, {max_delay})")
    end = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    delay = initial_delay
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_disconnect(exc):
                raise
            if (end is not None and time.monotonic() + delay > end) or (should_stop is not None and should_stop()):
                if isinstance(exc, StorageError):
                    raise
                raise StorageError(f"{what}: database unavailable: {str(exc).splitlines()[0]}") from exc
            log.warning("%s: database unavailable (%s); retrying in %.1f s", what,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__, delay)
            time.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(max_delay, delay * 2)

EVENT_KINDS = (
    "daemon_started", "study_submitted", "trial_started", "trial_completed", "trial_failed",
    "trial_pruned", "study_completed", "drift_detected", "retune_started", "worker_joined",
    "worker_lost", "daemon_stopping", "study_paused", "study_resumed", "study_cancelled",
    "retune_completed", "serving_switched", "monitor_checked", "retune_waiting", "examples_added",
    "reference_set", "search_space_exhausted",
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


def private_state_dir(state_dir: Path) -> Path:
    """Create ``state_dir`` (and missing parents) with mode 0700, or narrow an existing
    one this user owns to 0700: it holds the database (specs, trials), the token and the
    artifacts, which other local users must not read."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        info = state_dir.stat()
        if info.st_uid == os.getuid() and info.st_mode & 0o077 and state_dir.resolve() != Path.home().resolve():
            os.chmod(state_dir, 0o700)
            log.info("state directory %s narrowed to mode 0700", state_dir)
    except OSError as exc:
        log.warning("cannot make state directory %s private: %s", state_dir, exc.strerror)
    return state_dir


def _create_private_file(path: Path) -> None:
    """Create an empty ``path`` with mode 0600 unless it exists (SQLite gives its -wal and
    -shm files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError:
        return  # the database open below reports what is wrong with the path
    os.close(fd)


def default_storage_url(state_dir: Path) -> str:
    return f"sqlite:///{(state_dir / 'hpod.db').resolve()}"


def same_database(a: str, b: str) -> bool:
    """Whether two database URLs (either may hide its password) name one database."""
    from sqlalchemy.engine import make_url

    def key(url: str) -> tuple[Any, ...]:
        try:
            u = make_url(url)
        except Exception:
            return (url,)
        database = u.database
        if u.get_backend_name() == "sqlite" and database and database != ":memory:":
            database = str(Path(database).expanduser().resolve())
        return (u.get_backend_name(), u.username, u.host, u.port, database)

    return key(a) == key(b)


def config_key(params: dict[str, Any]) -> str:
    """A stable hash of a configuration (retries of one configuration share it)."""
    blob = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


#: A worker silent for longer than this (seconds) is ``lost``: the controller stops
#: counting its slots and ``hpod status`` and the metrics show it so.
WORKER_STALE_SECONDS = 30.0


def _rowcount(result: Any) -> int:
    """Rows an UPDATE/DELETE matched (its result is a CursorResult, typed as a plain Result)."""
    return int(cast("CursorResult[Any]", result).rowcount)


def worker_state(worker: WorkerRow, now: float, *, stale_after: float = WORKER_STALE_SECONDS) -> str:
    """A worker's state as users see it: ``idle``/``busy`` past ``stale_after`` seconds
    without a heartbeat is ``lost``."""
    if worker.state in ("idle", "busy") and now - worker.last_heartbeat > stale_after:
        return "lost"
    return worker.state


def _now() -> float:
    return time.time()


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, allow_nan=False) if value is not None else "null"


#: PostgreSQL channel notified when a job is queued (payload: the study)
JOBS_CHANNEL = "hpod_jobs"
#: PostgreSQL channel notified when a job's outcome is stored (the controller listens)
RESULTS_CHANNEL = "hpod_results"
#: PostgreSQL channel notified when a job is claimed (payload: the claiming worker), so
#: idle workers woken by the same queued job leave it to the one that took it
CLAIMS_CHANNEL = "hpod_claims"


#: hpod_jobs' columns in table order (what a claim returns)
_JOB_COLUMNS = tuple(c.name for c in cast("Table", JobRow.__table__).c)  # type: ignore[attr-defined]


class JobListener:
    """A PostgreSQL connection listening on :data:`JOBS_CHANNEL`: wait on it (it has a
    ``fileno``) with ``select`` or ``multiprocessing.connection.wait``, then
    :meth:`drain`. A broken connection reads as "look now" and then stays quiet
    (``broken``): the caller falls back to polling.

    On :data:`JOBS_CHANNEL` it also hears :data:`CLAIMS_CHANNEL` and keeps ``queued``:
    jobs announced as queued less jobs announced as claimed since it started listening
    (claims by ``own_claims``, the worker that holds it, excepted: that worker counts
    them itself). A hint, not a count: jobs queued before it listened, or handed back
    without a notice, are not in it, so a worker that trusts it still claims now and
    then without one."""

    def __init__(self, conn: Any, *, own_claims: str | None = None):
        self._conn = conn
        self.broken = False
        #: queued less claimed, as announced (never below zero)
        self.queued = 0
        self.own_claims = own_claims

    def fileno(self) -> int:
        return int(self._conn.fileno())

    def drain(self) -> int:
        """Consume pending notifications without waiting; how many there were."""
        if self.broken:
            return 0
        try:
            n = 0
            for note in self._conn.notifies(timeout=0):
                n += 1
                if note.channel != CLAIMS_CHANNEL:
                    self.queued += 1
                elif note.payload != self.own_claims:
                    self.queued = max(0, self.queued - 1)
            return n
        except Exception as exc:
            log.warning("job listener lost (polling instead): %s", _first_line(exc))
            self.close()
            return 1

    def close(self) -> None:
        self.broken = True
        with contextlib.suppress(Exception):  # a connection already lost has nothing to close
            self._conn.close()


#: A pooled connection idle at least this many seconds is pinged before it is handed out.
PING_IDLE_SECONDS = 1.0
_LAST_USED = "hpod_last_used"


def _mark_used(_dbapi_connection: Any, record: Any, *_: Any) -> None:
    record.info[_LAST_USED] = time.monotonic()


def _ping_idle_connections(engine: Any) -> None:
    """Ping, on checkout from ``engine``'s pool, a connection that sat idle in the pool
    for :data:`PING_IDLE_SECONDS` or more; a dead one invalidates the pool (a database
    restart killed them all) and the pool hands out a fresh connection.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: on PostgreSQL one round
    trip in every transaction, ~10 of a trial's ~70. A connection returned less than
    :data:`PING_IDLE_SECONDS` ago was alive then; a server that died since fails the
    next statement as it could fail one right after a ping, and that failure (an
    outage, :func:`is_disconnect`) invalidates the pool too, so callers that retry
    (:func:`retry_storage`, the controller's next step) reconnect."""
    from sqlalchemy import event
    from sqlalchemy.exc import InvalidatePoolError

    dialect = engine.dialect

    def ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        used = record.info.get(_LAST_USED)
        if used is not None and time.monotonic() - used < PING_IDLE_SECONDS:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise InvalidatePoolError(f"pooled connection dead on checkout: {_first_line(exc)}") from exc
        if not alive:
            raise InvalidatePoolError("pooled connection dead on checkout")

    if not event.contains(engine, "checkin", _mark_used):
        event.listen(engine, "connect", _mark_used)
        event.listen(engine, "checkin", _mark_used)
        event.listen(engine, "checkout", ping_if_idle)


def _set_synchronous_normal(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _sync_at_checkpoints(engine: Any) -> None:
    """SQLite in WAL mode with ``synchronous=NORMAL`` on every connection of ``engine``.

    SQLite's default (FULL) syncs the write-ahead log to disk at every commit: with ~20
    small commits per trial (Optuna's ask and tell, the job, its lease, events, summary)
    that was most of a trial's cost on a zero-cost objective. With NORMAL the log is
    synced at checkpoints: a commit survives the crash or SIGKILL of any process (its
    pages are in the OS), and the database stays consistent on a power loss, which may
    roll back the last commits before it (the same as a kill at that earlier moment:
    the trials then running are failed as orphaned and re-queued on the next start).
    """
    from sqlalchemy import event

    if not event.contains(engine, "connect", _set_synchronous_normal):
        event.listen(engine, "connect", _set_synchronous_normal)
        engine.dispose()  # connections opened before the listener reconnect with it


class Store:
    """Optuna RDB storage + hpod's tables on one SQLAlchemy engine."""

    def __init__(self, url: str, *, pool_size: int = 5, create: bool = True, light: bool = False,
                 application_name: str | None = None, connect_timeout: float = 10.0,
                 pool_timeout: float = 30.0):
        """Open the database at ``url``.

        Args:
            pool_size: connections kept open (PostgreSQL; plus at most 2 overflow).
            create: create missing tables (Optuna's and hpod's).
            light: read-only views: do not import Optuna until needed.
            application_name: shown in ``pg_stat_activity`` (PostgreSQL), so an
                operator can tell the controller's connections from each worker's.
            connect_timeout: seconds to wait for a PostgreSQL server to answer.
            pool_timeout: seconds to wait for a free pooled connection.
        """
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 (found {pool_size})")
        if connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0 seconds (found {connect_timeout})")
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.is_postgres = url.startswith("postgresql")
        if self.is_sqlite:
            self._check_sqlite_path(url, must_exist=light or not create)
            db_file = self._sqlite_file(url)
            if db_file is not None and create and not light:
                _create_private_file(db_file)
        # Not ``pool_pre_ping``: a round trip per checkout (see _ping_idle_connections).
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": False}
        if self.is_sqlite:
            # Several processes write one file: wait for the lock instead of failing at once.
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs.update(pool_size=pool_size, max_overflow=2, pool_recycle=1800, pool_timeout=pool_timeout)
        if self.is_postgres:
            # Keepalives: a server that vanished (node lost, network cut) is noticed in
            # ~20 s instead of the kernel's two hours.
            engine_kwargs["connect_args"] = {
                "connect_timeout": max(1, round(connect_timeout)),
                "application_name": (application_name or "hpod")[:63],
                "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
            }
        self._engine_kwargs = engine_kwargs
        self._optuna_storage: Any = None
        self._autocommit: Any = None
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
                cls = StorageUnreachable if is_disconnect(exc) else StorageUrlError
                raise cls(f"storage URL {self.safe_url!r} cannot be opened: "
                          f"{str(exc).splitlines()[0]}") from None
        else:
            self.engine = self._open_optuna(create).engine
        _ping_idle_connections(self.engine)
        try:
            if self.is_sqlite:
                with self.engine.begin() as conn:
                    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                _sync_at_checkpoints(self.engine)
            if create and not light:
                SQLModel.metadata.create_all(
                    self.engine,
                    tables=[SQLModel.metadata.tables[t.__tablename__]
                            for t in (StudyRow, EventRow, JobRow, WorkerRow, StateRow, DataWindowRow, DataRecordRow)],
                )
        except SQLAlchemyError as exc:
            if not is_disconnect(exc):
                raise
            raise StorageUnreachable(f"storage URL {self.safe_url!r} cannot be opened: "
                                     f"{str(exc).splitlines()[0]}") from None

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
            cls = StorageUnreachable if is_disconnect(exc) else StorageUrlError
            raise cls(f"storage URL {self.safe_url!r} cannot be opened: {exc.__class__.__name__}: "
                      f"{str(exc).splitlines()[0]}") from None
        except Exception as exc:
            # Optuna wraps driver errors (StorageInternalError) while opening its tables.
            root = _root_cause(exc)
            if is_disconnect(exc):
                raise StorageUnreachable(f"storage URL {self.safe_url!r} cannot be opened: "
                                         f"{_first_line(root)}") from None
            if not create and isinstance(exc.__cause__, ProgrammingError):
                # A worker started before any controller created the tables: wait for it.
                raise StorageUnreachable(f"storage URL {self.safe_url!r} has no hpod tables yet (start the "
                                         f"controller first): {_first_line(root)}") from None
            raise
        return self._optuna_storage

    @property
    def optuna_storage(self) -> optuna.storages.RDBStorage:
        """Optuna's RDBStorage (created on first use in a light store)."""
        if self._optuna_storage is None:
            self._open_optuna(create=False)
        storage: optuna.storages.RDBStorage = self._optuna_storage
        return storage

    @staticmethod
    def _sqlite_file(url: str) -> Path | None:
        path = url.split(":///", 1)[-1].split("?", 1)[0] if ":///" in url else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return Path(path).expanduser()

    @staticmethod
    def _check_sqlite_path(url: str, *, must_exist: bool = False) -> None:
        """SQLite creates a missing file on connect: refuse a missing directory, and
        with ``must_exist`` (stores that only read) a missing file, before connecting."""
        path = url.split(":///", 1)[-1].split("?", 1)[0] if ":///" in url else ""
        if not path or path == ":memory:" or path.startswith("file:"):
            return
        file = Path(path).expanduser()
        if must_exist and not file.exists():
            raise NoDatabase(f"no hpod database at {file} (no studies yet; set --state-dir, HPOD_STATE_DIR "
                             "or --storage to another one)")
        if not file.parent.exists():
            raise StorageUrlError(f"storage URL {url!r}: directory {file.parent} does not exist")

    @classmethod
    def for_state_dir(cls, state_dir: Path, url: str | None = None, *, light: bool = False,
                      create: bool = True) -> Store:
        """The store at ``url``, or SQLite in ``state_dir``. With ``create`` (commands that
        write: ``hpod run``, the daemon) the directory, the file and the tables are made
        when missing; without it (commands that read) nothing is, and a missing database
        is :class:`NoDatabase`."""
        if url is None:
            if create and not light:
                private_state_dir(state_dir)
            url = default_storage_url(state_dir)
        return cls(url, light=light, create=create)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self, *, single_read: bool = False) -> Iterator[Session]:
        """A short transaction; a lost connection, a refused one or a pool timeout
        becomes :class:`~hpod.errors.StorageError` (the pool drops the dead connection,
        so the next call reconnects).

        ``single_read``: the caller sends one SELECT and writes nothing; on PostgreSQL
        it runs in autocommit mode (a statement is its own transaction): no BEGIN and
        COMMIT round trips around it."""
        bind = self.engine
        if single_read and self.is_postgres:
            bind = self._autocommit_engine()
        try:
            with Session(bind, expire_on_commit=False) as session, session.begin():
                yield session
        except (OperationalError, InterfaceError, PoolTimeoutError) as exc:
            raise StorageError(f"database unavailable: {str(exc).splitlines()[0]}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StorageError(f"database unavailable: {str(exc).splitlines()[0]}") from exc
            raise

    def _autocommit_engine(self) -> Any:
        """``engine`` with autocommit connections (the same pool; psycopg switches
        autocommit on the client, without a round trip)."""
        engine = self._autocommit
        if engine is None:
            engine = self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        return engine

    def _now_expr(self) -> Any:
        """Current epoch seconds for lease arithmetic: the database's clock on
        PostgreSQL (nodes agree whatever their clocks say), this process's on SQLite
        (one node)."""
        if self.is_postgres:
            return func.extract("epoch", func.clock_timestamp())
        return _now()

    def db_time(self) -> float:
        """The database's current time in epoch seconds (this process's on SQLite)."""
        if not self.is_postgres:
            return _now()
        with self.session() as s:
            now = s.scalar(select(self._now_expr()))
        if now is None:
            raise StorageError(f"{self.safe_url} did not report its current time")
        return float(now)

    # ------------------------------------------------------------------ controllers
    @property
    def sqlite_file(self) -> Path | None:
        """The SQLite database's file (None for PostgreSQL and in-memory databases)."""
        return self._sqlite_file(self.url) if self.is_sqlite else None

    def lock_study(self, name: str) -> bool:
        """Take study ``name``'s controller lock (see :mod:`hpod.store._controller_lock`):
        False when another process's controller drives it."""
        try:
            return acquire_study(self, name)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot take the controller lock of study {name!r} on {self.safe_url}: "
                               f"{str(exc).splitlines()[0]}") from exc

    def unlock_study(self, name: str) -> None:
        """Give back one hold on study ``name``'s controller lock."""
        release_study(self, name)

    # ------------------------------------------------------------------ studies
    def register_study(self, spec: StudySpec, *, state: str = "queued", parent: str | None = None,
                       version: int = 1, reason: str | None = None) -> tuple[StudyRow, bool]:
        """Create the study (Optuna + registry) or return the existing one.

        Returns ``(row, created)``. An existing study must have the same objectives
        and directions; otherwise SpecError (a different study needs another name).
        """
        import optuna

        existing = self.check_compatible(spec)
        if existing is not None:
            with self.session() as s:
                row = s.get(StudyRow, spec.name)
                assert row is not None
                row.spec_json = spec.model_dump_json()
                row.priority = spec.priority
                row.updated_at = _now()
            return self.get_study(spec.name), False
        study = optuna.create_study(
            storage=self.optuna_storage, study_name=spec.name, directions=spec.directions, load_if_exists=True
        )
        name_values(study, spec.value_names)
        now = _now()
        row = StudyRow(name=spec.name, spec_json=spec.model_dump_json(), state=state, priority=spec.priority,
                       parent=parent, version=version, reason=reason, created_at=now, updated_at=now)
        with self.session() as s:
            s.add(row)
        return row, True

    def check_compatible(self, spec: StudySpec) -> StudyRow | None:
        """The stored study of ``spec.name`` (None if new); SpecError when it has other
        objectives or directions, or ``spec`` changes what the study keeps for its whole
        life (:data:`hpod.spec.IDENTITY_FIELDS`): a different study needs another name."""
        existing = self.get_study(spec.name, missing_ok=True)
        if existing is not None:
            old = json.loads(existing.spec_json)
            old_targets = [(o["name"], o.get("direction", "minimize")) for o in old.get("objectives", [])]
            new_targets = [(o.name, o.direction) for o in spec.objectives]
            if old_targets != new_targets:
                raise SpecError("objectives", f"study {spec.name!r} exists with objectives {old_targets}; "
                                "give the spec another name to start a different study", found=new_targets)
            check_identity(spec.name, spec_changes(old, spec.model_dump(mode="json")))
        return existing

    @overload
    def get_study(self, name: str) -> StudyRow: ...

    @overload
    def get_study(self, name: str, *, missing_ok: bool) -> StudyRow | None: ...

    def get_study(self, name: str, *, missing_ok: bool = False) -> StudyRow | None:
        with self.session(single_read=True) as s:
            row = s.get(StudyRow, name)
        if row is None and not missing_ok:
            raise StudyNotFound(f"no study named {name!r} in {self.safe_url}; `hpod status` lists the studies")
        return row

    def list_studies(self) -> list[StudyRow]:
        with self.session() as s:
            return list(s.scalars(select(StudyRow).order_by(col(StudyRow.created_at))))

    def update_study(self, name: str, *, states: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Set ``fields`` of the study's row and, in the same transaction, its ``states``
        (key -> value, as :meth:`put_state`)."""
        with self.session() as s:
            self._update_study(s, name, states, fields)

    def _update_study(self, s: Session, name: str, states: Mapping[str, Any] | None,
                      fields: Mapping[str, Any]) -> None:
        s.execute(update(StudyRow).where(col(StudyRow.name) == name).values(**{"updated_at": _now(), **fields}))
        for key, value in (states or {}).items():
            self._put_state(s, name, key, value)

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
        row = self._event_row(kind, study=study, trial_number=trial_number, payload=payload, source=source,
                              handled=handled)
        with self.session() as s:
            s.add(row)
            s.flush()
            assert row.id is not None
            return row.id

    @staticmethod
    def _event_row(kind: str, *, study: str | None = None, trial_number: int | None = None,
                   payload: dict[str, Any] | None = None, source: str | None = None,
                   handled: bool = False) -> EventRow:
        return EventRow(ts=_now(), kind=kind, study=study, trial_number=trial_number,
                        payload_json=_dumps(payload or {}), source=source or _node_name(), handled=handled)

    def events(self, *, study: str | None = None, after_id: int = 0, limit: int = 200,
               kinds: Iterable[str] | None = None, newest: bool = False) -> list[EventRow]:
        q = select(EventRow).where(col(EventRow.id) > after_id)
        if study:
            q = q.where(or_(col(EventRow.study) == study, col(EventRow.study).like(f"{study}@%")))
        if kinds:
            q = q.where(col(EventRow.kind).in_(list(kinds)))
        q = q.order_by(col(EventRow.id).desc() if newest else col(EventRow.id)).limit(limit)
        with self.session() as s:
            rows = list(s.scalars(q))
        return list(reversed(rows)) if newest else rows

    def unhandled_events(self, kinds: Iterable[str] | None = None) -> list[EventRow]:
        q = select(EventRow).where(col(EventRow.handled) == False)  # noqa: E712
        if kinds:
            q = q.where(col(EventRow.kind).in_(list(kinds)))
        with self.session() as s:
            return list(s.scalars(q.order_by(col(EventRow.id))))

    def mark_handled(self, event_id: int) -> bool:
        """Mark an event handled; False if another process did it first (idempotence)."""
        with self.session() as s:
            res = s.execute(update(EventRow).where(col(EventRow.id) == event_id, col(EventRow.handled) == False)  # noqa: E712
                            .values(handled=True))
            return bool(_rowcount(res))

    def event_counts(self) -> dict[str, int]:
        with self.session() as s:
            q = select(col(EventRow.kind), func.count()).group_by(col(EventRow.kind))
            return {k: int(n) for k, n in s.execute(q)}

    # ------------------------------------------------------------------ jobs
    def create_job(self, *, study: str, trial_id: int, trial_number: int, params: dict[str, Any],
                   attempt: int = 1, priority: int = 0) -> JobRow:
        row = JobRow(study=study, trial_id=trial_id, trial_number=trial_number, params_json=_dumps(params),
                     config_key=config_key(params), attempt=attempt, priority=priority, created_at=_now())
        with self.session() as s:
            s.add(row)
            if self.is_postgres:
                # Wakes idle workers (JobListener) when the job commits; none are lost
                # while nobody listens: workers still look for queued jobs every poll.
                s.execute(select(func.pg_notify(JOBS_CHANNEL, study)))
        return row

    def queue_trial(self, *, study: str, trial_id: int, trial_number: int, params: dict[str, Any],
                    held: list[HeldParam], user_attrs: Mapping[str, Any], attempt: int = 1,
                    priority: int = 0,
                    study_update: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None) -> JobRow:
        """:meth:`create_job` for a trial just asked, with the trial's parameters the
        storage held (:func:`holding_params`) and ``user_attrs`` written
        in the same transaction: one commit instead of one per parameter and attribute,
        and never a trial with its parameters but no job. ``study_update``: ``(fields,
        states)`` of :meth:`update_study` to write in the same transaction."""
        from optuna.storages._rdb import models

        row = JobRow(study=study, trial_id=trial_id, trial_number=trial_number, params_json=_dumps(params),
                     config_key=config_key(params), attempt=attempt, priority=priority, created_at=_now())
        with self.session() as s:
            insert_params(s, held)
            # A trial just asked has none of these attributes yet: no delete first.
            self._put_trial_attrs(s, models.TrialUserAttributeModel, trial_id, user_attrs, replace=False)
            s.add(row)
            if study_update is not None:
                self._update_study(s, study, study_update[1], study_update[0])
            if self.is_postgres:
                s.execute(select(func.pg_notify(JOBS_CHANNEL, study)))
        return row

    def tell_trial(self, trial_id: int, values: list[float], *, user_attrs: Mapping[str, Any],
                   system_attrs: Mapping[str, Any], job_id: int,
                   events: Iterable[Mapping[str, Any]] = (), fresh: bool = False) -> datetime.datetime | None:
        """Tell a RUNNING Optuna trial COMPLETE with ``values`` and its attributes, mark
        its job told and append ``events`` (:meth:`append_event` arguments): one
        transaction, where Optuna's own tell takes one per attribute plus two reads of
        the trial. The state changes only from RUNNING (what Optuna's tell checks);
        returns the trial's completion time, or None when it was no longer running
        (told before a crash): then nothing is written. The caller runs the sampler's
        ``after_trial`` first, as Optuna's tell does.

        ``fresh``: the caller has just read the trial and it has no values and none of
        these attributes: they are inserted without deleting old rows first (two
        statements fewer); should it have one after all, the unique key refuses the
        insert and the tell is written again the usual way."""
        if fresh:
            try:
                return self._tell_trial(trial_id, values, user_attrs=user_attrs, system_attrs=system_attrs,
                                        job_id=job_id, events=events, replace=False)
            except IntegrityError:
                log.info("trial %d gained values or attributes since it was read; telling it again", trial_id)
        return self._tell_trial(trial_id, values, user_attrs=user_attrs, system_attrs=system_attrs, job_id=job_id,
                                events=events, replace=True)

    def _tell_trial(self, trial_id: int, values: list[float], *, user_attrs: Mapping[str, Any],
                    system_attrs: Mapping[str, Any], job_id: int, events: Iterable[Mapping[str, Any]],
                    replace: bool) -> datetime.datetime | None:
        from optuna.storages._rdb import models
        from optuna.trial import TrialState

        complete = datetime.datetime.now()  # Optuna's clock for datetime_complete
        with self.session() as s:
            res = s.execute(update(models.TrialModel).where(
                models.TrialModel.trial_id == trial_id, models.TrialModel.state == TrialState.RUNNING,
            ).values(state=TrialState.COMPLETE, datetime_complete=complete),
                execution_options={"synchronize_session": False})
            if _rowcount(res) != 1:
                return None
            if replace:
                s.execute(delete(models.TrialValueModel).where(models.TrialValueModel.trial_id == trial_id),
                          execution_options={"synchronize_session": False})
            rows = []
            for objective, value in enumerate(values):
                stored, kind = models.TrialValueModel.value_to_stored_repr(value)
                rows.append({"trial_id": trial_id, "objective": objective, "value": stored, "value_type": kind})
            if rows:
                s.execute(insert(models.TrialValueModel.__table__), rows)
            self._put_trial_attrs(s, models.TrialUserAttributeModel, trial_id, user_attrs, replace=replace)
            self._put_trial_attrs(s, models.TrialSystemAttributeModel, trial_id, system_attrs, replace=replace)
            s.execute(update(JobRow).where(col(JobRow.id) == job_id).values(told=True))
            s.add_all(self._event_row(**event) for event in events)
        return complete

    @staticmethod
    def _put_trial_attrs(s: Session, model: Any, trial_id: int, attrs: Mapping[str, Any], *,
                         replace: bool = True) -> None:
        """Set Optuna trial attributes (``model``: its user or system attribute table) in
        the session's transaction: the keys' old rows go (``replace``), the new ones come
        (any database). Without ``replace`` a key the trial has already fails the insert
        (Optuna's unique key on trial and key)."""
        if not attrs:
            return
        if replace:
            s.execute(delete(model).where(model.trial_id == trial_id, model.key.in_(list(attrs))),
                      execution_options={"synchronize_session": False})
        s.execute(insert(model.__table__), [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                                            for key, value in attrs.items()])

    def job_listener(self, channel: str = JOBS_CHANNEL, *, own_claims: str | None = None) -> JobListener | None:
        """A connection that is readable when a job was queued or claimed (PostgreSQL
        ``LISTEN``/``NOTIFY``; with ``channel`` :data:`RESULTS_CHANNEL`: when a job's
        outcome was stored); None on SQLite or when it cannot be opened. ``own_claims``:
        the worker name whose claims its ``queued`` hint leaves out."""
        if not self.is_postgres:
            return None
        try:
            import psycopg

            cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
            cparams.pop("context", None)
            cparams.update(self._engine_kwargs.get("connect_args", {}))
            conn = psycopg.connect(*cargs, autocommit=True, **cparams)
            conn.execute(f"LISTEN {channel}")
            if channel == JOBS_CHANNEL:
                conn.execute(f"LISTEN {CLAIMS_CHANNEL}")
        except Exception as exc:  # the worker then polls, as without a listener
            log.warning("cannot listen for new jobs (polling instead): %s", _first_line(exc))
            return None
        return JobListener(conn, own_claims=own_claims)

    def claim_job(self, worker: str, *, lease_seconds: float, studies: Iterable[str] | None = None,
                  exclude_studies: Iterable[str] | None = None,
                  event: Callable[[JobRow], Mapping[str, Any] | None] | None = None) -> JobRow | None:
        """Atomically claim the next queued job (highest priority, oldest first).

        Exactly one caller gets a given job, across threads, processes and nodes: on
        PostgreSQL the candidate row is locked ``FOR UPDATE SKIP LOCKED`` (concurrent
        claimers skip it instead of queueing behind the lock), and on every database
        the claim itself is ``UPDATE … WHERE state='queued'``, so a lost race changes
        no row. The claim gets a fresh lease token (the fence for :meth:`finish_job`)
        and a lease of ``lease_seconds`` from the database's clock.

        ``event``, called with the claimed job, may return an event (keyword arguments
        of :meth:`append_event`) to append in the claim's own transaction: a caller
        that knows the job will start (``trial_started``) saves a transaction.
        """
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0 (found {lease_seconds})")
        study_list = list(studies) if studies is not None else None
        if study_list is not None and not study_list:
            return None
        token = uuid.uuid4().hex
        if self.is_postgres:
            params: dict[str, Any] = {"worker": worker, "token": token, "lease": float(lease_seconds),
                                      "studies": study_list, "exclude": list(exclude_studies or ()) or None}
            with self.session() as s:
                row = s.connection().exec_driver_sql(
                    self._pg_claim_sql(study_list is not None, bool(exclude_studies)), params).first()
                job = JobRow(**dict(zip(_JOB_COLUMNS, row[:-1], strict=True))) if row is not None else None
                self._add_claim_event(s, job, event)
                return job
        jobs = cast("Table", JobRow.__table__)  # type: ignore[attr-defined]
        q = select(jobs.c.id).where(jobs.c.state == "queued")
        if study_list is not None:
            q = q.where(jobs.c.study.in_(study_list))
        if exclude_studies:
            q = q.where(jobs.c.study.not_in(list(exclude_studies)))
        q = q.order_by(jobs.c.priority.desc(), jobs.c.id).limit(1)
        if self.engine.dialect.update_returning:
            # One statement: the candidate is chosen, fenced and returned by the UPDATE
            # itself (SQLite runs it under its write lock).
            now = self._now_expr()
            claim = (update(jobs)
                     .where(jobs.c.id == q.scalar_subquery(), jobs.c.state == "queued")
                     .values(state="running", worker=worker, lease_token=token, claimed_at=now,
                             heartbeat_at=now, lease_expires_at=now + lease_seconds)
                     .returning(*jobs.c))
            with self.session() as s:
                row = s.execute(claim).first()
                job = JobRow(**dict(zip(_JOB_COLUMNS, row, strict=True))) if row is not None else None
                self._add_claim_event(s, job, event)
                return job
        for _ in range(5):  # SQLite before 3.35: no UPDATE ... RETURNING
            with self.session() as s:
                job_id = s.scalar(q)
                if job_id is None:
                    return None
                now = self._now_expr()
                res = s.execute(
                    update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.state) == "queued").values(
                        state="running", worker=worker, lease_token=token, claimed_at=now,
                        heartbeat_at=now, lease_expires_at=now + lease_seconds)
                )
                if _rowcount(res) == 1:
                    job = s.get(JobRow, job_id)
                    self._add_claim_event(s, job, event)
                    return job
        return None

    @staticmethod
    @functools.cache
    def _pg_claim_sql(by_study: bool, excluding: bool) -> str:
        """The claim as one PostgreSQL statement, written once: the candidate is chosen
        (``FOR UPDATE SKIP LOCKED``: concurrent claimers skip rows others hold or have
        just claimed), fenced and returned by the UPDATE itself, and the claim announced
        on :data:`CLAIMS_CHANNEL` at commit, so that idle workers woken for the same job
        leave it (:class:`JobListener`). Plain SQL: building the statement with
        SQLAlchemy's expression language cost more CPU than running it."""
        where = "state = 'queued'"
        if by_study:
            where += " AND study = ANY(%(studies)s)"
        if excluding:
            where += " AND NOT (study = ANY(%(exclude)s))"
        now = "extract(epoch FROM clock_timestamp())"
        return (f"UPDATE hpod_jobs SET state = 'running', worker = %(worker)s, lease_token = %(token)s, "
                f"claimed_at = {now}, heartbeat_at = {now}, lease_expires_at = {now} + %(lease)s "
                f"WHERE id = (SELECT id FROM hpod_jobs WHERE {where} ORDER BY priority DESC, id LIMIT 1 "
                f"FOR UPDATE SKIP LOCKED) AND state = 'queued' "
                f"RETURNING {', '.join(_JOB_COLUMNS)}, pg_notify('{CLAIMS_CHANNEL}', %(worker)s)")

    def _add_claim_event(self, s: Session, job: JobRow | None,
                         event: Callable[[JobRow], Mapping[str, Any] | None] | None) -> None:
        if job is None or event is None:
            return
        kwargs = event(job)
        if kwargs is None:
            return
        row = self._event_row(**kwargs)
        if not self.is_postgres:
            s.add(row)
            return
        # Plain SQL: the ORM's flush of one new row cost more CPU than the claim itself.
        s.connection().exec_driver_sql(
            "INSERT INTO hpod_events (ts, kind, study, trial_number, payload_json, handled, source) "
            "VALUES (%(ts)s, %(kind)s, %(study)s, %(trial_number)s, %(payload_json)s, %(handled)s, %(source)s)",
            {"ts": row.ts, "kind": row.kind, "study": row.study, "trial_number": row.trial_number,
             "payload_json": row.payload_json, "handled": row.handled, "source": row.source})

    def unclaim_job(self, job_id: int, token: str) -> bool:
        """Hand a job this claim holds back to the queue untouched (its executor cannot
        start it yet, e.g. too few free GPUs for a multi-GPU trial). False: the claim
        was no longer held."""
        with self.session() as s:
            res = s.execute(update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.lease_token) == token,
                                                 col(JobRow.state) == "running")
                            .values(state="queued", worker=None, lease_token=None, claimed_at=None,
                                    heartbeat_at=None, lease_expires_at=None))
            if _rowcount(res) != 1:
                return False
            if self.is_postgres:
                s.execute(select(func.pg_notify(JOBS_CHANNEL, "")))  # queued again: wake idle workers
            return True

    def renew_leases(self, worker: str, tokens: dict[int, str], *, lease_seconds: float) -> set[int]:
        """Renew the leases this worker holds; returns the job ids it still holds
        (a job missing from the answer was expired and handed to someone else)."""
        if not tokens:
            return set()
        held: set[int] = set()
        with self.session() as s:
            now = self._now_expr()
            for job_id, token in tokens.items():
                res = s.execute(update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.lease_token) == token,
                                                     col(JobRow.state) == "running")
                                .values(heartbeat_at=now, lease_expires_at=now + lease_seconds))
                if _rowcount(res) == 1:
                    held.add(job_id)
        return held

    def finish_job(self, job_id: int, token: str, *, result: dict[str, Any] | None = None,
                   fail_reason: str | None = None) -> bool:
        """Store a job's outcome if ``token`` still holds its lease. False: the lease
        was lost (expired and re-queued) and the result is dropped.

        Idempotent for its holder: storing the same outcome again after a lost
        acknowledgement (the commit reached the database, the answer did not) returns
        True instead of dropping it."""
        state = "done" if result is not None else "failed"
        result_json = _dumps(result) if result is not None else None
        if self.is_postgres:
            # One statement: the fenced update, and at its commit the notice that wakes the
            # controller (it tells the result and queues the next job).
            with self.session() as s:
                stored = s.connection().exec_driver_sql(
                    "UPDATE hpod_jobs SET state = %(state)s, result_json = %(result)s, fail_reason = %(reason)s, "
                    "finished_at = %(now)s, lease_expires_at = NULL WHERE id = %(id)s AND lease_token = %(token)s "
                    f"AND state = 'running' RETURNING pg_notify('{RESULTS_CHANNEL}', '')",
                    {"state": state, "result": result_json, "reason": fail_reason, "now": _now(), "id": job_id,
                     "token": token}).first()
                if stored is not None:
                    return True
                again = s.scalar(select(func.count()).select_from(JobRow).where(
                    col(JobRow.id) == job_id, col(JobRow.lease_token) == token, col(JobRow.state) == state))
                return bool(again)
        with self.session() as s:
            res = s.execute(update(JobRow).where(col(JobRow.id) == job_id, col(JobRow.lease_token) == token,
                                                 col(JobRow.state) == "running")
                            .values(state=state, result_json=result_json, fail_reason=fail_reason,
                                    finished_at=_now(), lease_expires_at=None))
            if _rowcount(res) == 1:
                return True
            again = s.scalar(select(func.count()).select_from(JobRow).where(
                col(JobRow.id) == job_id, col(JobRow.lease_token) == token, col(JobRow.state) == state))
            return bool(again)

    def expire_leases(self, *, now: float | None = None) -> list[JobRow]:
        """Mark running jobs whose lease expired as ``lost`` (reason ``worker_lost``);
        returns them. ``now`` defaults to the database's clock."""
        with self.session() as s:
            cutoff = self._now_expr() if now is None else now
            q = select(JobRow).where(col(JobRow.state) == "running", col(JobRow.lease_expires_at) < cutoff)
            if self.is_postgres:
                q = q.with_for_update(skip_locked=True)
            rows = list(s.scalars(q))
            finished = _now()
            for row in rows:
                row.state, row.fail_reason, row.finished_at = "lost", "worker_lost", finished
        return rows

    def release_jobs(self, job_ids: Iterable[int], *, reason: str, worker: str | None = None) -> None:
        """Give up running jobs this process holds (shutdown / interrupt).

        With ``worker``, only jobs that worker still holds are released: a job whose
        lease expired and was handed on is left alone."""
        ids = list(job_ids)
        if not ids:
            return
        with self.session() as s:
            q = update(JobRow).where(col(JobRow.id).in_(ids), col(JobRow.state).in_(["running", "queued"]))
            if worker is not None:
                q = q.where(col(JobRow.worker) == worker)
            s.execute(q.values(state="lost", fail_reason=reason, finished_at=_now(), lease_expires_at=None))

    def queued_studies(self) -> set[str]:
        """Names of the studies that have queued jobs."""
        with self.session() as s:
            return set(s.scalars(select(col(JobRow.study)).where(col(JobRow.state) == "queued").distinct()))

    def cancel_queued(self, study: str, *, reason: str = "cancelled") -> int:
        with self.session() as s:
            res = s.execute(update(JobRow).where(col(JobRow.study) == study, col(JobRow.state) == "queued")
                            .values(state="cancelled", fail_reason=reason, finished_at=_now()))
            return _rowcount(res)

    def jobs_to_tell(self, study: str) -> list[JobRow]:
        with self.session(single_read=True) as s:
            q = select(JobRow).where(col(JobRow.study) == study, col(JobRow.told) == False,  # noqa: E712
                                     col(JobRow.state).in_(["done", "failed", "lost", "cancelled"]))
            return list(s.scalars(q.order_by(col(JobRow.id))))

    def mark_told(self, job_id: int, events: Iterable[Mapping[str, Any]] = ()) -> None:
        """Mark the job's outcome as told to Optuna and append ``events`` (keyword
        arguments of :meth:`append_event`) in the same transaction."""
        with self.session() as s:
            s.execute(update(JobRow).where(col(JobRow.id) == job_id).values(told=True))
            for event in events:
                s.add(self._event_row(**event))

    def set_trial_attrs(self, trial_id: int, user: Mapping[str, Any],
                        system: Mapping[str, Any] | None = None) -> None:
        """Set several user (and system) attributes of an unfinished Optuna trial in one
        transaction (Optuna's ``set_trial_user_attr`` commits each one apart)."""
        storage = self.optuna_storage
        write = getattr(storage, "_set_trial_attr_without_commit", None)
        scoped = getattr(storage, "scoped_session", None)
        if write is None or scoped is None:  # another Optuna: one transaction per attribute
            for key, value in user.items():
                storage.set_trial_user_attr(trial_id, key, value)
            for key, value in (system or {}).items():
                storage.set_trial_system_attr(trial_id, key, value)
            return
        from optuna.storages._rdb import models
        from optuna.storages._rdb.storage import _create_scoped_session

        with _create_scoped_session(scoped, True) as session:
            for key, value in user.items():
                write(session, models.TrialUserAttributeModel, trial_id, key, value)
            for key, value in (system or {}).items():
                write(session, models.TrialSystemAttributeModel, trial_id, key, value)

    def jobs(self, study: str | None = None, states: Iterable[str] | None = None) -> list[JobRow]:
        q = select(JobRow)
        if study:
            q = q.where(col(JobRow.study) == study)
        if states:
            q = q.where(col(JobRow.state).in_(list(states)))
        with self.session() as s:
            return list(s.scalars(q.order_by(col(JobRow.id))))

    def count_jobs(self, *, exclude_worker: str | None = None) -> tuple[int, int]:
        """``(queued, running)``: how many jobs wait to be claimed and how many an
        executor holds, over every study, leaving out the running ones
        ``exclude_worker`` holds. One query."""
        running = col(JobRow.state) == "running"
        if exclude_worker is not None:
            running = running & or_(col(JobRow.worker).is_(None), col(JobRow.worker) != exclude_worker)
        q = select(func.count().filter(col(JobRow.state) == "queued"), func.count().filter(running)) \
            .select_from(JobRow).where(col(JobRow.state).in_(["queued", "running"]))
        with self.session(single_read=True) as s:
            queued, held = s.execute(q).one()
        return int(queued or 0), int(held or 0)

    def job_for_trial(self, trial_id: int) -> JobRow | None:
        with self.session() as s:
            return s.scalar(select(JobRow).where(col(JobRow.trial_id) == trial_id))

    def attempts_of(self, study: str, key: str) -> int:
        with self.session() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow)
                                .where(col(JobRow.study) == study, col(JobRow.config_key) == key)) or 0)

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
        with self.session(single_read=True) as s:
            return list(s.scalars(select(WorkerRow).order_by(col(WorkerRow.name))))

    def workers_by_state(self, *, stale_after: float = WORKER_STALE_SECONDS) -> dict[str, int]:
        """Workers counted by :func:`worker_state` (for ``hpod_workers{state}``)."""
        now = _now()
        out: dict[str, int] = {}
        for w in self.workers():
            state = worker_state(w, now, stale_after=stale_after)
            out[state] = out.get(state, 0) + 1
        return out

    def mark_workers_lost(self, *, older_than: float, exclude: str | None = None) -> list[str]:
        """Append a ``worker_lost`` event for each idle/busy worker whose heartbeat is
        older than ``older_than`` seconds (but ``exclude``, the caller's own row), then
        mark it lost. Returns their names."""
        cutoff = _now() - older_than
        with self.session() as s:
            stale = list(s.scalars(select(WorkerRow).where(col(WorkerRow.state).in_(["idle", "busy"]),
                                                           col(WorkerRow.last_heartbeat) < cutoff)))
        lost = []
        for w in stale:
            if w.name == exclude:
                continue
            age = _now() - w.last_heartbeat
            self.append_event("worker_lost", payload={"worker": w.name, "node": w.node,
                                                      "heartbeat_age_seconds": round(age, 1),
                                                      "current": json.loads(w.current_json or "[]")}, handled=True)
            self.set_worker_state(w.name, "lost")
            lost.append(w.name)
            log.warning("worker %s on %s lost: no heartbeat for %.0f s", w.name, w.node, age)
        return lost

    def set_worker_state(self, name: str, state: str) -> None:
        with self.session() as s:
            s.execute(update(WorkerRow).where(col(WorkerRow.name) == name).values(state=state, current_json="[]"))

    # ------------------------------------------------------------------ keyed state
    def get_state(self, study: str, key: str, default: Any = None) -> Any:
        with self.session() as s:
            row = s.get(StateRow, (study, key))
        return json.loads(row.value_json) if row is not None else default

    def put_state(self, study: str, key: str, value: Any) -> None:
        with self.session() as s:
            self._put_state(s, study, key, value)

    def _put_state(self, s: Session, study: str, key: str, value: Any) -> None:
        if self.is_postgres or self.is_sqlite:
            # One statement (an upsert) instead of a read and a write.
            from sqlalchemy.dialects import postgresql, sqlite

            upsert: Any = postgresql.insert if self.is_postgres else sqlite.insert
            now, blob = _now(), _dumps(value)
            s.execute(upsert(StateRow).values(study=study, key=key, value_json=blob, updated_at=now)
                      .on_conflict_do_update(index_elements=[col(StateRow.study), col(StateRow.key)],
                                             set_={"value_json": blob, "updated_at": now}))
            return
        row = s.get(StateRow, (study, key))
        if row is None:
            s.add(StateRow(study=study, key=key, value_json=_dumps(value), updated_at=_now()))
        else:
            row.value_json, row.updated_at = _dumps(value), _now()

    def states(self, key_prefix: str) -> list[StateRow]:
        with self.session() as s:
            return list(s.scalars(select(StateRow).where(col(StateRow.key).like(f"{key_prefix}%"))))

    # ------------------------------------------------------------------ data windows
    def _ensure_window_tables(self) -> None:
        # a light store (``hpod status``) on a database older than these tables
        if not getattr(self, "_window_tables", False):
            tables = [SQLModel.metadata.tables[t.__tablename__] for t in (DataWindowRow, DataRecordRow)]
            SQLModel.metadata.create_all(self.engine, tables=tables)
            self._window_tables = True

    def add_data_window(self, study: str, kind: str, records: list[dict[str, Any]], *, source: str,
                        fields: Iterable[str], monitor: str | None = None) -> DataWindowRow:
        """Store ``records`` (already validated) as one new window, atomically: the
        window and all its records, or nothing."""
        if kind not in WINDOW_KINDS:
            raise ValueError(f"kind must be one of {WINDOW_KINDS}, got {kind!r}")
        if not records:
            raise ValueError("a data window needs at least one record")
        self._ensure_window_tables()
        row = DataWindowRow(study=study, kind=kind, monitor=monitor, source=source[:1000], n_records=len(records),
                            fields_json=_dumps(list(fields)), created_at=_now())
        with self.session() as s:
            s.add(row)
            s.flush()
            assert row.id is not None
            s.add_all([DataRecordRow(window_id=row.id, position=i, record_json=_dumps(r))
                       for i, r in enumerate(records)])
        return row

    def data_windows(self, study: str, kind: str, *, after_id: int = 0) -> list[DataWindowRow]:
        """The study's windows of ``kind`` with id > ``after_id``, oldest first."""
        self._ensure_window_tables()
        q = (select(DataWindowRow).where(col(DataWindowRow.study) == study, col(DataWindowRow.kind) == kind,
                                         col(DataWindowRow.id) > after_id)
             .order_by(col(DataWindowRow.id)))
        with self.session() as s:
            return list(s.execute(q).scalars())

    def window_records(self, window_ids: Iterable[int]) -> list[dict[str, Any]]:
        """The records of the given windows, window by window in id order."""
        ids = sorted(set(window_ids))
        if not ids:
            return []
        self._ensure_window_tables()
        q = (select(col(DataRecordRow.record_json)).where(col(DataRecordRow.window_id).in_(ids))
             .order_by(col(DataRecordRow.window_id), col(DataRecordRow.position)))
        with self.session() as s:
            return [json.loads(r) for r in s.execute(q).scalars()]

    def ping(self) -> None:
        with self.session() as s:
            s.execute(text("SELECT 1"))


def name_values(study: optuna.Study, names: list[str]) -> None:
    """Store the names of ``study``'s values (``study.set_metric_names``) unless it has
    them, so that Optuna and optuna-dashboard label axes with them instead of 0, 1, ..."""
    import warnings

    import optuna

    if study.metric_names == names:
        return
    with warnings.catch_warnings():
        # set_metric_names is marked experimental; a user of hpod cannot act on that
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))


def _root_cause(exc: BaseException) -> BaseException:
    seen = 0
    while exc.__cause__ is not None and seen < 10:
        exc = exc.__cause__
        seen += 1
    return exc


def _first_line(exc: BaseException) -> str:
    text_ = str(exc).strip()
    return text_.splitlines()[0] if text_ else type(exc).__name__


def _node_name() -> str:
    return os.environ.get("HPOD_NODE_NAME") or socket.gethostname()
