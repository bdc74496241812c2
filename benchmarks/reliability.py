"""Reliability under abuse: kills, interrupts, fuzzing and malformed input.

Run: ``python -m benchmarks.reliability [--quick]``; writes
benchmarks/results/reliability.json and .md (``--quick``: benchmarks/results/quick/).
The worker section needs PostgreSQL on 127.0.0.1:5432 (trust auth, as in the tests);
without it that section is recorded as skipped.

Sections (each real processes, as a user or an operator would run them):

- ``daemon_kills``: ``hpod daemon`` (2 CPU slots, two seeded studies: tpe and NSGA-II)
  is SIGKILLed with its trial processes (the whole process group, as a node crash would)
  after each bit of progress, and restarted; then it runs the studies to the end.
- ``worker_kills``: a controller (``hpod run --cpu-slots 0``) and two ``hpod worker``
  processes on PostgreSQL; a worker holding a trial is SIGKILLed and restarted.
- ``interrupts``: ``hpod run`` is interrupted with SIGINT (to its process group, as
  Ctrl-C does) after each bit of progress and run again, for tpe, random, nsga2 and auto.
- ``fuzz``: schemathesis generates requests from the daemon's OpenAPI schema (with the
  token) and checks every answer against it; plus requests without a token.
- ``malformed``: malformed specs and malformed data files through ``hpod run`` and
  through ``POST /v1/studies``.

Checked after every kill/interrupt section, against snapshots taken before each kill:
completed trials lost or changed, trials left RUNNING, completed != budget, and
configurations evaluated twice (same parameters; the seeds are the study's).
For malformed input: tracebacks, rows or files written, and whether the message names
the field (the check is that the expected field path appears in the message).
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import contextlib
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from benchmarks._machine import describe_machine

RESULTS = Path(__file__).resolve().parent / "results"
PG_ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
HPOD = str(Path(sys.executable).with_name("hpod"))


# ---------------------------------------------------------------------------- processes
def _env(state_dir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPOD_")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HPOD_API="127.0.0.1:1")
    if state_dir is not None:
        env["HPOD_STATE_DIR"] = str(state_dir)
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _killpg(proc: subprocess.Popen[Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


class Daemon:
    """One ``hpod daemon`` in its own process group, on a fixed state directory."""

    def __init__(self, state_dir: Path, logs: Path, *, cpu_slots: int, env: dict[str, str] | None = None):
        self.state_dir, self.logs, self.cpu_slots = state_dir, logs, cpu_slots
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.port = 0

    def start(self) -> Daemon:
        self.port = _free_port()
        self.starts += 1
        log = (self.logs / f"daemon-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [HPOD, "daemon", "--state-dir", str(self.state_dir), "--api", f"127.0.0.1:{self.port}",
             "--metrics", "off", "--cpu-slots", str(self.cpu_slots), "--no-codecarbon", "--grace-seconds", "2"],
            stdout=log, stderr=subprocess.STDOUT, env=_env(**self.extra_env), start_new_session=True)
        _wait(self.healthy, 180, "the daemon to answer /healthz")
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.state_dir / "token").read_text().strip()

    def request(self, method: str, path: str, body: Any = None, *, token: bool = True,
                raw: bytes | None = None) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                status, text, headers = resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            status, text, headers = exc.code, exc.read().decode(), dict(exc.headers)
        try:
            return status, json.loads(text), headers
        except ValueError:
            return status, text, headers

    def kill9(self) -> None:
        assert self.proc is not None
        _killpg(self.proc, signal.SIGKILL)
        self.proc.wait(60)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(90)
        except subprocess.TimeoutExpired:
            _killpg(self.proc, signal.SIGKILL)
            self.proc.wait(30)
        _killpg(self.proc, signal.SIGKILL)  # trial processes it left, if any

    def log_tail(self) -> str:
        path = self.logs / f"daemon-{self.starts}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def tracebacks(self) -> int:
        return sum(p.read_text(errors="replace").count("Traceback") for p in self.logs.glob("daemon-*.log"))


# ---------------------------------------------------------------------------- checking studies
def _configuration_key(params: dict[str, Any]) -> str:
    from hpod.core.engine import configuration_key

    return configuration_key(params)


def _trials(url: str, study: str) -> list[Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    except Exception:  # the database is being created (tables not there yet)
        return []
    try:
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []
    finally:
        storage.engine.dispose()


def _completed(url: str, study: str) -> dict[int, list[float]]:
    return {t.number: list(t.values) for t in _trials(url, study)
            if t.state.name == "COMPLETE" and t.values is not None}


class Ledger:
    """Snapshots of completed trials before each kill, and the final check."""

    def __init__(self, url: str, studies: dict[str, int]):
        self.url, self.studies = url, studies
        self.seen: dict[str, dict[int, list[float]]] = {s: {} for s in studies}

    def snapshot(self) -> int:
        total = 0
        for study in self.studies:
            done = _completed(self.url, study)
            self.seen[study].update(done)
            total += len(done)
        return total

    def check(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lost": 0, "left_running": 0, "completed_vs_budget_mismatches": 0,
                               "duplicate_evaluations": 0, "rejected_repeats": 0, "studies": {}}
        for study, budget in self.studies.items():
            trials = _trials(self.url, study)
            now = {t.number: list(t.values) for t in trials if t.state.name == "COMPLETE" and t.values is not None}
            lost = sum(1 for n, v in self.seen[study].items() if now.get(n) != v)
            running = sum(1 for t in trials if t.state.name == "RUNNING")
            rejected = sum(1 for t in trials if t.user_attrs.get("hpod.rejected") is not None)
            evaluated = [t for t in trials if t.user_attrs.get("hpod.rejected") is None
                         and t.state.name in ("COMPLETE", "PRUNED", "RUNNING")]
            counts = collections.Counter(_configuration_key(dict(t.params)) for t in evaluated)
            repeats = sum(n - 1 for n in counts.values())
            out["lost"] += lost
            out["left_running"] += running
            out["completed_vs_budget_mismatches"] += int(len(now) != budget)
            out["duplicate_evaluations"] += repeats
            out["rejected_repeats"] += rejected
            out["studies"][study] = {"budget": budget, "completed": len(now), "lost": lost, "running": running,
                                     "repeats": repeats, "rejected_repeats": rejected,
                                     "infra_failures": sum(1 for t in trials if t.state.name == "FAIL"
                                                           and t.user_attrs.get("hpod.rejected") is None)}
        return out


def _study_spec(name: str, sampler: str, n_trials: int, *, sleep: float, seed: int = 3,
                options: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "objective": {"name": "synthetic:training_cost", "params": {"sleep_seconds": sleep}},
        "space": {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
                  "batch_size": [8, 16, 32], "epochs": {"type": "int", "low": 2, "high": 4},
                  "dropout": {"type": "float", "low": 0.1, "high": 0.6, "step": 0.1},
                  "rank": [4, 8, 16], "alpha": [16, 32, 64]},
        "objectives": [{"name": "loss"}, {"name": "time_seconds"}, {"name": "energy_joules"}],
        "sampler": {"name": sampler, "seed": seed, **({"options": options} if options else {})},
        "budget": {"n_trials": n_trials, "trial_timeout_seconds": 300},
    }


# ---------------------------------------------------------------------------- daemon kills
def daemon_kills(tmp: Path, kills: int, n_trials: int) -> dict[str, Any]:
    state = tmp / "daemon-kills"
    logs = tmp / "daemon-kills-logs"
    logs.mkdir(parents=True)
    specs = [_study_spec("kill-tpe", "tpe", n_trials, sleep=1.0),
             _study_spec("kill-nsga2", "nsga2", n_trials, sleep=1.0, options={"population_size": 6})]
    daemon = Daemon(state, logs, cpu_slots=2).start()
    for spec in specs:
        status, body, _ = daemon.request("POST", "/v1/studies", {"spec": spec})
        if status != 202:
            raise RuntimeError(f"submitting {spec['name']}: {status} {body}")
    url = f"sqlite:///{state / 'hpod.db'}"
    ledger = Ledger(url, {s["name"]: n_trials for s in specs})
    rng = random.Random(14)
    done_kills = 0
    try:
        for _ in range(kills):
            before = ledger.snapshot()
            budget = sum(ledger.studies.values())
            with contextlib.suppress(TimeoutError):  # kill after progress (or anyway once all is done)
                _wait(lambda b=before, total=budget: ledger.snapshot() > b or b >= total, 120, "progress")
            time.sleep(rng.uniform(0.0, 1.0))
            ledger.snapshot()
            daemon.kill9()
            done_kills += 1
            daemon.start()
        _wait(lambda: all(_state(daemon, s["name"]) == "completed" for s in specs), 900, "both studies to complete")
    finally:
        daemon.stop()
    return {"kills": done_kills, "restarts": daemon.starts - 1, "tracebacks": daemon.tracebacks(), **ledger.check()}


def _state(daemon: Daemon, study: str) -> str | None:
    status, body, _ = daemon.request("GET", f"/v1/studies/{study}")
    return body.get("state") if status == 200 and isinstance(body, dict) else None


# ---------------------------------------------------------------------------- worker kills
@contextlib.contextmanager
def _pg_database() -> Iterator[str | None]:
    try:
        import psycopg

        name = f"hpod_rel_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception:
        yield None
        return
    try:
        yield f"{PG_URL}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def worker_kills(tmp: Path, kills: int, n_trials: int) -> dict[str, Any]:
    with _pg_database() as url:
        if url is None:
            return {"skipped": "PostgreSQL on 127.0.0.1:5432 is not reachable", "kills": 0}
        from hpod.store import Store

        spec_path = tmp / "worker-kills.json"
        spec = _study_spec("workers-random", "random", n_trials, sleep=3.0)
        spec_path.write_text(json.dumps(spec))
        logs = tmp / "worker-kills-logs"
        logs.mkdir()
        env = _env(tmp / "controller-state")
        controller = subprocess.Popen([HPOD, "run", str(spec_path), "--storage", url, "--cpu-slots", "0"],
                                      stdout=(logs / "controller.log").open("wb"), stderr=subprocess.STDOUT,
                                      env=env, start_new_session=True)
        workers: dict[str, subprocess.Popen[bytes]] = {}
        starts = collections.Counter[str]()

        def start_worker(name: str) -> None:
            starts[name] += 1
            workers[name] = subprocess.Popen(
                [HPOD, "worker", "--storage", url, "--name", name, "--lease-seconds", "3", "--cpu-slots", "1",
                 "--no-codecarbon"],
                stdout=(logs / f"{name}-{starts[name]}.log").open("wb"), stderr=subprocess.STDOUT,
                env=_env(tmp / f"{name}-state"), start_new_session=True)

        ledger = Ledger(url, {spec["name"]: n_trials})
        done = 0
        try:
            _wait(lambda: _has_study(url, spec["name"]), 180, "the controller to register the study")
            for name in ("w0", "w1"):
                start_worker(name)
            store = Store(url, create=False)
            rng = random.Random(5)
            try:
                for i in range(kills):
                    victim = f"w{i % 2}"
                    try:
                        _wait(lambda v=victim: controller.poll() is not None or any(
                            j.worker == v for j in store.jobs(spec["name"], states=["running"])),
                              300, f"{victim} to hold a trial")
                    except TimeoutError:
                        break
                    if controller.poll() is not None:
                        break  # the study is complete: no trial left to kill a worker on
                    time.sleep(rng.uniform(0.0, 0.3))
                    ledger.snapshot()
                    _killpg(workers[victim], signal.SIGKILL)
                    workers[victim].wait(60)
                    done += 1
                    start_worker(victim)
            finally:
                store.close()
            controller.wait(900)
        finally:
            for proc in (controller, *workers.values()):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(60)
                _killpg(proc, signal.SIGKILL)
        tracebacks = sum(p.read_text(errors="replace").count("Traceback") for p in logs.glob("*.log"))
        return {"kills": done, "controller_exit": controller.returncode, "tracebacks": tracebacks, **ledger.check()}


def _has_study(url: str, study: str) -> bool:
    try:
        return bool(_trials(url, study)) or _registered(url, study)
    except Exception:
        return False


def _registered(url: str, study: str) -> bool:
    from hpod.store import Store

    store = Store(url, create=False, light=True)
    try:
        return store.get_study(study, missing_ok=True) is not None
    finally:
        store.close()


# ---------------------------------------------------------------------------- Ctrl-C / resume
def _interrupt_one(tmp: Path, sampler: str, cycles: int, n_trials: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """``cycles`` Ctrl-Cs of ``hpod run`` while its study is unfinished (a run that finishes
    before the signal is not counted and is run again, up to 3 x ``cycles`` runs), then a
    final run to the end."""
    state = tmp / f"interrupt-{sampler}"
    spec_path = tmp / f"interrupt-{sampler}.json"
    name = f"ctrlc-{sampler}"
    spec_path.write_text(json.dumps(_study_spec(name, sampler, n_trials, sleep=1.5)))
    db = state / "hpod.db"
    ledger = Ledger(f"sqlite:///{db}", {name: n_trials})
    rng = random.Random(sampler)
    exits: list[int] = []
    tracebacks = 0
    interrupted = 0
    for _ in range(3 * cycles):
        if interrupted >= cycles:
            break
        before = ledger.snapshot() if db.exists() else 0
        proc = subprocess.Popen([HPOD, "run", str(spec_path), "--no-codecarbon"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_env(state), start_new_session=True)
        with contextlib.suppress(TimeoutError):
            _wait(lambda b=before, p=proc: p.poll() is not None or (db.exists() and ledger.snapshot() > b),
                  300, "progress")
        time.sleep(rng.uniform(0.0, 0.4))
        done_before_signal = ledger.snapshot() if db.exists() else 0
        mid_study = proc.poll() is None and done_before_signal < n_trials
        _killpg(proc, signal.SIGINT)  # Ctrl-C: the whole foreground process group
        _, err = proc.communicate(timeout=300)
        exits.append(proc.returncode)
        tracebacks += err.decode(errors="replace").count("Traceback")
        interrupted += int(mid_study and proc.returncode in (130, -signal.SIGINT))
    final = subprocess.run([HPOD, "run", str(spec_path), "--no-codecarbon"], capture_output=True,
                           env=_env(state), timeout=1800)
    tracebacks += final.stderr.decode(errors="replace").count("Traceback")
    check = ledger.check()
    row = {"cycles": interrupted, "runs": len(exits), "exit_codes": exits, "final_exit": final.returncode,
           "tracebacks": tracebacks, **check["studies"][name]}
    return row, check


def interrupts(tmp: Path, samplers: list[str], cycles: int, n_trials: int) -> dict[str, Any]:
    """Ctrl-C / resume cycles, one sampler per thread (the studies are independent)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(samplers)) as pool:
        futures = {s: pool.submit(_interrupt_one, tmp, s, cycles, n_trials) for s in samplers}
        results = {s: f.result() for s, f in futures.items()}
    per: dict[str, Any] = {}
    totals = collections.Counter[str]()
    for sampler, (row, check) in results.items():
        per[sampler] = row
        totals["resumes"] += row["cycles"]
        totals["tracebacks"] += row["tracebacks"]
        totals["bad_exits"] += sum(1 for e in row["exit_codes"] if e not in (130, -signal.SIGINT, 0)) \
            + int(row["final_exit"] != 0)
        for key in ("lost", "left_running", "completed_vs_budget_mismatches", "duplicate_evaluations",
                    "rejected_repeats"):
            totals[key] += check[key]
    return {"samplers": per, **totals}


