"""RTAB-Map adapter, ROS-free part: verified loop closures as ``rtabmap_msgs/Link`` values.

RTAB-Map accepts an external constraint through its ``add_link`` service
(``rtabmap_msgs/srv/AddLink``, request field ``link`` of type ``rtabmap_msgs/Link``:
``from_id``, ``to_id``, ``type``, ``geometry_msgs/Transform transform``, ``float64[36]
information``). It needs RTAB-Map's own node ids; this module maps the stamps of a closure's two
keyframes to those ids from what RTAB-Map publishes on ``mapData`` (``rtabmap_msgs/MapData``:
``nodes[]``, each with ``int32 id`` and ``float64 stamp`` in seconds, the stamp of the node's
sensor data; the ``graph`` part carries ids and poses but no stamps). The rclpy part that
subscribes and calls the service is :mod:`vpr_seq_ros.ros.rtabmap`.

Conventions, as RTAB-Map's own loop closures (``Rtabmap.cpp``: ``Link(new id, loop id,
kGlobalClosure, transform, covariance.inv())``):

* ``from_id`` is the node of the query (newer) keyframe, ``to_id`` the matched (older) one;
* ``transform`` is the pose of the matched node in the query node's base frame,
  ``T_from_to = T_base_cam inv(T_match_query) inv(T_base_cam)``, where ``T_match_query`` is the
  verified pose (:class:`vpr_seq_ros.verification.geometry.Verification`: ``X_match = R X_query
  + t``, camera optical axes) and ``T_base_cam`` is ``node.rtabmap.camera_in_base``;
* ``information`` is the inverse of the link's 6x6 covariance of ``(x, y, z, roll, pitch,
  yaw)`` perturbations, row-major. The verification's covariance (small rotations applied on
  the left, ``R = exp([d]x) R_hat``, ``t = t_hat + d_t``, in the match camera) is carried to
  the link's tangent space (right perturbation, ``T = T_hat Exp(d)``, the error g2o's and
  GTSAM's between-factors use) by a first-order Jacobian; a covariance that is not finite and
  positive definite is never inverted (the closure is skipped and counted).

Without depth the verified translation is a unit direction, not metres; such closures are only
sent with ``node.rtabmap.metric_only`` false (their variance along the direction is then the
verification's "unknown", about 1e4 m^2).
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from vpr_seq_ros.runtime.rtabmap_config import LINK_TYPES, OPTICAL_IN_BASE, RtabmapConfig

log = logging.getLogger(__name__)

MAX_CONDITION = 1e12
"""Covariances with a larger condition number count as singular (not inverted)."""


@dataclass(frozen=True)
class LinkValues:
    """An ``rtabmap_msgs/Link`` as plain values.

    Attributes:
        from_id: RTAB-Map node of the query keyframe.
        to_id: RTAB-Map node of the matched keyframe.
        type: ``rtabmap::Link::Type`` (see :data:`LINK_TYPES`).
        translation: ``(x, y, z)`` metres (a unit direction when not ``metric``).
        rotation: ``(qx, qy, qz, qw)`` unit quaternion.
        information: 36 floats, the row-major 6x6 information matrix.
        metric: the translation is in metres.
        query_stamp_ns: the query keyframe's stamp (for logs).
        match_stamp_ns: the matched keyframe's stamp.
    """

    from_id: int
    to_id: int
    type: int
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    information: tuple[float, ...]
    metric: bool
    query_stamp_ns: int
    match_stamp_ns: int


# ------------------------------------------------------------------------------ SE(3) pieces


def _hat(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def so3_exp(w: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation of a rotation vector ``(3,)`` (radians), Rodrigues' formula."""
    w = np.asarray(w, np.float64)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3) + _hat(w)
    k = _hat(w / angle)
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def so3_log(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector ``(3,)`` (radians) of a ``(3, 3)`` rotation (angles below pi)."""
    r = np.asarray(rotation, np.float64)
    cos = float(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))
    angle = math.acos(cos)
    vee = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if angle < 1e-8:
        return vee / 2
    return vee * angle / (2 * math.sin(angle))


def quaternion_to_rotation(q: Sequence[float]) -> np.ndarray:
    """``(3, 3)`` rotation of a quaternion ``(qx, qy, qz, qw)`` (normalised first)."""
    x, y, z, w = (float(v) for v in q)
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_to_quaternion(rotation: np.ndarray) -> tuple[float, float, float, float]:
    """``(qx, qy, qz, qw)`` of a ``(3, 3)`` rotation, ``qw >= 0``."""
    w = so3_log(rotation)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return 0.0, 0.0, 0.0, 1.0
    s = math.sin(angle / 2) / angle
    return float(w[0] * s), float(w[1] * s), float(w[2] * s), math.cos(angle / 2)


def _matrix(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = np.asarray(translation, np.float64).ravel()[:3]
    return out


def link_transform(rotation: np.ndarray, translation: np.ndarray,
                   camera_in_base: Sequence[float] = OPTICAL_IN_BASE) -> np.ndarray:
    """``(4, 4)`` link transform (matched node in the query node's base frame).

    Args:
        rotation: ``(3, 3)`` R of the verified ``X_match = R X_query + t`` (camera axes).
        translation: ``(3,)`` t (metres, or a unit direction).
        camera_in_base: ``[x, y, z, qx, qy, qz, qw]`` of the camera in the base frame.
    """
    base_cam = _matrix(quaternion_to_rotation(camera_in_base[3:7]), np.array(camera_in_base[:3]))
    match_query = _matrix(np.asarray(rotation, np.float64), translation)
    return base_cam @ np.linalg.inv(match_query) @ np.linalg.inv(base_cam)


def link_covariance(rotation: np.ndarray, translation: np.ndarray, covariance: np.ndarray,
                    camera_in_base: Sequence[float] = OPTICAL_IN_BASE,
                    step: float = 1e-6) -> np.ndarray:
    """The verification's covariance carried to the link's tangent space (first order).

    Args:
        rotation: ``(3, 3)`` verified R (see :func:`link_transform`).
        translation: ``(3,)`` verified t.
        covariance: ``(6, 6)`` covariance of ``[x, y, z, rot_x, rot_y, rot_z]`` in the
            verification's convention (left rotation perturbation, additive translation).
        camera_in_base: the camera's pose in the base frame.
        step: central-difference step of the Jacobian (metres / radians).

    Returns:
        ``(6, 6)`` covariance of the link's right perturbation ``T = T_hat Exp([d_t, d_rot])``
        with ``t = t_hat + R_hat d_t`` and ``R = R_hat exp([d_rot]x)``: errors of ``(x, y,
        z, roll, pitch, yaw)`` expressed in the matched (``to``) node's base frame.
    """
    rotation = np.asarray(rotation, np.float64)
    translation = np.asarray(translation, np.float64).ravel()[:3]
    nominal = link_transform(rotation, translation, camera_in_base)
    inv_r = nominal[:3, :3].T
    jac = np.zeros((6, 6))
    for k in range(6):
        outs = []
        for sign in (1.0, -1.0):
            d = np.zeros(6)
            d[k] = sign * step
            moved = link_transform(so3_exp(d[3:]) @ rotation, translation + d[:3],
                                   camera_in_base)
            outs.append(np.concatenate([inv_r @ (moved[:3, 3] - nominal[:3, 3]),
                                        so3_log(inv_r @ moved[:3, :3])]))
        jac[:, k] = (outs[0] - outs[1]) / (2 * step)
    out = jac @ np.asarray(covariance, np.float64).reshape(6, 6) @ jac.T
    return (out + out.T) / 2


def information_from_covariance(covariance: np.ndarray) -> np.ndarray | None:
    """``(6, 6)`` information matrix (inverse covariance), or None for a covariance that is
    not finite, not positive definite or worse conditioned than :data:`MAX_CONDITION`."""
    cov = np.asarray(covariance, np.float64)
    if cov.shape != (6, 6) or not np.all(np.isfinite(cov)):
        return None
    cov = (cov + cov.T) / 2
    eig = np.linalg.eigvalsh(cov)
    if eig[0] <= 0 or eig[-1] > MAX_CONDITION * eig[0]:
        return None
    info = np.linalg.inv(cov)
    return (info + info.T) / 2


# ------------------------------------------------------------------------------ node ids


class NodeStampTable:
    """RTAB-Map node ids by stamp, bounded: the oldest ids go beyond ``max_nodes``.

    Args:
        max_nodes: ids kept.
    """

    def __init__(self, max_nodes: int) -> None:
        self.max_nodes = max_nodes
        self._stamps: list[int] = []  # sorted stamps (ns)
        self._ids: list[int] = []     # the id of each stamp
        self._by_id: dict[int, int] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def newest_stamp_ns(self) -> int | None:
        """The latest node stamp, or None while empty."""
        return self._stamps[-1] if self._stamps else None

    def add(self, node_id: int, stamp_s: float) -> bool:
        """Record a node (a repeated id keeps its first stamp); False for an invalid one
        (id <= 0 or a stamp that is not finite and positive)."""
        if node_id <= 0 or not math.isfinite(stamp_s) or stamp_s <= 0:
            return False
        if node_id in self._by_id:
            return True
        stamp_ns = int(round(stamp_s * 1e9))
        at = bisect.bisect_right(self._stamps, stamp_ns)
        self._stamps.insert(at, stamp_ns)
        self._ids.insert(at, node_id)
        self._by_id[node_id] = stamp_ns
        if len(self._by_id) > self.max_nodes:
            self._remove(min(self._by_id))
            self.evicted += 1
        return True

    def _remove(self, node_id: int) -> None:
        stamp_ns = self._by_id.pop(node_id)
        at = bisect.bisect_left(self._stamps, stamp_ns)
        while self._ids[at] != node_id:
            at += 1
        del self._stamps[at]
        del self._ids[at]

    def lookup(self, stamp_ns: int, tolerance_ns: int) -> int | None:
        """The id of the node nearest in time to ``stamp_ns`` within ``tolerance_ns``."""
        at = bisect.bisect_left(self._stamps, stamp_ns)
        best, best_gap = None, tolerance_ns
        for i in (at - 1, at):
            if 0 <= i < len(self._stamps):
                gap = abs(self._stamps[i] - stamp_ns)
                if gap <= best_gap:
                    best, best_gap = self._ids[i], gap
        return best


# ------------------------------------------------------------------------------ the adapter


SKIP_REASONS = ('no_pose', 'not_metric', 'bad_covariance', 'no_node', 'pending_dropped')
"""Why a verified closure was not sent: no relative pose, a unit-direction translation with
``metric_only``, a covariance that cannot be inverted, a keyframe stamp with no RTAB-Map node
(none within the tolerance and RTAB-Map already past it, or both stamps nearest one node), or
the pending queue was full."""


@dataclass
class _Pending:
    closure: Any
    transform: np.ndarray
    information: np.ndarray
    metric: bool


class RtabmapLinker:
    """Turns verified loop closures into RTAB-Map links once both stamps have a node.

    Not thread-safe: the ROS shell calls it under one lock. ``counts`` holds ``built`` (links
    ready to send), ``pending`` (closures waiting now) and one count per
    :data:`SKIP_REASONS`.

    Args:
        cfg: ``node.rtabmap``.
    """

    def __init__(self, cfg: RtabmapConfig) -> None:
        self.cfg = cfg
        self.table = NodeStampTable(cfg.max_nodes)
        self.tolerance_ns = int(round(cfg.stamp_tolerance_s * 1e9))
        self.pending: deque[_Pending] = deque()
        self.counts = {'built': 0, 'pending': 0, **{r: 0 for r in SKIP_REASONS}}

    def add_nodes(self, nodes: Iterable[tuple[int, float]]) -> list[LinkValues]:
        """Record ``(id, stamp_s)`` of RTAB-Map nodes (a ``mapData`` message's ``nodes``);
        returns the pending closures that can now be sent."""
        for node_id, stamp_s in nodes:
            self.table.add(int(node_id), float(stamp_s))
        waiting, self.pending = self.pending, deque()
        out = [link for p in waiting if (link := self._resolve(p)) is not None]
        self.counts['pending'] = len(self.pending)
        return out

    def add_closures(self, closures: Iterable[Any]) -> list[LinkValues]:
        """Verified loop closures (:class:`vpr_seq_ros.runtime.outputs.LoopClosure`); returns
        those whose two stamps already have nodes, keeps the rest pending or counts them."""
        out = []
        for closure in closures:
            prepared = self._prepare(closure)
            if prepared is not None and (link := self._resolve(prepared)) is not None:
                out.append(link)
        self.counts['pending'] = len(self.pending)
        return out

    def _skip(self, reason: str, closure: Any) -> None:
        self.counts[reason] += 1
        log.info('loop closure %.3f s -> %.3f s not sent to RTAB-Map: %s',
                 closure.query_stamp_ns * 1e-9, closure.match_stamp_ns * 1e-9, reason)

    def _prepare(self, closure: Any) -> _Pending | None:
        v = closure.verification
        if v is None or v.rotation is None or v.translation is None or v.covariance is None:
            self._skip('no_pose', closure)
            return None
        if self.cfg.metric_only and not v.metric:
            self._skip('not_metric', closure)
            return None
        transform = link_transform(v.rotation, v.translation, self.cfg.camera_in_base)
        info = information_from_covariance(link_covariance(
            v.rotation, v.translation, v.covariance, self.cfg.camera_in_base))
        if info is None:
            self._skip('bad_covariance', closure)
            return None
        return _Pending(closure, transform, info, bool(v.metric))

    def _resolve(self, p: _Pending) -> LinkValues | None:
        c = p.closure
        to_id = self.table.lookup(c.match_stamp_ns, self.tolerance_ns)
        from_id = self.table.lookup(c.query_stamp_ns, self.tolerance_ns)
        if to_id is not None and from_id is not None and from_id != to_id:
            self.counts['built'] += 1
            t = p.transform
            return LinkValues(from_id=from_id, to_id=to_id, type=LINK_TYPES[self.cfg.link_type],
                              translation=tuple(float(x) for x in t[:3, 3]),
                              rotation=rotation_to_quaternion(t[:3, :3]),
                              information=tuple(float(x) for x in p.information.ravel()),
                              metric=p.metric, query_stamp_ns=c.query_stamp_ns,
                              match_stamp_ns=c.match_stamp_ns)
        newest = self.table.newest_stamp_ns
        # RTAB-Map's nodes come in stamp order: once it is past the query, no node will come
        past = newest is not None and newest > c.query_stamp_ns + self.tolerance_ns
        if to_id is None or from_id == to_id or past:
            self._skip('no_node', c)
            return None
        self.pending.append(p)
        while len(self.pending) > self.cfg.max_pending:
            self._skip('pending_dropped', self.pending.popleft().closure)
        return None


__all__ = ['LINK_TYPES', 'LinkValues', 'NodeStampTable', 'OPTICAL_IN_BASE', 'RtabmapConfig',
           'RtabmapLinker', 'SKIP_REASONS', 'information_from_covariance', 'link_covariance',
           'link_transform', 'quaternion_to_rotation', 'rotation_to_quaternion', 'so3_exp',
           'so3_log']
