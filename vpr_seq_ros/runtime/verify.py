"""Geometric verification of loop-closure candidates (slam) and of place hypotheses
(localization), between the decision stage and what is published.

A loop closure that the appearance decision accepts (exclusions, score, streak) is not
published yet: its query keyframe and the best ``top_k`` candidates of its hypothesis are
checked geometrically (local features, ratio test, RANSAC: :mod:`vpr_seq_ros.verification`).
The first candidate, in appearance order, that passes becomes the published closure, with its
relative pose and inliers; when none passes, the closure is rejected with the reasons.

In localization mode (:class:`HypothesisGate`) the best candidate of each place hypothesis is
verified against the local features the reference map stores for that frame (a map built with
``node.verification.map_features``). The verdict does not hold the hypothesis back: it is
evidence published with it (status, inliers, the relative pose of the query camera in the map
frame's camera and its covariance), as a :class:`HypothesisCheck`.

Replay verifies synchronously (the same answers every run: each hypothesis carries its own
verdict); the live node verifies on a worker thread, so a verdict can arrive a few frames later
and is published then. Both go through ``collect``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vpr_seq_ros.runtime.outputs import LoopClosure, PlaceHypothesis

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected:
    """A loop-closure candidate that verification turned down.

    Attributes:
        closure: the appearance closure.
        reasons: the reason of each candidate tried, in appearance order (e.g.
            ``too_few_inliers``).
        inliers: inliers of each candidate tried.
    """

    closure: LoopClosure
    reasons: tuple[str, ...]
    inliers: tuple[int, ...]


@dataclass
class _Group:
    closure: LoopClosure
    expected: int
    results: dict[int, Any] = field(default_factory=dict)


class VerificationGate:
    """Holds appearance closures until their candidates are verified.

    **Tracks** (``node.verification.track_min_inliers`` > 0): the stage then accepts
    candidates from ``track_min_inliers`` inliers (the weak bar), and the gate publishes a
    candidate when it has ``min_inliers`` (the strong bar) or when it continues a track: its
    keyframe offset (query index - match index) lies within ``track_tolerance`` of the offset
    of a closure published in the last ``track_window`` keyframes. Only published closures
    make tracks, so a run of weak, mutually consistent false closures cannot start one.

    Args:
        stage: a :class:`vpr_seq_ros.verification.worker.VerificationStage` (with tracks, one
            whose ``min_inliers`` is the weak bar).
        top_k: candidates of the hypothesis tried per closure.
        cfg: the ``node.verification`` section (``min_inliers`` and the track settings;
            default: the stage's).
    """

    def __init__(self, stage: Any, top_k: int = 5, cfg: Any = None) -> None:
        self.stage = stage
        self.top_k = max(1, int(top_k))
        cfg = stage.cfg if cfg is None else cfg
        self.min_inliers = int(cfg.min_inliers)
        self.tracking = bool(cfg.tracking)
        self.track_window = int(cfg.track_window)
        self.track_tolerance = int(cfg.track_tolerance)
        self._track: list[tuple[int, int]] = []  # (query, match) of recent published closures
        self._groups: dict[int, _Group] = {}
        self._next = 0
        self.submitted = 0
        self.unverifiable = 0
        self._camera_known = False
        self.appearance_closures: list[LoopClosure] = []
        """Every closure submitted, as the appearance decision made it (for evaluation)."""

    def add_keyframe(self, index: int, image: np.ndarray | None) -> None:
        """Keep what verification needs of a keyframe (its local features)."""
        if image is None:
            self.unverifiable += 1
            if self.unverifiable == 1:
                log.warning('geometric verification needs images; keyframes given as '
                            'descriptors cannot be verified')
            return
        if not self._camera_known:
            self._camera_known = True
            cfg = self.stage.cfg
            if cfg.has_intrinsics:  # parameters; a CameraInfo topic may replace them later
                from vpr_seq_ros.verification.geometry import CameraIntrinsics

                height, width = image.shape[:2]
                self.stage.set_intrinsics(CameraIntrinsics.from_config(cfg, width, height))
        self.stage.add_keyframe(index, image)

    def submit(self, closure: LoopClosure, hypothesis: PlaceHypothesis) -> None:
        """Verify the closure's best candidates (the closure's own match first)."""
        from vpr_seq_ros.verification.worker import VerificationRequest

        matches = [closure.match_index] + [c.ref_index for c in hypothesis.candidates
                                           if c.ref_index != closure.match_index]
        stamps = {c.ref_index: c.ref_stamp_ns for c in hypothesis.candidates}
        stamps[closure.match_index] = closure.match_stamp_ns
        self.appearance_closures.append(closure)
        group = self._next
        self._next += 1
        tried = matches[:self.top_k]
        self._groups[group] = _Group(closure, len(tried))
        for rank, match in enumerate(tried):
            request = VerificationRequest(closure.query_index, int(match),
                                          closure.query_stamp_ns, int(stamps[match]),
                                          closure.score, tag=(group, rank))
            if not self.stage.submit(request):  # refused by the budget: no result will come
                self._groups[group].expected -= 1
            self.submitted += 1
        if self._groups[group].expected == 0:
            del self._groups[group]

    def collect(self) -> tuple[tuple[LoopClosure, ...], tuple[Rejected, ...]]:
        """Closures whose verdict is complete: the verified ones (with their geometry) and
        the rejected ones."""
        for result in self.stage.poll():
            group, rank = result.request.tag
            if group in self._groups:
                self._groups[group].results[rank] = result
        verified: list[LoopClosure] = []
        rejected: list[Rejected] = []
        for key in sorted(self._groups):
            group = self._groups[key]
            if len(group.results) < group.expected:
                continue
            del self._groups[key]
            ordered = [group.results[r] for r in sorted(group.results)]
            passed = [r for r in ordered if self._passes(r)]
            if passed:
                best = passed[0]
                verified.append(dataclasses.replace(
                    group.closure, match_index=best.request.match_index,
                    match_stamp_ns=best.request.match_stamp_ns,
                    verification=best.verification))
                self._remember(best.request.query_index, best.request.match_index)
            else:
                rejected.append(Rejected(
                    group.closure, tuple(self._reason(r) for r in ordered),
                    tuple(int(r.verification.num_inliers) for r in ordered)))
        return tuple(verified), tuple(rejected)

    def _passes(self, result: Any) -> bool:
        """Accepted by the stage, and strong enough or continuing a track."""
        if not result.accepted:
            return False
        if not self.tracking or result.verification.num_inliers >= self.min_inliers:
            return True
        return self.on_track(result.request.query_index, result.request.match_index)

    def _reason(self, result: Any) -> str:
        if result.accepted:  # passed the weak bar only, off every track
            return 'weak_off_track'
        return str(result.verification.reason.value)

    def on_track(self, query_index: int, match_index: int) -> bool:
        """Whether ``(query, match)`` continues a closure published in the last
        ``track_window`` keyframes (offset within ``track_tolerance`` keyframes)."""
        offset = query_index - match_index
        return any(0 < query_index - q <= self.track_window and
                   abs(offset - (q - m)) <= self.track_tolerance for q, m in self._track)

    def _remember(self, query_index: int, match_index: int) -> None:
        if not self.tracking:
            return
        self._track.append((query_index, match_index))
        self._track = [(q, m) for q, m in self._track
                       if query_index - q < self.track_window]

    @property
    def pending(self) -> int:
        """Closures waiting for a verdict."""
        return len(self._groups)


@dataclass(frozen=True)
class HypothesisCheck:
    """The verification of a place hypothesis's best candidate against the map's features.

    Attributes:
        query_index: the query keyframe.
        query_stamp_ns: its stamp.
        ref_index: the map frame verified (the hypothesis's best candidate).
        ref_stamp_ns: its stamp.
        verification: the outcome (a
            :class:`vpr_seq_ros.verification.geometry.Verification`: accepted or the reason,
            inliers, rotation and translation of ``X_map = R X_query + t``, covariance).
        compared_index: the map frame whose features were compared (the nearest one with
            features within ``max_index_offset``), or -1 when none had features.
    """

    query_index: int
    query_stamp_ns: int
    ref_index: int
    ref_stamp_ns: int
    verification: Any
    compared_index: int = -1

    @property
    def accepted(self) -> bool:
        """The geometry supports the hypothesis."""
        return bool(self.verification.accepted)

    @property
    def verified(self) -> bool:
        """Geometry gave a verdict (not dropped from the queue, and the map frame had
        features)."""
        return self.verification.reason.value not in ('dropped_from_queue', 'missing_features')


class HypothesisGate:
    """Verifies the best candidate of each place hypothesis against a map's stored features.

    Args:
        stage: a :class:`vpr_seq_ros.verification.worker.VerificationStage` whose
            ``reference`` is the map's features.
        map_image_size: ``(width, height)`` of the map's images (the camera intrinsics given
            as parameters are used only when the query images have this size too: the essential
            matrix needs one camera for both views; otherwise the fundamental matrix is fitted).
    """

    def __init__(self, stage: Any, map_image_size: tuple[int, int] | None = None) -> None:
        self.stage = stage
        self.map_image_size = map_image_size
        self.submitted = 0
        self.unverifiable = 0
        self._camera_known = False

    def add_keyframe(self, index: int, image: np.ndarray | None) -> bool:
        """Keep the query keyframe's local features; False when it has no image."""
        if image is None:
            self.unverifiable += 1
            if self.unverifiable == 1:
                log.warning('geometric verification needs images; keyframes given as '
                            'descriptors cannot be verified')
            return False
        if not self._camera_known:
            self._camera_known = True
            cfg = self.stage.cfg
            height, width = image.shape[:2]
            same = self.map_image_size is None or tuple(self.map_image_size) == (width, height)
            if cfg.has_intrinsics and same:
                from vpr_seq_ros.verification.geometry import CameraIntrinsics

                self.stage.set_intrinsics(CameraIntrinsics.from_config(cfg, width, height))
            elif cfg.has_intrinsics:
                log.warning('the query images are %d x %d, the map\'s %s: verification fits '
                            'the fundamental matrix (no relative pose) since one set of '
                            'intrinsics cannot serve both cameras', width, height,
                            ' x '.join(map(str, self.map_image_size or ())))
        self.stage.add_keyframe(index, image)
        return True

    def submit(self, hypothesis: PlaceHypothesis) -> bool:
        """Verify the hypothesis's best candidate; False when the budget refused it."""
        from vpr_seq_ros.verification.worker import VerificationRequest

        best = hypothesis.best
        if best is None:
            return False
        self.submitted += 1
        request = VerificationRequest(hypothesis.query_index, int(best.ref_index),
                                      hypothesis.query_stamp_ns, int(best.ref_stamp_ns),
                                      best.score)
        return bool(self.stage.submit(request))

    def collect(self) -> tuple[HypothesisCheck, ...]:
        """Verdicts finished since the last call, in the order they finished."""
        out = []
        for result in self.stage.poll():
            r = result.request
            out.append(HypothesisCheck(r.query_index, r.query_stamp_ns, r.match_index,
                                       r.match_stamp_ns, result.verification,
                                       result.verified_match_index))
        return tuple(out)


__all__ = ['HypothesisCheck', 'HypothesisGate', 'Rejected', 'VerificationGate']
