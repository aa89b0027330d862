"""One conversion per concept: stamps, yaw and path-length gating, as node and bags use them."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from vpr_seq_ros.conversions import PathLength, stamp_to_ns, yaw_from_quaternion


def test_stamp_ros2_ros1_and_zero_fallback():
    assert stamp_to_ns(SimpleNamespace(sec=3, nanosec=25)) == 3_000_000_025
    assert stamp_to_ns(SimpleNamespace(sec=3, nsec=7), receive_ns=99) == 3_000_000_007
    assert stamp_to_ns(SimpleNamespace(sec=0, nanosec=0), receive_ns=99) == 99
    assert stamp_to_ns(SimpleNamespace(sec=0, nanosec=0)) == 0


@pytest.mark.parametrize('scale', [1.0, 0.5, 3.0])
def test_yaw_of_unnormalised_quaternion(scale):
    yaw = 2.0
    q = [scale * v for v in (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))]
    assert yaw_from_quaternion(*q) == pytest.approx(yaw)


def test_path_length_accumulates_3d_and_ignores_non_finite():
    path = PathLength()
    for point in [(0, 0, 0), (3, 4, 0), (math.nan, 1, 1), (3, 4, 12), (math.inf, 0, 0)]:
        path.update(*point)
    assert path.total_m == pytest.approx(17.0)  # 5 + 12; NaN and inf samples skipped
    path.mark()
    path.update(3, 4, 13)
    assert path.since_mark() == pytest.approx(1.0)
    path.restart()
    path.update(100, 100, 100)  # no step across a restart
    assert path.since_mark() == 0.0 and path.total_m == pytest.approx(18.0)

