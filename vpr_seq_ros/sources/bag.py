"""Bag source: frames from an image topic of a ROS 1 or ROS 2 bag, read with rosbags (no ROS).

Reads ROS 1 ``.bag`` files, ROS 2 bag folders (``metadata.yaml`` plus ``.db3`` or ``.mcap``)
and bare ``.db3`` / ``.mcap`` files. Images come from one ``sensor_msgs/Image`` or
``sensor_msgs/CompressedImage`` topic; poses, optionally, from one ``nav_msgs/Odometry``,
``geometry_msgs/PoseStamped``, ``geometry_msgs/PoseWithCovarianceStamped`` or
``sensor_msgs/NavSatFix`` topic.

What a frame gets, and which frames are kept:

* **Stamp**: the image's header stamp (``sec * 1e9 + nanosec``), or the bag's receive time when
  the header stamp is zero (:func:`vpr_seq_ros.conversions.stamp_to_ns`, as the live node does).
  Pose samples are stamped the same way.
* **Order and segments**: frames keep the bag's order, except that small backward steps of the
  stamp (jitter) are sorted out. A new segment starts where the stamp jumps forward by more than
  ``segment_gap_factor`` (5) times the median frame interval (a recording gap), where it jumps
  backwards by more than that (a clock reset, e.g. a restarted simulation; stamps then start
  over in the new segment), and where frames without a pose interrupt a run. Frames with the
  same stamp as an earlier one are dropped as duplicates.
* **Poses** are interpolated to the frame stamps: linearly for the position, along the shorter
  arc for the yaw. There is no extrapolation: frames before the first or after the last pose
  sample, or between two samples more than ``max_pose_gap_s`` apart, are dropped (counted by
  reason in :meth:`BagSource.dropped` and logged), so every yielded frame has a pose.
* **Yaw** comes from the orientation quaternion (rotation about z). A NavSatFix has no
  orientation: its yaw is the heading of travel in the local east-north-up frame (0 = east,
  counter-clockwise positive), from the fixes before and after each fix, held across stops;
  NaN if the run never moves.
* **NavSatFix** positions are converted from WGS-84 latitude/longitude/altitude to local
  east-north-up metres (x east, y north, z up) about ``geo_origin``, or about the first valid fix
  when none is given; the origin used is exposed as :attr:`BagSource.geo_origin` so that a map
  can store it. Convert a query run about the **map's** origin (pass it), never about its own
  first fix. Fixes with ``status < 0`` (no fix) or a non-finite latitude/longitude are skipped;
  an unknown (NaN) altitude is taken as the origin's altitude.
* **Keyframes**: with ``keyframe_distance_m > 0`` a frame is kept only once the accumulated 3-D
  path length along the frames' poses since the last kept frame reaches that distance, as the
  live node gates by odometry (:class:`vpr_seq_ros.conversions.PathLength`); the first frame of
  every segment is kept.
* **Malformed images** (undeserialisable messages, bad step/size/encoding, empty or
  compressedDepth payloads) are skipped, counted and logged once as a summary.

Every frame left out is counted with its reason (:meth:`BagSource.dropped`, one line:
:meth:`BagSource.dropped_line`).

The bag is read twice: a first pass when the source is opened checks every image message's
fields (no pixel decoding) and reads the poses, so that ``len()`` is known before iteration;
each iteration then decodes every kept image once. A compressed payload can fail to decode
although it passed the first pass; such a frame is dropped when met (counted and logged after
the iteration), later frames keep consecutive indices, and ``len()`` is corrected.

Reading and decoding are separate steps (:class:`~vpr_seq_ros.sources.base.DecodingSource`):
the messages are read and deserialised where the bag was opened, and only the image fields
(plain bytes and numbers, :class:`ImagePayload`) go to :func:`decode_payload`, which may run
in a worker process; no rosbags object crosses a process boundary.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from vpr_seq_ros.conversions import PathLength, stamp_to_ns, yaw_from_quaternion
from vpr_seq_ros.errors import DecodeError, SourceError
from vpr_seq_ros.messages.images import (check_compressed, check_image,
                                         decode_compressed_fields, decode_image_fields)
from vpr_seq_ros.sources.base import (DecodeFunction, DecodeJob, DecodeOutcome, DecodingSource,
                                      DropReason, format_dropped)
from vpr_seq_ros.types import Frame, Pose

log = logging.getLogger(__name__)

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
"""Message types an image topic may carry."""

POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped', 'sensor_msgs/msg/NavSatFix')
"""Message types a pose topic may carry."""

NAVSATFIX = 'sensor_msgs/msg/NavSatFix'

WGS84_A = 6378137.0
"""WGS-84 semi-major axis (m)."""
WGS84_F = 1.0 / 298.257223563
"""WGS-84 flattening."""
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)
"""WGS-84 first eccentricity squared."""

MIN_HEADING_STEP_M = 0.2
"""Shortest displacement between neighbouring fixes from which a NavSatFix heading is taken."""


# --- geometry ----------------------------------------------------------------------------------

def geodetic_to_ecef(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray) -> np.ndarray:
    """WGS-84 geodetic coordinates to Earth-centred, Earth-fixed metres.

    Args:
        lat_deg: ``(N,)`` latitude in degrees.
        lon_deg: ``(N,)`` longitude in degrees.
        alt_m: ``(N,)`` height above the ellipsoid in metres.

    Returns:
        ``(N, 3)`` float64 ECEF ``[X, Y, Z]`` in metres.
    """
    lat = np.radians(np.asarray(lat_deg, np.float64))
    lon = np.radians(np.asarray(lon_deg, np.float64))
    alt = np.asarray(alt_m, np.float64)
    sin_lat = np.sin(lat)
    n = WGS84_A / np.sqrt(1.0 - WGS84_E2 * sin_lat ** 2)  # prime vertical radius of curvature
    return np.stack([(n + alt) * np.cos(lat) * np.cos(lon),
                     (n + alt) * np.cos(lat) * np.sin(lon),
                     (n * (1.0 - WGS84_E2) + alt) * sin_lat], axis=-1)


def geodetic_to_enu(lat_deg: np.ndarray, lon_deg: np.ndarray, alt_m: np.ndarray,
                    origin: tuple[float, float, float]) -> np.ndarray:
    """WGS-84 geodetic coordinates to local east-north-up metres about an origin.

    Args:
        lat_deg: ``(N,)`` latitude in degrees.
        lon_deg: ``(N,)`` longitude in degrees.
        alt_m: ``(N,)`` height above the ellipsoid in metres.
        origin: ``(lat_deg, lon_deg, alt_m)`` of the local frame's origin.

    Returns:
        ``(N, 3)`` float64 ``[east, north, up]`` in metres.
    """
    lat0, lon0, alt0 = origin
    d = geodetic_to_ecef(lat_deg, lon_deg, alt_m) - geodetic_to_ecef(
        np.array([lat0]), np.array([lon0]), np.array([alt0]))
    sl, cl = math.sin(math.radians(lat0)), math.cos(math.radians(lat0))
    so, co = math.sin(math.radians(lon0)), math.cos(math.radians(lon0))
    rot = np.array([[-so, co, 0.0],
                    [-sl * co, -sl * so, cl],
                    [cl * co, cl * so, sl]])
    return d @ rot.T


def wrap_angle(angle: np.ndarray) -> np.ndarray:
    """Wrap angles (radians) into [-pi, pi)."""
    return (np.asarray(angle) + np.pi) % (2.0 * np.pi) - np.pi


def heading_from_track(xy: np.ndarray, min_step_m: float = MIN_HEADING_STEP_M) -> np.ndarray:
    """Heading of travel along a track of positions.

    The heading at sample i is the direction from sample i-1 to i+1 (one-sided at the ends).
    Where that displacement is shorter than ``min_step_m`` the last heading is held (and the
    first one is used before it), so stops keep their heading.

    Args:
        xy: ``(N, 2)`` east/north positions in metres, in time order.
        min_step_m: shortest displacement that defines a heading.

    Returns:
        ``(N,)`` float64 yaw in radians (0 = east, counter-clockwise), all NaN if the track
        never moves ``min_step_m``.
    """
    n = xy.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    after = xy[np.minimum(np.arange(n) + 1, n - 1)]
    before = xy[np.maximum(np.arange(n) - 1, 0)]
    d = after - before
    yaw = np.arctan2(d[:, 1], d[:, 0])
    yaw[np.hypot(d[:, 0], d[:, 1]) < min_step_m] = np.nan
    valid = np.flatnonzero(~np.isnan(yaw))
    if valid.size == 0:
        return yaw
    last = np.maximum.accumulate(np.where(~np.isnan(yaw), np.arange(n), -1))
    return np.where(last >= 0, yaw[np.maximum(last, 0)], yaw[valid[0]])


def interpolate_poses(sample_ns: np.ndarray, samples: np.ndarray, query_ns: np.ndarray,
                      max_gap_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate poses to query stamps, without extrapolating.

    Args:
        sample_ns: ``(S,)`` int64 strictly increasing sample stamps.
        samples: ``(S, 4)`` float64 ``[x, y, z, yaw]`` samples.
        query_ns: ``(M,)`` int64 stamps to interpolate at.
        max_gap_ns: largest gap between the two samples around a query.

    Returns:
        ``(M, 4)`` interpolated poses (linear in position, shorter arc in yaw) and the ``(M,)``
        bool mask of queries inside the samples' span and not in a longer gap; invalid rows are
        NaN.
    """
    m = query_ns.shape[0]
    out = np.full((m, 4), np.nan)
    if sample_ns.size == 0 or m == 0:
        return out, np.zeros(m, bool)
    lo = np.searchsorted(sample_ns, query_ns, side='right') - 1
    hi = np.minimum(lo + 1, sample_ns.size - 1)
    exact = (lo >= 0) & (sample_ns[np.maximum(lo, 0)] == query_ns)
    inside = (lo >= 0) & (lo < sample_ns.size - 1)
    gap = sample_ns[hi] - sample_ns[np.maximum(lo, 0)]
    valid = exact | (inside & (gap <= max_gap_ns))
    lo_v, hi_v = lo[valid], hi[valid]
    span = (sample_ns[hi_v] - sample_ns[lo_v]).astype(np.float64)
    alpha = np.where(span > 0, (query_ns[valid] - sample_ns[lo_v]) / np.where(span > 0, span, 1),
                     0.0)
    a, b = samples[lo_v], samples[hi_v]
    pos = a[:, :3] + alpha[:, None] * (b[:, :3] - a[:, :3])
    yaw = wrap_angle(a[:, 3] + alpha * wrap_angle(b[:, 3] - a[:, 3]))
    out[valid] = np.column_stack([pos, yaw])
    return out, valid


