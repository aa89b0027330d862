"""Frame distances and SeqSLAM's local contrast enhancement.

Distances are between reference rows and query columns: a matrix is ``(N_ref, M_query)``,
a column ``(N_ref,)``. ``euclidean`` is the (not squared) L2 distance, as SeqMatchNet uses;
``sad`` is the sum of absolute differences, as SeqSLAM uses.

A float16 map stays float16 in memory (memory-mapped): :class:`RowBlocks` reads it as float32
a block of rows at a time through one reused buffer, so exact search needs no float32 copy of
the map. The conversion (and, for one query, the product with it) runs in onnxruntime on the
calling thread when it is installed: it converts with F16C, where numpy's own float16 cast is
scalar and several times slower than reading float32 (``benchmarks/seqmatch_online.py
--conversion``). torch converts as fast, but its thread pool and numpy's BLAS threads, taking
turns block after block, stall each other on a loaded 2-core machine (seconds per query), so
it is not used. Without onnxruntime numpy converts. Converting float16 to float32 is exact:
the distances are those of the float32 path up to the order of float32 summation.
"""

from __future__ import annotations

import logging
from typing import Any, Iterator

import numpy as np

from vpr_seq_ros.errors import MatchingError

log = logging.getLogger(__name__)

_STD_FLOOR = 1e-9
_SAD_BLOCK = 4096
BLOCK_BYTES = 4 << 20
"""float32 bytes converted at a time from a float16 array (a block stays in the L2/L3 cache)."""
_MIN_BLOCK_ROWS = 256
_ORT: dict[str, Any] = {}


