"""hpod's error hierarchy.

One root, :class:`HpodError`; each subclass is named for what the caller does next.
The CLI maps :class:`UsageError` (and its subclasses) to exit code 2 and prints the
message only, never a traceback.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError


class HpodError(Exception):
    """Root of every error hpod raises on purpose."""


class UsageError(HpodError):
    """The user asked for something invalid: fix the input and run again (CLI exit 2)."""


class SpecError(UsageError):
    """A study spec is invalid.

    ``path`` is the dotted field path (``space.learning_rate.low``), ``found`` what was
    there and ``allowed`` what would be accepted.
    """

    def __init__(self, path: str, message: str, *, found: object = None, allowed: str | None = None,
                 suggestion: str | None = None):
        self.path = path
        self.found = found
        self.allowed = allowed
        self.suggestion = suggestion
        text = f"{path}: {message}" if path else message
        if found is not None:
            text += f" (found {found!r})"
        if suggestion:
            text += f"; did you mean {suggestion!r}?"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class ObjectiveNotAllowed(SpecError):
    """A spec submitted to the daemon names an objective its ``allowed_objectives`` does
    not list: nothing was imported or run. Ask the operator to allow it (API: 403)."""


class StudyBusy(UsageError):
    """Another controller (an ``hpod run`` or a daemon) drives this study on this
    database: wait for it to finish or stop it, then run the study again."""


class DataError(UsageError):
    """A data file is missing, empty, not UTF-8 or lacks a field: fix the file or the spec."""


class StorageError(HpodError):
    """The database could not be reached or written. Transient: retry with backoff."""


class StorageUrlError(UsageError):
    """A storage URL cannot be opened at all (bad scheme, missing directory): fix the URL."""


class StudyNotFound(UsageError):
    """No study of that name exists in the storage."""


class TrialFailed(HpodError):
    """A trial failed on its own (the objective raised, returned NaN, ran out of memory,
    or its process died). The study records the reason and goes on."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


class TrialPruned(HpodError):
    """Raised inside a trial when a pruner or early stopping stops it. Not a failure."""


class LeaseLost(HpodError):
    """This process no longer holds the lease on a trial: drop the result, do not retry."""


class DaemonUnreachable(HpodError):
    """The daemon's API did not answer: fall back to reading the database."""


# --------------------------------------------------------------- pydantic errors
#: pydantic error types, the user's actual mistake first; type errors of the other
#: branches of a union last (a wrong ``low`` is reported, not "is not a bool").
_ERROR_RANK = {"value_error": 0, "assertion_error": 0, "literal_error": 1, "extra_forbidden": 1,
               "union_tag_invalid": 1, "missing": 2}
#: pydantic's labels for the branches of a plain union: they say nothing to a user.
_TYPE_LABELS = frozenset({"float", "int", "bool", "str", "none"})


@dataclass(frozen=True)
class ValidationIssue:
    """The one error of a pydantic ``ValidationError`` worth showing: where (``loc``),
    the kind (pydantic's error type), the message and the value found there."""

    loc: tuple[Any, ...]
    kind: str
    message: str
    found: Any


def first_validation_issue(exc: ValidationError) -> ValidationIssue:
    """The error a user should fix first (see ``_ERROR_RANK``), its message without
    pydantic's ``Value error, `` prefix."""
    errors = list(enumerate(exc.errors()))
    errors.sort(key=lambda ie: (_ERROR_RANK.get(ie[1]["type"], 3), ie[0]))
    err = errors[0][1]
    return ValidationIssue(loc=tuple(err["loc"]), kind=err["type"],
                           message=str(err["msg"]).removeprefix("Value error, "), found=err.get("input"))


def field_path(loc: tuple[Any, ...], *, prefix: str = "", branch_labels: Collection[str] = ()) -> str:
    """``("space", "lr", "low")`` → ``prefix.space.lr.low``; list indices as ``[i]``;
    pydantic's union-branch labels (and ``branch_labels``) left out."""
    parts: list[str] = [prefix] if prefix else []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif "[" in str(item) or str(item) in _TYPE_LABELS or str(item) in branch_labels:
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The one pydantic model an annotation holds (``Model``, ``Model | None``,
    ``list[Model]``, ``dict[str, Model]``), or None."""
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    if typing.get_origin(annotation) is typing.Annotated:
        return _model_in(typing.get_args(annotation)[0])
    found = {m for m in map(_model_in, typing.get_args(annotation)) if m is not None}
    if len(found) == 1 and (isinstance(annotation, types.UnionType) or typing.get_origin(annotation)
                            in (typing.Union, list, dict, tuple)):
        return found.pop()
    return None


def field_names_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """The field names a model accepts where ``loc`` (a pydantic error location) ends,
    following nested models, optional ones and lists or mappings of them; None where
    the location leaves the models (a free-form mapping, a union of models)."""
    current: type[BaseModel] = model
    for part in loc[:-1]:
        if isinstance(part, int) or str(part) not in current.model_fields:
            if isinstance(part, int) or part in ("list", "dict"):
                continue  # a list index, or a key of a mapping of models
            return None
        nested = _model_in(current.model_fields[str(part)].annotation)
        if nested is None:
            return None
        current = nested
    return sorted(current.model_fields)


def unknown_key_error(path: str, key: str, allowed: Collection[str], *, message: str = "unknown option",
                      found: object = None) -> SpecError:
    """A key nobody accepts: the message names it, the closest allowed key ("did you
    mean") and every allowed key."""
    close = difflib.get_close_matches(str(key), list(allowed), n=1)
    return SpecError(path, message, found=found, suggestion=close[0] if close else None,
                     allowed=", ".join(sorted(allowed)) or "no options")


def spec_error_from(exc: ValidationError, *, prefix: str = "", branch_labels: Collection[str] = (),
                    unknown: str = "unknown field",
                    allowed_for_unknown: str | Callable[[tuple[Any, ...]], str] | None = None,
                    model: type[BaseModel] | None = None) -> SpecError:
    """The :class:`SpecError` for a pydantic ``ValidationError`` of a spec section: the
    one place that turns pydantic's errors into hpod's message (field path, what was
    found, what is allowed). ``prefix`` is the section's path (``objective.params``);
    ``model`` is the validated model: an unknown field is then answered with the fields
    accepted there and the closest one ("did you mean"); ``allowed_for_unknown`` says
    what an unknown field could have been instead (text, or a function of the error's
    location)."""
    issue = first_validation_issue(exc)
    path = field_path(issue.loc, prefix=prefix, branch_labels=branch_labels)
    found = None if isinstance(issue.found, (dict, list)) else issue.found
    if issue.kind == "extra_forbidden":
        allowed = allowed_for_unknown(issue.loc) if callable(allowed_for_unknown) else allowed_for_unknown
        names = field_names_at(model, issue.loc) if model is not None and issue.loc else None
        if names is not None:
            close = difflib.get_close_matches(str(issue.loc[-1]), names, n=1)
            return SpecError(path, unknown, found=found, suggestion=close[0] if close else None,
                             allowed=allowed or ", ".join(names))
        return SpecError(path, unknown, found=found, allowed=allowed)
    if issue.kind == "missing":
        return SpecError(path, "required field is missing")
    if "found" in issue.message:
        found = None
    return SpecError(path, issue.message, found=found)
