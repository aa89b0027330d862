"""Replay a run through the node's code path, in its own time, and evaluate it.

A run is a bag, an image folder or a ``.npy`` descriptor run. Bag messages go through exactly
what the live node does: image messages are decoded by the same
decoder, odometry updates the same :class:`NodeCore`, and every step's messages are built by the
same :mod:`vpr_seq_ros.messages.outputs` functions. They are written to a result bag (MCAP),
so they can be inspected in Foxglove or RViz, and scored against the bag's poses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace as dc_replace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Iterator

import numpy as np

from vpr_seq_ros import __version__
from vpr_seq_ros.config import Config, SourceConfig, to_dict
from vpr_seq_ros.config import replace as config_replace
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import DecodeError, SourceError, VprSeqError
from vpr_seq_ros.evaluation import Metrics, compute_metrics, ground_truth, report_dict
from vpr_seq_ros.messages.images import decode_any
from vpr_seq_ros.messages.outputs import (OUTPUT_TYPES, TOPIC_DIAGNOSTICS, diagnostics,
                                          rosbags_factory, step_messages)
from vpr_seq_ros.matching.windows import check_length
from vpr_seq_ros.pipeline import (MAX_PLOT_MATRIX, bag_topic_types, evaluation_k,
                                  ground_truth_dict, manifest_digest, query_source_config)
from vpr_seq_ros.refmap import ReferenceMap
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.outputs import LoopClosure, StepResult
from vpr_seq_ros.sources.bag import (IMAGE_TYPES, NAVSATFIX, POSE_TYPES, check_topic,
                                     geodetic_to_enu, interpolate_poses, open_bag, pose_of,
                                     stamp_ns_of, topics_hint)
from vpr_seq_ros.sources import FrameSource, open_source
from vpr_seq_ros.types import EncodedRun, Frame, Matches, Pose
from vpr_seq_ros.writing import atomic_write

log = logging.getLogger(__name__)

NODE_NAME = 'vpr_seq_node'
MAX_POSE_GAP_NS = 5_000_000_000


def resolve_topic(topic: str) -> str:
    """Absolute name of a node topic (``~/x`` -> ``/vpr_seq_node/x``)."""
    return f'/{NODE_NAME}/{topic[2:]}' if topic.startswith('~/') else topic


@dataclass
class ReplayResult:
    """What a replay produced.

    Attributes:
        keyframes: stamps of the keyframes, in order.
        frame_indices: each keyframe's frame index in the run (for same-index ground truth).
        keyframe_poses: ``(K, 4)`` poses interpolated at the keyframes, when the run has them.
        notes: settings inherited from the map that did not apply to this run.
        columns: each keyframe's ``(N,)`` distances (None before a full window), when the map
            is small enough for a plot of the distance matrix.
        steps: the node core's result for every keyframe.
        metrics: localization metrics (when the bag and the map have poses).
        report: the JSON report.
        result_bag: the MCAP bag of published messages, if written.
        latencies_ms: per-keyframe encode + match time.
    """

    keyframes: list[int] = field(default_factory=list)
    steps: list[StepResult] = field(default_factory=list)
    metrics: Metrics | None = None
    report: dict[str, Any] = field(default_factory=dict)
    result_bag: Path | None = None
    latencies_ms: list[float] = field(default_factory=list)
    positives: list[np.ndarray] = field(default_factory=list)
    matches: Matches | None = None
    frame_indices: list[int] = field(default_factory=list)
    keyframe_poses: np.ndarray | None = None
    columns: list[np.ndarray | None] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class _ResultBag:
    """The result bag: one connection per output topic, written in bag time."""

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = path
        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.make = rosbags_factory(self.store)
        if path.exists():
            raise VprSeqError(f'{path} exists; remove it or choose another --out')
        self.writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        self.connections: dict[str, Any] = {}

    def write(self, topic: str, typename: str, msg: Any, stamp_ns: int) -> None:
        name = resolve_topic(topic)
        conn = self.connections.get(name)
        if conn is None:
            conn = self.connections[name] = self.writer.add_connection(
                name, typename, typestore=self.store)
        self.writer.write(conn, stamp_ns, self.store.serialize_cdr(msg, typename))

    def close(self) -> None:
        self.writer.close()


def _pose_sample(msg: Any, msgtype: str, origin: list) -> Pose | None:
    """A metric pose from a pose message; NavSatFix becomes ENU about ``origin`` (set from the
    first fix when empty); yaw of a fix is unknown (NaN) while streaming."""
    if msgtype != NAVSATFIX:
        return Pose(*pose_of(msg, msgtype))
    if int(msg.status.status) < 0 or not (math.isfinite(msg.latitude) and
                                          math.isfinite(msg.longitude)):
        return None
    alt = msg.altitude if math.isfinite(msg.altitude) else (origin[2] if origin else 0.0)
    if not origin:
        origin.extend([float(msg.latitude), float(msg.longitude), float(alt)])
    east, north, up = geodetic_to_enu(np.array([msg.latitude]), np.array([msg.longitude]),
                                      np.array([alt]), tuple(origin))[0]
    return Pose(float(east), float(north), float(up), math.nan)


Event = tuple[str, int, Any]
"""A replay input in bag order: ``('pose', stamp_ns, Pose)``, ``('frame', stamp_ns,
(frame_index, image or descriptor))`` or ``('malformed', receive_ns, (frame_index, reason))``."""


def _bag_events(reader: Any, bag: str | Path, source_cfg: SourceConfig,
                origin: list[float]) -> Iterator[Event]:
    """The image and pose messages of a bag, decoded exactly as the live node decodes them."""
    topics = reader.topics
    image_topic = source_cfg.image_topic
    image_type = check_topic(topics, bag, image_topic, IMAGE_TYPES, 'image')
    wanted = [c for c in reader.connections if c.topic == image_topic]
    pose_type = None
    if source_cfg.pose_topic:
        pose_type = check_topic(topics, bag, source_cfg.pose_topic, POSE_TYPES, 'pose')
        wanted += [c for c in reader.connections if c.topic == source_cfg.pose_topic]
    index = 0
    for conn, receive_ns, raw in reader.messages(connections=wanted):
        if conn.topic != image_topic:
            msg = reader.deserialize(raw, pose_type)
            pose = _pose_sample(msg, pose_type, origin)
            if pose is not None:
                yield 'pose', stamp_ns_of(msg, receive_ns), pose
            continue
        try:
            msg = reader.deserialize(raw, image_type)
            image = decode_any(msg)
            stamp = stamp_ns_of(msg, receive_ns)
        except DecodeError as err:
            yield 'malformed', receive_ns, (index, str(err))
        except Exception as err:  # noqa: BLE001 - undeserialisable bytes
            yield 'malformed', receive_ns, (index, f'undeserialisable: {err}')
        else:
            yield 'frame', stamp, (index, image)
        index += 1


def _source_events(source: FrameSource) -> Iterator[Event]:
    """The frames of an image folder or descriptor run; their poses come first, as odometry
    would."""
    for i, frame in enumerate(source):
        if frame.pose is not None:
            yield 'pose', frame.stamp_ns, frame.pose
        data = frame.image if frame.image is not None else frame.descriptor
        yield 'frame', frame.stamp_ns, (i, data)


def _count_frames(run: Path, source_cfg: SourceConfig, reader: Any | None,
                  source: FrameSource | None) -> int:
    """Input frames of a run; a bag's topics are checked first."""
    if reader is None:
        return len(source) if source is not None else 0
    if not source_cfg.image_topic:
        raise SourceError(f'replaying a bag needs the image topic (source.image_topic); '
                          f'{topics_hint(reader.topics)}')
    check_topic(reader.topics, run, source_cfg.image_topic, IMAGE_TYPES, 'image')
    if source_cfg.pose_topic:
        check_topic(reader.topics, run, source_cfg.pose_topic, POSE_TYPES, 'pose')
    return int(reader.topics[source_cfg.image_topic].msgcount)


