"""hpod's exact hypervolume (no BoTorch import) against BoTorch's box decomposition,
and the normalized hypervolume's scale."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from hpod.core.pareto import derive_ideal_point, hypervolume, normalized_hypervolume

# Also run on the lowest declared optuna/botorch (scripts/lowest-versions.sh).
pytestmark = pytest.mark.floor


def _botorch_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    import torch
    from botorch.utils.multi_objective.box_decompositions.dominated import DominatedPartitioning

    inside = points[np.all(points < reference, axis=1)]
    if inside.shape[0] == 0:
        return 0.0
    partitioning = DominatedPartitioning(ref_point=torch.as_tensor(-reference, dtype=torch.double),
                                         Y=torch.as_tensor(-inside, dtype=torch.double))
    return float(partitioning.compute_hypervolume().item())


@pytest.mark.parametrize(("m", "n", "seed"), [(2, 40, 0), (3, 60, 1), (4, 30, 2), (5, 12, 3), (3, 25, 4)])
def test_hypervolume_matches_botorch(m: int, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # a front on the sphere (all non-dominated), dominated points, duplicates, and points
    # outside the reference box
    front = np.abs(rng.normal(size=(n, m)))
    front /= np.linalg.norm(front, axis=1, keepdims=True)
    dominated = front[: n // 3] + rng.uniform(0.01, 0.3, size=(n // 3, m))
    outside = rng.uniform(0.0, 2.0, size=(5, m)) + np.eye(m)[rng.integers(0, m, 5)] * 2
    points = np.vstack([front, dominated, front[:3], outside])
    reference = np.full(m, 1.2)
    assert hypervolume(points, reference) == pytest.approx(_botorch_hypervolume(points, reference), rel=1e-9)


def test_hypervolume_small_cases_by_hand() -> None:
    assert hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), np.array([3.0, 3.0])) == pytest.approx(3.0)
    assert hypervolume(np.array([[0.0, 0.0, 0.0]]), np.array([1.0, 2.0, 3.0])) == pytest.approx(6.0)
    assert hypervolume(np.array([[5.0, 0.0]]), np.array([3.0, 3.0])) == 0.0
    assert hypervolume(np.zeros((0, 2)), np.array([1.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match="reference_point has 3 entries"):
        hypervolume(np.array([[1.0, 2.0]]), np.array([3.0, 3.0, 3.0]))


def test_normalized_hypervolume_is_unitless_and_in_unit_interval() -> None:
    points = np.array([[0.5, 100.0], [0.2, 300.0]])
    ideal, reference = np.array([0.0, 0.0]), np.array([1.0, 400.0])
    value = normalized_hypervolume(points, ideal, reference)
    assert value == pytest.approx(hypervolume(points, reference) / (1.0 * 400.0))
    # the same front in other units (ms instead of s) has the same normalized hypervolume
    assert normalized_hypervolume(points * [1, 1000], ideal, reference * [1, 1000]) == pytest.approx(value)
    # a point beyond the ideal counts as the ideal: never above 1
    assert normalized_hypervolume(np.array([[-1.0, -5.0]]), ideal, reference) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="below its reference"):
        normalized_hypervolume(points, np.array([2.0, 0.0]), reference)


def test_derive_ideal_point() -> None:
    values = np.array([[0.3, 10.0, -0.4], [0.5, 20.0, -0.2]])
    reference = np.array([0.6, 22.0, -0.1])
    ideal = derive_ideal_point(values, reference)
    # non-negative costs: 0; a negated maximized score: best - (reference - best)
    assert ideal.tolist() == pytest.approx([0.0, 0.0, -0.7])


def test_hypervolume_does_not_import_torch() -> None:
    code = ("import sys, numpy as np; from hpod.core.pareto import hypervolume; "
            "hypervolume(np.array([[1.,2.,3.],[2.,1.,3.]]), np.array([4.,4.,4.])); "
            "print('torch' in sys.modules, 'botorch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
