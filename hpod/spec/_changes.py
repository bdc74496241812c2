"""What changed between a study's stored spec and the one it is run or submitted with.

A study keeps what gives its trials their meaning — the objective and its parameters,
the space, the objectives, the constraints, the seeds and the strategy: results from
before and after such a change are not comparable, so the change is refused and a
different study needs another name. Everything else (budget, sampler, pruner, reference
point, monitors, schedule, retune, serving, resources, priority, description) may change
when a study is resumed or resubmitted; those changes are reported, never applied
silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hpod.errors import HpodError, SpecError
from hpod.spec._study import parse_spec

__all__ = ["IDENTITY_FIELDS", "SpecChange", "check_identity", "spec_changes"]

#: top-level spec fields a study keeps for its whole life (see the module doc)
IDENTITY_FIELDS: tuple[str, ...] = ("objective", "space", "objectives", "constraints", "seeds",
                                    "seeds_adaptive", "strategy")


@dataclass(frozen=True)
class SpecChange:
    """One changed leaf: its dotted path, the stored value and the new one (``None``
    where the field was absent)."""

    path: str
    old: Any
    new: Any

    @property
    def identity(self) -> bool:
        return self.path.split(".", 1)[0] in IDENTITY_FIELDS

    def __str__(self) -> str:
        return f"{self.path}: {_short(self.old)} → {_short(self.new)}"


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _diff(old: Any, new: Any, path: str, out: list[SpecChange]) -> None:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for key in sorted(set(old) | set(new), key=str):
            _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key), out)
    elif old != new:
        out.append(SpecChange(path, old, new))


def _normalized(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A stored spec as today's parser writes it (defaults added since it was stored);
    as stored when it no longer parses (the comparison then shows every difference)."""
    try:
        return parse_spec(dict(stored), source="stored spec").model_dump(mode="json")
    except HpodError:
        return dict(stored)


def spec_changes(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[SpecChange]:
    """Every changed leaf between a stored spec (a ``model_dump`` or its JSON) and a new
    one, in path order; ``storage`` (where the study lives, not what it is) excluded."""
    out: list[SpecChange] = []
    _diff(_normalized(stored), dict(new), "", out)
    return [c for c in out if c.path.split(".", 1)[0] != "storage"]


def check_identity(name: str, changes: list[SpecChange]) -> None:
    """SpecError naming the first change to what the study keeps (:data:`IDENTITY_FIELDS`)."""
    kept = [c for c in changes if c.identity]
    if not kept:
        return
    first = kept[0]
    more = f" (and {len(kept) - 1} more: {', '.join(c.path for c in kept[1:4])})" if len(kept) > 1 else ""
    raise SpecError(first.path, f"study {name!r} exists with {_short(first.old)} here{more}; a study keeps its "
                    f"{', '.join(IDENTITY_FIELDS)} for its whole life: give the spec another name to start a "
                    f"different study (or `hpod retune {name}` to retrain on new data)", found=first.new)