# --- messages ----------------------------------------------------------------------------------

def stamp_ns_of(msg: Any, receive_ns: int) -> int:
    """The header stamp of a message in integer ns, or ``receive_ns`` when it is zero."""
    return stamp_to_ns(msg.header.stamp, receive_ns)


def pose_of(msg: Any, msgtype: str) -> tuple[float, float, float, float]:
    """``(x, y, z, yaw)`` of an Odometry / PoseStamped / PoseWithCovarianceStamped message."""
    pose = msg.pose if msgtype == 'geometry_msgs/msg/PoseStamped' else msg.pose.pose
    p, q = pose.position, pose.orientation
    return float(p.x), float(p.y), float(p.z), yaw_from_quaternion(q.x, q.y, q.z, q.w)


def open_bag(path: Path) -> Any:
    """An opened rosbags ``AnyReader`` for a ROS 1 ``.bag``, ROS 2 folder, ``.db3`` or ``.mcap``.

    Raises:
        SourceError: missing path, not a bag, or unreadable.
    """
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    path = Path(path)
    if not path.exists():
        raise SourceError(f'bag {path} does not exist')
    is_ros1 = path.suffix == '.bag'
    if not is_ros1 and path.is_dir() and not (path / 'metadata.yaml').is_file():
        raise SourceError(f'{path} is a folder without metadata.yaml; give a ROS 2 bag '
                          'folder, or its .db3 / .mcap file')
    if path.is_file() and path.suffix not in ('.bag', '.db3', '.mcap'):
        raise SourceError(f'{path} is not a bag; give a ROS 1 .bag, a ROS 2 bag folder, or '
                          'a .db3 / .mcap file')
    store = get_typestore(Stores.ROS1_NOETIC if is_ros1 else Stores.ROS2_HUMBLE)
    try:
        reader = AnyReader([path], default_typestore=store)
    except Exception as err:  # rosbags raises several types on unreadable files
        raise SourceError(f'cannot read bag {path}: {err}') from err
    try:
        reader.open()
    except Exception as err:
        raise SourceError(f'cannot open bag {path}: {err}. Is it a complete ROS 1 '
                          'or ROS 2 bag?') from err
    return reader


