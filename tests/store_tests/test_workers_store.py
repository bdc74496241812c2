"""The store's side of scale-out: atomic claims, lease fencing, outages (PostgreSQL and SQLite)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from hpod_pg import database_outage, fresh_database

from hpod.errors import StorageError, StorageUrlError
from hpod.store import StorageUnreachable, Store, retry_storage


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


def _queue(store: Store, n: int, study: str = "s") -> list[int]:
    return [store.create_job(study=study, trial_id=1000 + i, trial_number=i, params={"x": i}).id  # type: ignore[misc]
            for i in range(n)]


def test_concurrent_claimers_never_share_a_job(store_url: str) -> None:
    """Four processes' worth of stores (separate pools) race for 60 jobs: each job goes
    to exactly one claimer and none is left behind."""
    stores = [Store(store_url) for _ in range(4)]
    ids = _queue(stores[0], 60)
    claims: list[tuple[str, int]] = []
    lock = threading.Lock()

    def claimer(i: int) -> None:
        while True:
            job = stores[i].claim_job(f"w{i}", lease_seconds=30)
            if job is None:
                return
            with lock:
                claims.append((f"w{i}", job.id))  # type: ignore[arg-type]

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    counts = Counter(job_id for _, job_id in claims)
    assert sorted(counts) == sorted(ids)
    assert max(counts.values()) == 1
    rows = {j.id: j for j in stores[0].jobs()}
    assert all(rows[j].state == "running" and rows[j].worker == w for w, j in claims)
    assert len({rows[j].lease_token for j in ids}) == len(ids)
    for s in stores:
        s.close()


def test_a_worker_back_after_its_lease_expired_cannot_overwrite_the_rerun(store_url: str) -> None:
    store = Store(store_url)
    _queue(store, 1)
    stale = store.claim_job("slow-worker", lease_seconds=0.3)
    assert stale is not None
    time.sleep(0.5)
    lost = store.expire_leases()
    assert [j.id for j in lost] == [stale.id]
    assert store.jobs()[0].state == "lost" and store.jobs()[0].fail_reason == "worker_lost"
    # The configuration is re-queued as a new job and a healthy worker runs it.
    store.create_job(study="s", trial_id=2000, trial_number=1, params={"x": 0}, attempt=2)
    rerun = store.claim_job("healthy-worker", lease_seconds=30)
    assert rerun is not None and rerun.id != stale.id
    assert store.finish_job(rerun.id, rerun.lease_token, result={"metrics": {"loss": 1.0}})  # type: ignore[arg-type]
    # The slow worker comes back: its renewals and its result are refused.
    assert store.renew_leases("slow-worker", {stale.id: stale.lease_token}, lease_seconds=30) == set()  # type: ignore[dict-item]
    assert not store.finish_job(stale.id, stale.lease_token, result={"metrics": {"loss": 99.0}})  # type: ignore[arg-type]
    by_id = {j.id: j for j in store.jobs()}
    assert by_id[stale.id].state == "lost" and by_id[stale.id].result_json is None
    assert by_id[rerun.id].state == "done" and '"loss": 1.0' in (by_id[rerun.id].result_json or "")


def test_renewed_lease_does_not_expire_and_a_retried_finish_is_accepted(store_url: str) -> None:
    store = Store(store_url)
    _queue(store, 1)
    job = store.claim_job("w", lease_seconds=1.0)
    assert job is not None
    for _ in range(3):
        time.sleep(0.4)
        assert store.renew_leases("w", {job.id: job.lease_token}, lease_seconds=1.0) == {job.id}  # type: ignore[dict-item]
        assert store.expire_leases() == []
    result = {"metrics": {"loss": 0.5}}
    assert store.finish_job(job.id, job.lease_token, result=result)  # type: ignore[arg-type]
    # The acknowledgement was lost and the worker stores the same outcome again.
    assert store.finish_job(job.id, job.lease_token, result=result)  # type: ignore[arg-type]
    assert store.jobs()[0].state == "done"


@pytest.mark.parametrize("returning", [True, False], ids=["update-returning", "select-then-update"])
def test_claims_take_the_highest_priority_then_the_oldest_job(store_url: str, returning: bool) -> None:
    """One statement (UPDATE ... RETURNING) where the database has it, a select and a
    fenced update where it does not (SQLite before 3.35): the same order and fence."""
    store = Store(store_url)
    store.engine.dialect.update_returning = returning and store.engine.dialect.update_returning
    for i, priority in enumerate([0, 5, 0, 5]):
        store.create_job(study="s", trial_id=100 + i, trial_number=i, params={"x": i}, priority=priority)
    claimed = []
    while (job := store.claim_job("w", lease_seconds=30, exclude_studies=["other"])) is not None:
        assert job.state == "running" and job.worker == "w" and job.lease_token and job.lease_expires_at
        claimed.append(job.trial_number)
    assert claimed == [1, 3, 0, 2]
    assert {j.state for j in store.jobs()} == {"running"}
    store.close()


def test_claim_respects_the_study_filter(store_url: str) -> None:
    store = Store(store_url)
    _queue(store, 2, study="a")
    store.create_job(study="b", trial_id=5000, trial_number=0, params={"x": 9})
    assert store.queued_studies() == {"a", "b"}
    assert store.claim_job("w", lease_seconds=5, studies=[]) is None
    job = store.claim_job("w", lease_seconds=5, studies=["b"])
    assert job is not None and job.study == "b"
    assert store.claim_job("w", lease_seconds=5, studies=["b"]) is None
    assert store.queued_studies() == {"a"}


@pytest.mark.postgres
def test_an_outage_raises_storage_error_and_the_pool_recovers(pg_url: str) -> None:
    store = Store(pg_url, application_name="hpod-test-outage")
    _queue(store, 2)
    assert store.claim_job("w", lease_seconds=30) is not None
    with database_outage(pg_url):
        with pytest.raises(StorageError):
            store.claim_job("w", lease_seconds=30)
        with pytest.raises(StorageError):
            store.heartbeat_worker("w", slots=1, state="idle", current=[])
    # The dead pooled connections are replaced on the next checkout.
    job = store.claim_job("w", lease_seconds=30)
    assert job is not None and job.state == "running"


@pytest.mark.postgres
def test_retry_storage_waits_out_an_outage(pg_url: str) -> None:
    store = Store(pg_url, application_name="hpod-test-retry")
    _queue(store, 1)
    outage = database_outage(pg_url)
    outage.__enter__()
    timer = threading.Timer(1.5, outage.__exit__, args=(None, None, None))
    timer.start()
    started = time.monotonic()
    try:
        job = retry_storage(lambda: store.claim_job("w", lease_seconds=30), what="claim", deadline_seconds=30,
                            initial_delay=0.2, max_delay=0.5)
    finally:
        timer.join()
    assert job is not None
    assert time.monotonic() - started >= 1.0


def test_retry_storage_gives_up_at_its_deadline_and_lets_other_errors_through() -> None:
    calls = []

    def down() -> None:
        calls.append(1)
        raise StorageError("database unavailable: connection refused")

    with pytest.raises(StorageError):
        retry_storage(down, what="probe", deadline_seconds=0.5, initial_delay=0.1, max_delay=0.2)
    assert len(calls) >= 2

    def broken() -> None:
        raise KeyError("not an outage")

    with pytest.raises(KeyError):
        retry_storage(broken, what="probe", deadline_seconds=5)


def test_unreachable_server_is_a_usage_error_for_commands_and_transient_for_workers() -> None:
    with pytest.raises(StorageUnreachable) as info:
        Store("postgresql+psycopg://postgres@127.0.0.1:1/nothing", connect_timeout=2)
    assert isinstance(info.value, StorageUrlError) and isinstance(info.value, StorageError)
    assert "127.0.0.1" in str(info.value) and "refused" in str(info.value).lower()


@pytest.mark.postgres
def test_worker_store_waits_for_the_controller_to_create_tables(pg_url: str) -> None:
    with pytest.raises(StorageUnreachable, match="no hpod tables yet"):
        Store(pg_url, create=False)
    Store(pg_url).close()
    store = Store(pg_url, create=False)
    assert store.queued_studies() == set()


def test_workers_by_state_counts_a_silent_worker_as_lost(store_url: str) -> None:
    store = Store(store_url)
    store.heartbeat_worker("alive", slots=2, state="busy", current=[{"study": "s", "trial": 3}])
    store.heartbeat_worker("silent", slots=1, state="idle", current=[])
    assert store.workers_by_state(stale_after=30) == {"busy": 1, "idle": 1}
    time.sleep(0.3)
    store.heartbeat_worker("alive", slots=2, state="busy", current=[])
    assert store.workers_by_state(stale_after=0.2) == {"busy": 1, "lost": 1}


def test_a_silent_worker_is_marked_lost_with_an_event(tmp_path: Path) -> None:
    store = Store.for_state_dir(tmp_path)
    store.heartbeat_worker("node9:123", slots=2, state="busy", current=[{"study": "s", "trial": 1}])
    store.heartbeat_worker("self:1", slots=1, state="idle", current=[])
    time.sleep(0.05)
    assert store.mark_workers_lost(older_than=0.01, exclude="self:1") == ["node9:123"]
    states = {w.name: w.state for w in store.workers()}
    assert states["node9:123"] == "lost" and states["self:1"] == "idle"
    event = store.events(kinds=["worker_lost"])[-1]
    assert json.loads(event.payload_json)["worker"] == "node9:123"
    assert store.mark_workers_lost(older_than=0.01, exclude="self:1") == []  # once
