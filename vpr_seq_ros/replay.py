"""Replay a bag through the node's code path, in bag time, and evaluate it.

Messages go through exactly what the live node does: image messages are decoded by the same
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
from typing import Any, Callable

import numpy as np

from vpr_seq_ros.config import Config
from vpr_seq_ros.encoders import FrameEncoder, build_encoder
from vpr_seq_ros.errors import DecodeError, SourceError, VprSeqError
from vpr_seq_ros.evaluation import Metrics, compute_metrics, ground_truth, report_dict
from vpr_seq_ros.messages.images import decode_any
from vpr_seq_ros.messages.outputs import (OUTPUT_TYPES, TOPIC_DIAGNOSTICS, diagnostics,
                                          rosbags_factory, step_messages)
from vpr_seq_ros.refmap import ReferenceMap
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.outputs import LoopClosure, StepResult
from vpr_seq_ros.sources.bag import (IMAGE_TYPES, NAVSATFIX, POSE_TYPES, check_topic,
                                     geodetic_to_enu, interpolate_poses, open_bag, pose_of,
                                     stamp_ns_of)
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


def replay(bag: str | Path, cfg: Config, refmap: ReferenceMap | None = None,
           out_dir: str | Path | None = None, encoder: FrameEncoder | None = None,
           progress: Callable[[int], None] | None = None,
           on_start: Callable[[int], None] | None = None) -> ReplayResult:
    """Feed a bag through the node core in bag time; write the result bag and a report.

    Args:
        bag: ROS 1 or ROS 2 bag.
        cfg: configuration (``source.image_topic``/``pose_topic``, ``node`` section, ...).
        refmap: the map (``localization`` mode); None in ``slam`` mode.
        out_dir: where ``result_bag/`` goes (None: no result bag).
        encoder: a ready encoder (default: built from ``cfg.encoder``).
        progress: called with 1 per image message.
        on_start: called with the number of image messages before the replay starts.

    Raises:
        SourceError: unreadable bag, missing or wrong topics.
        MapError: the map does not fit the encoder.
    """
    if not cfg.source.image_topic:
        raise SourceError('replay needs the image topic (--image-topic)')
    encoder = encoder or build_encoder(cfg.encoder)
    core = NodeCore(cfg, encoder, refmap)
    reader = open_bag(Path(bag))
    result = ReplayResult()
    origin: list[float] = list(refmap.manifest.get('geo_origin') or []) if refmap else []
    pose_ns: list[int] = []
    pose_rows: list[tuple[float, float, float, float]] = []
    out_bag = _ResultBag(Path(out_dir) / 'result_bag') if out_dir is not None else None
    try:
        topics = reader.topics
        image_type = check_topic(topics, bag, cfg.source.image_topic, IMAGE_TYPES, 'image')
        wanted = [c for c in reader.connections if c.topic == cfg.source.image_topic]
        pose_type = None
        if cfg.source.pose_topic:
            pose_type = check_topic(topics, bag, cfg.source.pose_topic, POSE_TYPES, 'pose')
            wanted += [c for c in reader.connections if c.topic == cfg.source.pose_topic]
        if on_start:
            on_start(topics[cfg.source.image_topic].msgcount)
        next_diag_ns: int | None = None
        index = 0
        query_pose: Pose | None = None
        for conn, receive_ns, raw in reader.messages(connections=wanted):
            if conn.topic != cfg.source.image_topic:
                msg = reader.deserialize(raw, pose_type)
                pose = _pose_sample(msg, pose_type, origin)
                if pose is not None:
                    stamp = stamp_ns_of(msg, receive_ns)
                    core.on_odometry(stamp, pose)
                    query_pose = pose
                    if not pose_ns or stamp > pose_ns[-1]:
                        pose_ns.append(stamp)
                        pose_rows.append((pose.x, pose.y, pose.z, pose.yaw))
                continue
            if progress:
                progress(1)
            try:
                msg = reader.deserialize(raw, image_type)
                image = decode_any(msg)
                stamp = stamp_ns_of(msg, receive_ns)
            except DecodeError as err:
                core.diagnostics.frames_dropped_malformed += 1
                log.warning('dropped a malformed image at %d ns: %s', receive_ns, err)
                continue
            except Exception as err:  # noqa: BLE001 - undeserialisable bytes
                core.diagnostics.frames_dropped_malformed += 1
                log.warning('dropped an undeserialisable image at %d ns: %s', receive_ns, err)
                continue
            step = core.on_frame(Frame(index=index, stamp_ns=stamp, image=image))
            index += 1
            if step.keyframe:
                result.keyframes.append(stamp)
                result.steps.append(step)
                result.latencies_ms.append(step.encode_ms + step.match_ms)
            if out_bag is not None:
                for out in step_messages(out_bag.make, step, cfg.node.map_frame,
                                         cfg.node.max_distance, query_pose,
                                         cfg.node.publish_markers):
                    out_bag.write(out.topic, out.typename, out.msg, stamp)
                if next_diag_ns is None or stamp >= next_diag_ns:
                    out_bag.write(TOPIC_DIAGNOSTICS, OUTPUT_TYPES[TOPIC_DIAGNOSTICS],
                                  diagnostics(out_bag.make, core.diagnostics, stamp,
                                              f'vpr_seq_ros: {cfg.node.mode}'), stamp)
                    next_diag_ns = stamp + 1_000_000_000
    finally:
        reader.close()
        if out_bag is not None:
            out_bag.close()
            result.result_bag = out_bag.path
    _score(result, core, cfg, refmap, np.asarray(pose_ns, np.int64),
           np.asarray(pose_rows, np.float64).reshape(-1, 4))
    return result


def _score(result: ReplayResult, core: NodeCore, cfg: Config, refmap: ReferenceMap | None,
           pose_ns: np.ndarray, pose_rows: np.ndarray) -> None:
    """Fill the report: latency, counters, and accuracy where ground truth exists."""
    lat = np.asarray(result.latencies_ms) if result.latencies_ms else np.zeros(1)
    report: dict[str, Any] = {
        'mode': cfg.node.mode, 'method': cfg.matching.method,
        'seq_len': core.window_length,
        'keyframes': len(result.keyframes),
        'latency_ms': {'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99)),
                       'max': float(lat.max())},
        'diagnostics': core.diagnostics.as_dict(),
        'result_bag': str(result.result_bag) if result.result_bag else None,
    }
    keyframe_ns = np.asarray(result.keyframes, np.int64)
    q_poses, q_valid = interpolate_poses(pose_ns, pose_rows, keyframe_ns, MAX_POSE_GAP_NS) \
        if len(pose_ns) else (None, np.zeros(len(keyframe_ns), bool))
    radius = cfg.evaluation.radius_m
    if cfg.node.mode == 'localization' and refmap is not None:
        k = cfg.matching.top_k
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
        if q_poses is not None and refmap.run.poses is not None and len(result.steps):
            rows = np.flatnonzero(q_valid)
            query_run = EncodedRun(np.zeros((len(rows), 1), np.float32), keyframe_ns[rows],
                                   q_poses[rows], np.zeros(len(rows), np.int64))
            gt_cfg = dc_replace(cfg.evaluation, gt='radius')
            positives = [np.zeros(0, np.int64)] * len(keyframe_ns)
            for row, pos in zip(rows, ground_truth(refmap.run, query_run, gt_cfg)):
                positives[row] = pos
            result.positives = positives
            result.metrics = compute_metrics(result.matches, positives,
                                             cfg.evaluation.recall_at)
            report.update(report_dict(result.metrics, ground_truth={'type': 'radius',
                                                                    'radius_m': radius}))
            report['num_queries_without_pose'] = int((~q_valid).sum())
        else:
            report['note'] = 'no poses in the bag or the map: accuracy not scored'
    elif cfg.node.mode == 'slam':
        closures = [c for s in result.steps for c in s.loop_closures]
        report['loop_closures'] = len(closures)
        if q_poses is not None and closures:
            by_stamp = {int(s): i for i, s in enumerate(keyframe_ns)}
            correct = []
            for c in closures:
                a, b = by_stamp.get(c.query_stamp_ns), by_stamp.get(c.match_stamp_ns)
                if a is None or b is None or not (q_valid[a] and q_valid[b]):
                    continue
                correct.append(math.dist(q_poses[a, :3], q_poses[b, :3]) <= radius)
            report['loop_closure_precision'] = float(np.mean(correct)) if correct else None
            report['loop_closures_scored'] = len(correct)
            report['ground_truth'] = {'type': 'radius', 'radius_m': radius}
    result.report = report


def closures_of(result: ReplayResult) -> list[LoopClosure]:
    """All loop closures of a replay, in order."""
    return [c for s in result.steps for c in s.loop_closures]


def write_report(result: ReplayResult, out_dir: Path) -> Path:
    """``report.json`` in ``out_dir``."""
    import json

    return atomic_write(out_dir / 'report.json', lambda handle: handle.write(
        (json.dumps(result.report, indent=2, sort_keys=True) + '\n').encode()))


__all__ = ['ReplayResult', 'replay', 'resolve_topic', 'write_report', 'closures_of']
