"""Pareto-front and hypervolume helpers for minimized objective values.

Every function takes values already oriented for minimization (negate maximized
objectives first); hypervolume is computed with BoTorch's public box decomposition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_reference_point", "hypervolume", "knee_index", "non_dominated_mask"]

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

    Points that do not strictly dominate the reference point contribute nothing.
    Uses ``botorch``'s ``DominatedPartitioning`` (about 1 s for 300 mutually
    non-dominated points in 4 objectives on one core).
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
    inside = inside[non_dominated_mask(inside)]
    if inside.shape[1] == 1:
        return float(reference[0] - inside[:, 0].min())

    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import (
        DominatedPartitioning,
    )

    # BoTorch maximizes: negate both the points and the reference point.
    partitioning = DominatedPartitioning(
        ref_point=torch.as_tensor(-reference, dtype=torch.double),
        Y=torch.as_tensor(-inside, dtype=torch.double),
    )
    return float(partitioning.compute_hypervolume().item())


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
    return nadir + margin * spread


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
