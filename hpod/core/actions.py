"""Which study states take which user action: one rule for the control API, which
refuses an action before it writes the event (409, ``hpod pause/resume/cancel`` exit
2), and for the daemon, which acts on the event (and refuses it the same way when the
study's state changed in between).

``resume`` continues a paused study (or one that failed, e.g. its objective's
preparation); a completed or cancelled study is continued by submitting its spec again
(a larger budget), which says what changed.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["ACTION_STATES", "StudyAction", "action_refusal"]

StudyAction = Literal["pause", "resume", "cancel"]

#: the study states each action applies to (a repeated action is a no-op, not an error)
ACTION_STATES: dict[StudyAction, frozenset[str]] = {
    "pause": frozenset({"queued", "running", "paused"}),
    "resume": frozenset({"queued", "running", "paused", "failed"}),
    "cancel": frozenset({"queued", "running", "paused", "failed"}),
}


def action_refusal(action: StudyAction, study: str, state: str) -> str | None:
    """Why ``action`` cannot apply to ``study`` in ``state``, or None when it can."""
    if state in ACTION_STATES[action]:
        return None
    if action == "resume" and state in ("completed", "cancelled"):
        return (f"study {study!r} is {state}: resume continues a paused study; submit its spec again "
                "(`hpod submit SPEC.yaml`, with a larger budget for a completed one) to continue it")
    if action == "cancel" and state == "cancelled":
        return f"study {study!r} is already cancelled"
    allowed = ", ".join(sorted(ACTION_STATES[action]))
    return f"study {study!r} is {state}: nothing to {action} (allowed in states: {allowed})"
