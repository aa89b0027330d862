"""The published match ``score``: sampled distinctiveness, one definition for every path.

A candidate's score is how many standard deviations its distance ``d`` lies below the mean
distance of the query to the map's anchors::

    score = max((mean - d) / std, 0)

``mean`` and ``std`` (population) are those of the finite distances of every anchor in the map,
estimated without reading them all:

* **the sample**: a fixed, deterministic set of at most S anchors (``matching.score_sample``),
  ``0, s, 2s, ...`` of the ``n`` now in the map, with ``s`` the smallest power of two that
  leaves at most S of them (:func:`sample_anchors`);
* **the best anchor** of the query (its top candidate, which every search finds), counted
  exactly: it is the deepest point of the distance profile, the one value that would otherwise
  make the estimate jump with whether the sample happens to hit it (on real data this halves
  the error of the plain sample);
* the other sampled anchors each stand for the ``s`` anchors around them (weight ``s``).

This is stratified sampling: the estimate is the full-scan statistic when ``s = 1``, and an
estimate of it otherwise. Anchors without a window, and in slam mode the recent keyframes that
are excluded from loop closure, have infinite distance and are never counted. The score is 0
when fewer than two distances are counted or they are all equal.

* ``n <= S``: the sample is every anchor, so the score is the full-scan distinctiveness the
  node always published, bit for bit (same thresholds, calibrations and presets).
* ``n > S``: between S/2 and S sampled anchors. The error against the full-scan score shrinks
  as ``1 / sqrt(S)`` and grows with the score; ``benchmarks/score_sample.py`` measures it (on
  real data, Nordland, about 0.1 standard deviations on average for a sample of 300 anchors).
* Exact and approximate search score alike: an exact matcher reads the sample from the
  distances it computed for every anchor; an approximate one computes the exact distances at
  the sampled anchors only (``O(S x L x D)`` per frame, never a scan of the map), and finds the
  best anchor itself. The scores are identical (to float rounding) whenever the approximate
  search finds the exact best anchor.
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


STRATUM = 1
"""How many of a query's best anchors are counted exactly in the score's statistics (more
gained little on real data, and approximate search must find all of them to score exactly)."""


def stratified_statistics(sample: np.ndarray, stride: int, best: np.ndarray,
                          sampled_best: np.ndarray) -> tuple[np.ndarray | float,
                                                             np.ndarray | float]:
    """Mean and population standard deviation of all anchors' distances, from the sample
    (each sampled anchor standing for ``stride`` anchors) and the best anchors (each for
    itself).

    Args:
        sample: ``(k,)`` distances of the sampled anchors (inf: excluded).
        stride: s, the anchors each sampled one stands for.
        best: ``(b,)`` distances of the best anchors (finite).
        sampled_best: ``(k,)`` bool, the sampled anchors that are among the best (counted
            once, with them).

    Returns:
        ``(mean, std)``, float64; nan when fewer than two distances are counted. With
        ``stride == 1`` exactly :func:`sample_statistics` of ``sample``.
    """
    if stride == 1:
        return sample_statistics(sample)
    rest = np.asarray(sample, np.float64)[np.isfinite(sample) & ~sampled_best]
    values = np.concatenate([np.asarray(best, np.float64), rest])
    if len(values) < 2:
        return np.float64(np.nan), np.float64(np.nan)
    weights = np.concatenate([np.ones(len(best)), np.full(len(rest), float(stride))])
    mean = float(np.dot(weights, values) / weights.sum())
    centred = values - mean
    return np.float64(mean), np.float64(np.sqrt(np.dot(weights, centred * centred)
                                                / weights.sum()))


def best_anchors(distances: np.ndarray, count: int = STRATUM) -> np.ndarray:
    """The ``count`` anchors of smallest finite distance, best first (ties: lower index)."""
    finite = np.flatnonzero(np.isfinite(distances))
    k = min(count, len(finite))
    if k == 0:
        return np.zeros(0, np.int64)
    top = finite[np.argpartition(distances[finite], k - 1)[:k]]
    return top[np.argsort(distances[top], kind='stable')]


@dataclass(frozen=True, eq=False)
class ScoreSample:
    """One query's distances at the sampled anchors.

    Attributes:
        anchors: ``(k,)`` int64 sampled anchors (:func:`sample_anchors`).
        distances: ``(k,)`` float64 their distances (inf: no window, or excluded).
        stride: s, the anchors each sampled one stands for.
    """

    anchors: np.ndarray
    distances: np.ndarray
    stride: int = 1

    @classmethod
    def of(cls, distances: np.ndarray, size: int) -> ScoreSample:
        """The sample read from the distances of every anchor (an exact matcher's)."""
        anchors = sample_anchors(len(distances), size)
        return cls(anchors, np.asarray(distances, np.float64)[anchors],
                   sample_stride(len(distances), size))

    def without(self, excluded: np.ndarray) -> ScoreSample:
        """The sample with the anchors where ``excluded`` (``(n,)`` bool) is True set to inf."""
        distances = np.where(excluded[self.anchors], np.inf, self.distances)
        return ScoreSample(self.anchors, distances, self.stride)

    def scores(self, chosen: np.ndarray, best: np.ndarray, best_distances: np.ndarray
               ) -> np.ndarray:
        """Scores of the ``(K,)`` chosen distances.

        Args:
            chosen: ``(K,)`` distances to score.
            best: ``(b,)`` the query's best anchors (:func:`best_anchors`, at most
                :data:`STRATUM`), counted exactly.
            best_distances: ``(b,)`` their distances.
        """
        sampled_best = np.isin(self.anchors, best)
        mean, std = stratified_statistics(self.distances, self.stride, best_distances,
                                          sampled_best)
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
    best = best_anchors(distances)
    return ScoreSample.of(distances, size).scores(chosen, best, distances[best])


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
    out = np.full(matrix.shape[1], np.nan)
    for j in np.flatnonzero(chosen >= 0):
        column = np.asarray(matrix[:, j], np.float64)
        out[j] = distinctiveness(column, column[chosen[j]:chosen[j] + 1], size)[0]
    return out


__all__ = ['STRATUM', 'ScoreSample', 'best_anchors', 'column_distinctiveness',
           'distinctiveness', 'sample_anchors', 'sample_statistics', 'sample_stride',
           'scores_from_stats', 'stratified_statistics']
