"""Output messages: built with rosbags' real message classes and round-tripped through CDR."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rosbags.typesys import Stores, get_typestore

from vpr_seq_ros.messages.outputs import (LOOP_COLUMNS, OUTPUT_TYPES, PLACE_COLUMNS,
                                          diagnostics, rosbags_factory, step_messages)
from vpr_seq_ros.runtime.outputs import (Candidate, Diagnostics, LoopClosure, PlaceHypothesis,
                                         StepResult)
from vpr_seq_ros.types import Pose


@pytest.fixture(params=[Stores.ROS2_HUMBLE, Stores.ROS2_JAZZY], ids=['humble', 'jazzy'])
def store(request):
    return get_typestore(request.param)


def sample_step() -> StepResult:
    cands = (Candidate(12, 3_500_000_000, 0.25, 3.0, Pose(1.0, 2.0, 0.0, 0.5)),
             Candidate(40, 7_000_000_001, 0.5, 1.0, None))
    hyp = PlaceHypothesis(7, 10_250_000_000, cands)
    closure = LoopClosure(7, 10_250_000_000, 12, 3_500_000_000, 0.25, 3.0, 4)
    return StepResult(10_250_000_000, True, hyp, (closure,))


def roundtrip(store, msg, typename):
    return store.deserialize_cdr(store.serialize_cdr(msg, typename), typename)


def test_step_messages_round_trip_through_cdr(store):
    make = rosbags_factory(store)
    out = step_messages(make, sample_step(), 'map', query_pose=Pose(0.0, 0.0))
    topics = [o.topic for o in out]
    assert topics == ['~/matched_pose', '~/place_matches', '~/loop_closure', '~/loop_closures',
                      '~/markers']
    msgs = {o.topic: roundtrip(store, o.msg, o.typename) for o in out}
    for o in out:
        assert o.typename == OUTPUT_TYPES[o.topic]
    pose = msgs['~/matched_pose']
    assert pose.header.stamp.sec == 10 and pose.header.stamp.nanosec == 250_000_000
    assert pose.header.frame_id == 'map'
    assert pose.pose.pose.position.x == 1.0 and pose.pose.pose.position.y == 2.0
    assert math.isclose(2 * math.atan2(pose.pose.pose.orientation.z,
                                       pose.pose.pose.orientation.w), 0.5)
    cov = pose.pose.covariance.reshape(6, 6)
    assert cov[0, 0] == pytest.approx(4.0)  # confident: 2 m standard deviation
    matches = msgs['~/place_matches']
    assert matches.layout.dim[1].label == ','.join(PLACE_COLUMNS)
    table = matches.data.reshape(matches.layout.dim[0].size, len(PLACE_COLUMNS))
    assert table[0, 0] == 12 and table[0, 1] == pytest.approx(3.5) and table[1, 0] == 40
    status = PLACE_COLUMNS.index('status')
    assert np.isnan(table[1, 4:status]).all()  # no pose, no calibration
    assert (table[:, status] == -1).all() and np.isnan(table[:, status + 1]).all()  # unverified
    np.testing.assert_allclose(msgs['~/loop_closure'].data, [10.25, 3.5])
    rich = msgs['~/loop_closures']
    assert rich.layout.dim[1].label == ','.join(LOOP_COLUMNS)
    assert rich.data[2] == 12
    kinds = [m.type for m in msgs['~/markers'].markers]
    assert kinds == [2, 9, 5]


def test_low_confidence_widens_covariance_and_threshold_suppresses(store):
    make = rosbags_factory(store)
    weak = PlaceHypothesis(1, 5, (Candidate(3, 1, 0.9, 0.1, Pose(0, 0)),))
    out = step_messages(make, StepResult(5, True, weak), 'map')
    cov = out[0].msg.pose.covariance
    assert cov[0] == pytest.approx((2.0 * 20) ** 2)
    out = step_messages(make, StepResult(5, True, weak), 'map', max_distance=0.5)
    assert [o.topic for o in out] == ['~/place_matches', '~/markers']


def test_diagnostics_message(store):
    make = rosbags_factory(store)
    diag = Diagnostics(frames_received=10, keyframes=8, frames_dropped_queue=2, map_size=100)
    msg = roundtrip(store, diagnostics(make, diag, 1_000, 'vpr_seq_ros', 9.5),
                    'diagnostic_msgs/msg/DiagnosticArray')
    status = msg.status[0]
    assert status.level == 1 and '2 frames dropped' in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values['keyframes'] == '8' and values['input_rate_hz'] == '9.5'


def test_factory_rejects_unknown_fields(store):
    with pytest.raises(TypeError, match='colour'):
        rosbags_factory(store)('std_msgs/msg/ColorRGBA', colour=1.0)
