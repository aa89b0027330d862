"""Faster approximate search pinned to the slower reference: seqmatch's one index search per
new frame (:class:`WindowCandidates`) against :func:`candidate_search` of every window, and
the exact re-ranking of ``single`` / ``seqgem`` candidates against exact search."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vpr_seq_ros.config import IndexConfig
from vpr_seq_ros.matching.ann import (AnnIndex, WindowCandidates, candidate_search,
                                      trailing_offsets)
from vpr_seq_ros.matching.index import FlatL2Index
from vpr_seq_ros.matching.methods.approximate import WindowIndexStream
from vpr_seq_ros.matching.methods.base import Precomputed
from vpr_seq_ros.matching.methods.seqgem import SeqGem
from vpr_seq_ros.matching.seqgem import seqgem, sequence_descriptors
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.matching.methods.single import SingleFrame


def route(n: int = 400, dim: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random walk of positive unit descriptors (SeqGeM pools positive values)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, dim)), axis=0) * 0.2 + rng.normal(size=(n, dim))
    walk = np.abs(walk)
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Store:
    """The part of a reference store the approximate searches read."""

    descriptors: np.ndarray
    segments: np.ndarray
    precomputed: Precomputed | None = None
    growing: bool = False

    def __len__(self) -> int:
        return len(self.descriptors)


def windows(query: np.ndarray, segments: np.ndarray, length: int) -> list[tuple[int, np.ndarray]]:
    """``(j, window)`` of every full trailing window that stays inside a query segment."""
    out = []
    for j in range(length - 1, len(query)):
        if np.all(segments[j - length + 1:j + 1] == segments[j]):
            out.append((j, query[j - length + 1:j + 1]))
    return out


@pytest.mark.parametrize('kind', ['ivf-flat', 'hnsw', 'ivf-pq'])
def test_one_search_per_frame_equals_searching_every_window_frame(kind):
    refs = route()
    ref_segments = np.repeat([0, 1], [250, 150])
    rng = np.random.default_rng(3)
    query = refs[60:160] + 0.1 * rng.normal(size=(100, 32)).astype(np.float32)
    q_segments = np.repeat([0, 1], [55, 45])
    index = AnnIndex.build(refs, IndexConfig(kind=kind, nlist=16, nprobe=2, pq_m=8,
                                             hnsw_m=8, ef_search=16))
    length, cand, k = 5, 4, 6
    offsets = trailing_offsets(length)
    fast = WindowCandidates(index, refs, ref_segments, offsets, cand, k)
    stream = WindowIndexStream(len(refs), length, fast)
    for j in range(len(query)):
        if j == 80:  # a reset mid-segment: the window refills and searches afresh
            stream.reset()
        before = fast.searched
        got = stream.push(query[j], int(q_segments[j]))
        if got is None:
            continue
        window = query[j - length + 1:j + 1]
        idx, dist = candidate_search(index, refs, ref_segments, window, offsets, cand, k)
        expected = np.full(len(refs), np.inf)
        expected[idx[idx >= 0]] = dist[idx >= 0]
        np.testing.assert_array_equal(got, expected)  # bit-identical to the reference
        # a window that (re)starts (j = 4; a new segment at 55; the reset at 80) searches
        # all its frames, every later one only its newest
        assert fast.searched - before == (length if j in (4, 59, 84) else 1)


def test_one_search_per_frame_covering_the_map_equals_dense_matching():
    refs = route(300)
    segments = np.repeat([0, 1], [180, 120])
    query = refs[100:140] + 0.08 * np.random.default_rng(2).normal(size=(40, 32)).astype(
        np.float32)
    length = 5
    dense = seqmatch_batch(refs, query, SeqMatchSettings(length=length), 10, segments)
    fast = WindowCandidates(AnnIndex.build(refs, IndexConfig(kind='exact')), refs, segments,
                            trailing_offsets(length), len(refs), 10)
    for j, window in windows(query, np.zeros(len(query), int), length):
        idx, dist = fast(window)
        np.testing.assert_allclose(dist, dense.matches.distances[j], rtol=1e-5)
        np.testing.assert_array_equal(idx, dense.matches.ref_indices[j])
    assert fast.searched == len(query)  # one search per frame


def pq_index(vectors: np.ndarray, valid: np.ndarray | None = None) -> AnnIndex:
    return AnnIndex.build(vectors, IndexConfig(kind='ivf-pq', nlist=8, nprobe=8, pq_m=4),
                          valid)


def test_single_reranks_pq_candidates_exactly():
    refs = route()
    queries = refs[::5] + 0.1 * np.random.default_rng(4).normal(size=(80, 32)).astype(
        np.float32)
    store = Store(refs.astype(np.float16), np.zeros(len(refs), np.int64))
    f16 = store.descriptors.astype(np.float32)
    index = pq_index(store.descriptors)
    exact_idx, exact_dist = FlatL2Index(f16).search(queries, 5)
    method = SingleFrame(SeqMatchSettings(length=1))
    cand, k = 8, 5
    search = method.window_search(store, index, cand, k)
    covering = method.window_search(store, index, len(refs), k)
    hits = 0
    for q, e_idx, e_dist in zip(queries, exact_idx, exact_dist):
        idx, dist = search(q[None])
        # the published distances are exact distances to the float16 rows, best first
        np.testing.assert_allclose(dist, np.linalg.norm(f16[idx] - q, axis=1), rtol=1e-6)
        assert np.all(np.diff(dist) >= 0)
        found = index.search(q[None], cand)[0][0]
        if e_idx[0] in found:  # the true best among the candidates: the exact top-1
            hits += 1
            assert idx[0] == e_idx[0]
        idx, dist = covering(q[None])  # candidates covering the map: exact search
        np.testing.assert_array_equal(idx, e_idx)
        np.testing.assert_allclose(dist, e_dist, rtol=1e-5)
    assert hits >= 40  # the check above ran on most queries
    raw = index.search(queries, 1)[1][:, 0]
    assert not np.allclose(raw, exact_dist[:, 0], rtol=1e-3)  # PQ alone is not exact


@pytest.mark.parametrize('stored', [False, True])
def test_seqgem_reranks_pq_candidates_exactly(stored):
    length, p = 4, 3.0
    refs = route()
    segments = np.repeat([0, 1], [250, 150])
    seq, valid = sequence_descriptors(refs, length, p, segments)
    pre = Precomputed(seq, valid, {'method': 'seqgem', 'length': length, 'p': p,
                                   'window': 'trailing'})
    store = Store(refs, segments, pre if stored else None)
    method = SeqGem(length, p)
    index = pq_index(seq, valid)
    exact = FlatL2Index(seq, valid)
    query = refs[20:200] + 0.1 * np.random.default_rng(6).normal(size=(180, 32)).astype(
        np.float32)
    search = method.window_search(store, index, 8, 5)
    covering = method.window_search(store, index, len(refs), 5)
    for _, window in windows(query, np.zeros(len(query), int), length)[::4]:
        current = seqgem(window, p)
        e_idx, e_dist = exact.search(current[None], 5)
        idx, dist = search(window)
        np.testing.assert_allclose(dist, np.linalg.norm(seq[idx] - current, axis=1),
                                   rtol=1e-5)
        if e_idx[0, 0] in index.search(current[None], 8)[0][0]:
            assert idx[0] == e_idx[0, 0]
        idx, dist = covering(window)
        np.testing.assert_array_equal(idx, e_idx[0])
        np.testing.assert_allclose(dist, e_dist[0], rtol=1e-5)
