"""One conversion per concept, shared by the live node, the bag sources and replay.

* **Stamp.** A header stamp is ``sec * 1e9 + nanosec`` integer nanoseconds (ROS 1's ``nsec``
  too). A zero stamp means the driver never set it; then the receive time is used: the bag's
  receive time offline, the node's clock (which follows ``/clock`` under ``use_sim_time``) live.
* **Yaw.** The rotation about z of a quaternion, normalised or not (some drivers publish
  quaternions that are not unit length).
* **Keyframe gating by distance.** A frame is a keyframe once the *accumulated 3-D path length*
  since the previous keyframe reaches the spacing: live from odometry samples, offline from the
  poses interpolated at the image stamps. Non-finite positions are ignored, never added.
"""

from __future__ import annotations

import math
from typing import Any

NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp: Any, receive_ns: int | None = None) -> int:
    """Integer nanoseconds of a ``builtin_interfaces/Time`` (or ROS 1 ``time``).

    Args:
        stamp: an object with ``sec`` and ``nanosec`` (ROS 2) or ``nsec`` (ROS 1).
        receive_ns: the receive time, used when the stamp is zero (never set).

    Returns:
        The stamp in ns; ``receive_ns`` for a zero stamp when it is given.
    """
    sec = int(stamp.sec)
    nsec = int(getattr(stamp, 'nanosec', getattr(stamp, 'nsec', 0)))
    value = sec * NS_PER_S + nsec
    if value == 0 and receive_ns is not None:
        return int(receive_ns)
    return value


def yaw_from_quaternion(x: float, y: float, z: float, w: float) -> float:
    """Rotation about z (radians, in (-pi, pi]) of a quaternion; need not be normalised."""
    return math.atan2(2.0 * (w * z + x * y), w * w + x * x - y * y - z * z)


class PathLength:
    """Accumulated 3-D path length of a stream of positions, for keyframe gating.

    ``update`` adds the straight-line step from the previous finite position; ``since_mark``
    is the path travelled since the last :meth:`mark` (the last keyframe).
    """

    def __init__(self) -> None:
        self.total_m = 0.0
        self._last: tuple[float, float, float] | None = None
        self._marked_m = 0.0

    def update(self, x: float, y: float, z: float) -> float:
        """Add a position; returns the total path length in metres."""
        point = (float(x), float(y), float(z))
        if not all(math.isfinite(v) for v in point):
            return self.total_m
        if self._last is not None:
            self.total_m += math.dist(point, self._last)
        self._last = point
        return self.total_m

    @property
    def has_position(self) -> bool:
        """Whether a finite position has been seen."""
        return self._last is not None

    def since_mark(self) -> float:
        """Metres travelled since the last :meth:`mark`."""
        return self.total_m - self._marked_m

    def mark(self) -> None:
        """Remember the current path length (a keyframe was taken)."""
        self._marked_m = self.total_m

    def restart(self) -> None:
        """Forget the previous position (a new segment): the next step is not added."""
        self._last = None
        self._marked_m = self.total_m


__all__ = ['NS_PER_S', 'PathLength', 'stamp_to_ns', 'yaw_from_quaternion']
