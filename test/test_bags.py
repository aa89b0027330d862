"""Bag source and bag writer: tiny ROS 1 / ROS 2 bags written into tmp_path with rosbags."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vpr_seq_ros.bagwrite import SYNTHETIC_START_NS, images_to_bag
from vpr_seq_ros.errors import SourceError, VprSeqError
from vpr_seq_ros.sources.bag import (WGS84_A, WGS84_E2, BagSource, geodetic_to_enu,
                                     interpolate_poses)
from vpr_seq_ros.sources.images import ImageFolderSource

from conftest import write_run

TS2 = get_typestore(Stores.ROS2_HUMBLE)
TS1 = get_typestore(Stores.ROS1_NOETIC)
T0 = 1_700_000_000 * 10**9
SEC = 10**9
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED = 'sensor_msgs/msg/CompressedImage'
ODOM = 'nav_msgs/msg/Odometry'
POSE = 'geometry_msgs/msg/PoseStamped'
POSE_COV = 'geometry_msgs/msg/PoseWithCovarianceStamped'
FIX = 'sensor_msgs/msg/NavSatFix'


# --- message builders (work with either typestore) ---------------------------------------------

def header(ts: Any, stamp_ns: int, frame_id: str = 'camera') -> Any:
    t = ts.types
    time = t['builtin_interfaces/msg/Time'](sec=stamp_ns // SEC, nanosec=stamp_ns % SEC)
    if 'seq' in t['std_msgs/msg/Header'].__dataclass_fields__:
        return t['std_msgs/msg/Header'](seq=0, stamp=time, frame_id=frame_id)
    return t['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)


def frame_rgb(i: int, h: int = 6, w: int = 8) -> np.ndarray:
    """A small image that encodes its number."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = (10 * i) % 256
    img[:, :, 1] = np.arange(w)[None, :] * 20
    img[:, :, 2] = np.arange(h)[:, None] * 30
    return img


def image_msg(ts: Any, stamp_ns: int, rgb: np.ndarray, **override: Any) -> Any:
    h, w, _ = rgb.shape
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    fields = dict(header=header(ts, stamp_ns), height=h, width=w, encoding='bgr8',
                  is_bigendian=0, step=w * 3, data=bgr.reshape(-1))
    fields.update(override)
    return ts.types[IMAGE](**fields)


def compressed_msg(ts: Any, stamp_ns: int, payload: bytes) -> Any:
    return ts.types[COMPRESSED](header=header(ts, stamp_ns),
                                format='bgr8; png compressed bgr8',
                                data=np.frombuffer(payload, np.uint8))


def pose_parts(ts: Any, x: float, y: float, z: float, yaw: float) -> Any:
    t = ts.types
    return t['geometry_msgs/msg/Pose'](
        position=t['geometry_msgs/msg/Point'](x=x, y=y, z=z),
        orientation=t['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=math.sin(yaw / 2),
                                                      w=math.cos(yaw / 2)))


def pose_msg(ts: Any, msgtype: str, stamp_ns: int, x: float, y: float, z: float = 0.0,
             yaw: float = 0.0) -> Any:
    t = ts.types
    pose = pose_parts(ts, x, y, z, yaw)
    cov = t['geometry_msgs/msg/PoseWithCovariance'](pose=pose, covariance=np.zeros(36))
    hdr = header(ts, stamp_ns, 'odom')
    if msgtype == POSE:
        return t[POSE](header=hdr, pose=pose)
    if msgtype == POSE_COV:
        return t[POSE_COV](header=hdr, pose=cov)
    vec = t['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)
    twist = t['geometry_msgs/msg/TwistWithCovariance'](
        twist=t['geometry_msgs/msg/Twist'](linear=vec, angular=vec), covariance=np.zeros(36))
    return t[ODOM](header=hdr, child_frame_id='base_link', pose=cov, twist=twist)


def fix_msg(ts: Any, stamp_ns: int, lat: float, lon: float, alt: float, status: int = 0) -> Any:
    t = ts.types
    return t[FIX](header=header(ts, stamp_ns, 'gps'),
                  status=t['sensor_msgs/msg/NavSatStatus'](status=status, service=1),
                  latitude=lat, longitude=lon, altitude=alt, position_covariance=np.zeros(9),
                  position_covariance_type=0)


Record = tuple[str, str, int, Any]  # topic, msgtype, receive time (ns), message


def write_bag(path: Path, kind: str, records: list[Record]) -> Path:
    """Write records as a ROS 2 ``sqlite3``/``mcap`` bag or a ROS 1 ``ros1`` bag."""
    if kind == 'ros1':
        from rosbags.rosbag1 import Writer as Writer1

        path = path.with_suffix('.bag')
        with Writer1(path) as writer:
            conns: dict[str, Any] = {}
            for topic, msgtype, t, msg in sorted(records, key=lambda r: r[2]):
                if topic not in conns:
                    conns[topic] = writer.add_connection(topic, msgtype, typestore=TS1)
                writer.write(conns[topic], t, TS1.serialize_ros1(msg, msgtype))
        return path
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = StoragePlugin.MCAP if kind == 'mcap' else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, msg in records:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=TS2)
            writer.write(conns[topic], t, TS2.serialize_cdr(msg, msgtype))
    return path


