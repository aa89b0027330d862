"""SeqMatchNet / SeqSLAM sequence matching.

The sequence distance between a query window and a reference window is the mean over the L
aligned frames of the frame distance (SeqMatchNet Eq. 3). Over a whole map it is a convolution
of the frame distance matrix ``D`` (reference rows x query columns) with a binary L x L kernel:
the identity for constant speed, or, under velocity search, a kernel whose ones advance
``round(v * t)`` reference rows per query frame for a slope ``v``; the best slope wins.

The kernel for slope ``v`` is anchored at the newest frame: query frame ``j - k`` is aligned with
reference row ``i - round(v * k)``, ``k = 0 .. L-1``, so the window spans
``span_v = round(v * (L - 1)) + 1`` reference rows.

Three forms compute exactly the same numbers (tests check them against a naive double loop):

* :func:`seqmatch_batch`: a recorded query run against the map, in chunks of query columns,
  with trailing windows or the official centred protocol (windows shifted inward at the ends).
* :class:`OnlineSeqMatcher`: the query arrives frame by frame (a robot); each new frame costs one
  column of N frame distances, and the identity kernel's diagonal sums are updated along the
  reference rows in O(N): ``A_j[i] = A_{j-1}[i-1] + C_j[i] - C_{j-L}[i-L]``.
* the naive reference in the tests.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.distances import (contrast_enhance, distance_column, distance_matrix,
                                            squared_norms)
from vpr_seq_ros.matching.windows import segment_bounds, window_starts
from vpr_seq_ros.types import Matches

log = logging.getLogger(__name__)


def slope_offsets(length: int, slope: float) -> np.ndarray:
    """Reference-row offsets of a slope's kernel from the window's first row: ``(L,)`` int64.

    ``offsets[t]`` is the reference row (relative to the window start) aligned with the t-th
    query frame of the window (t = 0 oldest); the identity kernel gives ``0 .. L-1``.
    """
    back = np.round(slope * np.arange(length - 1, -1, -1)).astype(np.int64)
    return back[0] - back


@dataclass(frozen=True)
class SeqMatchSettings:
    """Parameters of a sequence match (see ``MatchingConfig`` and ``SequenceConfig``)."""

    length: int = 5
    metric: str = 'euclidean'
    window: str = 'trailing'
    slopes: tuple[float, ...] = (1.0,)
    contrast_window: int | None = None

    def __post_init__(self) -> None:
        if self.length < 1:
            raise MatchingError(f'sequence length must be >= 1, got {self.length}')
        if self.window == 'centred' and tuple(self.slopes) != (1.0,):
            raise MatchingError('centred windows support only the identity kernel (slope 1)')
        if self.window not in ('trailing', 'centred'):
            raise MatchingError(f'unknown window {self.window!r}')


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Smallest-k rows of every column: ``(N, M) -> (M, k)`` indices and values, sorted."""
    n, m = scores.shape
    k_eff = min(k, n)
    idx = np.argpartition(scores, k_eff - 1, axis=0)[:k_eff] if k_eff < n else \
        np.broadcast_to(np.arange(n)[:, None], (n, m)).copy()
    vals = np.take_along_axis(scores, idx, axis=0)
    order = np.argsort(vals, axis=0, kind='stable')
    idx = np.take_along_axis(idx, order, axis=0).T
    vals = np.take_along_axis(vals, order, axis=0).T
    out_idx = np.full((m, k), -1, dtype=np.int64)
    out_val = np.full((m, k), np.inf, dtype=np.float64)
    out_idx[:, :k_eff] = idx
    out_val[:, :k_eff] = vals
    out_idx[~np.isfinite(out_val)] = -1
    return out_idx, out_val


@dataclass(frozen=True, eq=False)
class SeqMatchResult:
    """Output of :func:`seqmatch_batch`.

    Attributes:
        matches: top-K per query anchor.
        matrix: ``(N, M)`` float32 sequence distances (inf where no window), when kept.
        ref_valid: ``(N,)`` bool, reference anchors that have a window under some slope.
    """

    matches: Matches
    matrix: np.ndarray | None
    ref_valid: np.ndarray


