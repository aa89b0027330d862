"""Typed value objects that cross stage boundaries.

Units are in the names: stamps are integer nanoseconds (from the data, never the wall clock),
positions are metres in a metric frame, yaw is radians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Pose:
    """A planar-plus-height pose in a metric frame (metres, radians)."""

    x: float
    y: float
    z: float = 0.0
    yaw: float = 0.0

    def as_array(self) -> np.ndarray:
        """Return ``[x, y, z, yaw]`` as float64."""
        return np.array([self.x, self.y, self.z, self.yaw], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame of a run, as a source yields it.

    Exactly one of ``image`` and ``descriptor`` is set.

    Attributes:
        index: position of the frame in its run (0-based, in stamp order).
        stamp_ns: time stamp in integer nanoseconds.
        image: ``(H, W, 3)`` uint8 RGB image, for image sources.
        descriptor: ``(D,)`` float32 precomputed frame descriptor, for descriptor sources.
        pose: pose in a metric frame, when the source has one.
        segment: id of the contiguous segment the frame belongs to; sequences never cross
            segments.
        name: file name, or another human-readable id of the frame.
    """

    index: int
    stamp_ns: int
    image: np.ndarray | None = None
    descriptor: np.ndarray | None = None
    pose: Pose | None = None
    segment: int = 0
    name: str = ''


@dataclass(frozen=True, eq=False)
class EncodedRun:
    """A run after frame encoding: what the matching stage and the map consume.

    Attributes:
        descriptors: ``(N, D)`` float32 frame descriptors, frame order.
        stamps_ns: ``(N,)`` int64 stamps.
        poses: ``(N, 4)`` float64 ``[x, y, z, yaw]`` or None when the run has no poses.
        segments: ``(N,)`` int64 segment ids; equal ids are contiguous.
        names: frame names.
    """

    descriptors: np.ndarray
    stamps_ns: np.ndarray
    poses: np.ndarray | None
    segments: np.ndarray
    names: tuple[str, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return int(self.descriptors.shape[0])


@dataclass(frozen=True, eq=False)
class Matches:
    """Top-K matches of every query of a run against a map.

    Queries without a full sequence window (or otherwise unmatched) have ``valid == False`` and
    their rows of ``ref_indices``/``distances`` hold -1 / inf.

    Attributes:
        ref_indices: ``(M, K)`` int64 reference frame indices, best first. For sequence methods
            the index is the reference window's anchor frame (the last frame for trailing
            windows, the centre frame for centred windows), compared with the query's anchor.
        distances: ``(M, K)`` float64 distances (lower is better).
        valid: ``(M,)`` bool.
    """

    ref_indices: np.ndarray
    distances: np.ndarray
    valid: np.ndarray

    @property
    def k(self) -> int:
        """Candidates per query."""
        return int(self.ref_indices.shape[1])

    def top(self, k: int) -> Matches:
        """The best ``k`` candidates of every query (all of them when there are fewer)."""
        return Matches(self.ref_indices[:, :k], self.distances[:, :k], self.valid)
