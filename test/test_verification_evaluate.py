"""Closure precision / recall / PR curve against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.verification.evaluate import ClosureGroundTruth, closure_metrics, pr_curve

# A route of 5 places driven twice: keyframes 0-4 then 5-9, place = index mod 5.
PLACES = np.array([0, 1, 2, 3, 4, 0, 1, 2, 3, 4])


def test_revisits_by_place_index():
    truth = ClosureGroundTruth.from_places(PLACES)
    # keyframes 5..9 each see a place first seen 5 keyframes earlier
    assert truth.revisits(min_gap=3).tolist() == [False] * 5 + [True] * 5
    # every revisit is exactly 5 keyframes back: a gap of 5 keeps them, 6 loses them all
    assert truth.revisits(min_gap=5).tolist() == [False] * 5 + [True] * 5
    assert not truth.revisits(min_gap=6).any()
    assert truth.same_place(np.array([6, 6]), np.array([0, 1])).tolist() == [False, True]
    tolerant = ClosureGroundTruth.from_places(PLACES, tolerance=1)
    assert tolerant.same_place(np.array([6, 6, 8]), np.array([0, 1, 1])).tolist() == \
        [True, True, False]
    # with tolerance 1 and min_gap 1, neighbouring keyframes count as the same place
    assert tolerant.revisits(min_gap=1).tolist() == [False] + [True] * 9


def test_closure_metrics_hand_computed():
    truth = ClosureGroundTruth.from_places(PLACES)
    revisits = truth.revisits(min_gap=3)
    # closures: 5->0 true, 6->1 true, 6->2 false, 8->4 false, 3->0 false, 9->4 true
    query = np.array([5, 6, 6, 8, 3, 9])
    match = np.array([0, 1, 2, 4, 0, 4])
    m = closure_metrics(query, match, truth, revisits)
    assert (m.num_closures, m.num_true, m.num_false) == (6, 3, 3)
    assert m.precision == pytest.approx(0.5)
    assert (m.num_revisits, m.revisits_found) == (5, 3)  # 5, 6 and 9 found
    assert m.recall == pytest.approx(0.6)
    empty = closure_metrics(np.zeros(0), np.zeros(0), truth, revisits)
    assert (empty.precision, empty.recall, empty.num_closures) == (1.0, 0.0, 0)


def test_closure_metrics_by_radius():
    positions = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0], [1.5, 0.0], [10.0, 4.0]])
    truth = ClosureGroundTruth.from_positions(positions, radius_m=3.0)
    revisits = truth.revisits(min_gap=2)
    assert revisits.tolist() == [False, False, False, True, False]  # 4 is 4 m from 1
    m = closure_metrics(np.array([3, 4]), np.array([0, 1]), truth, revisits)
    assert (m.num_true, m.num_false, m.revisits_found) == (1, 1, 1)
    assert m.precision == pytest.approx(0.5) and m.recall == pytest.approx(1.0)


def test_pr_curve_hand_computed():
    truth = ClosureGroundTruth.from_places(PLACES)
    revisits = truth.revisits(min_gap=3)
    query = np.array([5, 6, 6, 8, 3, 9])
    match = np.array([0, 1, 2, 4, 0, 4])
    score = np.array([50, 40, 12, 30, 12, 8])
    curve = pr_curve(query, match, score, truth, revisits)
    assert curve.thresholds.tolist() == [50, 40, 30, 12, 8]
    # >=50: {5->0} 1/1, recall 1/5; >=40: +6->1 2/2, 2/5; >=30: +8->4 (false) 2/3, 2/5;
    # >=12: +6->2, 3->0 (false) 2/5, 2/5; >=8: +9->4 3/6, 3/5
    assert curve.precision.tolist() == pytest.approx([1.0, 1.0, 2 / 3, 0.4, 0.5])
    assert curve.recall.tolist() == pytest.approx([0.2, 0.4, 0.4, 0.4, 0.6])
    assert curve.num_closures.tolist() == [1, 2, 3, 5, 6]
    assert curve.max_recall_at_precision(1.0) == pytest.approx(0.4)
    assert curve.max_recall_at_precision(0.5) == pytest.approx(0.6)
    assert curve.threshold_at_precision(1.0) == 40
    assert curve.threshold_at_precision(0.45) == 30  # 12 falls to 0.4
