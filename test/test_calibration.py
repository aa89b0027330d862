"""Calibrated confidence: pool-adjacent-violators, isotonic/logistic maps, ECE, reliability."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vpr_seq_ros.calibration import (Calibration, distinctiveness, expected_calibration_error,
                                     fit_calibration, fit_isotonic, fit_logistic,
                                     load_calibration, pool_adjacent_violators, reliability,
                                     save_calibration)
from vpr_seq_ros.errors import ConfigError, MatchingError


def brute_isotonic(y, w):
    """Least-squares non-decreasing fit by the max-min formula (O(n^3), from the definition)."""
    n = len(y)
    out = np.empty(n)
    for i in range(n):
        out[i] = max(min(np.average(y[a:b + 1], weights=w[a:b + 1]) for b in range(i, n))
                     for a in range(i + 1))
    return out


def test_pool_adjacent_violators_hand_cases():
    np.testing.assert_allclose(pool_adjacent_violators([1, 3, 2, 4]), [1, 2.5, 2.5, 4])
    np.testing.assert_allclose(pool_adjacent_violators([4, 3, 2, 1]), [2.5] * 4)
    np.testing.assert_allclose(pool_adjacent_violators([3, 1], [1, 3]), [1.5, 1.5])
    np.testing.assert_allclose(pool_adjacent_violators([0, 1, 1]), [0, 1, 1])


def test_pool_adjacent_violators_equals_max_min_formula():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(12)
        w = rng.random(12) + 0.1
        np.testing.assert_allclose(pool_adjacent_violators(y, w), brute_isotonic(y, w),
                                   rtol=1e-12, atol=1e-12)


def test_isotonic_fit_and_apply_by_hand():
    cal = fit_isotonic(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 1, 0, 1], bool))
    assert cal.x == (1.0, 2.0, 3.0, 4.0)
    assert cal.p == (0.0, 0.5, 0.5, 1.0)
    assert cal.num_samples == 4 and cal.accuracy == 0.5
    np.testing.assert_allclose(cal(np.array([0.0, 1.5, 2.5, 3.5, 10.0, np.nan])),
                               [0.0, 0.25, 0.5, 0.75, 1.0, 0.0])
    # ties are averaged before pooling
    tied = fit_isotonic(np.array([1.0, 1.0, 2.0]), np.array([1, 0, 1], bool))
    assert tied.x == (1.0, 2.0) and tied.p == (0.5, 1.0)
    # constant runs keep only their end points
    runs = fit_isotonic(np.arange(6.0), np.array([0, 0, 0, 1, 1, 1], bool))
    assert runs.x == (0.0, 2.0, 3.0, 5.0) and runs.p == (0.0, 0.0, 1.0, 1.0)


def test_isotonic_on_distance_is_decreasing():
    cal = fit_isotonic(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 1, 0, 1], bool),
                       feature='distance')
    assert cal.x == (1.0, 2.0, 3.0, 4.0)
    assert cal.p == (1.0, 0.5, 0.5, 0.0)
    np.testing.assert_allclose(cal([1.5, 3.5]), [0.75, 0.25])


def test_logistic_fit_reaches_the_closed_form():
    # P(right | x=0) = 1/4, P(right | x=1) = 3/4: the MLE is b = ln(1/3), a + b = ln 3
    x = np.array([0.0] * 4 + [1.0] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    cal = fit_logistic(x, y)
    a, b = cal.coef
    assert b == pytest.approx(math.log(1 / 3), abs=1e-4)
    assert a == pytest.approx(2 * math.log(3), abs=1e-4)
    np.testing.assert_allclose(cal([0.0, 1.0]), [0.25, 0.75], atol=1e-5)


def test_reliability_and_ece_by_hand():
    prob = np.array([0.05, 0.15, 0.15, 0.95, 1.0])
    correct = np.array([0, 1, 0, 1, 1], bool)
    rel = reliability(prob, correct, bins=10)
    # bins 0: {0.05} acc 0; 1: {0.15, 0.15} acc 0.5; 9: {0.95, 1.0} acc 1
    np.testing.assert_array_equal(rel.counts, [1, 2, 0, 0, 0, 0, 0, 0, 0, 2])
    assert rel.confidence[0] == pytest.approx(0.05)
    assert rel.confidence[9] == pytest.approx(0.975)
    assert rel.accuracy[1] == pytest.approx(0.5)
    assert np.isnan(rel.accuracy[4])
    expected = (1 * 0.05 + 2 * 0.35 + 2 * 0.025) / 5
    assert rel.ece == pytest.approx(expected)
    assert expected_calibration_error(prob, correct, bins=10) == pytest.approx(0.16)
    assert expected_calibration_error([0.5, 0.5], [True, False], bins=2) == pytest.approx(0.0)
    assert expected_calibration_error([1.0, 1.0], [False, False], bins=1) == pytest.approx(1.0)


def test_isotonic_is_calibrated_on_its_own_data():
    """In-sample, every fitted block's probability equals its accuracy: with one bin per
    block the ECE is 0; a seeded calibrated source gives a small held-out ECE."""
    rng = np.random.default_rng(1)
    score = rng.normal(size=4000)
    truth = rng.random(4000) < 1 / (1 + np.exp(-2 * score))
    cal = fit_calibration(score[:2000], truth[:2000], 'score', 'isotonic')
    fitted = cal(score[:2000])
    for value in np.unique(fitted):
        block = fitted == value
        if block.sum() > 1 and np.ptp(score[:2000][block]) > 0:
            assert truth[:2000][block].mean() == pytest.approx(value)
    assert expected_calibration_error(cal(score[2000:]), truth[2000:]) < 0.05
    logistic = fit_calibration(score[:2000], truth[:2000], 'score', 'logistic')
    assert logistic.coef[0] == pytest.approx(2.0, rel=0.2)


def test_distinctiveness_by_hand():
    matrix = np.array([[1.0, 5.0], [2.0, np.inf], [3.0, 5.0], [np.inf, 5.0]])
    scores = distinctiveness(matrix, np.array([0, 0]))
    assert scores[0] == pytest.approx(1.0 / math.sqrt(2 / 3))
    assert scores[1] == 0.0           # all finite distances equal
    assert np.isnan(distinctiveness(matrix, np.array([-1, 0]))[0])


def test_round_trip_and_errors(tmp_path):
    cal = fit_isotonic(np.array([1.0, 2.0, 3.0]), np.array([0, 1, 1], bool))
    path = save_calibration(cal, tmp_path / 'cal.json')
    assert load_calibration(path) == cal
    assert Calibration.from_dict(json.loads(path.read_text())) == cal
    logistic = fit_logistic(np.array([0.0, 1.0, 0.0, 1.0]), np.array([0, 1, 1, 1], bool))
    assert Calibration.from_dict(logistic.to_dict()) == logistic
    with pytest.raises(ConfigError, match='unknown calibration keys'):
        Calibration.from_dict({**cal.to_dict(), 'bins': 3})
    with pytest.raises(ConfigError, match='not monotone'):
        Calibration('score', 'isotonic', (0.0, 1.0), (0.9, 0.1))
    with pytest.raises(ConfigError, match='format'):
        Calibration.from_dict({**cal.to_dict(), 'format': 'other/2'})
    with pytest.raises(ConfigError, match='cannot read'):
        load_calibration(tmp_path / 'missing.json')
    with pytest.raises(MatchingError, match='no finite'):
        fit_isotonic(np.array([np.nan]), np.array([True]))


def test_distinctiveness_equals_the_node_score():
    try:  # where the node computes it (moved from runtime.core to runtime.decisions)
        from vpr_seq_ros.runtime.decisions import distinctiveness as node_score
    except ImportError:
        from vpr_seq_ros.runtime.core import distinctiveness as node_score
    rng = np.random.default_rng(3)
    matrix = rng.random((20, 6))
    matrix[:4, 2] = np.inf
    chosen = np.argmin(matrix, axis=0)
    expected = [node_score(matrix[:, j], np.array([matrix[chosen[j], j]]))[0] for j in range(6)]
    np.testing.assert_allclose(distinctiveness(matrix, chosen), expected, rtol=1e-12)


def test_scores_from_batch_statistics_equal_scores_from_the_matrix():
    from vpr_seq_ros.calibration import scores_from_stats
    from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
    rng = np.random.default_rng(5)
    refs = rng.normal(size=(30, 8)).astype(np.float32)
    queries = (refs[4:24] + 0.3 * rng.normal(size=(20, 8))).astype(np.float32)
    result = seqmatch_batch(refs, queries, SeqMatchSettings(length=4, slopes=(0.8, 1.0, 1.25)),
                            top_k=2, keep_matrix=True, chunk=6)
    top = np.where(result.matches.valid, result.matches.ref_indices[:, 0], -1)
    expected = distinctiveness(result.matrix, top)
    got = scores_from_stats(result.matches.distances[:, 0], result.column_mean,
                            result.column_std)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert np.isnan(got[:3]).all() and np.isnan(result.column_mean[:3]).all()
    # hand case: distances 1, 2, 3 -> mean 2, std sqrt(2/3)
    assert scores_from_stats(np.array([1.0]), np.array([2.0]), np.array([math.sqrt(2 / 3)]))[0] \
        == pytest.approx(math.sqrt(1.5))
    assert scores_from_stats(np.array([1.0]), np.array([1.0]), np.array([np.nan]))[0] == 0.0
