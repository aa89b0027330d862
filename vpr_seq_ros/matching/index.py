"""Exact nearest-neighbour search over descriptors (faiss brute force, squared L2).

The descriptors are not copied: they are searched a block of rows at a time (a float16 map
read as float32 blocks, :class:`~vpr_seq_ros.matching.distances.RowBlocks`), each query keeping
a running top-K, so memory is one block whatever the map's size.
"""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.matching.distances import RowBlocks
from vpr_seq_ros.types import Matches

SEARCH_BLOCK = 32768
"""Rows searched at a time (32768 x 512 float32: 64 MiB)."""


def merge_top_k(idx: np.ndarray, dist: np.ndarray, new_idx: np.ndarray, new_dist: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k smallest of two ``(M, *)`` candidate sets per row, smallest first, ties by index;
    ``-1`` / inf entries last."""
    all_idx = np.concatenate([idx, new_idx], axis=1)
    all_val = np.concatenate([dist, new_dist], axis=1)
    key = np.where(all_idx < 0, np.iinfo(np.int64).max, all_idx)
    order = np.lexsort((key, all_val), axis=1)[:, :k]
    return np.take_along_axis(all_idx, order, axis=1), np.take_along_axis(all_val, order, axis=1)


class FlatL2Index:
    """Exact L2 search over a subset of rows of a descriptor array, in blocks of rows.

    Args:
        descriptors: ``(N, D)`` float32 or float16 descriptors (kept, not copied).
        valid: ``(N,)`` bool; only these rows are searchable (indices stay those of the array).
        block: rows searched at a time.
    """

    def __init__(self, descriptors: np.ndarray, valid: np.ndarray | None = None,
                 block: int = SEARCH_BLOCK) -> None:
        self.descriptors = RowBlocks(descriptors, block)
        self.valid = None if valid is None else np.asarray(valid, bool)
        self.rows = np.flatnonzero(self.valid) if self.valid is not None else \
            np.arange(descriptors.shape[0])

    def __len__(self) -> int:
        return len(self.rows)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(M, D) -> (M, k)`` row indices (-1 beyond the index size) and Euclidean distances."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = queries.shape[0]
        idx = np.full((m, k), -1, dtype=np.int64)
        dist = np.full((m, k), np.inf, dtype=np.float64)
        if m == 0 or len(self) == 0:
            return idx, dist
        import faiss

        for lo, chunk in self.descriptors:
            ids = np.arange(lo, lo + len(chunk))
            if self.valid is not None:
                keep = self.valid[lo:lo + len(chunk)]
                if not keep.any():
                    continue
                chunk, ids = chunk[keep], ids[keep]
            kk = min(k, len(ids))
            sq, found = faiss.knn(queries, np.ascontiguousarray(chunk), kk)
            hit = found >= 0
            new_idx = np.where(hit, ids[np.maximum(found, 0)], -1)
            new_dist = np.where(hit, np.sqrt(np.maximum(sq, 0.0)), np.inf)
            idx, dist = merge_top_k(idx, dist, new_idx, new_dist.astype(np.float64), k)
        return idx, dist


def search_matches(index: FlatL2Index, queries: np.ndarray, valid: np.ndarray,
                   k: int) -> Matches:
    """Search the valid query rows; invalid rows get -1 / inf."""
    m = queries.shape[0]
    ref_idx = np.full((m, k), -1, dtype=np.int64)
    dist = np.full((m, k), np.inf, dtype=np.float64)
    rows = np.flatnonzero(valid)
    if len(rows):
        ref_idx[rows], dist[rows] = index.search(queries[rows], k)
    return Matches(ref_idx, dist, np.asarray(valid, dtype=bool).copy())
