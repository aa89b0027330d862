"""The node's callback path without ROS: image and odometry messages into a :class:`NodeCore`.

:class:`Intake` is what the rclpy node calls for every message (and what the fuzz tests drive
with rosbags' message classes): it decodes, stamps and hands the result to the core, under the
node's lock. A message that cannot be used is dropped and counted in the core's diagnostics,
never raised:

* an image that does not decode: ``frames_dropped_malformed`` (only frames the keyframe gate
  takes are decoded; the others are counted in ``frames_skipped_gating`` undecoded);
* an image the core refuses (a :class:`~vpr_seq_ros.errors.VprSeqError`):
  ``frames_dropped_malformed``;
* an image on which the core fails otherwise (a bug; logged with its traceback):
  ``extra['frames_failed']``;
* odometry with a NaN, infinite or out-of-range pose: ``extra['odometry_dropped_malformed']``.

Stamps: a zero header stamp is replaced by the receive time (``clock_ns()``); a stamp going
backwards resets the core's sequence buffer (the core's rule).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from vpr_seq_ros.conversions import stamp_to_ns
from vpr_seq_ros.errors import DecodeError, VprSeqError
from vpr_seq_ros.messages.images import decode_any
from vpr_seq_ros.messages.odometry import pose_from_odometry
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.outputs import StepResult
from vpr_seq_ros.types import Frame, Pose

log = logging.getLogger(__name__)

ODOMETRY_DROPPED = 'odometry_dropped_malformed'
"""Diagnostics key: odometry samples ignored (NaN, infinite or out-of-range pose)."""
FRAMES_FAILED = 'frames_failed'
"""Diagnostics key: frames the core failed on unexpectedly (logged with the traceback)."""
LOG_EVERY_S = 5.0
"""At most one log line per kind of drop in this many seconds (a flood of bad frames)."""


class Intake:
    """Messages in, core steps out; bad messages dropped and counted.

    Args:
        core: the node core.
        clock_ns: the receive time in ns (the node's clock), used for zero stamps.
        lock: held while the core and its counters change (shared with the node's timer and
            services); a private one when None.
    """

    def __init__(self, core: NodeCore, clock_ns: Callable[[], int],
                 lock: threading.Lock | None = None) -> None:
        self.core = core
        self.clock_ns = clock_ns
        self.lock = lock if lock is not None else threading.Lock()
        self.last_pose: Pose | None = None
        self._index = 0
        self._logged: dict[str, float] = {}
        with self.lock:
            for key in (ODOMETRY_DROPPED, FRAMES_FAILED):
                core.diagnostics.extra.setdefault(key, 0)

    def _count(self, key: str, text: str, *args: Any, exc_info: bool = False) -> None:
        """Count a drop; log it unless the same kind was logged in the last LOG_EVERY_S."""
        with self.lock:
            diag = self.core.diagnostics
            if key == 'frames_dropped_malformed':
                diag.frames_dropped_malformed += 1
                total = diag.frames_dropped_malformed
            else:
                total = diag.extra[key] = diag.extra.get(key, 0) + 1
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.warning(text + ' (%s: %d so far)', *args, key, total, exc_info=exc_info)

    def image(self, msg: Any) -> StepResult | None:
        """One ``Image`` or ``CompressedImage``; the core's step, or None when dropped."""
        index = self._index
        self._index += 1
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp, self.clock_ns())
        except (AttributeError, TypeError, ValueError, OverflowError) as err:  # no header
            self._count('frames_dropped_malformed',
                        'dropped an image without a usable header stamp: %s', err)
            return None
        with self.lock:
            if not self.core.takes_frame(stamp_ns):  # skipped by the keyframe gate: no decode
                return self.core.on_frame(Frame(index=index, stamp_ns=stamp_ns))
        try:
            rgb = decode_any(msg)
        except DecodeError as err:
            self._count('frames_dropped_malformed', 'dropped a malformed image: %s', err)
            return None
        try:
            with self.lock:
                return self.core.on_frame(Frame(index=index, stamp_ns=stamp_ns, image=rgb))
        except VprSeqError as err:
            self._count('frames_dropped_malformed', 'frame skipped: %s', err)
        except Exception:  # noqa: BLE001 - one frame must never stop the node
            self._count(FRAMES_FAILED, 'frame %d failed', index, exc_info=True)
        return None

    def odometry(self, msg: Any) -> Pose | None:
        """One ``Odometry``; its pose, or None when dropped."""
        try:
            pose = pose_from_odometry(msg)
            stamp_ns = stamp_to_ns(msg.header.stamp, self.clock_ns())
        except DecodeError as err:
            self._count(ODOMETRY_DROPPED, '%s', err)
            return None
        except (AttributeError, TypeError, ValueError, OverflowError) as err:
            self._count(ODOMETRY_DROPPED,
                        'dropped an odometry message without a usable header: %s', err)
            return None
        with self.lock:
            self.last_pose = pose
            self.core.on_odometry(stamp_ns, pose)
        return pose


__all__ = ['FRAMES_FAILED', 'ODOMETRY_DROPPED', 'Intake']
