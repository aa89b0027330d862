"""The rclpy shell in-process: parameters set or refused, services, start-up errors, messages.

Needs a ROS 2 installation (rclpy and the message packages); skipped without one.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip('rclpy')
pytest.importorskip('std_srvs.srv')
pytest.importorskip('diagnostic_msgs.msg')

from rclpy.context import Context  # noqa: E402
from ros_helpers import rclpy_context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from vpr_seq_ros.errors import ConfigError, MapError  # noqa: E402
from vpr_seq_ros.messages import outputs  # noqa: E402
from vpr_seq_ros.messages.factory import generated_factory as rclpy_factory  # noqa: E402
from vpr_seq_ros.ros.node import VprSeqNode  # noqa: E402
from vpr_seq_ros.runtime.outputs import (Candidate, Diagnostics, LoopClosure,  # noqa: E402
                                         PlaceHypothesis, StepResult)
from vpr_seq_ros.types import Pose  # noqa: E402


@pytest.fixture
def context() -> Iterator[Context]:
    yield from rclpy_context()


def make_node(context: Context, **params: object) -> VprSeqNode:
    overrides = [Parameter(name, value=value) for name, value in params.items()]
    return VprSeqNode(context=context, parameter_overrides=overrides)


@pytest.fixture
def slam_node(context: Context, tmp_path: Path) -> Iterator[VprSeqNode]:
    node = make_node(context, **{'node.mode': 'slam',
                                 'node.map_path': str(tmp_path / 'map.npz')})
    yield node
    node.destroy_node()


def set_one(node: VprSeqNode, name: str, value: object):
    return node.set_parameters([Parameter(name, value=value)])[0]


def test_parameters_are_the_dotted_schema(slam_node):
    names = set(slam_node.list_parameters([], 0).names)
    assert {'matching.top_k', 'sequence.length', 'node.loop_closure.min_streak',
            'encoder.patchnorm.width', 'matching.slopes', 'preset', 'use_sim_time'} <= names
    assert slam_node.describe_parameter('sequence.length').read_only
    assert not slam_node.describe_parameter('matching.top_k').read_only
    assert 'consecutive' in slam_node.describe_parameter(
        'node.loop_closure.min_streak').description


def test_dynamic_parameter_is_applied(slam_node):
    assert set_one(slam_node, 'matching.top_k', 3).successful
    assert slam_node.cfg.matching.top_k == 3 and slam_node.core.cfg.matching.top_k == 3
    assert set_one(slam_node, 'node.loop_closure.min_streak', 5).successful
    assert slam_node.core.cfg.node.loop_closure.min_streak == 5


def test_read_only_parameter_is_refused(slam_node):
    result = set_one(slam_node, 'sequence.length', 3)
    assert not result.successful and 'read-only' in result.reason
    assert slam_node.cfg.sequence.length == 5


def test_invalid_value_is_refused_with_the_schema_reason(slam_node):
    result = set_one(slam_node, 'node.loop_closure.min_streak', 0)
    assert not result.successful and 'min_streak' in result.reason
    assert slam_node.cfg.node.loop_closure.min_streak == 3


def test_wrong_type_is_refused(slam_node):
    result = set_one(slam_node, 'node.max_distance', 1)
    assert not result.successful and 'type' in result.reason.lower()


def test_parameters_outside_the_schema_are_left_to_rclpy(slam_node):
    assert set_one(slam_node, 'use_sim_time', True).successful


def test_services_answer(context, slam_node):
    client_node = rclpy.create_node('vpr_test_client', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(slam_node)
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        for service, success, text in (('reset', True, 'reset'),
                                       ('save_map', False, 'no keyframes')):
            client = client_node.create_client(Trigger, f'/vpr_seq_node/{service}')
            assert client.wait_for_service(timeout_sec=10.0)
            future = client.call_async(Trigger.Request())
            done = threading.Event()
            future.add_done_callback(lambda _, done=done: done.set())
            assert done.wait(timeout=10.0), service
            response = future.result()
            assert response.success is success and text in response.message, response
    finally:
        executor.shutdown(timeout_sec=1.0)
        client_node.destroy_node()


def test_missing_map_is_a_start_up_error(context, tmp_path):
    with pytest.raises(MapError, match='does not exist'):
        make_node(context, **{'node.map_path': str(tmp_path / 'missing.npz')})


def test_integer_for_a_float_parameter_is_a_clear_start_up_error(context):
    with pytest.raises(ConfigError, match='node.max_distance must be of type float'):
        make_node(context, **{'node.mode': 'slam', 'node.max_distance': 1})


def sample_step() -> StepResult:
    # ints and float32 where the messages hold doubles: the factory must convert them
    cands = (Candidate(12, 3_500_000_000, 0.25, 3.0, Pose(1, 2, 0, 0.5)),
             Candidate(40, 7_000_000_001, np.float32(0.5), 1.0,
                       Pose(np.float32(3.0), np.float32(4.0))))
    hyp = PlaceHypothesis(7, 10_250_000_000, cands)
    closure = LoopClosure(7, 10_250_000_000, 40, 7_000_000_001, 0.5, 1.0, 4)
    return StepResult(10_250_000_000, True, hyp, (closure,))


def test_rclpy_messages_serialize_like_the_replay_bags():
    """The live node's messages have the same CDR bytes as the rosbags-built replay output."""
    store = get_typestore(Stores.ROS2_JAZZY)
    live = outputs.step_messages(rclpy_factory(), sample_step(), 'map', query_pose=Pose(0, 0))
    bag = outputs.step_messages(outputs.rosbags_factory(store), sample_step(), 'map',
                                query_pose=Pose(0, 0))
    assert [o.topic for o in live] == [o.topic for o in bag]
    assert '~/markers' in [o.topic for o in live]
    for mine, theirs in zip(live, bag):
        assert serialize_message(mine.msg) == store.serialize_cdr(theirs.msg, theirs.typename), \
            mine.topic
    # rclpy's C conversion reads a field of the wrong Python type as garbage, silently (Jazzy
    # no longer checks field types): the factory must have stored exactly float here
    line = live[-1].msg.markers[-1]
    assert all(type(v) is float for p in line.points for v in (p.x, p.y, p.z))
    markers = deserialize_message(serialize_message(live[-1].msg), type(live[-1].msg))
    assert [(p.x, p.y) for p in markers.markers[-1].points] == [(0.0, 0.0), (3.0, 4.0)]


