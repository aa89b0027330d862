"""What the node publishes, built from the node core's results with standard message types.

The same functions build the live node's messages (through rclpy's message classes) and the
replay's result bag (through rosbags' classes), so both hold exactly the same content. A
*factory* ``make(typename, **fields)`` creates a message of a ROS type name such as
``'geometry_msgs/msg/PoseWithCovarianceStamped'``; fields left out take their defaults.

Topics (relative names; ``~/`` is the node's private namespace):

* ``~/matched_pose`` (geometry_msgs/PoseWithCovarianceStamped): the best match's reference
  pose; stamp = newest query frame; the covariance grows as the confidence falls.
* ``~/place_matches`` (std_msgs/Float64MultiArray): rows = top-K candidates best first,
  columns :data:`PLACE_COLUMNS`.
* ``~/match_relative_pose`` (geometry_msgs/PoseWithCovarianceStamped): localization with
  verification: the relative pose of a verified hypothesis (query camera in the matched map
  frame's camera), with a covariance from the inliers; stamp = the query keyframe's.
* ``~/loop_closure`` (std_msgs/Float64MultiArray): ``[t_query_sec, t_match_sec]``, the
  LIO-SAM family convention.
* ``~/loop_closures`` (std_msgs/Float64MultiArray): rows = candidates (verified and rejected),
  columns :data:`LOOP_COLUMNS`.
* ``~/loop_closure_pose`` (geometry_msgs/PoseWithCovarianceStamped): the relative pose of the
  latest verified loop closure, with a covariance from its inliers.
* ``~/markers`` (visualization_msgs/MarkerArray): matched place (sphere + text), loop-closure
  lines.
* ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): input rate, timings, buffer fill, drops,
  map size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from vpr_seq_ros.runtime.outputs import Diagnostics, LoopClosure, PlaceHypothesis, StepResult
from vpr_seq_ros.types import Pose

Factory = Callable[..., Any]
"""``make(typename, **fields) -> message``."""

PLACE_COLUMNS = ('ref_index', 'ref_stamp_sec', 'distance', 'score', 'x', 'y', 'z', 'yaw',
                 'confidence', 'status', 'inliers')
"""``status``: geometric verification of the candidate against the map's stored features
(localization): 1 accepted, 0 rejected, -1 not verified (verification off, refused by its
budget, dropped from its queue, no features near that map frame, not the best candidate, or
its verdict came after the hypothesis was published: see ``~/match_relative_pose``).
``inliers``: its RANSAC inliers (NaN when not verified)."""
LOOP_COLUMNS = ('query_index', 'query_stamp_sec', 'match_index', 'match_stamp_sec', 'distance',
                'score', 'status', 'inliers', 'qx', 'qy', 'qz', 'qw', 'tx', 'ty', 'tz',
                'metric')
"""``status``: 1 verified (published on ``~/loop_closure``), 0 rejected by verification,
-1 not verified (verification off). ``q*``/``t*``: the relative pose of the verified closure
(query camera in the matched keyframe's camera, OpenCV optical axes: ``X_match = R X_query +
t``); ``t`` is a unit direction unless ``metric`` is 1 (depth gave metres). NaN when unknown."""

TOPIC_MATCHED_POSE = '~/matched_pose'
TOPIC_PLACE_MATCHES = '~/place_matches'
TOPIC_LOOP_CLOSURE = '~/loop_closure'
TOPIC_LOOP_CLOSURES = '~/loop_closures'
TOPIC_LOOP_CLOSURE_POSE = '~/loop_closure_pose'
TOPIC_MARKERS = '~/markers'
TOPIC_MATCH_RELATIVE_POSE = '~/match_relative_pose'
TOPIC_DIAGNOSTICS = '/diagnostics'

OUTPUT_TYPES = {
    TOPIC_MATCHED_POSE: 'geometry_msgs/msg/PoseWithCovarianceStamped',
    TOPIC_PLACE_MATCHES: 'std_msgs/msg/Float64MultiArray',
    TOPIC_LOOP_CLOSURE: 'std_msgs/msg/Float64MultiArray',
    TOPIC_LOOP_CLOSURES: 'std_msgs/msg/Float64MultiArray',
    TOPIC_LOOP_CLOSURE_POSE: 'geometry_msgs/msg/PoseWithCovarianceStamped',
    TOPIC_MARKERS: 'visualization_msgs/msg/MarkerArray',
    TOPIC_MATCH_RELATIVE_POSE: 'geometry_msgs/msg/PoseWithCovarianceStamped',
    TOPIC_DIAGNOSTICS: 'diagnostic_msgs/msg/DiagnosticArray',
}

POSITION_SIGMA_M = 2.0
"""Position standard deviation of a confident match (about the keyframe spacing)."""
YAW_SIGMA_RAD = 0.35
CONFIDENT_SCORE = 2.0
"""Distinctiveness (standard deviations) at and above which a match counts as confident."""
UNKNOWN_VARIANCE = 1e6
"""Variance of roll and pitch, which place recognition does not observe."""


# ------------------------------------------------------------------------------ factories


def rosbags_factory(typestore: Any) -> Factory:
    """A factory over a rosbags typestore (messages for bags and CDR bytes)."""

    def default(node: tuple) -> Any:
        kind, detail = node
        name = getattr(kind, 'name', str(kind))
        if name == 'BASE':
            base = detail[0]
            if base == 'string':
                return ''
            if base == 'bool':
                return False
            return 0.0 if base.startswith('float') else 0
        if name == 'NAME':
            return make(detail)
        (inner, size) = detail
        inner_name = getattr(inner[0], 'name', str(inner[0]))
        if inner_name == 'BASE' and inner[1][0] not in ('string',):
            dtype = {'bool': np.bool_, 'byte': np.uint8, 'char': np.uint8}.get(
                inner[1][0], np.dtype(inner[1][0]) if inner[1][0] != 'octet' else np.uint8)
            return np.zeros(size if name == 'ARRAY' else 0, dtype=dtype)
        return [default(inner) for _ in range(size)] if name == 'ARRAY' else []

    def make(typename: str, **fields: Any) -> Any:
        cls = typestore.types[typename]
        _, defs = typestore.fielddefs[typename]
        values = {}
        for fname, node in defs:
            values[fname] = fields.pop(fname) if fname in fields else default(node)
        if fields:
            raise TypeError(f'{typename} has no field(s) {", ".join(fields)}')
        return cls(**values)

    return make


# ------------------------------------------------------------------------------ pieces


def stamp_msg(make: Factory, stamp_ns: int) -> Any:
    """builtin_interfaces/Time of integer nanoseconds."""
    return make('builtin_interfaces/msg/Time', sec=int(stamp_ns // 1_000_000_000),
                nanosec=int(stamp_ns % 1_000_000_000))


def header_msg(make: Factory, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header."""
    return make('std_msgs/msg/Header', stamp=stamp_msg(make, stamp_ns), frame_id=frame_id)


