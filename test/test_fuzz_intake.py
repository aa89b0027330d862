"""Bad input never stops the node: the node's callback path (decoder + core) under fuzzing.

:class:`vpr_seq_ros.messages.intake.Intake` is what the rclpy node calls for each message. It
is driven here with rosbags' real ``sensor_msgs``/``nav_msgs`` classes: random ``Image`` messages
(every encoding, padding, byte order, truncated or oversized data, zero or huge sizes, wrong
``step``), random ``CompressedImage`` payloads, odometry with NaN, infinite or jumping values,
and stamps that are zero, repeated or going backwards. Each test checks that nothing raises,
that every message is either used or dropped and counted, that no frame failed unexpectedly,
and that good frames afterwards still match the right places.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import place_image, write_run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rosbags.typesys import Stores, get_typestore

import vpr_seq_ros.messages.intake as intake_module
from vpr_seq_ros.config import load_config
from vpr_seq_ros.messages.images import RAW_ENCODINGS
from vpr_seq_ros.messages.intake import FRAMES_FAILED, ODOMETRY_DROPPED, Intake
from vpr_seq_ros.pipeline import build_map
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.runtime.core import NodeCore

TS = get_typestore(Stores.ROS2_JAZZY)
Image = TS.types['sensor_msgs/msg/Image']
CompressedImage = TS.types['sensor_msgs/msg/CompressedImage']
Odometry = TS.types['nav_msgs/msg/Odometry']
Header = TS.types['std_msgs/msg/Header']
Time = TS.types['builtin_interfaces/msg/Time']
PoseWithCovariance = TS.types['geometry_msgs/msg/PoseWithCovariance']
TwistWithCovariance = TS.types['geometry_msgs/msg/TwistWithCovariance']
PoseMsg = TS.types['geometry_msgs/msg/Pose']
Point = TS.types['geometry_msgs/msg/Point']
Quaternion = TS.types['geometry_msgs/msg/Quaternion']
Twist = TS.types['geometry_msgs/msg/Twist']
Vector3 = TS.types['geometry_msgs/msg/Vector3']

RECEIVE_NS = 4_000_000_000_000_000_000
BYTES_PER_PIXEL = {'u1': 1, 'u2': 2}
SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def header(stamp_ns: int) -> Any:
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id='camera')


def image(rgb: np.ndarray, stamp_ns: int) -> Any:
    h, w, _ = rgb.shape
    return Image(header=header(stamp_ns), height=h, width=w, encoding='rgb8', is_bigendian=0,
                 step=w * 3, data=rgb.reshape(-1).copy())


def odometry(stamp_ns: int, x: float, y: float = 0.0, z: float = 0.0,
             q: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)) -> Any:
    pose = PoseMsg(position=Point(x=x, y=y, z=z),
                   orientation=Quaternion(x=q[0], y=q[1], z=q[2], w=q[3]))
    twist = Twist(linear=Vector3(x=0.0, y=0.0, z=0.0), angular=Vector3(x=0.0, y=0.0, z=0.0))
    return Odometry(header=header(stamp_ns), child_frame_id='base_link',
                    pose=PoseWithCovariance(pose=pose, covariance=np.zeros(36)),
                    twist=TwistWithCovariance(twist=twist, covariance=np.zeros(36)))


@pytest.fixture(scope='module')
def map_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('fuzz_map')
    write_run(folder / 'reference', np.arange(40.0), seed=1)
    return build_map(folder / 'reference', load_config(), folder / 'map.npz')


@pytest.fixture(scope='module')
def intake(map_path: Path) -> Intake:
    """One node core for all the fuzzing of this module, as one long-running node sees it."""
    cfg = load_config(overrides={'node.mode': 'localization', 'node.map_path': str(map_path),
                                 'node.keyframe.min_distance_m': 0.5})
    core = NodeCore.from_config(cfg)
    return Intake(core, lambda: RECEIVE_NS)


class Tally:
    """Counters before a batch of messages, to check that each one was used or counted."""

    def __init__(self, intake: Intake) -> None:
        self.intake = intake
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, int]:
        d = self.intake.core.diagnostics
        return {'received': d.frames_received, 'malformed': d.frames_dropped_malformed,
                'failed': int(d.extra[FRAMES_FAILED]), 'odometry': int(d.extra[ODOMETRY_DROPPED])}

    def delta(self) -> dict[str, int]:
        now = self.snapshot()
        return {k: now[k] - self.before[k] for k in now}


GOOD_STAMPS = iter(range(RECEIVE_NS + 10**9, 2**63 - 1, 10 * 10**9))


def assert_still_matches(intake: Intake, first_place: float = 12.0) -> None:
    """Good frames (and odometry) after the fuzzing match the right places.

    The ``..._then_the_node_still_matches`` tests run after the fuzz test above them (pytest
    keeps the file's order) on the same core.
    """
    rng = np.random.default_rng(7)
    stamp = next(GOOD_STAMPS)
    best = []
    for k in range(12):
        place = first_place + k
        intake.odometry(odometry(stamp, 1e6 + place))  # finite jump: a valid sample
        step = intake.image(image(place_image(place, rng), stamp))
        assert step is not None
        if step.hypothesis is not None and step.hypothesis.best is not None:
            best.append((place, step.hypothesis.best.pose.x))
        stamp += 100_000_000
    assert len(best) >= 4, best
    for place, matched in best[-4:]:
        assert abs(matched - place) <= 3.0, best


# ---------------------------------------------------------------------------- raw images
ENCODINGS = sorted(RAW_ENCODINGS) + ['16UC1', '32FC1', '8UC3', 'RGB8', 'jpeg', '', 'rgb8 ']
HUGE = st.sampled_from([2**16, 2**31 - 1, 2**32 - 1])


@st.composite
def raw_images(draw: st.DrawFn) -> Any:
    encoding = draw(st.sampled_from(ENCODINGS))
    height = draw(st.one_of(st.integers(0, 24), HUGE))
    width = draw(st.one_of(st.integers(0, 24), HUGE))
    pixel, channels, _ = RAW_ENCODINGS.get(encoding.lower(), ('u1', 3, ''))
    row = width * channels * BYTES_PER_PIXEL[pixel]
    step = draw(st.one_of(st.just(row), st.integers(row, row + 7), st.integers(0, 2**32 - 1),
                          st.integers(max(row - 3, 0), row)))
    step = min(step, 2**32 - 1)
    want = step * height if height < 2**15 and step < 2**20 else 64
    size = draw(st.one_of(st.just(want), st.integers(0, min(want + 16, 1 << 16)),
                          st.just(min(want + 1000, 1 << 16))))
    size = min(size, 1 << 16)
    data = np.frombuffer(draw(st.binary(min_size=min(size, 4096), max_size=min(size, 4096))) *
                         (size // 4096 + 1), np.uint8)[:size].copy() if size else \
        np.zeros(0, np.uint8)
    stamp = draw(st.one_of(st.just(0), st.integers(0, 2**31 - 1).map(lambda s: s * 10**9),
                           st.integers(1, 10**18)))
    msg = Image(header=header(stamp), height=height, width=width, encoding=encoding,
                is_bigendian=draw(st.sampled_from([0, 1, 2, 255])), step=step, data=data)
    return msg


@SETTINGS
@given(messages=st.lists(raw_images(), min_size=1, max_size=6))
def test_random_raw_images_are_used_or_counted(intake: Intake, messages: list[Any]) -> None:
    tally = Tally(intake)
    used = sum(intake.image(msg) is not None for msg in messages)
    delta = tally.delta()
    assert delta['failed'] == 0
    assert delta['received'] == used
    assert delta['received'] + delta['malformed'] == len(messages)


def test_random_raw_images_then_the_node_still_matches(intake: Intake) -> None:
    assert_still_matches(intake)


def test_oversized_and_odd_but_valid_images_are_used(intake: Intake) -> None:
    """A large frame, one pixel, one row: valid images, so encoded and matched, not dropped."""
    tally = Tally(intake)
    rng = np.random.default_rng(3)
    for shape in ((1080, 1920, 3), (1, 1, 3), (1, 300, 3), (300, 1, 3)):
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        assert intake.image(image(rgb, RECEIVE_NS)) is not None, shape
    assert tally.delta() == {'received': 4, 'malformed': 0, 'failed': 0, 'odometry': 0}
    assert_still_matches(intake)


# ---------------------------------------------------------------------------- compressed
def encoded(ext: str, rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, rgb)
    assert ok
    return buf.tobytes()


GOOD = place_image(5.0, np.random.default_rng(0))
PAYLOADS = [encoded('.jpg', GOOD), encoded('.png', GOOD),
            encoded('.png', GOOD[:, :, 0]), encoded('.png', GOOD.astype(np.uint16) * 257)]
FORMATS = ['jpeg', 'png', 'rgb8; jpeg compressed bgr8', 'bgr8; png compressed', 'mono8; png',
           '16UC1; compressedDepth png', '', 'garbage', 'tiff', 'rgb8; jpeg compressed rgb8']


@st.composite
def compressed_images(draw: st.DrawFn) -> Any:
    payload = draw(st.sampled_from(PAYLOADS))
    how = draw(st.sampled_from(['whole', 'cut', 'flip', 'random', 'empty', 'doubled']))
    if how == 'cut':
        payload = payload[:draw(st.integers(0, len(payload)))]
    elif how == 'flip':
        data = bytearray(payload)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= draw(st.integers(1, 255))
        payload = bytes(data)
    elif how == 'random':
        payload = draw(st.binary(max_size=512))
    elif how == 'empty':
        payload = b''
    elif how == 'doubled':
        payload = payload + payload
    stamp = draw(st.sampled_from([0, 1, 10**18, 2**31 * 10**9]))
    return CompressedImage(header=header(stamp), format=draw(st.sampled_from(FORMATS)),
                           data=np.frombuffer(payload, np.uint8).copy())


@SETTINGS
@given(messages=st.lists(compressed_images(), min_size=1, max_size=6))
def test_random_compressed_images_are_used_or_counted(intake: Intake,
                                                      messages: list[Any]) -> None:
    tally = Tally(intake)
    used = sum(intake.image(msg) is not None for msg in messages)
    delta = tally.delta()
    assert delta['failed'] == 0
    assert delta['received'] == used
    assert delta['received'] + delta['malformed'] == len(messages)


def test_random_compressed_images_then_the_node_still_matches(intake: Intake) -> None:
    assert_still_matches(intake)


# ---------------------------------------------------------------------------- odometry, stamps
VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 0.0, 1e9,
                                    1e9 + 1]))


@SETTINGS
@given(samples=st.lists(st.tuples(VALUES, VALUES, VALUES, VALUES, VALUES, VALUES, VALUES,
                                  st.integers(0, 2**62)), min_size=1, max_size=8))
def test_random_odometry_is_used_or_counted(intake: Intake, samples: list[tuple]) -> None:
    tally = Tally(intake)
    kept = 0
    for x, y, z, qx, qy, qz, qw, stamp in samples:
        pose = intake.odometry(odometry(stamp, x, y, z, (qx, qy, qz, qw)))
        values = (x, y, z, qx, qy, qz, qw)
        valid = all(math.isfinite(v) for v in values) and max(abs(x), abs(y), abs(z)) <= 1e9 \
            and any(v != 0 for v in (qx, qy, qz, qw))
        assert (pose is not None) == valid, values
        kept += valid
        if pose is not None:
            assert all(math.isfinite(v) for v in (pose.x, pose.y, pose.z, pose.yaw))
    assert tally.delta()['odometry'] == len(samples) - kept


def test_random_odometry_then_the_node_still_matches(intake: Intake) -> None:
    assert_still_matches(intake)


def test_zero_repeated_and_backward_stamps(intake: Intake) -> None:
    """Zero stamps take the receive time; repeats are kept; a backward stamp resets the buffer.

    Matching continues after each of them.
    """
    rng = np.random.default_rng(9)
    core = intake.core
    frames = [image(place_image(20.0 + k, rng), 0) for k in range(3)]
    steps = [intake.image(msg) for msg in frames]
    assert all(s is not None and s.stamp_ns == RECEIVE_NS for s in steps)
    assert not steps[1].reset and not steps[2].reset  # equal stamps: no jump
    resets = core.diagnostics.resets
    same = intake.image(image(place_image(23.0, rng), RECEIVE_NS))
    assert same is not None and same.stamp_ns == RECEIVE_NS
    back = intake.image(image(place_image(24.0, rng), 5_000_000_000))
    assert back is not None and back.reset and core.diagnostics.resets == resets + 1
    assert_still_matches(intake, first_place=25.0)
    assert core.diagnostics.extra[FRAMES_FAILED] == 0


def test_messages_without_the_fields_are_counted(intake: Intake) -> None:
    tally = Tally(intake)
    assert intake.image(object()) is None
    assert intake.odometry(object()) is None
    bad_header = Image(header=Header(stamp=Time(sec=0, nanosec=0), frame_id=''), height=2,
                       width=2, encoding='rgb8', is_bigendian=0, step=6,
                       data=np.zeros(12, np.uint8))
    bad_header.header = None
    assert intake.image(bad_header) is None
    assert tally.delta() == {'received': 0, 'malformed': 2, 'failed': 0, 'odometry': 1}


def test_fresh_core_from_the_map(map_path: Path) -> None:
    """The map the fuzzing used is intact (the node never writes it)."""
    assert load_map(map_path).run.descriptors.shape[0] == 40


def test_frames_the_keyframe_gate_skips_are_not_decoded(map_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only frames the gate takes are decoded: a 30 Hz camera gated to 1 m costs one decode
    per keyframe, and a corrupt image between keyframes is skipped, not decoded."""
    cfg = load_config(overrides={'node.mode': 'localization', 'node.map_path': str(map_path),
                                 'node.keyframe.min_interval_s': 1.0})
    intake = Intake(NodeCore.from_config(cfg), lambda: RECEIVE_NS)
    decoded: list[int] = []
    real = intake_module.decode_any

    def counting(msg: Any) -> np.ndarray:
        decoded.append(int(msg.header.stamp.sec))
        return real(msg)

    monkeypatch.setattr(intake_module, 'decode_any', counting)
    rng = np.random.default_rng(3)
    good = image(place_image(5.0, rng), 10 * 10**9)
    corrupt = Image(header=header(10 * 10**9 + 3 * 10**8), height=4, width=4, encoding='rgb8',
                    is_bigendian=0, step=12, data=np.zeros(5, np.uint8))
    later = image(place_image(6.0, rng), 11 * 10**9)
    steps = [intake.image(m) for m in (good, corrupt, later)]
    assert [s is not None and s.keyframe for s in steps] == [True, False, True]
    assert decoded == [10, 11]
    diag = intake.core.diagnostics
    assert (diag.frames_received, diag.frames_skipped_gating, diag.frames_dropped_malformed) \
        == (3, 1, 0)
    # a stamp going backwards starts a new session: that frame is a keyframe and is decoded
    back = image(place_image(7.0, rng), 5 * 10**9)
    assert intake.image(back).keyframe and decoded[-1] == 5
