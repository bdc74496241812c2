"""The retune policy: a drift alarm (or the schedule, or ``hpod retune``) starts a
new version ``name@vN`` of a study, warm-started with its parent's Pareto front.

A retune copies the parent's spec with the spec's ``retune`` budget, enqueues the
parent's Pareto-optimal configurations first (the served one always among them,
so the incumbent is re-measured on the new data), and — for objectives that train on
labelled examples, when the firing monitor watches a file or directory — points the child's data at the new
window: the last ``retune.data_records`` labelled records up to the alarm, written to
``<state dir>/retune/<name@vN>/data.jsonl`` (records lacking the summary field are
skipped; with fewer than 4 labelled records the child keeps the parent's data and
says so). When the child completes, the serving selection switches to the child's
pick if it is at least as good, under the spec's serving policy, as the incumbent
configuration re-measured in the child (a tie switches too: the child's model was
trained on the new data).

At most one retune per study runs at a time; starts from alarms or the schedule are
at least ``retune.min_interval`` apart (``manual`` ones only wait for the running
one). Events are handled idempotently: each retune records the event id that
started it, and an event is marked handled after it is acted on.

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

from hpod.core.monitoring import base_study_name
from hpod.core.pareto import non_dominated_mask
from hpod.core.records import feasible
from hpod.core.selection import SERVING_KEY, current_serving, put_serving, select_trial
from hpod.core.views import RetuneSnapshot
from hpod.errors import HpodError, StorageError, UsageError
from hpod.objectives.base import LearnsFromExamples, create_objective
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
    "pareto_configurations",
    "retune_snapshots",
    "retune_states",
]

log = logging.getLogger(__name__)

#: state key (on the submitted study's name) holding the retune history
RETUNE_KEY = "retune"
_HISTORY = 50
_MIN_DATA_RECORDS = 4
#: share of a labelled window held out for validation
_VALIDATION_SHARE = 0.2
_FINISHED = ("completed", "failed", "cancelled")


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
        state.setdefault("history", [])
        state.setdefault("skipped", [])
        return state

    def _family(self, base: str) -> list[StudyRow]:
        rows = [r for r in self.store.list_studies() if base_study_name(r.name) == base]
        return sorted(rows, key=lambda r: r.version)

    # ------------------------------------------------------------------ entry points
    def handle_pending(self) -> list[RetuneOutcome]:
        """Act on unhandled ``drift_detected`` events and finish completed retunes
        (call it from the daemon's main loop, every few seconds)."""
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
                    outcome = self._on_drift(base, payload, event.id)  # type: ignore[arg-type]
                except HpodError as exc:
                    log.warning("retune of %s after event %s failed: %s", base, event.id, exc)
                    outcome = RetuneOutcome(base, "skipped", str(payload.get("reason") or "drift"),
                                            detail=f"error: {exc}", event_id=event.id)
                self.store.mark_handled(event.id)  # type: ignore[arg-type]
                out.append(outcome)
            out.extend(self.check_completed())
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
            acted = {h.get("event_id") for h in state["history"]} | {x.get("event_id") for x in state["skipped"]}
            if request.event_id is not None and request.event_id in acted:
                return RetuneOutcome(base, "skipped", reason, detail="already_handled", event_id=request.event_id)
            return self.start(base, reason, manual=reason == "manual", event_id=request.event_id,
                              trigger={"by": "request", "note": getattr(request, "note", None)}, announce=False)

    def _on_drift(self, base: str, payload: dict[str, Any], event_id: int) -> RetuneOutcome:
        reason = str(payload.get("reason") or "drift")
        state = self._state(base)
        acted = {h.get("event_id") for h in state["history"]} | {s.get("event_id") for s in state["skipped"]}
        if event_id in acted:  # acted on before a crash, not yet marked handled
            return RetuneOutcome(base, "skipped", reason, detail="already_handled", event_id=event_id)
        row = self.store.get_study(base, missing_ok=True)
        if row is None:
            return RetuneOutcome(base, "skipped", reason, detail="study_gone", event_id=event_id)
        spec = _spec(row)
        kind = payload.get("kind")
        if kind and kind not in spec.retune.on:
            return self._skip(base, reason, f"kind_not_enabled: retune.on is {spec.retune.on}", event_id)
        return self.start(base, reason, event_id=event_id, data=payload.get("data"),
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
              announce: bool = True) -> RetuneOutcome:
        """Start ``base@vN`` unless one is running or (not ``manual``) the last start
        was less than ``retune.min_interval`` ago. ``announce`` appends the
        ``retune_started`` event (on ``base``, payload ``child``...); False when the
        caller's request event already is one."""
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
            last = state.get("last_started_at")
            wait = base_spec.retune.min_interval_seconds
            if not manual and last is not None and self.clock() - last < wait:
                return self._skip(base, reason, f"rate_limited: last retune {self.clock() - last:.0f}s ago, "
                                  f"retune.min_interval is {wait:.0f}s", event_id)
            parent_row = family[-1]
            parent_spec = _spec(parent_row)
            version = max(r.version for r in family) + 1
            child = f"{base}@v{version}"
            configs = pareto_configurations(self.store, parent_row.name, parent_spec)
            served = current_serving(self.store, base)
            if served and served.get("study") == parent_row.name:
                # the incumbent is always re-measured on the new data: the switch compares against it
                configs.sort(key=lambda c: c[0] != served.get("trial"))
            retune = base_spec.retune
            configs = configs[: min(retune.warm_start, retune.n_trials)]
            child_spec, data_info = self._child_spec(base_spec, parent_spec, child, data)
            self.store.register_study(child_spec, state="queued", parent=parent_row.name, version=version,
                                      reason=reason)
            optuna_study = self.store.load_optuna_study(child)
            for number, params in configs:
                optuna_study.enqueue_trial(params, user_attrs={"hpod.warm_start": {"study": parent_row.name,
                                                                                  "trial": number}})
            now = self.clock()
            entry = {"child": child, "version": version, "parent": parent_row.name, "reason": reason,
                     "event_id": event_id, "started_at": now, "completed_at": None, "outcome": None,
                     "warm_start": [n for n, _ in configs], "data": data_info, "trigger": trigger or {}}
            state = self._state(base)
            state["active"] = child
            state["last_started_at"] = now
            state["history"] = (state["history"] + [entry])[-_HISTORY:]
            self.store.put_state(base, RETUNE_KEY, state)
            if announce:
                self.store.append_event("retune_started", study=base, handled=True, payload={
                    "reason": reason, "child": child, "parent": parent_row.name, "version": version,
                    "event_id": event_id, "warm_start": entry["warm_start"], "data": data_info,
                    "budget_n_trials": retune.n_trials})
            log.warning("retune %s started (%s): %d warm-start configurations from %s", child, reason,
                        len(configs), parent_row.name)
        if self.activate is not None:
            self.activate(child)
        return RetuneOutcome(base, "started", reason, child=child, event_id=event_id, info=entry)

    def _child_spec(self, base_spec: StudySpec, parent_spec: StudySpec, child: str,
                    data: dict[str, Any] | None) -> tuple[StudySpec, dict[str, Any]]:

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
        data_info: dict[str, Any] = {"source": "unchanged"}
        if data:
            objective = create_objective(raw["objective"]["name"], raw["objective"].get("params"))
            if isinstance(objective, LearnsFromExamples):
                data_info = self._write_window(raw, child, data, objective)
            else:
                data_info = {"source": "unchanged", "why": f"objective {raw['objective']['name']!r} cannot train "
                                                           "on labelled examples"}
        return parse_spec(raw), data_info

    def _write_window(self, raw: dict[str, Any], child: str, data: dict[str, Any],
                      objective: LearnsFromExamples) -> dict[str, Any]:
        """Point the child at the labelled records of the new window."""
        text_field, summary_field = objective.label_schema.fields
        wanted = raw.get("retune", {}).get("data_records", 2000)
        records = _recent_records(Path(data["path"]), data.get("offsets") or {}, wanted,
                                  (text_field, summary_field))
        if len(records) < _MIN_DATA_RECORDS:
            return {"source": "unchanged", "why": f"{len(records)} labelled records (with {text_field!r} and "
                                                  f"{summary_field!r}) in the new window; need {_MIN_DATA_RECORDS}"}
        out = self.state_dir / "retune" / child / "data.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        tmp.replace(out)
        val = max(1, round(len(records) * _VALIDATION_SHARE))
        raw["objective"]["params"] = objective.params_for_examples(out, len(records) - val, val)
        return {"source": str(out), "records": len(records), "train_size": len(records) - val, "val_size": val,
                "from": data["path"]}

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
        entry = next((h for h in reversed(state["history"]) if h["child"] == child), {"child": child})
        outcome: dict[str, Any] = {"state": row.state if row is not None else "missing", "switched": False}
        if row is not None and row.state == "completed":
            outcome.update(self._maybe_switch(base, child, row))
        entry["completed_at"] = self.clock()
        entry["outcome"] = outcome
        state["active"] = None
        self.store.put_state(base, RETUNE_KEY, state)
        self.store.append_event("retune_completed", study=child, handled=True, payload={
            "reason": entry.get("reason"), "parent": entry.get("parent"), **outcome})
        return RetuneOutcome(base, "completed", str(entry.get("reason")), child=child, info=outcome)

    def _maybe_switch(self, base: str, child: str, row: StudyRow) -> dict[str, Any]:
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
        if incumbent is not None and pick.score > incumbent:
            result.update(switched=False, why="the incumbent configuration is better on the new data")
            return result
        why = ("at least as good as the incumbent configuration re-measured on the new data"
               if incumbent is not None else "the incumbent configuration was not re-measured on the new data")
        put_serving(self.store, base, pick, reason=f"retune {child}: {why}", previous=served)
        self.store.append_event("serving_switched", study=base, handled=True, payload={
            "from": {"study": served.get("study"), "trial": served.get("trial")} if served else None,
            "to": {"study": child, "trial": pick.trial}, "policy": pick.policy, "why": why})
        result.update(switched=True, why=why)
        return result


def retune_states(store: Store) -> list[dict[str, Any]]:
    """Per submitted study: its versions (name, version, parent, reason, state), the
    running retune, the retune history with outcomes, and the serving choice — what
    ``hpod status`` shows."""
    family: dict[str, list[StudyRow]] = {}
    for r in store.list_studies():
        family.setdefault(base_study_name(r.name), []).append(r)
    retune = {r.study: json.loads(r.value_json) for r in store.states(RETUNE_KEY) if r.key == RETUNE_KEY}
    serving = {r.study: json.loads(r.value_json) for r in store.states(SERVING_KEY) if r.key == SERVING_KEY}
    out = []
    for base, rows in sorted(family.items()):
        if len(rows) == 1 and base not in retune and base not in serving:
            continue
        st = retune.get(base) or {}
        out.append({
            "study": base,
            "versions": [{"name": r.name, "version": r.version, "parent": r.parent, "reason": r.reason,
                          "state": r.state} for r in sorted(rows, key=lambda r: r.version)],
            "active": st.get("active"),
            "history": st.get("history", []),
            "skipped": st.get("skipped", [])[-5:],
            "serving": serving.get(base),
        })
    return out


def retune_snapshots(store: Store) -> list[RetuneSnapshot]:
    """Retunes started per (submitted study, reason), for the exporter's Snapshot."""

    counts: dict[tuple[str, str], int] = {}
    with store.session() as s:
        rows = s.execute(select(EventRow.study, EventRow.payload_json).where(EventRow.kind == "retune_started"))
        for study, payload in rows:
            reason = str(json.loads(payload or "{}").get("reason") or "unknown")
            key = (base_study_name(study or ""), reason)
            counts[key] = counts.get(key, 0) + 1
    return [RetuneSnapshot(study=k[0], reason=k[1], count=n) for k, n in sorted(counts.items())]


def _recent_records(path: Path, offsets: dict[str, int], limit: int,
                    fields: tuple[str, str]) -> list[dict[str, str]]:
    """The last ``limit`` records having both ``fields`` (as strings) in a JSONL file
    or directory, reading each file only up to its offset at the alarm."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    records: list[dict[str, str]] = []
    for file in files:
        end = offsets.get(str(file))
        try:
            with file.open("rb") as handle:
                blob = handle.read(end) if end is not None else handle.read()
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