def pose_msg(make: Factory, pose: Pose) -> Any:
    """geometry_msgs/Pose of a planar pose (yaw about z)."""
    half = 0.5 * (pose.yaw if math.isfinite(pose.yaw) else 0.0)
    return make('geometry_msgs/msg/Pose',
                position=make('geometry_msgs/msg/Point', x=float(pose.x), y=float(pose.y),
                              z=float(pose.z)),
                orientation=make('geometry_msgs/msg/Quaternion', x=0.0, y=0.0,
                                 z=math.sin(half), w=math.cos(half)))


def labelled_array(make: Factory, rows: np.ndarray, row_label: str,
                   columns: Sequence[str]) -> Any:
    """std_msgs/Float64MultiArray of a row-major matrix; dim[1].label lists the columns."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, len(columns))
    dims = [make('std_msgs/msg/MultiArrayDimension', label=row_label, size=int(rows.shape[0]),
                 stride=int(rows.size)),
            make('std_msgs/msg/MultiArrayDimension', label=','.join(columns),
                 size=len(columns), stride=len(columns))]
    layout = make('std_msgs/msg/MultiArrayLayout', dim=dims, data_offset=0)
    return make('std_msgs/msg/Float64MultiArray', layout=layout, data=rows.ravel())


def confidence_sigma(score: float, confidence: float = math.nan) -> float:
    """Scale of the pose standard deviations: 1 for a confident match, up to 20 otherwise.

    With a calibrated ``confidence`` (probability the match is right) the scale is
    ``1 / confidence`` (bounded to 20); otherwise the score stands in for it."""
    if math.isfinite(confidence):
        return 1.0 / max(min(confidence, 1.0), 0.05)
    return 1.0 / max(min(score / CONFIDENT_SCORE, 1.0), 0.05)


# ------------------------------------------------------------------------------ messages


def matched_pose(make: Factory, hypothesis: PlaceHypothesis, frame_id: str,
                 max_distance: float = 0.0) -> Any | None:
    """The best match's reference pose, or None (no pose, or farther than ``max_distance``)."""
    best = hypothesis.best
    if best is None or best.pose is None:
        return None
    if max_distance > 0 and best.distance > max_distance:
        return None
    scale = confidence_sigma(best.score, best.confidence)
    check = hypothesis.verification
    if check is not None and check.ref_index == best.ref_index and check.verified and \
            not check.accepted:
        scale = confidence_sigma(0.0)  # geometry contradicts the match: least confident
    var_xyz = (POSITION_SIGMA_M * scale) ** 2
    var_yaw = (YAW_SIGMA_RAD * scale) ** 2
    covariance = np.zeros(36)
    covariance[[0, 7, 14]] = var_xyz
    covariance[[21, 28]] = UNKNOWN_VARIANCE
    covariance[35] = var_yaw if math.isfinite(best.pose.yaw) else UNKNOWN_VARIANCE
    return make('geometry_msgs/msg/PoseWithCovarianceStamped',
                header=header_msg(make, hypothesis.query_stamp_ns, frame_id),
                pose=make('geometry_msgs/msg/PoseWithCovariance',
                          pose=pose_msg(make, best.pose), covariance=covariance))


