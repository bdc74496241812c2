"""Pareto-front and hypervolume helpers for minimized objective values.

Every function takes values already oriented for minimization (negate maximized
objectives first). The hypervolume is exact (the WFG algorithm of While, Bradstreet
and Barone, 2012, in numpy): no torch or BoTorch import, so a live display can call it.

Normalized hypervolume: each objective is scaled to [0, 1] by its ideal value (0) and
its reference value (1) before the volume is taken, so the result lies in [0, 1]
whatever the units (1 means a point reaches the ideal in every objective) and studies
with the same ideal and reference points can be compared.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "derive_ideal_point",
    "derive_reference_point",
    "hypervolume",
    "knee_index",
    "non_dominated_mask",
    "normalized_hypervolume",
]

#: Fraction of each objective's observed range added beyond the nadir point when a
#: reference point is derived (the common "nadir + 10 %" convention).
REFERENCE_POINT_MARGIN = 0.1


def _as_matrix(values: np.ndarray | list[list[float]], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n points x m objectives); got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite; got {int((~np.isfinite(array)).sum())} NaN/inf entries")
    return array


def non_dominated_mask(values: np.ndarray) -> np.ndarray:
    """Boolean mask (n,) of the points of ``values`` (n x m, minimized) that no other point dominates.

    A point dominates another when it is no worse in every objective and better in one.
    Duplicates of a non-dominated point are all kept.
    """
    points = _as_matrix(values, "values")
    n = points.shape[0]
    mask = np.ones(n, dtype=bool)
    # O(n^2 m) with numpy broadcasting one row at a time: fine for the thousands of
    # trials a study holds, and no torch import just to read a front.
    for i in range(n):
        if not mask[i]:
            continue
        no_worse = np.all(points <= points[i], axis=1)
        better = np.any(points < points[i], axis=1)
        if np.any(no_worse & better):
            mask[i] = False
    return mask


def hypervolume(points: np.ndarray, reference_point: np.ndarray) -> float:
    """Hypervolume dominated by ``points`` (n x m, minimized) and bounded by ``reference_point`` (m,).

    Points that do not strictly dominate the reference point contribute nothing. Exact
    (WFG); its cost against BoTorch's is in benchmarks/results/hypervolume.md.
    """
    reference = np.asarray(reference_point, dtype=float).reshape(-1)
    if len(points) == 0:
        return 0.0
    array = _as_matrix(points, "points")
    if array.shape[1] != reference.shape[0]:
        raise ValueError(
            f"reference_point has {reference.shape[0]} entries but points have {array.shape[1]} objectives"
        )
    if not np.all(np.isfinite(reference)):
        raise ValueError(f"reference_point must be finite; got {reference.tolist()}")
    inside = array[np.all(array < reference, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    return _wfg(_front(inside), reference)


def normalized_hypervolume(points: np.ndarray, ideal_point: np.ndarray, reference_point: np.ndarray) -> float:
    """Hypervolume of ``points`` (n x m, minimized) after scaling each objective so that its
    ideal value maps to 0 and its reference value to 1: a number in [0, 1].

    Values better than the ideal count as the ideal (the result stays <= 1); each ideal
    value must be strictly below its reference value.
    """
    ideal = np.asarray(ideal_point, dtype=float).reshape(-1)
    reference = np.asarray(reference_point, dtype=float).reshape(-1)
    if ideal.shape != reference.shape:
        raise ValueError(f"ideal_point has {ideal.shape[0]} entries but reference_point has {reference.shape[0]}")
    if not (np.all(np.isfinite(ideal)) and np.all(ideal < reference)):
        raise ValueError(
            f"each ideal value must be finite and below its reference value; got ideal {ideal.tolist()}, "
            f"reference {reference.tolist()}"
        )
    if len(points) == 0:
        return 0.0
    array = _as_matrix(points, "points")
    if array.shape[1] != ideal.shape[0]:
        raise ValueError(f"ideal_point has {ideal.shape[0]} entries but points have {array.shape[1]} objectives")
    scaled = np.maximum((array - ideal) / (reference - ideal), 0.0)
    return min(1.0, hypervolume(scaled, np.ones_like(ideal)))


def _front(points: np.ndarray) -> np.ndarray:
    """The distinct non-dominated rows of ``points``."""
    unique = np.unique(points, axis=0)
    front: np.ndarray = unique[non_dominated_mask(unique)]
    return front


def _wfg(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume of mutually non-dominated ``points`` that all lie strictly below
    ``reference`` (WFG: the sum of each point's exclusive contribution)."""
    n, m = points.shape
    if n == 0:
        return 0.0
    if n == 1:
        return float(np.prod(reference - points[0]))
    if m == 1:
        return float(reference[0] - points[:, 0].min())
    if m == 2:
        return _area(points, reference)
    if m == 3:
        # Sweep along the third objective: slabs between successive values, each the
        # area the points reaching into it dominate in the first two objectives.
        order = points[np.argsort(points[:, 2], kind="stable")]
        tops = np.append(order[1:, 2], reference[2])
        total = 0.0
        for i in range(n):
            depth = tops[i] - order[i, 2]
            if depth > 0:
                total += depth * _area(order[: i + 1, :2], reference[:2])
        return total
    # The last objective descending keeps the limited sets small (WFG's ordering).
    ordered = points[np.argsort(-points[:, -1], kind="stable")]
    total = 0.0
    for i in range(n):
        p = ordered[i]
        rest = ordered[i + 1:]
        inclusive = float(np.prod(reference - p))
        if rest.shape[0] == 0:
            total += inclusive
            continue
        limited = np.maximum(rest, p)
        total += inclusive - _wfg(_front(limited), reference)
    return total


