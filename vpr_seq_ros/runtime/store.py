"""Reference stores: what the node core matches against, behind one interface.

* :class:`FixedStore` (``localization``): a reference map, read-only; its arrays are the map's,
  nothing is copied.
* :class:`KeyframeStore` (``slam``): the robot's own keyframes, appended one at a time and
  stored once (the streaming matcher reads them from here, or keeps them in its own buffer on
  the store's behalf, never both).

Row i of a keyframe store is keyframe i since start-up: the store never drops or reorders a
row, so indices published in loop closures stay valid for the whole run and in the saved map.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np

from vpr_seq_ros.errors import MapError
from vpr_seq_ros.matching.methods.base import FrameRows, GrowingArray, Precomputed
from vpr_seq_ros.refmap import ReferenceMap
from vpr_seq_ros.types import EncodedRun, Pose

log = logging.getLogger(__name__)

KEYFRAME_METADATA_BYTES = 8 + 32 + 1 + 8 + 4 + 8
"""Bytes a keyframe store keeps per keyframe besides its descriptor: stamp (int64), pose
(4 x float64), has-pose flag (bool), segment (int64), session (int32), path length (float64)."""


def keyframe_bytes(dim: int) -> int:
    """Bytes per stored keyframe of dimension ``dim`` (float32 descriptor + metadata).

    The streaming matcher adds its own per-reference state: ``seqgem`` ``4 D + 5`` bytes
    (sequence descriptor, squared norm, valid flag); ``seqmatch`` and ``single`` about
    ``36 + 4 L`` (segment, squared norm, running sum, L distance columns, segment bounds).
    Buffers grow by doubling, so the memory allocated is at most twice what is used. Measured
    with tracemalloc over 8192 slam keyframes (D = 256, L = 10; the buffers had just doubled):
    2283 (``single``), 2307 (``seqmatch``) and 4230 (``seqgem``) bytes allocated per keyframe,
    against 1161, 1161 and 2114 used.
    """
    return 4 * dim + KEYFRAME_METADATA_BYTES


class ReferenceStore(ABC):
    """The reference set of the node core.

    Attributes:
        growing: whether keyframes are appended (slam) or the set is a fixed map.
    """

    growing: bool = False

    @abstractmethod
    def __len__(self) -> int:
        """Number of references N."""

    @property
    @abstractmethod
    def descriptors(self) -> np.ndarray:
        """``(N, D)`` float32 reference frame descriptors (a view)."""

    @property
    @abstractmethod
    def segments(self) -> np.ndarray:
        """``(N,)`` int64 segment ids."""

    @property
    @abstractmethod
    def stamps_ns(self) -> np.ndarray:
        """``(N,)`` int64 stamps in nanoseconds."""

    @property
    @abstractmethod
    def poses(self) -> np.ndarray | None:
        """``(N, 4)`` float64 ``[x, y, z, yaw]`` (NaN rows where unknown), or None."""

    @property
    def precomputed(self) -> Precomputed | None:
        """Map-side data stored with a fixed map (None for keyframes)."""
        return None

    def keep_frames_in(self, rows: FrameRows) -> None:
        """Keep the descriptors in ``rows`` from now on (growing stores only)."""
        raise MapError('the reference map is read-only in localization mode')


class FixedStore(ReferenceStore):
    """A reference map, read-only.

    Args:
        refmap: the map.
    """

    growing = False

    def __init__(self, refmap: ReferenceMap) -> None:
        self.refmap = refmap
        run = refmap.run
        self._descriptors = run.descriptors  # float16 maps stay float16 (memory-mapped)
        self._precomputed = None
        info = refmap.manifest.get('sequence_descriptors')
        if refmap.sequence_descriptors is not None and isinstance(info, dict):
            seq = refmap.sequence_descriptors
            self._precomputed = Precomputed(seq, None, dict(info))

    def __len__(self) -> int:
        return len(self._descriptors)

    @property
    def descriptors(self) -> np.ndarray:
        return self._descriptors

    @property
    def segments(self) -> np.ndarray:
        return self.refmap.run.segments

    @property
    def stamps_ns(self) -> np.ndarray:
        return self.refmap.run.stamps_ns

    @property
    def poses(self) -> np.ndarray | None:
        return self.refmap.run.poses

    @property
    def precomputed(self) -> Precomputed | None:
        return self._precomputed


class _OwnRows:
    """The store's own descriptor buffer (when the matcher does not hold the frames)."""

    def __init__(self, dim: int) -> None:
        self._data = GrowingArray((dim,), np.float32)

    @property
    def rows(self) -> np.ndarray:
        return self._data.view

    def append_row(self, descriptor: np.ndarray, segment: int) -> None:
        self._data.append(descriptor)