def place_matches(make: Factory, hypothesis: PlaceHypothesis) -> Any:
    """Top-K candidates as a labelled Float64MultiArray (NaN pose where the map has none)."""
    rows = []
    check = hypothesis.verification
    for c in hypothesis.candidates:
        pose = (c.pose.x, c.pose.y, c.pose.z, c.pose.yaw) if c.pose else (math.nan,) * 4
        verdict = (-1.0, math.nan)
        if check is not None and check.ref_index == c.ref_index and check.verified:
            verdict = (float(check.accepted), float(check.verification.num_inliers))
        rows.append((c.ref_index, c.ref_stamp_ns * 1e-9, c.distance, c.score, *pose,
                     c.confidence, *verdict))
    return labelled_array(make, np.array(rows).reshape(-1, len(PLACE_COLUMNS)), 'candidates',
                          PLACE_COLUMNS)


def loop_closure_pair(make: Factory, closure: LoopClosure) -> Any:
    """``[t_query_sec, t_match_sec]``: what LIO-SAM / LVI-SAM / liorf subscribe to."""
    return make('std_msgs/msg/Float64MultiArray',
                layout=make('std_msgs/msg/MultiArrayLayout', dim=[], data_offset=0),
                data=np.array([closure.query_stamp_ns * 1e-9, closure.match_stamp_ns * 1e-9]))


def _geometry(closure: LoopClosure) -> tuple[float, ...]:
    """inliers, quaternion, translation and metric flag of a verified closure (NaN if none)."""
    v = closure.verification
    if v is None or v.rotation is None or v.translation is None:
        return (float(v.num_inliers) if v is not None else math.nan,) + (math.nan,) * 8
    from vpr_seq_ros.verification.geometry import rotation_to_quaternion

    return (float(v.num_inliers), *rotation_to_quaternion(v.rotation),
            *(float(x) for x in np.asarray(v.translation).ravel()[:3]), float(v.metric))