def _area(points: np.ndarray, reference: np.ndarray) -> float:
    """Area that ``points`` (n x 2, below ``reference``; dominated ones allowed) dominate."""
    order = points[np.argsort(points[:, 0], kind="stable")]
    # along increasing x, the lowest y so far bounds the slab up to the next x
    right = np.append(order[1:, 0], reference[0])
    low = np.minimum.accumulate(order[:, 1])
    return float(np.sum((right - order[:, 0]) * (reference[1] - low)))


def derive_ideal_point(values: np.ndarray, reference_point: np.ndarray) -> np.ndarray:
    """Ideal point for ``values`` (n x m, minimized) when no one states it: 0 for an
    objective whose observed values are all >= 0 below a positive reference value (costs,
    losses, error rates: nothing is better than 0); otherwise the best observed value
    minus its distance to ``reference_point`` (the best value so far scales to 0.5).
    Always strictly below the reference point."""
    array = _as_matrix(values, "values")
    reference = np.asarray(reference_point, dtype=float).reshape(-1)
    if array.shape[0] == 0:
        raise ValueError("values must hold at least one point to derive an ideal point")
    if array.shape[1] != reference.shape[0]:
        raise ValueError(f"reference_point has {reference.shape[0]} entries but values have {array.shape[1]}")
    best = array.min(axis=0)
    span = np.maximum(np.maximum(reference - best, 0.1 * np.abs(reference)), 1e-12)
    return np.where((best >= 0) & (reference > 0), 0.0, reference - 2 * span)


def derive_reference_point(values: np.ndarray, margin: float = REFERENCE_POINT_MARGIN) -> np.ndarray:
    """Reference point for ``values`` (n x m, minimized): the nadir (worst value per objective)
    plus ``margin`` (default 10 %) of each objective's observed range.

    Where an objective's range is zero, ``margin`` of its magnitude (or ``margin`` itself
    when the value is 0) is used, so the point still lies strictly beyond every value.
    """
    array = _as_matrix(values, "values")
    if array.shape[0] == 0:
        raise ValueError("values must hold at least one point to derive a reference point")
    if not margin > 0:
        raise ValueError(f"margin must be > 0; got {margin}")
    nadir = array.max(axis=0)
    spread = nadir - array.min(axis=0)
    spread = np.where(spread > 0, spread, np.where(nadir != 0, np.abs(nadir), 1.0))
    reference: np.ndarray = nadir + margin * spread
    return reference


def knee_index(front: np.ndarray, order: list[int] | None = None) -> int:
    """Index of the knee of ``front`` (n x m, minimized, mutually non-dominated): the
    point nearest the ideal corner once each objective is scaled to [0, 1] over the
    front, whatever the units. Ties go to the smallest ``order`` (e.g. trial number).
    """
    points = _as_matrix(front, "front")
    if points.shape[0] == 0:
        raise ValueError("front is empty")
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    distance = np.linalg.norm((points - low) / span, axis=1)
    keys = np.asarray(order if order is not None else range(len(points)))
    return int(np.lexsort((keys, distance))[0])
