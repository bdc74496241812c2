"""The spec's ``sampler`` section: the sampler names and every option each takes, checked
where the spec enters (before anything is written), so a study never starts with options
its sampler would refuse later."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from hpod.errors import SpecError

__all__ = ["SAMPLER_NAMES", "validate_sampler_options"]

SAMPLER_NAMES = ("auto", "nsga2", "qlognehvi", "tpe", "gp", "random")

# One validator per option: returns an error text (what is allowed) or None when valid.
_Check = Callable[[Any], "str | None"]


def _int_between(low: int, high: int) -> _Check:
    def check(value: Any) -> str | None:
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        return None if ok else f"an integer from {low} to {high}"

    return check


def _probability(allow_none: bool = False) -> _Check:
    def check(value: Any) -> str | None:
        if value is None and allow_none:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        return None if ok else "a number in [0, 1]" + (" or null" if allow_none else "")

    return check


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def _one_of(*allowed: str) -> _Check:
    def check(value: Any) -> str | None:
        return None if value in allowed else "one of " + ", ".join(allowed)

    return check


def _number_list(length: int) -> _Check:
    def check(value: Any) -> str | None:
        ok = (
            isinstance(value, (list, tuple))
            and len(value) == length
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        )
        return None if ok else f"a list of {length} finite numbers (one per objective)"

    return check


def _options_schema(name: str, n_objectives: int) -> dict[str, _Check]:
    schemas: dict[str, dict[str, _Check]] = {
        "nsga2": {
            "population_size": _int_between(2, 10_000),
            "mutation_prob": _probability(allow_none=True),
            "crossover_prob": _probability(),
            "swapping_prob": _probability(),
        },
        "tpe": {
            "n_startup_trials": _int_between(0, 100_000),
            "n_ei_candidates": _int_between(1, 10_000),
            "multivariate": _boolean,
            "constant_liar": _boolean,
        },
        "gp": {"n_startup_trials": _int_between(1, 100_000), "deterministic_objective": _boolean},
        "random": {},
        "qlognehvi": {
            "n_startup_trials": _int_between(2, 100_000),
            "num_restarts": _int_between(1, 1_000),
            "raw_samples": _int_between(1, 100_000),
            "mc_samples": _int_between(1, 100_000),
            "max_iterations": _int_between(1, 10_000),
            "reference_point": _number_list(n_objectives),
        },
        "auto": {
            "n_startup_trials": _int_between(1, 100_000),
            "switch_after": _int_between(2, 1_000_000),
            "population_size": _int_between(2, 10_000),
            "deterministic_objective": _boolean,
            "multi_fidelity": _boolean,
            # improvement per expected cost; default: on when the budget is joules or seconds
            "cost_aware": _boolean,
            "cost_metric": _one_of("energy_joules", "time_seconds"),
        },
    }
    return schemas[name]


def validate_sampler_options(name: str, options: Mapping[str, Any] | None, n_objectives: int) -> dict[str, Any]:
    """``options`` checked against sampler ``name``'s options; returns them as a dict.

    Raises:
        SpecError: ``sampler.name`` is unknown, an option is unknown (the message lists
            the allowed ones) or its value is out of range.
    """
    if name not in SAMPLER_NAMES:
        raise SpecError("sampler.name", "unknown sampler", found=name, allowed=", ".join(SAMPLER_NAMES))
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise SpecError("sampler.options", "must be a mapping of option names to values", found=options)
    schema = _options_schema(name, n_objectives)
    for key, value in options.items():
        if key not in schema:
            allowed = ", ".join(sorted(schema)) or f"none (sampler {name!r} takes no options)"
            raise SpecError(f"sampler.options.{key}", f"unknown option for sampler {name!r}", allowed=allowed)
        problem = schema[key](value)
        if problem is not None:
            raise SpecError(f"sampler.options.{key}", "invalid value", found=value, allowed=problem)
    return dict(options)