class KeyframeStore(ReferenceStore):
    """slam mode's keyframes, appended in order, each stored once.

    Per keyframe it keeps :func:`keyframe_bytes` bytes (``4 D + 61``): the descriptor, stamp,
    pose, segment, *session* and accumulated path length. A session is the stretch of data
    between two backwards jumps of time (a restarted bag): the core hides recent keyframes by
    time only within the current session.

    **Bound.** With ``max_keyframes > 0`` the store stops growing once it holds that many:
    later keyframes are still matched against the stored ones (localization against the map
    built so far) but not added; :meth:`append` returns False, a warning is logged once, and the
    core counts them in ``Diagnostics.keyframes_not_stored``. Memory then stays flat, every
    published index keeps meaning the same keyframe, and the start of the map -- where a
    return-to-home loop closes -- is never forgotten. (Dropping the oldest keyframes instead
    would renumber or invalidate indices a SLAM back end already holds.)

    Args:
        dim: descriptor dimension D.
        max_keyframes: bound on stored keyframes (0: unbounded).
    """

    growing = True

    def __init__(self, dim: int, max_keyframes: int = 0) -> None:
        self.dim = dim
        self.max_keyframes = max_keyframes
        self._rows: FrameRows = _OwnRows(dim)
        self._stamps = GrowingArray((), np.int64)
        self._poses = GrowingArray((4,), np.float64)
        self._has_pose = GrowingArray((), bool)
        self._segments = GrowingArray((), np.int64)
        self._sessions = GrowingArray((), np.int32)
        self._path_m = GrowingArray((), np.float64)
        self._warned = False

    def __len__(self) -> int:
        return len(self._stamps)

    def keep_frames_in(self, rows: FrameRows) -> None:
        if len(rows.rows) != len(self) or \
                not np.array_equal(rows.rows, self._rows.rows):
            raise MapError('a keyframe store can hand its descriptors only to a buffer that '
                           'holds the same ones')
        self._rows = rows

    @property
    def full(self) -> bool:
        """Whether the bound is reached (no more keyframes are stored)."""
        return 0 < self.max_keyframes <= len(self)

    def append(self, descriptor: np.ndarray, stamp_ns: int, pose: Pose | None, segment: int,
               session: int, path_m: float) -> bool:
        """Store a keyframe at the end; False (nothing stored) once the bound is reached.

        Args:
            descriptor: ``(D,)`` float32.
            stamp_ns: its stamp.
            pose: its pose, if known.
            segment: sequence segment id.
            session: time session id (see the class docstring).
            path_m: accumulated path length when it was taken (metres; 0 without odometry).
        """
        if self.full:
            if not self._warned:
                log.warning('the keyframe store holds node.keyframe.max_keyframes = %d '
                            'keyframes: later keyframes are matched but no longer stored',
                            self.max_keyframes)
                self._warned = True
            return False
        self._rows.append_row(np.asarray(descriptor, np.float32), segment)
        self._stamps.append(stamp_ns)
        self._poses.append(pose.as_array() if pose is not None else np.full(4, np.nan))
        self._has_pose.append(pose is not None)
        self._segments.append(segment)
        self._sessions.append(session)
        self._path_m.append(path_m)
        return True

    @property
    def descriptors(self) -> np.ndarray:
        return self._rows.rows

    @property
    def segments(self) -> np.ndarray:
        return self._segments.view

    @property
    def stamps_ns(self) -> np.ndarray:
        return self._stamps.view

    @property
    def poses(self) -> np.ndarray | None:
        return self._poses.view if self._has_pose.view.any() else None

    @property
    def sessions(self) -> np.ndarray:
        """``(N,)`` int32 time session of every keyframe."""
        return self._sessions.view

    @property
    def path_m(self) -> np.ndarray:
        """``(N,)`` float64 accumulated path length when each keyframe was taken."""
        return self._path_m.view

    @property
    def nbytes(self) -> int:
        """Bytes of the stored keyframes (``len(self) * keyframe_bytes(D)``)."""
        arrays = (self._stamps, self._poses, self._has_pose, self._segments, self._sessions,
                  self._path_m)
        return int(self.descriptors.nbytes) + sum(a.nbytes for a in arrays)

    def as_run(self) -> EncodedRun:
        """The stored keyframes as a run (copies); poses only when every keyframe has one.

        Raises:
            MapError: no keyframes yet.
        """
        if not len(self):
            raise MapError('no keyframes yet: nothing to save')
        poses = self._poses.view.copy() if self._has_pose.view.all() else None
        return EncodedRun(self.descriptors.astype(np.float32, copy=True), self.stamps_ns.copy(),
                          poses, self.segments.copy())


__all__ = ['FixedStore', 'KEYFRAME_METADATA_BYTES', 'KeyframeStore', 'ReferenceStore',
           'keyframe_bytes']
