"""Nearest-neighbour index over descriptors (faiss ``IndexFlatL2``: exact, squared L2)."""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.types import Matches


class FlatL2Index:
    """Exact L2 search over a subset of rows of a descriptor array.

    Args:
        descriptors: ``(N, D)`` descriptors.
        valid: ``(N,)`` bool; only these rows are searchable (indices stay those of the array).
    """

    def __init__(self, descriptors: np.ndarray, valid: np.ndarray | None = None) -> None:
        import faiss

        descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
        self.rows = np.flatnonzero(valid) if valid is not None else \
            np.arange(descriptors.shape[0])
        self.index = faiss.IndexFlatL2(descriptors.shape[1])
        if len(self.rows):
            self.index.add(np.ascontiguousarray(descriptors[self.rows]))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(M, D) -> (M, k)`` row indices (-1 beyond the index size) and Euclidean distances."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = queries.shape[0]
        idx = np.full((m, k), -1, dtype=np.int64)
        dist = np.full((m, k), np.inf, dtype=np.float64)
        if m == 0 or len(self) == 0:
            return idx, dist
        sq, found = self.index.search(queries, min(k, len(self)))
        hit = found >= 0
        kk = found.shape[1]
        idx[:, :kk] = np.where(hit, self.rows[np.maximum(found, 0)], -1)
        dist[:, :kk] = np.where(hit, np.sqrt(np.maximum(sq, 0.0)), np.inf)
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