def topics_hint(topics: dict[str, Any]) -> str:
    """The image and pose topics of a bag, for error messages."""
    def listing(types: Sequence[str]) -> str:
        found = [f'{name} [{info.msgtype}]' for name, info in sorted(topics.items())
                 if info.msgtype in types]
        return ', '.join(found) or 'none'
    return (f'image topics in the bag: {listing(IMAGE_TYPES)}; pose topics: '
            f'{listing(POSE_TYPES)}')


def check_topic(topics: dict[str, Any], bag: Any, topic: str, allowed: Sequence[str],
                role: str) -> str:
    """The message type of ``topic``; SourceError listing the bag's topics if it does not fit."""
    info = topics.get(topic)
    if info is None:
        raise SourceError(f'bag {bag} has no topic {topic!r}; {topics_hint(topics)}')
    if info.msgtype not in allowed:
        raise SourceError(
            f'{role} topic {topic!r} of bag {bag} carries '
            f'{info.msgtype or "mixed types"}, expected one of {", ".join(allowed)}; '
            f'{topics_hint(topics)}')
    return str(info.msgtype)


@dataclass(frozen=True)
class ImagePayload:
    """The fields of one image message that decoding needs, as plain data (picklable).

    Attributes:
        compressed: a ``sensor_msgs/CompressedImage`` (``fields`` = ``(format, data)``), else
            a ``sensor_msgs/Image`` (``fields`` = ``(height, width, encoding, step, data,
            is_bigendian)``).
        fields: the arguments of :func:`decode_compressed_fields` or
            :func:`decode_image_fields`.
        error: why the message could not be deserialised (then ``fields`` is empty).
    """

    compressed: bool
    fields: tuple[Any, ...] = ()
    error: str | None = None


