"""hpod's error hierarchy.

One root, :class:`HpodError`; each subclass is named for what the caller does next.
The CLI maps :class:`UsageError` (and its subclasses) to exit code 2 and prints the
message only, never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError


class HpodError(Exception):
    """Root of every error hpod raises on purpose."""


class UsageError(HpodError):
    """The user asked for something invalid: fix the input and run again (CLI exit 2)."""


class SpecError(UsageError):
    """A study spec is invalid.

    ``path`` is the dotted field path (``space.learning_rate.low``), ``found`` what was
    there and ``allowed`` what would be accepted.
    """

    def __init__(self, path: str, message: str, *, found: object = None, allowed: str | None = None):
        self.path = path
        self.found = found
        self.allowed = allowed
        text = f"{path}: {message}" if path else message
        if found is not None:
            text += f" (found {found!r})"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class ObjectiveNotAllowed(SpecError):
    """A spec submitted to the daemon names an objective its ``allowed_objectives`` does
    not list: nothing was imported or run. Ask the operator to allow it (API: 403)."""


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


def spec_error_from(exc: ValidationError, *, prefix: str = "", branch_labels: Collection[str] = (),
                    unknown: str = "unknown field",
                    allowed_for_unknown: str | Callable[[tuple[Any, ...]], str] | None = None) -> SpecError:
    """The :class:`SpecError` for a pydantic ``ValidationError`` of a spec section: the
    one place that turns pydantic's errors into hpod's message (field path, what was
    found, what is allowed). ``prefix`` is the section's path (``objective.params``);
    ``allowed_for_unknown`` says what an unknown field could have been (text, or a
    function of the error's location)."""
    issue = first_validation_issue(exc)
    path = field_path(issue.loc, prefix=prefix, branch_labels=branch_labels)
    found = None if isinstance(issue.found, (dict, list)) else issue.found
    if issue.kind == "extra_forbidden":
        allowed = allowed_for_unknown(issue.loc) if callable(allowed_for_unknown) else allowed_for_unknown
        return SpecError(path, unknown, found=found, allowed=allowed)
    if issue.kind == "missing":
        return SpecError(path, "required field is missing")
    if "found" in issue.message:
        found = None
    return SpecError(path, issue.message, found=found)