def seqmatch_batch(ref_desc: np.ndarray, query_desc: np.ndarray, settings: SeqMatchSettings,
                   top_k: int = 20, ref_segments: np.ndarray | None = None,
                   query_segments: np.ndarray | None = None, keep_matrix: bool = False,
                   chunk: int = 256) -> SeqMatchResult:
    """Match every query anchor of a recorded run against all reference anchors.

    Args:
        ref_desc: ``(N, D)`` reference frame descriptors.
        query_desc: ``(M, D)`` query frame descriptors.
        settings: window length, placement, frame distance, slopes, contrast enhancement.
        top_k: candidates per query.
        ref_segments: ``(N,)`` reference segment ids (default: one segment).
        query_segments: ``(M,)`` query segment ids (default: one segment).
        keep_matrix: also return the ``(N, M)`` sequence distance matrix.
        chunk: query anchors per block (bounds memory to about ``N * (chunk + L)`` floats).

    Returns:
        A :class:`SeqMatchResult`; reference indices are reference anchors.
    """
    n, m = ref_desc.shape[0], query_desc.shape[0]
    length = settings.length
    ref_segments = np.zeros(n, np.int64) if ref_segments is None else np.asarray(ref_segments)
    query_segments = np.zeros(m, np.int64) if query_segments is None else \
        np.asarray(query_segments)
    seg_start, seg_end = segment_bounds(ref_segments)
    q_starts, q_valid = window_starts(query_segments, length, settings.window)
    kernels = []
    for slope in settings.slopes:
        offsets = slope_offsets(length, slope)
        span = int(offsets[-1]) + 1
        r_starts, r_valid = window_starts(ref_segments, length, settings.window, span)
        kernels.append((offsets, r_starts, r_valid))
    ref_sq = squared_norms(ref_desc) if settings.metric == 'euclidean' else None
    ref_idx = np.full((m, top_k), -1, dtype=np.int64)
    ref_dist = np.full((m, top_k), np.inf, dtype=np.float64)
    matrix = np.full((n, m), np.inf, dtype=np.float32) if keep_matrix else None
    anchors = np.flatnonzero(q_valid)
    for lo in range(0, len(anchors), chunk):
        block = anchors[lo:lo + chunk]
        first = int(q_starts[block].min())
        last = int(q_starts[block].max()) + length
        dcols = distance_matrix(ref_desc, query_desc[first:last], settings.metric, ref_sq)
        if settings.contrast_window:
            dcols = contrast_enhance(dcols, settings.contrast_window, seg_start, seg_end)
        cols = q_starts[block] - first
        scores = np.full((n, len(block)), np.inf, dtype=np.float32)
        for offsets, r_starts, r_valid in kernels:
            span = int(offsets[-1]) + 1
            if span > n:
                continue
            # Convolution with the binary kernel over window starts: L shifted adds.
            acc = np.zeros((n - span + 1, len(block)), dtype=np.float64)
            for t, off in enumerate(offsets):
                acc += dcols[off:off + n - span + 1][:, cols + t]
            rows = np.flatnonzero(r_valid)
            cand = (acc[r_starts[rows]] / length).astype(np.float32)
            np.minimum(scores[rows], cand, out=cand)
            scores[rows] = cand
        idx, dist = _top_k(scores, top_k)
        ref_idx[block], ref_dist[block] = idx, dist
        if matrix is not None:
            matrix[:, block] = scores
    ref_valid = np.zeros(n, dtype=bool)
    for offsets, _, r_valid in kernels:
        ref_valid |= r_valid if int(offsets[-1]) < n else False
    return SeqMatchResult(Matches(ref_idx, ref_dist, q_valid.copy()), matrix, ref_valid)