def image_payload(reader: Any, raw: bytes, msgtype: str) -> ImagePayload:
    """Deserialise an image message of a bag into an :class:`ImagePayload` (never raises)."""
    compressed = msgtype.endswith('CompressedImage')
    try:
        msg = reader.deserialize(raw, msgtype)
        if compressed:
            return ImagePayload(True, (msg.format, msg.data))
        return ImagePayload(False, (msg.height, msg.width, msg.encoding, msg.step, msg.data,
                                    getattr(msg, 'is_bigendian', 0)))
    except Exception as err:  # a parser error on bad bytes: the frame is dropped when decoded
        return ImagePayload(compressed, error=str(err))


def decode_payload(payload: ImagePayload) -> np.ndarray:
    """Decode an :class:`ImagePayload` into ``(H, W, 3)`` uint8 RGB.

    Raises:
        DecodeError: the message could not be deserialised, or its image is malformed.
    """
    if payload.error is not None:
        raise DecodeError(payload.error)
    if payload.compressed:
        return decode_compressed_fields(*payload.fields)
    return decode_image_fields(*payload.fields)


@dataclass(frozen=True)
class _Planned:
    """A frame the iteration will yield."""

    ordinal: int
    stamp_ns: int
    pose: Pose | None
    segment: int


def _check_origin(origin: Sequence[float] | None) -> tuple[float, float, float] | None:
    if origin is None:
        return None
    try:
        lat, lon, alt = (float(v) for v in origin)
    except (TypeError, ValueError) as err:
        raise SourceError(f'geo_origin must be (lat_deg, lon_deg, alt_m); got {origin!r}') \
            from err
    if not (abs(lat) <= 90 and abs(lon) <= 180 and math.isfinite(alt)):
        raise SourceError(f'geo_origin {origin!r} is not a valid latitude/longitude/altitude')
    return lat, lon, alt