@pytest.mark.parametrize('dropped, level', [(0, b'\x00'), (1, b'\x01')])
def test_diagnostics_level_is_a_byte(dropped, level):
    diag = Diagnostics(frames_received=3, keyframes=3, frames_dropped_queue=dropped)
    msg = outputs.diagnostics(rclpy_factory(), diag, 1_000, 'vpr_seq_ros', 2.0)
    assert msg.status[0].level == level  # an int here would go out as a garbage byte
    back = deserialize_message(serialize_message(msg), type(msg))
    assert back.status[0].level == level  # OK, or WARN when a frame was dropped
    values = {kv.key: kv.value for kv in back.status[0].values}
    assert values['frames_dropped_queue'] == str(dropped) and values['input_rate_hz'] == '2'


def test_localization_starts_from_the_maps_configuration(context, tmp_path):
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import build_map

    rng = np.random.default_rng(0)
    np.save(tmp_path / 'ref.npy', rng.normal(size=(30, 8)).astype(np.float32))
    cfg = load_config(overrides={'encoder.name': 'npy', 'sequence.length': 7,
                                 'matching.distance': 'sad'})
    map_path = build_map(tmp_path / 'ref.npy', cfg, tmp_path / 'map.npz')
    node = make_node(context, **{'node.map_path': str(map_path), 'matching.top_k': 4})
    try:
        assert node.cfg.encoder.name == 'npy'          # from the map
        assert node.cfg.sequence.length == 7           # from the map
        assert node.cfg.matching.distance == 'sad'     # from the map
        assert node.cfg.matching.top_k == 4            # the parameter wins
        assert node.core.diagnostics.map_size == 30
    finally:
        node.destroy_node()


def test_shared_counters_are_consistent_under_concurrency(slam_node, monkeypatch):
    """Image callbacks from several threads and the diagnostics timer: no count is lost."""
    reported: list[float] = []

    def record(publisher, msg):
        if publisher is slam_node.diag_pub:
            values = {kv.key: kv.value for kv in msg.status[0].values}
            reported.append(float(values['input_rate_hz']))

    monkeypatch.setattr(slam_node, '_publish', record)
    slam_node.stop.set()  # the worker leaves the queue alone: only the counters are tested
    slam_node.worker.join(timeout=5.0)
    calls, threads = 2000, 4
    image = object()

    def callbacks():
        for _ in range(calls):
            slam_node._on_image(image)

    workers = [threading.Thread(target=callbacks) for _ in range(threads)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        slam_node._publish_diagnostics()
    slam_node._publish_diagnostics()
    assert sum(reported) == calls * threads
    depth = slam_node.cfg.node.queue_depth
    assert slam_node.core.diagnostics.frames_dropped_queue == calls * threads - depth
