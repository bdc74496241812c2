"""The worker loop: preparing objectives, the --studies filter, its row in hpod_workers,
SIGTERM (finish or hand back), sd_notify, and batch asks for idle remote slots."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hpod_testing import cli_env, hpod_bin, wait_for

from hpod.core.controller import Controller
from hpod.core.engine import Engine
from hpod.daemon.worker import Worker
from hpod.execution.executor import parse_slots
from hpod.spec import parse_spec
from hpod.store import Store


def _spec(name: str, *, n_trials: int = 4, seconds: float = 0.0, sampler: str = "random",
          options: dict[str, Any] | None = None) -> Any:
    return parse_spec({
        "name": name,
        "objective": {"name": "hpod_worker_objectives:NeedsPrepare", "params": {"seconds": seconds}},
        "objectives": [{"name": "loss"}],
        "sampler": {"name": sampler, "seed": 1, "options": options or {}},
        "budget": {"n_trials": n_trials},
    })


def _queue(store: Store, state_dir: Path, spec: Any, n: int) -> Engine:
    engine = Engine(store, spec, state_dir=state_dir)
    engine.start()
    engine.ask(n)
    return engine


def _run_until(worker: Worker, condition: Any, timeout: float = 60) -> threading.Thread:
    thread = threading.Thread(target=worker.run, kwargs={"install_signal_handlers": False})
    thread.start()
    def alive() -> None:
        assert thread.is_alive(), "worker loop ended early"

    try:
        wait_for(condition, timeout, "the worker's state", interval=0.1, between=alive)
    finally:
        worker.request_stop()
        thread.join(60)
    return thread


def test_worker_prepares_objective_before_first_trial_and_obeys_studies_filter(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    mine = _queue(store, tmp_path / "ctl", _spec("mine"), 3)
    _queue(store, tmp_path / "ctl", _spec("other"), 2)
    worker = Worker(store, tmp_path / "w", slots=parse_slots(None, 1), name="w-filter", studies=["mine"],
                    poll_seconds=0.05, heartbeat_seconds=0.5, lease_seconds=5, codecarbon=False)
    _run_until(worker, lambda: len(store.jobs("mine", states=["done", "failed"])) == 3)
    assert (tmp_path / "w" / "cache" / "prepared.marker").exists()
    assert [j.state for j in store.jobs("mine")] == ["done"] * 3, [j.fail_reason for j in store.jobs("mine")]
    assert [j.state for j in store.jobs("other")] == ["queued"] * 2
    mine.collect()
    assert mine.summary(refresh=True).counts == {"COMPLETE": 3}
    row = {w.name: w for w in store.workers()}["w-filter"]
    assert row.state == "stopped" and row.studies == "mine" and row.slots == 1
    assert [e.kind for e in store.events(kinds=["worker_joined"])] == ["worker_joined"]


def test_worker_row_shows_current_trials_while_busy(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    _queue(store, tmp_path / "ctl", _spec("busy", seconds=3.0), 2)
    worker = Worker(store, tmp_path / "w", slots=parse_slots(None, 2), name="w-busy", poll_seconds=0.05,
                    heartbeat_seconds=0.3, lease_seconds=5, codecarbon=False)
    seen: list[Any] = []

    def busy_row() -> bool:
        row = {w.name: w for w in store.workers()}.get("w-busy")
        if row is not None and row.state == "busy" and len(json.loads(row.current_json)) == 2:
            seen.append(row)
            return True
        return False

    _run_until(worker, busy_row)
    current = json.loads(seen[0].current_json)
    assert {c["study"] for c in current} == {"busy"} and {c["slot"] for c in current} == {"cpu0", "cpu1"}
    assert seen[0].node and seen[0].slots == 2
    # Stopped with grace: both trials finished rather than being handed back.
    assert [j.state for j in store.jobs("busy")] == ["done", "done"]


def test_a_finished_trials_slot_is_refilled_in_the_same_step(tmp_path: Path) -> None:
    """With jobs queued, the step that stores a trial's result also claims the next job
    into its slot: no poll interval (here a minute) between trials."""
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    _queue(store, tmp_path / "ctl", _spec("refill"), 2)
    worker = Worker(store, tmp_path / "w", slots=parse_slots(None, 1), name="w-refill", poll_seconds=60,
                    heartbeat_seconds=0.5, lease_seconds=5, codecarbon=False)
    worker._heartbeat(force=True)
    wait_for(worker._step, 60, "the first claim (after the objective is prepared)", interval=0.05)
    (first,) = worker.executor.running.values()
    wait_for(lambda: not first.process.is_alive(), 60, "the first trial's exit", interval=0.05)
    worker._step()
    states = {j.id: j.state for j in store.jobs("refill")}
    assert states[first.job.id] == "done"
    assert sorted(states.values()) == ["done", "running"] and len(worker.executor.running) == 1
    worker.request_stop()
    worker.run(install_signal_handlers=False)  # drains the second trial
    assert [j.state for j in store.jobs("refill")] == ["done", "done"]


def test_a_trial_costs_the_worker_a_claim_an_event_and_a_finish(tmp_path: Path) -> None:
    """The statements a worker sends per trial on the thin path: one claim (UPDATE ...
    RETURNING) with the trial_started event in its transaction, and one finish. Its own
    row is written every heartbeat, not per trial."""
    from sqlalchemy import event

    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    n = 8
    _queue(store, tmp_path / "ctl", _spec("count", n_trials=n), n)
    own = Store(store.url, create=False)  # the worker's pool: only its statements are counted
    worker = Worker(own, tmp_path / "w", slots=parse_slots(None, 1), name="w-count", poll_seconds=0.05,
                    heartbeat_seconds=600, lease_seconds=1200, codecarbon=False)
    statements: list[str] = []

    @event.listens_for(own.engine, "before_cursor_execute")
    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    @event.listens_for(own.engine, "commit")
    def commit(conn: Any) -> None:
        statements.append("COMMIT")

    def done() -> bool:
        return len(store.jobs("count", states=["done"])) == n

    def step() -> None:
        if not worker._step():
            worker.executor.wait(0.05)

    statements.clear()
    wait_for(done, 120, "the worker to run every job", interval=0, between=step)
    kinds = Counter(statements)
    jobs_written = sum(v for k, v in kinds.items() if k.startswith("UPDATE hpod_jobs"))
    assert 2 * n <= jobs_written <= 2 * n + 1, kinds  # a claim and a finish each (+ one empty claim at the end)
    assert not [k for k in kinds if k.startswith("SELECT hpod_jobs.id")], kinds  # the claim is one statement
    assert kinds["INSERT INTO hpod_events"] == n + 1, kinds  # trial_started each, worker_joined once
    claims_with_event = [i for i, st in enumerate(statements)
                         if st == "INSERT INTO hpod_events" and statements[i - 1].startswith("UPDATE hpod_jobs")]
    # Each trial_started rides in its claim's transaction, but the first: the study's spec is
    # read (and cached) when its first trial starts.
    assert len(claims_with_event) == n - 1, statements
    row_writes = sum(v for k, v in kinds.items() if "hpod_workers" in k)
    assert row_writes <= 4, kinds  # joined (a read and an insert), then one heartbeat a 600 s


def test_a_worker_starts_its_fork_server_before_any_job(tmp_path: Path) -> None:
    """The trial fork server (hpod's trial code imported) runs as soon as the worker does:
    the first trial forks from it instead of waiting for an interpreter to start."""
    url = f"sqlite:///{tmp_path / 'hpod.db'}"
    Store(url).close()
    proc = subprocess.Popen([hpod_bin(), "worker", "--storage", url, "--name", "w-warm", "--state-dir",
                             str(tmp_path / "w"), "--no-codecarbon"], env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def cmdline(pid: str) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:  # the child ended meanwhile
            return ""

    def fork_server() -> bool:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        return any("forkserver" in cmdline(c) for c in children)

    def alive() -> None:
        assert proc.poll() is None, "the worker exited"

    try:
        wait_for(fork_server, 120, "the worker's fork server", interval=0.1, between=alive)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert Store(url).jobs() == []  # no job was there to start it


def _notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def _read_all(sock: socket.socket) -> str:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except TimeoutError:
            return "\n".join(out)


@pytest.mark.parametrize("grace", [30.0, 0.0])
def test_sigterm_finishes_or_hands_back_running_trials_and_exits_zero(tmp_path: Path, grace: float) -> None:
    url = f"sqlite:///{tmp_path / 'hpod.db'}"
    store = Store(url)
    _queue(store, tmp_path / "ctl", _spec("term", seconds=2.5), 1)
    sock, path = _notify_socket(tmp_path)
    env = cli_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([hpod_bin(), "worker", "--storage", url, "--name", "w-term", "--state-dir",
                             str(tmp_path / "w"), "--poll-seconds", "0.05", "--grace-seconds", str(grace),
                             "--no-codecarbon"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        def alive() -> None:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""

        wait_for(lambda: store.jobs("term", states=["running"]), 60, "a running trial", interval=0.05,
                 between=alive)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output
    job = store.jobs("term")[0]
    if grace:
        assert job.state == "done", output
    else:
        assert (job.state, job.fail_reason) == ("lost", "shutdown"), output
    notes = _read_all(sock)
    assert "READY=1" in notes and "WATCHDOG=1" in notes and "STOPPING=1" in notes
    assert {w.name: w.state for w in store.workers()} == {"w-term": "stopped"}


def test_worker_command_rejects_bad_arguments(tmp_path: Path) -> None:
    base = [hpod_bin(), "worker", "--state-dir", str(tmp_path)]
    env = {k: v for k, v in cli_env().items() if k != "HPOD_STORAGE"}
    res = subprocess.run(base, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--storage" in res.stderr
    args = [*base, "--storage", f"sqlite:///{tmp_path}/x.db", "--lease-seconds", "2", "--heartbeat-seconds", "3"]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--heartbeat-seconds" in res.stderr and "2" in res.stderr


@pytest.mark.parametrize("sampler", ["tpe", "gp"])
def test_controller_asks_one_distinct_configuration_per_idle_remote_slot(tmp_path: Path, sampler: str) -> None:
    """With k idle remote workers the controller queues k configurations at once, and a
    model-based sampler (past its start-up trials) makes them k different points."""
    store = Store(f"sqlite:///{tmp_path / 'hpod.db'}")
    k = 4
    for i in range(k):
        store.heartbeat_worker(f"remote{i}", slots=1, state="idle", current=[])
    controller = Controller(store, tmp_path / "ctl", executor=None)
    spec = _spec(f"batch-{sampler}", n_trials=40, sampler=sampler, options={"n_startup_trials": 4})
    engine = controller.activate(spec)
    assert engine.parallelism >= k  # the sampler is told about the concurrent trials
    for round_ in range(3):
        for i in range(k):  # the idle workers keep heartbeating (a GP round can outlast the stale limit)
            store.heartbeat_worker(f"remote{i}", slots=1, state="idle", current=[])
        controller.step()
        queued = store.jobs(spec.name, states=["queued"])
        assert len(queued) == k, f"round {round_}: {len(queued)} queued"
        params = [json.loads(j.params_json)["x"] for j in queued]
        assert len(set(params)) == k and max(params) - min(params) > 1e-3, params
        for _ in range(k):  # the remote workers run them
            job = store.claim_job("remote", lease_seconds=30)
            assert job is not None
            x = json.loads(job.params_json)["x"]
            store.finish_job(job.id, job.lease_token, result={"metrics": {"loss": (x - 0.3) ** 2}})  # type: ignore[arg-type]
        controller.step(start_new=False)
    assert engine.summary(refresh=True).counts.get("COMPLETE") == 3 * k


def test_status_lists_workers_with_node_slots_trials_and_lost_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hpod.db'}"
    store = Store(url)
    store.heartbeat_worker("gpu-node-1", slots=2, state="busy", gpus="0,1",
                           current=[{"study": "s", "trial": 7, "slot": "gpu0"}])
    store.heartbeat_worker("gone", slots=1, state="idle", current=[])
    from sqlalchemy import update

    from hpod.store import WorkerRow

    with store.session() as s:  # its last heartbeat was a minute ago
        s.execute(update(WorkerRow).where(WorkerRow.name == "gone").values(last_heartbeat=time.time() - 60))
    res = subprocess.run([hpod_bin(), "status", "--json", "--storage", url], env=cli_env(), capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    workers = {w["name"]: w for w in json.loads(res.stdout)["workers"]}
    assert workers["gpu-node-1"]["state"] == "busy" and workers["gpu-node-1"]["slots"] == 2
    assert workers["gpu-node-1"]["gpus"] == "0,1" and workers["gpu-node-1"]["current"][0]["trial"] == 7
    assert workers["gone"]["state"] == "lost"
    table = subprocess.run([hpod_bin(), "status", "--storage", url], env=cli_env(), capture_output=True, text=True,
                           timeout=60)
    assert "gpu-node-1" in table.stdout and "s#7" in table.stdout


@pytest.mark.postgres
def test_idle_workers_woken_by_one_queued_job_do_not_all_claim_it(tmp_path: Path) -> None:
    """Four idle PostgreSQL workers, jobs queued one at a time (each wakes all four): the
    first claim is announced and the others leave the job. Before, every idle worker
    claimed each job, three of four claims finding nothing; counted, not timed."""
    from hpod_pg import fresh_database

    n = 10
    with fresh_database() as url:
        store = Store(url)
        engine = Engine(store, _spec("spread", n_trials=n + 1), state_dir=tmp_path / "ctl")
        engine.start()
        # Heartbeats (and the claims due at each, for jobs no notice announced) far apart:
        # every claim counted here answers a notice.
        workers = [Worker(Store(url, pool_size=2, create=False), tmp_path / f"w{i}", slots=parse_slots(None, 1),
                          name=f"w{i}", poll_seconds=60, heartbeat_seconds=60, lease_seconds=120, codecarbon=False)
                   for i in range(4)]
        for worker in workers:
            worker.preparer.request("spread")
        wait_for(lambda: all("spread" in w.preparer.ready for w in workers), 60, "the objective prepared")
        threads = [threading.Thread(target=w.run, kwargs={"install_signal_handlers": False}) for w in workers]
        for thread in threads:
            thread.start()

        def done(k: int) -> bool:
            idle = not any(w.executor.running or w.executor._pending_results for w in workers)
            return idle and len(store.jobs("spread", states=["done"])) == k

        try:
            engine.ask(1)
            wait_for(lambda: done(1), 60, "the first job")
            wait_for(lambda: all(w._listener is not None for w in workers), 60, "the workers listening")
            before = sum(w.executor.empty_claims for w in workers)
            for k in range(2, n + 2):
                engine.ask(1)
                wait_for(lambda k=k: done(k), 60, f"job {k}")  # type: ignore[misc]
            wasted = sum(w.executor.empty_claims for w in workers) - before
        finally:
            for worker in workers:
                worker.request_stop()
            for thread in threads:
                thread.join(60)
        assert sorted(j.state for j in store.jobs("spread")) == ["done"] * (n + 1)
        assert wasted < 2 * n, f"{wasted} claims found nothing for {n} jobs (3 per job before)"


@pytest.mark.postgres
def test_jobs_queued_before_a_worker_listened_are_run_back_to_back(tmp_path: Path) -> None:
    """Jobs queued before the worker listened were never announced to it: it still claims
    the next one as each trial ends, not a heartbeat (here a minute) later."""
    from hpod_pg import fresh_database

    n = 3
    with fresh_database() as url:
        store = Store(url)
        _queue(store, tmp_path / "ctl", _spec("backlog", n_trials=n), n)
        worker = Worker(Store(url, pool_size=2, create=False), tmp_path / "w", slots=parse_slots(None, 1),
                        name="w-backlog", poll_seconds=60, heartbeat_seconds=60, lease_seconds=120, codecarbon=False)
        worker._heartbeat(force=True)
        worker._listener = worker.store.job_listener(own_claims=worker.name)
        assert worker._listener is not None and worker._listener.queued == 0

        def step() -> None:
            if not worker._step():
                worker._wait(0.05)

        try:
            wait_for(lambda: len(store.jobs("backlog", states=["done"])) == n, 50, "every queued job run",
                     interval=0, between=step)
        finally:
            worker.request_stop()
            worker.run(install_signal_handlers=False)
        assert worker.executor.claims == n + 1  # the first, one as each trial ended, and the one that found none