def replay(run: str | Path, cfg: Config, refmap: ReferenceMap | None = None,
           out_dir: str | Path | None = None, encoder: FrameEncoder | None = None,
           progress: Callable[[int], None] | None = None,
           on_start: Callable[[int], None] | None = None,
           inherited: Collection[str] = ()) -> ReplayResult:
    """Feed a run through the node core in its own time; write the result bag and a report.

    A bag's image and pose messages go through the node's decoder and core in bag order; an
    image folder or ``.npy`` descriptor run (any source ``evaluate`` reads) goes through the
    core frame by frame, its poses first, as odometry would. Keyframe gating is the node's
    (``node.keyframe``), never the source's. Localization candidates are kept for every K of
    Recall@K; the result bag holds what the node would publish (``matching.top_k``).

    Args:
        run: a bag (ROS 1 or 2), an image folder or a ``.npy`` descriptor file.
        cfg: configuration (``source``, ``node``, ``evaluation`` sections, ...).
        refmap: the map (``localization`` mode); None in ``slam`` mode.
        out_dir: where ``result_bag/`` goes (None: no result bag).
        encoder: a ready encoder (default: built from ``cfg.encoder``).
        progress: called with 1 per input frame.
        on_start: called with the number of input frames before the replay starts.
        inherited: dotted keys set only by the map's configuration (see
            :func:`vpr_seq_ros.pipeline.query_source_config`).

    Raises:
        SourceError: unreadable run, missing or wrong topics.
        MapError: the map does not fit the encoder.
        MatchingError: fewer frames (or keyframes) than one sequence window.
    """
    run = Path(run)
    if not run.exists():
        raise SourceError(f'source {run} does not exist')
    source_cfg, geo_origin, notes = query_source_config(run, cfg, refmap, inherited)
    source_cfg = dc_replace(source_cfg, keyframe_distance_m=0.0)  # the node gates keyframes
    is_bag = bag_topic_types(run) is not None
    encoder = encoder or build_encoder(cfg.encoder)
    core_cfg = cfg
    if cfg.node.mode == 'localization':
        core_cfg = config_replace(cfg, **{'matching.top_k': evaluation_k(cfg)})
    core = NodeCore(core_cfg, encoder, refmap)  # refuses a map of another encoder first
    window = core.window_length
    result = ReplayResult(notes=notes)
    origin: list[float] = list(geo_origin) if geo_origin else []
    pose_ns: list[int] = []
    pose_rows: list[tuple[float, float, float, float]] = []
    reader = open_bag(run) if is_bag else None
    source = None if is_bag else open_source(run, source_cfg)
    out_bag: _ResultBag | None = None
    top_k = cfg.matching.top_k
    try:
        total = _count_frames(run, source_cfg, reader, source)
        check_length(total, window, f'query run {run}')
        core.record_distances = refmap is not None and \
            len(refmap) * total <= MAX_PLOT_MATRIX  # a distance matrix for the plot
        out_bag = _ResultBag(Path(out_dir) / 'result_bag') if out_dir is not None else None
        if on_start:
            on_start(total)
        events = _bag_events(reader, run, source_cfg, origin) if reader is not None else \
            _source_events(source)  # type: ignore[arg-type]
        next_diag_ns: int | None = None
        query_pose: Pose | None = None
        for kind, stamp, payload in events:
            if kind == 'pose':
                core.on_odometry(stamp, payload)
                query_pose = payload
                if not pose_ns or stamp > pose_ns[-1]:
                    pose_ns.append(stamp)
                    pose_rows.append((payload.x, payload.y, payload.z, payload.yaw))
                continue
            if progress:
                progress(1)
            if kind == 'malformed':
                core.diagnostics.frames_dropped_malformed += 1
                log.warning('dropped a malformed image (frame %d) at %d ns: %s', payload[0],
                            stamp, payload[1])
                continue
            index, data = payload
            is_image = isinstance(data, np.ndarray) and data.ndim == 3
            frame = Frame(index=index, stamp_ns=stamp, image=data if is_image else None,
                          descriptor=None if is_image else data)
            step = core.on_frame(frame)
            if step.keyframe:
                result.keyframes.append(stamp)
                result.frame_indices.append(index)
                result.steps.append(dc_replace(step, distances=None))
                result.latencies_ms.append(step.encode_ms + step.match_ms)
                if core.record_distances:
                    result.columns.append(step.distances)
            if out_bag is not None:
                published = _published(step, top_k)
                for out in step_messages(out_bag.make, published, cfg.node.map_frame,
                                         cfg.node.max_distance, query_pose,
                                         cfg.node.publish_markers,
                                         cfg.node.verification.enabled):
                    out_bag.write(out.topic, out.typename, out.msg, stamp)
                if next_diag_ns is None or stamp >= next_diag_ns:
                    out_bag.write(TOPIC_DIAGNOSTICS, OUTPUT_TYPES[TOPIC_DIAGNOSTICS],
                                  diagnostics(out_bag.make, core.diagnostics, stamp,
                                              f'vpr_seq_ros: {cfg.node.mode}'), stamp)
                    next_diag_ns = stamp + 1_000_000_000
    finally:
        if reader is not None:
            reader.close()
        if out_bag is not None:
            out_bag.close()
            result.result_bag = out_bag.path
    if cfg.node.mode == 'localization':
        check_length(len(result.keyframes), window,
                     f'query run {run} after keyframe gating and dropped frames')
    _score(result, core, cfg, refmap, np.asarray(pose_ns, np.int64),
           np.asarray(pose_rows, np.float64).reshape(-1, 4))
    if source is not None:
        result.report['dropped_by_source'] = getattr(source, 'dropped', lambda: {})()
    return result


