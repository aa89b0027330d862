"""Evaluation: ground truth, Recall@K, precision-recall, JSON report, plot, predictions CSV.

Protocol (as the papers): a query counts only if it has a full sequence window and at least one
positive among the reference anchors that have a window; the others are excluded and counted.
Recall@K is the fraction of counted queries with a positive among their top K. The
precision-recall curve sweeps a threshold over the top-1 match distance: precision = correct
accepted / accepted, recall = correct accepted / counted queries.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vpr_seq_ros.config import EvaluationConfig
from vpr_seq_ros.errors import SourceError
from vpr_seq_ros.types import EncodedRun, Matches

log = logging.getLogger(__name__)


def ground_truth(ref: EncodedRun, query: EncodedRun, cfg: EvaluationConfig,
                 ref_valid: np.ndarray | None = None,
                 query_frame_index: np.ndarray | None = None) -> list[np.ndarray]:
    """Positive reference anchors of every query anchor.

    Args:
        ref: reference run (poses needed for ``radius``).
        query: query run (poses needed for ``radius``).
        cfg: ``same-index`` with ``tolerance_frames``, or ``radius`` with ``radius_m``.
        ref_valid: ``(N,)`` reference anchors that can be predicted (have a window).
        query_frame_index: ``(M,)`` the frame index in its run of each query row, for
            ``same-index`` when the rows are a subset of the run (e.g. keyframes); default
            ``0 .. M-1``.

    Returns:
        One sorted int64 array per query frame.

    Raises:
        SourceError: ``radius`` ground truth without poses on both runs.
    """
    n, m = len(ref), len(query)
    ref_valid = np.ones(n, bool) if ref_valid is None else np.asarray(ref_valid, bool)
    if cfg.gt == 'same-index':
        tol = cfg.tolerance_frames
        index = np.arange(m) if query_frame_index is None else np.asarray(query_frame_index)
        out = []
        for j in index:
            cand = np.arange(max(0, j - tol), min(n, j + tol + 1))
            out.append(cand[ref_valid[cand]].astype(np.int64))
        return out
    if ref.poses is None or query.poses is None:
        missing = 'the map' if ref.poses is None else 'the query run'
        raise SourceError(f'radius ground truth needs poses, and {missing} has none; give a '
                          'frames.csv with x,y columns, or use --gt same-index')
    from scipy.spatial import cKDTree

    tree = cKDTree(ref.poses[:, :3])
    hits = tree.query_ball_point(query.poses[:, :3], r=cfg.radius_m)
    return [np.array(sorted(i for i in h if ref_valid[i]), dtype=np.int64) for h in hits]


@dataclass(frozen=True)
class Metrics:
    """Evaluation figures.

    Attributes:
        recall_at: K -> Recall@K over counted queries.
        num_queries: all query frames.
        num_queries_without_window: queries with no full sequence window.
        num_queries_without_positive: queries with a window but no positive reference.
        num_evaluated: queries counted.
        precision: precision-recall curve, precision values (top-1 distance threshold sweep).
        recall: recall values of the curve.
        thresholds: the distance thresholds of the curve.
        average_precision: area under the curve (step-wise).
        recall_at_100_precision: highest recall reached with no false match.
        top1_correct: ``(M,)`` bool, whether each query's top-1 is a positive.
        counted: ``(M,)`` bool, whether each query is counted.
    """

    recall_at: dict[int, float]
    num_queries: int
    num_queries_without_window: int
    num_queries_without_positive: int
    num_evaluated: int
    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    average_precision: float
    recall_at_100_precision: float
    top1_correct: np.ndarray
    counted: np.ndarray


def compute_metrics(matches: Matches, positives: list[np.ndarray],
                    recall_at: tuple[int, ...]) -> Metrics:
    """Recall@K and the precision-recall curve of a set of matches."""
    m = len(positives)
    has_pos = np.array([len(p) > 0 for p in positives], dtype=bool)
    counted = matches.valid & has_pos
    hit = np.zeros(matches.ref_indices.shape, dtype=bool)
    for j in np.flatnonzero(counted):
        hit[j] = np.isin(matches.ref_indices[j], positives[j])
    n_eval = int(counted.sum())
    recalls = {}
    for k in recall_at:
        recalls[int(k)] = float(hit[counted, :k].any(axis=1).mean()) if n_eval else 0.0
    top1 = hit[:, 0] if hit.shape[1] else np.zeros(m, bool)
    order = np.argsort(matches.distances[counted, 0], kind='stable') if n_eval else \
        np.zeros(0, np.int64)
    correct = top1[counted][order]
    tp = np.cumsum(correct)
    accepted = np.arange(1, len(correct) + 1)
    precision = tp / np.maximum(accepted, 1)
    recall = tp / max(n_eval, 1)
    thresholds = matches.distances[counted, 0][order]
    ap = float(np.sum(precision * correct) / max(n_eval, 1))
    perfect = precision >= 1.0 - 1e-12
    r100 = 0.0
    if len(correct) and correct[0]:
        first_false = np.flatnonzero(~perfect)
        stop = first_false[0] if len(first_false) else len(correct)
        r100 = float(recall[stop - 1])
    return Metrics(recalls, m, int((~matches.valid).sum()), int((matches.valid & ~has_pos).sum()),
                   n_eval, precision, recall, thresholds, ap, r100, top1 & counted, counted)


def report_dict(metrics: Metrics, **context: Any) -> dict[str, Any]:
    """The JSON report: figures plus whatever context the caller adds (method, seq_len, ...)."""
    return {
        'recall_at': {str(k): v for k, v in metrics.recall_at.items()},
        'num_queries': metrics.num_queries,
        'num_queries_without_window': metrics.num_queries_without_window,
        'num_queries_without_positive': metrics.num_queries_without_positive,
        'num_evaluated': metrics.num_evaluated,
        'average_precision': metrics.average_precision,
        'recall_at_100_precision': metrics.recall_at_100_precision,
        **context,
    }


def write_json(data: dict[str, Any], path: str | Path) -> Path:
    """Write a JSON file (pretty, sorted keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + '\n')
    return path


def write_predictions(matches: Matches, path: str | Path) -> Path:
    """CSV with one row per query that has a full window: query index, the top-K reference
    indices best first, then their distances (-1 / inf where fewer than K exist)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = matches.ref_indices.shape[1]
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(['query_index'] + [f'ref_{i + 1}' for i in range(k)] +
                        [f'distance_{i + 1}' for i in range(k)])
        for j in np.flatnonzero(matches.valid):
            writer.writerow([int(j)] + [int(x) for x in matches.ref_indices[j]] +
                            [f'{x:.6g}' for x in matches.distances[j]])
    return path


def plot_results(path: str | Path, metrics: Metrics, matches: Matches,
                 matrix: np.ndarray | None, positives: list[np.ndarray], title: str,
                 curves: dict[str, Metrics] | None = None) -> Path:
    """The evaluation plot; kept for callers of the first API: see
    :func:`vpr_seq_ros.plots.plot_evaluation`."""
    from vpr_seq_ros.plots import plot_evaluation

    return plot_evaluation(path, metrics, matches, matrix, positives, title, curves)