# ---------------------------------------------------------------------------- fuzzing
#: Requests per operation and generation mode that schemathesis' checks validate in full
#: (response schema, status codes, content type, auth...); the rest are checked for 5xx.
_CHECKED_PER_OPERATION = 60

def fuzz(daemon: Daemon, max_examples: int, deadline_seconds: float) -> dict[str, Any]:
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck, Phase, settings
    from schemathesis import GenerationMode

    status, schema_doc, _ = daemon.request("GET", "/openapi.json")
    if status != 200:
        raise RuntimeError(f"GET /openapi.json: {status}")
    schema = schemathesis.openapi.from_dict(schema_doc)
    headers = {"Authorization": f"Bearer {daemon.token}"}
    codes = collections.Counter[int]()
    server_errors: list[str] = []
    nonconforming: collections.Counter[str] = collections.Counter()
    #: for schema-valid requests the server refused: the field its message names
    refused_valid: collections.Counter[str] = collections.Counter()
    refused_examples: dict[str, str] = {}
    examples: list[str] = []
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    plan = [(operation, mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            for operation in operations]
    validated = [0]
    #: operations schemathesis stopped generating for (schema constructs it cannot negate)
    generation_errors: dict[str, dict[str, Any]] = {}

    def fuzz_one(operation: Any, mode: Any) -> None:
        checked = [0]
        sent = [0]

        def run(case: Any) -> None:
            if time.monotonic() - started > deadline_seconds or sent[0] >= max_examples:
                return
            sent[0] += 1
            response = case.call(base_url=daemon.url, headers=headers, timeout=60)
            codes[response.status_code] += 1
            if response.status_code >= 500:
                server_errors.append(f"{case.method} {case.formatted_path} -> {response.status_code}")
            checked[0] += 1
            if checked[0] > _CHECKED_PER_OPERATION:
                return  # past the sample: status codes and 5xx only (the checks cost requests and CPU)
            validated[0] += 1
            try:
                case.validate_response(response, headers=headers)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' checks found a mismatch
                for failure in list(getattr(exc, "exceptions", None) or [exc]):
                    title = getattr(failure, "title", None) or type(failure).__name__
                    key = f"{case.method} {case.operation.path} ({mode.value}): {title}"
                    nonconforming[key] += 1
                    if mode == GenerationMode.POSITIVE and 400 <= response.status_code < 500:
                        field = _named_field(response)
                        refused_valid[field] += 1
                        if field not in refused_examples:
                            with contextlib.suppress(ValueError, AttributeError):
                                refused_examples[field] = str(response.json().get("error", ""))[:160]
                    if len(examples) < 10:
                        examples.append(f"{key} -> {response.status_code}: {str(failure).splitlines()[0][:200]}")

        # Seeded runs; schemathesis may stop an operation's generation at a draw it cannot
        # negate: that is recorded and the operation goes on with the next seed, up to
        # max_examples requests in all.
        for seed in range(5):
            test = settings(max_examples=max_examples, deadline=None, database=None,
                            phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))(
                hypothesis.seed(seed)(hypothesis.given(case=operation.as_strategy(generation_mode=mode))(run)))
            try:
                test()
                return
            except hypothesis.errors.Unsatisfiable:
                return  # no negative example exists for an operation without parameters or body
            except schemathesis.core.errors.UnsupportedSchema as exc:
                label = f"{operation.method.upper()} {operation.path} ({mode.value})"
                generation_errors[label] = {"stops": generation_errors.get(label, {}).get("stops", 0) + 1,
                                            "sent_before": sent[0], "reason": str(exc).splitlines()[0][:160]}

    per_operation: dict[str, dict[str, float]] = {}
    for operation, mode in plan:
        if time.monotonic() - started > deadline_seconds:
            break
        t0, n0 = time.monotonic(), sum(codes.values())
        fuzz_one(operation, mode)
        per_operation[f"{operation.method.upper()} {operation.path} ({mode.value})"] = {
            "requests": sum(codes.values()) - n0, "seconds": round(time.monotonic() - t0, 1)}
    # requests a schema-driven fuzzer does not send: no token, wrong token, garbage bodies
    extra = 0
    for path in ("/v1/status", "/v1/studies", "/v1/events", "/openapi.json"):
        for token in (False,):
            code, _, _ = daemon.request("GET", path, token=token)
            codes[code] += 1
            extra += 1
            if code >= 500:
                server_errors.append(f"GET {path} (no token) -> {code}")
    for raw in (b"{", b"[]", b'{"spec": 1}', b"\xff\xfe", b'{"spec": {"name": "x", "budget": NaN}}',
                b"null", b'{"spec": ' + b"[" * 500 + b"]" * 500 + b"}"):
        code, _, _ = daemon.request("POST", "/v1/studies", raw=raw)
        codes[code] += 1
        extra += 1
        if code >= 500:
            server_errors.append(f"POST /v1/studies {raw[:30]!r} -> {code}")
    return {"operations": len(operations), "requests": sum(codes.values()), "hand_written_requests": extra,
            "validated_against_the_schema": validated[0],
            "status_codes": {str(k): v for k, v in sorted(codes.items())}, "server_errors": len(server_errors),
            "server_error_examples": server_errors[:10], "schema_nonconforming": sum(nonconforming.values()),
            "schema_nonconforming_by_check": dict(nonconforming), "nonconforming_examples": examples,
            "schema_valid_refused_by_field": dict(refused_valid.most_common()),
            "schema_valid_refused_examples": refused_examples,
            "generation_errors": generation_errors, "per_operation": per_operation,
            "seconds": round(time.monotonic() - started, 1)}


