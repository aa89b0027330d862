"""Decisions: from the distances of every reference anchor to what the node publishes.

* :func:`top_candidates`: the top-K finite distances, best first, each with a distinctiveness
  score (standard deviations below the mean distance over the anchors, estimated from a fixed
  sample of them and the dip around the best, :mod:`vpr_seq_ros.matching.score`) and the
  reference's stamp and pose;
* :func:`place_hypothesis`: localization, one :class:`PlaceHypothesis` per keyframe whose
  window is full;
* :class:`LoopClosureDecider`: slam. Recent keyframes are never candidates (the last
  ``exclude_recent_s`` seconds of the *current time session*, and, once odometry arrived, the
  last ``exclude_recent_m`` metres of path); the best candidate must stand out (``min_score``)
  and lie within ``max_distance`` when that is set; a :class:`LoopClosure` is published once
  ``min_streak`` consecutive keyframes matched consistently (the matched index advancing by one,
  +- ``streak_tolerance``).

The configuration sections are passed on every call, so parameters changed at run time apply
to the next keyframe.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.calibration import Calibration
from vpr_seq_ros.config import LoopClosureConfig
from vpr_seq_ros.conversions import NS_PER_S
from vpr_seq_ros.matching.score import ScoreSample, best_anchors, distinctiveness
from vpr_seq_ros.runtime.outputs import Candidate, LoopClosure, PlaceHypothesis
from vpr_seq_ros.runtime.store import KeyframeStore, ReferenceStore
from vpr_seq_ros.types import Pose


def top_candidates(distances: np.ndarray, top_k: int, stamps_ns: np.ndarray,
                   poses: np.ndarray | None, sample: ScoreSample,
                   calibration: Calibration | None = None) -> tuple[Candidate, ...]:
    """The ``top_k`` smallest finite distances, best first (ties: lower index first).

    Args:
        distances: ``(N,)`` distances.
        top_k: K.
        stamps_ns: ``(N,)`` reference stamps.
        poses: ``(N, 4)`` reference poses (a candidate gets one when its row is finite).
        sample: the score's sample of these distances (excluded anchors inf).
        calibration: maps each candidate's score (or distance) to the probability it is right.
    """
    top = best_anchors(distances, top_k)
    if not len(top):
        return ()
    scores = sample.scores(distances[top], int(top[0]))
    confidence = np.full(len(top), np.nan) if calibration is None else \
        calibration(scores if calibration.feature == 'score' else distances[top])
    return tuple(
        Candidate(int(i), int(stamps_ns[i]), float(distances[i]), float(s),
                  Pose(*poses[i]) if poses is not None and np.all(np.isfinite(poses[i]))
                  else None, float(c))
        for i, s, c in zip(top, scores, confidence))


def place_hypothesis(query_index: int, stamp_ns: int, distances: np.ndarray,
                     store: ReferenceStore, top_k: int, sample: ScoreSample,
                     calibration: Calibration | None = None) -> PlaceHypothesis:
    """Localization: the top-K places of a keyframe against the store."""
    return PlaceHypothesis(query_index, stamp_ns,
                           top_candidates(distances, top_k, store.stamps_ns, store.poses,
                                          sample, calibration))


@dataclass(frozen=True)
class QueryKeyframe:
    """The keyframe being decided on.

    Attributes:
        index: keyframe index since start-up.
        stamp_ns: its stamp.
        session: its time session (a backwards time jump starts a new one).
        path_m: accumulated path length (metres) when odometry has arrived, else None.
        pose: its pose (the latest odometry, else the frame's own), when known.
    """

    index: int
    stamp_ns: int
    session: int
    path_m: float | None = None
    pose: Pose | None = None


def excluded_recent(store: KeyframeStore, query: QueryKeyframe, lc: LoopClosureConfig,
                    n: int) -> np.ndarray:
    """Which of the first ``n`` keyframes are too recent to be loop-closure candidates.

    By time only within the query's session: after a restarted bag the stamps of earlier
    sessions say nothing about how recent a keyframe is, so they stay matchable. By path
    (when odometry arrived) across sessions, as the path only grows.

    Returns:
        ``(n,)`` bool, True where excluded.
    """
    stamps = store.stamps_ns[:n]
    excluded = (store.sessions[:n] == query.session) & \
        (stamps > query.stamp_ns - int(lc.exclude_recent_s * NS_PER_S))
    if lc.exclude_recent_m > 0 and query.path_m is not None:
        excluded |= store.path_m[:n] > query.path_m - lc.exclude_recent_m
    return excluded


def outside_radius(store: KeyframeStore, query: QueryKeyframe, lc: LoopClosureConfig,
                   n: int) -> np.ndarray:
    """Which of the first ``n`` keyframes lie farther than ``search_radius_m`` from the query's
    pose (all False when the radius is 0 or the query has no pose; a keyframe without a pose
    is never outside).

    Returns:
        ``(n,)`` bool, True where outside.
    """
    poses = store.poses
    if lc.search_radius_m <= 0 or query.pose is None or poses is None:
        return np.zeros(n, dtype=bool)
    offset = poses[:n, :3] - np.array([query.pose.x, query.pose.y, query.pose.z])
    with np.errstate(invalid='ignore'):
        return np.einsum('ij,ij->i', offset, offset) > lc.search_radius_m ** 2


class LoopClosureDecider:
    """slam loop-closure decisions; keeps the streak between keyframes."""

    def __init__(self) -> None:
        self.streak = 0
        self.last_match: int | None = None

    def reset(self) -> None:
        """Forget the streak (a reset or a new segment)."""
        self.streak, self.last_match = 0, None

    def step(self, distances: np.ndarray, store: KeyframeStore, query: QueryKeyframe,
             lc: LoopClosureConfig, top_k: int, sample: ScoreSample,
             calibration: Calibration | None = None
             ) -> tuple[PlaceHypothesis, tuple[LoopClosure, ...]]:
        """Decide on one keyframe.

        Args:
            distances: ``(n,)`` distances to the first n stored keyframes.
            store: the keyframes.
            query: the keyframe being decided on.
            lc: loop-closure parameters.
            top_k: candidates in the hypothesis.
            sample: the score's sample of ``distances`` (recent keyframes are excluded from
                it here, as from the candidates).
            calibration: the score-to-probability map (``min_confidence`` needs it).

        Returns:
            The hypothesis (recent keyframes excluded) and zero or one loop closure.
        """
        n = len(distances)
        excluded = excluded_recent(store, query, lc, n)
        masked = np.where(excluded | outside_radius(store, query, lc, n), np.inf, distances)
        poses = store.poses
        candidates = top_candidates(masked, top_k, store.stamps_ns[:n],
                                    None if poses is None else poses[:n],
                                    sample.without(excluded), calibration)
        hypothesis = PlaceHypothesis(query.index, query.stamp_ns, candidates)
        best = hypothesis.best
        if best is None or (lc.max_distance > 0 and best.distance > lc.max_distance) or \
                best.score < lc.min_score or \
                (lc.min_confidence > 0 and not best.confidence >= lc.min_confidence):
            self.reset()
            return hypothesis, ()
        consistent = self.last_match is not None and \
            abs(best.ref_index - (self.last_match + 1)) <= lc.streak_tolerance
        self.streak = self.streak + 1 if consistent else 1
        self.last_match = best.ref_index
        if self.streak < lc.min_streak:
            return hypothesis, ()
        closure = LoopClosure(query.index, query.stamp_ns, best.ref_index, best.ref_stamp_ns,
                              best.distance, best.score, self.streak)
        return hypothesis, (closure,)


__all__ = ['LoopClosureDecider', 'QueryKeyframe', 'distinctiveness', 'excluded_recent',
           'outside_radius', 'place_hypothesis', 'top_candidates']
