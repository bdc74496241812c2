"""The store's batched writes on the tell path, the SQLite sync level, and the job listener."""

from __future__ import annotations

import select
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from hpod_pg import fresh_database

from hpod.store import Store


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hpod.db'}"
        return
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