def _named_field(response: Any) -> str:
    """The field an error answer names (``space.x.low: low (3) must be <= high``), or its status."""
    try:
        message = str(response.json().get("error", ""))
    except (ValueError, AttributeError):
        return f"{response.status_code} (no JSON error)"
    field, sep, _ = message.partition(": ")
    if not sep or " " in field or not field.isascii() or not field.isprintable():
        return f"{response.status_code}: {message[:60]}"
    # collapse the generated names (space.<name>, reference_point.<name>) to the rule
    parts = field.split(".")
    if parts[0] in ("space", "reference_point", "ideal_point", "objective") and len(parts) > 1:
        parts[1] = "<name>" if parts[0] != "objective" else parts[1]
    return f"{response.status_code} {'.'.join(parts[:3])}"


# ---------------------------------------------------------------------------- malformed input
_BASE: dict[str, Any] = {
    "name": "bad-input",
    "objective": {"name": "synthetic:training_cost"},
    "objectives": [{"name": "loss"}, {"name": "time_seconds"}],
    "sampler": {"name": "random", "seed": 1},
    "budget": {"n_trials": 2},
}
_DELETE = object()


def _mutate(path: str, value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(_BASE))
    node: Any = spec
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return spec


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"x": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


#: (mutation path, value, the field the message must name, paths it applies to)
MALFORMED_SPECS: list[tuple[str, Any, str, str]] = [
    ("name", "", "name", "both"),
    ("name", "bad name!", "name", "both"),
    ("name", 123, "name", "both"),
    ("name", "x" * 300, "name", "both"),
    ("objective", _DELETE, "objective", "both"),
    ("objective", "synthetic:training_cost", "objective", "both"),
    ("objective.name", "synthetic:nope", "objective.name", "both"),
    ("objective.name", "subprocess:Popen", "objective.name", "api"),
    ("objective.name", "os:system", "objective.name", "api"),
    ("objective.params", "x", "objective.params", "both"),
    ("objective.params.noise", -1, "objective.params.noise", "both"),
    ("objective.params.noise", math.nan, "objective.params.noise", "both"),
    ("objective.params.nois", 0.1, "objective.params.nois", "both"),
    ("objective.params.sleep_second", 1, "objective.params.sleep_second", "both"),
    ("objective.params.deep", _nested(40), "objective.params.deep", "both"),
    ("space", "x", "space", "both"),
    ("space.learning_rate", {"type": "float", "low": math.nan, "high": 1e-3}, "space.learning_rate", "both"),
    ("space.learning_rate", {"type": "float", "low": 1e-5, "high": math.inf}, "space.learning_rate", "both"),
    ("space.learning_rate", {"type": "float", "low": 1e-3, "high": 1e-5}, "space.learning_rate", "both"),
    ("space.learning_rate", {"type": "float", "low": 0, "high": 1e-3, "log": True}, "space.learning_rate", "both"),
    ("space.learning_rat", {"type": "float", "low": 1e-5, "high": 1e-3}, "space.learning_rat", "both"),
    ("space.dropout", {"type": "float", "low": 0.1, "high": 0.2, "step": 0.5}, "space.dropout", "both"),
    ("space.dropout", {"type": "float", "low": 0.1, "high": 0.6, "step": -0.1}, "space.dropout", "both"),
    ("space.dropout", math.nan, "space.dropout", "both"),
    ("space.dropout", "inf", "space.dropout", "both"),
    ("space.learning_rate", "1e-4", "space.learning_rate", "both"),
    ("space.batch_size", [8, "sixteen"], "space.batch_size.choices[1]", "both"),
    ("space.learning_rate", {"type": "float", "low": 1e-5, "hgh": 1e-3}, "space.learning_rate.hgh", "both"),
    ("space.epochs", {"type": "int", "low": 1, "high": 3, "step": 0}, "space.epochs", "both"),
    ("space.epochs", {"type": "int", "low": 1.5, "high": 3}, "space.epochs", "both"),
    ("space.epochs", {"type": "integer", "low": 1, "high": 3}, "space.epochs.type", "both"),
    ("space.epochs", {"type": "int", "low": 1, "high": 3, "step": 5}, "space.epochs", "both"),
    ("space.epochs", {"type": "int", "low": 0, "high": 10**30}, "space.epochs.high", "both"),
    ("space.batch_size", {"type": "categorical", "choices": []}, "space.batch_size", "both"),
    ("space.batch_size", {"type": "categorical", "choices": [8, 8]}, "space.batch_size", "both"),
    ("space.batch_size", {"type": "categorical"}, "space.batch_size", "both"),
    ("space.rank", {"low": 1, "high": 3}, "space.rank.type", "both"),
    ("objectives", [], "objectives", "both"),
    ("objectives", "loss", "objectives", "both"),
    ("objectives", [{"name": "loss"}, {"name": "loss"}], "objectives", "both"),
    ("objectives", [{"name": "loss", "direction": "down"}], "objectives[0].direction", "both"),
    ("objectives", [{"name": "rouge"}], "objectives[0].name", "both"),
    ("constraints", ["memory_bytes <<= 3"], "constraints", "both"),
    ("constraints", ["memory_bytes <= inf"], "constraints", "both"),
    ("constraints", ["nosuch <= 3"], "constraints[0]", "both"),
    ("sampler.name", "cmaes", "sampler.name", "both"),
    ("sampler", {"name": "nsga2", "options": {"population_size": 1}}, "sampler.options.population_size", "both"),
    ("sampler", {"name": "nsga2", "options": {"popsize": 10}}, "sampler.options.popsize", "both"),
    ("sampler", {"name": "tpe", "options": {"n_ei_candidates": 10**12}}, "sampler.options.n_ei_candidates", "both"),
    ("sampler.options", {"n_startup_trials": -1}, "sampler.options.n_startup_trials", "both"),
    ("sampler.seed", -1, "sampler.seed", "both"),
    ("sampler.seed", 10**30, "sampler.seed", "both"),
    ("sampler.seed", "seven", "sampler.seed", "both"),
    ("budget", {}, "budget", "both"),
    ("budget.n_trials", 0, "budget.n_trials", "both"),
    ("budget.n_trials", 10**30, "budget.n_trials", "both"),
    ("budget.n_trials", 2.5, "budget.n_trials", "both"),
    ("budget.timeout_seconds", -5, "budget.timeout_seconds", "both"),
    ("budget.timeout_seconds", math.inf, "budget.timeout_seconds", "both"),
    ("budget.energy_joules", math.nan, "budget.energy_joules", "both"),
    ("budget.max_retries", -1, "budget.max_retries", "both"),
    ("seeds", 0, "seeds", "both"),
    ("seeds", 1000, "seeds", "both"),
    ("reference_point", {"loss": math.nan, "time_seconds": 1.0}, "reference_point.loss", "both"),
    ("reference_point", {"rouge": 1.0}, "reference_point.rouge", "both"),
    ("priority", 10**30, "priority", "both"),
    ("priority", "high", "priority", "both"),
    ("max_concurrency", 0, "max_concurrency", "both"),
    ("budgett", {"n_trials": 3}, "budgett", "both"),
    ("schedule", {"cron": "61 * * * *"}, "schedule.cron", "both"),
    ("schedule", {"window": "25:00-26:00"}, "schedule.window", "both"),
    ("retune", {"min_interval": "-1h"}, "retune.min_interval", "both"),
    ("retune", {"min_manual_interval": "forever"}, "retune.min_manual_interval", "both"),
    ("strategy", {"kind": "annealing"}, "strategy.kind", "both"),
    ("pruner", {"kind": "guess"}, "pruner.kind", "both"),
    ("serving", {"max_texts": 0}, "serving.max_texts", "both"),
    ("storage", "sqlite:////nonexistent-dir/x.db", "storage", "both"),
]


