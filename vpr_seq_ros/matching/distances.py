"""Frame distances and SeqSLAM's local contrast enhancement.

Distances are between reference rows and query columns: a matrix is ``(N_ref, M_query)``,
a column ``(N_ref,)``. ``euclidean`` is the (not squared) L2 distance, as SeqMatchNet uses;
``sad`` is the sum of absolute differences, as SeqSLAM uses.
"""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.errors import MatchingError

_STD_FLOOR = 1e-9
_SAD_BLOCK = 4096


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 norms, float64 accumulation, float32 result: ``(N, D) -> (N,)``."""
    return np.einsum('ij,ij->i', x, x, dtype=np.float64).astype(np.float32)


def distance_matrix(refs: np.ndarray, queries: np.ndarray, metric: str,
                    ref_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Frame distances ``(N, D), (M, D) -> (N, M)`` float32.

    Args:
        refs: reference descriptors.
        queries: query descriptors.
        metric: ``'euclidean'`` or ``'sad'``.
        ref_sq_norms: precomputed ``squared_norms(refs)`` (euclidean only).
    """
    refs = np.asarray(refs, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.float32)
    if metric == 'euclidean':
        rn = squared_norms(refs) if ref_sq_norms is None else ref_sq_norms
        qn = squared_norms(queries)
        sq = rn[:, None] + qn[None, :] - 2.0 * (refs @ queries.T)
        np.maximum(sq, 0.0, out=sq)
        return np.sqrt(sq, out=sq)
    if metric == 'sad':
        from scipy.spatial.distance import cdist

        out = np.empty((refs.shape[0], queries.shape[0]), dtype=np.float32)
        for lo in range(0, refs.shape[0], _SAD_BLOCK):
            out[lo:lo + _SAD_BLOCK] = cdist(refs[lo:lo + _SAD_BLOCK], queries, 'cityblock')
        return out
    raise MatchingError(f'unknown frame distance {metric!r}; use euclidean or sad')


def distance_column(refs: np.ndarray, query: np.ndarray, metric: str,
                    ref_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Distances of one query descriptor to every reference: ``(N, D), (D,) -> (N,)``."""
    if metric == 'euclidean':
        rn = squared_norms(refs) if ref_sq_norms is None else ref_sq_norms
        q = np.asarray(query, dtype=np.float32)
        sq = rn - 2.0 * (refs @ q) + np.float32(q @ q)
        np.maximum(sq, 0.0, out=sq)
        return np.sqrt(sq, out=sq)
    if metric == 'sad':
        return sad_column(refs, query)
    raise MatchingError(f'unknown frame distance {metric!r}; use euclidean or sad')


def sad_column(refs: np.ndarray, query: np.ndarray, block: int = _SAD_BLOCK) -> np.ndarray:
    """Sum of absolute differences to every reference, in row blocks to bound memory."""
    q = np.asarray(query, dtype=np.float32)
    out = np.empty(refs.shape[0], dtype=np.float32)
    for lo in range(0, refs.shape[0], block):
        chunk = np.asarray(refs[lo:lo + block], dtype=np.float32)
        out[lo:lo + block] = np.abs(chunk - q).sum(axis=1)
    return out


def contrast_enhance(columns: np.ndarray, window: int, seg_start: np.ndarray,
                     seg_end: np.ndarray) -> np.ndarray:
    """SeqSLAM local contrast enhancement of distance columns along the reference axis.

    Each entry becomes ``(d - mean) / std`` over the reference rows ``[i - window, i + window]``
    clipped to the row's segment (population std, floored at 1e-9). Works on a column ``(N,)``
    or a matrix ``(N, M)`` (each column separately); O(N) per column via cumulative sums.

    Args:
        columns: ``(N,)`` or ``(N, M)`` distances.
        window: half-width of the window in reference rows.
        seg_start: ``(N,)`` segment start of each reference row.
        seg_end: ``(N,)`` segment end (exclusive) of each reference row.
    """
    d = np.asarray(columns, dtype=np.float64)
    squeeze = d.ndim == 1
    if squeeze:
        d = d[:, None]
    n = d.shape[0]
    rows = np.arange(n)
    lo = np.maximum(rows - window, seg_start)
    hi = np.minimum(rows + window + 1, seg_end)
    zero = np.zeros((1, d.shape[1]))
    c1 = np.concatenate([zero, np.cumsum(d, axis=0)])
    c2 = np.concatenate([zero, np.cumsum(d * d, axis=0)])
    count = (hi - lo)[:, None].astype(np.float64)
    mean = (c1[hi] - c1[lo]) / count
    var = np.maximum((c2[hi] - c2[lo]) / count - mean * mean, 0.0)
    out = ((d - mean) / np.maximum(np.sqrt(var), _STD_FLOOR)).astype(np.float32)
    return out[:, 0] if squeeze else out