class OnlineSeqMatcher:
    """Streaming sequence matcher: trailing windows, one new query frame at a time.

    Each :meth:`push` computes one column of N frame distances (O(N*D)), contrast-enhances it if
    asked, and updates the sequence distances of every reference anchor in O(N) (identity
    kernel: running diagonal sums; other slopes: O(L*N) from the last L columns). The result
    equals :func:`seqmatch_batch` with trailing windows.

    The reference set may grow (``slam`` mode: every keyframe is scored against the past, then
    appended with ``push(..., append=True)``); the running sums stay exact because the column
    pushed k frames ago then covers exactly the first N - k references.

    Args:
        ref_desc: ``(N, D)`` reference frame descriptors (N may be 0 when growing).
        settings: must use ``window='trailing'``.
        ref_segments: ``(N,)`` reference segment ids.
        resync_every: recompute the running sums exactly from the stored columns every this
            many frames, so floating-point drift cannot build up over a long run.
        capacity: initial row capacity for a growing reference set.
    """

    def __init__(self, ref_desc: np.ndarray, settings: SeqMatchSettings,
                 ref_segments: np.ndarray | None = None, resync_every: int = 1000,
                 capacity: int = 1024) -> None:
        if settings.window != 'trailing':
            raise MatchingError('online matching uses trailing windows (the last L frames)')
        ref_desc = np.asarray(ref_desc, dtype=np.float32)
        if ref_desc.ndim != 2:
            raise MatchingError(f'reference descriptors must be (N, D), got {ref_desc.shape}')
        self.settings = settings
        self.resync_every = resync_every
        self._n = ref_desc.shape[0]
        self._refs = ref_desc
        self._segments = np.zeros(self._n, np.int64) if ref_segments is None else \
            np.asarray(ref_segments, dtype=np.int64)
        self._capacity = self._n
        self._grow_to = max(capacity, 1)
        self._ref_sq = squared_norms(ref_desc) if settings.metric == 'euclidean' else None
        self._backs = []
        for slope in settings.slopes:
            offsets = slope_offsets(settings.length, slope)
            self._backs.append((offsets[-1] - offsets)[::-1].copy())  # rows back per frame back
        self._identity = [bool(np.array_equal(b, np.arange(settings.length)))
                          for b in self._backs]
        self._refresh_segments()
        self.reset()

    # ------------------------------------------------------------------ reference set
    @property
    def num_references(self) -> int:
        """Current number of reference frames N."""
        return self._n

    @property
    def references(self) -> np.ndarray:
        """``(N, D)`` reference descriptors (a view)."""
        return self._refs[:self._n]

    def _refresh_segments(self) -> None:
        n = self._n
        self._seg_start, self._seg_end = segment_bounds(self._segments[:n])
        self._invalid = []
        for back in self._backs:
            span = int(back[-1]) + 1
            self._invalid.append(np.flatnonzero(np.arange(n) - (span - 1) < self._seg_start))

    def _reserve(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, 2 * self._capacity, self._grow_to)
        dim = self._refs.shape[1]
        refs = np.empty((capacity, dim), dtype=np.float32)
        refs[:self._n] = self._refs[:self._n]
        segments = np.zeros(capacity, np.int64)
        segments[:self._n] = self._segments[:self._n]
        self._refs, self._segments = refs, segments
        if self._ref_sq is not None:
            sq = np.empty(capacity, np.float32)
            sq[:self._n] = self._ref_sq[:self._n]
            self._ref_sq = sq
        sums = np.zeros(capacity, np.float64)
        sums[:self._n] = self._sums[:self._n]
        columns = np.zeros((self.settings.length, capacity), np.float32)
        columns[:, :self._columns.shape[1]] = self._columns
        self._sums, self._columns = sums, columns
        self._capacity = capacity

    def append_reference(self, descriptor: np.ndarray, segment: int = 0) -> None:
        """Add one reference frame at the end of the map."""
        self._reserve(self._n + 1)
        self._refs[self._n] = descriptor
        self._segments[self._n] = segment
        if self._ref_sq is not None:
            self._ref_sq[self._n] = squared_norms(self._refs[self._n:self._n + 1])[0]
        self._n += 1
        self._refresh_segments()

    # ------------------------------------------------------------------ query stream
    def reset(self) -> None:
        """Forget the query history (a new segment or a restarted bag)."""
        rows = max(self._capacity, self._n)
        self._columns = np.zeros((self.settings.length, rows), dtype=np.float32)
        self._lengths = np.zeros(self.settings.length, dtype=np.int64)  # valid rows per column
        self._count = 0          # frames pushed since reset
        self._sums = np.zeros(rows, dtype=np.float64)  # identity-kernel diagonal sums
        self._segment: int | None = None

    @property
    def num_frames(self) -> int:
        """Frames pushed since the last reset."""
        return self._count

    @property
    def ready(self) -> bool:
        """Whether the last L frames form a full window."""
        return self._count >= self.settings.length

    def _slot(self, k: int) -> int:
        """Ring slot of the column pushed k frames ago (k = 0 newest)."""
        return (self._count - 1 - k) % self.settings.length

    def _exact_identity_sums(self) -> None:
        n = self._n
        self._sums[:n] = 0.0
        for k in range(min(self._count, self.settings.length)):
            slot = self._slot(k)
            rows = min(n - k, int(self._lengths[slot]))
            if rows > 0:
                self._sums[k:k + rows] += self._columns[slot, :rows]

    def push(self, descriptor: np.ndarray, segment: int = 0,
             append: bool = False) -> np.ndarray | None:
        """Add the newest query frame.

        Args:
            descriptor: ``(D,)`` query frame descriptor.
            segment: query segment id; a change starts a new window (the buffer resets).
            append: afterwards add the frame to the references (``slam`` mode).

        Returns:
            ``(N,)`` float64 sequence distances of every reference anchor (inf where the
            reference window would cross a segment or the map start), or None until the query
            has L frames in its segment. N is the number of references before any append.
        """
        if self._segment is not None and segment != self._segment:
            self.reset()
        self._segment = segment
        settings = self.settings
        n, length = self._n, settings.length
        refs = self._refs[:n]
        column = distance_column(refs, descriptor, settings.metric,
                                 None if self._ref_sq is None else self._ref_sq[:n])
        if settings.contrast_window and n:
            column = contrast_enhance(column, settings.contrast_window, self._seg_start,
                                      self._seg_end)
        # Running diagonal sums, in place: shift down one row, add the new column, drop the
        # column that leaves the window (pushed L frames ago, aligned L rows up).
        sums = self._sums
        if n:
            sums[1:n] = sums[:n - 1]
            sums[0] = 0.0
            sums[:n] += column
        slot = self._count % length
        if self._count >= length:
            rows = min(n - length, int(self._lengths[slot]))
            if rows > 0:
                sums[length:length + rows] -= self._columns[slot, :rows]
        self._columns[slot, :n] = column
        self._lengths[slot] = n
        self._count += 1
        if self._count % self.resync_every == 0:
            self._exact_identity_sums()
        best: np.ndarray | None = None
        if self._count >= length:
            for back, invalid, identity in zip(self._backs, self._invalid, self._identity):
                if identity:
                    scores = sums[:n] * (1.0 / length)
                else:
                    scores = np.zeros(n, dtype=np.float64)
                    reach = np.full(n, True)
                    for k, shift in enumerate(back):
                        slot_k = self._slot(k)
                        rows = min(n - int(shift), int(self._lengths[slot_k]))
                        if rows > 0:
                            scores[shift:shift + rows] += self._columns[slot_k, :rows]
                        reach[max(int(shift) + max(rows, 0), 0):] = False
                    scores *= 1.0 / length
                    scores[~reach] = np.inf
                scores[invalid] = np.inf
                best = scores if best is None else np.minimum(best, scores, out=best)
        if append:
            self.append_reference(descriptor, segment)
        return best
