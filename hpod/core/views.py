"""What users and tools see of the store: study, trial, worker and event rows as JSON,
and the snapshots the Prometheus collector exports. One shape, used by ``hpod status``,
the control API and the exporter alike."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hpod.core.pareto import non_dominated_mask
from hpod.core.records import HYPERVOLUME_STATE_KEY, SAMPLER_SECONDS_KEY, sampler_seconds_row, study_records
from hpod.errors import StorageError
from hpod.monitors.gpu import GpuReading
from hpod.spec import parse_spec
from hpod.store import EventRow, Store, worker_state

__all__ = [
    "DriftSnapshot",
    "RetuneSnapshot",
    "Snapshot",
    "StudySnapshot",
    "WaitingSnapshot",
    "event_dict",
    "pareto_numbers",
    "study_rows",
    "study_snapshots",
    "trial_records",
    "worker_rows",
]


@dataclass
class StudySnapshot:
    """One study as the store sees it at scrape time.

    ``trials_by_state`` uses Optuna's state names (``COMPLETE``, ``FAIL``, ``PRUNED``,
    ``RUNNING``, ``WAITING``; others such as ``WORKER_LOST`` are exported as they come,
    lower-cased). ``energy_joules_total`` is all energy the study's trials used, in
    joules; ``last_activity_ts`` a Unix time in seconds; ``state`` one of
    :data:`STUDY_STATES` (others are exported too).
    """

    name: str
    trials_by_state: dict[str, int] = field(default_factory=dict)
    running: int = 0
    hypervolume: float | None = None
    pareto_front_size: int = 0
    best: dict[str, float] = field(default_factory=dict)
    energy_joules_total: float = 0.0
    energy_budget_joules: float | None = None
    n_trials_budget: int | None = None
    last_activity_ts: float | None = None
    lagrange_multipliers: dict[str, float] = field(default_factory=dict)
    state: str = "running"


@dataclass
class DriftSnapshot:
    """A drift monitor's last score and how many alarms it has raised so far."""

    study: str
    monitor: str
    score: float
    alarms_total: int = 0


@dataclass
class RetuneSnapshot:
    """How many retunes a study has started for one reason (``drift:data:length``, ``manual``, ...)."""

    study: str
    reason: str
    count: int


@dataclass
class WaitingSnapshot:
    """Whether a study's retune waits for labelled records, and how many it has."""

    study: str
    waiting: bool
    labelled_records: int


@dataclass
class Snapshot:
    """Everything the collector exports, read from the store once per scrape.

    ``started_at`` is the daemon's start as a Unix time in seconds; ``workers_by_state``
    counts workers (``idle``, ``busy``, ``lost``, ...); ``events_by_kind`` counts rows of
    the events table by kind since the database was created.
    """

    version: str
    started_at: float
    studies: list[StudySnapshot] = field(default_factory=list)
    workers_by_state: dict[str, int] = field(default_factory=dict)
    gpus: list[GpuReading] = field(default_factory=list)
    events_by_kind: dict[str, int] = field(default_factory=dict)
    drift: list[DriftSnapshot] = field(default_factory=list)
    retunes: list[RetuneSnapshot] = field(default_factory=list)
    #: the cluster executor's view (``RayExecutor.cluster_view()``: nodes, resources), or None
    cluster: dict[str, Any] | None = None
    waiting: list[WaitingSnapshot] = field(default_factory=list)