def _hypothesis_report(result: ReplayResult, positives: list[np.ndarray] | None
                       ) -> dict[str, Any]:
    """Localization hypotheses verified against the map's features: accepted and rejected
    (with reasons; ``unverified``: no verdict, e.g. no features near that map frame) and, with
    ground truth, how many of each had a right best candidate. Hypotheses the budget refused
    are in ``hypotheses`` only."""
    counts: dict[str, Any] = {'hypotheses': 0, 'verified': 0, 'accepted': 0, 'rejected': 0,
                              'unverified': 0, 'reasons': {}}
    right = {'accepted_right': 0, 'accepted_wrong': 0, 'rejected_right': 0,
             'rejected_wrong': 0}
    for row, step in enumerate(result.steps):
        if step.hypothesis is None or not step.hypothesis.candidates:
            continue
        counts['hypotheses'] += 1
        check = step.hypothesis.verification
        if check is None:
            continue
        reason = check.verification.reason.value
        counts['reasons'][reason] = counts['reasons'].get(reason, 0) + 1
        if not check.verified:  # no verdict: dropped, or no features near that map frame
            counts['unverified'] += 1
            continue
        counts['verified'] += 1
        counts['accepted' if check.accepted else 'rejected'] += 1
        if positives is not None and len(positives[row]):
            ok = bool(np.isin(check.ref_index, positives[row]))
            right[f'{"accepted" if check.accepted else "rejected"}_'
                  f'{"right" if ok else "wrong"}'] += 1
    if positives is not None:
        counts.update(right)
        judged = right['accepted_right'] + right['accepted_wrong']
        counts['precision_of_accepted'] = right['accepted_right'] / judged if judged else None
    return counts


