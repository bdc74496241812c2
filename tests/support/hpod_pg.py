"""PostgreSQL for tests: a fresh database per test on 127.0.0.1:5432 (trust auth),
dropped afterwards; tests skip with the reason when the server is unreachable."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"


def _admin() -> Any:
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", connect_timeout=3,
                           autocommit=True)


def pg_unavailable_reason() -> str | None:
    try:
        with _admin() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:  # any failure means: no server for these tests
        return f"PostgreSQL on {PG_HOST}:{PG_PORT} unreachable: {str(exc).splitlines()[0]}"
    return None


def admin_sql(sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with _admin() as conn:
        cur = conn.execute(sql, args or None)
        return list(cur.fetchall()) if cur.description else []


@contextmanager
def fresh_database(prefix: str = "hpod_test") -> Iterator[str]:
    """Create ``<prefix>_<random>``, yield its SQLAlchemy URL, drop it (killing leftovers)."""
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(reason)
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin_sql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_of(url: str) -> str:
    return url.rsplit("/", 1)[-1]


@contextmanager
def database_outage(url: str, *, application_prefix: str | None = None) -> Iterator[None]:
    """Make the database unreachable to new connections and cut the existing ones
    (those whose ``application_name`` starts with ``application_prefix``, or all),
    as a PostgreSQL restart does for that database; restore it on exit."""
    db = database_of(url)
    admin_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
    try:
        cond = "AND application_name LIKE %s" if application_prefix else ""
        args = (db, application_prefix + "%") if application_prefix else (db,)
        admin_sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s {cond} "
                  "AND pid <> pg_backend_pid()", *args)
        yield
    finally:
        admin_sql(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')


def write_cost_spec(path: Path, name: str, *, n_trials: int, sleep_seconds: float = 0.0,
                    sampler: str = "random", **extra: Any) -> Path:
    """A ``synthetic:training_cost`` study spec (JSON is YAML)."""
    import json

    spec = {
        "name": name,
        "objective": {"name": "synthetic:training_cost", "params": {"sleep_seconds": sleep_seconds}},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
        "sampler": {"name": sampler, "seed": 5},
        "budget": {"n_trials": n_trials, "trial_timeout_seconds": 120},
        **extra,
    }
    path.write_text(json.dumps(spec))
    return path