def ts_for(kind: str) -> Any:
    return TS1 if kind == 'ros1' else TS2


def image_records(ts: Any, stamps: list[int], topic: str = '/cam') -> list[Record]:
    return [(topic, IMAGE, s, image_msg(ts, s, frame_rgb(i))) for i, s in enumerate(stamps)]


KINDS = ['sqlite3', 'mcap', 'ros1']


# --- reading -----------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('pose_type', [ODOM, POSE, POSE_COV])
def test_images_and_interpolated_poses(tmp_path: Path, kind: str, pose_type: str) -> None:
    ts = ts_for(kind)
    img_stamps = [T0 - SEC // 2, T0 + SEC // 4, T0 + SEC // 2, T0 + 3 * SEC // 2, T0 + 5 * SEC]
    poses = [(T0, 0.0, 0.0, 1.0, 3.0), (T0 + SEC, 10.0, -4.0, 2.0, -3.0),
             (T0 + 2 * SEC, 10.0, 6.0, 2.0, -3.0)]
    records = image_records(ts, img_stamps)
    records += [('/pose', pose_type, s, pose_msg(ts, pose_type, s, x, y, z, yaw))
                for s, x, y, z, yaw in poses]
    bag = write_bag(tmp_path / 'bag', kind, sorted(records, key=lambda r: r[2]))
    source = BagSource(bag, '/cam', '/pose')
    assert source.has_poses and source.input_kind == 'image' and source.pose_type == pose_type
    assert len(source) == 3  # frames before the first and after the last pose are dropped
    assert source.num_dropped_no_pose == 2
    frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2]
    assert [f.stamp_ns for f in frames] == img_stamps[1:4]
    assert [f.name for f in frames] == ['/cam#1', '/cam#2', '/cam#3']
    for f, i in zip(frames, (1, 2, 3)):
        np.testing.assert_array_equal(f.image, frame_rgb(i))
    # by hand: a quarter and half of the way from pose 0 to 1, half way from 1 to 2
    expected = [(2.5, -1.0, 1.25), (5.0, -2.0, 1.5), (10.0, 1.0, 2.0)]
    for f, (x, y, z) in zip(frames, expected):
        assert (f.pose.x, f.pose.y, f.pose.z) == pytest.approx((x, y, z))
    # yaw 3.0 -> -3.0 goes the short way through pi (0.283 rad), not back through 0
    short = 2 * math.pi - 6.0
    for f, yaw in zip(frames, (3.0 + short / 4, 3.0 + short / 2, -3.0)):
        assert abs(math.remainder(f.pose.yaw - yaw, 2 * math.pi)) < 1e-9
    assert list(source)[1].stamp_ns == frames[1].stamp_ns  # re-iterable


def test_zero_header_stamp_falls_back_to_receive_time(tmp_path: Path) -> None:
    msgs = [('/cam', IMAGE, T0 + i * SEC, image_msg(TS2, 0, frame_rgb(i))) for i in range(3)]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam')
    assert [f.stamp_ns for f in source] == [T0, T0 + SEC, T0 + 2 * SEC]
    assert not source.has_poses and next(iter(source)).pose is None


