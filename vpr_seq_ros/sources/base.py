"""The frame-source contract: an ordered, re-iterable run of frames with ns stamps, and the
account of every frame the source left out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from vpr_seq_ros.types import Frame


class DropReason(str, Enum):
    """Why a source (or the node's gating) left a frame out; the value is the report key."""

    NO_POSE_YET = 'no_pose_yet'
    """Stamped before the first pose sample (poses are never extrapolated)."""
    AFTER_LAST_POSE = 'after_last_pose'
    """Stamped after the last pose sample."""
    POSE_GAP = 'pose_gap'
    """Between two pose samples further apart than the largest gap bridged."""
    DUPLICATE_STAMP = 'duplicate_stamp'
    """The same stamp as an earlier frame."""
    KEYFRAME_GATING = 'keyframe_gating'
    """Closer than the keyframe distance to the last kept frame."""
    MALFORMED = 'malformed'
    """An image message that cannot be read or decoded."""
    UNSUPPORTED_FORMAT = 'unsupported_format'
    """An image file of a format the image folder does not read."""


_PHRASES: dict[str, tuple[str, str, str]] = {
    # reason: (singular, plural, detail; {pose} is the pose topic or 'the pose topic')
    DropReason.NO_POSE_YET.value: ('frame without a pose yet', 'frames without a pose yet',
                                   'before the first pose on {pose}'),
    DropReason.AFTER_LAST_POSE.value: ('frame after the last pose', 'frames after the last pose',
                                       'poses on {pose} end earlier'),
    DropReason.POSE_GAP.value: ('frame in a gap of the poses', 'frames in gaps of the poses',
                                'pose samples on {pose} more than {gap} apart'),
    DropReason.DUPLICATE_STAMP.value: ('duplicate stamp', 'duplicate stamps',
                                       'the same stamp as an earlier frame'),
    DropReason.KEYFRAME_GATING.value: ('frame skipped by keyframe gating',
                                       'frames skipped by keyframe gating',
                                       'one frame per {keyframe}'),
    DropReason.MALFORMED.value: ('malformed image', 'malformed images',
                                 'cannot be read or decoded'),
    DropReason.UNSUPPORTED_FORMAT.value: ('file of an unsupported image format',
                                          'files of an unsupported image format',
                                          '{formats}'),
}
_ORDER = {reason.value: i for i, reason in enumerate(DropReason)}


def ordered_counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts in :class:`DropReason` order (unknown reasons after, by name), zeros left out."""
    keys = sorted((str(getattr(k, 'value', k)) for k in counts),
                  key=lambda k: (_ORDER.get(k, len(_ORDER)), k))
    raw = {str(getattr(k, 'value', k)): int(v) for k, v in counts.items()}
    return {k: raw[k] for k in keys if raw[k]}


def format_dropped(counts: Mapping[str, int], pose_topic: str | None = None,
                   max_pose_gap_s: float | None = None,
                   keyframe_distance_m: float | None = None,
                   formats: str | None = None) -> str:
    """One readable line of the frames left out, e.g. ``'1 frame without a pose yet (before
    the first pose on /gps/fix), 3 duplicate stamps (the same stamp as an earlier frame)'``.

    Args:
        counts: reason (a :class:`DropReason` value; others are shown by name) -> count.
        pose_topic: named in the pose reasons (default: 'the pose topic').
        max_pose_gap_s: the largest bridged pose gap (seconds), named in ``pose_gap``.
        keyframe_distance_m: the keyframe spacing (metres), named in ``keyframe_gating``.
        formats: the file suffixes met, named in ``unsupported_format``.

    Returns:
        The line; ``'none'`` when nothing was left out.
    """
    values = {'pose': pose_topic or 'the pose topic',
              'gap': f'{max_pose_gap_s:g} s' if max_pose_gap_s is not None else 'too far',
              'keyframe': f'{keyframe_distance_m:g} m' if keyframe_distance_m else
              'keyframe distance', 'formats': formats or 'not read'}
    parts = []
    for reason, n in ordered_counts(counts).items():
        if reason in _PHRASES:
            one, many, detail = _PHRASES[reason]
            parts.append(f'{n} {one if n == 1 else many} ({detail.format(**values)})')
        else:
            parts.append(f'{n} {reason.replace("_", " ")}')
    return ', '.join(parts) or 'none'


class FrameSource(ABC):
    """A run of frames in stamp order.

    Attributes:
        path: where the run comes from (shown in messages and recorded in maps).
        input_kind: ``'image'`` (frames carry images) or ``'descriptor'`` (precomputed
            descriptors).
    """

    path: str = ''
    input_kind: str = 'image'

    @abstractmethod
    def __len__(self) -> int:
        """Number of frames."""

    @abstractmethod
    def __iter__(self) -> Iterator[Frame]:
        """Yield frames in order, indices 0..N-1."""

    @property
    def has_poses(self) -> bool:
        """Whether frames carry poses."""
        return False

    def dropped(self) -> dict[str, int]:
        """Frames of the run this source leaves out, by reason.

        Complete once the source is opened, except for bags, whose compressed images that
        fail to decode are only found (and added) while iterating.

        Returns:
            :class:`DropReason` value -> count, in that enum's order, zero counts left out.
        """
        return ordered_counts(getattr(self, '_dropped', Counter()))

    def dropped_line(self) -> str:
        """:func:`format_dropped` of :meth:`dropped`, with this source's details."""
        return format_dropped(self.dropped())