def _published(step: StepResult, top_k: int) -> StepResult:
    """What the node publishes of a step: the best ``top_k`` candidates."""
    hyp = step.hypothesis
    if hyp is None or len(hyp.candidates) <= top_k:
        return step
    return dc_replace(step, hypothesis=dc_replace(hyp, candidates=hyp.candidates[:top_k]))


def _score(result: ReplayResult, core: NodeCore, cfg: Config, refmap: ReferenceMap | None,
           pose_ns: np.ndarray, pose_rows: np.ndarray) -> None:
    """Fill the report: latency, counters, and accuracy where ground truth exists."""
    lat = np.asarray(result.latencies_ms) if result.latencies_ms else np.zeros(1)
    report: dict[str, Any] = {
        'mode': cfg.node.mode, 'method': cfg.matching.method,
        'seq_len': core.window_length, 'top_k': cfg.matching.top_k,
        'keyframes': len(result.keyframes),
        'latency_ms': {'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99)),
                       'max': float(lat.max())},
        'peak_rss_mib': round(_peak_rss_mib(), 1),
        'diagnostics': core.diagnostics.as_dict(),
        'result_bag': str(result.result_bag) if result.result_bag else None,
        'config': to_dict(cfg), 'version': __version__,
        'notes': list(result.notes),
    }
    if refmap is not None:
        report['map_manifest_sha256'] = manifest_digest(refmap)
    keyframe_ns = np.asarray(result.keyframes, np.int64)
    q_poses, q_valid = interpolate_poses(pose_ns, pose_rows, keyframe_ns, MAX_POSE_GAP_NS) \
        if len(pose_ns) else (None, np.zeros(len(keyframe_ns), bool))
    result.keyframe_poses = q_poses
    gt = cfg.evaluation
    if cfg.node.mode == 'localization' and refmap is not None:
        k = evaluation_k(cfg)
        ref_idx = np.full((len(result.steps), k), -1, np.int64)
        dist = np.full((len(result.steps), k), np.inf)
        valid = np.zeros(len(result.steps), bool)
        for row, step in enumerate(result.steps):
            if step.hypothesis is None or not step.hypothesis.candidates:
                continue
            valid[row] = True
            cands = step.hypothesis.candidates[:k]
            ref_idx[row, :len(cands)] = [c.ref_index for c in cands]
            dist[row, :len(cands)] = [c.distance for c in cands]
        result.matches = Matches(ref_idx, dist, valid)
        positives = _positives(result, refmap, cfg, q_poses, q_valid)
        if positives is not None:
            result.positives = positives
            result.metrics = compute_metrics(result.matches, positives, gt.recall_at)
            report.update(report_dict(result.metrics, ground_truth=ground_truth_dict(cfg)))
            if gt.gt == 'radius':
                report['num_queries_without_pose'] = int((~q_valid).sum())
        if core.hypothesis_verification is not None:
            report['hypothesis_verification'] = _hypothesis_report(result, positives)
        else:
            report['note'] = ('radius ground truth needs poses in the run and the map: '
                              'accuracy not scored (give a pose topic, or same-index ground '
                              'truth for runs aligned by frame index)')
    elif cfg.node.mode == 'slam':
        appearance = core.verification.appearance_closures if core.verification else None
        report.update(_closure_report(result, cfg, keyframe_ns, q_poses, q_valid, appearance))
    result.report = report