def loop_closures(make: Factory, closures: Sequence[LoopClosure],
                  rejected: Sequence[Any] = (), verifying: bool = False) -> Any:
    """The closures of a step, and those verification rejected, as a labelled
    Float64MultiArray (:data:`LOOP_COLUMNS`)."""
    status = 1.0 if verifying else -1.0
    rows = [(c.query_index, c.query_stamp_ns * 1e-9, c.match_index, c.match_stamp_ns * 1e-9,
             c.distance, c.score, status, *_geometry(c)) for c in closures]
    for r in rejected:
        c = r.closure
        inliers = float(max(r.inliers)) if r.inliers else math.nan
        rows.append((c.query_index, c.query_stamp_ns * 1e-9, c.match_index,
                     c.match_stamp_ns * 1e-9, c.distance, c.score, 0.0, inliers,
                     *(math.nan,) * 8))
    return labelled_array(make, np.array(rows).reshape(-1, len(LOOP_COLUMNS)), 'closures',
                          LOOP_COLUMNS)


def loop_closure_pose(make: Factory, closure: LoopClosure) -> Any | None:
    """The relative pose of a verified closure with its covariance (from the inliers), or
    None without geometry. Stamp: the query keyframe; frame id: ``loop_closure_match_camera``,
    the matched keyframe's camera (optical axes)."""
    return _relative_pose(make, closure.verification, closure.query_stamp_ns,
                          'loop_closure_match_camera')


def match_relative_pose(make: Factory, check: Any) -> Any | None:
    """The relative pose of a verified localization hypothesis (a
    :class:`vpr_seq_ros.runtime.verify.HypothesisCheck`) with its covariance, or None when it
    was rejected or has no geometry (no intrinsics). Stamp: the query keyframe; frame id:
    ``matched_map_camera``, the camera of the matched map frame (optical axes)."""
    if not check.accepted:
        return None
    return _relative_pose(make, check.verification, check.query_stamp_ns, 'matched_map_camera')


def _relative_pose(make: Factory, v: Any, stamp_ns: int, frame_id: str) -> Any | None:
    if v is None or v.rotation is None or v.translation is None or v.covariance is None:
        return None
    from vpr_seq_ros.verification.geometry import rotation_to_quaternion

    qx, qy, qz, qw = rotation_to_quaternion(v.rotation)
    tx, ty, tz = (float(x) for x in np.asarray(v.translation).ravel()[:3])
    pose = make('geometry_msgs/msg/Pose',
                position=make('geometry_msgs/msg/Point', x=tx, y=ty, z=tz),
                orientation=make('geometry_msgs/msg/Quaternion', x=qx, y=qy, z=qz, w=qw))
    return make('geometry_msgs/msg/PoseWithCovarianceStamped',
                header=header_msg(make, stamp_ns, frame_id),
                pose=make('geometry_msgs/msg/PoseWithCovariance', pose=pose,
                          covariance=np.asarray(v.covariance, np.float64).reshape(36)))


def markers(make: Factory, step: StepResult, frame_id: str, query_pose: Pose | None) -> Any:
    """A sphere and a text at the matched place; a line to each loop-closure match."""
    items = []
    header = header_msg(make, step.stamp_ns, frame_id)
    best = step.hypothesis.best if step.hypothesis else None
    zero = make('builtin_interfaces/msg/Duration', sec=0, nanosec=0)
    if best is not None and best.pose is not None:
        scale = make('geometry_msgs/msg/Vector3', x=1.0, y=1.0, z=1.0)
        color = make('std_msgs/msg/ColorRGBA', r=0.1, g=0.8, b=0.2, a=0.8)
        items.append(make('visualization_msgs/msg/Marker', header=header, ns='match', id=0,
                          type=2, action=0, pose=pose_msg(make, best.pose), scale=scale,
                          color=color, lifetime=zero))
        text = make('visualization_msgs/msg/Marker', header=header, ns='match_text', id=0,
                    type=9, action=0,
                    pose=pose_msg(make, Pose(best.pose.x, best.pose.y, best.pose.z + 1.5)),
                    scale=make('geometry_msgs/msg/Vector3', x=0.0, y=0.0, z=0.8), color=color,
                    lifetime=zero, text=f'#{best.ref_index} d={best.distance:.3g} '
                                        f's={best.score:.2f}')
        items.append(text)
    if step.loop_closures and query_pose is not None and step.hypothesis is not None:
        by_index = {c.ref_index: c for c in step.hypothesis.candidates}
        points = []
        for closure in step.loop_closures:
            match = by_index.get(closure.match_index)
            if match is None or match.pose is None:
                continue
            for p in (query_pose, match.pose):
                points.append(make('geometry_msgs/msg/Point', x=p.x, y=p.y, z=p.z))
        if points:
            items.append(make('visualization_msgs/msg/Marker', header=header, ns='loop_closures',
                              id=step.hypothesis.query_index, type=5, action=0,
                              pose=pose_msg(make, Pose(0.0, 0.0)),
                              scale=make('geometry_msgs/msg/Vector3', x=0.2, y=0.0, z=0.0),
                              color=make('std_msgs/msg/ColorRGBA', r=1.0, g=0.3, b=0.1, a=1.0),
                              lifetime=zero, points=points))
    return make('visualization_msgs/msg/MarkerArray', markers=items)


