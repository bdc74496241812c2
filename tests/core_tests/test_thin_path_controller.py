"""The controller's thin path: a trial is asked with its parameters and job in one
transaction and told with its attributes, event and told mark in another; the
statements the controller issues per trial do not grow with the study; every result
of a batch is told; a result told before a crash is not told again; and jobs are
queued ahead for remote workers only while trials are short."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from hpod_pg import fresh_database
from sqlalchemy import event, update

import hpod.core.engine as engine_module
from hpod.core.controller import QUEUE_AHEAD_BELOW_SECONDS, Controller
from hpod.core.engine import Engine
from hpod.spec import parse_spec
from hpod.store import JobRow, Store

SPEC: dict[str, Any] = {
    "name": "thin", "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 1}, "budget": {"n_trials": 200},
}
RESULT = {"metrics": {"loss": 1.0, "time_seconds": 2.0}, "metrics_std": {}, "measurements": {"x": 1},
          "seeds": [0], "pruned": False, "energy_spent_joules": 3.0}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    yield s
    s.close()


@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
        yield s
        s.close()
        return
    with fresh_database() as url:
        s = Store(url)
        yield s
        s.close()


class _Counter:
    """Statements sent on ``store``'s engine while ``on``, and round trips to the
    server: the statements plus each transaction's BEGIN (psycopg sends it before the
    first statement) and COMMIT, and each ping of a pooled connection."""

    def __init__(self, store: Store):
        self.on = False
        self.n = 0
        self.round_trips = 0
        event.listen(store.engine, "before_cursor_execute", self._count)
        event.listen(store.engine, "begin", self._transaction)
        event.listen(store.engine, "commit", self._transaction)
        dialect = store.engine.dialect
        ping = dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            self._trip()
            return bool(ping(dbapi_connection))

        dialect.do_ping = counted_ping  # type: ignore[method-assign]

    def _count(self, *_: Any) -> None:
        self.n += self.on
        self.round_trips += self.on

    def _trip(self, *_: Any) -> None:
        self.round_trips += self.on

    def _transaction(self, conn: Any) -> None:
        # In autocommit mode (a single read) the driver sends no BEGIN and no COMMIT.
        if getattr(conn.connection.dbapi_connection, "autocommit", False) is not True:
            self._trip()


def _engine(store: Store, tmp_path: Path, **spec: Any) -> Engine:
    engine = Engine(store, parse_spec({**SPEC, **spec}), state_dir=tmp_path)
    engine.start()
    return engine


def _finish_all(store: Store, study: str, result: dict[str, Any] = RESULT) -> list[JobRow]:
    """What remote workers do: claim every queued job and store its result."""
    done = []
    while (job := store.claim_job("w", lease_seconds=60, studies=[study])) is not None:
        assert store.finish_job(job.id, job.lease_token, result=result)  # type: ignore[arg-type]
        done.append(job)
    return done


def test_statements_per_trial_do_not_grow_with_the_study(any_store: Store, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = any_store
    # The sampler's seconds are saved every few seconds of the clock: saved once here.
    monkeypatch.setattr(engine_module, "SAMPLER_SECONDS_SAVE_SECONDS", math.inf)
    engine = _engine(store, tmp_path)
    counter = _Counter(store)
    per_trial, trips = [], []
    for _ in range(60):
        counter.n = counter.round_trips = 0
        counter.on = True
        engine.ask(1)
        counter.on = False
        _finish_all(store, engine.name)
        counter.on = True
        # As the controller does: the summary's write goes with the next ask.
        engine.collect(defer_summary=True)
        counter.on = False
        per_trial.append(counter.n)
        trips.append(counter.round_trips)
    # The first trials derive the reference point and the ideal point once; after that
    # a trial costs the same number of statements at trial 60 as at trial 20.
    assert per_trial[20:] == [per_trial[20]] * 40, per_trial
    assert trips[20:] == [trips[20]] * 40, trips
    # One ask (create the trial; its parameters, attribute, job and the previous
    # tell's summary in one transaction), one read of the jobs to tell and one of the
    # study's unfinished trials (serving the tell and the summary after it), one tell
    # (state, values, attributes, told mark and event in one transaction, nothing
    # deleted first: the read showed nothing to replace): 22 statements (23 on
    # PostgreSQL: the job's NOTIFY), where Optuna's ask and tell and a transaction per
    # attribute took 70, and a read of the trial before its tell, another for the
    # summary and the summary's own transaction took 31.
    assert per_trial[20] <= (23 if store.is_postgres else 22), per_trial
    if store.is_postgres:
        # Round trips on PostgreSQL: the statements, BEGIN and COMMIT of the 4
        # transactions (the read of the jobs to tell runs in autocommit mode), and no
        # ping (pool_pre_ping added one per transaction): 53 before.
        assert trips[20] <= 31, trips


def test_a_deferred_summary_is_written_with_the_next_ask_or_flushed(store: Store, tmp_path: Path) -> None:
    engine = _engine(store, tmp_path)
    engine.ask(2)
    _finish_all(store, engine.name)
    assert len(engine.collect(defer_summary=True)) == 2
    assert json.loads(store.get_study("thin").counts_json or "{}").get("COMPLETE") is None
    engine.ask(1)  # the summary goes with the job
    assert json.loads(store.get_study("thin").counts_json or "{}")["COMPLETE"] == 2
    _finish_all(store, engine.name)
    engine.collect(defer_summary=True)
    engine.flush_summary()  # no ask took it
    assert json.loads(store.get_study("thin").counts_json or "{}")["COMPLETE"] == 3


def test_every_result_of_a_batch_is_told_with_its_parameters_attributes_and_event(
        store: Store, tmp_path: Path) -> None:
    engine = _engine(store, tmp_path)
    jobs = engine.ask(4)
    assert len(jobs) == 4
    assert len(_finish_all(store, engine.name)) == 4
    told = engine.collect()
    assert sorted(t.number for t in told) == [j.trial_number for j in jobs]
    assert not store.jobs_to_tell(engine.name)
    trials = {t.number: t for t in optuna.load_study(study_name="thin", storage=store.url).trials}
    for job in jobs:
        t = trials[job.trial_number]
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert t.values == [1.0, 2.0]
        assert t.datetime_complete is not None
        assert t.params == json.loads(job.params_json)
        assert t.user_attrs["hpod.metrics"] == RESULT["metrics"]
        assert t.user_attrs["hpod.measurements"] == {"x": 1}
        assert t.user_attrs["hpod.ask"]["sampler"] == "random"
        assert t.user_attrs["hpod.info"]["energy_spent_joules"] == 3.0
    # The returned trials are what the database holds.
    for t in told:
        assert t.values == trials[t.number].values and t.state == trials[t.number].state
    events = store.events(study="thin", kinds=["trial_completed"])
    assert sorted(e.trial_number for e in events) == [j.trial_number for j in jobs]  # type: ignore[misc]
    summary = engine.summary(refresh=True)
    assert summary.finished == 4 and summary.running == 0


def test_a_result_told_before_a_crash_is_not_told_again(store: Store, tmp_path: Path) -> None:
    engine = _engine(store, tmp_path)
    (job,) = engine.ask(1)
    _finish_all(store, engine.name)
    assert len(engine.collect()) == 1
    # A crash between the tell and the told mark: the job reads as untold.
    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job.id).values(told=False))  # type: ignore[arg-type]
    resumed = _engine(store, tmp_path)
    assert resumed.collect() == []
    assert not store.jobs_to_tell(engine.name)
    assert len(store.events(study="thin", kinds=["trial_completed"])) == 1
    assert resumed.summary(refresh=True).finished == 1


def test_a_trial_with_nan_values_fails_as_optuna_tells_it(store: Store, tmp_path: Path) -> None:
    engine = _engine(store, tmp_path)
    (job,) = engine.ask(1)
    _finish_all(store, engine.name)
    # A NaN loss (the store's writers refuse NaN in JSON; a strategy's value may be one).
    nan = json.dumps({**RESULT, "metrics": {"loss": float("nan"), "time_seconds": 1.0}})
    with store.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job.id).values(result_json=nan))  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="nan is not acceptable"):  # Optuna's tell says so
        engine.collect()
    (t,) = engine.study.get_trials()
    assert t.state == optuna.trial.TrialState.FAIL
    assert not store.jobs_to_tell(engine.name)


def _heartbeat(store: Store, slots: int) -> None:
    store.heartbeat_worker("remote", slots=slots, state="idle", current=[])


def test_jobs_are_queued_ahead_for_remote_workers_only_while_trials_are_short(
        store: Store, tmp_path: Path) -> None:
    _heartbeat(store, 2)
    controller = Controller(store, tmp_path, executor=None)
    engine = controller.activate(parse_spec(SPEC))
    controller.step()
    # No trial has run yet: one job per idle slot.
    assert len(store.jobs(states=["queued"])) == 2
    _finish_all(store, engine.name)  # short trials: claimed and finished at once
    controller._last_collect = -float("inf")
    controller.step()
    # Both slots idle and short trials: a job for each slot and one more queued behind it.
    assert len(store.jobs(states=["queued"])) == 4
    assert engine.recent_run_seconds() is not None
    assert engine.recent_run_seconds() < QUEUE_AHEAD_BELOW_SECONDS  # type: ignore[operator]

    # Long trials (claimed long before their results): no queue ahead.
    long_store = Store(f"sqlite:///{tmp_path / 'long.db'}")
    _heartbeat(long_store, 2)
    long_controller = Controller(long_store, tmp_path, executor=None)
    long_engine = long_controller.activate(parse_spec(SPEC))
    long_controller.step()
    for _ in range(2):
        job = long_store.claim_job("w", lease_seconds=600, studies=[long_engine.name])
        assert job is not None
        with long_store.session() as s:
            s.execute(update(JobRow).where(JobRow.id == job.id)  # type: ignore[arg-type]
                      .values(claimed_at=time.time() - 10 * QUEUE_AHEAD_BELOW_SECONDS))
        assert long_store.finish_job(job.id, job.lease_token, result=RESULT)  # type: ignore[arg-type]
    long_controller._last_collect = -float("inf")
    long_controller.step()
    assert len(long_store.jobs(states=["queued"])) == 2
    long_store.close()
