"""Approximate search for large maps: faiss IVF-Flat, IVF-PQ and HNSW indexes, and exact
sequence matching driven by their candidates.

For ``single`` and ``seqgem`` an index *is* the retrieval; its top candidates are re-scored
exactly from the map's rows and re-ranked (:func:`rerank`), so published distances are exact
even from PQ codes. For ``seqmatch`` it proposes reference anchors: every frame of the query
window has the index's ``C`` nearest reference frames, each of which implies an anchor (the
frame the window would end at, per velocity kernel); the exact sequence distance is then
computed only along those anchors' diagonals. A sliding window keeps each frame's neighbours
while the frame is in it (:class:`WindowCandidates`), so a new frame costs one index search
plus ``O(C x L x L x D)`` work instead of ``O(N x D)``. When the candidates cover the map the
result is the dense one, which the tests pin.

Index contract: ``search((M, D), k) -> (row indices (M, k), Euclidean distances (M, k))``,
-1 / inf where fewer than ``k`` rows exist, exactly as :class:`FlatL2Index`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable

import numpy as np

from vpr_seq_ros.config import INDEX_KINDS, IndexConfig
from vpr_seq_ros.errors import MatchingError

log = logging.getLogger(__name__)


_ADD_BLOCK = 65_536
"""Rows converted to float32 and added at a time: memory stays bounded for float16 maps."""


TRAIN_SIZE = 100_000
"""IVF training sample: at most this many rows, drawn with a fixed seed."""

EF_CONSTRUCTION = 80
"""HNSW build-time beam."""


def auto_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ``4 sqrt(n)``, with at least 39 training points per cell."""
    return int(max(1, min(4 * math.sqrt(n), n // 39)))


class AnnIndex:
    """A faiss index over the valid rows of a descriptor array.

    Use :meth:`build` to train one, :meth:`to_bytes`/:meth:`from_bytes` to store it with a map.
    """

    def __init__(self, index: object, params: IndexConfig, rows: np.ndarray) -> None:
        self.index = index
        self.params = params
        self.rows = np.asarray(rows, np.int64)
        self._configure()

    def _configure(self) -> None:
        import faiss

        if self.params.kind in ('ivf-flat', 'ivf-pq'):
            faiss.extract_index_ivf(self.index).nprobe = self.params.nprobe
        elif self.params.kind == 'hnsw':
            self.index.hnsw.efSearch = self.params.ef_search  # type: ignore[attr-defined]

    @classmethod
    def build(cls, vectors: np.ndarray, params: IndexConfig,
              valid: np.ndarray | None = None, seed: int = 0) -> AnnIndex:
        """Train (IVF) and fill an index; float16 or memory-mapped inputs are read in blocks.

        Args:
            vectors: ``(N, D)`` descriptors.
            params: index kind and parameters.
            valid: ``(N,)`` searchable rows (default all).
            seed: seed of the IVF training sample.

        Raises:
            MatchingError: too few rows, or PQ sub-quantisers that do not divide D.
        """
        import faiss

        rows = np.flatnonzero(valid) if valid is not None else np.arange(len(vectors))
        n, dim = len(rows), vectors.shape[1]
        if n == 0:
            raise MatchingError('cannot build an index over an empty map')
        kind = params.kind
        if kind == 'exact':
            index = faiss.IndexFlatL2(dim)
        elif kind == 'hnsw':
            index = faiss.IndexHNSWFlat(dim, params.hnsw_m)
            index.hnsw.efConstruction = EF_CONSTRUCTION
        else:
            nlist = params.nlist or auto_nlist(n)
            if nlist > n:
                raise MatchingError(f'{kind} with {nlist} cells needs at least that many rows '
                                    f'(the map has {n}); lower nlist or use exact search')
            quantizer = faiss.IndexFlatL2(dim)
            if kind == 'ivf-flat':
                index = faiss.IndexIVFFlat(quantizer, dim, nlist)
            else:
                if dim % params.pq_m:
                    raise MatchingError(f'ivf-pq: pq_m = {params.pq_m} must divide the '
                                        f'descriptor size {dim}')
                index = faiss.IndexIVFPQ(quantizer, dim, nlist, params.pq_m, 8)
            rng = np.random.default_rng(seed)
            sample = rows if n <= TRAIN_SIZE else \
                np.sort(rng.choice(rows, TRAIN_SIZE, replace=False))
            train = np.empty((len(sample), dim), np.float32)  # filled in blocks: no copy
            for lo in range(0, len(sample), _ADD_BLOCK):  # of the sample in the input dtype
                train[lo:lo + _ADD_BLOCK] = vectors[sample[lo:lo + _ADD_BLOCK]]
            index.train(train)
            del train
            index.nprobe = params.nprobe
            params = dataclasses.replace(params, nlist=nlist)
        for lo in range(0, n, _ADD_BLOCK):
            block = rows[lo:lo + _ADD_BLOCK]
            index.add(np.ascontiguousarray(vectors[block], dtype=np.float32))
        return cls(index, params, rows)

    def __len__(self) -> int:
        return int(self.index.ntotal)  # type: ignore[attr-defined]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(M, D) -> (M, k)`` row indices (-1 beyond what was found) and Euclidean
        distances (inf there), best first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        m = queries.shape[0]
        idx = np.full((m, k), -1, dtype=np.int64)
        dist = np.full((m, k), np.inf, dtype=np.float64)
        if m == 0 or len(self) == 0 or k == 0:
            return idx, dist
        sq, found = self.index.search(queries, min(k, len(self)))  # type: ignore[attr-defined]
        hit = found >= 0
        kk = found.shape[1]
        idx[:, :kk] = np.where(hit, self.rows[np.maximum(found, 0)], -1)
        dist[:, :kk] = np.where(hit, np.sqrt(np.maximum(sq, 0.0)), np.inf)
        return idx, dist

    def to_bytes(self) -> np.ndarray:
        """The index serialised by faiss, as a ``uint8`` array (stored in a map file)."""
        import faiss

        return np.asarray(faiss.serialize_index(self.index), dtype=np.uint8)

    def write(self, path: str) -> None:
        """Write the index to a file, the same bytes as :meth:`to_bytes` (no copy in memory:
        ``build-map`` streams the file into the map).

        Raises:
            MatchingError: the file cannot be written.
        """
        import faiss

        try:
            faiss.write_index(self.index, str(path))
        except RuntimeError as err:
            raise MatchingError(f'cannot write the {self.params.kind} index to {path}: '
                                f'{err}') from err

    @classmethod
    def from_bytes(cls, data: np.ndarray, params: IndexConfig, rows: np.ndarray) -> AnnIndex:
        """Read back what :meth:`to_bytes` wrote.

        Raises:
            MatchingError: the bytes are not a faiss index.
        """
        import faiss

        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        except RuntimeError as err:
            raise MatchingError(f'the stored {params.kind} index cannot be read: {err}') from err
        return cls(index, params, rows)


def trailing_offsets(length: int, steps: np.ndarray | None = None) -> np.ndarray:
    """Reference offsets (relative to the anchor, <= 0) of the L frames of a trailing window.

    Args:
        length: L.
        steps: ``(S, L)`` integer reference-frame offsets per velocity kernel, as the dense
            matcher uses them; default the identity kernel ``-(L-1) .. 0``.

    Returns:
        ``(S, L)`` int64 offsets, column ``t`` for query frame ``t`` (the last is the newest).
    """
    if steps is None:
        return (np.arange(length) - (length - 1))[None].astype(np.int64)
    steps = np.asarray(steps, np.int64)
    if steps.ndim != 2 or steps.shape[1] != length:
        raise MatchingError(f'velocity offsets must be (S, {length}), got {steps.shape}')
    return steps


def candidate_anchors(found: np.ndarray, offsets: np.ndarray, num_refs: int) -> np.ndarray:
    """Anchors implied by the index's nearest reference frames of each window frame.

    Args:
        found: ``(L, C)`` reference rows found for each query frame (-1: none).
        offsets: ``(S, L)`` from :func:`trailing_offsets`.
        num_refs: N, to drop anchors past the map.

    Returns:
        Sorted unique anchors in ``[0, N)``.
    """
    anchors = found[None, :, :] - offsets[:, :, None]  # (S, L, C): a = r - offset
    anchors = anchors[(found[None] >= 0) & (anchors >= 0) & (anchors < num_refs)]
    return np.unique(anchors)


def sequence_distances_at(refs: np.ndarray, ref_segments: np.ndarray, window: np.ndarray,
                          anchors: np.ndarray, offsets: np.ndarray, metric: str = 'euclidean',
                          block: int = 256) -> np.ndarray:
    """Exact sequence distances of a query window at given reference anchors.

    The distance of anchor ``a`` under kernel ``s`` is the mean over the window's frames
    ``t`` of the frame distance between reference ``a + offsets[s, t]`` and query frame
    ``t``; the result is the minimum over kernels, inf where no kernel fits inside the
    anchor's segment.

    Args:
        refs: ``(N, D)`` reference frame descriptors (float32, float16 or memory-mapped).
        ref_segments: ``(N,)`` segment ids.
        window: ``(L, D)`` query frame descriptors, oldest first.
        anchors: ``(A,)`` anchors.
        offsets: ``(S, L)`` reference offsets per kernel.
        metric: ``euclidean`` or ``sad``.
        block: anchors per gather (bounds the ``(block, S, L, D)`` temporary).

    Returns:
        ``(A,)`` float64 distances.
    """
    window = np.asarray(window, np.float32)
    out = np.full(len(anchors), np.inf)
    n = len(refs)
    for lo in range(0, len(anchors), block):
        a = anchors[lo:lo + block]
        rows = a[:, None, None] + offsets[None]  # (B, S, L)
        inside = (rows >= 0) & (rows < n)
        safe = np.clip(rows, 0, n - 1)
        same = ref_segments[safe] == ref_segments[a][:, None, None]
        fits = np.all(inside & same, axis=2)  # (B, S)
        gathered = np.asarray(refs[safe.reshape(-1)], np.float32).reshape(
            safe.shape + (window.shape[1],))
        diff = gathered - window[None, None]
        if metric == 'euclidean':
            frame = np.sqrt(np.einsum('bsld,bsld->bsl', diff, diff))
        elif metric == 'sad':
            frame = np.abs(diff).sum(axis=3)
        else:
            raise MatchingError(f'unknown frame distance {metric!r}; use euclidean or sad')
        seq = np.where(fits, frame.mean(axis=2), np.inf)
        out[lo:lo + block] = seq.min(axis=1)
    return out


CACHE_BYTES = 256 * 2**20
"""Most bytes of float32 rows :class:`AnchorDistances` keeps; beyond, it gathers per window."""


class AnchorDistances:
    """Exact sequence distances of query windows at a fixed set of anchors, from their
    reference rows gathered once as float32 (the score's sample of an approximate matcher,
    :mod:`vpr_seq_ros.matching.score`).

    Per window the work is ``A x S x L`` frame distances over the cached rows (``O(A L D)``
    for the identity kernel), never the map; the result equals :func:`sequence_distances_at`
    at the same anchors to float32 rounding. When the rows would take more than
    :data:`CACHE_BYTES` they are gathered from ``refs`` for every window instead.

    Args:
        refs: ``(N, D)`` reference rows (float32, float16 or memory-mapped).
        ref_segments: ``(N,)`` segment ids.
        anchors: ``(A,)`` anchors.
        offsets: ``(S, L)`` reference offsets per kernel (:func:`trailing_offsets`).
        metric: ``euclidean`` or ``sad``.
        valid: ``(N,)`` bool, the rows that may be used (None: all); an anchor that needs
            another row has infinite distance.
    """

    def __init__(self, refs: np.ndarray, ref_segments: np.ndarray, anchors: np.ndarray,
                 offsets: np.ndarray, metric: str = 'euclidean',
                 valid: np.ndarray | None = None) -> None:
        if metric not in ('euclidean', 'sad'):
            raise MatchingError(f'unknown frame distance {metric!r}; use euclidean or sad')
        self.anchors = np.asarray(anchors, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self.metric = metric
        self._refs, self._segments = refs, np.asarray(ref_segments)
        n, dim = refs.shape
        kernels, length = self.offsets.shape
        rows = self.anchors[:, None, None] + self.offsets[None]  # (A, S, L)
        inside = (rows >= 0) & (rows < n)
        safe = np.clip(rows, 0, max(n - 1, 0))
        usable = inside & (self._segments[safe] == self._segments[self.anchors][:, None, None])
        if valid is not None:
            usable &= np.asarray(valid, bool)[safe]
        self._fits = np.all(usable, axis=2).T  # (S, A)
        self._rows: np.ndarray | None = None
        if valid is not None or safe.size * dim * 4 <= CACHE_BYTES:
            order = safe.transpose(1, 2, 0).reshape(-1)  # kernel, window frame, anchor
            self._rows = np.asarray(refs[order], np.float32).reshape(
                kernels * length, len(self.anchors), dim)
            self._sq = np.einsum('kad,kad->ka', self._rows, self._rows, dtype=np.float64)

    @property
    def nbytes(self) -> int:
        """Bytes of the cached rows (0 when they are gathered per window)."""
        return 0 if self._rows is None else int(self._rows.nbytes + self._sq.nbytes)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """``(L, D)`` query window, oldest first -> ``(A,)`` float64 distances (inf where no
        kernel fits)."""
        if self._rows is None:
            return sequence_distances_at(self._refs, self._segments, window, self.anchors,
                                         self.offsets, self.metric)
        kernels, length = self.offsets.shape
        tiled = np.tile(np.asarray(window, np.float32), (kernels, 1))  # (S * L, D)
        if self.metric == 'euclidean':
            # einsum, not BLAS: single-threaded, so a busy second core cannot stall it
            dots = np.einsum('kad,kd->ka', self._rows, tiled)
            sq = self._sq - 2.0 * dots + np.einsum('kd,kd->k', tiled, tiled)[:, None]
            frame = np.sqrt(np.maximum(sq, 0.0))  # (S * L, A)
        else:
            frame = np.stack([np.abs(rows - w).sum(axis=1)
                              for rows, w in zip(self._rows, tiled)]).astype(np.float64)
        seq = frame.reshape(kernels, length, -1).mean(axis=1)
        return np.where(self._fits, seq, np.inf).min(axis=0)


def _best(anchors: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` finite smallest of ``dist`` (stable), padded with -1 / inf."""
    finite = np.isfinite(dist)
    anchors, dist = anchors[finite], dist[finite]
    order = np.argsort(dist, kind='stable')[:k]
    idx = np.full(k, -1, np.int64)
    out = np.full(k, np.inf)
    idx[:len(order)], out[:len(order)] = anchors[order], dist[order]
    return idx, out


def candidate_search(index: AnnIndex, refs: np.ndarray, ref_segments: np.ndarray,
                     window: np.ndarray, offsets: np.ndarray, candidates: int, k: int,
                     metric: str = 'euclidean') -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` reference anchors of one query window by candidate-driven exact matching.

    Searches the index for every window frame; a sliding window should use
    :class:`WindowCandidates`, which searches only the new frame.

    Returns:
        ``(k,)`` anchors best first (-1 where fewer were found) and their distances (inf).
    """
    found, _ = index.search(window, candidates)
    anchors = candidate_anchors(found, offsets, len(refs))
    dist = sequence_distances_at(refs, ref_segments, window, anchors, offsets, metric)
    return _best(anchors, dist, k)


class WindowCandidates:
    """:func:`candidate_search` for a sliding query window, one index search per new frame.

    Each window frame's index neighbours are kept while the frame stays in the window (keyed
    by the frame's bytes, so a result never depends on where the window came from); a window
    that shares no frame with the previous one (a reset or a new segment) searches all its
    frames again. The anchors, and so the distances, are those of :func:`candidate_search`.

    Args:
        index: the map's index over its frame descriptors.
        refs: ``(N, D)`` reference frame descriptors.
        ref_segments: ``(N,)`` segment ids.
        offsets: ``(S, L)`` reference offsets per kernel (:func:`trailing_offsets`).
        candidates: C, neighbours asked per window frame.
        k: anchors returned.
        metric: ``euclidean`` or ``sad``.
    """

    def __init__(self, index: AnnIndex, refs: np.ndarray, ref_segments: np.ndarray,
                 offsets: np.ndarray, candidates: int, k: int,
                 metric: str = 'euclidean') -> None:
        self.index, self.refs, self.ref_segments = index, refs, ref_segments
        self.offsets, self.candidates, self.k, self.metric = offsets, candidates, k, metric
        self._found: dict[bytes, np.ndarray] = {}
        self.searched = 0
        """Window frames searched in the index so far (for tests and benchmarks)."""

    def reset(self) -> None:
        """Forget the kept neighbours (a reset or a segment change)."""
        self._found.clear()

    def __call__(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(L, D)`` window, oldest first -> ``(k,)`` anchors best first (-1: none) and
        their exact sequence distances (inf)."""
        window = np.ascontiguousarray(window, np.float32)
        keys = [row.tobytes() for row in window]
        missing = [t for t, key in enumerate(keys) if key not in self._found]
        if missing:
            found, _ = self.index.search(window[missing], self.candidates)
            self._found.update(zip((keys[t] for t in missing), found))
            self.searched += len(missing)
        self._found = {key: self._found[key] for key in keys}  # only the window's frames
        found = np.stack([self._found[key] for key in keys])
        anchors = candidate_anchors(found, self.offsets, len(self.refs))
        dist = sequence_distances_at(self.refs, self.ref_segments, window, anchors,
                                     self.offsets, self.metric)
        return _best(anchors, dist, self.k)


def rerank(found: np.ndarray, exact: Callable[[np.ndarray], np.ndarray],
           k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score an index's candidates exactly and re-rank them.

    Args:
        found: ``(C,)`` rows an index returned (-1: none).
        exact: ``(A,)`` rows -> ``(A,)`` exact distances (inf: not a valid anchor).
        k: results kept.

    Returns:
        ``(k,)`` rows best first by exact distance (-1 where fewer) and the distances (inf).
    """
    rows = np.asarray(found, np.int64)
    rows = rows[rows >= 0]
    dist = np.asarray(exact(rows), np.float64) if len(rows) else np.zeros(0)
    return _best(rows, dist, k)


def frame_distances(refs: np.ndarray, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact Euclidean distances of ``(D,)`` ``query`` to the ``(A,)`` ``rows`` of ``refs``
    (float32, float16 or memory-mapped; only those rows are read), as float64."""
    diff = np.asarray(refs[np.asarray(rows, np.int64)], np.float32) - \
        np.asarray(query, np.float32)
    return np.sqrt(np.einsum('ad,ad->a', diff, diff, dtype=np.float64))


__all__ = ['CACHE_BYTES', 'INDEX_KINDS', 'AnchorDistances', 'AnnIndex', 'WindowCandidates',
           'auto_nlist', 'candidate_anchors', 'candidate_search', 'frame_distances', 'rerank',
           'sequence_distances_at', 'trailing_offsets']
