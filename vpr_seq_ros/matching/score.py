"""The published match ``score``: sampled distinctiveness, one definition for every path.

A candidate's score is how many standard deviations its distance ``d`` lies below the mean
distance of the query to the map's anchors::

    score = max((mean_S - d) / std_S, 0)

where ``mean_S`` and ``std_S`` (population) are taken over the *finite* distances of a fixed,
deterministic sample of at most S anchors (``matching.score_sample``): anchors
``0, s, 2s, ...`` of the ``n`` now in the map, with ``s`` the smallest power of two that leaves
at most S of them (:func:`sample_anchors`). Anchors without a window, and in slam mode the
recent keyframes that are excluded from loop closure, have infinite distance and are never in
the statistics. The score is 0 when fewer than two sampled distances are finite or they are all
equal.

* ``n <= S``: the sample is every anchor, so the score is the full-scan distinctiveness the
  node always published (same thresholds, calibrations and presets).
* ``n > S``: between S/2 and S evenly spaced anchors. The sample mean and variance estimate
  the full-scan ones, so the score estimates the full-scan score with an error of about
  ``sqrt(1 + score^2 / 2) / sqrt(S / 2)`` standard deviations at worst (0.03 for a score of 0
  and 0.08 for a score of 5 at the default S = 4096; evenly spaced samples of a route usually
  do better than random ones).
* The sample is computed the same way whatever finds the candidates: an exact matcher reads it
  from the distances it computed for every anchor; an approximate one computes the exact
  distances at the sampled anchors only (``O(S x L x D)`` per frame, never a scan of the map).
* A growing map (slam) keeps the definition: as ``n`` grows the sample gains anchors, and when
  the stride doubles it keeps every other one.

The same functions score the node's keyframes (:mod:`vpr_seq_ros.runtime.decisions`), and the
columns of a recorded distance matrix (:func:`column_distinctiveness`, used by
:mod:`vpr_seq_ros.calibration` to fit calibrations on scores).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.config import SCORE_SAMPLE


def sample_stride(n: int, size: int) -> int:
    """The stride ``s`` of the score's sample: the smallest power of two with
    ``ceil(n / s) <= size``.

    Args:
        n: anchors in the map.
        size: S, the most anchors sampled (>= 1).
    """
    stride = 1
    while -(-n // stride) > size:
        stride *= 2
    return stride


def sample_anchors(n: int, size: int) -> np.ndarray:
    """The anchors whose distances make the score's statistics.

    Args:
        n: anchors in the map (the store's size now, in slam mode).
        size: S (``matching.score_sample``).

    Returns:
        ``(k,)`` int64 anchors ``0, s, 2s, ...`` (:func:`sample_stride`); every anchor when
        ``n <= S``, else ``S/2 < k <= S``.
    """
    return np.arange(0, n, sample_stride(n, size), dtype=np.int64)


def sample_statistics(distances: np.ndarray
                      ) -> tuple[np.ndarray | float, np.ndarray | float]:
    """Mean and population standard deviation of the finite sampled distances.

    Args:
        distances: ``(k,)`` or ``(k, M)`` distances of the sampled anchors (inf: excluded);
            a matrix gives one pair per column.

    Returns:
        ``(mean, std)``: float64 scalars, or ``(M,)``; nan where fewer than two distances are
        finite.
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim == 2:
        pairs = [sample_statistics(d[:, j]) for j in range(d.shape[1])]
        return (np.array([m for m, _ in pairs], np.float64),
                np.array([s for _, s in pairs], np.float64))
    finite = d[np.isfinite(d)]
    if finite.size < 2:
        return np.float64(np.nan), np.float64(np.nan)
    return np.float64(finite.mean()), np.float64(finite.std())


def scores_from_stats(distance: np.ndarray, mean: np.ndarray | float,
                      std: np.ndarray | float) -> np.ndarray:
    """The score of distances given the sample's statistics.

    Args:
        distance: ``(K,)`` distances to score (inf: no match).
        mean: mean of the sample (scalar, or ``(K,)``: one per distance).
        std: its population standard deviation (likewise).

    Returns:
        ``(K,)`` float64 ``max((mean - distance) / std, 0)``: 0 where std is 0 or nan (fewer
        than two finite distances), nan where there is no match.
    """
    d = np.asarray(distance, dtype=np.float64)
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), d.shape)
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), d.shape)
    usable = np.isfinite(std) & (std > 0)
    out = np.zeros(d.shape)
    with np.errstate(invalid='ignore', divide='ignore'):
        out[usable] = np.maximum((mean[usable] - d[usable]) / std[usable], 0.0)
    out[~np.isfinite(d)] = np.nan
    return out


@dataclass(frozen=True, eq=False)
class ScoreSample:
    """One query's distances at the sampled anchors.

    Attributes:
        anchors: ``(k,)`` int64 sampled anchors (:func:`sample_anchors`).
        distances: ``(k,)`` float64 their distances (inf: no window, or excluded).
    """

    anchors: np.ndarray
    distances: np.ndarray

    @classmethod
    def of(cls, distances: np.ndarray, size: int) -> ScoreSample:
        """The sample read from the distances of every anchor (an exact matcher's)."""
        anchors = sample_anchors(len(distances), size)
        return cls(anchors, np.asarray(distances, np.float64)[anchors])

    def without(self, excluded: np.ndarray) -> ScoreSample:
        """The sample with the anchors where ``excluded`` (``(n,)`` bool) is True set to inf."""
        distances = np.where(excluded[self.anchors], np.inf, self.distances)
        return ScoreSample(self.anchors, distances)

    def scores(self, chosen: np.ndarray) -> np.ndarray:
        """Scores of the ``(K,)`` chosen distances (:func:`scores_from_stats`)."""
        mean, std = sample_statistics(self.distances)
        return scores_from_stats(chosen, mean, std)


def distinctiveness(distances: np.ndarray, chosen: np.ndarray,
                    size: int = SCORE_SAMPLE) -> np.ndarray:
    """Scores of chosen distances of one query, from the distances of every anchor.

    Args:
        distances: ``(N,)`` distances of every reference anchor (inf: no window / excluded).
        chosen: ``(K,)`` distances to score.
        size: S (``matching.score_sample``).

    Returns:
        ``(K,)`` float64 scores (see the module docstring).
    """
    return ScoreSample.of(distances, size).scores(chosen)


def column_distinctiveness(matrix: np.ndarray, chosen: np.ndarray,
                           size: int = SCORE_SAMPLE) -> np.ndarray:
    """Scores of a recorded run: the node's ``score`` of each query column's match.

    Args:
        matrix: ``(N, M)`` distances (inf where no window).
        chosen: ``(M,)`` reference anchor of each query's match (-1: none).
        size: S (``matching.score_sample``).

    Returns:
        ``(M,)`` float64 scores; nan where there is no match.
    """
    matrix = np.asarray(matrix)
    chosen = np.asarray(chosen, dtype=np.int64)
    mean, std = sample_statistics(matrix[sample_anchors(matrix.shape[0], size)])
    has = chosen >= 0
    distance = np.full(matrix.shape[1], np.inf)
    distance[has] = matrix[chosen[has], np.flatnonzero(has)]
    return scores_from_stats(distance, mean, std)


__all__ = ['ScoreSample', 'column_distinctiveness', 'distinctiveness', 'sample_anchors',
           'sample_statistics', 'sample_stride', 'scores_from_stats']
