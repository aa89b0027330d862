"""The node core: frames (and odometry) in stamp order in, what to publish out.

Modes:

* ``localization``: match the newest keyframe's sequence against a fixed reference map, opened
  read-only; every keyframe with a full window yields a :class:`PlaceHypothesis`.
* ``slam``: match against the robot's own past keyframes (a growing map). Keyframes of the last
  ``exclude_recent_s`` seconds and (once odometry arrives) ``exclude_recent_m`` metres of path
  are never candidates; a candidate must stand out (``min_score`` standard deviations below the
  mean distance) and be within ``max_distance`` when that is set; a :class:`LoopClosure` is
  published once ``min_streak`` consecutive keyframes matched consistently (the matched index
  advancing by one, +- ``streak_tolerance``).

Keyframes: with odometry, one every ``min_distance_m`` of path; otherwise one every
``min_interval_s``. A stamp earlier than the previous frame's (a bag restarted) resets the
sequence buffer and starts a new segment. Time always comes from the data.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from vpr_seq_ros.config import Config, to_dict
from vpr_seq_ros.conversions import PathLength
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import ConfigError, MapError
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.runtime.outputs import (Candidate, Diagnostics, LoopClosure, PlaceHypothesis,
                                         StepResult)
from vpr_seq_ros.runtime.streams import Stream, build_stream
from vpr_seq_ros.types import EncodedRun, Frame, Pose

log = logging.getLogger(__name__)


def distinctiveness(distances: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """Scores of chosen distances: standard deviations below the mean of all finite ones."""
    finite = distances[np.isfinite(distances)]
    if finite.size < 2:
        return np.zeros(len(chosen))
    std = float(finite.std())
    if std <= 0:
        return np.zeros(len(chosen))
    return np.maximum((float(finite.mean()) - chosen) / std, 0.0)


class NodeCore:
    """Everything the node decides, without ROS.

    Args:
        cfg: the whole configuration (``node`` section for mode, gating and loop closure).
        encoder: frame encoder (each keyframe is encoded once).
        refmap: the reference map (``localization``); None in ``slam`` mode.

    Raises:
        ConfigError: ``localization`` without a map.
        MapError: the map was made by a different encoder.
    """

    def __init__(self, cfg: Config, encoder: FrameEncoder,
                 refmap: ReferenceMap | None = None) -> None:
        self.cfg = cfg
        self.encoder = encoder
        self.mode = cfg.node.mode
        self.diagnostics = Diagnostics(sequence_length=self._window_length())
        if self.mode == 'localization':
            if refmap is None:
                raise ConfigError('localization mode needs a reference map (node.map_path)')
            refmap.check_query(encoder.settings())
            self.refmap = refmap
            self.stream: Stream = build_stream(cfg, refmap.run.descriptors, refmap.run.segments,
                                               encoder.seqgem_p, self._stored_sequences(refmap))
            self._ref_stamps = refmap.run.stamps_ns
            self._ref_poses = refmap.run.poses
        else:
            self.refmap = None
            self.stream = self._empty_stream(max(encoder.dim, 0))
            self._kf_descriptors: list[np.ndarray] = []
            self._kf_stamps: list[int] = []
            self._kf_poses: list[np.ndarray | None] = []
            self._kf_segments: list[int] = []
            self._kf_path_m: list[float] = []
        self.diagnostics.map_size = self.stream.num_references
        self._segment = 0
        self._last_stamp: int | None = None
        self._last_kf_stamp: int | None = None
        self._odom_pose: Pose | None = None
        self._path = PathLength()
        self._keyframe_index = -1
        self._streak = 0
        self._last_match: int | None = None

    def _empty_stream(self, dim: int) -> Stream:
        return build_stream(self.cfg, np.zeros((0, dim), np.float32), np.zeros(0, np.int64),
                            self.encoder.seqgem_p)

    @classmethod
    def from_config(cls, cfg: Config) -> NodeCore:
        """Load the encoder and (in localization mode) the map: the node's start-up step."""
        encoder = build_encoder(cfg.encoder)
        refmap = None
        if cfg.node.mode == 'localization':
            if not cfg.node.map_path:
                raise ConfigError('localization mode needs node.map_path (launch argument map)')
            refmap = load_map(cfg.node.map_path)
        return cls(cfg, encoder, refmap)

    # ---------------------------------------------------------------------------- helpers
    def _window_length(self) -> int:
        return 1 if self.cfg.matching.method == 'single' else self.cfg.sequence.length

    def _stored_sequences(self, refmap: ReferenceMap) -> np.ndarray | None:
        info = refmap.manifest.get('sequence_descriptors')
        if refmap.sequence_descriptors is None or not isinstance(info, dict):
            return None
        p = self.encoder.seqgem_p if self.encoder.seqgem_p is not None else \
            self.cfg.matching.seqgem_p
        if info.get('length') == self.cfg.sequence.length and \
                math.isclose(float(info.get('p', -1)), float(p), rel_tol=1e-6):
            return refmap.sequence_descriptors
        return None

    @property
    def num_keyframes(self) -> int:
        """Keyframes kept since start-up."""
        return self._keyframe_index + 1

    # ---------------------------------------------------------------------------- inputs
    def on_odometry(self, stamp_ns: int, pose: Pose) -> None:
        """A pose sample (odometry / GPS in a metric frame); accumulates the path length."""
        self._path.update(pose.x, pose.y, pose.z)
        self._odom_pose = pose

    def reset(self) -> None:
        """Forget the sequence buffer and loop-closure streak (``~/reset``)."""
        self.stream.reset()
        self._segment += 1
        self._streak = 0
        self._last_match = None
        self.diagnostics.resets += 1

    def _is_keyframe(self, stamp_ns: int) -> bool:
        gate = self.cfg.node.keyframe
        if self._last_kf_stamp is None:
            return True
        if self._odom_pose is not None and gate.min_distance_m > 0:
            return self._path.since_mark() >= gate.min_distance_m
        if gate.min_interval_s > 0:
            return (stamp_ns - self._last_kf_stamp) >= gate.min_interval_s * 1e9
        return True

    def on_frame(self, frame: Frame) -> StepResult:
        """Process the newest frame (image or precomputed descriptor)."""
        diag = self.diagnostics
        diag.frames_received += 1
        reset = False
        if self._last_stamp is not None and frame.stamp_ns < self._last_stamp:
            log.warning('time jumped backwards (%d -> %d ns): resetting the sequence buffer',
                        self._last_stamp, frame.stamp_ns)
            self.reset()
            self._last_kf_stamp = None
            reset = True
        self._last_stamp = frame.stamp_ns
        if not self._is_keyframe(frame.stamp_ns):
            diag.frames_skipped_gating += 1
            return StepResult(frame.stamp_ns, keyframe=False, reset=reset)
        self._last_kf_stamp = frame.stamp_ns
        self._path.mark()
        self._keyframe_index += 1
        diag.keyframes += 1
        started = time.perf_counter()
        data = frame.image if frame.image is not None else frame.descriptor
        descriptor = self.encoder.encode([data])[0]
        encoded = time.perf_counter()
        if self.mode == 'localization':
            result = self._localize(frame, descriptor)
        else:
            result = self._slam(frame, descriptor)
        done = time.perf_counter()
        diag.last_encode_ms = 1e3 * (encoded - started)
        diag.last_match_ms = 1e3 * (done - encoded)
        diag.buffer_fill = min(self.stream.num_frames, diag.sequence_length)
        diag.map_size = self.stream.num_references
        hypothesis, closures = result
        diag.hypotheses += hypothesis is not None
        diag.loop_closures += len(closures)
        return StepResult(frame.stamp_ns, True, hypothesis, tuple(closures), reset,
                          diag.last_encode_ms, diag.last_match_ms)

    # ---------------------------------------------------------------------------- modes
    def _candidates(self, distances: np.ndarray, stamps: np.ndarray,
                    poses: np.ndarray | None) -> tuple[Candidate, ...]:
        finite = np.flatnonzero(np.isfinite(distances))
        if not len(finite):
            return ()
        k = min(self.cfg.matching.top_k, len(finite))
        top = finite[np.argpartition(distances[finite], k - 1)[:k]]
        top = top[np.argsort(distances[top], kind='stable')]
        scores = distinctiveness(distances, distances[top])
        return tuple(
            Candidate(int(i), int(stamps[i]), float(distances[i]), float(s),
                      Pose(*poses[i]) if poses is not None and np.all(np.isfinite(poses[i]))
                      else None)
            for i, s in zip(top, scores))

    def _localize(self, frame: Frame, descriptor: np.ndarray):
        distances = self.stream.push(descriptor, self._segment)
        if distances is None:
            return None, []
        candidates = self._candidates(distances, self._ref_stamps, self._ref_poses)
        return PlaceHypothesis(self._keyframe_index, frame.stamp_ns, candidates), []

    def _slam(self, frame: Frame, descriptor: np.ndarray):
        if not self._kf_descriptors and self.stream.num_references == 0:
            self.stream = self._empty_stream(len(descriptor))  # dimension known now
        distances = self.stream.push(descriptor, self._segment, append=True)
        pose = self._odom_pose if self._odom_pose is not None else frame.pose
        self._kf_descriptors.append(descriptor)
        self._kf_stamps.append(frame.stamp_ns)
        self._kf_poses.append(pose.as_array() if pose is not None else None)
        self._kf_segments.append(self._segment)
        self._kf_path_m.append(self._path.total_m)
        if distances is None or not len(distances):
            return None, []
        n = len(distances)
        lc = self.cfg.node.loop_closure
        stamps = np.asarray(self._kf_stamps[:n], np.int64)
        masked = distances.copy()
        masked[stamps > frame.stamp_ns - int(lc.exclude_recent_s * 1e9)] = np.inf
        if lc.exclude_recent_m > 0 and self._odom_pose is not None:  # metres need odometry
            path = np.asarray(self._kf_path_m[:n])
            masked[path > self._path.total_m - lc.exclude_recent_m] = np.inf
        have_poses = all(p is not None for p in self._kf_poses[:n])
        poses = np.stack(self._kf_poses[:n]) if have_poses and n else None
        candidates = self._candidates(masked, stamps, poses)
        hypothesis = PlaceHypothesis(self._keyframe_index, frame.stamp_ns, candidates)
        best = hypothesis.best
        if best is None or (lc.max_distance > 0 and best.distance > lc.max_distance) or \
                best.score < lc.min_score:
            self._streak, self._last_match = 0, None
            return hypothesis, []
        consistent = self._last_match is not None and \
            abs(best.ref_index - (self._last_match + 1)) <= lc.streak_tolerance
        self._streak = self._streak + 1 if consistent else 1
        self._last_match = best.ref_index
        if self._streak < lc.min_streak:
            return hypothesis, []
        closure = LoopClosure(self._keyframe_index, frame.stamp_ns, best.ref_index,
                              best.ref_stamp_ns, best.distance, best.score, self._streak)
        return hypothesis, [closure]

    # ---------------------------------------------------------------------------- map
    def keyframe_map(self) -> ReferenceMap:
        """The slam mode's keyframes as a reference map."""
        if self.mode != 'slam':
            raise MapError('the reference map is read-only in localization mode')
        if not self._kf_descriptors:
            raise MapError('no keyframes yet: nothing to save')
        descriptors = np.stack(self._kf_descriptors).astype(np.float32)
        have = all(p is not None for p in self._kf_poses)
        run = EncodedRun(descriptors, np.asarray(self._kf_stamps, np.int64),
                         np.stack(self._kf_poses) if have else None,  # type: ignore[arg-type]
                         np.asarray(self._kf_segments, np.int64))
        manifest = make_manifest(self.encoder.settings(), self.cfg.sequence.length, 'slam',
                                 self.cfg.map.dtype, len(run), descriptors.shape[1],
                                 config=to_dict(self.cfg))
        return ReferenceMap(run, manifest)

    def save_map(self, path: str | Path) -> Path:
        """Write the slam keyframe map atomically (``~/save_map``)."""
        return save_map(self.keyframe_map(), path)