def test_header_stamp_wins_over_receive_time_and_orders_jitter(tmp_path: Path) -> None:
    # received in this order, but stamped 0, 2, 1, 3 (x 0.1 s): jitter is sorted out
    stamps = [T0, T0 + 2 * SEC // 10, T0 + SEC // 10, T0 + 3 * SEC // 10]
    msgs = [('/cam', IMAGE, T0 + 5 * SEC + i, image_msg(TS2, s, frame_rgb(i)))
            for i, s in enumerate(stamps)]
    frames = list(BagSource(write_bag(tmp_path / 'bag', 'sqlite3', msgs), '/cam'))
    assert [f.stamp_ns for f in frames] == sorted(stamps)
    np.testing.assert_array_equal(frames[1].image, frame_rgb(2))
    assert {f.segment for f in frames} == {0}


def test_segments_gaps_clock_resets_and_duplicates(tmp_path: Path) -> None:
    step = SEC // 10
    stamps = [T0 + i * step for i in range(5)]               # segment 0
    stamps += [T0 + 60 * SEC + i * step for i in range(5)]   # a 60 s gap: segment 1
    stamps += [T0 + 60 * SEC + 4 * step]                     # a duplicate stamp: dropped
    stamps += [T0 + i * step for i in range(3)]              # clock reset: segment 2
    msgs = [('/cam', IMAGE, T0 + i, image_msg(TS2, s, frame_rgb(i)))
            for i, s in enumerate(stamps)]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam')
    frames = list(source)
    assert len(source) == len(frames) == 13
    assert source.num_dropped_duplicate == 1 and source.num_segments == 3
    assert [f.segment for f in frames] == [0] * 5 + [1] * 5 + [2] * 3
    assert [f.index for f in frames] == list(range(13))
    assert frames[10].stamp_ns == T0  # a new epoch starts over


def test_keyframe_gating_at_two_metres(tmp_path: Path) -> None:
    n = 21  # the robot drives 0.5 m per frame along x: 0 .. 10 m
    stamps = [T0 + i * SEC // 10 for i in range(n)]
    msgs = image_records(TS2, stamps)
    msgs += [('/odom', ODOM, s, pose_msg(TS2, ODOM, s, 0.5 * i, 0.0))
             for i, s in enumerate(stamps)]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam', '/odom',
                       keyframe_distance_m=2.0)
    assert len(source) == 6 and source.num_skipped_keyframe == n - 6
    frames = list(source)
    assert [f.pose.x for f in frames] == pytest.approx([0, 2, 4, 6, 8, 10])
    assert [f.index for f in frames] == list(range(6))
    assert [f.name for f in frames] == [f'/cam#{i}' for i in range(0, 21, 4)]
    with pytest.raises(SourceError, match='needs poses'):
        BagSource(tmp_path / 'bag', '/cam', keyframe_distance_m=2.0)


def test_keyframe_gating_follows_the_path_not_the_straight_line(tmp_path: Path) -> None:
    """Out 3 m and back, 1 m per frame: the path grows by 1 m a frame, the straight line from
    the last keyframe does not; with 2 m spacing every other frame is kept, as the node gates
    by odometry."""
    xs = [0, 1, 2, 3, 2, 1, 0]
    stamps = [T0 + i * SEC // 10 for i in range(len(xs))]
    msgs = image_records(TS2, stamps)
    msgs += [('/odom', ODOM, s, pose_msg(TS2, ODOM, s, float(x), 0.0))
             for x, s in zip(xs, stamps)]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam', '/odom',
                       keyframe_distance_m=2.0)
    assert [f.pose.x for f in source] == pytest.approx([0, 2, 2, 0])


@pytest.mark.parametrize('kind', ['mcap', 'ros1'])
def test_malformed_frame_in_the_middle_is_skipped_and_counted(tmp_path: Path, kind: str,
                                                               caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    ts = ts_for(kind)
    stamps = [T0 + i * SEC // 10 for i in range(7)]
    msgs = image_records(ts, stamps)
    msgs[2] = ('/cam', IMAGE, stamps[2], image_msg(ts, stamps[2], frame_rgb(2), step=5))
    msgs[4] = ('/cam', IMAGE, stamps[4], image_msg(ts, stamps[4], frame_rgb(4),
                                                     encoding='32FC1'))
    with caplog.at_level(logging.WARNING, logger='vpr_seq_ros.sources.bag'):
        source = BagSource(write_bag(tmp_path / 'bag', kind, msgs), '/cam')
    assert len(source) == 5 and source.num_dropped_malformed == 2
    frames = list(source)
    assert [f.index for f in frames] == list(range(5))
    assert [f.name for f in frames] == ['/cam#0', '/cam#1', '/cam#3', '/cam#5', '/cam#6']
    np.testing.assert_array_equal(frames[2].image, frame_rgb(3))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and '2 of 7' in warnings[0].getMessage()  # one summary
    assert {f.segment for f in frames} == {0}


@pytest.mark.parametrize('kind', ['mcap', 'ros1'])
def test_undecodable_compressed_payload_is_dropped_when_met(tmp_path: Path, kind: str) -> None:
    stamps = [T0 + i * SEC // 10 for i in range(4)]
    payloads = [cv2.imencode('.png', frame_rgb(i)[:, :, ::-1])[1].tobytes() for i in range(4)]
    payloads[1] = b'\x89PNG but not really'
    payloads[3] = b''  # caught before iteration
    msgs = [('/cam/compressed', COMPRESSED, s, compressed_msg(ts_for(kind), s, p))
            for s, p in zip(stamps, payloads)]
    source = BagSource(write_bag(tmp_path / 'bag', kind, msgs), '/cam/compressed')
    assert len(source) == 3 and source.num_dropped_malformed == 1
    frames = list(source)
    assert [f.index for f in frames] == [0, 1]
    np.testing.assert_array_equal(frames[1].image, frame_rgb(2))
    assert len(source) == 2 and source.num_dropped_malformed == 2  # corrected
    assert source.dropped() == {'malformed': 2}
    assert len(list(source)) == 2


# --- frames left out, by reason --------------------------------------------------------------

def test_first_image_one_ms_before_the_first_fix_is_counted(tmp_path: Path) -> None:
    """200 images at 10 Hz; the GPS starts 1 ms after the first image: exactly that frame is
    left out, and said so."""
    stamps = [T0 + i * SEC // 10 for i in range(200)]
    msgs = image_records(TS2, stamps)
    north = [LAT0 + math.degrees(i / meridian_radius(LAT0)) for i in range(200)]  # 1 m apart
    msgs += [('/gps/fix', FIX, s + 10**6, fix_msg(TS2, s + 10**6, lat, LON0, ALT0))
             for s, lat in zip(stamps, north)]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', sorted(msgs, key=lambda r: r[2])),
                       '/cam', '/gps/fix')
    assert len(source) == 199
    assert source.dropped() == {'no_pose_yet': 1}
    assert source.dropped_line() == \
        '1 frame without a pose yet (before the first pose on /gps/fix)'
    assert next(iter(source)).stamp_ns == stamps[1]


def test_every_reason_for_leaving_a_frame_out_is_counted(tmp_path: Path) -> None:
    """30 images, 0.1 s apart (k = 0..29, the robot at x = 0.5 k m), by hand:
    poses cover k = 2..10 and k = 20..25, with a 1 s gap between (more than the 0.5 s bridged):
    k = 0, 1 have no pose yet, k = 11..19 lie in the gap, k = 26..29 after the last pose.
    One more image repeats the stamp of k = 5, two more are malformed (bad step). Keyframes
    every 1 m keep k = 2, 4, 6, 8, 10 and (a new segment after the gap) 20, 22, 24: 7 skipped.
    """
    step = SEC // 10
    stamps = [T0 + k * step for k in range(30)]
    msgs = image_records(TS2, stamps)
    msgs.append(('/cam', IMAGE, stamps[5] + 1, image_msg(TS2, stamps[5], frame_rgb(5))))
    for extra in (1, 2):
        t = stamps[3] + extra * step // 3
        msgs.append(('/cam', IMAGE, t, image_msg(TS2, t, frame_rgb(3), step=5)))
    msgs += [('/odom', ODOM, stamps[k], pose_msg(TS2, ODOM, stamps[k], 0.5 * k, 0.0))
             for k in list(range(2, 11)) + list(range(20, 26))]
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', sorted(msgs, key=lambda r: r[2])),
                       '/cam', '/odom', keyframe_distance_m=1.0, max_pose_gap_s=0.5)
    assert [f.pose.x for f in source] == pytest.approx([1, 2, 3, 4, 5, 10, 11, 12])
    expected = {'no_pose_yet': 2, 'after_last_pose': 4, 'pose_gap': 9, 'duplicate_stamp': 1,
                'keyframe_gating': 7, 'malformed': 2}
    assert source.dropped() == expected
    assert list(source.dropped()) == list(expected)  # a fixed order
    assert len(source) + sum(expected.values()) == 33  # every message accounted for
    assert source.num_dropped_no_pose == 15 and source.num_skipped_keyframe == 7
    assert source.dropped_line() == (
        '2 frames without a pose yet (before the first pose on /odom), '
        '4 frames after the last pose (poses on /odom end earlier), '
        '9 frames in gaps of the poses (pose samples on /odom more than 0.5 s apart), '
        '1 duplicate stamp (the same stamp as an earlier frame), '
        '7 frames skipped by keyframe gating (one frame per 1 m), '
        '2 malformed images (cannot be read or decoded)')


def test_a_bag_without_poses_or_trouble_drops_nothing(tmp_path: Path) -> None:
    source = BagSource(write_bag(tmp_path / 'bag', 'mcap', image_records(TS2, [T0, T0 + SEC])),
                       '/cam')
    assert source.dropped() == {} and source.dropped_line() == 'none'


def test_no_frame_left_names_the_reasons(tmp_path: Path) -> None:
    stamps = [T0 + k * SEC for k in range(3)]
    msgs = image_records(TS2, stamps) + [('/odom', ODOM, T0 + 10 * SEC,
                                          pose_msg(TS2, ODOM, T0 + 10 * SEC, 0, 0))]
    with pytest.raises(SourceError, match=r'3 frames without a pose yet \(before the first '
                       'pose on /odom'):
        BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam', '/odom')


def meridian_radius(lat_deg: float) -> float:
    s = math.sin(math.radians(lat_deg))
    return WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * s * s) ** 1.5


def normal_radius(lat_deg: float) -> float:
    s = math.sin(math.radians(lat_deg))
    return WGS84_A / math.sqrt(1 - WGS84_E2 * s * s)


LAT0, LON0, ALT0 = 48.137, 11.575, 520.0
NORTH_100 = LAT0 + math.degrees(100.0 / meridian_radius(LAT0))
EAST_100 = LON0 + math.degrees(100.0 / (normal_radius(LAT0) * math.cos(math.radians(LAT0))))


def test_geodetic_to_enu_against_radii_of_curvature() -> None:
    enu = geodetic_to_enu(np.array([LAT0, NORTH_100, LAT0]), np.array([LON0, LON0, EAST_100]),
                          np.array([ALT0, ALT0, ALT0]), (LAT0, LON0, ALT0))
    np.testing.assert_allclose(enu[0], [0, 0, 0], atol=1e-6)
    assert enu[1, :2] == pytest.approx([0.0, 100.0], abs=0.1)
    assert enu[2, :2] == pytest.approx([100.0, 0.0], abs=0.1)
    # the Earth curves away: ~ d^2 / (2 R) = 0.8 mm below the tangent plane at 100 m
    assert -0.01 < enu[1, 2] < 0


def navsat_bag(tmp_path: Path, name: str, fixes: list[tuple[float, float]],
               kind: str = 'sqlite3') -> Path:
    ts = ts_for(kind)
    stamps = [T0 + i * SEC for i in range(len(fixes))]
    msgs = image_records(ts, stamps)
    msgs += [('/fix', FIX, s, fix_msg(ts, s, lat, lon, ALT0)) for s, (lat, lon) in
             zip(stamps, fixes)]
    # a fix-less message (status -1) in between is skipped
    msgs.append(('/fix', FIX, T0 + SEC // 2, fix_msg(ts, T0 + SEC // 2, 0.0, 0.0, 0.0, -1)))
    return write_bag(tmp_path / name, kind, sorted(msgs, key=lambda r: r[2]))


@pytest.mark.parametrize('kind', ['sqlite3', 'ros1'])
def test_navsatfix_to_local_enu_metres(tmp_path: Path, kind: str) -> None:
    bag = navsat_bag(tmp_path, 'gps', [(LAT0, LON0), (NORTH_100, LON0), (NORTH_100, EAST_100)],
                     kind)
    source = BagSource(bag, '/cam', '/fix')
    assert source.geo_origin == pytest.approx((LAT0, LON0, ALT0))
    frames = list(source)
    xy = [(f.pose.x, f.pose.y) for f in frames]
    assert xy[0] == pytest.approx((0, 0), abs=1e-6)
    assert xy[1] == pytest.approx((0, 100), abs=0.1)
    assert xy[2] == pytest.approx((100, 100), abs=0.1)
    # no orientation in a fix: yaw is the heading of travel (ENU: 0 east, pi/2 north)
    assert frames[0].pose.yaw == pytest.approx(math.pi / 2, abs=1e-3)
    assert frames[1].pose.yaw == pytest.approx(math.pi / 4, abs=1e-2)
    assert frames[2].pose.yaw == pytest.approx(0.0, abs=1e-3)


def test_query_run_is_converted_about_the_maps_origin(tmp_path: Path) -> None:
    # a query run that starts 100 m north of where the map started
    bag = navsat_bag(tmp_path, 'query', [(NORTH_100, LON0), (NORTH_100, EAST_100)])
    own = [(f.pose.x, f.pose.y) for f in BagSource(bag, '/cam', '/fix')]
    assert own[0] == pytest.approx((0, 0), abs=1e-6)  # about its own first fix: shifted
    source = BagSource(bag, '/cam', '/fix', geo_origin=(LAT0, LON0, ALT0))
    assert source.geo_origin == (LAT0, LON0, ALT0)
    frames = list(source)
    assert (frames[0].pose.x, frames[0].pose.y) == pytest.approx((0, 100), abs=0.1)
    assert (frames[1].pose.x, frames[1].pose.y) == pytest.approx((100, 100), abs=0.1)


def test_geo_origin_needs_a_navsatfix_topic(tmp_path: Path) -> None:
    stamps = [T0, T0 + SEC]
    msgs = image_records(TS2, stamps) + [('/odom', ODOM, s, pose_msg(TS2, ODOM, s, 0, 0))
                                         for s in stamps]
    with pytest.raises(SourceError, match='not NavSatFix'):
        BagSource(write_bag(tmp_path / 'bag', 'mcap', msgs), '/cam', '/odom',
                  geo_origin=(LAT0, LON0, ALT0))


def test_missing_or_wrong_topic_lists_the_bags_topics(tmp_path: Path) -> None:
    stamps = [T0, T0 + SEC]
    msgs = image_records(TS2, stamps) + [('/odom', ODOM, s, pose_msg(TS2, ODOM, s, 0, 0))
                                         for s in stamps]
    bag = write_bag(tmp_path / 'bag', 'mcap', msgs)
    listing = r'image topics in the bag: /cam \[sensor_msgs/msg/Image\]; pose topics: ' \
        r'/odom \[nav_msgs/msg/Odometry\]'
    with pytest.raises(SourceError, match="no topic '/camera/image_raw'; " + listing):
        BagSource(bag, '/camera/image_raw')
    with pytest.raises(SourceError, match='carries nav_msgs/msg/Odometry, expected one of'):
        BagSource(bag, '/odom')
    with pytest.raises(SourceError, match='give the image topic to read; ' + listing):
        BagSource(bag, None)
    with pytest.raises(SourceError, match="no topic '/gps'"):
        BagSource(bag, '/cam', '/gps')


def test_unreadable_bags(tmp_path: Path) -> None:
    (tmp_path / 'junk.mcap').write_bytes(b'not an mcap file at all')
    with pytest.raises(SourceError, match='junk.mcap'):
        BagSource(tmp_path / 'junk.mcap', '/cam')
    with pytest.raises(SourceError, match='does not exist'):
        BagSource(tmp_path / 'missing.bag', '/cam')
    (tmp_path / 'folder').mkdir()
    with pytest.raises(SourceError, match='metadata.yaml'):
        BagSource(tmp_path / 'folder', '/cam')


def test_interpolate_poses_refuses_long_gaps() -> None:
    stamps = np.array([0, 10, 100], np.int64)
    samples = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0]], np.float64)
    out, valid = interpolate_poses(stamps, samples, np.array([-1, 5, 10, 50, 100, 101]), 20)
    assert valid.tolist() == [False, True, True, False, True, False]
    assert out[valid, 0] == pytest.approx([0.5, 1.0, 2.0])


# --- writing -----------------------------------------------------------------------------------

@pytest.mark.parametrize('fmt, compressed', [('mcap', False), ('sqlite3', False),
                                             ('mcap', True)])
def test_images_to_bag_round_trip(tmp_path: Path, fmt: str, compressed: bool) -> None:
    folder = write_run(tmp_path / 'run', np.arange(0.0, 6.0, 1.0), seed=3, noise=0.0)
    folder_frames = list(ImageFolderSource(folder))
    bag = images_to_bag(folder, tmp_path / 'out', fmt=fmt, compressed=compressed)
    assert (bag / 'metadata.yaml').is_file()
    assert (bag / f'out.{"mcap" if fmt == "mcap" else "db3"}').is_file()
    assert 'version: 8' in (bag / 'metadata.yaml').read_text()
    topic = '/camera/image_raw/compressed' if compressed else '/camera/image_raw'
    source = BagSource(bag, topic, '/odom')
    frames = list(source)
    assert len(frames) == len(folder_frames)
    for got, want in zip(frames, folder_frames):
        assert got.stamp_ns == want.stamp_ns
        assert got.pose.as_array() == pytest.approx(want.pose.as_array(), abs=1e-9)
        if compressed:
            assert np.abs(got.image.astype(int) - want.image.astype(int)).mean() < 3
        else:
            np.testing.assert_array_equal(got.image, want.image)


def test_images_to_bag_synthesises_stamps_and_refuses_to_overwrite(tmp_path: Path) -> None:
    folder = write_run(tmp_path / 'run', np.arange(3.0), seed=4, with_table=False)
    out = images_to_bag(folder, tmp_path / 'bag', rate_hz=4.0, fmt='sqlite3')
    source = BagSource(out, '/camera/image_raw')
    assert [f.stamp_ns for f in source] == [SYNTHETIC_START_NS + i * SEC // 4 for i in range(3)]
    with pytest.raises(VprSeqError, match='--overwrite'):
        images_to_bag(folder, out)
    with pytest.raises(SourceError, match='no topic'):
        BagSource(out, '/camera/image_raw', '/odom')  # no poses: no pose topic written
    images_to_bag(folder, out, rate_hz=2.0, image_topic='/cam', overwrite=True)
    assert [f.stamp_ns for f in BagSource(out, '/cam')][1] == SYNTHETIC_START_NS + SEC // 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bag', 'run']  # no temp folders left
    (tmp_path / 'plain').mkdir()
    with pytest.raises(VprSeqError, match='not a ROS 2 bag folder'):
        images_to_bag(folder, tmp_path / 'plain', overwrite=True)
    with pytest.raises(VprSeqError, match='suffix'):
        images_to_bag(folder, tmp_path / 'x.mcap')


def test_images_to_bag_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vpr_seq_ros.commands import images_to_bag as command

    folder = write_run(tmp_path / 'run', np.arange(4.0), seed=5)
    parser = argparse.ArgumentParser(prog='vpr-seq')
    command.register(parser.add_subparsers())
    args = parser.parse_args(['images-to-bag', str(folder), '-o', str(tmp_path / 'bag'),
                              '--format', 'sqlite3', '--compressed', '--pose-topic', '/gt'])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert 'sqlite3' in out and str(tmp_path / 'bag') in out
    assert '/camera/image_raw/compressed [sensor_msgs/msg/CompressedImage] x 4' in out
    assert '/gt [nav_msgs/msg/Odometry] x 4' in out
    assert len(BagSource(tmp_path / 'bag', '/camera/image_raw/compressed', '/gt')) == 4


def test_images_to_bag_leaves_nothing_on_failure(tmp_path: Path) -> None:
    folder = write_run(tmp_path / 'run', np.arange(4.0), seed=6)
    (folder / 'img_0002.png').write_bytes(b'not a png')  # fails half way through
    with pytest.raises(SourceError, match='img_0002.png'):
        images_to_bag(folder, tmp_path / 'bag')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run']
