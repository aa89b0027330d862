"""SeqGeM (JIST): a generalized mean over the frame descriptors of a sequence.

``s_k = ( (1/L) * sum_t max(f_{t,k}, 1e-6)^p )^(1/p)`` for every dimension k; order-invariant,
any L, no final normalisation (as the official code, so distances stay comparable with it).
Retrieval is nearest neighbour under L2 (faiss ``IndexFlatL2``).
"""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.matching.distances import to_float32
from vpr_seq_ros.matching.windows import window_starts
from vpr_seq_ros.types import Matches

SEQGEM_EPS = 1e-6
_BLOCK = 8192


def seqgem(frames: np.ndarray, p: float) -> np.ndarray:
    """Pool frame descriptors over time: ``(..., L, D) -> (..., D)`` float32."""
    x = np.maximum(np.asarray(frames, dtype=np.float64), SEQGEM_EPS)
    return np.power(np.mean(np.power(x, p), axis=-2), 1.0 / p).astype(np.float32)


def sequence_descriptors(frames: np.ndarray, length: int, p: float,
                         segments: np.ndarray | None = None,
                         window: str = 'trailing', dtype: type | np.dtype = np.float32
                         ) -> tuple[np.ndarray, np.ndarray]:
    """SeqGeM descriptor of every anchor's window, computed a block of anchors at a time in
    float64 and rounded straight into ``dtype`` (a float16 map needs no float32 copy).

    Args:
        frames: ``(N, D)`` frame descriptors.
        length: L.
        p: SeqGeM exponent.
        segments: ``(N,)`` segment ids (windows never cross them).
        window: ``'trailing'`` or ``'centred'``.
        dtype: ``float32`` or ``float16``; float16 holds the float32 values rounded once.

    Returns:
        ``(descriptors, valid)``: ``(N, D)`` of ``dtype`` (zeros where invalid) and ``(N,)``
        bool.
    """
    n = frames.shape[0]
    segments = np.zeros(n, np.int64) if segments is None else np.asarray(segments)
    starts, valid = window_starts(segments, length, window)
    out = np.zeros(frames.shape, dtype=dtype)
    anchors = np.flatnonzero(valid)
    for lo in range(0, len(anchors), _BLOCK):
        block = anchors[lo:lo + _BLOCK]
        out[block] = _pooled(frames, starts[block], length, p)
    return out, valid


def _pooled(frames: np.ndarray, starts: np.ndarray, length: int, p: float) -> np.ndarray:
    """SeqGeM of the windows starting at ``starts`` (sorted): ``(B, D)`` float32."""
    first = int(starts.min())
    last = int(starts.max()) + length
    powered = _power(np.maximum(to_float32(frames[first:last]).astype(np.float64), SEQGEM_EPS),
                     p)
    rows = starts - first
    if len(rows) > 1 and np.all(np.diff(rows) == 1):  # consecutive windows: L shifted adds
        total = powered[rows[0]:rows[-1] + 1].copy()
        for t in range(1, length):
            total += powered[rows[0] + t:rows[-1] + 1 + t]
        mean = total / length
    else:
        windows = np.lib.stride_tricks.sliding_window_view(powered, length, axis=0)
        mean = windows[rows].mean(axis=-1)
    root = np.cbrt(mean) if p == 3.0 else np.sqrt(mean) if p == 2.0 else \
        np.power(mean, 1.0 / p)
    return root.astype(np.float32)


def _power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p`` in place for float64 ``x``; small integer p by multiplication (several times
    faster than ``pow``, within an ulp of it)."""
    if p in (2.0, 3.0, 4.0):
        base = x.copy()
        for _ in range(int(p) - 1):
            x *= base
        return x
    return np.power(x, p, out=x)


def sequence_search(frames: np.ndarray, length: int, p: float, segments: np.ndarray | None,
                    window: str, queries: np.ndarray, query_valid: np.ndarray,
                    k: int, block: int = _BLOCK) -> tuple[Matches, np.ndarray]:
    """Nearest reference anchors (L2 between SeqGeM descriptors) of every query descriptor,
    in bounded memory: the reference sequence descriptors are made and searched a block of
    anchors at a time, never all at once. The results equal those of
    :func:`sequence_descriptors` followed by one exact index over all of them.

    Args:
        frames: ``(N, D)`` reference frame descriptors (float32 or float16).
        length: L.
        p: SeqGeM exponent.
        segments: ``(N,)`` reference segment ids.
        window: ``'trailing'`` or ``'centred'``.
        queries: ``(M, D)`` query sequence descriptors.
        query_valid: ``(M,)`` bool, the queries that have a window.
        k: candidates per query.
        block: reference anchors per block.

    Returns:
        ``(matches, ref_valid)``: top-k per query, and ``(N,)`` bool anchors with a window.
    """
    from vpr_seq_ros.matching.index import FlatL2Index, merge_top_k

    n = frames.shape[0]
    segments = np.zeros(n, np.int64) if segments is None else np.asarray(segments)
    starts, ref_valid = window_starts(segments, length, window)
    m = queries.shape[0]
    rows = np.flatnonzero(query_valid)
    idx = np.full((len(rows), k), -1, np.int64)
    dist = np.full((len(rows), k), np.inf)
    anchors = np.flatnonzero(ref_valid)
    if len(rows):
        for lo in range(0, len(anchors), block):
            chunk = anchors[lo:lo + block]
            found, far = FlatL2Index(_pooled(frames, starts[chunk], length, p)).search(
                queries[rows], k)
            found = np.where(found >= 0, chunk[np.maximum(found, 0)], -1)
            idx, dist = merge_top_k(idx, dist, found, far, k)
    ref_idx = np.full((m, k), -1, np.int64)
    ref_dist = np.full((m, k), np.inf)
    ref_idx[rows], ref_dist[rows] = idx, dist
    return Matches(ref_idx, ref_dist, np.asarray(query_valid, bool).copy()), ref_valid
