"""Labelled feedback and monitor references: versioned data windows in hpod's database.

Served inputs are unlabelled; a retune needs labels. ``hpod feedback STUDY FILE`` and
``POST /v1/studies/{name}/examples`` store labelled records (the objective's input
field + reference output field, :class:`~hpod.objectives.base.LearnsFromExamples`) as
one new ``labelled`` window; ``hpod monitor set-reference`` and ``PUT
/v1/studies/{name}/monitors/reference`` store input texts as a ``reference`` window
that the study's data monitors adopt on their next check.

Every record is checked before anything is written (a bad one raises
:class:`~hpod.errors.DataError` naming the line or ``records[i]`` and the field), and a
window is written with all its records in one transaction: nothing is half-stored.

Windows belong to the study a user submitted (``name``), never to its versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpod.core.monitoring import base_study_name
from hpod.errors import UsageError
from hpod.objectives.base import LearnsFromExamples, capabilities, create_objective
from hpod.objectives.labelled import (
    LabelSchema,
    check_labelled_records,
    read_labelled_file,
)
from hpod.spec import parse_spec

if TYPE_CHECKING:
    from hpod.spec import StudySpec
    from hpod.store import DataWindowRow, Store

__all__ = [
    "MAX_RECORDS_PER_WINDOW",
    "add_examples",
    "add_examples_file",
    "pending_labels",
    "reference_schema",
    "set_reference",
    "set_reference_file",
    "window_summary",
]

#: most records one window may hold (one request or file)
MAX_RECORDS_PER_WINDOW = 100_000
_REFERENCE_FIELD = "text"


def _study(store: Store, study: str) -> tuple[str, StudySpec]:
    base = base_study_name(study)
    row = store.get_study(base)
    return base, parse_spec(json.loads(row.spec_json))


def _labelled_objective(spec: StudySpec) -> LearnsFromExamples:
    objective = create_objective(spec.objective.name, spec.objective.params)
    if not isinstance(objective, LearnsFromExamples):
        raise UsageError(f"study {spec.name!r}: objective {spec.objective.name!r} cannot train on labelled examples "
                         f"(its capabilities: {', '.join(capabilities(objective)) or 'none'}), so feedback "
                         "would never be used")
    return objective


def window_summary(row: DataWindowRow) -> dict[str, Any]:
    return {"window": row.id, "study": row.study, "kind": row.kind, "monitor": row.monitor, "source": row.source,
            "records": row.n_records, "fields": json.loads(row.fields_json), "created_at": row.created_at}


def _store_labelled(store: Store, base: str, objective: LearnsFromExamples, records: list[dict[str, str]],
                    source: str) -> dict[str, Any]:
    if len(records) > MAX_RECORDS_PER_WINDOW:
        raise UsageError(f"records: at most {MAX_RECORDS_PER_WINDOW} per window (found {len(records)}); split them")
    row = store.add_data_window(base, "labelled", records, source=source, fields=objective.label_schema.fields)
    out = window_summary(row)
    store.append_event("examples_added", study=base, handled=True, payload={
        "window": row.id, "records": row.n_records, "source": source})
    return out


def add_examples(store: Store, study: str, items: Any, *, source: str = "api") -> dict[str, Any]:
    """Check and store posted labelled records as a new window; returns its summary.
    UsageError when the study's objective cannot learn from examples, DataError
    (``records[i]: ... field ...``) for a bad record."""
    base, spec = _study(store, study)
    objective = _labelled_objective(spec)
    records = check_labelled_records(items, objective.label_schema)
    return _store_labelled(store, base, objective, records, source)


def add_examples_file(store: Store, study: str, path: Path) -> dict[str, Any]:
    """``hpod feedback STUDY FILE``: the records of a ``.jsonl`` / ``.csv`` file (checked
    in full, ``file:line`` in messages) as a new labelled window."""
    base, spec = _study(store, study)
    objective = _labelled_objective(spec)
    records = read_labelled_file(Path(path), objective.label_schema, limit=MAX_RECORDS_PER_WINDOW)
    return _store_labelled(store, base, objective, records, f"cli:{Path(path).resolve()}")


def pending_labels(store: Store, study: str, after_window: int) -> tuple[list[DataWindowRow], int]:
    """Labelled windows of ``study`` newer than ``after_window`` and their record count."""
    windows = store.data_windows(base_study_name(study), "labelled", after_id=after_window)
    return windows, sum(w.n_records for w in windows)


# ---------------------------------------------------------------------- references
def reference_schema(spec: StudySpec) -> LabelSchema:
    """The field reference texts are read from: the objective's input field when it
    declares labelled records, else ``text``."""
    try:
        objective = create_objective(spec.objective.name, spec.objective.params)
    except UsageError:
        objective = None
    if isinstance(objective, LearnsFromExamples):
        return objective.label_schema
    return LabelSchema(_REFERENCE_FIELD, "label")


def _data_monitors(spec: StudySpec, monitor: str | None) -> list[Any]:
    data = [m for m in spec.monitors if m.kind == "data"]
    if not data:
        raise UsageError(f"study {spec.name!r} has no data monitor to set a reference for")
    if monitor is None:
        return data
    chosen = [m for m in data if m.name == monitor]
    if not chosen:
        raise UsageError(f"--monitor: study {spec.name!r} has no data monitor named {monitor!r} "
                         f"(data monitors: {', '.join(m.name for m in data)})")
    return chosen


def _store_reference(store: Store, base: str, spec: StudySpec, texts: list[str], monitor: str | None,
                     source: str, field: str) -> dict[str, Any]:
    monitors = _data_monitors(spec, monitor)
    need = max(m.window for m in monitors)
    if len(texts) < need:
        raise UsageError(f"reference: {len(texts)} texts; at least one window's worth ({need}, the monitors' "
                         "largest `window`) is needed")
    if len(texts) > MAX_RECORDS_PER_WINDOW:
        raise UsageError(f"reference: at most {MAX_RECORDS_PER_WINDOW} texts (found {len(texts)})")
    row = store.add_data_window(base, "reference", [{field: t} for t in texts], source=source, fields=[field],
                                monitor=monitor)
    out = window_summary(row)
    out["monitors"] = [m.name for m in monitors]
    store.append_event("reference_set", study=base, handled=True, payload={
        "window": row.id, "records": row.n_records, "source": source, "monitors": out["monitors"]})
    return out


def set_reference(store: Store, study: str, texts: Any, *, monitor: str | None = None,
                  source: str = "api") -> dict[str, Any]:
    """Posted texts become the reference of the study's data monitors (or of
    ``monitor``) from their next check on."""
    base, spec = _study(store, study)
    if not isinstance(texts, list) or not texts:
        raise UsageError("texts: expected a non-empty list of strings")
    field = reference_schema(spec).input_field
    records = check_labelled_records([{field: t} if isinstance(t, str) else t for t in texts],
                                     LabelSchema(field, field), with_target=False, where="texts")
    return _store_reference(store, base, spec, [r[field] for r in records], monitor, f"set via {source}", field)


def set_reference_file(store: Store, study: str, path: Path, *, monitor: str | None = None,
                       field: str | None = None) -> dict[str, Any]:
    """``hpod monitor set-reference STUDY FILE``: the ``field`` (default: the
    objective's input field) of every record of a ``.jsonl`` / ``.csv`` file."""
    base, spec = _study(store, study)
    field = field or reference_schema(spec).input_field
    _data_monitors(spec, monitor)
    records = read_labelled_file(Path(path), LabelSchema(field, field), with_target=False,
                                 limit=MAX_RECORDS_PER_WINDOW)
    return _store_reference(store, base, spec, [r[field] for r in records], monitor,
                            f"set via cli: {Path(path).resolve()}", field)
