"""The frame-source contract: an ordered, re-iterable run of frames with ns stamps."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Iterator

from vpr_seq_ros.types import Frame


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