def _data_cases(root: Path) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(case, data options, strings the message must contain) for malformed data files."""
    root.mkdir(parents=True, exist_ok=True)

    def jsonl(name: str, records: list[Any]) -> Path:
        path = root / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        return path

    good = [{"article": f"article number {i}", "highlights": f"summary {i}"} for i in range(20)]
    cases: list[tuple[str, dict[str, Any], list[str]]] = []
    cases.append(("missing file", {"source": str(root / "nope.jsonl")}, ["nope.jsonl", "not found"]))
    (root / "adir.jsonl").mkdir(exist_ok=True)
    cases.append(("a directory", {"source": str(root / "adir.jsonl")}, ["adir.jsonl", "not a file"]))
    (root / "empty.jsonl").write_text("")
    cases.append(("empty file", {"source": str(root / "empty.jsonl")}, ["empty.jsonl", "empty"]))
    (root / "notes.txt").write_text("hello\n")
    cases.append(("unsupported type", {"source": str(root / "notes.txt")}, ["notes.txt", ".txt"]))
    (root / "latin1.jsonl").write_bytes(b'{"article": "caf\xe9", "highlights": "x"}\n')
    cases.append(("not UTF-8", {"source": str(root / "latin1.jsonl")}, ["latin1.jsonl", "UTF-8"]))
    (root / "broken.jsonl").write_text(json.dumps(good[0]) + "\n{not json\n")
    cases.append(("invalid JSON line", {"source": str(root / "broken.jsonl")}, ["broken.jsonl:2", "JSON"]))
    cases.append(("record is a list", {"source": str(jsonl("lists.jsonl", [[1, 2]] * 20))},
                  ["lists.jsonl:1", "object"]))
    cases.append(("lacks the summary field", {"source": str(jsonl("nosum.jsonl", [{"article": "a"}] * 20))},
                  ["nosum.jsonl:1", "highlights"]))
    cases.append(("summary is a number", {"source": str(jsonl("num.jsonl", [{"article": "a", "highlights": 3}]))},
                  ["num.jsonl:1", "highlights"]))
    cases.append(("empty article", {"source": str(jsonl("blank.jsonl", [{"article": " ", "highlights": "s"}]))},
                  ["blank.jsonl:1", "article"]))
    cases.append(("too few records", {"source": str(jsonl("few.jsonl", good[:5])), "train_size": 10,
                                      "val_size": 5}, ["few.jsonl", "train_size"]))
    (root / "nocol.csv").write_text("article,summary\na,b\n")
    cases.append(("CSV lacks a column", {"source": str(root / "nocol.csv")}, ["nocol.csv", "highlights"]))
    (root / "latin1.csv").write_bytes(b"article,highlights\ncaf\xe9,x\n")
    cases.append(("CSV not UTF-8", {"source": str(root / "latin1.csv")}, ["latin1.csv", "UTF-8"]))
    (root / "garbage.parquet").write_bytes(os.urandom(256))
    cases.append(("not Parquet", {"source": str(root / "garbage.parquet")}, ["garbage.parquet", "Parquet"]))
    (root / "blanklines.jsonl").write_text("\n\n   \n")
    cases.append(("only blank lines", {"source": str(root / "blanklines.jsonl")}, ["blanklines.jsonl"]))
    cases.append(("text field absent", {"source": str(jsonl("good.jsonl", good)), "text_field": "body"},
                  ["good.jsonl:1", "body"]))
    cases.append(("summary field absent", {"source": str(root / "good.jsonl"), "summary_field": "abstract"},
                  ["good.jsonl:1", "abstract"]))
    return cases


def _data_spec(data: dict[str, Any]) -> dict[str, Any]:
    return {**_BASE, "name": "bad-data",
            "objective": {"name": "t5_lora", "params": {"model": "tiny", "data": {"train_size": 10, "val_size": 5,
                                                                                 **data}}}}


def _files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def malformed(tmp: Path, daemon: Daemon, limit: int | None) -> dict[str, Any]:
    specs = MALFORMED_SPECS[:limit] if limit else MALFORMED_SPECS
    data_cases = _data_cases(tmp / "data")
    if limit:
        data_cases = data_cases[: max(3, limit // 4)]
    cases: list[tuple[str, dict[str, Any], list[str], str]] = []
    for path, value, field, where in specs:
        shown = value if not isinstance(value, dict) or len(json.dumps(value)) < 60 else "{…}"
        cases.append((f"{path}={shown!r}"[:90], _mutate(path, value), [field], where))
    for label, data, needles in data_cases:
        cases.append((f"data file: {label}", _data_spec(data), needles, "both"))

    def through_run(spec: dict[str, Any], needles: list[str]) -> dict[str, Any]:
        work = tmp / "malformed-run" / uuid.uuid4().hex[:8]
        work.mkdir(parents=True)
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec))
        state = work / "state"
        proc = subprocess.run([HPOD, "run", str(spec_file), "--no-codecarbon"], capture_output=True, text=True,
                              env=_env(state), timeout=600)
        message = proc.stderr.strip()
        return {"exit": proc.returncode, "traceback": "Traceback" in proc.stderr + proc.stdout,
                "names_field": all(n in message for n in needles), "files": _files_under(state),
                "message": message[-400:]}

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        runs = [pool.submit(through_run, spec, needles) if where == "both" else None
                for _, spec, needles, where in cases]
        rows: list[dict[str, Any]] = []
        for (label, spec, needles, _), run_job in zip(cases, runs):
            row: dict[str, Any] = {"case": label, "expects": needles}
            studies_before = _study_names(daemon)
            status, body, _ = daemon.request("POST", "/v1/studies", {"spec": spec})
            error = body.get("error", "") if isinstance(body, dict) else str(body)
            added = _study_names(daemon) - studies_before
            row["api"] = {"status": status, "names_field": all(n in error for n in needles), "rows": sorted(added),
                          "message": error[-400:]}
            if run_job is not None:
                row["run"] = run_job.result()
            rows.append(row)

    run_rows = [r["run"] for r in rows if "run" in r]
    api_rows = [r["api"] for r in rows]
    return {
        "specs": len(specs), "data_files": len(data_cases), "cases": rows,
        "run": {"inputs": len(run_rows), "exit_2": sum(1 for r in run_rows if r["exit"] == 2),
                "tracebacks": sum(1 for r in run_rows if r["traceback"]),
                "names_field": sum(1 for r in run_rows if r["names_field"]),
                "writes": sum(len(r["files"]) for r in run_rows)},
        "api": {"inputs": len(api_rows), "4xx": sum(1 for r in api_rows if 400 <= r["status"] < 500),
                "server_errors": sum(1 for r in api_rows if r["status"] >= 500),
                "accepted": sum(1 for r in api_rows if r["status"] < 400),
                "names_field": sum(1 for r in api_rows if r["names_field"]),
                "writes": sum(len(r["rows"]) for r in api_rows)},
    }


def _study_names(daemon: Daemon) -> set[str]:
    status, body, _ = daemon.request("GET", "/v1/studies")
    return {s["name"] for s in body} if status == 200 and isinstance(body, list) else set()


# ---------------------------------------------------------------------------- the run
def machine() -> dict[str, Any]:
    info = describe_machine("optuna", "schemathesis", "fastapi", "psycopg")
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = list(os.getloadavg())
    info["note"] = ("a shared 2-core machine: other people's builds and tests ran beside this benchmark, so its "
                    "timings say little; the counts are what it measures")
    return info


def run(quick: bool) -> dict[str, Any]:
    size = {"daemon_kills": 3 if quick else 20, "daemon_trials": 8 if quick else 30,
            "worker_kills": 2 if quick else 6, "worker_trials": 8 if quick else 60,
            "interrupt_cycles": 2 if quick else 5, "interrupt_trials": 8 if quick else 30,
            "samplers": ["random", "tpe"] if quick else ["tpe", "random", "nsga2", "auto"],
            "fuzz_examples": 10 if quick else 300, "fuzz_deadline_seconds": 120 if quick else 1200,
            "malformed_limit": 8 if quick else None}
    started = time.time()
    out: dict[str, Any] = {"machine": machine(), "quick": quick, "size": size,
                           "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))}
    with tempfile.TemporaryDirectory(prefix="hpod-reliability-") as tmp_name:
        tmp = Path(tmp_name)

        def on_own_daemon(key: str, section: Callable[[Daemon], dict[str, Any]]) -> dict[str, Any]:
            logs = tmp / f"{key}-logs"
            logs.mkdir()
            daemon = Daemon(tmp / f"{key}-state", logs, cpu_slots=0).start()
            try:
                found = section(daemon)
            finally:
                daemon.stop()
            found["daemon_tracebacks"] = daemon.tracebacks()
            return found

        # The sections are independent (own state directories, databases and daemons):
        # run side by side, each waits on events and states, not on wall-clock time.
        with concurrent.futures.ThreadPoolExecutor(max_workers=5) as pool:
            jobs = {
                "daemon_kills": pool.submit(daemon_kills, tmp, size["daemon_kills"], size["daemon_trials"]),
                "worker_kills": pool.submit(worker_kills, tmp, size["worker_kills"], size["worker_trials"]),
                "interrupts": pool.submit(interrupts, tmp, size["samplers"], size["interrupt_cycles"],
                                          size["interrupt_trials"]),
                "malformed": pool.submit(on_own_daemon, "malformed",
                                         lambda d: malformed(tmp, d, size["malformed_limit"])),
                "fuzz": pool.submit(on_own_daemon, "fuzz", lambda d: fuzz(d, size["fuzz_examples"],
                                                                            size["fuzz_deadline_seconds"])),
            }
            for key, job in jobs.items():
                try:
                    out[key] = job.result()
                except Exception as exc:  # recorded: the other sections' results still count
                    out[key] = {"error": f"{type(exc).__name__}: {exc}"}
                print(f"{key} done", flush=True)
    out["seconds"] = round(time.time() - started)
    with contextlib.suppress(OSError):
        out["machine"]["load_average_at_end"] = list(os.getloadavg())
    try:
        out["totals"] = totals(out)
    except (KeyError, TypeError) as exc:  # a section failed: say so instead of inventing totals
        out["totals"] = {"error": f"a section failed ({exc!r}); see its entry"}
    return out


def totals(out: dict[str, Any]) -> dict[str, int]:
    dk, wk, it, mf, fz = (out["daemon_kills"], out["worker_kills"], out["interrupts"], out["malformed"],
                          out["fuzz"])
    checked = [dk, it] + ([wk] if "skipped" not in wk else [])

    def total(key: str) -> int:
        return int(sum(int(section.get(key, 0)) for section in checked))

    return {
        "kills": int(dk["kills"]) + int(wk.get("kills", 0)),
        "resumes": int(dk.get("restarts", 0)) + int(it["resumes"]),
        "lost": total("lost"),
        "left_running": total("left_running"),
        "completed_vs_budget_mismatches": total("completed_vs_budget_mismatches"),
        "duplicate_evaluations": total("duplicate_evaluations"),
        "rejected_repeats": total("rejected_repeats"),
        "api_requests": int(fz["requests"]) + int(mf["api"]["inputs"]),
        "server_errors": int(fz["server_errors"]) + int(mf["api"]["server_errors"]),
        "schema_nonconforming": int(fz["schema_nonconforming"]),
        "bad_inputs": int(mf["run"]["inputs"]) + int(mf["api"]["inputs"]),
        "bad_inputs_accepted": int(mf["api"]["accepted"]) + sum(1 for c in mf["cases"]
                                                               if c.get("run", {}).get("exit") == 0),
        "messages_missing_the_field": (int(mf["run"]["inputs"]) - int(mf["run"]["names_field"]))
        + (int(mf["api"]["inputs"]) - int(mf["api"]["names_field"])),
        "tracebacks": int(mf["run"]["tracebacks"]) + int(dk.get("tracebacks", 0)) + int(wk.get("tracebacks", 0))
        + int(it.get("tracebacks", 0)) + int(fz.get("daemon_tracebacks", 0)) + int(mf.get("daemon_tracebacks", 0)),
        "writes": int(mf["run"]["writes"]) + int(mf["api"]["writes"]),
    }


def markdown(data: dict[str, Any]) -> str:
    t = data["totals"]
    m = data["machine"]
    lines = [
        "# Reliability" + (" (quick)" if data["quick"] else ""),
        "",
        f"`python -m benchmarks.reliability{' --quick' if data['quick'] else ''}`, {data['started']}, "
        f"{data['seconds']} s. Machine: {m.get('cpu')}, {m.get('cores')} cores, load average "
        f"{m.get('load_average_at_start')} at start, {m.get('load_average_at_end')} at end — {m['note']}.",
        "",
        "| total | value |",
        "|---|---:|",
        *[f"| {k} | {v} |" for k, v in t.items()],
        "",
        "## Kills and interrupts",
        "",
        "| section | kills / cycles | lost | left RUNNING | completed ≠ budget | evaluated twice | "
        "repeats rejected |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    dk, wk, it = data["daemon_kills"], data["worker_kills"], data["interrupts"]
    lines.append(f"| daemon SIGKILL (tpe + nsga2) | {dk['kills']} | {dk['lost']} | {dk['left_running']} | "
                 f"{dk['completed_vs_budget_mismatches']} | {dk['duplicate_evaluations']} | {dk['rejected_repeats']} |")
    if "skipped" in wk:
        lines.append(f"| worker SIGKILL (PostgreSQL) | skipped: {wk['skipped']} | | | | | |")
    else:
        lines.append(f"| worker SIGKILL (PostgreSQL, random) | {wk['kills']} | {wk['lost']} | {wk['left_running']} | "
                     f"{wk['completed_vs_budget_mismatches']} | {wk['duplicate_evaluations']} | "
                     f"{wk['rejected_repeats']} |")
    for sampler, r in it["samplers"].items():
        lines.append(f"| Ctrl-C / resume, {sampler} | {r['cycles']} | {r['lost']} | {r['running']} | "
                     f"{int(r['completed'] != r['budget'])} | {r['repeats']} | {r['rejected_repeats']} |")
    fz, mf = data["fuzz"], data["malformed"]
    lines += [
        "",
        "## API fuzzing (schemathesis)",
        "",
        f"{fz['requests']} requests over {fz['operations']} operations in {fz['seconds']} s; status codes "
        f"{fz['status_codes']}; {fz['server_errors']} answers ≥ 500; {fz['schema_nonconforming']} answers that "
        f"schemathesis' checks found not matching the schema ({fz['schema_nonconforming_by_check'] or 'none'}).",
        "",
        "Schema-valid requests the server refused, by the field its message names (rules between values "
        "and names that a JSON Schema does not state: the objective's registry and metrics, low <= high, "
        f"sampler options...): {fz.get('schema_valid_refused_by_field') or 'none'}.",
        "",
        "## Malformed input",
        "",
        f"{mf['specs']} malformed specs and {mf['data_files']} malformed data files. `hpod run`: "
        f"{mf['run']['inputs']} inputs, {mf['run']['exit_2']} exit 2, {mf['run']['tracebacks']} tracebacks, "
        f"{mf['run']['names_field']} messages naming the field, {mf['run']['writes']} files written. API: "
        f"{mf['api']['inputs']} inputs, {mf['api']['4xx']} answered 4xx, {mf['api']['server_errors']} ≥ 500, "
        f"{mf['api']['names_field']} messages naming the field, {mf['api']['writes']} study rows written.",
        "",
        "| input | `hpod run` | API |",
        "|---|---|---|",
    ]
    for case in mf["cases"]:
        run_cell = "–" if "run" not in case else \
            f"exit {case['run']['exit']}{'' if case['run']['names_field'] else ' (field not named)'}"
        api = case["api"]
        lines.append(f"| `{case['case']}` | {run_cell} | {api['status']}"
                     f"{'' if api['names_field'] else ' (field not named)'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few kills, cycles, inputs and requests")
    parser.add_argument("--output", type=Path, default=None,
                        help="directory for reliability.json/.md (default benchmarks/results, "
                             "or benchmarks/results/quick with --quick)")
    args = parser.parse_args(argv)
    data = run(args.quick)
    out = args.output or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reliability.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    try:
        text = markdown(data)
    except (KeyError, TypeError) as exc:  # a failed section has no table rows
        text = f"# Reliability\n\nA section failed ({exc!r}); reliability.json has what was measured.\n"
    (out / "reliability.md").write_text(text)
    print(json.dumps(data["totals"], indent=2))


if __name__ == "__main__":
    main()
