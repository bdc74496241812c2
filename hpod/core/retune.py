"""The retune policy: a drift alarm (or the schedule, or ``hpod retune``) starts a
new version ``name@vN`` of a study, warm-started with its parent's Pareto front.

A retune copies the parent's spec with the spec's ``retune`` budget and a sampler seed
of its own (a retune never repeats its parent's random draws), and enqueues the
parent's Pareto-optimal configurations once, first (the served one always among them).

**New data is labelled data.** For an objective that trains on labelled examples
(:class:`~hpod.objectives.base.LearnsFromExamples`), a retune trains and validates on
the labelled records posted since the served model's data (``hpod feedback``, ``POST
/v1/studies/{name}/examples``, or — when the firing monitor watches a file — the
records of that file up to the alarm that carry both fields): ``retune.
validation_share`` of them, the newest, are held out for validation, and
``retune.replay_share`` of the training set is drawn from the data the served model
was trained on, against forgetting. When an alarm fires with fewer than
``retune.min_labels`` such records, the retune does not start on old data: it waits
in the visible state ``waiting_for_labels`` (``retune_waiting`` event, ``hpod
status``, the API, ``hpod_retune_waiting_for_labels``) and starts once they arrive.
Objectives that cannot learn from examples retune on their unchanged data, and the
event says so.

When the child completes, serving switches to the child's pick only if it is
strictly better: for a labelled retune, on the objective's quality metric
(:class:`~hpod.objectives.base.ScoresQuality`) of the served model and the candidate,
both measured on the held-out new records neither was trained on; otherwise on the
serving policy's score of the incumbent configuration re-measured in the child. A tie
keeps the served model. Every message names the data each figure was measured on.

At most one retune per study runs (or waits) at a time; starts from alarms or the
schedule are at least ``retune.min_interval`` apart (``manual`` ones only wait for
the running one). Events are handled idempotently: each retune records the event id
that started it, and an event is marked handled after it is acted on.

Concurrency: one RetunePolicy per database (the daemon's); a lock serialises its
methods within the process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlmodel import col

from hpod.core.feedback import pending_labels
from hpod.core.monitoring import REFERENCE_PART, base_study_name
from hpod.core.pareto import non_dominated_mask
from hpod.core.records import feasible
from hpod.core.selection import SERVING_KEY, current_serving, put_serving, select_trial
from hpod.core.views import RetuneSnapshot, WaitingSnapshot
from hpod.errors import HpodError, StorageError, UsageError
from hpod.objectives.base import LearnsFromExamples, ScoresQuality, Serves, create_objective
from hpod.spec import parse_spec
from hpod.store import EventRow, config_key

if TYPE_CHECKING:
    from hpod.core.views import RetuneSnapshot
    from hpod.spec import StudySpec
    from hpod.store import Store, StudyRow

__all__ = [
    "RETUNE_KEY",
    "RetuneOutcome",
    "RetunePolicy",
    "manual_retune_wait",
    "pareto_configurations",
    "retune_snapshots",
    "retune_states",
]

log = logging.getLogger(__name__)

#: state key (on the submitted study's name) holding the retune history
RETUNE_KEY = "retune"
_HISTORY = 50
_MIN_DATA_RECORDS = 4
_FINISHED = ("completed", "failed", "cancelled")


def manual_retune_wait(store: Store, study: str, *, now: float | None = None) -> tuple[float, float]:
    """``(seconds to wait, retune.min_manual_interval)`` before another manual retune
    request of ``study`` (its family: ``study@vN`` share the base's limit) is accepted;
    0 seconds when it may go now. The last manual request is the newest
    ``retune_started`` event with reason ``manual`` (the events table is the record)."""
    base = base_study_name(study)
    row = store.get_study(base, missing_ok=True)
    if row is None:
        return 0.0, 0.0
    interval = parse_spec(json.loads(row.spec_json)).retune.min_manual_interval_seconds
    if interval <= 0:
        return 0.0, interval
    now = time.time() if now is None else now
    for event in store.events(study=base, kinds=["retune_started"], newest=True, limit=200):
        try:
            payload = json.loads(event.payload_json or "{}")
        except ValueError:
            continue
        if isinstance(payload, dict) and payload.get("reason") == "manual" and payload.get("by") is not None:
            return max(0.0, event.ts + interval - now), interval
    return 0.0, interval


@dataclass
class RetuneOutcome:
    """What one request or event led to: ``action`` is ``started``, ``skipped``
    (``detail`` says why: busy, rate_limited, disabled, kind_not_enabled, no_trials)
    or ``completed``."""

    study: str
    action: str
    reason: str
    child: str | None = None
    detail: str | None = None
    event_id: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _spec(row: StudyRow) -> StudySpec:

    return parse_spec(json.loads(row.spec_json))


def child_seed(base_seed: int | None, version: int) -> int:
    """The sampler seed of version ``version`` of a study whose spec seeds its sampler
    with ``base_seed`` (None: a fresh one is drawn): distinct per version, so a retune
    never replays its parent's random draws, and reproducible."""
    import random

    root = base_seed if base_seed is not None else random.SystemRandom().randrange(2**31)
    return (root * 1_000_003 + 7_919 * version) % (2**31 - 1)


def pareto_configurations(store: Store, study: str, spec: StudySpec) -> list[tuple[int, dict[str, Any]]]:
    """(trial number, params) of the study's feasible non-dominated trials, oldest first,
    one per configuration."""
    import numpy as np
    import optuna


    trials = [t for t in store.load_optuna_study(study).get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)) if t.values is not None and feasible(t)]
    if not trials:
        return []
    pts = np.array([[v if d == "minimize" else -v for v, d in zip(t.values, spec.directions)] for t in trials])
    seen: set[str] = set()
    out = []
    for t, on in sorted(zip(trials, non_dominated_mask(pts)), key=lambda x: x[0].number):
        key = config_key(dict(t.params))
        if on and key not in seen:
            seen.add(key)
            out.append((t.number, dict(t.params)))
    return out


