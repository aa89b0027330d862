"""Arithmetic of the figures printed by benchmarks/velocity.py and benchmarks/calibration.py."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load_benchmark
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings
from vpr_seq_ros.types import Matches


def test_speed_profiles_and_resampling_by_hand():
    velocity = load_benchmark('velocity')
    profiles = velocity.speed_profiles(8)
    np.testing.assert_array_equal(profiles['constant 1x'], np.arange(8))
    np.testing.assert_array_equal(profiles['drop every 4th (1.33x)'], [0, 1, 2, 4, 5, 6])
    np.testing.assert_allclose(profiles['constant 0.8x blend'],
                               [0, 0.8, 1.6, 2.4, 3.2, 4.0, 4.8, 5.6, 6.4])
    np.testing.assert_array_equal(profiles['constant 0.8x repeat'], [0, 1, 2, 2, 3, 4, 5, 6, 6])
    smooth = velocity.speed_profiles(1200)['smooth 0.8x-1.25x blend']
    steps = np.diff(smooth)
    assert steps.min() >= 0.8 - 1e-9 and steps.max() <= 1.25 + 1e-9
    assert steps.min() < 0.81 and steps.max() > 1.24
    images = np.stack([np.full((2, 2), 10.0 * i) for i in range(4)]).astype(np.float32)
    out = velocity.resample(images, np.array([0.0, 0.25, 2.5, 3.0]))
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 2.5, 25.0, 30.0])


def test_velocity_recall_uses_original_places():
    velocity = load_benchmark('velocity')
    # 3 queries with original places 0, 2, 5; top-1 at 1 (right, +-1), 4 (wrong), 5 (right)
    matches = Matches(np.array([[1], [4], [5]]), np.zeros((3, 1)), np.ones(3, bool))
    ref_valid = np.ones(6, bool)
    assert velocity.recall_at_1(matches, np.array([0, 2, 5]), ref_valid, 1) == \
        pytest.approx(2 / 3)
    assert velocity.recall_at_1(matches, np.array([0, 2, 5]), ref_valid, 2) == pytest.approx(1)
    # a query whose places are all without a window is not counted
    ref_valid[:2] = False
    assert velocity.recall_at_1(matches, np.array([0, 2, 5]), ref_valid, 0) == \
        pytest.approx(1 / 2)


def test_calibration_features_by_hand():
    calibration = load_benchmark('calibration')
    refs = np.eye(6, dtype=np.float32) * 10
    query = refs[[0, 1, 4, 3, 0, 5]]          # query 2 -> ref 4 (wrong), 4 -> 0 (wrong)
    score, distance, correct = calibration.top1_features(
        refs, query, SeqMatchSettings(length=1, metric='sad'), tolerance=1)
    np.testing.assert_array_equal(correct, [True, True, False, True, False, True])
    np.testing.assert_allclose(distance, 0.0)
    # every column: one 0 and five 20s (SAD of scaled one-hot rows); score = (mean - 0) / std
    col = np.array([0, 20, 20, 20, 20, 20], float)
    np.testing.assert_allclose(score, col.mean() / col.std())