def _ort_session(kind: str) -> Any:
    """A single-threaded onnxruntime session: ``cast`` (float16 ``(B, D)`` -> float32) or
    ``matvec`` (float16 ``(B, D)``, float32 ``(D, 1)`` -> float32 ``(B, 1)``); None when
    onnxruntime (or onnx) is not installed."""
    if kind in _ORT:
        return _ORT[kind]
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        log.info('float16 descriptors are converted with numpy (onnxruntime is not '
                 'installed: slower)')
        _ORT['cast'] = _ORT['matvec'] = None
        return None
    nodes = [helper.make_node('Cast', ['h'], ['f'], to=TensorProto.FLOAT)]
    inputs = [helper.make_tensor_value_info('h', TensorProto.FLOAT16, ['B', 'D'])]
    if kind == 'matvec':
        nodes.append(helper.make_node('MatMul', ['f', 'q'], ['y']))
        inputs.append(helper.make_tensor_value_info('q', TensorProto.FLOAT, ['D', 1]))
        outputs = [helper.make_tensor_value_info('y', TensorProto.FLOAT, ['B', 1])]
    else:
        outputs = [helper.make_tensor_value_info('f', TensorProto.FLOAT, ['B', 'D'])]
    model = helper.make_model(helper.make_graph(nodes, kind, inputs, outputs),
                              opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    options.log_severity_level = 3
    _ORT[kind] = ort.InferenceSession(model.SerializeToString(), options,
                                      providers=['CPUExecutionProvider'])
    return _ORT[kind]


def block_rows(dim: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Rows of ``dim`` float32 values that fit ``block_bytes`` (at least 256)."""
    return max(_MIN_BLOCK_ROWS, block_bytes // (4 * max(dim, 1)))


class RowBlocks:
    """An ``(N, D)`` float16 or float32 array read as float32 blocks of rows.

    float32 arrays are read in place (blocks are views); float16 ones are converted a block at
    a time into one reused buffer, never whole.

    Args:
        rows: ``(N, D)`` descriptors (e.g. a memory-mapped float16 map).
        block: rows per block (default: :func:`block_rows`).
    """

    def __init__(self, rows: np.ndarray, block: int | None = None) -> None:
        if rows.ndim != 2:
            raise MatchingError(f'descriptors must be (N, D), got {rows.shape}')
        self.rows = rows
        self.block = block or block_rows(rows.shape[1])
        self.half = rows.dtype == np.float16
        self._buffer: np.ndarray | None = None
        if not self.half and rows.dtype != np.float32:
            self.rows = np.asarray(rows, dtype=np.float32)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def _convert(self, lo: int, hi: int) -> np.ndarray:
        if self._buffer is None:
            self._buffer = np.empty((min(self.block, len(self)), self.rows.shape[1]), np.float32)
        out = self._buffer[:hi - lo]
        session = _ort_session('cast')
        if session is not None:
            out[...] = session.run(None, {'h': np.asarray(self.rows[lo:hi])})[0]
        else:
            np.copyto(out, self.rows[lo:hi])
        return out

    def get(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` as float32 (a view, or the reused buffer: valid until the next call;
        at most :attr:`block` rows for a float16 array)."""
        if not self.half:
            return self.rows[lo:hi]
        if hi - lo > self.block:
            raise MatchingError(f'at most {self.block} rows at a time, asked {hi - lo}')
        return self._convert(lo, hi)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 block)`` over the whole array."""
        for lo in range(0, len(self), self.block):
            yield lo, self.get(lo, min(lo + self.block, len(self)))

    def matvec(self, vector: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``rows @ vector``: ``(N,)`` float32."""
        vector = np.asarray(vector, dtype=np.float32)
        if not self.half:
            return np.matmul(self.rows, vector, out=out)
        out = np.empty(len(self), np.float32) if out is None else out
        session = _ort_session('matvec')
        if session is None:
            for lo, chunk in self:
                np.matmul(chunk, vector, out=out[lo:lo + len(chunk)])
            return out
        column = vector[:, None]
        for lo in range(0, len(self), self.block):
            hi = min(lo + self.block, len(self))
            out[lo:hi] = session.run(None, {'h': np.asarray(self.rows[lo:hi]),
                                            'q': column})[0][:, 0]
        return out

    def squared_norms(self) -> np.ndarray:
        """:func:`squared_norms` of every row, ``(N,)`` float32 (the same numbers)."""
        if not self.half:
            return squared_norms(self.rows)
        out = np.empty(len(self), np.float32)
        for lo, chunk in self:
            out[lo:lo + len(chunk)] = squared_norms(chunk)
        return out

    def abs_diff_sums(self, vector: np.ndarray) -> np.ndarray:
        """Sum of absolute differences of every row to ``vector``: ``(N,)`` float32."""
        q = np.asarray(vector, dtype=np.float32)
        out = np.empty(len(self), np.float32)
        step = min(self.block, _SAD_BLOCK)
        for lo in range(0, len(self), step):
            hi = min(lo + step, len(self))
            out[lo:hi] = np.abs(self.get(lo, hi) - q).sum(axis=1)
        return out


def to_float32(rows: np.ndarray) -> np.ndarray:
    """``(B, D)`` rows as float32: float16 converted as :class:`RowBlocks` does (a new array),
    float32 as is."""
    if rows.dtype != np.float16 or rows.ndim != 2:
        return np.asarray(rows, dtype=np.float32)
    session = _ort_session('cast')
    if session is None:
        return rows.astype(np.float32)
    return session.run(None, {'h': np.ascontiguousarray(rows)})[0]


def as_blocks(refs: np.ndarray | RowBlocks) -> RowBlocks:
    """``refs`` as :class:`RowBlocks` (unchanged when it already is)."""
    return refs if isinstance(refs, RowBlocks) else RowBlocks(refs)


def squared_norms(x: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 norms, float64 accumulation, float32 result: ``(N, D) -> (N,)``.

    float16 rows are converted a block at a time (:class:`RowBlocks`), not whole.
    """
    if x.dtype == np.float16 and x.ndim == 2:
        return RowBlocks(x).squared_norms()
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


def distance_column(refs: np.ndarray | RowBlocks, query: np.ndarray, metric: str,
                    ref_sq_norms: np.ndarray | None = None) -> np.ndarray:
    """Distances of one query descriptor to every reference: ``(N, D), (D,) -> (N,)`` float32.

    ``refs`` may be float16 (read in float32 blocks); pass a :class:`RowBlocks` to reuse its
    conversion buffer from call to call.
    """
    if metric == 'euclidean':
        if isinstance(refs, RowBlocks) or refs.dtype == np.float16:
            blocks = as_blocks(refs)
            rn = blocks.squared_norms() if ref_sq_norms is None else ref_sq_norms
            q = np.asarray(query, dtype=np.float32)
            dots = blocks.matvec(q)
            sq = rn - 2.0 * dots + np.float32(q @ q)
        else:
            rn = squared_norms(refs) if ref_sq_norms is None else ref_sq_norms
            q = np.asarray(query, dtype=np.float32)
            sq = rn - 2.0 * (refs @ q) + np.float32(q @ q)
        np.maximum(sq, 0.0, out=sq)
        return np.sqrt(sq, out=sq)
    if metric == 'sad':
        return sad_column(refs, query)
    raise MatchingError(f'unknown frame distance {metric!r}; use euclidean or sad')


def sad_column(refs: np.ndarray | RowBlocks, query: np.ndarray,
               block: int = _SAD_BLOCK) -> np.ndarray:
    """Sum of absolute differences to every reference, in row blocks to bound memory."""
    if isinstance(refs, RowBlocks) or refs.dtype == np.float16:
        return as_blocks(refs).abs_diff_sums(query)
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
