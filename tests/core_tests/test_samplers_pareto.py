"""Pareto mask, hypervolume and reference-point helpers against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from hpod.core.pareto import derive_reference_point, hypervolume, non_dominated_mask


def test_non_dominated_mask_keeps_the_front_and_duplicates() -> None:
    values = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [2.5, 2.5], [2.0, 2.0], [4.0, 4.0]])
    assert non_dominated_mask(values).tolist() == [True, True, True, False, True, False]


def test_hypervolume_two_objectives_staircase() -> None:
    # Three rectangles against (4, 4): 3*1 + 2*1 + 1*1.
    points = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    assert hypervolume(points, np.array([4.0, 4.0])) == pytest.approx(6.0)


def test_hypervolume_three_objectives_overlapping_boxes() -> None:
    # Two boxes of volume 2 overlapping in a unit cube.
    points = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    assert hypervolume(points, np.array([2.0, 2.0, 2.0])) == pytest.approx(3.0)


def test_hypervolume_four_objectives_ignores_dominated_and_outside_points() -> None:
    points = np.array([[0.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.5, 0.5], [2.0, 0.0, 0.0, 0.0]])
    assert hypervolume(points, np.ones(4)) == pytest.approx(1.0)


def test_hypervolume_four_objectives_matches_monte_carlo() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((40, 4))
    reference = np.full(4, 1.1)
    samples = rng.random((200_000, 4)) * 1.1
    dominated = np.zeros(len(samples), dtype=bool)
    for point in points:
        dominated |= np.all(samples >= point, axis=1)
    assert hypervolume(points, reference) == pytest.approx(dominated.mean() * 1.1**4, rel=0.02)


def test_hypervolume_of_nothing_inside_the_reference_box_is_zero() -> None:
    assert hypervolume(np.array([[5.0, 5.0]]), np.array([4.0, 4.0])) == 0.0
    assert hypervolume(np.empty((0, 2)), np.array([4.0, 4.0])) == 0.0


def test_hypervolume_rejects_a_reference_point_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="reference_point has 3 entries but points have 2 objectives"):
        hypervolume(np.array([[1.0, 1.0]]), np.array([2.0, 2.0, 2.0]))


def test_derived_reference_point_is_nadir_plus_ten_percent_of_range() -> None:
    values = np.array([[0.0, 10.0], [2.0, 0.0], [1.0, 5.0]])
    np.testing.assert_allclose(derive_reference_point(values), [2.2, 11.0])
    # A constant objective still gets a point strictly beyond it.
    reference = derive_reference_point(np.array([[3.0, 0.0], [3.0, 0.0]]))
    assert reference[0] > 3.0 and reference[1] > 0.0


def test_knee_is_the_front_point_nearest_the_scaled_ideal_corner():
    import numpy as np

    from hpod.core.pareto import knee_index

    # units differ by 1e9: scaling makes the balanced point the knee, not the extremes
    front = np.array([[0.0, 4e9], [1.0, 1e9], [4.0, 0.0]])
    assert knee_index(front) == 1
    # ties go to the smallest order key
    tied = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert knee_index(tied, [7, 3]) == 1