def _hypervolume_scale(spec: dict[str, Any], reference_json: str | None, reference_source: str | None,
                       scale: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ideal and reference value of each objective, in its own direction, with
    who stated them; None until the study has a reference point."""
    if not reference_json:
        return None
    parsed = parse_spec(spec)
    names, directions = parsed.value_names, parsed.directions

    def own(points: list[float] | None) -> dict[str, float] | None:
        if points is None or len(points) != len(names):
            return None
        return {n: float(v if d == "minimize" else -v) for n, v, d in zip(names, points, directions)}

    scale = scale or {}
    return {"ideal_point": own(scale.get("ideal_point")), "ideal_point_source": scale.get("ideal_point_source"),
            "reference_point": own(json.loads(reference_json)), "reference_point_source": reference_source}


def study_rows(store: Store) -> list[dict[str, Any]]:
    rows = []
    sampler_seconds = {row.study: json.loads(row.value_json) for row in store.states(SAMPLER_SECONDS_KEY)
                       if row.key == SAMPLER_SECONDS_KEY}
    scales = {row.study: json.loads(row.value_json) for row in store.states(HYPERVOLUME_STATE_KEY)
              if row.key == HYPERVOLUME_STATE_KEY}
    for r in store.list_studies():
        spec = json.loads(r.spec_json)
        counts = json.loads(r.counts_json) if r.counts_json else {}
        rows.append({
            "name": r.name,
            "state": r.state,
            "objective": spec.get("objective", {}).get("name"),
            "objectives": {o["name"]: o.get("direction", "minimize") for o in spec.get("objectives", [])},
            "n_trials": spec.get("budget", {}).get("n_trials"),
            "trials": counts,
            "failed": counts.get("FAIL", 0),
            # suggestions closed unrun because they repeated an evaluated configuration
            "duplicates_rejected": counts.get("REJECTED", 0),
            "best": json.loads(r.best_json) if r.best_json else {},
            # normalized, in [0, 1]: each objective scaled by its ideal (0) and reference (1) value
            "hypervolume": r.hypervolume,
            "hypervolume_raw": (scales.get(r.name) or {}).get("raw"),
            "hypervolume_scale": _hypervolume_scale(spec, r.reference_point_json, r.reference_point_source,
                                                    scales.get(r.name)),
            "pareto_front_size": r.pareto_front_size,
            "energy_spent_joules": r.energy_spent_joules,
            # the budget's limits in joules and seconds (None: not bounded by it)
            "energy_budget_joules": spec.get("budget", {}).get("energy_joules"),
            "timeout_seconds": spec.get("budget", {}).get("timeout_seconds"),
            "sampler": r.sampler_name,
            "sampler_reason": r.sampler_reason,
            # seconds per suggestion: {mean, last, max, trials}, None before the first
            "sampler_seconds": sampler_seconds_row(sampler_seconds.get(r.name)),
            "parent": r.parent,
            "version": r.version,
            "reason": r.reason,
            "last_activity": r.last_activity_at,
            "message": r.message,
            # scalarized: Lagrange multipliers and scales; pbt: generation, medians, exploits
            "strategy": json.loads(r.strategy_json) if r.strategy_json else None,
        })
    return rows


def study_snapshots(store: Store) -> list[StudySnapshot]:
    """Each study as the Prometheus exporter shows it (one store read per scrape)."""
    studies = []
    for row in store.list_studies():
        spec = json.loads(row.spec_json)
        counts = json.loads(row.counts_json) if row.counts_json else {}
        strategy = json.loads(row.strategy_json) if row.strategy_json else {}
        multipliers = strategy.get("multipliers") if isinstance(strategy, dict) else None
        budget = spec.get("budget") or {}
        studies.append(StudySnapshot(
            name=row.name, trials_by_state=counts, running=int(counts.get("RUNNING", 0)),
            hypervolume=row.hypervolume, pareto_front_size=row.pareto_front_size,
            best=json.loads(row.best_json) if row.best_json else {},
            energy_joules_total=row.energy_spent_joules or 0.0,
            energy_budget_joules=budget.get("energy_joules"), n_trials_budget=budget.get("n_trials"),
            last_activity_ts=row.last_activity_at,
            lagrange_multipliers={str(k): float(v) for k, v in multipliers.items()}
            if isinstance(multipliers, dict) else {},
            state="pending" if row.state == "queued" else row.state))
    return studies


def worker_rows(store: Store) -> list[dict[str, Any]]:
    """Rows of ``hpod_workers`` as JSON; a worker silent for longer than the controller
    waits (WORKER_STALE_SECONDS) is shown as ``lost``."""
    try:
        rows = store.workers()
    except StorageError:
        return []
    now = time.time()
    result = []
    for w in rows:
        state = worker_state(w, now)
        result.append({"name": w.name, "node": w.node, "pid": w.pid, "state": state, "slots": w.slots,
                       "gpus": w.gpus, "studies": w.studies, "current": json.loads(w.current_json or "[]"),
                       "last_heartbeat": w.last_heartbeat, "started_at": w.started_at,
                       "heartbeat_age_seconds": max(0.0, now - w.last_heartbeat)})
    return result


def trial_records(store: Store, name: str, *, pareto_only: bool = False) -> list[dict[str, Any]]:
    recs = study_records(store, name)
    if pareto_only:
        front = set(pareto_numbers(store, name, recs))
        recs = [r for r in recs if r["number"] in front]
    return recs


def pareto_numbers(store: Store, name: str, recs: list[dict[str, Any]]) -> list[int]:

    row = store.get_study(name)
    spec = parse_spec(json.loads(row.spec_json))
    # The study's Optuna values: the objectives, or F alone for a scalarized study.
    targets = list(zip(spec.value_names, spec.directions))
    ok = [r for r in recs if r["feasible"] and r["values"] is not None]
    if not ok:
        return []
    pts = np.array([[r["values"][n] if d == "minimize" else -r["values"][n] for n, d in targets] for r in ok])
    return [r["number"] for r, m in zip(ok, non_dominated_mask(pts)) if m]


def event_dict(e: EventRow) -> dict[str, Any]:
    try:
        payload = json.loads(e.payload_json or "{}")
    except ValueError:
        payload = {}
    if isinstance(payload, dict) and "spec" in payload:
        payload = {k: v for k, v in payload.items() if k != "spec"}  # specs are long; GET the study for it
    return {"id": e.id, "ts": e.ts, "kind": e.kind, "study": e.study, "trial_number": e.trial_number,
            "payload": payload, "handled": e.handled, "source": e.source}


