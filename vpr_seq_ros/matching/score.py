"""The published match ``score``: sampled distinctiveness, one definition for every path.

A candidate's score is how many standard deviations its distance ``d`` lies below the mean
distance of the query to the map's anchors::

    score = max((mean - d) / std, 0)

``mean`` and ``std`` (population) are those of the finite distances of every anchor in the map,
estimated without reading them all:

* **the sample**: a fixed, deterministic set of at most S anchors (``matching.score_sample``),
  ``0, s, 2s, ...`` of the ``n`` now in the map, with ``s`` the smallest power of two that
  leaves at most S of them (:func:`sample_anchors`);
* **the dip**: the anchors within :data:`DIP_RADIUS` of the query's best anchor (its top
  candidate, which every search finds), counted exactly. They are the low tail of the distance
  profile around the matched place (neighbouring anchors share most of their window), the few
  values that would otherwise make the estimate jump with whether the sample happens to hit
  them; counting them exactly cut the error several times on a structured route;
* the other sampled anchors each stand for the ``s`` anchors around them (weight ``s``).

This is stratified sampling: the estimate is the full-scan statistic when ``s = 1``, and an
estimate of it otherwise. Anchors without a window, and in slam mode the recent keyframes that
are excluded from loop closure, have infinite distance and are never counted. The score is 0
when fewer than two distances are counted or they are all equal.

* ``n <= S``: the sample is every anchor, so the score is the full-scan distinctiveness the
  node always published, bit for bit (same thresholds, calibrations and presets).
* ``n > S``: between S/2 and S sampled anchors. The error against the full-scan score shrinks
  as ``1 / sqrt(S)`` and grows with the score; ``benchmarks/score_sample.py`` measures it (on
  real data, Nordland, about 0.1 standard deviations on average for a sample of 300 anchors;
  on a synthetic route with scores of 25-40, about 2 % on average and 7 % at most at the
  default S = 1024, and half that at S = 4096).
* Exact and approximate search score alike: an exact matcher reads the sample from the
  distances it computed for every anchor; an approximate one computes the exact distances at
  the sampled anchors and the dip only (``O(S x L x D)`` per frame, never a scan of the map). The
  scores are identical (to float rounding) whenever the approximate search finds the exact
  best anchor.
* A growing map (slam) keeps the definition: as ``n`` grows the sample gains anchors, and when
  the stride doubles it keeps every other one.

The same functions score the node's keyframes (:mod:`vpr_seq_ros.runtime.decisions`), and the
columns of a recorded distance matrix (:func:`column_distinctiveness`, used by
:mod:`vpr_seq_ros.calibration` to fit calibrations on scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vpr_seq_ros.config import SCORE_SAMPLE


def sample_stride(n: int, size: int) -> int:
    """The stride ``s`` of the score's sample: the smallest power of two with
    ``ceil(n / s) <= size``.

    Args:
        n: anchors in the map.
        size: S, the most anchors sampled (>= 1).
    """
    stride, size = 1, max(int(size), 1)
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


DIP_RADIUS = 16
"""Anchors on each side of a query's best anchor that are counted exactly (the dip of the
distance profile around the matched place)."""


def dip_anchors(best: int, n: int, radius: int = DIP_RADIUS) -> np.ndarray:
    """``(m,)`` int64 anchors ``best - radius .. best + radius`` that lie in ``[0, n)``."""
    return np.arange(max(best - radius, 0), min(best + radius + 1, n), dtype=np.int64)


def stratified_statistics(sample: np.ndarray, stride: int, dip: np.ndarray,
                          sampled_in_dip: np.ndarray) -> tuple[np.ndarray | float,
                                                               np.ndarray | float]:
    """Mean and population standard deviation of all anchors' distances, from the sample
    (each sampled anchor standing for ``stride`` anchors) and the dip (each for itself).

    Args:
        sample: ``(k,)`` distances of the sampled anchors (inf: excluded).
        stride: s, the anchors each sampled one stands for.
        dip: ``(m,)`` distances of the dip's anchors (inf: excluded).
        sampled_in_dip: ``(k,)`` bool, the sampled anchors inside the dip (counted there).

    Returns:
        ``(mean, std)``, float64; nan when fewer than two distances are counted. With
        ``stride == 1`` exactly :func:`sample_statistics` of ``sample``.
    """
    if stride == 1:
        return sample_statistics(sample)
    dip = np.asarray(dip, np.float64)
    dip = dip[np.isfinite(dip)]
    rest = np.asarray(sample, np.float64)[np.isfinite(sample) & ~sampled_in_dip]
    values = np.concatenate([dip, rest])
    if len(values) < 2:
        return np.float64(np.nan), np.float64(np.nan)
    weights = np.concatenate([np.ones(len(dip)), np.full(len(rest), float(stride))])
    mean = float(np.dot(weights, values) / weights.sum())
    centred = values - mean
    return np.float64(mean), np.float64(np.sqrt(np.dot(weights, centred * centred)
                                                / weights.sum()))


def best_anchors(distances: np.ndarray, count: int) -> np.ndarray:
    """The ``count`` anchors of smallest finite distance, best first (ties: lower index)."""
    finite = np.flatnonzero(np.isfinite(distances))
    k = min(count, len(finite))
    if k == 0:
        return np.zeros(0, np.int64)
    top = finite[np.argpartition(distances[finite], k - 1)[:k]]
    return top[np.argsort(distances[top], kind='stable')]


DistancesAt = Callable[[np.ndarray], np.ndarray]
"""``(m,)`` anchors -> ``(m,)`` float64 exact distances of the query there (inf: no window)."""


@dataclass(frozen=True, eq=False)
class ScoreSample:
    """One query's distances at the sampled anchors, and a way to get them at others.

    Attributes:
        anchors: ``(k,)`` int64 sampled anchors (:func:`sample_anchors`).
        distances: ``(k,)`` float64 their distances (inf: no window, or excluded).
        stride: s, the anchors each sampled one stands for.
        n: anchors in the map.
        at: exact distances of the query at any anchors (for the dip around the best).
        excluded: ``(n,)`` bool, anchors never counted (slam's recent keyframes), or None.
    """

    anchors: np.ndarray
    distances: np.ndarray
    stride: int
    n: int
    at: DistancesAt
    excluded: np.ndarray | None = None

    @classmethod
    def of(cls, distances: np.ndarray, size: int) -> ScoreSample:
        """The sample of the distances of every anchor (an exact matcher's)."""
        distances = np.asarray(distances, np.float64)
        anchors = sample_anchors(len(distances), size)
        return cls(anchors, distances[anchors], sample_stride(len(distances), size),
                   len(distances), distances.__getitem__)

    def without(self, excluded: np.ndarray) -> ScoreSample:
        """The sample with the anchors where ``excluded`` (``(n,)`` bool) is True left out."""
        distances = np.where(excluded[self.anchors], np.inf, self.distances)
        return ScoreSample(self.anchors, distances, self.stride, self.n, self.at, excluded)

    def scores(self, chosen: np.ndarray, best: int) -> np.ndarray:
        """Scores of the ``(K,)`` chosen distances of a query whose best anchor is ``best``
        (the dip :func:`dip_anchors` around it is counted exactly)."""
        if self.stride == 1:
            mean, std = sample_statistics(self.distances)
        else:
            dip = dip_anchors(best, self.n)
            dip_distances = np.asarray(self.at(dip), np.float64)
            if self.excluded is not None:
                dip_distances = np.where(self.excluded[dip], np.inf, dip_distances)
            inside = (self.anchors >= dip[0]) & (self.anchors <= dip[-1])
            mean, std = stratified_statistics(self.distances, self.stride, dip_distances,
                                              inside)
        return scores_from_stats(chosen, mean, std)


def distinctiveness(distances: np.ndarray, chosen: np.ndarray,
                    size: int = SCORE_SAMPLE) -> np.ndarray:
    """Scores of chosen distances of one query, from the distances of every anchor.

    Args:
        distances: ``(N,)`` distances of every reference anchor (inf: no window / excluded).
        chosen: ``(K,)`` distances to score.
        size: S (``matching.score_sample``).

    Returns:
        ``(K,)`` float64 scores (see the module docstring); 0 when no distance is finite.
    """
    best = best_anchors(distances, 1)
    if not len(best):
        return np.zeros(len(chosen))
    return ScoreSample.of(distances, size).scores(chosen, int(best[0]))


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


__all__ = ['DIP_RADIUS', 'DistancesAt', 'ScoreSample', 'best_anchors',
           'column_distinctiveness', 'dip_anchors', 'distinctiveness', 'sample_anchors',
           'sample_statistics', 'sample_stride', 'scores_from_stats', 'stratified_statistics']
