"""The sequence-method contract, written down once.

A method turns frame descriptors ``(N, D) float32`` (each frame encoded once) into distances
between *anchors*: the newest frame of a trailing window of :attr:`SequenceMethod.window_length`
frames (lower is better, ``inf`` where an anchor has no window). It is used two ways, which must
agree (a test checks it for every registered method):

* batch (:meth:`SequenceMethod.match`): a recorded query run against a reference run, top-K per
  query anchor (``evaluate``, the demo);
* streaming (:meth:`SequenceMethod.stream`): one query keyframe at a time against a reference
  store that is fixed (a map) or growing (slam keyframes) -- the node and ``replay``.

A method may also precompute map-side data when a map is built (:meth:`precompute`, e.g. SeqGeM
sequence descriptors), recorded with the parameters that made them so that a later run can tell
whether they still fit (:meth:`fits`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.windows import check_length
from vpr_seq_ros.types import EncodedRun, Matches

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import Config


@dataclass(frozen=True, eq=False)
class MatchOutput:
    """Result of a batch match.

    Attributes:
        matches: top-K reference anchors of every query anchor.
        ref_valid: ``(N,)`` bool, the reference anchors that could be matched (have a window).
        matrix: ``(N, M)`` distances (inf where either side has no window), when asked for.
    """

    matches: Matches
    ref_valid: np.ndarray
    matrix: np.ndarray | None


@dataclass(frozen=True, eq=False)
class Precomputed:
    """Map-side data a method derived from the reference frames when the map was built.

    Attributes:
        descriptors: ``(N, D')`` float32, one row per reference anchor (zeros where invalid).
        valid: ``(N,)`` bool, the anchors that have a window (None when read back from a map:
            the method derives it from the segments).
        info: JSON-serialisable parameters that made them (``method`` names the method); a map
            stores them in its manifest and :meth:`SequenceMethod.fits` compares them.
    """

    descriptors: np.ndarray
    valid: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


class GrowingArray:
    """Rows appended one at a time into a buffer that doubles (amortised O(1) per row).

    Args:
        row_shape: shape of one row (``()`` for scalars).
        dtype: element type.
        capacity: initial number of rows.
        initial: rows to start with, used in place (not copied) until the first append.
    """

    def __init__(self, row_shape: tuple[int, ...], dtype: Any, capacity: int = 256,
                 initial: np.ndarray | None = None) -> None:
        if initial is not None and len(initial):
            self._data = np.asarray(initial, dtype=dtype)
            self._n = len(self._data)
        else:
            self._data = np.zeros((max(capacity, 1), *row_shape), dtype=dtype)
            self._n = 0

    def __len__(self) -> int:
        return self._n

    @property
    def view(self) -> np.ndarray:
        """The stored rows (a view; invalid after the next :meth:`append`)."""
        return self._data[:self._n]

    @property
    def nbytes(self) -> int:
        """Bytes of the stored rows (the buffer holds up to twice as many)."""
        return int(self.view.nbytes)

    def _reserve(self, rows: int) -> None:
        if rows > len(self._data):
            grown = np.zeros((max(rows, 2 * len(self._data)), *self._data.shape[1:]),
                             self._data.dtype)
            grown[:self._n] = self._data[:self._n]
            self._data = grown

    def append(self, row: Any) -> None:
        """Store one row at the end."""
        self._reserve(self._n + 1)
        self._data[self._n] = row
        self._n += 1

    def extend(self, rows: np.ndarray) -> None:
        """Store ``(K, *row_shape)`` rows at the end."""
        self._reserve(self._n + len(rows))
        self._data[self._n:self._n + len(rows)] = rows
        self._n += len(rows)


class FrameRows(Protocol):
    """A growable ``(N, D)`` container of reference frame descriptors.

    A growing store keeps its keyframe descriptors in one of these: its own
    :class:`GrowingArray` by default, or the streaming matcher's rows when the matcher needs
    them in its own buffer anyway (so that a keyframe is stored once).
    """

    @property
    def rows(self) -> np.ndarray:
        """``(N, D)`` float32 descriptors (a view)."""

    def append_row(self, descriptor: np.ndarray, segment: int) -> None:
        """Store one descriptor ``(D,)`` of segment ``segment`` at the end."""


class References(Protocol):
    """What a streaming matcher reads of the reference store (:mod:`vpr_seq_ros.runtime.store`).

    Attributes:
        descriptors: ``(N, D)`` reference frame descriptors (a view; float16 for a float16 map:
            convert once where float32 is needed).
        segments: ``(N,)`` int64 segment ids (windows never cross them).
        growing: whether keyframes are appended (slam) or the set is a fixed map.
        precomputed: what the map stored at build time (fixed maps only), or None.
    """

    @property
    def descriptors(self) -> np.ndarray: ...

    @property
    def segments(self) -> np.ndarray: ...

    @property
    def growing(self) -> bool: ...

    @property
    def precomputed(self) -> Precomputed | None: ...

    def __len__(self) -> int: ...

    def keep_frames_in(self, rows: FrameRows) -> None:
        """Keep the (still empty) store's descriptors in ``rows`` (growing stores only)."""


class WindowBuffer:
    """The last L keyframe descriptors of the current segment (a segment change empties it).

    Args:
        length: L.
    """

    def __init__(self, length: int) -> None:
        self.length = length
        self._frames: deque[np.ndarray] = deque(maxlen=length)
        self._segment: int | None = None

    def __len__(self) -> int:
        return len(self._frames)

    def clear(self) -> None:
        self._frames.clear()
        self._segment = None

    def push(self, descriptor: np.ndarray, segment: int) -> np.ndarray | None:
        """Add the newest keyframe; the ``(L, D)`` window, oldest first, once it is full."""
        if self._segment is not None and segment != self._segment:
            self.clear()
        self._segment = segment
        self._frames.append(np.asarray(descriptor, np.float32))
        return np.stack(self._frames) if len(self._frames) == self.length else None


class StreamingMatcher(ABC):
    """A method's streaming form: the node pushes its newest keyframe, gets distances.

    The store appends the keyframe itself (slam mode) after the push and then calls
    :meth:`appended`, so a keyframe pushed at step j is a reference from step j + 1 on.
    """

    @property
    @abstractmethod
    def num_frames(self) -> int:
        """Query frames buffered since the last reset (the window fills at ``window_length``)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget the query window (a new segment, a restarted bag, ``~/reset``)."""

    @abstractmethod
    def push(self, descriptor: np.ndarray, segment: int = 0) -> np.ndarray | None:
        """Add the newest query keyframe.

        Args:
            descriptor: ``(D,)`` float32 frame descriptor.
            segment: query segment id; a change starts a new window.

        Returns:
            ``(N,)`` float64 distances of every reference anchor now in the store (inf where an
            anchor has no window), or None until the query window is full.
        """

    def appended(self) -> None:  # noqa: B027 - optional hook
        """The store just appended the last pushed keyframe (growing stores only)."""

    def distances_at(self, anchors: np.ndarray, distances: np.ndarray,
                     cache: bool = False) -> np.ndarray:
        """The last full window's exact distances at ``anchors`` (the score's sample, and the
        dip around the best anchor: :mod:`vpr_seq_ros.matching.score`).

        Args:
            anchors: ``(k,)`` anchors.
            distances: ``(N,)`` what the last :meth:`push` returned.
            cache: the same anchors will be asked for at every keyframe (the sample): an
                approximate matcher keeps what it needs for them.

        Returns:
            ``(k,)`` float64 distances. Default: read from ``distances``, which an exact
            matcher computed for every anchor; an approximate matcher computes them.
        """
        return np.asarray(distances, np.float64)[anchors]


class SequenceMethod(ABC):
    """A sequence-matching method: one plugin per method, registered in
    :mod:`vpr_seq_ros.matching` under :attr:`name`.

    Subclasses implement :meth:`from_config`, :attr:`window_length`, :meth:`batch` and
    :meth:`stream`; :meth:`precompute` and :meth:`fits` only when the method stores map-side
    data.
    """

    name: str = ''

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Config, learnt_seqgem_p: float | None = None) -> SequenceMethod:
        """Resolve the method's parameters once.

        Args:
            cfg: the configuration (``sequence`` and ``matching`` sections).
            learnt_seqgem_p: the SeqGeM exponent the encoder learnt, if it carries one
                (``encoder.seqgem_p``); it wins over ``matching.seqgem_p``.
        """

    @property
    @abstractmethod
    def window_length(self) -> int:
        """Frames in one window (L; 1 for single-frame matching)."""

    @abstractmethod
    def batch(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool) -> MatchOutput:
        """Top-K reference anchors of every query anchor (inputs already checked)."""

    @abstractmethod
    def stream(self, references: References) -> StreamingMatcher:
        """A streaming matcher over a reference store (trailing windows: a robot has only the
        past); its distances equal those of :meth:`batch` with trailing windows."""

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters, for reports."""
        return {'method': self.name, 'window_length': self.window_length}

    def precompute(self, run: EncodedRun) -> Precomputed | None:
        """Map-side data to store when a map is built from ``run`` (None: nothing)."""
        return None

    def fits(self, stored: Precomputed) -> bool:
        """Whether data a map stored was made by this method with these parameters."""
        return False

    def stored(self, references: References) -> Precomputed | None:
        """The store's precomputed data when it fits this method, else None."""
        pre = references.precomputed
        if pre is None or len(pre.descriptors) != len(references) or not self.fits(pre):
            return None
        return pre

    def index_vectors(self, run: EncodedRun, precomputed: Precomputed | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """What an approximate index over the map holds: ``(N, D)`` vectors and the valid
        rows (None: all). Default: the frame descriptors."""
        return run.descriptors, None

    def window_search(self, references: References, ann: Any, candidates: int,
                      k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """How a full ``(L, D)`` query window is searched through an approximate index
        (:class:`vpr_seq_ros.matching.ann.AnnIndex`): returns ``(k,)`` anchors and distances.

        Raises:
            MatchingError: the method (or these settings) has no approximate search.
        """
        raise MatchingError(f'{self.name} has no approximate search; use '
                            'matching.index.kind = exact')

    def sample_search(self, references: References, anchors: np.ndarray
                      ) -> Callable[[np.ndarray], np.ndarray]:
        """How an approximate matcher gets the exact distances of a full ``(L, D)`` query
        window at fixed ``(k,)`` anchors (the score's sample): returns ``(k,)`` float64
        distances, inf where an anchor has no window. Needed with :meth:`window_search`.

        Raises:
            MatchingError: the method (or these settings) has no approximate search.
        """
        raise MatchingError(f'{self.name} has no approximate search; use '
                            'matching.index.kind = exact')

    def match(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool = False) -> MatchOutput:
        """Match a query run against a reference run.

        Args:
            ref: reference frame descriptors (a map's run).
            query: query frame descriptors.
            top_k: candidates per query anchor.
            keep_matrix: also return the ``(N, M)`` distance matrix (for plots).

        Raises:
            MatchingError: descriptor dimensions differ, or a run is shorter than one window.
        """
        if ref.descriptors.shape[1] != query.descriptors.shape[1]:
            raise MatchingError(f'reference descriptors have D = {ref.descriptors.shape[1]}, '
                                f'query descriptors D = {query.descriptors.shape[1]}')
        check_length(len(ref), self.window_length, 'reference map')
        check_length(len(query), self.window_length, 'query run')
        return self.batch(ref, query, top_k, keep_matrix)


__all__ = ['FrameRows', 'GrowingArray', 'MatchOutput', 'Precomputed', 'References',
           'SequenceMethod', 'StreamingMatcher']
