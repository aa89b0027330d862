"""Bad input through the real rclpy node: random images and odometry over DDS, then good frames.

The shorter, real-transport companion of ``test_fuzz_intake.py``: the node runs in-process in
its own ROS domain; a probe publishes malformed ``Image``, ``CompressedImage`` (on a second
node in compressed mode) and ``Odometry`` messages, then a good sequence; the node must still
publish the right matched poses, count the drops in ``/diagnostics`` and fail on no frame.
Needs ROS 2; skipped without.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
pytest.importorskip('diagnostic_msgs.msg')

from conftest import place_image, write_run  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from vpr_seq_ros.config import Config  # noqa: E402
from vpr_seq_ros.messages.images import RAW_ENCODINGS  # noqa: E402
from vpr_seq_ros.messages.intake import FRAMES_FAILED, ODOMETRY_DROPPED  # noqa: E402
from vpr_seq_ros.pipeline import build_map  # noqa: E402
from vpr_seq_ros.ros.node import VprSeqNode  # noqa: E402

BAD_MESSAGES = 60
TIMEOUT_S = 30.0


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Any, Any, Any]]:
    write_run(tmp_path / 'reference', np.arange(40.0), seed=1)
    map_path = build_map(tmp_path / 'reference', Config(), tmp_path / 'map.npz')
    context = Context()
    rclpy.init(context=context)
    nodes = [VprSeqNode(context=context, parameter_overrides=[
        Parameter('node.map_path', value=str(map_path)),
        Parameter('node.queue_depth', value=64),
        Parameter('node.image_transport', value=transport)],
        namespace=f'/{transport}') for transport in ('raw', 'compressed')]
    probe = rclpy.create_node('vpr_fuzz_probe', context=context)
    executor = MultiThreadedExecutor(context=context)
    for node in (*nodes, probe):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        yield nodes[0], nodes[1], probe
    finally:
        executor.shutdown(timeout_sec=2.0)
        for node in (*nodes, probe):
            node.destroy_node()
        rclpy.try_shutdown(context=context)


def wait(condition: Any, timeout: float = TIMEOUT_S) -> bool:
    end = time.monotonic() + timeout
    while not condition() and time.monotonic() < end:
        time.sleep(0.02)
    return condition()


def stamped(msg: Any, stamp_ns: int) -> Any:
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def good_image(place: float, rng: np.random.Generator, stamp_ns: int) -> Image:
    rgb = place_image(place, rng)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=rgb.shape[1] * 3,
                data=rgb.tobytes())
    return stamped(msg, stamp_ns)


def bad_image(rng: np.random.Generator) -> Image:
    encoding = str(rng.choice(sorted(RAW_ENCODINGS) + ['32FC1', 'nonsense', '']))
    height, width = (int(v) for v in rng.choice([0, 1, 3, 17, 2**31 - 1, 2**32 - 1], 2))
    step = int(rng.choice([0, 1, 5, 51, 2**32 - 1]))
    size = int(rng.integers(0, 400))
    msg = Image(height=height, width=width, encoding=encoding, step=step,
                is_bigendian=int(rng.integers(0, 2)),
                data=rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    return stamped(msg, int(rng.choice([0, 1, 10**18])))


def bad_compressed(rng: np.random.Generator) -> CompressedImage:
    fmt = str(rng.choice(['jpeg', 'png', '16UC1; compressedDepth', 'garbage', '']))
    head = bytes([0xFF, 0xD8, 0xFF]) if rng.random() < 0.5 else b'\x89PNG\r\n\x1a\n'
    data = head + rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()
    return stamped(CompressedImage(format=fmt, data=data), int(rng.integers(0, 2**40)))


def bad_odometry(rng: np.random.Generator) -> Odometry:
    msg = Odometry()
    values = [float(v) for v in rng.choice([np.nan, np.inf, -np.inf, 1e300, 0.0], 7)]
    p, q = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z, q.x, q.y, q.z, q.w = values
    if all(np.isfinite(values)) and max(abs(v) for v in values[:3]) <= 1e9 and any(values[3:]):
        p.x = float('nan')  # keep every sample of this test bad
    return stamped(msg, int(rng.integers(0, 2**40)))


def test_bad_messages_are_dropped_and_counted_and_matching_goes_on(running):
    raw_node, compressed_node, probe = running
    rng = np.random.default_rng(11)
    raw = probe.create_publisher(Image, '/raw/image', qos_profile_sensor_data)
    compressed = probe.create_publisher(CompressedImage, '/compressed/image/compressed',
                                        qos_profile_sensor_data)
    odom = probe.create_publisher(Odometry, '/raw/odom', 50)
    poses: list[PoseWithCovarianceStamped] = []
    probe.create_subscription(PoseWithCovarianceStamped, '/raw/vpr_seq_node/matched_pose',
                              poses.append, 50)
    diagnostics: list[DiagnosticArray] = []
    probe.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 50)
    assert wait(lambda: raw.get_subscription_count() and compressed.get_subscription_count()
                and odom.get_subscription_count())

    for _ in range(BAD_MESSAGES):
        raw.publish(bad_image(rng))
        compressed.publish(bad_compressed(rng))
        odom.publish(bad_odometry(rng))
        time.sleep(0.005)
    raw_diag, compressed_diag = raw_node.core.diagnostics, compressed_node.core.diagnostics
    # best-effort images may be lost on the way; every one that arrived is counted
    assert wait(lambda: raw_diag.frames_dropped_malformed >= BAD_MESSAGES * 0.8 and
                compressed_diag.frames_dropped_malformed >= BAD_MESSAGES * 0.8 and
                raw_diag.extra[ODOMETRY_DROPPED] == BAD_MESSAGES)

    stamps = {}
    for i, place in enumerate(np.arange(10.0, 22.0)):
        stamp = 2 * 10**18 + i * 100_000_000
        stamps[stamp] = place
        raw.publish(good_image(place, rng, stamp))
        time.sleep(0.05)
    assert wait(lambda: len(poses) >= 5), raw_diag
    for msg in poses:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        assert abs(msg.pose.pose.position.x - stamps[stamp]) <= 3.0
    assert raw_diag.extra[FRAMES_FAILED] == 0 and compressed_diag.extra[FRAMES_FAILED] == 0

    def reported() -> dict[str, str]:
        for array in reversed(diagnostics):
            for status in array.status:
                if status.name == 'vpr_seq_ros: localization':
                    values = {kv.key: kv.value for kv in status.values}
                    if int(values['frames_received']) >= 12:
                        return values
        return {}
    assert wait(lambda: bool(reported()), 5.0)
    values = reported()
    assert int(values['frames_dropped_malformed']) > 0 and values[ODOMETRY_DROPPED] != '0'
