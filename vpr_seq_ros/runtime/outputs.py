"""Value objects the node core returns: place hypotheses, loop closures, diagnostics."""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vpr_seq_ros.types import Pose


@dataclass(frozen=True)
class Candidate:
    """One matched place.

    Attributes:
        ref_index: index of the matched reference anchor (map frame or past keyframe).
        ref_stamp_ns: its stamp.
        distance: sequence distance (lower is better; the method's units).
        score: distinctiveness of the match: how many standard deviations its distance lies
            below the mean distance over the reference anchors, estimated from a fixed sample
            of them (``matching.score_sample``; exact on maps no larger than it; see
            :mod:`vpr_seq_ros.matching.score`). Higher is better, >= 0.
        pose: the reference pose, when the map has poses.
        confidence: calibrated probability that the match is right (``node.calibration``),
            NaN without a calibration.
    """

    ref_index: int
    ref_stamp_ns: int
    distance: float
    score: float
    pose: Pose | None = None
    confidence: float = math.nan


@dataclass(frozen=True)
class PlaceHypothesis:
    """The top-K places for the newest query keyframe, best first."""

    query_index: int
    query_stamp_ns: int
    candidates: tuple[Candidate, ...]
    verification: Any = field(default=None, compare=False, repr=False)
    """The geometric verification of the best candidate against the map's stored features
    (a :class:`vpr_seq_ros.runtime.verify.HypothesisCheck`), when it finished before the
    hypothesis was published (always in replay); None otherwise."""

    @property
    def best(self) -> Candidate | None:
        """The best candidate, if any."""
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True)
class LoopClosure:
    """A loop-closure candidate between the newest keyframe and a past one (slam mode)."""

    query_index: int
    query_stamp_ns: int
    match_index: int
    match_stamp_ns: int
    distance: float
    score: float
    streak: int
    verification: Any = field(default=None, compare=False, repr=False)
    """The geometric verification that accepted it (a
    :class:`vpr_seq_ros.verification.geometry.Verification`: inliers, relative rotation and
    translation, covariance), or None when verification is off."""


@dataclass(frozen=True)
class StepResult:
    """What one incoming frame produced.

    Attributes:
        stamp_ns: the frame's stamp.
        keyframe: whether the frame was kept (encoded and matched).
        hypothesis: top-K places, once the buffer holds a full window.
        loop_closures: loop-closure candidates (slam mode).
        reset: the sequence buffer was reset before this frame (time jump backwards).
        encode_ms: encoder time for this frame.
        match_ms: matching time for this frame.
        distances: ``(N,)`` distance of every reference anchor (inf where none), only when
            the core records them (``NodeCore.record_distances``, for replay's plot).
        rejected: loop closures that geometric verification turned down at this step
            (:class:`vpr_seq_ros.runtime.verify.Rejected`).
        hypothesis_checks: verifications of localization hypotheses that finished at this
            step (:class:`vpr_seq_ros.runtime.verify.HypothesisCheck`; live, those of
            earlier keyframes too).
    """

    stamp_ns: int
    keyframe: bool
    hypothesis: PlaceHypothesis | None = None
    loop_closures: tuple[LoopClosure, ...] = ()
    reset: bool = False
    encode_ms: float = 0.0
    match_ms: float = 0.0
    distances: np.ndarray | None = field(default=None, compare=False, repr=False)
    rejected: tuple[Any, ...] = ()
    hypothesis_checks: tuple[Any, ...] = ()


@dataclass
class Diagnostics:
    """Counters and gauges the node reports on ``/diagnostics``.

    ``map_size`` is the number of references (map frames, or keyframes stored in slam mode);
    ``keyframes_not_stored`` counts slam keyframes matched but not stored because the store
    reached ``node.keyframe.max_keyframes``; ``sessions`` counts time sessions (1 + backwards
    time jumps).
    """

    frames_received: int = 0
    keyframes: int = 0
    frames_skipped_gating: int = 0
    frames_dropped_malformed: int = 0
    frames_dropped_queue: int = 0
    resets: int = 0
    hypotheses: int = 0
    loop_closures: int = 0
    loop_closures_rejected: int = 0
    last_encode_ms: float = 0.0
    last_match_ms: float = 0.0
    buffer_fill: int = 0
    sequence_length: int = 0
    map_size: int = 0
    keyframes_not_stored: int = 0
    sessions: int = 1
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """Flat name -> value mapping (for DiagnosticStatus key/values)."""
        out = {k: v for k, v in vars(self).items() if k != 'extra'}
        out.update(self.extra)
        return out
