"""The node core: frames (and odometry) in stamp order in, what to publish out.

One keyframe goes through four stages::

    gating           ->  encode          ->  store + matcher           ->  decisions
    (this module:        (FrameEncoder)      (runtime.store, the          (runtime.decisions)
    path or time)                            method's StreamingMatcher)   -> StepResult

Modes:

* ``localization``: match the newest keyframe's window against a fixed reference map
  (:class:`~vpr_seq_ros.runtime.store.FixedStore`, opened read-only); every keyframe with a full
  window yields a :class:`PlaceHypothesis`.
* ``slam``: match against the robot's own past keyframes
  (:class:`~vpr_seq_ros.runtime.store.KeyframeStore`, a growing map; each keyframe is stored once
  and appended after it was matched). Loop-closure decisions are
  :class:`~vpr_seq_ros.runtime.decisions.LoopClosureDecider`'s: recent keyframes excluded,
  ``min_score``, ``max_distance``, ``min_streak``. With ``node.keyframe.max_keyframes > 0`` the
  store stops growing at that bound and later keyframes are matched but not stored (see
  :class:`~vpr_seq_ros.runtime.store.KeyframeStore`).

Keyframes: with odometry, one every ``min_distance_m`` of accumulated path; otherwise one every
``min_interval_s``. Time always comes from the data.

**Time jumps.** A frame stamped earlier than the previous one (a bag played again, a restarted
clock) resets the sequence buffer, starts a new segment (windows never span the jump) and starts
a new *time session*. In slam mode the keyframes of earlier sessions stay in the store and stay
matchable: the ``exclude_recent_s`` exclusion compares stamps only within the current session
(stamps of another session say nothing about how recent a keyframe is), while
``exclude_recent_m`` compares accumulated path length across sessions. So a bag played twice in a
row closes loops from its second pass onto its first. An odometry stamp going backwards restarts
the path accumulation, so the jump back to the start pose is not counted as travelled path.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from vpr_seq_ros.calibration import Calibration, load_calibration
from vpr_seq_ros.config import Config, to_dict
from vpr_seq_ros.conversions import PathLength
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import ConfigError, MapError
from vpr_seq_ros.matching.methods import SequenceMethod, StreamingMatcher, build_method
from vpr_seq_ros.matching.score import ScoreSample, sample_anchors, sample_stride
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.runtime.decisions import LoopClosureDecider, QueryKeyframe, place_hypothesis
from vpr_seq_ros.runtime.outputs import Diagnostics, LoopClosure, PlaceHypothesis, StepResult
from vpr_seq_ros.runtime.store import FixedStore, KeyframeStore, ReferenceStore
from vpr_seq_ros.runtime.verify import HypothesisCheck, HypothesisGate, VerificationGate
from vpr_seq_ros.types import Frame, Pose

log = logging.getLogger(__name__)

Decision = tuple['PlaceHypothesis | None', tuple[LoopClosure, ...]]


class NodeCore:
    """Everything the node decides, without ROS.

    Args:
        cfg: the whole configuration (``node`` section for mode, gating and loop closure).
        encoder: frame encoder (each keyframe is encoded once).
        refmap: the reference map (``localization``); None in ``slam`` mode.

    Attributes:
        method: the sequence method (parameters resolved once, from ``cfg`` and the encoder).
        store: the reference store (in slam mode created at the first keyframe, when the
            descriptor dimension is known).
        matcher: the method's streaming matcher over the store.

    Raises:
        ConfigError: ``localization`` without a map.
        MapError: the map was made by a different encoder.
    """

    def __init__(self, cfg: Config, encoder: FrameEncoder,
                 refmap: ReferenceMap | None = None) -> None:
        self._cfg = cfg
        self.encoder = encoder
        self.mode = cfg.node.mode
        self.method: SequenceMethod = build_method(cfg, encoder.seqgem_p)
        self.diagnostics = Diagnostics(sequence_length=self.method.window_length)
        self.refmap: ReferenceMap | None = None
        self.store: ReferenceStore | None = None
        self.matcher: StreamingMatcher | None = None
        if self.mode == 'localization':
            if refmap is None:
                raise ConfigError('localization mode needs a reference map (node.map_path)')
            refmap.check_query(encoder.settings())
            self.refmap = refmap
            self._open(FixedStore(refmap))
        self._decider = LoopClosureDecider()
        self._segment = 0
        self._session = 0
        self._last_stamp: int | None = None
        self._last_kf_stamp: int | None = None
        self._last_odom_stamp: int | None = None
        self._odom_pose: Pose | None = None
        self._path = PathLength()
        self._keyframe_index = -1
        self.calibration: Calibration | None = None
        if cfg.node.calibration:
            self.calibration = load_calibration(cfg.node.calibration)  # fatal at start-up
        elif cfg.node.loop_closure.min_confidence > 0:
            raise ConfigError('node.loop_closure.min_confidence needs node.calibration (a '
                              'calibration fitted on a validation run by vpr-seq evaluate or '
                              'replay)')
        self.verification: VerificationGate | None = None
        self.hypothesis_verification: HypothesisGate | None = None
        if self.mode == 'slam' and cfg.node.verification.enabled:
            self.verification = self._verification_gate(cfg, threaded=False)
        elif self.mode == 'localization' and cfg.node.verification.enabled:
            self.hypothesis_verification = self._hypothesis_gate(cfg, threaded=False)
        self.record_distances = False
        """Attach each keyframe's ``(N,)`` distances to its step (replay's plot); off live."""
        self._last_distances: np.ndarray | None = None

    @staticmethod
    def _verification_gate(cfg: Config, threaded: bool) -> VerificationGate:
        from vpr_seq_ros.verification.worker import VerificationStage

        vcfg = cfg.node.verification
        stage_cfg = vcfg  # with tracks, the stage accepts from the weak bar; the gate decides
        if vcfg.tracking:
            stage_cfg = dataclasses.replace(vcfg, min_inliers=vcfg.track_min_inliers)
        return VerificationGate(VerificationStage(stage_cfg, None, threaded=threaded),
                                vcfg.candidates, vcfg)

    def _hypothesis_gate(self, cfg: Config, threaded: bool) -> HypothesisGate:
        """Verification of localization hypotheses against the map's stored features.

        Raises:
            MapError: the map stores no local features, or features of another type.
        """
        from vpr_seq_ros.verification.worker import VerificationStage

        assert self.refmap is not None
        vcfg = cfg.node.verification
        features = self.refmap.map_features()
        where = f'map {self.refmap.path}' if self.refmap.path else 'the map'
        if features is None:
            raise MapError(
                f'{where} stores no local features, which verification of localization '
                'hypotheses (node.verification.enabled) needs: rebuild the map with '
                'vpr-seq build-map and node.verification.map_features set to true (features '
                'come from the mapping images), or turn node.verification.enabled off')
        if features.feature != vcfg.feature:
            raise MapError(f'{where} stores {features.feature} features but '
                           f'node.verification.feature is {vcfg.feature}: set it to '
                           f'{features.feature}, or rebuild the map with {vcfg.feature} features')
        sizes = self.refmap.manifest.get('features') or {}
        size = None
        if len(features):
            first = features.get(int(features.indices[0]))
            size = first.image_size if first is not None else None
        log.info('verifying localization hypotheses against %d map frames with %s features '
                 '(%s bytes per frame)', len(features), features.feature,
                 sizes.get('bytes_per_frame', '?'))
        return HypothesisGate(VerificationStage(vcfg, None, reference=features,
                                                threaded=threaded), size)

    def verify_in_background(self) -> None:
        """Verify loop closures (and localization hypotheses) on a worker thread (the live
        node); replay stays synchronous, so its answers are the same on every run."""
        if self.verification is not None and not self.verification.stage.threaded:
            self.verification.stage.close()
            self.verification = self._verification_gate(self.cfg, threaded=True)
        gate = self.hypothesis_verification
        if gate is not None and not gate.stage.threaded:
            gate.stage.close()
            self.hypothesis_verification = self._hypothesis_gate(self.cfg, threaded=True)

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

    def _open(self, store: ReferenceStore) -> None:
        self.store = store
        index = self.cfg.matching.index
        if index.kind != 'exact':
            if self.refmap is None:
                raise ConfigError('approximate search (matching.index.kind = '
                                  f'{index.kind}) needs a fixed map: slam mode searches its '
                                  'own keyframes exactly')
            from vpr_seq_ros.matching.methods.approximate import approximate_stream, load_index

            ann = load_index(self.refmap, self.method, index)
            self.matcher = approximate_stream(self.method, store, ann, index,
                                              self.cfg.matching.top_k)
        else:
            self.matcher = self.method.stream(store)
        self.diagnostics.map_size = len(store)

    # ---------------------------------------------------------------------------- state
    @property
    def cfg(self) -> Config:
        """The configuration; setting it applies run-time changes (top_k, gating, loop
        closure, the keyframe bound) from the next frame on."""
        return self._cfg

    @cfg.setter
    def cfg(self, cfg: Config) -> None:
        self._cfg = cfg
        if isinstance(self.store, KeyframeStore):
            self.store.max_keyframes = cfg.node.keyframe.max_keyframes

    @property
    def num_keyframes(self) -> int:
        """Keyframes kept since start-up."""
        return self._keyframe_index + 1

    @property
    def window_length(self) -> int:
        """Keyframes per query window (the method's)."""
        return self.method.window_length

    # ---------------------------------------------------------------------------- inputs
    def on_odometry(self, stamp_ns: int, pose: Pose) -> None:
        """A pose sample (odometry / GPS in a metric frame); accumulates the path length."""
        if self._last_odom_stamp is not None and stamp_ns < self._last_odom_stamp:
            self._path.restart()  # time restarted: the jump back is not travelled path
        self._last_odom_stamp = stamp_ns
        self._path.update(pose.x, pose.y, pose.z)
        self._odom_pose = pose

    def reset(self) -> None:
        """Forget the sequence buffer and loop-closure streak (``~/reset``)."""
        if self.matcher is not None:
            self.matcher.reset()
        self._segment += 1
        self._decider.reset()
        self.diagnostics.resets += 1

    def _new_session(self) -> None:
        self.reset()
        self._last_kf_stamp = None
        self._session += 1
        self.diagnostics.sessions += 1

    def _is_keyframe(self, stamp_ns: int) -> bool:
        gate = self.cfg.node.keyframe
        if self._last_kf_stamp is None:
            return True
        if self._odom_pose is not None and gate.min_distance_m > 0:
            return self._path.since_mark() >= gate.min_distance_m
        if gate.min_interval_s > 0:
            return (stamp_ns - self._last_kf_stamp) >= gate.min_interval_s * 1e9
        return True

    def takes_frame(self, stamp_ns: int) -> bool:
        """Whether a frame stamped ``stamp_ns`` would become a keyframe now (changes nothing).

        The node's intake decodes only such frames: the others are counted as skipped by the
        keyframe gate without their image being decoded.
        """
        if self._last_stamp is not None and stamp_ns < self._last_stamp:
            return True  # a backwards jump starts a new session, whose first frame is a keyframe
        return self._is_keyframe(stamp_ns)

    def on_frame(self, frame: Frame) -> StepResult:
        """Process the newest frame (image or precomputed descriptor)."""
        diag = self.diagnostics
        diag.frames_received += 1
        reset = False
        if self._last_stamp is not None and frame.stamp_ns < self._last_stamp:
            log.warning('time jumped backwards (%d -> %d ns): new session, resetting the '
                        'sequence buffer', self._last_stamp, frame.stamp_ns)
            self._new_session()
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
        self._last_distances = None
        hypothesis, closures = self._match(frame, descriptor)
        rejected: tuple = ()
        if self.verification is not None:
            closures, rejected = self.verification.collect()
            diag.loop_closures_rejected += len(rejected)
            diag.extra.update(self.verification.stage.diagnostics())
        checks: tuple = ()
        if self.hypothesis_verification is not None:
            hypothesis, checks = self._check_hypothesis(frame, hypothesis)
        done = time.perf_counter()
        diag.last_encode_ms = 1e3 * (encoded - started)
        diag.last_match_ms = 1e3 * (done - encoded)
        assert self.matcher is not None and self.store is not None
        diag.buffer_fill = min(self.matcher.num_frames, diag.sequence_length)
        diag.map_size = len(self.store)
        diag.hypotheses += hypothesis is not None
        diag.loop_closures += len(closures)
        return StepResult(frame.stamp_ns, True, hypothesis, closures, reset,
                          diag.last_encode_ms, diag.last_match_ms,
                          self._last_distances if self.record_distances else None,
                          rejected, checks)

    def _check_hypothesis(self, frame: Frame, hypothesis: PlaceHypothesis | None
                          ) -> tuple[PlaceHypothesis | None, tuple[HypothesisCheck, ...]]:
        """Localization: verify the hypothesis's best candidate against the map's features
        (at once in replay, on the worker live); attach the verdict when it is already in."""
        gate = self.hypothesis_verification
        assert gate is not None
        if hypothesis is not None and hypothesis.candidates and \
                gate.add_keyframe(self._keyframe_index, frame.image):
            gate.submit(hypothesis)  # only keyframes with a hypothesis need features
        checks = gate.collect()
        self.diagnostics.extra.update(gate.stage.diagnostics())  # verification.* counters
        if hypothesis is not None:
            for check in checks:
                if check.query_index == hypothesis.query_index:
                    hypothesis = dataclasses.replace(hypothesis, verification=check)
        return hypothesis, checks

    # ---------------------------------------------------------------------------- stages
    def _match(self, frame: Frame, descriptor: np.ndarray) -> Decision:
        """Store/matcher, then decisions."""
        if self.store is None:  # slam: the descriptor dimension is known now
            self._open(KeyframeStore(len(descriptor), self.cfg.node.keyframe.max_keyframes))
        assert self.store is not None and self.matcher is not None
        distances = self.matcher.push(descriptor, self._segment)
        self._last_distances = distances
        if not isinstance(self.store, KeyframeStore):
            if distances is None:
                return None, ()
            return place_hypothesis(self._keyframe_index, frame.stamp_ns, distances,
                                    self.store, self.cfg.matching.top_k,
                                    self._score_sample(distances), self.calibration), ()
        decision: Decision = (None, ())
        if self.verification is not None:
            self.verification.add_keyframe(self._keyframe_index, frame.image)
        if distances is not None and len(distances):
            query = QueryKeyframe(self._keyframe_index, frame.stamp_ns, self._session,
                                  self._path.total_m if self._odom_pose is not None else None,
                                  self._odom_pose if self._odom_pose is not None
                                  else frame.pose)
            decision = self._decider.step(distances, self.store, query,
                                          self.cfg.node.loop_closure, self.cfg.matching.top_k,
                                          self._score_sample(distances), self.calibration)
            if self.verification is not None and decision[1]:
                assert decision[0] is not None
                for closure in decision[1]:
                    self.verification.submit(closure, decision[0])
                decision = (decision[0], ())  # published once verified
        pose = self._odom_pose if self._odom_pose is not None else frame.pose
        if self.store.append(descriptor, frame.stamp_ns, pose, self._segment, self._session,
                             self._path.total_m):
            self.matcher.appended()
        else:
            self.diagnostics.keyframes_not_stored += 1
        return decision

    def _score_sample(self, distances: np.ndarray) -> ScoreSample:
        """The score's sample for this keyframe: fixed anchors of those now in the store and
        their exact distances from the matcher (read off an exact scan, computed there by an
        approximate one), which also gives those of the dip around the best anchor."""
        assert self.matcher is not None
        matcher = self.matcher
        n, size = len(distances), self.cfg.matching.score_sample
        anchors = sample_anchors(n, size)
        return ScoreSample(anchors, matcher.distances_at(anchors, distances, cache=True),
                           sample_stride(n, size), n,
                           lambda at: matcher.distances_at(at, distances))

    # ---------------------------------------------------------------------------- map
    def keyframe_map(self) -> ReferenceMap:
        """The slam mode's keyframes as a reference map (with the method's map-side data, and,
        when verification is on, the local features its store holds: the store is bounded, so
        with ``eviction: thin`` a long run keeps features of a uniform subset of keyframes,
        and localization verifies against the nearest one within ``max_index_offset``).

        Raises:
            MapError: localization mode (the map is read-only), or no keyframes yet.
        """
        if not isinstance(self.store, KeyframeStore):
            if self.mode != 'slam':
                raise MapError('the reference map is read-only in localization mode')
            raise MapError('no keyframes yet: nothing to save')
        run = self.store.as_run()
        extra = {}
        pre = self.method.precompute(run)
        if pre is not None:
            extra['sequence_descriptors'] = pre.info
        features = None
        if self.verification is not None:
            features, summary = self.verification.stage.store_arrays()
            if features is not None:
                extra['features'] = {**summary, 'frames': summary['keyframes'],
                                     'bytes_per_frame': round(summary['bytes_per_keyframe'], 1),
                                     'max_features': self.cfg.node.verification.max_features,
                                     'max_image_width':
                                         self.cfg.node.verification.max_image_width}
        manifest = make_manifest(self.encoder.settings(), self.cfg.sequence.length, 'slam',
                                 self.cfg.map.dtype, len(run), run.descriptors.shape[1],
                                 config=to_dict(self.cfg), **extra)
        return ReferenceMap(run, manifest, None if pre is None else pre.descriptors,
                            features=features)

    def save_map(self, path: str | Path) -> Path:
        """Write the slam keyframe map atomically (``~/save_map``)."""
        return save_map(self.keyframe_map(), path)


__all__ = ['NodeCore']
