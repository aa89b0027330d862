"""SeqMatchNet / SeqSLAM sequence matching.

The sequence distance between a query window and a reference window is the mean over the L
aligned frames of the frame distance (SeqMatchNet Eq. 3). Over a whole map it is a convolution
of the frame distance matrix ``D`` (reference rows x query columns) with an L x L kernel: the
identity for constant speed, or, under velocity search, one kernel per slope ``v``; the best slope
wins.

The kernel for slope ``v`` is anchored at the newest frame: query frame ``j - k`` lies ``v * k``
reference rows before the anchor row ``i``, ``k = 0 .. L-1``. ``rounded`` kernels (the default)
take the nearest row (at L = 10 the 0.8 kernel visits only 8 distinct rows, and slopes near 1
can collapse to the identity: a warning is logged); ``interpolated`` kernels the linear
interpolation of the two rows around ``i - v * k``. A window spans ``max rows back + 1``
reference rows.

Different slopes' scores are not on one scale (a slope below 1 averages fewer independent rows,
so its scores spread wider at wrong places and it wins there), and more slopes mean more chances
for a wrong place to win by accident. With ``slope_scores = 'standardised'`` (the default) each
slope's scores of one query are standardised over the reference anchors, a constant-speed prior
``slope_penalty * |ln v|`` is added to each z-score, the minimum wins, and it is mapped back to
distance units with the mean and standard deviation of the slope nearest 1; with a single slope
the scores are unchanged. Measured in ``benchmarks/velocity.py``: with slopes 0.75 0.8 0.9 1 1.1
1.25 1.33 constant-speed Recall@1 stays within 0.005 of slope 1 alone.

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
from typing import Callable, Iterator, Literal

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.distances import (RowBlocks, contrast_enhance, distance_column,
                                            squared_norms)
from vpr_seq_ros.matching.windows import segment_bounds, window_starts
from vpr_seq_ros.types import Matches

log = logging.getLogger(__name__)


def slope_offsets(length: int, slope: float) -> np.ndarray:
    """Reference-row offsets of a slope's rounded kernel from the window's first row: ``(L,)``.

    ``offsets[t]`` is the reference row (relative to the window start) aligned with the t-th
    query frame of the window (t = 0 oldest); the identity kernel gives ``0 .. L-1``.
    """
    back = np.round(slope * np.arange(length - 1, -1, -1)).astype(np.int64)
    return back[0] - back


_FRAC_EPS = 1e-9
_STD_FLOOR = 1e-9


@dataclass(frozen=True, eq=False)
class SlopeKernel:
    """The terms of one slope's kernel, anchored at the newest frame.

    The sequence distance of reference anchor ``i`` and query anchor ``j`` is
    ``sum_t weights[t] * D[i - rows_back[t], j - frames_back[t]] / L``.

    Attributes:
        slope: reference frames advanced per query frame.
        frames_back: ``(T,)`` int64, query frames back from the anchor (0 .. L-1).
        rows_back: ``(T,)`` int64, reference rows back from the anchor.
        weights: ``(T,)`` float64; the weights of each query frame sum to 1.
        span: reference rows covered, ``max(rows_back) + 1``.
    """

    slope: float
    frames_back: np.ndarray
    rows_back: np.ndarray
    weights: np.ndarray
    span: int

    @property
    def is_identity(self) -> bool:
        """Whether this is the constant-speed kernel (frame k back on row k back, weight 1)."""
        k = np.arange(len(self.frames_back))
        return bool(len(self.frames_back) == self.span and np.array_equal(self.frames_back, k)
                    and np.array_equal(self.rows_back, k) and np.all(self.weights == 1.0))

    def same_as(self, other: 'SlopeKernel') -> bool:
        """Whether two kernels have the same terms."""
        return bool(np.array_equal(self.frames_back, other.frames_back)
                    and np.array_equal(self.rows_back, other.rows_back)
                    and np.array_equal(self.weights, other.weights))


def slope_kernel(length: int, slope: float, kernel: str = 'interpolated') -> SlopeKernel:
    """The kernel of one slope.

    Query frame ``k`` frames back from the anchor lies ``slope * k`` reference rows back.
    ``rounded`` aligns it with the nearest row; ``interpolated`` takes the linear interpolation
    of the two rows around that position (one row, weight 1, where it falls on a row), so a
    slope below 1 does not repeat rows and every slope keeps its exact speed.

    Args:
        length: L, query frames in a window.
        slope: reference frames per query frame (> 0).
        kernel: ``'rounded'`` or ``'interpolated'``.
    """
    k = np.arange(length, dtype=np.int64)
    pos = slope * k.astype(np.float64)
    if kernel == 'rounded':
        rows = np.round(pos).astype(np.int64)
        frames, weights = k, np.ones(length)
    elif kernel == 'interpolated':
        low = np.floor(pos + _FRAC_EPS).astype(np.int64)
        frac = pos - low
        frac[np.abs(frac) < _FRAC_EPS] = 0.0
        split = frac > 0.0
        frames = np.concatenate([k, k[split]])
        rows = np.concatenate([low, low[split] + 1])
        weights = np.concatenate([1.0 - frac, frac[split]])
        order = np.lexsort((rows, frames))
        frames, rows, weights = frames[order], rows[order], weights[order]
    else:
        raise MatchingError(f'unknown velocity kernel {kernel!r}; use rounded or interpolated')
    return SlopeKernel(float(slope), frames, rows, weights, int(rows.max()) + 1)


def build_kernels(settings: 'SeqMatchSettings') -> list[SlopeKernel]:
    """The kernels of a setting's slopes; logs a warning for slopes that collapse.

    A slope collapses when its kernel equals another slope's at this L (``rounded`` kernels
    at short L: e.g. 1.05 rounds to the identity at L = 10); it then only costs time.
    """
    kernels: list[SlopeKernel] = []
    # slopes nearest 1 first, so a collapsed kernel keeps the slope nearest constant speed
    for slope in sorted(settings.slopes, key=lambda v: abs(np.log(v))):
        kern = slope_kernel(settings.length, slope, settings.velocity_kernel)
        same = [k for k in kernels if k.same_as(kern)]
        if same:
            what = 'the identity kernel (slope 1)' if kern.is_identity else \
                f'the kernel of slope {same[0].slope:g}'
            log.warning('velocity search: slope %g is %s at sequence length %d; it adds '
                        'nothing: use a longer sequence, interpolated kernels, or drop it',
                        slope, what, settings.length)
            continue
        kernels.append(kern)
    return kernels


def reference_kernel(kernels: list[SlopeKernel]) -> int:
    """Index of the kernel whose score scale the combined scores keep: the slope nearest 1."""
    return int(np.argmin([abs(np.log(k.slope)) for k in kernels]))


@dataclass(frozen=True)
class SeqMatchSettings:
    """Parameters of a sequence match (see ``MatchingConfig`` and ``SequenceConfig``).

    Attributes:
        length: L, query frames per window.
        metric: frame distance, ``'euclidean'`` or ``'sad'``.
        window: ``'trailing'`` or ``'centred'``.
        slopes: velocity search: reference frames per query frame; the best slope wins.
        contrast_window: half-width of the local contrast enhancement (None: off).
        velocity_kernel: ``'rounded'`` (each query frame on the nearest reference row) or
            ``'interpolated'`` (fractional slopes interpolate between reference rows).
        slope_scores: how scores of different slopes are compared: ``'standardised'`` (each
            slope's scores of a query are standardised over the reference anchors, the
            minimum z-score is mapped back to the scale of the slope nearest 1) or ``'raw'``.
            With one slope both give the same numbers.
        slope_penalty: prior for constant speed (``standardised`` only; ``raw`` ignores it,
            as a single slope does): the z-score of slope
            ``v`` is raised by ``slope_penalty * |ln v|`` before the minimum (0: none; the
            identity kernel is never penalised). The defaults were chosen on Nordland in
            ``benchmarks/velocity.py``.
    """

    length: int = 5
    metric: str = 'euclidean'
    window: str = 'trailing'
    slopes: tuple[float, ...] = (1.0,)
    contrast_window: int | None = None
    velocity_kernel: Literal['rounded', 'interpolated'] = 'rounded'
    slope_scores: Literal['standardised', 'raw'] = 'standardised'
    slope_penalty: float = 3.0

    def __post_init__(self) -> None:
        if self.length < 1:
            raise MatchingError(f'sequence length must be >= 1, got {self.length}')
        if self.window == 'centred' and tuple(self.slopes) != (1.0,):
            raise MatchingError('centred windows support only the identity kernel (slope 1)')
        if self.window not in ('trailing', 'centred'):
            raise MatchingError(f'unknown window {self.window!r}')
        if not self.slopes or any(not s > 0 for s in self.slopes):
            raise MatchingError(f'slopes must be positive numbers, got {self.slopes}')
        if self.velocity_kernel not in ('interpolated', 'rounded'):
            raise MatchingError(f'unknown velocity kernel {self.velocity_kernel!r}; use '
                                'interpolated or rounded')
        if not self.slope_penalty >= 0.0:
            raise MatchingError(f'slope penalty must be >= 0, got {self.slope_penalty}')
        if self.slope_scores not in ('standardised', 'raw'):
            raise MatchingError(f'unknown slope score comparison {self.slope_scores!r}; use '
                                'standardised or raw')


def _column_stats(scores: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std (floored) over the valid rows of every column.

    Args:
        scores: ``(N,)`` or ``(N, B)`` float64 sequence distances.
        valid: ``(N,)`` bool rows that hold a score.

    Returns:
        ``(mean, std)``, each a float (column) or ``(B,)``.
    """
    vals = scores[valid]
    if vals.shape[0] == 0:
        shape = scores.shape[1:]
        return np.zeros(shape), np.ones(shape)
    mean = vals.mean(axis=0)
    std = np.maximum(vals.std(axis=0), _STD_FLOOR)
    return mean, std


