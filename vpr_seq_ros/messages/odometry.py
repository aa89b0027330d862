"""``nav_msgs/Odometry`` (or any pose message) to the core's :class:`~vpr_seq_ros.types.Pose`.

ROS-free: takes any object with ``pose.pose.position`` and ``pose.pose.orientation`` (rclpy
messages, rosbags dataclasses). A sample the core must not see (a NaN or infinite value, a
position beyond :data:`MAX_ABS_POSITION_M`, a zero quaternion) raises
:class:`~vpr_seq_ros.errors.DecodeError`; the node drops and counts it. A finite jump (an
odometry reset) is a valid sample: the path length grows by the jump.
"""

from __future__ import annotations

import math
from typing import Any

from vpr_seq_ros.conversions import yaw_from_quaternion
from vpr_seq_ros.errors import DecodeError
from vpr_seq_ros.types import Pose

MAX_ABS_POSITION_M = 1e9
"""Largest accepted coordinate (a million km): beyond it a sample is garbage, and path lengths
of such values would overflow to infinity."""


def pose_from_odometry(msg: Any) -> Pose:
    """The 2-D pose (x, y, z, yaw about z) of an Odometry message.

    Raises:
        DecodeError: a non-finite or out-of-range value, or a zero quaternion.
    """
    p = msg.pose.pose.position
    q = msg.pose.pose.orientation
    try:
        xyz = (float(p.x), float(p.y), float(p.z))
        quat = (float(q.x), float(q.y), float(q.z), float(q.w))
    except (TypeError, ValueError, OverflowError) as err:
        raise DecodeError(f'odometry with a non-numeric pose: {err}') from err
    if not all(math.isfinite(v) for v in xyz + quat):
        raise DecodeError(f'odometry with a non-finite pose {xyz} {quat}: check the odometry '
                          'source; the sample is ignored')
    if max(abs(v) for v in xyz) > MAX_ABS_POSITION_M:
        raise DecodeError(f'odometry position {xyz} is beyond {MAX_ABS_POSITION_M:g} m: the '
                          'sample is ignored')
    scale = max(abs(v) for v in quat)
    if scale == 0.0:
        raise DecodeError('odometry with a zero quaternion (no orientation): the sample is '
                          'ignored')
    # scaled to at most 1 first: squares of very large or very small components would
    # overflow to inf - inf (NaN) or underflow to atan2(0, 0)
    return Pose(*xyz, yaw_from_quaternion(*(v / scale for v in quat)))


__all__ = ['MAX_ABS_POSITION_M', 'pose_from_odometry']