class RetunePolicy:
    """Starts, rate-limits and completes retunes; switches the serving selection.

    ``activate(name)`` is called with each new version's name so the caller's
    controller drives it (the daemon: ``controller.activate``); None leaves that to
    the caller. ``clock`` returns epoch seconds (tests pass a fake one).
    """

    def __init__(self, store: Store, state_dir: Path, *, activate: Callable[[str], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.store = store
        self.state_dir = Path(state_dir)
        self.activate = activate
        self.clock = clock
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ state
    def _state(self, base: str) -> dict[str, Any]:
        state = self.store.get_state(base, RETUNE_KEY) or {}
        state.setdefault("active", None)
        state.setdefault("waiting", None)
        state.setdefault("labels_used", 0)
        state.setdefault("history", [])
        state.setdefault("skipped", [])
        return state

    def _family(self, base: str) -> list[StudyRow]:
        rows = [r for r in self.store.list_studies() if base_study_name(r.name) == base]
        return sorted(rows, key=lambda r: r.version)

    @staticmethod
    def _acted(state: dict[str, Any]) -> set[Any]:
        acted = {h.get("event_id") for h in state["history"]} | {x.get("event_id") for x in state["skipped"]}
        if state.get("waiting"):
            acted.add(state["waiting"].get("event_id"))
        return acted

    # ------------------------------------------------------------------ entry points
    def handle_pending(self) -> list[RetuneOutcome]:
        """Act on unhandled ``drift_detected`` events, start retunes whose labels have
        arrived, and finish completed retunes (call it from the daemon's main loop,
        every few seconds)."""
        out: list[RetuneOutcome] = []
        with self._lock:
            try:
                events = self.store.unhandled_events(kinds=["drift_detected"])
            except StorageError as exc:
                log.warning("retune: cannot read events (%s); retrying later", exc)
                return out
            for event in events:
                payload = json.loads(event.payload_json or "{}")
                base = base_study_name(event.study or "")
                try:
                    outcome = self._on_drift(base, payload, event.id)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                except HpodError as exc:
                    log.warning("retune of %s after event %s failed: %s", base, event.id, exc)
                    outcome = RetuneOutcome(base, "skipped", str(payload.get("reason") or "drift"),
                                            detail=f"error: {exc}", event_id=event.id)
                self.store.mark_handled(event.id)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
                out.append(outcome)
            out.extend(self.check_waiting())
            out.extend(self.check_completed())
        return out

    def check_waiting(self) -> list[RetuneOutcome]:
        """Start the retunes waiting for labels whose labelled records have arrived."""
        out = []
        with self._lock:
            for row in self.store.states(RETUNE_KEY):
                if row.key != RETUNE_KEY:
                    continue
                waiting = json.loads(row.value_json).get("waiting")
                if not waiting:
                    continue
                state = self._state(row.study)
                _, have = pending_labels(self.store, row.study, int(state["labels_used"]))
                if have < int(waiting["need"]):
                    if have != waiting.get("have"):
                        state["waiting"] = {**waiting, "have": have}
                        self.store.put_state(row.study, RETUNE_KEY, state)
                    continue
                try:
                    out.append(self.start(row.study, waiting["reason"], event_id=waiting.get("event_id"),
                                          trigger={**(waiting.get("trigger") or {}), "waited_since": waiting["since"]},
                                          admitted=True))
                except HpodError as exc:
                    log.warning("retune of %s (labels arrived) failed: %s", row.study, exc)
        return out

    def request(self, study: str, note: str | None = None, *, scheduled: bool = False,
                source: str = "cli") -> RetuneOutcome:
        """Start a retune now: reason ``manual`` (``hpod retune``; ``note`` is the
        user's ``--reason`` text, kept in the history, not in metric labels) or
        ``schedule`` (the scheduler's cron job, which respects ``min_interval``).
        Raises UsageError when a retune of the study is running."""
        if note is not None and not 1 <= len(note) <= 200:
            raise UsageError(f"--reason: 1-200 characters (found {len(note)})")
        reason = "schedule" if scheduled else "manual"
        with self._lock:
            base = base_study_name(study)
            self.store.get_study(base)
            outcome = self.start(base, reason, manual=not scheduled, trigger={"by": source, "note": note})
        if outcome.action == "skipped" and outcome.detail and outcome.detail.startswith("busy"):
            raise UsageError(f"study {base!r}: a retune is already running ({outcome.child}); "
                             "wait for it to complete")
        return outcome

    def on_request(self, request: Any) -> RetuneOutcome:
        """The daemon's retune hook (``DaemonService.retune_hooks``): a
        ``RetuneRequest(study, reason, note, event_id)`` from ``hpod retune`` / the API
        (reason ``manual``) or the cron schedule (``schedule``). That request's own
        ``retune_started`` event is the record (no second one is appended); a request
        seen before (same event id) is not acted on twice. Never raises for a busy
        study: the outcome says ``skipped``."""
        base = base_study_name(request.study)
        reason = "schedule" if request.reason == "schedule" else "manual"
        with self._lock:
            state = self._state(base)
            if request.event_id is not None and request.event_id in self._acted(state):
                return RetuneOutcome(base, "skipped", reason, detail="already_handled", event_id=request.event_id)
            return self.start(base, reason, manual=reason == "manual", event_id=request.event_id,
                              trigger={"by": "request", "note": getattr(request, "note", None)}, announce=False)

    def _on_drift(self, base: str, payload: dict[str, Any], event_id: int) -> RetuneOutcome:
        reason = str(payload.get("reason") or "drift")
        state = self._state(base)
        if event_id in self._acted(state):  # acted on before a crash, not yet marked handled
            return RetuneOutcome(base, "skipped", reason, detail="already_handled", event_id=event_id)
        row = self.store.get_study(base, missing_ok=True)
        if row is None:
            return RetuneOutcome(base, "skipped", reason, detail="study_gone", event_id=event_id)
        spec = _spec(row)
        kind = payload.get("kind")
        if kind and kind not in spec.retune.on:
            return self._skip(base, reason, f"kind_not_enabled: retune.on is {spec.retune.on}", event_id)
        return self.start(base, reason, event_id=event_id, data=payload.get("data"), wait_for_labels=True,
                          trigger={"by": "monitor", "monitor": payload.get("monitor"), "score": payload.get("score")})

    def _skip(self, base: str, reason: str, detail: str, event_id: int | None,
              child: str | None = None) -> RetuneOutcome:
        state = self._state(base)
        state["skipped"] = (state["skipped"] + [{"reason": reason, "detail": detail, "event_id": event_id,
                                                 "at": self.clock()}])[-_HISTORY:]
        self.store.put_state(base, RETUNE_KEY, state)
        log.info("retune of %s (%s) skipped: %s", base, reason, detail)
        return RetuneOutcome(base, "skipped", reason, child=child, detail=detail, event_id=event_id)

    # ------------------------------------------------------------------ start
    def start(self, base: str, reason: str, *, manual: bool = False, event_id: int | None = None,
              data: dict[str, Any] | None = None, trigger: dict[str, Any] | None = None,
              announce: bool = True, wait_for_labels: bool = False, admitted: bool = False) -> RetuneOutcome:
        """Start ``base@vN`` unless one is running or waiting or (not ``manual``) the
        last start was less than ``retune.min_interval`` ago. ``wait_for_labels``
        (alarms): with fewer than ``retune.min_labels`` new labelled records, wait in
        ``waiting_for_labels`` instead of starting. ``admitted``: a waiting retune
        whose labels arrived (its limits were checked at the alarm). ``announce``
        appends the ``retune_started`` event (on ``base``, payload ``child``...);
        False when the caller's request event already is one."""
        with self._lock:
            self.check_completed(base)
            family = self._family(base)
            if not family:
                raise UsageError(f"no study named {base!r}")
            base_spec = _spec(family[0])
            if not base_spec.retune.enabled and not manual:
                return self._skip(base, reason, "disabled: retune.enabled is false", event_id)
            state = self._state(base)
            if state["active"]:
                return self._skip(base, reason, f"busy: {state['active']} is running", event_id, state["active"])
            if state["waiting"] and not admitted and not manual:
                w = state["waiting"]
                return self._skip(base, reason, f"waiting_for_labels: the retune after event {w.get('event_id')} "
                                  f"waits for labelled records ({w.get('have')} of {w.get('need')})", event_id)
            last = state.get("last_started_at")
            wait = base_spec.retune.min_interval_seconds
            if not manual and not admitted and last is not None and self.clock() - last < wait:
                return self._skip(base, reason, f"rate_limited: last retune {self.clock() - last:.0f}s ago, "
                                  f"retune.min_interval is {wait:.0f}s", event_id)
            parent_row = family[-1]
            parent_spec = _spec(parent_row)
            objective = create_objective(parent_spec.objective.name, parent_spec.objective.params)
            learns = isinstance(objective, LearnsFromExamples)
            if isinstance(objective, LearnsFromExamples) and data and data.get("path"):
                self._ingest_path_window(base, data, objective)
            windows, have = pending_labels(self.store, base, int(state["labels_used"]))
            need = base_spec.retune.min_labels
            if learns and wait_for_labels and have < need:
                return self._wait(base, reason, event_id, trigger, have, need, len(windows))
            version = max(r.version for r in family) + 1
            child = f"{base}@v{version}"
            configs = pareto_configurations(self.store, parent_row.name, parent_spec)
            served = current_serving(self.store, base)
            if served and served.get("study") == parent_row.name:
                # the incumbent is always re-measured on the new data: the switch compares against it
                configs.sort(key=lambda c: c[0] != served.get("trial"))
            retune = base_spec.retune
            configs = configs[: min(retune.warm_start, retune.n_trials)]
            # alarms train on new labels only once there are enough; a manual or scheduled
            # retune uses whatever new labels there are (at least a handful)
            threshold = need if wait_for_labels or admitted else _MIN_DATA_RECORDS
            use = windows if learns and have >= threshold else []
            child_spec, data_info = self._child_spec(base_spec, parent_spec, child, version, objective, use,
                                                     served, have, need)
            self.store.register_study(child_spec, state="queued", parent=parent_row.name, version=version,
                                      reason=reason)
            optuna_study = self.store.load_optuna_study(child)
            if not optuna_study.trials:  # the warm start is enqueued once, never again on a replay
                for number, params in configs:
                    optuna_study.enqueue_trial(params, user_attrs={"hpod.warm_start": {"study": parent_row.name,
                                                                                      "trial": number}})
            now = self.clock()
            entry = {"child": child, "version": version, "parent": parent_row.name, "reason": reason,
                     "event_id": event_id, "started_at": now, "completed_at": None, "outcome": None,
                     "warm_start": [n for n, _ in configs], "data": data_info, "trigger": trigger or {},
                     "sampler_seed": child_spec.sampler.seed}
            state = self._state(base)
            state["active"] = child
            state["waiting"] = None
            if use:
                state["labels_used"] = max(int(w.id) for w in use)  # type: ignore[arg-type]  # a stored row has an id; SQLModel types it Optional for inserts
            state["last_started_at"] = now
            state["history"] = (state["history"] + [entry])[-_HISTORY:]
            self.store.put_state(base, RETUNE_KEY, state)
            if announce:
                self.store.append_event("retune_started", study=base, handled=True, payload={
                    "reason": reason, "child": child, "parent": parent_row.name, "version": version,
                    "event_id": event_id, "warm_start": entry["warm_start"], "data": data_info,
                    "budget_n_trials": retune.n_trials})
            log.warning("retune %s started (%s): %d warm-start configurations from %s; data: %s", child, reason,
                        len(configs), parent_row.name, data_info.get("message") or data_info.get("source"))
        if self.activate is not None:
            self.activate(child)
        return RetuneOutcome(base, "started", reason, child=child, event_id=event_id, info=entry)

    def _wait(self, base: str, reason: str, event_id: int | None, trigger: dict[str, Any] | None, have: int,
              need: int, n_windows: int) -> RetuneOutcome:
        message = (f"the alarm needs a retune on the new data, but only {have} labelled record(s) arrived since "
                   f"the served model's data (in {n_windows} window(s)); retune.min_labels is {need}. Post labelled "
                   "records (hpod feedback STUDY FILE, or POST /v1/studies/{name}/examples): the retune starts "
                   "when they arrive; it does not retrain on the old data")
        state = self._state(base)
        state["waiting"] = {"state": "waiting_for_labels", "reason": reason, "event_id": event_id,
                            "since": self.clock(), "have": have, "need": need, "trigger": trigger or {},
                            "message": message}
        self.store.put_state(base, RETUNE_KEY, state)
        self.store.append_event("retune_waiting", study=base, handled=True, payload={
            "state": "waiting_for_labels", "reason": reason, "event_id": event_id, "labelled_records": have,
            "min_labels": need, "message": message})
        log.warning("retune of %s (%s) waits for labels: %d of %d", base, reason, have, need)
        return RetuneOutcome(base, "waiting", reason, detail=f"waiting_for_labels: {have} of {need}",
                             event_id=event_id, info={"message": message})

    def _ingest_path_window(self, base: str, data: dict[str, Any], objective: LearnsFromExamples) -> None:
        """The labelled records a watched file gained since the last alarm, up to this
        one, become a labelled window (records lacking a field are unlabelled traffic
        and skipped; bytes already ingested are never read as new again)."""
        fields = objective.label_schema.fields
        state = self._state(base)
        start = dict(state.get("path_offsets") or {})
        end = dict(data.get("offsets") or {})
        records = _recent_records(Path(data["path"]), end, 10_000_000, fields, start=start)
        if records:
            self.store.add_data_window(base, "labelled", records, fields=fields,
                                       source=f"path:{data['path']} (records up to the alarm)")
        state["path_offsets"] = {**start, **end}
        self.store.put_state(base, RETUNE_KEY, state)

    def _child_spec(self, base_spec: StudySpec, parent_spec: StudySpec, child: str, version: int,
                    objective: Any, windows: list[Any], served: dict[str, Any] | None, have: int,
                    need: int) -> tuple[StudySpec, dict[str, Any]]:

        retune = base_spec.retune
        raw = json.loads(parent_spec.model_dump_json())
        raw["name"] = child
        raw["budget"] = {"n_trials": retune.n_trials, "timeout_seconds": retune.timeout_seconds,
                         "energy_joules": retune.energy_joules,
                         "trial_timeout_seconds": parent_spec.budget.trial_timeout_seconds,
                         "max_retries": parent_spec.budget.max_retries}
        # versions are driven by the retune policy, not by their own schedule or monitors
        raw["schedule"] = None
        raw["monitors"] = []
        raw["sampler"]["seed"] = child_seed(base_spec.sampler.seed, version)
        if windows:
            data_info = self._write_labelled(raw, child, objective, windows, served, retune)
        elif isinstance(objective, LearnsFromExamples):
            data_info = {"source": "unchanged", "labelled_records": have, "min_labels": need,
                         "message": f"no new labelled data ({have} record(s) since the served model's data): "
                                    "the retune re-tunes on the data the served model was trained on"}
        else:
            data_info = {"source": "unchanged",
                         "message": f"objective {raw['objective']['name']!r} cannot train on labelled examples: "
                                    "the retune re-tunes on its unchanged data"}
        return parse_spec(raw), data_info

    def _write_labelled(self, raw: dict[str, Any], child: str, objective: LearnsFromExamples, windows: list[Any],
                        served: dict[str, Any] | None, retune: Any) -> dict[str, Any]:
        """The child's data file: replayed records of the served model's training data,
        the new labelled records for training, then the newest for validation."""
        new = self.store.window_records([w.id for w in windows])[-retune.data_records:]
        n_val = max(1, round(len(new) * retune.validation_share))
        train_new, val = new[:-n_val], new[-n_val:]
        n_replay = round(len(train_new) * retune.replay_share / (1.0 - retune.replay_share))
        replay: list[dict[str, str]] = []
        replay_from = None
        if n_replay:
            trained = self._served_objective(served) or objective
            replay_from = (served or {}).get("study") or raw["name"].split("@")[0]
            pool = trained.training_examples(10 * n_replay)
            step = max(1, len(pool) // max(1, n_replay))
            replay = pool[::step][:n_replay]
        out = self.state_dir / "retune" / child / "data.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in [*replay, *train_new, *val]), encoding="utf-8")
        tmp.replace(out)
        raw["objective"]["params"] = objective.params_for_examples(out, len(replay) + len(train_new), len(val))
        ids = [int(w.id) for w in windows]
        return {"source": "labelled", "path": str(out), "windows": ids, "records": len(new),
                "train_new": len(train_new), "replay": len(replay), "replay_from": replay_from,
                "validation": len(val),
                "message": f"trains on {len(train_new)} new labelled records of window(s) {ids} plus {len(replay)} "
                           f"replayed from the served model's training data ({replay_from}); validates on the "
                           f"newest {len(val)} labelled records, held out from training"}

    def _served_objective(self, served: dict[str, Any] | None) -> Any:
        if not served:
            return None
        row = self.store.get_study(served["study"], missing_ok=True)
        if row is None:
            return None
        spec = _spec(row)
        objective = create_objective(spec.objective.name, spec.objective.params)
        return objective if isinstance(objective, LearnsFromExamples) else None

    # ------------------------------------------------------------------ completion
    def check_completed(self, base: str | None = None) -> list[RetuneOutcome]:
        """Finish active retunes whose version completed (or failed / was cancelled):
        ``retune_completed`` event, serving switch, history entry."""
        out = []
        with self._lock:
            bases = [base] if base else sorted({r.study for r in self.store.states(RETUNE_KEY)
                                                if r.key == RETUNE_KEY})
            for b in bases:
                state = self._state(b)
                child = state["active"]
                if not child:
                    continue
                row = self.store.get_study(child, missing_ok=True)
                if row is not None and row.state not in _FINISHED:
                    continue
                out.append(self._complete(b, child, row, state))
        return out

    def _complete(self, base: str, child: str, row: StudyRow | None, state: dict[str, Any]) -> RetuneOutcome:
        entry: dict[str, Any] = next((h for h in reversed(state["history"]) if h["child"] == child), {"child": child})
        outcome: dict[str, Any] = {"state": row.state if row is not None else "missing", "switched": False}
        if row is not None and row.state == "completed":
            outcome.update(self._maybe_switch(base, child, row, entry.get("data") or {}))
        entry["completed_at"] = self.clock()
        entry["outcome"] = outcome
        state["active"] = None
        self.store.put_state(base, RETUNE_KEY, state)
        self.store.append_event("retune_completed", study=child, handled=True, payload={
            "reason": entry.get("reason"), "parent": entry.get("parent"), "data": entry.get("data"), **outcome})
        return RetuneOutcome(base, "completed", str(entry.get("reason")), child=child, info=outcome)

    def _held_out_quality(self, served: dict[str, Any], pick: Any, child_spec: StudySpec,
                          data: dict[str, Any]) -> dict[str, Any] | None:
        """The served model's and the candidate's quality on the retune's held-out new
        records (neither trained on them); None when the objective cannot say."""
        objective = create_objective(child_spec.objective.name, child_spec.objective.params)
        if not (isinstance(objective, Serves) and isinstance(objective, ScoresQuality)
                and isinstance(objective, LearnsFromExamples)):
            return None
        served_row = self.store.get_study(served["study"], missing_ok=True)
        if served_row is None or not served.get("artifact_dir") or not pick.artifact_dir:
            return None
        served_objective = create_objective(_spec(served_row).objective.name, _spec(served_row).objective.params)
        if not isinstance(served_objective, Serves):
            return None
        held_out = objective.validation_examples(int(data["validation"]))
        field_in, field_out = objective.label_schema.fields
        texts, refs = [r[field_in] for r in held_out], [r[field_out] for r in held_out]
        cache = self.state_dir / "cache"
        metric = objective.quality_metric
        before = objective.score(served_objective.load_predictor(Path(served["artifact_dir"]), cache).predict(texts),
                                 refs)[metric]
        after = objective.score(objective.load_predictor(Path(pick.artifact_dir), cache).predict(texts), refs)[metric]
        return {"metric": metric, "served": float(before), "candidate": float(after), "records": len(held_out),
                "measured_on": f"the {len(held_out)} newest labelled records of window(s) {data.get('windows')}, "
                               "held out from training (neither model was trained on them)"}

    def _follow_reference(self, base: str, child: str, child_spec: StudySpec, data: dict[str, Any]) -> None:
        """Serving now runs a model trained on new labelled data: that data — the
        replayed records of the previous model's training data and the new labelled
        records — becomes the data monitors' reference from their next check, each
        record marked with its part (``replayed`` / ``new``) so a monitor judges a
        window against the part it resembles (traffic of either domain is data the
        model was trained on)."""
        base_spec = _spec(self.store.get_study(base))
        if not any(m.kind == "data" for m in base_spec.monitors):
            return
        objective = create_objective(child_spec.objective.name, child_spec.objective.params)
        if not isinstance(objective, LearnsFromExamples):
            return
        field = objective.label_schema.input_field
        n_replay = int(data.get("replay") or 0)
        trained = objective.training_examples(10_000_000)
        new = [*trained[n_replay:], *objective.validation_examples(10_000_000)]
        records = [*({field: r[field], REFERENCE_PART: "replayed"} for r in trained[:n_replay]),
                   *({field: r[field], REFERENCE_PART: "new"} for r in new)]
        if records:
            self.store.add_data_window(
                base, "reference", records, fields=[field],
                source=f"training data of {child}: {n_replay} records replayed from {data.get('replay_from')}'s "
                       f"training data + {len(new)} labelled records of window(s) {data.get('windows')}")

    def _maybe_switch(self, base: str, child: str, row: StudyRow, data: dict[str, Any]) -> dict[str, Any]:
        spec = _spec(row)
        pick, scores = select_trial(self.store, child, spec=spec)
        if pick is None:
            return {"switched": False, "why": "no feasible completed trial in the retune"}
        served = current_serving(self.store, base)
        if served is None:
            parent = row.parent or base
            parent_pick, _ = select_trial(self.store, parent)
            served = parent_pick.to_dict() if parent_pick else None
        incumbent = scores.get(served["config_key"]) if served else None
        result: dict[str, Any] = {"policy": pick.policy, "candidate": {"study": child, "trial": pick.trial,
                                                                       "score": pick.score},
                                  "incumbent": {"study": served.get("study"), "trial": served.get("trial"),
                                                "score_on_new_data": incumbent} if served else None}
        quality = self._held_out_quality(served, pick, spec, data) if served and data.get("source") == "labelled" \
            else None
        if quality is not None:
            result["quality"] = quality
            m, before, after = quality["metric"], quality["served"], quality["candidate"]
            if not after > before:
                result.update(switched=False, why=f"not better on the new data: {m} {after:.4g} (candidate) vs "
                                                  f"{before:.4g} (served), on {quality['measured_on']}")
                return result
            why = f"better on the new data: {m} {after:.4g} (candidate) vs {before:.4g} (served), on " \
                  f"{quality['measured_on']}"
        elif incumbent is not None:
            measured = ("the retune's data (" + data["message"] + ")") if data.get("message") else "the retune's data"
            if not pick.score < incumbent:
                result.update(switched=False, why=f"not better: policy score {pick.score:.4g} (candidate) vs "
                                                  f"{incumbent:.4g} (incumbent configuration re-measured), both on "
                                                  f"{measured}; a tie keeps the served model")
                return result
            why = (f"better: policy score {pick.score:.4g} (candidate) vs {incumbent:.4g} (incumbent configuration "
                   f"re-measured), both on {measured}")
        else:
            why = "the incumbent configuration was not re-measured in the retune"
        put_serving(self.store, base, pick, reason=f"retune {child}: {why}", previous=served)
        if data.get("source") == "labelled":
            self._follow_reference(base, child, spec, data)
        self.store.append_event("serving_switched", study=base, handled=True, payload={
            "from": {"study": served.get("study"), "trial": served.get("trial")} if served else None,
            "to": {"study": child, "trial": pick.trial}, "policy": pick.policy, "why": why,
            "quality": result.get("quality")})
        result.update(switched=True, why=why)
        return result


def retune_states(store: Store) -> list[dict[str, Any]]:
    """Per submitted study: its versions (name, version, parent, reason, state), the
    running retune, the one waiting for labels, the labelled records not yet used by
    a retune, the retune history with outcomes, and the serving choice — what ``hpod
    status`` shows."""
    family: dict[str, list[StudyRow]] = {}
    for r in store.list_studies():
        family.setdefault(base_study_name(r.name), []).append(r)
    retune = {r.study: json.loads(r.value_json) for r in store.states(RETUNE_KEY) if r.key == RETUNE_KEY}
    serving = {r.study: json.loads(r.value_json) for r in store.states(SERVING_KEY) if r.key == SERVING_KEY}
    out = []
    for base, rows in sorted(family.items()):
        st = retune.get(base) or {}
        windows, pending = pending_labels(store, base, int(st.get("labels_used") or 0))
        if len(rows) == 1 and base not in retune and base not in serving and not windows:
            continue
        out.append({
            "study": base,
            "versions": [{"name": r.name, "version": r.version, "parent": r.parent, "reason": r.reason,
                          "state": r.state} for r in sorted(rows, key=lambda r: r.version)],
            "active": st.get("active"),
            "waiting": st.get("waiting"),
            "labels": {"pending_records": pending, "pending_windows": [w.id for w in windows],
                       "used_up_to_window": int(st.get("labels_used") or 0)},
            "history": st.get("history", []),
            "skipped": st.get("skipped", [])[-5:],
            "serving": serving.get(base),
        })
    return out


def waiting_snapshots(store: Store) -> list[WaitingSnapshot]:
    """Per study with a retune state: 1 while a retune waits for labels, else 0."""
    out = []
    for row in store.states(RETUNE_KEY):
        if row.key == RETUNE_KEY:
            waiting = json.loads(row.value_json).get("waiting")
            out.append(WaitingSnapshot(study=row.study, waiting=bool(waiting),
                                       labelled_records=int((waiting or {}).get("have") or 0)))
    return sorted(out, key=lambda w: w.study)


def retune_snapshots(store: Store) -> list[RetuneSnapshot]:
    """Retunes started per (submitted study, reason), for the exporter's Snapshot."""

    counts: dict[tuple[str, str], int] = {}
    with store.session() as s:
        q = select(col(EventRow.study), col(EventRow.payload_json)).where(col(EventRow.kind) == "retune_started")
        rows = s.execute(q)
        for study, payload in rows:
            reason = str(json.loads(payload or "{}").get("reason") or "unknown")
            key = (base_study_name(study or ""), reason)
            counts[key] = counts.get(key, 0) + 1
    return [RetuneSnapshot(study=k[0], reason=k[1], count=n) for k, n in sorted(counts.items())]


def _recent_records(path: Path, offsets: dict[str, int], limit: int, fields: tuple[str, str], *,
                    start: dict[str, int] | None = None) -> list[dict[str, str]]:
    """The last ``limit`` records having both ``fields`` (as strings) in a JSONL file
    or directory, reading each file from its ``start`` offset (default 0) only up to
    its offset at the alarm."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    records: list[dict[str, str]] = []
    for file in files:
        end = offsets.get(str(file))
        begin = int((start or {}).get(str(file), 0))
        try:
            with file.open("rb") as handle:
                handle.seek(begin)
                blob = handle.read(max(0, end - begin)) if end is not None else handle.read()
        except OSError:
            continue
        for line in blob.decode("utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and all(isinstance(rec.get(f), str) and rec[f].strip() for f in fields):
                records.append({f: rec[f] for f in fields})
    return records[-limit:]
