"""Labelled records (an input and its reference output): the schema an objective
declares and the readers that check them.

A labelled record is a flat object with two text fields, the objective's
``input_field`` (an article, a review...) and ``target_field`` (its summary, its
label...). Files are JSONL (one object a line) or CSV (a header naming the fields).
Every problem raises :class:`~hpod.errors.DataError` naming where (file and line, or
``records[i]``), the field, what was found and what is allowed — before anything is
kept, so a bad record never leaves half a window behind.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from hpod.errors import DataError

__all__ = [
    "LABELLED_SUFFIXES",
    "MAX_FIELD_CHARS",
    "LabelSchema",
    "check_labelled_records",
    "read_labelled_file",
]

LABELLED_SUFFIXES = (".jsonl", ".csv")
#: longest text one field may hold (a bound on what one record can cost)
MAX_FIELD_CHARS = 200_000


@dataclass(frozen=True)
class LabelSchema:
    """The two fields of a labelled record, and what the target is (``text`` or
    ``label``: a class name)."""

    input_field: str
    target_field: str
    target_kind: str = "text"

    @property
    def fields(self) -> tuple[str, str]:
        return (self.input_field, self.target_field)

    def describe(self) -> str:
        return f'{{"{self.input_field}": "...", "{self.target_field}": "..."}}'


@overload
def _text(record: Any, field: str, where: str) -> str: ...


@overload
def _text(record: Any, field: str, where: str, *, required: bool) -> str | None: ...


def _text(record: Any, field: str, where: str, *, required: bool = True) -> str | None:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with field {field!r}, found {type(record).__name__}")
    if field not in record:
        if not required:
            return None
        present = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(f"{where}: record lacks field {field!r} (fields present: {present})")
    value = record[field]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {field!r} must be text, found {type(value).__name__} ({value!r:.40})")
    if not value.strip():
        raise DataError(f"{where}: field {field!r} is empty")
    if len(value) > MAX_FIELD_CHARS:
        raise DataError(f"{where}: field {field!r} holds {len(value)} characters; at most {MAX_FIELD_CHARS}")
    return value


def _record(raw: Any, schema: LabelSchema, where: str, *, with_target: bool) -> dict[str, str]:
    out: dict[str, str] = {schema.input_field: _text(raw, schema.input_field, where)}
    if with_target:
        out[schema.target_field] = _text(raw, schema.target_field, where)
    return out


def check_labelled_records(items: Sequence[Any], schema: LabelSchema, *, with_target: bool = True,
                           where: str = "records") -> list[dict[str, str]]:
    """Check posted records (``records[i]`` in messages); returns them reduced to the
    schema's fields. ``with_target=False`` asks for the input field only (reference
    texts)."""
    if not isinstance(items, (list, tuple)) or not items:
        raise DataError(f"{where}: expected a non-empty list of records like {schema.describe()}")
    return [_record(item, schema, f"{where}[{i}]", with_target=with_target) for i, item in enumerate(items)]


def read_labelled_file(path: Path, schema: LabelSchema, *, with_target: bool = True,
                       limit: int = 1_000_000) -> list[dict[str, str]]:
    """Read and check every record of a ``.jsonl`` or ``.csv`` file (``path:line`` in
    messages). Raises DataError for a missing, empty or non-UTF-8 file, a bad JSON
    line, a missing or empty field, or more than ``limit`` records."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found" if not path.exists() else f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix not in LABELLED_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}; use one of "
                        f"{', '.join(LABELLED_SUFFIXES)}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad_line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{bad_line}: not UTF-8 (byte 0x{raw[exc.start]:02x}); re-encode the file as UTF-8") \
            from None
    records: list[dict[str, str]] = []
    if suffix == ".jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            records.append(_record(item, schema, f"{path}:{line_no}", with_target=with_target))
            if len(records) > limit:
                raise DataError(f"{path}: more than {limit} records; split the file")
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = reader.fieldnames or []
        wanted = schema.fields if with_target else (schema.input_field,)
        for field in wanted:
            if field not in header:
                raise DataError(f"{path}:1: header lacks field {field!r} (columns: {', '.join(header) or 'none'})")
        for row in reader:
            records.append(_record(row, schema, f"{path}:{reader.line_num}", with_target=with_target))
            if len(records) > limit:
                raise DataError(f"{path}: more than {limit} records; split the file")
    if not records:
        raise DataError(f"{path}: no records (expected lines like {schema.describe()})")
    return records
