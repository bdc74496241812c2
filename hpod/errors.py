"""hpod's error hierarchy.

One root, :class:`HpodError`; each subclass is named for what the caller does next.
The CLI maps :class:`UsageError` (and its subclasses) to exit code 2 and prints the
message only, never a traceback.
"""

from __future__ import annotations


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