def _closure_report(result: ReplayResult, cfg: Config, keyframe_ns: np.ndarray,
                    q_poses: np.ndarray | None, q_valid: np.ndarray,
                    appearance: list[LoopClosure] | None = None) -> dict[str, Any]:
    """Loop closures before and after geometric verification, scored against the poses.

    A closure is correct when its two keyframes lie within ``evaluation.radius_m``; recall is
    over the *revisit* keyframes: those with a keyframe within the radius that is older than
    ``node.loop_closure.exclude_recent_s`` (or of an earlier session), i.e. findable ones.
    ``appearance``: the closures as the appearance decision made them, before verification.
    """
    verified = [c for s in result.steps for c in s.loop_closures]
    rejected = [r.closure for s in result.steps for r in s.rejected]
    out: dict[str, Any] = {'loop_closures': len(verified)}
    if appearance is not None:
        out['loop_closure_candidates'] = len(appearance)
        out['loop_closures_rejected'] = len(rejected)
        reasons: dict[str, int] = {}
        for step in result.steps:
            for r in step.rejected:
                reasons[r.reasons[0]] = reasons.get(r.reasons[0], 0) + 1
        out['rejection_reasons_of_best_candidate'] = reasons
    if q_poses is None or not q_valid.any():
        return out
    radius = cfg.evaluation.radius_m
    xyz = np.where(q_valid[:, None], q_poses[:, :3], np.nan)
    revisit = np.zeros(len(keyframe_ns), bool)
    gap_ns = int(cfg.node.loop_closure.exclude_recent_s * 1e9)
    for q in range(len(keyframe_ns)):
        older = np.flatnonzero((keyframe_ns < keyframe_ns[q] - gap_ns) |
                               (np.arange(len(keyframe_ns)) < q) &
                               (keyframe_ns > keyframe_ns[q]))  # an earlier session
        if len(older) and q_valid[q]:
            d = np.linalg.norm(xyz[older] - xyz[q], axis=1)
            revisit[q] = bool(np.any(d <= radius))

    def score(closures: list[LoopClosure]) -> dict[str, Any]:
        pairs = [(c.query_index, c.match_index) for c in closures
                 if c.query_index < len(xyz) and c.match_index < len(xyz) and
                 q_valid[c.query_index] and q_valid[c.match_index]]
        correct = [bool(np.linalg.norm(xyz[a] - xyz[b]) <= radius) for a, b in pairs]
        found = {a for (a, _), ok in zip(pairs, correct) if ok and revisit[a]}
        return {'closures_scored': len(pairs), 'false': int(len(correct) - sum(correct)),
                'precision': float(np.mean(correct)) if correct else None,
                'recall_of_revisits': len(found) / int(revisit.sum()) if revisit.any()
                else None}

    out['ground_truth'] = {'type': 'radius', 'radius_m': radius}
    out['revisit_keyframes'] = int(revisit.sum())
    after = score(verified)
    out['loop_closure_precision'] = after['precision']
    out['loop_closures_scored'] = after['closures_scored']
    out['loop_closures_false'] = after['false']
    out['loop_closure_recall'] = after['recall_of_revisits']
    if appearance is not None:
        out['before_verification'] = score(appearance)
        out['verification_pr_curve'] = _inlier_curve(verified, result, xyz, radius, revisit)
        out['after_verification'] = after
    return out


