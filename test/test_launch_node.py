"""launch_testing: the node under ``localization.launch.py`` turns published images into poses.

A tiny reference run is written and built into a map with the Python API; the launch file starts
``vpr_node`` on it (or, without an installed ``vpr_seq_ros`` package or with
``VPR_SEQ_TEST_NODE_FROM_SOURCE=1``, the node module of this source tree); the test publishes
query images of the same places and waits for ``/vpr_seq_node/matched_pose``. The launch and the
probe run in a ROS domain of their own. Needs ROS 2 (rclpy, launch_testing); skipped without.

    python -m pytest test/test_launch_node.py      # or: launch_test test/test_launch_node.py
"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
import time
import unittest
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('launch_testing')
rclpy = pytest.importorskip('rclpy')
pytest.importorskip('launch_ros')
pytest.importorskip('geometry_msgs.msg')
pytest.importorskip('sensor_msgs.msg')

import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import (ExecuteProcess, IncludeLaunchDescription,  # noqa: E402
                            SetEnvironmentVariable)
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

try:
    from conftest import place_image, write_run
except ImportError:  # launch_test imports this file outside pytest
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from conftest import place_image, write_run
from ros_helpers import image_msg  # noqa: E402
from vpr_seq_ros.config import Config  # noqa: E402
from vpr_seq_ros.pipeline import build_map  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGE_TOPIC = '/vpr_launch_test/image_raw'
POSE_TOPIC = '/vpr_seq_node/matched_pose'
REFERENCE_PLACES = np.arange(40, dtype=float)   # metres along a line, 1 m apart
QUERY_PLACES = np.arange(10.0, 26.0)            # a stretch of the same places, another noise
FIRST_STAMP_NS = 1_700_000_000_000_000_000
START_TIMEOUT_S = 60.0
POSE_TIMEOUT_S = 30.0
POSITION_TOLERANCE_M = 3.0


def installed_launch_file() -> Path | None:
    """``share/vpr_seq_ros/launch/localization.launch.py`` of the sourced workspace, if any."""
    if os.environ.get('VPR_SEQ_TEST_NODE_FROM_SOURCE') == '1':
        return None
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
    except ImportError:
        return None
    try:
        path = Path(get_package_share_directory('vpr_seq_ros')) / 'launch' / \
            'localization.launch.py'
    except PackageNotFoundError:
        return None
    return path if path.is_file() else None


def node_action(map_path: Path) -> Any:
    """The launch file with the map, or the source tree's node module with the same settings."""
    launch_file = installed_launch_file()
    if launch_file is not None:
        return IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(launch_file)),
            launch_arguments={'map': str(map_path), 'image_topic': IMAGE_TOPIC}.items())
    pythonpath = os.pathsep.join(p for p in (str(REPO), os.environ.get('PYTHONPATH')) if p)
    params_file = REPO / 'config' / 'localization.yaml'
    return ExecuteProcess(
        cmd=[sys.executable, '-m', 'vpr_seq_ros.ros.node', '--ros-args',
             '-r', '__node:=vpr_seq_node', '--params-file', str(params_file),
             '-p', f'node.map_path:={map_path}', '-r', f'image:={IMAGE_TOPIC}'],
        additional_env={'PYTHONPATH': pythonpath}, output='screen', name='vpr_node')


@pytest.mark.launch_test  # collected by launch_testing's pytest plugin
def generate_test_description() -> tuple[LaunchDescription, dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix='vpr_launch_test_'))
    write_run(workdir / 'reference', REFERENCE_PLACES, seed=1)
    map_path = build_map(workdir / 'reference', Config(), workdir / 'map.npz')
    domain_id = random.Random(os.getpid() ^ time.time_ns()).randrange(100, 200)
    description = LaunchDescription([
        SetEnvironmentVariable('ROS_DOMAIN_ID', str(domain_id)),
        node_action(map_path),
        launch_testing.actions.ReadyToTest(),
    ])
    return description, {'workdir': workdir, 'domain_id': domain_id}


class TestMatchedPose(unittest.TestCase):

    def test_images_in_matched_pose_out(self, proc_output: Any, domain_id: int) -> None:
        proc_output.assertWaitFor('ready: mode localization', timeout=START_TIMEOUT_S)
        context = Context()
        rclpy.init(context=context, domain_id=domain_id)
        node = rclpy.create_node('vpr_launch_test_probe', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        try:
            poses: list[PoseWithCovarianceStamped] = []
            node.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, poses.append, 10)
            publisher = node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
            deadline = time.monotonic() + START_TIMEOUT_S
            while publisher.get_subscription_count() == 0:
                self.assertLess(time.monotonic(), deadline, 'the node never subscribed')
                executor.spin_once(timeout_sec=0.1)

            rng = np.random.default_rng(2)
            stamps = {}
            for i, place in enumerate(QUERY_PLACES):
                stamp = FIRST_STAMP_NS + i * 100_000_000
                stamps[stamp] = place
                publisher.publish(image_msg(place_image(float(place), rng), stamp))
                end = time.monotonic() + 0.1   # 10 Hz, spinning for the answers meanwhile
                while time.monotonic() < end:
                    executor.spin_once(timeout_sec=0.02)

            deadline = time.monotonic() + POSE_TIMEOUT_S
            while not poses and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
            self.assertTrue(poses, f'no message on {POSE_TOPIC} within {POSE_TIMEOUT_S} s')
            for msg in poses:
                self.assertEqual(msg.header.frame_id, 'map')
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                self.assertIn(stamp, stamps, 'the pose is stamped with a query frame')
                self.assertAlmostEqual(msg.pose.pose.position.x, stamps[stamp],
                                       delta=POSITION_TOLERANCE_M)
                self.assertAlmostEqual(msg.pose.pose.position.y, 0.0, delta=1e-6)
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown(context=context)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):

    def test_clean_exit(self, proc_info: Any, workdir: Path) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        launch_testing.asserts.assertExitCodes(proc_info)
