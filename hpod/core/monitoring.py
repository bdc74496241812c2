"""The daemon side of drift monitoring: collect windows from each monitor's source,
check them, persist every score, and append ``drift_detected`` events.

Sources (``monitors[].source.type`` in the spec): ``path`` (new records in a watched
JSONL file or directory, read from persisted byte offsets), ``observations`` (values
or texts posted to ``POST /v1/studies/{id}/observations``), ``served`` (features of
the inputs ``/v1/summarize`` received) and ``trials`` (the study's own trial
measurements; for a cost monitor only the trials of its fixed reference
configuration). Observations and served features wait in the ``hpod_observations``
table until a check consumes them, so the serving process and the daemon need not be
the same process.

Monitors belong to the study a user submitted (``name``), never to its retune
versions (``name@v2``...): the versions serve the same traffic. A data monitor's
reference is the data the served model was trained on (what its objective says it
trains on, :class:`~hpod.objectives.base.ProvidesReference`): it changes only when
serving switches to a model trained on other data, or when a user sets one
(``hpod monitor set-reference``: a ``reference`` data window, adopted at the next
check) — never at an alarm, while the served model is still the old one. A model
retuned on labelled data was trained on records of two parts — some replayed from the
previous model's data, against forgetting, and the new labelled records — and its
reference keeps them apart: each window is judged against the part it is closest to,
so traffic like either part raises no alarm (a window blending both parts still can:
no part alone looks like it).

Concurrency: one MonitorService per database (the daemon's); its methods may be
called from several threads (the scheduler's tick, the API's observations
endpoint) — a lock serialises them. ``add_observations`` and
:func:`record_served` only append rows and are safe from any process.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Column, Index, Text, delete, select
from sqlmodel import Field, SQLModel, col

from hpod.core.selection import current_serving
from hpod.core.views import DriftSnapshot
from hpod.errors import DataError, HpodError, StorageError, UsageError
from hpod.monitors.drift import Monitor, TextFeatures, features_from_path, text_features
from hpod.objectives.base import ProvidesReference, create_objective
from hpod.spec import parse_spec
from hpod.store import config_key

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

    from hpod.core.views import DriftSnapshot
    from hpod.monitors.drift import Monitor, MonitorCheck, MonitorSpec
    from hpod.spec import StudySpec
    from hpod.store import Store

__all__ = [
    "MONITOR_KEY_PREFIX",
    "REFERENCE_PART",
    "SERVED_CHANNEL",
    "MonitorService",
    "MonitorTick",
    "ObservationRow",
    "base_study_name",
    "drift_snapshots",
    "ensure_observation_table",
    "monitor_states",
    "record_observations",
    "record_served",
]

log = logging.getLogger(__name__)

MONITOR_KEY_PREFIX = "monitor:"
#: the field of a reference window's record naming the part of the training data it
#: belongs to (``replayed`` / ``new`` after a labelled retune; absent: one part)
REFERENCE_PART = "part"
#: channel of the observations table holding the serving endpoint's input features
SERVED_CHANNEL = "served"
#: most samples a monitor keeps waiting for a full window (older ones are dropped)
_MAX_BUFFER_WINDOWS = 4
#: reference texts taken from an objective's training data
_MAX_REFERENCE = 500
#: observations consumed by every monitor and older than this are deleted
_OBSERVATION_RETENTION_SECONDS = 7 * 86400.0


class ObservationRow(SQLModel, table=True):
    """Values waiting for a monitor: posted observations and served-input features.

    ``channel`` is the monitor's name for posted observations, ``served`` for the
    serving endpoint's inputs; ``value_json`` a number or a text-features dict (plus
    ``text`` when the spec's ``serving.record_text`` allows it)."""

    __tablename__ = "hpod_observations"
    __table_args__ = (Index("ix_hpod_observations_study_channel_id", "study", "channel", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    study: str = Field(max_length=200)
    channel: str = Field(max_length=64)
    ts: float = 0.0
    value_json: str = Field(sa_column=Column(Text, nullable=False))


_tables_ready: set[str] = set()
_tables_lock = threading.Lock()


def ensure_observation_table(store: Store) -> None:
    """Create ``hpod_observations`` if this database lacks it (idempotent, cheap)."""
    with _tables_lock:
        if store.url in _tables_ready:
            return
        SQLModel.metadata.tables[ObservationRow.__tablename__].create(store.engine, checkfirst=True)
        _tables_ready.add(store.url)


def base_study_name(name: str) -> str:
    """``summaries@v3`` -> ``summaries``: the study a user submitted."""
    return name.split("@", 1)[0]


def record_observations(store: Store, study: str, channel: str, values: Iterable[Any]) -> int:
    """Append ``values`` (JSON-serialisable) to the observations table; returns how many."""
    ensure_observation_table(store)
    now = time.time()
    rows = [ObservationRow(study=study, channel=channel, ts=now, value_json=json.dumps(v, allow_nan=False))
            for v in values]
    if rows:
        with store.session() as s:
            s.add_all(rows)
    return len(rows)


def _read_observations(store: Store, study: str, channel: str, after_id: int,
                       limit: int) -> list[tuple[int, Any]]:
    ensure_observation_table(store)
    q = (select(col(ObservationRow.id), col(ObservationRow.value_json))
         .where(col(ObservationRow.study) == study, col(ObservationRow.channel) == channel,
                col(ObservationRow.id) > after_id)
         .order_by(col(ObservationRow.id)).limit(limit))
    with store.session() as s:
        return [(i, json.loads(v)) for i, v in s.execute(q) if i is not None]


def served_buckets(spec: StudySpec) -> list[int]:
    """The ``n_buckets`` of the study's monitors fed by served inputs (features are
    hashed once per distinct value)."""
    return sorted({m.n_buckets for m in spec.monitors if m.kind == "data" and m.source.type == "served"})


def record_served(store: Store, spec: StudySpec, texts: Sequence[str]) -> int:
    """Record the features of served ``texts`` for the study's ``served`` data monitors.

    Only lengths and hashed token buckets are stored (never the text) unless the
    spec's ``serving.record_text`` is true. Returns the rows written (0 when no
    monitor reads served inputs)."""

    buckets = served_buckets(spec)
    if not buckets:
        return 0
    values = []
    for text in texts:
        value: dict[str, Any] = {"features": {str(n): text_features(text, n_buckets=n).model_dump(mode="json")
                                              for n in buckets}}
        if spec.serving.record_text:
            value["text"] = text
        values.append(value)
    return record_observations(store, base_study_name(spec.name), SERVED_CHANNEL, values)


@dataclass(frozen=True)
class MonitorTick:
    """One check made during a tick: which study and monitor, and the verdict."""

    study: str
    monitor: str
    check: MonitorCheck
    event_id: int | None = None


def _spec_of(row: Any) -> StudySpec:

    return parse_spec(json.loads(row.spec_json))


def _finite_or_none(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


class MonitorService:
    """Every monitor of every active study: collect, check, persist, raise events.

    ``state_dir`` resolves relative ``source.path`` values (None: the current
    directory). ``reference_loader(spec, monitor_spec)`` returns a data monitor's
    reference window when none is stored (default: the objective's training texts
    when it offers them; otherwise the first full window becomes the reference).
    """

    def __init__(self, store: Store, state_dir: Path | None = None, *,
                 reference_loader: Callable[[StudySpec, MonitorSpec], Sequence[Any] | None] | None = None,
                 max_windows_per_tick: int = 100):
        if max_windows_per_tick < 1:
            raise ValueError(f"max_windows_per_tick must be >= 1, got {max_windows_per_tick}")
        self.store = store
        self.state_dir = state_dir
        self.reference_loader = reference_loader or objective_reference_texts
        self.max_windows_per_tick = max_windows_per_tick
        self._lock = threading.RLock()
        self._last_poll: dict[tuple[str, str], float] = {}
        ensure_observation_table(store)

    # ------------------------------------------------------------------ studies
    def monitored_studies(self) -> list[tuple[str, StudySpec]]:
        """(name, spec) of submitted studies (not retune versions) that declare monitors."""
        out = []
        for row in self.store.list_studies():
            if "@" in row.name or row.state == "cancelled":
                continue
            try:
                spec = _spec_of(row)
            except HpodError as exc:
                log.warning("study %s: stored spec no longer validates (%s); not monitored", row.name, exc)
                continue
            if spec.monitors:
                out.append((row.name, spec))
        return out

    def _monitor_spec(self, spec: StudySpec, monitor: str) -> MonitorSpec:
        for m in spec.monitors:
            if m.name == monitor:
                return m
        names = ", ".join(m.name for m in spec.monitors) or "none"
        raise UsageError(f"study {spec.name!r} has no monitor named {monitor!r} (monitors: {names})")

    # ------------------------------------------------------------------ state
    def _load(self, study: str, spec: StudySpec, mspec: MonitorSpec) -> tuple[Monitor, dict[str, Any]]:

        stored = self.store.get_state(study, MONITOR_KEY_PREFIX + mspec.name) or {}
        monitor = Monitor(mspec)
        state = stored.get("state")
        if state:
            try:
                monitor.load_state_dict(state)
            except (ValueError, KeyError) as exc:
                # the spec changed (e.g. n_buckets): start over rather than stop monitoring
                log.warning("study %s monitor %s: stored state dropped (%s)", study, mspec.name, exc)
                stored = {}
        if mspec.kind == "data":
            self._sync_reference(study, spec, mspec, monitor, stored)
        return monitor, stored

    def _trained_on(self, study: str, spec: StudySpec) -> tuple[str, StudySpec]:
        """(name, spec) of the study version whose model is served (the submitted study
        before anything is served): its objective says what it was trained on."""
        served = current_serving(self.store, study)
        name = (served or {}).get("study") or study
        if name == study:
            return study, spec
        row = self.store.get_study(name, missing_ok=True)
        return (name, _spec_of(row)) if row is not None else (study, spec)

    def _sync_reference(self, study: str, spec: StudySpec, mspec: MonitorSpec, monitor: Monitor,
                        stored: dict[str, Any]) -> None:
        """Adopt a newer explicitly set reference, or the served model's training data
        when serving switched to a model trained on other data."""
        ref = dict(stored.get("reference") or {})
        trained_name, trained_spec = self._trained_on(study, spec)
        trained_key = config_key(trained_spec.objective.model_dump(mode="json"))
        newer = [w for w in self.store.data_windows(study, "reference", after_id=int(ref.get("window") or 0))
                 if w.monitor in (None, mspec.name)]
        if newer:
            w = newer[-1]
            field = json.loads(w.fields_json)[0]
            records = self.store.window_records([w.id])  # type: ignore[list-item]  # a stored row has an id; SQLModel types it Optional for inserts
            monitor.set_reference(self._as_data_items([r[field] for r in records], mspec))
            stored["reference"] = {"source": f"{w.source} (window {w.id})", "window": w.id, "size": len(records),
                                   "since": time.time(), "trained_key": trained_key}
            stored["reference_parts"] = self._reference_parts(records, field, mspec)
            return
        if ref.get("trained_key") == trained_key:
            return
        if "trained_key" not in ref and monitor.has_reference:
            # state from before references had a lifecycle: keep it, remember what is served
            stored["reference"] = {**ref, "source": ref.get("source") or stored.get("reference_source") or "stored",
                                   "trained_key": trained_key}
            return
        try:
            reference = self.reference_loader(trained_spec, mspec)
        except (HpodError, OSError, ValueError) as exc:
            log.warning("study %s monitor %s: no reference from the objective (%s); the first full "
                        "window becomes the reference", study, mspec.name, exc)
            reference = None
        if reference:
            monitor.set_reference(self._as_data_items(list(reference), mspec))
            stored.pop("reference_parts", None)
            stored["reference"] = {"source": f"training data of {trained_name}", "window": ref.get("window", 0),
                                   "size": len(reference), "since": time.time(), "trained_key": trained_key}
        elif not monitor.has_reference:
            stored["reference"] = {"source": "first full window", "window": ref.get("window", 0), "size": None,
                                   "since": None, "trained_key": trained_key}
        else:  # the objective cannot say what it was trained on: keep the reference in use
            stored["reference"] = {**ref, "trained_key": trained_key}

    def _reference_parts(self, records: list[dict[str, Any]], field: str, mspec: MonitorSpec) -> list[dict[str, Any]]:
        """A reference window's parts (records grouped by :data:`REFERENCE_PART`), each
        as a reference monitor's stored state; empty for a window of one part. A part
        too small to be a reference (under ``min_samples``) is left out."""
        groups: dict[str, list[str]] = {}
        for r in records:
            groups.setdefault(str(r.get(REFERENCE_PART) or "all"), []).append(r[field])
        if len(groups) < 2:
            return []
        parts = []
        for name, texts in groups.items():
            try:
                probe = Monitor(mspec, self._as_data_items(texts, mspec))
            except ValueError as exc:
                log.warning("monitor %s: reference part %r left out (%s)", mspec.name, name, exc)
                continue
            parts.append({"part": name, "size": len(texts), "state": probe.state_dict()})
        return parts if len(parts) > 1 else []

    @staticmethod
    def _judge_against_closest_part(mon: Monitor, mspec: MonitorSpec, parts: list[dict[str, Any]],
                                    window: list[Any], now: float) -> str | None:
        """Make the part of the reference that ``window`` is closest to (not over
        threshold before over it, then the lowest score) ``mon``'s reference for this
        check, keeping its alarm counters; returns the part's name."""
        best: tuple[tuple[bool, float], dict[str, Any]] | None = None
        for part in parts:
            probe = Monitor.from_state(mspec, part["state"])
            probe.checks_total = mon.checks_total  # the same permutation draws as the check itself
            check = probe.check(window, now=now)
            if check.status != "checked":
                return None
            key = (check.over_threshold, check.score)
            if best is None or key < best[0]:
                best = (key, part)
        if best is None:
            return None
        state = mon.state_dict(include_reference=False)
        state["reference"] = best[1]["state"]["reference"]
        mon.load_state_dict(state)
        return str(best[1]["part"])

    def _save(self, study: str, monitor: Monitor, stored: dict[str, Any]) -> None:
        stored["state"] = monitor.state_dict()
        stored["score"] = _finite_or_none(monitor.last_score)
        stored["alarms_total"] = monitor.alarms_total
        stored["checks_total"] = monitor.checks_total
        stored["last_alarm"] = monitor.last_fired_at
        stored["kind"] = monitor.spec.kind
        stored["source"] = monitor.spec.source.type
        stored["has_reference"] = monitor.has_reference
        self.store.put_state(study, MONITOR_KEY_PREFIX + monitor.name, stored)

    def set_reference(self, study: str, monitor: str, window: Sequence[Any]) -> None:
        """Replace a monitor's reference window now (texts, feature dicts or values)."""
        with self._lock:
            spec = _spec_of(self.store.get_study(study))
            mspec = self._monitor_spec(spec, monitor)
            mon, stored = self._load(study, spec, mspec)
            items = list(window)
            if mspec.kind == "data":
                items = self._as_data_items(items, mspec)
            mon.set_reference(items)
            stored["reference"] = {**(stored.get("reference") or {}), "source": "set", "size": len(items),
                                   "since": time.time()}
            stored.pop("reference_parts", None)
            self._save(study, mon, stored)

    # ------------------------------------------------------------------ inputs
    def add_observations(self, study: str, monitor: str, items: Sequence[Any]) -> dict[str, Any]:
        """Queue observations for an ``observations``-sourced monitor (the API's
        ``POST /v1/studies/{id}/observations``).

        ``items``: numbers for a performance or cost monitor; texts or text-feature
        dicts for a data monitor (texts are reduced to features here; the text is not
        stored). Raises UsageError naming the problem (unknown monitor, wrong source,
        wrong item type, non-finite value, more than 10,000 items).
        """

        if not isinstance(items, (list, tuple)) or not items:
            raise UsageError("items: expected a non-empty list of observations")
        if len(items) > 10_000:
            raise UsageError(f"items: at most 10000 observations per request (found {len(items)})")
        row = self.store.get_study(base_study_name(study))
        spec = _spec_of(row)
        mspec = self._monitor_spec(spec, monitor)
        if mspec.source.type != "observations":
            raise UsageError(f"monitor {monitor!r} of study {spec.name!r} reads source {mspec.source.type!r}, "
                             "not posted observations")
        values: list[Any] = []
        for i, item in enumerate(items):
            if mspec.kind == "data":
                if isinstance(item, str):
                    values.append(text_features(item, n_buckets=mspec.n_buckets).model_dump(mode="json"))
                elif isinstance(item, dict):
                    try:
                        feats = TextFeatures.model_validate(item)
                    except ValueError as exc:
                        raise UsageError(f"items[{i}]: not text features ({str(exc).splitlines()[0]})") from None
                    if feats.n_buckets != mspec.n_buckets:
                        raise UsageError(f"items[{i}]: features hashed into {feats.n_buckets} buckets; monitor "
                                         f"{monitor!r} uses n_buckets={mspec.n_buckets}")
                    values.append(feats.model_dump(mode="json"))
                else:
                    raise UsageError(f"items[{i}]: a data monitor takes texts or text-feature objects "
                                     f"(found {type(item).__name__})")
            else:
                if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
                    raise UsageError(f"items[{i}]: a {mspec.kind} monitor takes finite numbers (found {item!r})")
                values.append(float(item))
        n = record_observations(self.store, row.name, mspec.name, values)
        return {"study": row.name, "monitor": mspec.name, "accepted": n}

    def _as_data_items(self, items: list[Any], mspec: MonitorSpec) -> list[Any]:

        return [text_features(x, n_buckets=mspec.n_buckets) if isinstance(x, str) else x for x in items]

    def _collect(self, study: str, spec: StudySpec, mspec: MonitorSpec, stored: dict[str, Any],
                 *, force: bool) -> tuple[list[Any], dict[str, Any]]:
        """New samples since the stored cursor, and the cursor after them."""
        source = mspec.source
        cursor = dict(stored.get("cursor") or {})
        limit = mspec.window * self.max_windows_per_tick
        if source.type == "path":
            key = (study, mspec.name)
            now = time.monotonic()
            if not force and now - self._last_poll.get(key, -math.inf) < source.poll_seconds:
                return [], cursor
            self._last_poll[key] = now

            path = self._resolve_path(source.path)  # type: ignore[arg-type]  # MonitorSource requires path for a path source
            feats, offsets = features_from_path(path, source.text_field, n_buckets=mspec.n_buckets,
                                                offsets=cursor.get("offsets"))
            cursor["offsets"] = offsets
            return [f.model_dump(mode="json") for f in feats], cursor
        if source.type in ("observations", "served"):
            channel = mspec.name if source.type == "observations" else SERVED_CHANNEL
            rows = _read_observations(self.store, study, channel, int(cursor.get("after_id", 0)), limit)
            if rows:
                cursor["after_id"] = rows[-1][0]
            if source.type == "served":
                items = [(v.get("features") or {}).get(str(mspec.n_buckets)) for _, v in rows]
                return [x for x in items if x is not None], cursor
            return [v for _, v in rows], cursor
        return self._collect_trials(study, mspec, stored, cursor)

    def _resolve_path(self, path: Path) -> Path:
        path = Path(path).expanduser()
        if not path.is_absolute() and self.state_dir is not None:
            return self.state_dir / path
        return path

    def _collect_trials(self, study: str, mspec: MonitorSpec, stored: dict[str, Any],
                        cursor: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``metric`` of newly completed trials of the study and its versions; for a
        cost monitor only those of the reference configuration (the first completed
        trial's parameters, recorded in the monitor's state)."""
        import optuna


        metric = mspec.source.metric or "loss"
        seen: dict[str, int] = dict(cursor.get("trials") or {})
        values: list[float] = []
        family = [r.name for r in self.store.list_studies() if base_study_name(r.name) == study]
        for name in family:
            trials = self.store.load_optuna_study(name).get_trials(
                deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            trials.sort(key=lambda t: t.number)
            if mspec.kind == "cost" and stored.get("reference_config") is None and trials:
                stored["reference_config"] = {"study": name, "trial": trials[0].number,
                                              "params": dict(trials[0].params),
                                              "config_key": config_key(dict(trials[0].params))}
            last = seen.get(name, -1)
            for t in trials:
                if t.number <= last:
                    continue
                last = t.number
                if mspec.kind == "cost" and config_key(dict(t.params)) != stored["reference_config"]["config_key"]:
                    continue
                metrics = t.user_attrs.get("hpod.metrics") or {}
                value = metrics.get(metric)
                if isinstance(value, dict):  # a measurement with its method
                    value = value.get("value")
                if isinstance(value, (int, float)) and math.isfinite(value):
                    values.append(float(value))
            seen[name] = last
        cursor["trials"] = seen
        return values, cursor

    # ------------------------------------------------------------------ checks
    def tick(self, *, force: bool = False) -> list[MonitorTick]:
        """Check every monitor of every monitored study once (the daemon's interval job).

        ``force`` reads ``path`` sources even when ``poll_seconds`` has not passed.
        A monitor whose source fails (missing file, bad record) records the error in
        its state and the others go on. Returns the checks made."""
        out: list[MonitorTick] = []
        for study, spec in self.monitored_studies():
            for mspec in spec.monitors:
                try:
                    out.extend(self.check_monitor(study, mspec.name, force=force, spec=spec))
                except (DataError, ValueError, UsageError) as exc:
                    log.warning("study %s monitor %s: %s", study, mspec.name, exc)
                    self._record_error(study, mspec.name, str(exc))
                except StorageError as exc:
                    log.warning("monitor tick: database unavailable (%s); next tick retries", exc)
                    return out
        return out

    def _record_error(self, study: str, monitor: str, message: str) -> None:
        key = MONITOR_KEY_PREFIX + monitor
        stored = self.store.get_state(study, key) or {}
        stored["error"] = {"message": message, "at": time.time()}
        self.store.put_state(study, key, stored)

    def check_monitor(self, study: str, monitor: str, *, force: bool = False,
                      spec: StudySpec | None = None) -> list[MonitorTick]:
        """Collect and check one monitor; every full window is checked in order."""
        with self._lock:
            spec = spec or _spec_of(self.store.get_study(study))
            mspec = self._monitor_spec(spec, monitor)
            mon, stored = self._load(study, spec, mspec)
            new, cursor = self._collect(study, spec, mspec, stored, force=force)
            buffer: list[Any] = list(stored.get("buffer") or []) + new
            # a monitor that fell far behind judges the newest data, not a backlog
            keep = mspec.window * max(_MAX_BUFFER_WINDOWS, self.max_windows_per_tick)
            if len(buffer) > keep:
                buffer = buffer[-keep:]
            out: list[MonitorTick] = []
            while len(buffer) >= mspec.window and len(out) < self.max_windows_per_tick:
                window, buffer = buffer[: mspec.window], buffer[mspec.window:]
                now = time.time()
                part = None
                if stored.get("reference_parts"):
                    part = self._judge_against_closest_part(mon, mspec, stored["reference_parts"], window, now)
                check = mon.check(window, now=now)
                event_id = None
                if check.fired:
                    # the reference stays: the served model is still the one trained on it
                    event_id = self._fire(study, spec, mspec, check, cursor)
                if check.status != "insufficient":
                    stored["last_check"] = {**_check_summary(check), "reference_part": part}
                out.append(MonitorTick(study, mspec.name, check, event_id))
            stored["buffer"] = buffer
            stored["cursor"] = cursor
            stored.pop("error", None)
            self._save(study, mon, stored)
            return out

    def _fire(self, study: str, spec: StudySpec, mspec: MonitorSpec, check: MonitorCheck,
              cursor: dict[str, Any]) -> int:
        payload: dict[str, Any] = {
            "monitor": mspec.name, "kind": mspec.kind, "reason": check.reason,
            "score": _finite_or_none(check.score), "p_value": check.p_value, "n_samples": check.n_samples,
            "alarms_total": check.alarms_total, "source": mspec.source.type, "checked_at": check.checked_at,
            "detectors": [{"detector": r.detector, "score": _finite_or_none(r.score),
                           "over_threshold": r.over_threshold} for r in check.results],
        }
        if mspec.source.type == "path":
            # where the new data window ends: the retune reads labelled records up to here
            payload["data"] = {"path": str(self._resolve_path(mspec.source.path)),  # type: ignore[arg-type]  # MonitorSource requires path for a path source
                               "text_field": mspec.source.text_field,
                               "offsets": dict(cursor.get("offsets") or {})}
        event_id = self.store.append_event("drift_detected", study=study, payload=payload, handled=False)
        log.warning("study %s: monitor %s fired (%s, score %.3g)", study, mspec.name, check.reason, check.score)
        return event_id

    def prune_observations(self, *, older_than_seconds: float = _OBSERVATION_RETENTION_SECONDS) -> int:
        """Delete observations older than ``older_than_seconds`` (consumed or not)."""
        cutoff = time.time() - older_than_seconds
        with self.store.session() as s:
            res = s.execute(delete(ObservationRow).where(col(ObservationRow.ts) < cutoff))
            # A DELETE returns a CursorResult (typed as a plain Result).
            return int(cast("CursorResult[Any]", res).rowcount)


def _check_summary(check: MonitorCheck) -> dict[str, Any]:
    data = check.to_dict()
    data.pop("results", None)
    data["detectors"] = {r.detector: {"score": _finite_or_none(r.score), "statistic": _finite_or_none(r.statistic),
                                      "p_value_adjusted": r.p_value_adjusted, "over_threshold": r.over_threshold}
                         for r in check.results}
    return data


def objective_reference_texts(spec: StudySpec, mspec: MonitorSpec) -> list[Any] | None:
    """The texts a study was tuned on, as a data monitor's reference: what the
    objective says it trains on (:class:`~hpod.objectives.base.ProvidesReference`;
    never a hub download). None when the objective cannot say: the monitor then takes
    its first full window as the reference."""
    objective = create_objective(spec.objective.name, spec.objective.params)
    if not isinstance(objective, ProvidesReference):
        return None
    return objective.reference_texts(_MAX_REFERENCE)


def monitor_states(store: Store) -> list[dict[str, Any]]:
    """Every monitor's stored summary (for ``hpod status`` and the API): study,
    monitor, kind, source, score, alarms_total, last_alarm, last_check, error, the
    monitor's window (texts or values per check) and how many it needs before it can
    alarm at all, and a data monitor's reference (source, size, since when)."""
    out = []
    for row in store.states(MONITOR_KEY_PREFIX):
        value = json.loads(row.value_json)
        last = value.get("last_check") or {}
        facts = (value.get("state") or {}).get("facts") or {}
        out.append({
            "study": row.study,
            "monitor": row.key[len(MONITOR_KEY_PREFIX):],
            "kind": value.get("kind"),
            "source": value.get("source"),
            "score": value.get("score"),
            "alarms_total": value.get("alarms_total", 0),
            "checks_total": value.get("checks_total", 0),
            "last_alarm": value.get("last_alarm"),
            "last_check": last.get("checked_at"),
            "reason": last.get("reason"),
            "over_threshold": last.get("over_threshold"),
            "error": (value.get("error") or {}).get("message"),
            "window": facts.get("window", last.get("window")),
            "samples_to_alarm": facts.get("samples_to_alarm", last.get("samples_to_alarm")),
            "reference": {k: (value.get("reference") or {}).get(k) for k in ("source", "size", "since")}
            if value.get("kind") == "data" else None,
        })
    out.sort(key=lambda m: (m["study"], m["monitor"]))
    return out


def drift_snapshots(store: Store) -> list[DriftSnapshot]:
    """Each monitor's last score and alarm count, for the exporter's Snapshot."""

    return [DriftSnapshot(study=m["study"], monitor=m["monitor"],
                          score=float(m["score"]) if m["score"] is not None else math.nan,
                          alarms_total=int(m["alarms_total"] or 0))
            for m in monitor_states(store)]
