"""Precision and recall of loop closures against ground truth.

A closure is a pair (query keyframe, matched earlier keyframe). It is true when both keyframes
show the same place: their poses lie within a radius (metres), or, for runs without poses,
their place indices (e.g. a frames.csv column, or "same index = same place" when one route is
played twice) differ by at most a tolerance.

* precision: true closures / closures (1.0 when there are none: no false closure was made).
* recall of revisit keyframes: revisit keyframes with at least one true closure / revisit
  keyframes, where a revisit keyframe is one that has a same-place keyframe at least
  ``min_gap`` keyframes earlier (what a loop-closure detector that ignores its recent past
  could find).
* the precision-recall curve over a closure score (e.g. RANSAC inliers): both figures for the
  closures whose score is at least each threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.verification.errors import VerificationError


@dataclass(frozen=True, eq=False)
class ClosureGroundTruth:
    """Which keyframes show the same place.

    Attributes:
        places: ``(N,)`` place index of each keyframe, or None.
        positions: ``(N, P)`` positions in metres (P = 2 or 3), or None.
        tolerance: the largest place-index difference (places) or distance in metres
            (positions) that is still the same place.
    """

    places: np.ndarray | None
    positions: np.ndarray | None
    tolerance: float

    @classmethod
    def from_places(cls, places: np.ndarray, tolerance: int = 0) -> ClosureGroundTruth:
        """Same place when ``|places[q] - places[m]| <= tolerance``."""
        return cls(np.asarray(places, np.int64), None, float(tolerance))

    @classmethod
    def from_positions(cls, positions: np.ndarray, radius_m: float) -> ClosureGroundTruth:
        """Same place when the positions lie within ``radius_m``."""
        positions = np.asarray(positions, np.float64)
        if positions.ndim != 2 or not np.all(np.isfinite(positions)):
            raise VerificationError('closure ground truth needs finite (N, P) positions')
        return cls(None, positions, float(radius_m))

    def __len__(self) -> int:
        return len(self.places) if self.places is not None else len(self.positions)

    def same_place(self, query: np.ndarray, match: np.ndarray) -> np.ndarray:
        """``(C,)`` bool: whether each pair of keyframe indices shows the same place."""
        query, match = np.asarray(query, np.int64), np.asarray(match, np.int64)
        if self.places is not None:
            return np.abs(self.places[query] - self.places[match]) <= self.tolerance
        diff = self.positions[query] - self.positions[match]
        return np.linalg.norm(diff, axis=-1) <= self.tolerance

    def revisits(self, min_gap: int) -> np.ndarray:
        """``(N,)`` bool: keyframes with a same-place keyframe at least ``min_gap`` earlier."""
        n = len(self)
        out = np.zeros(n, bool)
        for q in range(min_gap, n):
            out[q] = bool(self.same_place(np.full(q - min_gap + 1, q),
                                          np.arange(q - min_gap + 1)).any())
        return out


@dataclass(frozen=True)
class ClosureMetrics:
    """Closure counts, precision and recall of revisit keyframes."""

    num_closures: int
    num_true: int
    num_false: int
    precision: float
    num_revisits: int
    revisits_found: int
    recall: float


def closure_metrics(query: np.ndarray, match: np.ndarray, truth: ClosureGroundTruth,
                    revisits: np.ndarray) -> ClosureMetrics:
    """Precision and recall of a set of closures.

    Args:
        query: ``(C,)`` query keyframe index of each closure.
        match: ``(C,)`` matched keyframe index.
        truth: the ground truth.
        revisits: ``(N,)`` bool revisit keyframes (:meth:`ClosureGroundTruth.revisits`).

    Returns:
        The :class:`ClosureMetrics`.
    """
    query, match = np.asarray(query, np.int64), np.asarray(match, np.int64)
    correct = truth.same_place(query, match) if len(query) else np.zeros(0, bool)
    found = np.zeros(len(revisits), bool)
    found[query[correct]] = True
    found &= revisits
    num_revisits = int(revisits.sum())
    num_true = int(correct.sum())
    return ClosureMetrics(
        num_closures=len(query), num_true=num_true, num_false=len(query) - num_true,
        precision=num_true / len(query) if len(query) else 1.0,
        num_revisits=num_revisits, revisits_found=int(found.sum()),
        recall=float(found.sum()) / num_revisits if num_revisits else 0.0)


@dataclass(frozen=True, eq=False)
class PrCurve:
    """Precision and recall of the closures scoring at least each threshold.

    Attributes:
        thresholds: ``(T,)`` distinct scores, descending.
        precision: ``(T,)``.
        recall: ``(T,)`` recall of revisit keyframes.
        num_closures: ``(T,)`` closures kept at each threshold.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    num_closures: np.ndarray

    def max_recall_at_precision(self, precision: float = 1.0) -> float:
        """The highest recall of any threshold whose precision is at least ``precision``."""
        ok = self.precision >= precision
        return float(self.recall[ok].max()) if ok.any() else 0.0

    def threshold_at_precision(self, precision: float = 1.0) -> float | None:
        """The lowest threshold whose precision, and every higher threshold's, is at least
        ``precision``; None when the best-scoring closure already fails it."""
        bad = np.flatnonzero(self.precision < precision)
        first_bad = int(bad[0]) if len(bad) else len(self.thresholds)
        return float(self.thresholds[first_bad - 1]) if first_bad else None


def pr_curve(query: np.ndarray, match: np.ndarray, score: np.ndarray,
             truth: ClosureGroundTruth, revisits: np.ndarray) -> PrCurve:
    """Precision-recall curve of closures over a score (higher is more confident).

    Args:
        query: ``(C,)`` query keyframe index of each closure.
        match: ``(C,)`` matched keyframe index.
        score: ``(C,)`` score of each closure (e.g. RANSAC inliers).
        truth: the ground truth.
        revisits: ``(N,)`` bool revisit keyframes.

    Returns:
        The :class:`PrCurve` (empty arrays without closures).
    """
    query, match = np.asarray(query, np.int64), np.asarray(match, np.int64)
    score = np.asarray(score, np.float64)
    thresholds = np.unique(score)[::-1]
    rows = [closure_metrics(query[score >= t], match[score >= t], truth, revisits)
            for t in thresholds]
    return PrCurve(thresholds, np.array([r.precision for r in rows]),
                   np.array([r.recall for r in rows]),
                   np.array([r.num_closures for r in rows], np.int64))