class BagSource(DecodingSource):
    """Frames of one image topic of a bag, with optional interpolated poses (see the module).

    Attributes:
        path: the bag path as given.
        image_topic: topic the frames come from.
        image_type: its message type (``sensor_msgs/msg/Image`` or ``.../CompressedImage``).
        pose_topic: topic the poses come from, or None.
        pose_type: its message type, or None.
        geo_origin: ``(lat_deg, lon_deg, alt_m)`` the NavSatFix fixes were converted about, or
            None when the poses are not from a NavSatFix topic.
        num_messages: image messages on the topic.
        num_segments: segments among the kept frames.

    The frames left out are counted by reason in :meth:`dropped`; ``num_dropped_malformed``,
    ``num_dropped_duplicate``, ``num_dropped_no_pose`` (all three pose reasons) and
    ``num_skipped_keyframe`` read the same counts.
    """

    input_kind = 'image'

    def __init__(self, path: str | Path, image_topic: str | None, pose_topic: str | None = None,
                 keyframe_distance_m: float = 0.0,
                 geo_origin: Sequence[float] | None = None, *,
                 max_pose_gap_s: float = 5.0, segment_gap_factor: float = 5.0) -> None:
        """Open a bag and plan the frames (reads the bag once, decodes no image).

        Args:
            path: ROS 1 ``.bag``, ROS 2 bag folder, or ``.db3`` / ``.mcap`` file.
            image_topic: topic of ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage``
                (required; None or '' raises an error that lists the bag's image topics).
            pose_topic: topic of Odometry, PoseStamped, PoseWithCovarianceStamped or NavSatFix
                messages, or None for frames without poses.
            keyframe_distance_m: keep a frame only once the robot moved this far (metres, in
                x/y) from the last kept frame; 0 keeps every frame. Needs ``pose_topic``.
            geo_origin: ``(lat_deg, lon_deg, alt_m)`` about which NavSatFix fixes are converted
                to east-north-up metres; None uses the first valid fix. Only for NavSatFix.
            max_pose_gap_s: frames between two pose samples further apart than this (seconds)
                get no pose and are dropped.
            segment_gap_factor: a stamp gap (or backward jump) longer than this many median
                frame intervals starts a new segment.

        Raises:
            SourceError: unreadable bag, missing or wrong topic (the message lists the bag's
                image and pose topics), no usable frames, bad arguments.
        """
        self.bag_path = Path(path)
        self.path = str(path)
        self.image_topic = image_topic or ''
        self.pose_topic = pose_topic or None
        self.keyframe_distance_m = float(keyframe_distance_m)
        self.max_pose_gap_ns = int(max_pose_gap_s * 1e9)
        self.segment_gap_factor = float(segment_gap_factor)
        self.geo_origin = _check_origin(geo_origin)
        if not self.keyframe_distance_m >= 0:
            raise SourceError(f'keyframe_distance_m must be >= 0; got {keyframe_distance_m}')
        if self.keyframe_distance_m > 0 and not pose_topic:
            raise SourceError('keyframe gating (keyframe_distance_m > 0) needs poses; give a '
                              'pose topic or set the distance to 0')
        self.image_type = ''
        self.pose_type: str | None = None
        self.num_messages = 0
        self._dropped: Counter[str] = Counter()
        self.num_segments = 0
        self._plan = self._scan()

    # --- reading ---

    def _check_topic(self, topics: dict[str, Any], topic: str, allowed: Sequence[str],
                     role: str) -> str:
        return check_topic(topics, self.path, topic, allowed, role)

    def _scan(self) -> list[_Planned]:
        """First pass: image stamps and field checks, pose samples; then plan the frames."""
        reader = open_bag(self.bag_path)
        try:
            topics = reader.topics
            if not self.image_topic:
                raise SourceError(f'bag {self.path}: give the image topic to read; '
                                  f'{topics_hint(topics)}')
            self.image_type = self._check_topic(topics, self.image_topic, IMAGE_TYPES, 'image')
            if self.pose_topic:
                self.pose_type = self._check_topic(topics, self.pose_topic, POSE_TYPES, 'pose')
            if self.geo_origin is not None and self.pose_type != NAVSATFIX:
                raise SourceError(
                    f'geo_origin is given but the pose topic {self.pose_topic!r} carries '
                    f'{self.pose_type or "nothing"}, not NavSatFix; odometry poses are in the '
                    "run's own frame and cannot be converted about a GPS origin")
            check = check_compressed if self.image_type.endswith('CompressedImage') \
                else check_image
            records, reasons, poses = self._first_pass(reader, check)
        finally:
            reader.close()
        self.num_messages = len(records) + sum(reasons.values())
        self._dropped[DropReason.MALFORMED.value] = sum(reasons.values())
        if reasons:
            summary = '; '.join(f'{n} x {why}' for why, n in reasons.most_common(3))
            log.warning('%s: skipped %d of %d image messages on %s as malformed (%s)',
                        self.path, self.num_dropped_malformed, self.num_messages,
                        self.image_topic, summary)
        if not records:
            raise SourceError(f'bag {self.path}: topic {self.image_topic} has no readable image '
                              f'messages ({self.num_dropped_malformed} malformed)')
        plan = self._plan_frames(records, poses)
        if not plan:
            raise SourceError(
                f'bag {self.path}: no frame of {self.image_topic} is left: '
                f'{self.dropped_line()}. Check that {self.pose_topic} covers the time of the '
                'images')
        log.info('%s: %d frames from %d image messages on %s in %d segment(s); left out: %s',
                 self.path, len(plan), self.num_messages, self.image_topic, self.num_segments,
                 self.dropped_line())
        return plan

    def _first_pass(self, reader: Any, check: Callable[[Any], None]
                    ) -> tuple[list[tuple[int, int]], Counter[str], tuple[np.ndarray, ...]]:
        image_conns = [c for c in reader.connections if c.topic == self.image_topic]
        pose_conns = [c for c in reader.connections if c.topic == self.pose_topic]
        records: list[tuple[int, int]] = []  # (ordinal, stamp_ns), bag order
        reasons: Counter[str] = Counter()
        pose_rows: list[tuple[int, float, float, float, float]] = []
        bad_poses = 0
        ordinal = 0
        try:
            for conn, receive_ns, raw in reader.messages(connections=image_conns + pose_conns):
                if conn.topic == self.image_topic:
                    try:
                        msg = reader.deserialize(raw, conn.msgtype)
                        check(msg)
                        records.append((ordinal, stamp_ns_of(msg, receive_ns)))
                    except DecodeError as err:
                        reasons[str(err)] += 1
                    except Exception as err:  # a corrupt message, whatever the parser raises
                        reasons[f'undeserialisable message ({type(err).__name__})'] += 1
                    ordinal += 1
                    continue
                try:
                    msg = reader.deserialize(raw, conn.msgtype)
                    stamp = stamp_ns_of(msg, receive_ns)
                    if conn.msgtype == NAVSATFIX:
                        row = (float(msg.latitude), float(msg.longitude), float(msg.altitude),
                               float(msg.status.status))
                    else:
                        row = pose_of(msg, conn.msgtype)
                except Exception:  # a corrupt pose message is skipped like a bad fix
                    bad_poses += 1
                    continue
                pose_rows.append((stamp, *row))
        except Exception as err:
            raise SourceError(f'cannot read bag {self.path}: {err}') from err
        if bad_poses:
            log.warning('%s: skipped %d undeserialisable messages on %s', self.path, bad_poses,
                        self.pose_topic)
        return records, reasons, self._pose_samples(pose_rows)

    def _pose_samples(self, rows: list[tuple[int, float, float, float, float]]
                      ) -> tuple[np.ndarray, ...]:
        """``(stamps (S,) int64, poses (S, 4))`` sorted, unique stamps; empty without a topic."""
        if not self.pose_topic:
            return ()
        stamps = np.array([r[0] for r in rows], np.int64)
        values = np.array([r[1:] for r in rows], np.float64).reshape(-1, 4)
        if self.pose_type == NAVSATFIX:
            ok = (values[:, 3] >= 0) & np.isfinite(values[:, 0]) & np.isfinite(values[:, 1]) \
                & (np.abs(values[:, 0]) <= 90) & (np.abs(values[:, 1]) <= 180)
            if (~ok).any():
                log.info('%s: skipped %d NavSatFix messages without a fix', self.path,
                         int((~ok).sum()))
            stamps, values = stamps[ok], values[ok]
        else:
            ok = np.isfinite(values).all(axis=1)
            if (~ok).any():
                log.warning('%s: skipped %d pose messages with non-finite values', self.path,
                            int((~ok).sum()))
            stamps, values = stamps[ok], values[ok]
        order = np.argsort(stamps, kind='stable')
        stamps, values = stamps[order], values[order]
        stamps, first = np.unique(stamps, return_index=True)
        values = values[first]
        if stamps.size == 0:
            raise SourceError(f'bag {self.path}: pose topic {self.pose_topic} has no usable '
                              'messages' + (' (no NavSatFix with a fix)'
                                            if self.pose_type == NAVSATFIX else ''))
        if self.pose_type == NAVSATFIX:
            values = self._navsat_to_enu(values)
        return stamps, values

    def _navsat_to_enu(self, fixes: np.ndarray) -> np.ndarray:
        """``(S, 4)`` ``[lat, lon, alt, status]`` -> ``(S, 4)`` ``[east, north, up, yaw]``."""
        if self.geo_origin is None:
            lat, lon, alt = (float(v) for v in fixes[0, :3])
            self.geo_origin = (lat, lon, alt if math.isfinite(alt) else 0.0)
        alt = np.where(np.isfinite(fixes[:, 2]), fixes[:, 2], self.geo_origin[2])
        enu = geodetic_to_enu(fixes[:, 0], fixes[:, 1], alt, self.geo_origin)
        return np.column_stack([enu, heading_from_track(enu[:, :2])])

    # --- planning ---

    def _plan_frames(self, records: list[tuple[int, int]],
                     poses: tuple[np.ndarray, ...]) -> list[_Planned]:
        ordinals = np.array([r[0] for r in records], np.int64)
        stamps = np.array([r[1] for r in records], np.int64)
        steps = np.diff(stamps)
        positive = steps[steps > 0]
        threshold = (self.segment_gap_factor * float(np.median(positive)) if positive.size
                     else math.inf)
        # Epochs: a clock reset (a backward jump beyond the threshold) starts over.
        epoch = np.concatenate([[0], np.cumsum(steps < -threshold)])
        order = np.lexsort((stamps, epoch))  # stable: by epoch, then stamp
        ordinals, stamps, epoch = ordinals[order], stamps[order], epoch[order]
        keep = np.ones(stamps.size, bool)
        keep[1:] = (stamps[1:] != stamps[:-1]) | (epoch[1:] != epoch[:-1])
        self._dropped[DropReason.DUPLICATE_STAMP.value] = int((~keep).sum())
        if self.num_dropped_duplicate:
            log.warning('%s: dropped %d image messages that repeat an earlier stamp', self.path,
                        self.num_dropped_duplicate)
        ordinals, stamps, epoch = ordinals[keep], stamps[keep], epoch[keep]
        boundary = np.zeros(stamps.size, bool)
        boundary[1:] = (epoch[1:] != epoch[:-1]) | (np.diff(stamps) > threshold)

        pose_rows: np.ndarray | None = None
        if poses:
            if epoch[-1] > 0:
                log.warning('%s: the image stamps jump backwards (a clock reset?); poses are '
                            'interpolated by stamp across all segments', self.path)
            pose_rows, valid = interpolate_poses(poses[0], poses[1], stamps,
                                                 self.max_pose_gap_ns)
            before = ~valid & (stamps < poses[0][0])
            after = ~valid & (stamps > poses[0][-1])
            self._dropped[DropReason.NO_POSE_YET.value] = int(before.sum())
            self._dropped[DropReason.AFTER_LAST_POSE.value] = int(after.sum())
            self._dropped[DropReason.POSE_GAP.value] = int((~valid & ~before & ~after).sum())
            if self.num_dropped_no_pose:
                log.info('%s: dropped %d frames outside the time span of the poses on %s (or '
                         'in gaps longer than %g s)', self.path, self.num_dropped_no_pose,
                         self.pose_topic, self.max_pose_gap_ns / 1e9)
            # A run of frames without pose interrupts the segment it falls into.
            interrupted = np.zeros(stamps.size, bool)
            interrupted[1:] = ~valid[:-1]
            boundary = (boundary | interrupted)[valid]
            ordinals, stamps, pose_rows = ordinals[valid], stamps[valid], pose_rows[valid]
            if stamps.size == 0:
                return []
        if boundary.size:
            boundary[0] = False
        segments = np.cumsum(boundary)

        kept = np.ones(stamps.size, bool)
        if self.keyframe_distance_m > 0 and pose_rows is not None:
            path = PathLength()  # the same gating as the node: 3-D path since the keyframe
            for i in range(stamps.size):
                if i and segments[i] != segments[i - 1]:
                    path.restart()
                path.update(*pose_rows[i, :3])
                if i == 0 or segments[i] != segments[i - 1] or \
                        path.since_mark() >= self.keyframe_distance_m:
                    path.mark()
                else:
                    kept[i] = False
            self._dropped[DropReason.KEYFRAME_GATING.value] = int((~kept).sum())
        segments = segments[kept]
        segments = np.concatenate([[0], np.cumsum(np.diff(segments) != 0)]) if segments.size \
            else segments
        self.num_segments = int(segments[-1]) + 1 if segments.size else 0
        plan = []
        for j, i in enumerate(np.flatnonzero(kept)):
            pose = Pose(*(float(v) for v in pose_rows[i])) if pose_rows is not None else None
            plan.append(_Planned(int(ordinals[i]), int(stamps[i]), pose, int(segments[j])))
        return plan

    # --- the FrameSource contract ---

    @property
    def num_dropped_malformed(self) -> int:
        """Image messages that could not be read or decoded."""
        return self._dropped[DropReason.MALFORMED.value]

    @property
    def num_dropped_duplicate(self) -> int:
        """Frames dropped for repeating an earlier stamp."""
        return self._dropped[DropReason.DUPLICATE_STAMP.value]

    @property
    def num_dropped_no_pose(self) -> int:
        """Frames dropped for lying outside the poses' time span or in a gap."""
        return sum(self._dropped[r.value] for r in (DropReason.NO_POSE_YET,
                                                    DropReason.AFTER_LAST_POSE,
                                                    DropReason.POSE_GAP))

    @property
    def num_skipped_keyframe(self) -> int:
        """Frames skipped by keyframe gating."""
        return self._dropped[DropReason.KEYFRAME_GATING.value]

    def dropped_line(self) -> str:
        """The frames left out, in one line that names the pose topic and the settings."""
        return format_dropped(self.dropped(), self.pose_topic, self.max_pose_gap_ns / 1e9,
                              self.keyframe_distance_m)

    def __len__(self) -> int:
        return len(self._plan)

    @property
    def has_poses(self) -> bool:
        return self.pose_topic is not None

    @property
    def stamps_ns(self) -> np.ndarray:
        """``(N,)`` int64 stamps of the frames the iteration will yield."""
        return np.array([p.stamp_ns for p in self._plan], np.int64)

    @property
    def decode_function(self) -> DecodeFunction:
        return decode_payload

    def decode_jobs(self) -> Iterator[DecodeJob]:
        """The kept image messages in frame order, deserialised (payload:
        :class:`ImagePayload`); ``frame.index`` is the frame's place in the plan."""
        slot_of = {p.ordinal: slot for slot, p in enumerate(self._plan)}
        pending: dict[int, tuple[str, bytes]] = {}  # read ahead of their turn (stamp jitter)
        next_slot = 0
        reader = open_bag(self.bag_path)
        try:
            # The same connections as the first pass, so the messages come in the same order
            # (storage order among equal receive times depends on the query).
            conns = [c for c in reader.connections
                     if c.topic in (self.image_topic, self.pose_topic)]
            messages = reader.messages(connections=conns)
            ordinal = -1
            while next_slot < len(self._plan):
                try:
                    conn, _, raw = next(messages)
                except StopIteration:
                    raise SourceError(f'bag {self.path} changed while it was read: image '
                                      f'message {self._plan[next_slot].ordinal} is gone') \
                        from None
                except Exception as err:
                    raise SourceError(f'cannot read bag {self.path}: {err}') from err
                if conn.topic != self.image_topic:
                    continue
                ordinal += 1
                if ordinal not in slot_of:
                    continue
                pending[ordinal] = (conn.msgtype, raw)
                while next_slot < len(self._plan) and self._plan[next_slot].ordinal in pending:
                    planned = self._plan[next_slot]
                    msgtype, data = pending.pop(planned.ordinal)
                    frame = Frame(index=next_slot, stamp_ns=planned.stamp_ns,
                                  pose=planned.pose, segment=planned.segment,
                                  name=f'{self.image_topic}#{planned.ordinal}')
                    next_slot += 1
                    yield DecodeJob(frame, image_payload(reader, data, msgtype))
        finally:
            reader.close()

    def assemble(self, outcomes: Iterable[DecodeOutcome]) -> Iterator[Frame]:
        """The decoded frames, numbered consecutively; a frame that fails to decode is
        dropped, and once all are seen the drops are counted and ``len()`` corrected."""
        failures: list[tuple[int, str]] = []
        index = 0
        for outcome in outcomes:
            if outcome.error is not None:
                failures.append((self._plan[outcome.frame.index].ordinal, str(outcome.error)))
                continue
            yield replace(outcome.frame, index=index, image=outcome.image)
            index += 1
        if failures:
            self._drop_late(failures)

    def _drop_late(self, failures: list[tuple[int, str]]) -> None:
        """Forget frames that passed the first pass but failed to decode; correct ``len()``."""
        bad = {ordinal for ordinal, _ in failures}
        self._dropped[DropReason.MALFORMED.value] += len(bad)
        plan = [p for p in self._plan if p.ordinal not in bad]
        segments = [p.segment for p in plan]
        renumbered = np.concatenate([[0], np.cumsum(np.diff(segments) != 0)]) if plan else []
        self._plan = [replace(p, segment=int(s)) for p, s in zip(plan, renumbered)]
        self.num_segments = int(renumbered[-1]) + 1 if plan else 0
        log.warning('%s: dropped %d image messages on %s that could not be decoded (first: %s)',
                    self.path, len(bad), self.image_topic, failures[0][1])
