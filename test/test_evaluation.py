"""Evaluation: ground truth, Recall@K with exclusions, precision-recall, outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from vpr_seq_ros.config import EvaluationConfig
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.evaluation import (compute_metrics, ground_truth, plot_results,
                                    write_predictions)
from vpr_seq_ros.types import EncodedRun, Matches


def run_of(n: int, poses: np.ndarray | None = None) -> EncodedRun:
    return EncodedRun(np.zeros((n, 2), np.float32), np.arange(n), poses, np.zeros(n, int))


def test_same_index_ground_truth():
    gt = ground_truth(run_of(6), run_of(4), EvaluationConfig(tolerance_frames=1),
                      ref_valid=np.array([0, 1, 1, 1, 1, 1], bool))
    assert [list(p) for p in gt] == [[1], [1, 2], [1, 2, 3], [2, 3, 4]]


def test_radius_ground_truth():
    ref = run_of(5, np.array([[x, 0, 0, 0] for x in range(5)], float))
    query = run_of(2, np.array([[1.2, 0, 0, 0], [10, 0, 0, 0]], float))
    gt = ground_truth(ref, query, EvaluationConfig(gt='radius', radius_m=1.0))
    assert list(gt[0]) == [1, 2] and list(gt[1]) == []
    with pytest.raises(SourceError, match='poses'):
        ground_truth(run_of(5), query, EvaluationConfig(gt='radius'))


def test_recall_and_exclusions_by_hand():
    # 5 queries: q0 top-1 right; q1 right at rank 2; q2 wrong; q3 no window; q4 no positive.
    matches = Matches(np.array([[0, 9], [9, 1], [7, 8], [-1, -1], [3, 4]]),
                      np.array([[0.1, 0.5], [0.2, 0.3], [0.3, 0.4], [np.inf, np.inf],
                                [0.05, 0.1]]),
                      np.array([1, 1, 1, 0, 1], bool))
    positives = [np.array([0]), np.array([1]), np.array([2]), np.array([3]),
                 np.array([], np.int64)]
    m = compute_metrics(matches, positives, (1, 2))
    assert m.num_queries == 5
    assert m.num_queries_without_window == 1
    assert m.num_queries_without_positive == 1
    assert m.num_evaluated == 3
    assert m.recall_at == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    # PR sweep over top-1 distances 0.1 (right), 0.2 (wrong), 0.3 (wrong)
    np.testing.assert_allclose(m.precision, [1, 0.5, 1 / 3])
    np.testing.assert_allclose(m.recall, [1 / 3, 1 / 3, 1 / 3])
    assert m.recall_at_100_precision == pytest.approx(1 / 3)
    assert m.average_precision == pytest.approx(1 / 3)


def test_outputs(tmp_path):
    matches = Matches(np.array([[1, 0], [-1, -1], [2, 1]]),
                      np.array([[0.5, 0.7], [np.inf, np.inf], [0.1, 0.9]]),
                      np.array([1, 0, 1], bool))
    positives = [np.array([1]), np.array([1]), np.array([0])]
    m = compute_metrics(matches, positives, (1,))
    path = write_predictions(matches, tmp_path / 'p.csv')
    rows = list(csv.reader(open(path)))
    assert rows[0] == ['query_index', 'ref_1', 'ref_2', 'distance_1', 'distance_2']
    assert rows[1][:3] == ['0', '1', '0'] and rows[2][:3] == ['2', '2', '1']
    assert len(rows) == 3
    png = plot_results(tmp_path / 'plot.png', m, matches, np.random.rand(3, 3), positives, 't')
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
