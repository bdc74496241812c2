"""A trial as users and tools see it: the JSON record the CLI and the API return, and
whether it is feasible."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpod.spec import parse_spec
from hpod.store import Store

if TYPE_CHECKING:
    import optuna

__all__ = [
    "CONSTRAINTS_ATTR",
    "FAIL_REASON_ATTR",
    "HYPERVOLUME_STATE_KEY",
    "INFEASIBLE_ATTR",
    "REJECTED_ATTR",
    "SAMPLER_SECONDS_KEY",
    "constraint_values",
    "feasible",
    "sampler_seconds_row",
    "study_records",
    "trial_record",
]

FAIL_REASON_ATTR = "hpod.fail_reason"
#: Set on a configuration refused unrun because it cannot fit in memory (a PRUNED trial):
#: ``{"reason": ..., "estimate": {"peak_bytes": ..., "parts": ..., "details": ...}}``.
INFEASIBLE_ATTR = "hpod.infeasible"
#: Set on a suggestion the engine closed unrun (``{"reason": "duplicate", "duplicate_of": N}``).
REJECTED_ATTR = "hpod.rejected"
#: Store state key (per study) of the sampler's time per suggestion: ``{"trials": n,
#: "total": seconds, "last": seconds, "max": seconds}``, kept by the engine.
SAMPLER_SECONDS_KEY = "hpod.sampler_seconds"
#: Store state key (per study) of the hypervolume's scale, kept by the engine:
#: ``{"ideal_point": [...], "ideal_point_source": ..., "reference_point": [...],
#: "normalized": x, "raw": y}`` (points oriented for minimization; ``raw`` in the
#: objectives' own units, a product of mixed units). The study row's ``hypervolume`` is
#: the normalized one.
HYPERVOLUME_STATE_KEY = "hpod.hypervolume"


def sampler_seconds_row(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sampler's seconds per suggestion as users see them: mean, last, max and how
    many suggestions they cover; None before the first suggestion."""
    if not stats or not stats.get("trials"):
        return None
    return {"mean": stats["total"] / stats["trials"], "last": stats["last"], "max": stats["max"],
            "trials": stats["trials"]}
#: The trial system attribute holding the constraint violations as one list, in the
#: order of the spec's ``constraints`` (<= 0 is feasible): the form Optuna's
#: ``constraints_func`` writes, which every Optuna sampler, ``Study.best_trials`` and
#: optuna-dashboard read.
CONSTRAINTS_ATTR = "constraints"


def constraint_values(trial: optuna.trial.FrozenTrial, names: Sequence[str] = ()) -> dict[str, float]:
    """The trial's constraint violations by name: list entries take ``names`` (the spec's
    constraints, in order); per-name entries (databases written by earlier hpod
    versions with ``Trial.set_constraint``) keep theirs."""
    out: dict[str, float] = {}
    for key, value in (trial.constraints or {}).items():
        name = names[int(key)] if key.isdigit() and int(key) < len(names) else key
        out[name] = float(value)
    return out


def feasible(trial: optuna.trial.FrozenTrial) -> bool:
    return all(v <= 0 for v in (trial.constraints or {}).values())


def trial_record(trial: optuna.trial.FrozenTrial, objective_names: list[str],
                 constraint_names: Sequence[str] = ()) -> dict[str, Any]:
    """A trial as the JSON the CLI and the API return (``constraint_names``: the spec's
    constraints, in order)."""
    attrs = trial.user_attrs
    info = attrs.get("hpod.info") or {}
    values = (
        {name: float(v) for name, v in zip(objective_names, trial.values)} if trial.values is not None else None
    )
    constraints = constraint_values(trial, constraint_names)
    return {
        "number": trial.number,
        "state": "REJECTED" if attrs.get(REJECTED_ATTR) is not None else trial.state.name,
        "values": values,
        "params": dict(trial.params),
        "constraints": constraints,
        "feasible": trial.state.name == "COMPLETE" and all(v <= 0 for v in constraints.values()),
        "metrics": attrs.get("hpod.metrics", {}),
        "metrics_std": info.get("metrics_std") or {},
        "measurements": attrs.get("hpod.measurements", {}),
        "seeds": attrs.get("hpod.seeds", []),
        "fail_reason": attrs.get(FAIL_REASON_ATTR),
        "attempt": (attrs.get("hpod.ask") or {}).get("attempt", attrs.get("hpod.attempt", 1)),
        # Seconds the sampler took to suggest this configuration (None: re-queued or
        # enqueued, no suggestion).
        "sampler_seconds": (attrs.get("hpod.ask") or {}).get("suggest_seconds")
        if (attrs.get("hpod.ask") or {}).get("sampler") != "requeued" else None,
        "worker": info.get("worker"),
        "energy_spent_joules": info.get("energy_spent_joules") or 0.0,
        "artifact_dir": info.get("artifact_dir"),
        "datetime_start": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "datetime_complete": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        "duration_seconds": trial.duration.total_seconds() if trial.duration else None,
    }


def study_records(store: Store, name: str, *, rejected: bool = False) -> list[dict[str, Any]]:
    """Every trial of a stored study as :func:`trial_record` dicts. Suggestions closed
    unrun as repeats of an evaluated configuration are left out unless ``rejected``;
    the study's counts (``REJECTED``) say how many there were."""
    row = store.get_study(name)
    assert row is not None
    spec = parse_spec(json.loads(row.spec_json))
    study = store.load_optuna_study(name)
    constraints = [c.text for c in spec.parsed_constraints()]
    trials = study.get_trials(deepcopy=False)
    if not rejected:
        trials = [t for t in trials if t.user_attrs.get(REJECTED_ATTR) is None]
    return [trial_record(t, spec.value_names, constraints) for t in trials]