def diagnostics(make: Factory, diag: Diagnostics, stamp_ns: int, name: str,
                input_rate_hz: float | None = None) -> Any:
    """A DiagnosticArray with one status: OK, or WARN when frames were dropped."""
    values = diag.as_dict()
    if input_rate_hz is not None:
        values['input_rate_hz'] = input_rate_hz
    dropped = diag.frames_dropped_queue + diag.frames_dropped_malformed
    level = 1 if dropped else 0
    message = f'{diag.keyframes} keyframes, map {diag.map_size}' + \
        (f', {dropped} frames dropped' if dropped else '')
    status = make('diagnostic_msgs/msg/DiagnosticStatus', level=level, name=name,
                  message=message, hardware_id='',
                  values=[make('diagnostic_msgs/msg/KeyValue', key=k,
                               value=f'{v:.6g}' if isinstance(v, float) else str(v))
                          for k, v in values.items()])
    return make('diagnostic_msgs/msg/DiagnosticArray', header=header_msg(make, stamp_ns, ''),
                status=[status])


@dataclass(frozen=True)
class Outgoing:
    """One message to publish: relative topic, type name, message."""

    topic: str
    typename: str
    msg: Any


def step_messages(make: Factory, step: StepResult, frame_id: str, max_distance: float = 0.0,
                  query_pose: Pose | None = None, publish_markers: bool = True,
                  verifying: bool = False) -> list[Outgoing]:
    """Everything one node-core step publishes (diagnostics are published on a timer)."""
    out: list[Outgoing] = []
    if step.hypothesis is not None:
        pose = matched_pose(make, step.hypothesis, frame_id, max_distance)
        if pose is not None:
            out.append(Outgoing(TOPIC_MATCHED_POSE, OUTPUT_TYPES[TOPIC_MATCHED_POSE], pose))
        out.append(Outgoing(TOPIC_PLACE_MATCHES, OUTPUT_TYPES[TOPIC_PLACE_MATCHES],
                            place_matches(make, step.hypothesis)))
    for closure in step.loop_closures:
        out.append(Outgoing(TOPIC_LOOP_CLOSURE, OUTPUT_TYPES[TOPIC_LOOP_CLOSURE],
                            loop_closure_pair(make, closure)))
    if step.loop_closures or step.rejected:
        out.append(Outgoing(TOPIC_LOOP_CLOSURES, OUTPUT_TYPES[TOPIC_LOOP_CLOSURES],
                            loop_closures(make, step.loop_closures, step.rejected, verifying)))
    if step.loop_closures:
        relative = loop_closure_pose(make, step.loop_closures[-1])
        if relative is not None:
            out.append(Outgoing(TOPIC_LOOP_CLOSURE_POSE, OUTPUT_TYPES[TOPIC_LOOP_CLOSURE_POSE],
                                relative))
    for check in step.hypothesis_checks:
        relative = match_relative_pose(make, check)
        if relative is not None:
            out.append(Outgoing(TOPIC_MATCH_RELATIVE_POSE,
                                OUTPUT_TYPES[TOPIC_MATCH_RELATIVE_POSE], relative))
    if publish_markers and step.hypothesis is not None:
        out.append(Outgoing(TOPIC_MARKERS, OUTPUT_TYPES[TOPIC_MARKERS],
                            markers(make, step, frame_id, query_pose)))
    return out