DecodeFunction = Callable[[Any], np.ndarray]
"""Turns a :attr:`DecodeJob.payload` into an ``(H, W, 3)`` uint8 RGB image; a module-level
function (pickled by reference), so that worker processes can run it."""


@dataclass(frozen=True)
class DecodeJob:
    """A frame read from its source but not decoded yet.

    Attributes:
        frame: everything the frame will carry but its image (``image`` is None); ``index``
            may be provisional (a source that drops frames when they fail to decode numbers
            the frames it keeps in :meth:`DecodingSource.assemble`).
        payload: what the source's :attr:`DecodingSource.decode_function` takes: plain,
            picklable data (a file path, the fields of an image message).
    """

    frame: Frame
    payload: Any


@dataclass(frozen=True)
class DecodeOutcome:
    """A decoded :class:`DecodeJob`: its image, or the exception decoding raised."""

    frame: Frame
    image: np.ndarray | None
    error: Exception | None


def decode_inline(decode: DecodeFunction, jobs: Iterable[DecodeJob]) -> Iterator[DecodeOutcome]:
    """Decode jobs one by one in the calling thread (what worker processes do in parallel)."""
    for job in jobs:
        try:
            yield DecodeOutcome(job.frame, decode(job.payload), None)
        except Exception as err:  # noqa: BLE001 - the source decides (raise or drop)
            yield DecodeOutcome(job.frame, None, err)


class DecodingSource(FrameSource):
    """A source whose reading and image decoding are separate steps, so that decoding can run
    in worker processes (:func:`vpr_seq_ros.sources.parallel.read_frames`) while reading (file
    or bag I/O) stays in the process that opened the source.

    Iterating the source decodes in the calling thread; both ways run the same
    :meth:`decode_jobs` and :meth:`assemble`, so they yield the same frames, bit for bit.
    """

    @property
    @abstractmethod
    def decode_function(self) -> DecodeFunction:
        """The module-level function that decodes this source's payloads."""

    @abstractmethod
    def decode_jobs(self) -> Iterator[DecodeJob]:
        """Read the run in order, without decoding images. Files (e.g. a bag's SQLite
        connection) are opened and closed in the thread that iterates this generator."""

    @abstractmethod
    def assemble(self, outcomes: Iterable[DecodeOutcome]) -> Iterator[Frame]:
        """The frames of decoded jobs, given in job order: what a failed decoding means (an
        error, or a frame dropped and counted in :meth:`dropped`) is decided here."""

    def __iter__(self) -> Iterator[Frame]:
        jobs = self.decode_jobs()
        try:
            yield from self.assemble(decode_inline(self.decode_function, jobs))
        finally:
            close = getattr(jobs, 'close', None)
            if close is not None:
                close()
