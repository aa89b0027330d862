"""The node as a user runs it: ``ros2 launch vpr_seq_ros {localization,slam}.launch.py``.

Each test starts the launch file in a child process (in a ROS domain of its own), talks to the
node with an in-process rclpy probe or the ``ros2`` command line, and stops it with Ctrl-C:

* localization: published query images give matched poses at the right places; a compressed
  bag played with ``ros2 bag play`` gives the same through ``image_transport:=compressed``;
* slam: a route driven twice gives loop closures; ``~/reset`` and ``~/save_map`` answer and the
  saved map loads; parameters are set, refused and described with ``ros2 param``;
* Ctrl-C under ``ros2 launch`` ends the node cleanly (exit code 0, no traceback), every time.

Needs a sourced ROS 2 (``source /opt/ros2-jazzy/activate.sh``); skipped without one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ros_helpers import (REPO, Launched, ament_prefix, image_msg, ros_available, ros_env,
                         unique_domain_id)

if not ros_available():
    pytest.skip('ROS 2 is not sourced (rclpy, launch_ros, ros2)', allow_module_level=True)

import rclpy  # noqa: E402
from conftest import place_image, write_run  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from vpr_seq_ros.bagwrite import images_to_bag  # noqa: E402
from vpr_seq_ros.config import Config  # noqa: E402
from vpr_seq_ros.pipeline import build_map  # noqa: E402
from vpr_seq_ros.refmap import load_map  # noqa: E402

START_TIMEOUT_S = 60.0
ANSWER_TIMEOUT_S = 30.0
FIRST_STAMP_NS = 1_700_000_000_000_000_000
TOLERANCE_M = 3.0
SHUTDOWNS = 8


@pytest.fixture(scope='module')
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ament_prefix(tmp_path_factory.mktemp('ament'))


class Probe:
    """An rclpy node in the launched node's domain: publish, collect, call services."""

    def __init__(self, domain_id: int) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('vpr_test_probe', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def collect(self, msg_type: Any, topic: str) -> list[Any]:
        got: list[Any] = []
        self.node.create_subscription(msg_type, topic, got.append, 50)
        return got

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=min(0.02, max(end - time.monotonic(), 0.0)))

    def spin_until(self, done: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        return done()

    def wait_subscribed(self, publisher: Any) -> None:
        assert self.spin_until(lambda: publisher.get_subscription_count() > 0,
                               START_TIMEOUT_S), f'nobody subscribed to {publisher.topic_name}'

    def call(self, service: str) -> Any:
        client = self.node.create_client(Trigger, service)
        assert client.wait_for_service(timeout_sec=ANSWER_TIMEOUT_S), service
        future = client.call_async(Trigger.Request())
        assert self.spin_until(future.done, ANSWER_TIMEOUT_S), service
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture
def launch(prefix: Path) -> Iterator[Callable[..., tuple[Launched, Probe]]]:
    """Start a launch file and a probe in a fresh domain; both are stopped afterwards."""
    started: list[tuple[Launched, Probe]] = []

    def start(launch_file: str, **arguments: str) -> tuple[Launched, Probe]:
        domain_id = unique_domain_id()
        cmd = ['ros2', 'launch', 'vpr_seq_ros', launch_file,
               *(f'{k}:={v}' for k, v in arguments.items())]
        launched = Launched(cmd, ros_env(prefix, domain_id))
        probe = Probe(domain_id)
        started.append((launched, probe))
        assert launched.wait_for('ready: mode', START_TIMEOUT_S), launched.output
        return launched, probe

    yield start
    for launched, probe in started:
        probe.close()
        launched.kill()


def assert_clean_exit(launched: Launched) -> None:
    code = launched.interrupt()
    output = launched.output
    assert code == 0, output
    assert 'Traceback' not in output and 'RCLError' not in output, output
    assert 'process has finished cleanly' in output, output


def stamp_of(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@pytest.fixture
def reference_map(tmp_path: Path) -> Path:
    write_run(tmp_path / 'reference', np.arange(40.0), seed=1)
    return build_map(tmp_path / 'reference', Config(), tmp_path / 'map.npz')


def test_localization_launch_file_matches_published_images(launch, reference_map):
    launched, probe = launch('localization.launch.py', map=str(reference_map),
                             image_topic='/cam/image_raw')
    poses = probe.collect(PoseWithCovarianceStamped, '/vpr_seq_node/matched_pose')
    publisher = probe.node.create_publisher(Image, '/cam/image_raw', qos_profile_sensor_data)
    probe.wait_subscribed(publisher)
    rng = np.random.default_rng(2)
    places = {}
    for i, place in enumerate(np.arange(10.0, 24.0)):
        stamp = FIRST_STAMP_NS + i * 100_000_000
        places[stamp] = place
        publisher.publish(image_msg(place_image(float(place), rng), stamp))
        probe.spin_for(0.1)
    assert probe.spin_until(lambda: len(poses) >= 5, ANSWER_TIMEOUT_S), launched.output
    for msg in poses:
        assert msg.header.frame_id == 'map'
        assert abs(msg.pose.pose.position.x - places[stamp_of(msg)]) <= TOLERANCE_M
    assert_clean_exit(launched)


def test_compressed_bag_played_through_the_launched_node(launch, reference_map, tmp_path):
    write_run(tmp_path / 'query', np.arange(5.0, 30.0), seed=3)
    bag = images_to_bag(tmp_path / 'query', tmp_path / 'query_bag', compressed=True,
                        image_topic='/cam/image_raw')
    launched, probe = launch('localization.launch.py', map=str(reference_map),
                             image_topic='/cam/image_raw', image_transport='compressed')
    poses = probe.collect(PoseWithCovarianceStamped, '/vpr_seq_node/matched_pose')
    probe.spin_for(0.5)
    play = subprocess.run(['ros2', 'bag', 'play', str(bag), '--rate', '2'], env=launched.env,
                          capture_output=True, text=True, timeout=120)
    assert play.returncode == 0, play.stdout + play.stderr
    assert probe.spin_until(lambda: len(poses) >= 10, ANSWER_TIMEOUT_S), launched.output
    # the bag's stamps are the frame table's: 1 s + i * 0.1 s for place 5 + i
    for msg in poses:
        place = 5.0 + (stamp_of(msg) - 1_000_000_000) / 100_000_000
        assert abs(msg.pose.pose.position.x - place) <= TOLERANCE_M
    assert_clean_exit(launched)


def ros2_cli(launched: Launched, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['ros2', *args], env=launched.env, capture_output=True, text=True,
                          timeout=60)


def test_slam_launch_file_loop_closures_services_and_parameters(launch, tmp_path):
    map_path = tmp_path / 'slam_map.npz'
    # the synthetic places are less distinctive than real ones (best match about 2.3 standard
    # deviations out): a user's own parameter file with a lower min_score
    params = tmp_path / 'slam.yaml'
    params.write_text((REPO / 'config' / 'slam.yaml').read_text().replace(
        'min_score: 3.0', 'min_score: 2.0'))
    launched, probe = launch('slam.launch.py', map=str(map_path), image_topic='/cam/image_raw',
                             params_file=str(params))
    closures = probe.collect(Float64MultiArray, '/vpr_seq_node/loop_closure')
    images = probe.node.create_publisher(Image, '/cam/image_raw', qos_profile_sensor_data)
    odom = probe.node.create_publisher(Odometry, '/odom', 50)
    probe.wait_subscribed(images)
    # a 120 m route, then its first 60 m again, 2 m per frame, one frame per data second
    # (keyframes by path length: slam.yaml's 1 m); the second lap matches the first (a
    # distinctive match needs enough candidates: min_score is 3 standard deviations)
    rng = np.random.default_rng(4)
    laps = np.concatenate([np.arange(0.0, 120.0, 2.0), np.arange(0.0, 60.0, 2.0)])
    odometer = 0.0
    for i, place in enumerate(laps):
        stamp = FIRST_STAMP_NS + i * 1_000_000_000
        odometer += 2.0
        pose = Odometry()
        pose.header.stamp.sec, pose.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        pose.pose.pose.position.x = odometer  # path length keeps growing on the second lap
        pose.pose.pose.orientation.w = 1.0
        odom.publish(pose)
        probe.spin_for(0.02)
        images.publish(image_msg(place_image(float(place), rng), stamp))
        probe.spin_for(0.06)
    assert probe.spin_until(lambda: len(closures) >= 1, ANSWER_TIMEOUT_S), launched.output
    for msg in closures:
        t_query, t_match = msg.data
        query, match = laps[round(t_query - FIRST_STAMP_NS / 1e9)], \
            laps[round(t_match - FIRST_STAMP_NS / 1e9)]
        assert abs(query - match) <= 2 * TOLERANCE_M and t_query - t_match >= 30.0

    saved = probe.call('/vpr_seq_node/save_map')
    assert saved.success, saved.message
    assert str(map_path) in saved.message and load_map(map_path).run.descriptors.shape[0] >= 30
    reset = probe.call('/vpr_seq_node/reset')
    assert reset.success and 'reset' in reset.message

    ok = ros2_cli(launched, 'param', 'set', '/vpr_seq_node', 'matching.top_k', '3')
    assert ok.returncode == 0 and 'successful' in ok.stdout.lower(), ok.stdout + ok.stderr
    got = ros2_cli(launched, 'param', 'get', '/vpr_seq_node', 'matching.top_k')
    assert '3' in got.stdout, got.stdout
    refused = ros2_cli(launched, 'param', 'set', '/vpr_seq_node', 'sequence.length', '3')
    assert 'read-only' in (refused.stdout + refused.stderr).lower(), refused.stdout
    invalid = ros2_cli(launched, 'param', 'set', '/vpr_seq_node',
                       'node.loop_closure.min_streak', '0')
    assert 'min_streak' in invalid.stdout + invalid.stderr, invalid.stdout
    described = ros2_cli(launched, 'param', 'describe', '/vpr_seq_node', 'sequence.length')
    assert 'read only: true' in described.stdout.lower(), described.stdout
    assert_clean_exit(launched)


def test_start_up_error_is_fatal_and_says_why(prefix, tmp_path):
    launched = Launched(['ros2', 'launch', 'vpr_seq_ros', 'localization.launch.py',
                         f'map:={tmp_path / "missing.npz"}'],
                        ros_env(prefix, unique_domain_id()))
    try:
        launched.proc.wait(timeout=START_TIMEOUT_S)
        launched._reader.join(timeout=5.0)
        assert 'does not exist' in launched.output and 'Traceback' not in launched.output
        assert 'exit code 1' in launched.output, launched.output
    finally:
        launched.kill()


def test_ctrl_c_under_ros2_launch_is_clean_every_time(launch, tmp_path):
    """SIGINT to the launch's process group (a terminal's Ctrl-C) while images flow."""
    rng = np.random.default_rng(5)
    frames = [place_image(float(p), rng) for p in range(8)]
    for attempt in range(SHUTDOWNS):
        launched, probe = launch('slam.launch.py', map=str(tmp_path / 'm.npz'),
                                 image_topic='/cam/image_raw')
        publisher = probe.node.create_publisher(Image, '/cam/image_raw',
                                                qos_profile_sensor_data)
        probe.wait_subscribed(publisher)
        end = time.monotonic() + 0.1 + 0.1 * attempt  # stop at a different moment each time
        i = 0
        while time.monotonic() < end:
            publisher.publish(image_msg(frames[i % len(frames)], FIRST_STAMP_NS + i * 33_000_000))
            probe.spin_for(0.03)
            i += 1
        assert_clean_exit(launched)