def _inlier_curve(verified: list[LoopClosure], result: ReplayResult, xyz: np.ndarray,
                  radius: float, revisit: np.ndarray) -> dict[str, Any]:
    """Precision and recall of the verified and rejected closures over their RANSAC inliers
    (a threshold on inliers instead of ``node.verification.min_inliers``)."""
    from vpr_seq_ros.verification.evaluate import ClosureGroundTruth, pr_curve

    rows = [(c.query_index, c.match_index, c.verification.num_inliers) for c in verified]
    rows += [(r.closure.query_index, r.closure.match_index, max(r.inliers, default=0))
             for s in result.steps for r in s.rejected]
    if not rows or not np.all(np.isfinite(xyz)):
        return {'note': 'needs closures and a pose for every keyframe'} if rows else {}
    q, m, inliers = (np.array(col) for col in zip(*rows))
    curve = pr_curve(q, m, inliers, ClosureGroundTruth.from_positions(xyz, radius), revisit)
    return {'inliers': curve.thresholds.tolist(), 'precision': curve.precision.tolist(),
            'recall': curve.recall.tolist(),
            'max_recall_at_precision_1': curve.max_recall_at_precision(1.0),
            'min_inliers_at_precision_1': curve.threshold_at_precision(1.0)}


def _positives(result: ReplayResult, refmap: ReferenceMap, cfg: Config,
               q_poses: np.ndarray | None, q_valid: np.ndarray) -> list[np.ndarray] | None:
    """Positive reference anchors of every keyframe, or None without the ground truth."""
    n = len(result.steps)
    ref_valid = np.ones(len(refmap), bool)
    if cfg.evaluation.gt == 'same-index':
        index_run = EncodedRun(np.zeros((n, 1), np.float32), np.zeros(n, np.int64), None,
                               np.zeros(n, np.int64))
        return ground_truth(refmap.run, index_run, cfg.evaluation, ref_valid,
                            query_frame_index=np.asarray(result.frame_indices, np.int64))
    if q_poses is None or refmap.run.poses is None:
        return None
    rows = np.flatnonzero(q_valid)
    query_run = EncodedRun(np.zeros((len(rows), 1), np.float32),
                           np.asarray(result.keyframes, np.int64)[rows], q_poses[rows],
                           np.zeros(len(rows), np.int64))
    positives = [np.zeros(0, np.int64)] * n
    for row, pos in zip(rows, ground_truth(refmap.run, query_run, cfg.evaluation)):
        positives[row] = pos
    return positives


def _peak_rss_mib() -> float:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == 'darwin' else peak / 1024


def closures_of(result: ReplayResult) -> list[LoopClosure]:
    """All loop closures of a replay, in order."""
    return [c for s in result.steps for c in s.loop_closures]


def write_report(result: ReplayResult, out_dir: Path) -> Path:
    """``report.json`` in ``out_dir``."""
    import json

    return atomic_write(out_dir / 'report.json', lambda handle: handle.write(
        (json.dumps(result.report, indent=2, sort_keys=True) + '\n').encode()))


__all__ = ['ReplayResult', 'replay', 'resolve_topic', 'write_report', 'closures_of']
