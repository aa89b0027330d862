"""Configuration of the RTAB-Map adapter (``node.rtabmap`` in the main schema).

Kept apart from :mod:`vpr_seq_ros.runtime.rtabmap` so that the schema imports no numpy; field
types are the plain ones the schema's loader coerces.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vpr_seq_ros.checks import check_bound, check_choice
from vpr_seq_ros.errors import ConfigError

LINK_TYPES = {'global_closure': 1, 'user_closure': 4}
"""``rtabmap::Link::Type`` values (``kGlobalClosure`` = 1, ``kUserClosure`` = 4)."""

OPTICAL_IN_BASE = (0.0, 0.0, 0.0, -0.5, 0.5, -0.5, 0.5)
"""A forward-looking camera's optical frame (z forward, x right, y down) at the base origin,
in a REP-103 base frame (x forward, y left, z up): ``x, y, z, qx, qy, qz, qw``."""

_SECTION = 'node.rtabmap'


@dataclass(frozen=True)
class RtabmapConfig:
    """RTAB-Map adapter (slam mode): verified loop closures sent to RTAB-Map as links.

    Needs the ``rtabmap_msgs`` package (from RTAB-Map's ROS 2 packages) and
    ``node.verification.enabled``; off by default.

    Attributes:
        enabled: call RTAB-Map's ``add_link`` service for each verified loop closure.
        add_link_service: the ``rtabmap_msgs/srv/AddLink`` service.
        map_data_topic: the ``rtabmap_msgs/MapData`` topic whose nodes give the stamp -> node
            id table.
        stamp_tolerance_s: a keyframe stamp matches the RTAB-Map node nearest in time within
            this many seconds (the motion in that time is not compensated).
        max_nodes: node stamps kept (the oldest ids are forgotten beyond it).
        max_pending: closures waiting for RTAB-Map to create the query's node (RTAB-Map runs
            at its own detection rate, so that node may come after the closure); the oldest
            are dropped beyond it.
        camera_in_base: pose of the camera's optical frame in RTAB-Map's base frame
            (``frame_id``): x, y, z (metres), qx, qy, qz, qw. The default is a forward camera
            at the base origin.
        metric_only: send only closures whose translation is metric (depth); without depth the
            translation is a unit direction.
        link_type: ``global_closure`` (RTAB-Map's loop closure type) or ``user_closure``.
    """

    enabled: bool = False
    add_link_service: str = '/rtabmap/add_link'
    map_data_topic: str = '/rtabmap/mapData'
    stamp_tolerance_s: float = 0.05
    max_nodes: int = 100_000
    max_pending: int = 32
    camera_in_base: tuple[float, ...] = OPTICAL_IN_BASE
    metric_only: bool = True
    link_type: str = 'global_closure'

    def __post_init__(self) -> None:
        check_choice(_SECTION, 'link_type', self.link_type, LINK_TYPES)
        for name, ok, bound in (('stamp_tolerance_s', self.stamp_tolerance_s >= 0, '>= 0'),
                                ('max_nodes', self.max_nodes >= 1, '>= 1'),
                                ('max_pending', self.max_pending >= 0, '>= 0')):
            check_bound(_SECTION, name, getattr(self, name), ok, bound)
        values = tuple(self.camera_in_base)
        norm = math.sqrt(sum(v * v for v in values[3:])) if len(values) == 7 else 0.0
        if len(values) != 7 or not all(math.isfinite(v) for v in values) or \
                abs(norm - 1.0) > 1e-3:
            raise ConfigError(f'{_SECTION}.camera_in_base = {list(values)!r} must be '
                              '[x, y, z, qx, qy, qz, qw] with a unit quaternion')
        if not self.add_link_service or not self.map_data_topic:
            raise ConfigError(f'{_SECTION}.add_link_service and {_SECTION}.map_data_topic '
                              'must be names')
