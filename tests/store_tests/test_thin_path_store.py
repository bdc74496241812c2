"""The store's batched writes on the tell path, the SQLite sync level, the job listener,
and pooled connections pinged only after they sat idle."""

from __future__ import annotations

import math
import select
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from hpod_pg import database_outage, fresh_database

import hpod.store._store as store_module
from hpod.errors import StorageError
from hpod.store import RESULTS_CHANNEL, Store, holding_params


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpod.db'}"
        return
    with fresh_database() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def _running_trial(store: Store) -> tuple[optuna.Study, int]:
    study = optuna.create_study(storage=store.optuna_storage, study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    return study, trial._trial_id


def test_trial_attributes_are_written_together_and_refused_once_told(store_url: str) -> None:
    store = Store(store_url)
    study, trial_id = _running_trial(store)
    store.set_trial_attrs(trial_id, {"hpod.metrics": {"loss": 1.0}, "hpod.info": {"worker": "w"}},
                          {"constraints": [0.5]})
    frozen = store.optuna_storage.get_trial(trial_id)
    assert frozen.user_attrs == {"hpod.metrics": {"loss": 1.0}, "hpod.info": {"worker": "w"}}
    assert frozen.system_attrs["constraints"] == [0.5]
    study.tell(frozen.number, 1.0)
    # A trial told before a crash: the engine reads this as "already told".
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        store.set_trial_attrs(trial_id, {"hpod.metrics": {"loss": 2.0}})
    assert store.optuna_storage.get_trial(trial_id).user_attrs["hpod.metrics"] == {"loss": 1.0}
    store.close()


def test_told_mark_carries_its_events_and_the_study_row_its_states(store_url: str) -> None:
    store = Store(store_url)
    job = store.create_job(study="s", trial_id=1, trial_number=0, params={"x": 1})
    assert job.id is not None
    store.mark_told(job.id, [{"kind": "trial_completed", "study": "s", "trial_number": 0,
                              "payload": {"values": {"loss": 1.0}}, "handled": True}])
    assert not store.jobs_to_tell("s")
    events = store.events(study="s", kinds=["trial_completed"])
    assert [(e.trial_number, e.handled) for e in events] == [(0, True)]
    store.update_study("s", states={"k": {"a": 1}}, message="m")
    assert store.get_state("s", "k") == {"a": 1}
    store.close()


def test_sqlite_connections_sync_at_checkpoints(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    store.close()


def test_a_queued_job_wakes_a_listener_on_postgres() -> None:
    with fresh_database() as url:
        store = Store(url)
        listener = store.job_listener()
        assert listener is not None
        assert select.select([listener], [], [], 0.2)[0] == []
        store.create_job(study="s", trial_id=1, trial_number=0, params={"x": 1})
        assert select.select([listener], [], [], 30)[0] == [listener]
        assert listener.drain() == 1
        assert listener.drain() == 0
        listener.close()
        assert listener.broken and listener.drain() == 0
        store.close()


def test_sqlite_has_no_listener(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    assert store.job_listener() is None
    store.close()


def test_a_trial_is_queued_and_told_in_one_transaction_each(store_url: str) -> None:
    store = Store(store_url)
    study = optuna.create_study(storage=store.optuna_storage, study_name="q", directions=["minimize"] * 2)
    dist = optuna.distributions.FloatDistribution(0, 1)
    with holding_params(store.optuna_storage) as hold:
        trial = study.ask({"x": dist, "y": dist})
        # Held, not written: a reader in this process sees them, the database not yet.
        assert set(store.optuna_storage.get_trial(trial._trial_id).params) == {"x", "y"}
        assert optuna.load_study(study_name="q", storage=store_url).trials[0].params == {}
        held = hold.take(trial._trial_id)
    assert len(held) == 2
    job = store.queue_trial(study="q", trial_id=trial._trial_id, trial_number=trial.number, params=trial.params,
                            held=held, user_attrs={"hpod.ask": {"a": 1}})
    assert job.id is not None and store.count_jobs() == (1, 0)
    frozen = store.optuna_storage.get_trial(trial._trial_id)
    assert frozen.params == trial.params and frozen.user_attrs == {"hpod.ask": {"a": 1}}
    claimed = store.claim_job("w", lease_seconds=60)
    assert claimed is not None and store.count_jobs() == (0, 1) and store.count_jobs(exclude_worker="w") == (0, 0)
    done = store.tell_trial(trial._trial_id, [1.5, float("inf")], user_attrs={"hpod.metrics": {"l": 1.5}},
                            system_attrs={"constraints": [0.0]}, job_id=job.id,
                            events=[{"kind": "trial_completed", "study": "q", "trial_number": trial.number}])
    assert done is not None
    frozen = store.optuna_storage.get_trial(trial._trial_id)
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.values == [1.5, float("inf")]
    assert frozen.user_attrs == {"hpod.ask": {"a": 1}, "hpod.metrics": {"l": 1.5}}
    assert frozen.system_attrs["constraints"] == [0.0]
    assert [e.kind for e in store.events(study="q")] == ["trial_completed"]
    # Told already: nothing is written again.
    assert store.tell_trial(trial._trial_id, [0.0, 0.0], user_attrs={}, system_attrs={}, job_id=job.id,
                            events=[{"kind": "trial_completed", "study": "q"}]) is None
    assert len(store.events(study="q")) == 1
    store.close()


def test_a_stored_result_wakes_the_controller_on_postgres() -> None:
    with fresh_database() as url:
        store = Store(url)
        listener = store.job_listener(RESULTS_CHANNEL)
        assert listener is not None
        store.create_job(study="s", trial_id=1, trial_number=0, params={"x": 1})
        job = store.claim_job("w", lease_seconds=60)
        assert job is not None and job.id is not None and job.lease_token is not None
        assert select.select([listener], [], [], 0.2)[0] == []  # queued and claimed: not a result
        assert store.finish_job(job.id, job.lease_token, result={"metrics": {}})
        assert select.select([listener], [], [], 30)[0] == [listener]
        assert listener.drain() == 1
        listener.close()
        store.close()


def _store_whose_connections_die(pg_url: str, monkeypatch: pytest.MonkeyPatch, *, name: str,
                                 ping_idle_seconds: float) -> Store:
    """A store that has used its pool, then had its database's connections killed while
    the server keeps accepting new ones (a restart that finished meanwhile), with
    ``PING_IDLE_SECONDS`` set to ``ping_idle_seconds``."""
    store = Store(pg_url, application_name=name)
    _queue_two(store)
    assert store.claim_job("w", lease_seconds=30) is not None
    monkeypatch.setattr(store_module, "PING_IDLE_SECONDS", ping_idle_seconds)
    with database_outage(pg_url):  # kills the connections on entry; nothing to do inside
        pass
    return store


@pytest.mark.postgres
def test_a_connection_killed_while_idle_in_the_pool_is_replaced_unseen(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every pooled connection counts as idle: it is pinged, found dead and replaced.
    store = _store_whose_connections_die(pg_url, monkeypatch, name="hpod-test-idle", ping_idle_seconds=0.0)
    job = store.claim_job("w", lease_seconds=30)
    assert job is not None and job.state == "running"
    store.close()


@pytest.mark.postgres
def test_a_connection_killed_right_after_use_fails_one_call_and_the_pool_recovers(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # No pooled connection counts as idle: none is pinged, so the dead one fails its
    # call as an outage (retry_storage retries it) and the whole pool is replaced.
    store = _store_whose_connections_die(pg_url, monkeypatch, name="hpod-test-busy", ping_idle_seconds=math.inf)
    with pytest.raises(StorageError):
        store.claim_job("w", lease_seconds=30)
    job = store.claim_job("w", lease_seconds=30)
    assert job is not None and job.state == "running"
    store.close()


def _queue_two(store: Store) -> None:
    for i in range(2):
        store.create_job(study="s", trial_id=1000 + i, trial_number=i, params={"x": i})


def test_a_fresh_tell_of_a_trial_that_gained_an_attribute_replaces_it(store_url: str) -> None:
    store = Store(store_url)
    _, trial_id = _running_trial(store)
    job = store.create_job(study="s", trial_id=trial_id, trial_number=0, params={"x": 0.5})
    assert job.id is not None
    # Written after the caller read the trial: its "fresh" tell meets the old row.
    store.optuna_storage.set_trial_user_attr(trial_id, "hpod.metrics", {"loss": 9.0})
    done = store.tell_trial(trial_id, [1.0], user_attrs={"hpod.metrics": {"loss": 1.0}}, system_attrs={},
                            job_id=job.id, events=[{"kind": "trial_completed", "study": "s", "trial_number": 0}],
                            fresh=True)
    assert done is not None
    frozen = store.optuna_storage.get_trial(trial_id)
    assert frozen.state == optuna.trial.TrialState.COMPLETE and frozen.values == [1.0]
    assert frozen.user_attrs["hpod.metrics"] == {"loss": 1.0}
    assert [e.kind for e in store.events(study="s")] == ["trial_completed"]
    assert store.jobs("s")[0].told
    store.close()