class _SlopeCombiner:
    """Running minimum over slopes of the scores of a block of query columns.

    ``raw``: the minimum of the sequence distances. ``standardised``: each slope's scores are
    turned into z-scores over that slope's valid reference anchors (per query column), raised by
    the constant-speed prior ``penalty * |ln v|`` (not for the identity kernel), and the minimum
    is mapped back with the mean and std of the reference kernel (the slope nearest 1), so the
    result is in that kernel's distance units (a penalised slope's value includes its penalty).
    With one kernel the raw scores pass through unchanged.
    """

    def __init__(self, shape: tuple[int, ...], mode: str, kernels: list[SlopeKernel], ref: int,
                 penalty: float = 0.0) -> None:
        self.standardise = mode == 'standardised' and len(kernels) > 1
        self.ref = ref
        self.penalties = [0.0 if k.is_identity else penalty * abs(float(np.log(k.slope)))
                          for k in kernels]
        self.best = np.full(shape, np.inf, dtype=np.float64)
        self.mean: np.ndarray | float = 0.0
        self.std: np.ndarray | float = 1.0

    def add(self, index: int, scores: np.ndarray, valid: np.ndarray) -> None:
        """Fold in one kernel's ``(N, ...)`` scores, finite on the ``(N,)`` valid rows."""
        if self.standardise:
            mean, std = _column_stats(scores, valid)
            if index == self.ref:
                self.mean, self.std = mean, std
            z = (scores[valid] - mean) / std
            if self.penalties[index]:
                z += self.penalties[index]
        else:
            z = scores[valid]
        self.best[valid] = np.minimum(self.best[valid], z)

    def result(self) -> np.ndarray:
        """The combined scores (inf where no kernel has a window)."""
        if not self.standardise:
            return self.best
        return self.mean + self.std * self.best


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
        column_mean: ``(M,)`` float64 mean of each query's finite sequence distances (nan where
            the query has no window or fewer than two are finite).
        column_std: ``(M,)`` float64 population std of the same (nan likewise). With
            ``column_mean`` it gives the node's ``score`` without keeping the matrix
            (:func:`vpr_seq_ros.calibration.scores_from_stats`).
    """

    matches: Matches
    matrix: np.ndarray | None
    ref_valid: np.ndarray
    column_mean: np.ndarray | None = None
    column_std: np.ndarray | None = None


REF_BLOCK = 4096
"""Reference anchors per tile of :func:`seqmatch_batch`."""


def seqmatch_batch(ref_desc: np.ndarray, query_desc: np.ndarray, settings: SeqMatchSettings,
                   top_k: int = 20, ref_segments: np.ndarray | None = None,
                   query_segments: np.ndarray | None = None, keep_matrix: bool = False,
                   chunk: int = 256, ref_block: int = REF_BLOCK,
                   statistics: bool = True) -> SeqMatchResult:
    """Match every query anchor of a recorded run against all reference anchors.

    Works in tiles of ``ref_block`` reference anchors x ``chunk`` query anchors: the frame
    distances of a tile cover its reference rows plus the windows' overlap (``span - 1`` rows,
    and the contrast window on both sides), each query keeps a running top-K and running
    statistics, so memory is bounded by the tile, ``O(M * top_k)`` and ``O(N)`` integers,
    whatever N and M, unless ``keep_matrix``. A float16 map is read a block of rows at a time
    (:class:`~vpr_seq_ros.matching.distances.RowBlocks`), each block once. Standardised velocity
    search (several slopes) takes two passes: the per-slope statistics first.

    The numbers are those of one ``(N, M)`` frame distance matrix
    (:func:`seqmatch_distances`) up to float32 rounding of the matrix products; a test pins it.

    Args:
        ref_desc: ``(N, D)`` reference frame descriptors (float32 or float16).
        query_desc: ``(M, D)`` query frame descriptors.
        settings: window length, placement, frame distance, slopes, contrast enhancement.
        top_k: candidates per query.
        ref_segments: ``(N,)`` reference segment ids (default: one segment).
        query_segments: ``(M,)`` query segment ids (default: one segment).
        keep_matrix: also return the ``(N, M)`` sequence distance matrix (memory N * M * 4
            bytes: for plots of small runs).
        chunk: query anchors per tile.
        ref_block: reference anchors per tile.
        statistics: also compute ``column_mean`` and ``column_std`` (about a tenth of the
            time; None in the result without them).

    Returns:
        A :class:`SeqMatchResult`; reference indices are reference anchors.
    """
    return _Tiled(ref_desc, query_desc, settings, ref_segments, query_segments, chunk,
                  ref_block).run(top_k, keep_matrix, statistics)


class _Stats:
    """Running mean and population M2 per query (Chan et al.'s pairwise merge)."""

    def __init__(self, m: int) -> None:
        self.count = np.zeros(m)
        self.mean = np.zeros(m)
        self.m2 = np.zeros(m)

    def add(self, rows: np.ndarray, values: np.ndarray) -> None:
        """Fold in ``(B, C)`` values of the queries ``rows`` (every entry counts); sums in
        float64, two passes over the values."""
        c = values.shape[1]
        if c == 0:
            return
        v = np.asarray(values, dtype=np.float64)
        mean = v.sum(axis=1) / c
        m2 = np.maximum(np.einsum('ij,ij->i', v, v) - c * mean * mean, 0.0)
        n_a = self.count[rows]
        total = n_a + c
        delta = mean - self.mean[rows]
        self.mean[rows] += delta * (c / total)
        self.m2[rows] += m2 + delta * delta * (n_a * c / total)
        self.count[rows] = total


class _Tiled:
    """:func:`seqmatch_batch`'s tiles (see there)."""

    def __init__(self, ref_desc: np.ndarray, query_desc: np.ndarray,
                 settings: SeqMatchSettings, ref_segments: np.ndarray | None,
                 query_segments: np.ndarray | None, chunk: int, ref_block: int) -> None:
        self.settings = settings
        n, m = ref_desc.shape[0], query_desc.shape[0]
        self.n, self.m = n, m
        self.chunk, self.ref_block = max(int(chunk), 1), max(int(ref_block), 1)
        length = settings.length
        self.ref_segments = np.zeros(n, np.int64) if ref_segments is None else \
            np.asarray(ref_segments)
        query_segments = np.zeros(m, np.int64) if query_segments is None else \
            np.asarray(query_segments)
        self.seg_start, self.seg_end = segment_bounds(self.ref_segments)
        self.q_starts, self.q_valid = window_starts(query_segments, length, settings.window)
        self.kernels = []
        for kern in build_kernels(settings):
            r_starts, r_valid = window_starts(self.ref_segments, length, settings.window,
                                              kern.span)
            if kern.span > n:
                r_valid = np.zeros(n, dtype=bool)
            self.kernels.append((kern, r_starts, r_valid))
        self.ref = reference_kernel([k for k, _, _ in self.kernels])
        self.ref_valid = np.zeros(n, dtype=bool)
        for _, _, r_valid in self.kernels:
            self.ref_valid |= r_valid
        self.penalties = [0.0 if k.is_identity else
                          settings.slope_penalty * abs(float(np.log(k.slope)))
                          for k, _, _ in self.kernels]
        self.standardise = settings.slope_scores == 'standardised' and len(self.kernels) > 1
        self.queries = np.asarray(query_desc, dtype=np.float32)
        euclid = settings.metric == 'euclidean'
        self.q_sq = squared_norms(self.queries) if euclid else None
        self.queries_m2 = -2.0 * self.queries if euclid else None
        margin = max(k.span for k, _, _ in self.kernels) + length + \
            2 * (settings.contrast_window or 0) + 1
        self.rows = RowBlocks(ref_desc, self.ref_block + margin)
        if settings.metric not in ('euclidean', 'sad'):
            raise MatchingError(f'unknown frame distance {settings.metric!r}; use euclidean '
                                'or sad')

    # ------------------------------------------------------------------ tiles
    def _row_range(self, a0: int, a1: int) -> tuple[int, int] | None:
        """Reference rows the windows of anchors ``a0:a1`` read (None: no valid anchor)."""
        lo, hi = self.n, 0
        for kern, r_starts, r_valid in self.kernels:
            valid = r_valid[a0:a1]
            if valid.any():
                starts = r_starts[a0:a1][valid]
                lo, hi = min(lo, int(starts.min())), max(hi, int(starts.max()) + kern.span)
        return (lo, hi) if hi > lo else None

    def _frame_distances(self, rows: np.ndarray, rows_sq: np.ndarray | None, lo: int, hi: int,
                         first: int, last: int) -> np.ndarray:
        """``(last - first, hi - lo)`` frame distances, query frames x reference rows
        (contrast-enhanced when configured)."""
        queries = self.queries[first:last]
        if self.settings.metric == 'euclidean':
            dots = np.matmul(self.queries_m2[first:last], rows.T)  # -2 q.r, exactly
            sq = self.q_sq[first:last, None] + rows_sq[None, :]
            sq += dots
            np.maximum(sq, 0.0, out=sq)
            dist = np.sqrt(sq, out=sq)
        else:
            from scipy.spatial.distance import cdist

            dist = cdist(queries, rows, 'cityblock').astype(np.float32)
        window = self.settings.contrast_window
        if window:
            size = hi - lo
            start = np.maximum(self.seg_start[lo:hi] - lo, 0)
            end = np.minimum(self.seg_end[lo:hi] - lo, size)
            dist = contrast_enhance(dist.T, window, start, end).T
        return dist

    def _kernel_scores(self, dist: np.ndarray, lo: int, index: int, a0: int, a1: int,
                       q_anchor: np.ndarray) -> np.ndarray | None:
        """``(B, a1 - a0)`` float32 sequence distances of one kernel (inf: no window), or None
        when no anchor of the block has a window under it."""
        kern, r_starts, r_valid = self.kernels[index]
        valid = r_valid[a0:a1]
        if not valid.any():
            return None
        starts = r_starts[a0:a1][valid]
        s_lo, s_hi = int(starts.min()), int(starts.max())
        width = s_hi - s_lo + 1
        acc: np.ndarray | None = None
        for k, back, weight in zip(kern.frames_back, kern.rows_back, kern.weights):
            off = s_lo - lo + kern.span - 1 - int(back)
            cols = q_anchor - int(k)
            if cols[-1] - cols[0] == len(cols) - 1 and np.all(np.diff(cols) == 1):
                part = dist[int(cols[0]):int(cols[-1]) + 1, off:off + width]
            else:
                part = dist[cols, off:off + width]
            if weight != 1.0:
                part = np.float32(weight) * part
            if acc is None:
                acc = np.array(part, dtype=np.float32)
            else:
                acc += part
        length = self.settings.length
        if bool(valid.all()) and width == a1 - a0 and np.all(np.diff(starts) == 1):
            acc /= np.float32(length)
            return acc
        scores = np.full((len(q_anchor), a1 - a0), np.inf, dtype=np.float32)
        scores[:, np.flatnonzero(valid)] = acc[:, starts - s_lo] / length
        return scores

    def _passes(self) -> Iterator[tuple[int, int, np.ndarray, list[np.ndarray | None]]]:
        """Every tile: ``(a0, a1, query anchors, per-kernel (B, a1 - a0) scores)``."""
        anchors = np.flatnonzero(self.q_valid)
        length = self.settings.length
        euclid = self.settings.metric == 'euclidean'
        for a0 in range(0, self.n, self.ref_block):
            a1 = min(a0 + self.ref_block, self.n)
            span = self._row_range(a0, a1)
            if span is None:
                continue
            window = self.settings.contrast_window or 0
            lo, hi = max(span[0] - window, 0), min(span[1] + window, self.n)
            rows = self.rows.get(lo, hi)
            rows_sq = squared_norms(rows) if euclid else None
            for c0 in range(0, len(anchors), self.chunk):
                block = anchors[c0:c0 + self.chunk]
                first = int(self.q_starts[block].min())
                last = int(self.q_starts[block].max()) + length
                dist = self._frame_distances(rows, rows_sq, lo, hi, first, last)
                q_anchor = self.q_starts[block] - first + length - 1
                yield a0, a1, block, [self._kernel_scores(dist, lo, i, a0, a1, q_anchor)
                                      for i in range(len(self.kernels))]

    def run(self, top_k: int, keep_matrix: bool, statistics: bool = True) -> SeqMatchResult:
        n, m = self.n, self.m
        mean = std = None
        if self.standardise:  # pass 1: each slope's mean and std over the reference anchors
            stats = [_Stats(m) for _ in self.kernels]
            for a0, _, block, per_kernel in self._passes():
                for index, scores in enumerate(per_kernel):
                    if scores is not None:
                        valid = self.kernels[index][2][a0:a0 + scores.shape[1]]
                        stats[index].add(block, scores[:, valid])
            mean = [st.mean for st in stats]
            std = [np.where(st.count > 0, np.maximum(np.sqrt(st.m2 / np.maximum(st.count, 1)),
                                                     _STD_FLOOR), 1.0) for st in stats]
        ref_idx = np.full((m, top_k), -1, dtype=np.int64)
        ref_dist = np.full((m, top_k), np.inf, dtype=np.float64)
        matrix = np.full((n, m), np.inf, dtype=np.float32) if keep_matrix else None
        finite = _Stats(m)
        for a0, a1, block, per_kernel in self._passes():
            best: np.ndarray | None = None
            for index, scores in enumerate(per_kernel):
                if scores is None:
                    continue
                if self.standardise:
                    z = (scores - mean[index][block, None]) / std[index][block, None]
                    if self.penalties[index]:
                        z += self.penalties[index]
                    scores = z
                best = scores if best is None else np.minimum(best, scores, out=best)
            if best is None:
                continue
            if self.standardise:
                best = mean[self.ref][block, None] + std[self.ref][block, None] * best
            scores32 = best if best.dtype == np.float32 else best.astype(np.float32)
            if statistics:
                cols = self.ref_valid[a0:a1]  # finite there, inf elsewhere
                finite.add(block, scores32 if cols.all() else scores32[:, cols])
            _merge_top_k(ref_idx, ref_dist, block, scores32, a0, top_k)
            if matrix is not None:
                matrix[a0:a1][:, block] = scores32.T
        ref_idx[~np.isfinite(ref_dist)] = -1
        if not statistics:
            return SeqMatchResult(Matches(ref_idx, ref_dist, self.q_valid.copy()), matrix,
                                  self.ref_valid.copy())
        col_mean = np.full(m, np.nan)
        col_std = np.full(m, np.nan)
        enough = finite.count >= 2
        col_mean[enough] = finite.mean[enough]
        col_std[enough] = np.sqrt(finite.m2[enough] / finite.count[enough])
        return SeqMatchResult(Matches(ref_idx, ref_dist, self.q_valid.copy()), matrix,
                              self.ref_valid.copy(), col_mean, col_std)


def _merge_top_k(ref_idx: np.ndarray, ref_dist: np.ndarray, block: np.ndarray,
                 scores: np.ndarray, a0: int, k: int) -> None:
    """Fold a tile's ``(B, C)`` scores (anchors ``a0 ..``) into the running top-K of the
    queries ``block``: smallest first, ties by anchor index.

    Only entries below a query's current k-th distance can enter (tiles come in increasing
    anchor order, so an equal one ranks after it): one comparison pass finds them, and the
    partial sort runs only on rows with more than k of them (the first tiles).
    """
    if k == 0:
        return
    threshold = ref_dist[block, k - 1]
    entering = np.flatnonzero(scores.min(axis=1) < threshold)  # one fast pass
    if not len(entering):
        return
    block, scores, threshold = block[entering], scores[entering], threshold[entering]
    mask = scores < threshold[:, None]
    counts = np.count_nonzero(mask, axis=1)
    big = counts > k
    if big.any():
        rows = np.flatnonzero(big)
        sub = scores[rows]
        cand = np.argpartition(sub, k - 1, axis=1)[:, :k]
        _fold(ref_idx, ref_dist, block[rows], cand + a0,
              np.take_along_axis(sub, cand, axis=1), k)
    small = ~big
    if small.any():
        rows = np.flatnonzero(small)
        r, c = np.nonzero(mask[rows])  # row-major: each row's columns in order
        per_row = counts[rows]
        pos = np.arange(len(r)) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        cand = np.full((len(rows), int(per_row.max())), -1, np.int64)
        vals = np.full(cand.shape, np.inf)
        cand[r, pos] = c + a0
        vals[r, pos] = scores[rows[r], c]
        _fold(ref_idx, ref_dist, block[rows], cand, vals, k)


def _fold(ref_idx: np.ndarray, ref_dist: np.ndarray, rows: np.ndarray, cand: np.ndarray,
          vals: np.ndarray, k: int) -> None:
    """Merge candidates (``-1`` / inf: none) into the running top-K of ``rows``."""
    all_idx = np.concatenate([ref_idx[rows], cand], axis=1)
    all_val = np.concatenate([ref_dist[rows], vals.astype(np.float64)], axis=1)
    key = np.where(np.isfinite(all_val), all_idx, np.iinfo(np.int64).max)
    order = np.lexsort((key, all_val), axis=1)[:, :k]
    ref_idx[rows] = np.take_along_axis(all_idx, order, axis=1)
    ref_dist[rows] = np.take_along_axis(all_val, order, axis=1)


def seqmatch_distances(frame_dist: np.ndarray, settings: SeqMatchSettings, top_k: int = 20,
                       ref_segments: np.ndarray | None = None,
                       query_segments: np.ndarray | None = None, keep_matrix: bool = False,
                       chunk: int = 256) -> SeqMatchResult:
    """:func:`seqmatch_batch` on a precomputed frame distance matrix (parameter sweeps).

    Args:
        frame_dist: ``(N, M)`` frame distances (not contrast-enhanced: ``settings`` says
            whether to enhance them); ``settings.metric`` is not used.
        settings: as for :func:`seqmatch_batch`.
        top_k: candidates per query.
        ref_segments: ``(N,)`` reference segment ids.
        query_segments: ``(M,)`` query segment ids.
        keep_matrix: also return the ``(N, M)`` sequence distance matrix.
        chunk: query anchors per block.
    """
    frame_dist = np.asarray(frame_dist, dtype=np.float32)

    def columns(first: int, last: int) -> np.ndarray:
        return frame_dist[:, first:last]

    return _seqmatch_columns(columns, frame_dist.shape[0], frame_dist.shape[1], settings, top_k,
                             ref_segments, query_segments, keep_matrix, chunk)


def _seqmatch_columns(columns: Callable[[int, int], np.ndarray], n: int, m: int,
                      settings: SeqMatchSettings, top_k: int, ref_segments: np.ndarray | None,
                      query_segments: np.ndarray | None, keep_matrix: bool,
                      chunk: int) -> SeqMatchResult:
    length = settings.length
    ref_segments = np.zeros(n, np.int64) if ref_segments is None else np.asarray(ref_segments)
    query_segments = np.zeros(m, np.int64) if query_segments is None else \
        np.asarray(query_segments)
    seg_start, seg_end = segment_bounds(ref_segments)
    q_starts, q_valid = window_starts(query_segments, length, settings.window)
    kernels = []
    for kern in build_kernels(settings):
        r_starts, r_valid = window_starts(ref_segments, length, settings.window, kern.span)
        if kern.span > n:
            r_valid = np.zeros(n, dtype=bool)
        kernels.append((kern, r_starts, r_valid))
    ref = reference_kernel([k for k, _, _ in kernels])
    ref_idx = np.full((m, top_k), -1, dtype=np.int64)
    ref_dist = np.full((m, top_k), np.inf, dtype=np.float64)
    matrix = np.full((n, m), np.inf, dtype=np.float32) if keep_matrix else None
    col_mean = np.full(m, np.nan)
    col_std = np.full(m, np.nan)
    anchors = np.flatnonzero(q_valid)
    for lo in range(0, len(anchors), chunk):
        block = anchors[lo:lo + chunk]
        first = int(q_starts[block].min())
        last = int(q_starts[block].max()) + length
        dcols = columns(first, last)
        if settings.contrast_window:
            dcols = contrast_enhance(dcols, settings.contrast_window, seg_start, seg_end)
        # column of the query frame k back from each anchor: anchor - k - first
        q_anchor = q_starts[block] - first + length - 1
        combiner = _SlopeCombiner((n, len(block)), settings.slope_scores,
                                  [k for k, _, _ in kernels], ref, settings.slope_penalty)
        for index, (kern, r_starts, r_valid) in enumerate(kernels):
            span = kern.span
            if not r_valid.any():
                continue
            # Convolution with the kernel over window starts: one shifted add per term.
            acc = np.zeros((n - span + 1, len(block)), dtype=np.float64)
            for k, back, weight in zip(kern.frames_back, kern.rows_back, kern.weights):
                off = span - 1 - int(back)
                part = dcols[off:off + n - span + 1][:, q_anchor - int(k)]
                if weight == 1.0:
                    acc += part
                else:
                    acc += weight * part.astype(np.float64)
            scores = np.full((n, len(block)), np.inf, dtype=np.float64)
            rows = np.flatnonzero(r_valid)
            scores[rows] = acc[r_starts[rows]] / length
            combiner.add(index, scores, r_valid)
        scores32 = combiner.result().astype(np.float32)
        col_mean[block], col_std[block] = _finite_stats(scores32)
        idx, dist = _top_k(scores32, top_k)
        ref_idx[block], ref_dist[block] = idx, dist
        if matrix is not None:
            matrix[:, block] = scores32
    ref_valid = np.zeros(n, dtype=bool)
    for _, _, r_valid in kernels:
        ref_valid |= r_valid
    return SeqMatchResult(Matches(ref_idx, ref_dist, q_valid.copy()), matrix, ref_valid,
                          col_mean, col_std)


def _finite_stats(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std of the finite entries of every column, float64 ``(B,)`` each
    (nan where fewer than two are finite)."""
    d = scores.astype(np.float64)
    finite = np.isfinite(d)
    count = finite.sum(axis=0)
    d[~finite] = 0.0
    with np.errstate(invalid='ignore', divide='ignore'):
        mean = d.sum(axis=0) / count
        var = np.where(finite, (d - mean) ** 2, 0.0).sum(axis=0) / count
    few = count < 2
    mean[few] = np.nan
    var[few] = np.nan
    return mean, np.sqrt(var)


class OnlineSeqMatcher:
    """Streaming sequence matcher: trailing windows, one new query frame at a time.

    Each :meth:`push` computes one column of N frame distances (O(N*D)), contrast-enhances it if
    asked, and updates the sequence distances of every reference anchor in O(N) (identity
    kernel: running diagonal sums; other slopes: O(L*N) from the last L columns). The result
    equals :func:`seqmatch_batch` with trailing windows.

    The reference set may grow (``slam`` mode: every keyframe is scored against the past, then
    appended with ``push(..., append=True)``); the running sums stay exact because the column
    pushed k frames ago then covers exactly the first N - k references.

    A float16 map is kept float16 (e.g. memory-mapped): each push reads it as float32 a block
    of rows at a time (:class:`~vpr_seq_ros.matching.distances.RowBlocks`), so resident memory
    is the map's bytes plus O(N * L) for the sums and columns, never a float32 copy.

    Args:
        ref_desc: ``(N, D)`` float32 or float16 reference frame descriptors (N may be 0 when
            growing; a growing set is converted to float32 on its first append).
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
        if getattr(ref_desc, 'dtype', None) != np.float16:  # float16 stays float16
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
        self._blocks = RowBlocks(ref_desc) if ref_desc.dtype == np.float16 else None
        self._ref_sq = (squared_norms(ref_desc) if self._blocks is None else
                        self._blocks.squared_norms()) if settings.metric == 'euclidean' else None
        self._kernels = build_kernels(settings)
        self._ref_kernel = reference_kernel(self._kernels)
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
        for kern in self._kernels:
            self._invalid.append(np.flatnonzero(np.arange(n) - (kern.span - 1) < self._seg_start))

    def _reserve(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        capacity = max(rows, 2 * self._capacity, self._grow_to)
        dim = self._refs.shape[1]
        refs = np.empty((capacity, dim), dtype=np.float32)
        refs[:self._n] = self._refs[:self._n]
        self._blocks = None  # a growing set is float32
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

    def _kernel_scores(self, kern: SlopeKernel, n: int) -> np.ndarray:
        """``(N,)`` float64 scores of one kernel from the last L columns (inf: no window)."""
        scores = np.zeros(n, dtype=np.float64)
        reach = np.full(n, True)
        for k, back, weight in zip(kern.frames_back, kern.rows_back, kern.weights):
            shift = int(back)
            slot = self._slot(int(k))
            rows = min(n - shift, int(self._lengths[slot]))
            if rows > 0:
                col = self._columns[slot, :rows]
                if weight == 1.0:
                    scores[shift:shift + rows] += col
                else:
                    scores[shift:shift + rows] += weight * col.astype(np.float64)
            reach[max(shift + max(rows, 0), 0):] = False
        scores *= 1.0 / self.settings.length
        scores[~reach] = np.inf
        return scores

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
        refs = self._refs[:n] if self._blocks is None else self._blocks
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
            combiner = _SlopeCombiner((n,), settings.slope_scores, self._kernels,
                                      self._ref_kernel, settings.slope_penalty)
            for index, (kern, invalid) in enumerate(zip(self._kernels, self._invalid)):
                scores = sums[:n] * (1.0 / length) if kern.is_identity else \
                    self._kernel_scores(kern, n)
                scores[invalid] = np.inf
                valid = np.isfinite(scores)
                if valid.any():
                    combiner.add(index, scores, valid)
            best = combiner.result()
        if append:
            self.append_reference(descriptor, segment)
        return best
