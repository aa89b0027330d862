"""Approximate search: every approximate path pinned to the exact one on small seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.config import IndexConfig
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.matching.ann import (INDEX_KINDS, AnnIndex, candidate_search,
                                      sequence_distances_at, trailing_offsets)
from vpr_seq_ros.matching.index import FlatL2Index
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch


def route(n: int = 600, dim: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random walk of unit descriptors: neighbours along the route are similar."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, dim)).astype(np.float32)
    walk = np.cumsum(steps, axis=0) * 0.2 + rng.normal(size=(n, dim)).astype(np.float32)
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize('kind', INDEX_KINDS)
def test_index_kinds_agree_with_exact_search(kind):
    refs = route()
    queries = refs[::7] + 0.05 * np.random.default_rng(1).normal(size=(86, 32)).astype(
        np.float32)
    exact_idx, exact_dist = FlatL2Index(refs).search(queries, 5)
    params = IndexConfig(kind=kind, nlist=8, nprobe=8, pq_m=8, hnsw_m=16, ef_search=200)
    index = AnnIndex.build(refs, params)
    idx, dist = index.search(queries, 5)
    if kind in ('exact', 'ivf-flat', 'hnsw'):  # nprobe = nlist / a wide beam: exhaustive
        np.testing.assert_array_equal(idx[:, 0], exact_idx[:, 0])
        np.testing.assert_allclose(dist, exact_dist, rtol=1e-4, atol=1e-5)
    else:  # product quantisation approximates distances; the top-1 still agrees mostly
        assert np.mean(idx[:, 0] == exact_idx[:, 0]) >= 0.8
    restored = AnnIndex.from_bytes(index.to_bytes(), index.params, index.rows)
    np.testing.assert_array_equal(restored.search(queries, 5)[0], idx)


def test_index_over_valid_rows_and_float16_input():
    refs = route(200).astype(np.float16)
    valid = np.zeros(200, bool)
    valid[50:] = True
    index = AnnIndex.build(refs, IndexConfig(kind='ivf-flat', nlist=4, nprobe=4), valid)
    idx, _ = index.search(refs[:60].astype(np.float32), 3)
    assert (idx >= 50).all()
    with pytest.raises(MatchingError, match='pq_m'):
        AnnIndex.build(refs, IndexConfig(kind='ivf-pq', nlist=4, pq_m=7))
    with pytest.raises(ConfigError, match='not one of'):
        IndexConfig(kind='annoy')


@pytest.mark.parametrize('metric', ['euclidean', 'sad'])
def test_candidate_search_covering_the_map_equals_dense_matching(metric):
    refs = route(300)
    segments = np.repeat([0, 1], [180, 120])
    rng = np.random.default_rng(2)
    query = refs[100:140] + 0.08 * rng.normal(size=(40, 32)).astype(np.float32)
    length = 5
    dense = seqmatch_batch(refs, query, SeqMatchSettings(length=length, metric=metric), 10,
                           segments)
    index = AnnIndex.build(refs, IndexConfig(kind='exact'))
    offsets = trailing_offsets(length)
    for j in range(length - 1, len(query)):
        window = query[j - length + 1:j + 1]
        idx, dist = candidate_search(index, refs, segments, window, offsets, len(refs), 10,
                                     metric)
        np.testing.assert_allclose(dist, dense.matches.distances[j], rtol=1e-5)
        np.testing.assert_array_equal(idx, dense.matches.ref_indices[j])


def test_sequence_distances_by_hand():
    refs = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]], np.float32)
    segments = np.array([0, 0, 0, 0, 1])
    window = np.array([[1.0], [2.5]], np.float32)
    offsets = trailing_offsets(2)  # the anchor and the frame before it
    got = sequence_distances_at(refs, segments, window, np.array([1, 2, 3, 4, 0]), offsets)
    # anchor 1: (|0-1| + |1-2.5|) / 2; anchor 2: (0 + 0.5) / 2; anchor 3: (1 + 0.5) / 2;
    # anchor 4 crosses into another segment; anchor 0 has no frame before it
    np.testing.assert_allclose(got, [1.25, 0.25, 0.75, np.inf, np.inf])
    two_kernels = np.array([[-1, 0], [-2, 0]])  # slope 1 and slope 2
    got = sequence_distances_at(refs, segments, window, np.array([3]), two_kernels)
    np.testing.assert_allclose(got, [min((1 + 0.5) / 2, (0 + 0.5) / 2)])


@pytest.mark.parametrize('method', ['single', 'seqgem', 'seqmatch'])
@pytest.mark.parametrize('kind', ['ivf-flat', 'hnsw', 'ivf-pq'])
def test_map_index_round_trip_and_exhaustive_search_equals_exact(tmp_path, method, kind):
    """Built into the map, read back, searched exhaustively: the same matches as the exact
    path in evaluate and in the node core."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.pipeline import build_map, evaluate
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.runtime.core import NodeCore
    from vpr_seq_ros.types import Frame

    refs = route(300)
    rng = np.random.default_rng(5)
    query = refs[40:120] + 0.05 * rng.normal(size=(80, 32)).astype(np.float32)
    np.save(tmp_path / 'ref.npy', refs)
    np.save(tmp_path / 'q.npy', query)
    base = {'encoder.name': 'npy', 'matching.method': method, 'sequence.length': 4,
            'matching.top_k': 5, 'evaluation.recall_at': [1, 5],
            'evaluation.tolerance_frames': 2}
    approx = {**base, 'matching.index.kind': kind, 'matching.index.nlist': 4,
              'matching.index.nprobe': 4, 'matching.index.pq_m': 8,
              'matching.index.ef_search': 400, 'matching.index.candidates': 300}
    map_path = build_map(tmp_path / 'ref.npy', load_config(overrides=approx), tmp_path / 'm')
    refmap = load_map(map_path)
    assert refmap.manifest.get('index')['kind'] == kind and refmap.index is not None
    exact = evaluate(refmap, tmp_path / 'q.npy', load_config(overrides=base))
    fast = evaluate(refmap, tmp_path / 'q.npy', load_config(overrides=approx))
    # every method re-scores its candidates exactly (PQ distances included), which here
    # cover the map
    top = exact.output.matches.top(5)
    np.testing.assert_array_equal(fast.output.matches.top(5).ref_indices[top.valid],
                                  top.ref_indices[top.valid])
    np.testing.assert_allclose(fast.output.matches.top(5).distances[top.valid],
                               top.distances[top.valid], rtol=1e-4)
    assert fast.metrics.recall_at == exact.metrics.recall_at
    core = NodeCore(load_config(overrides=approx), IdentityEncoder(), refmap)
    steps = [core.on_frame(Frame(index=j, stamp_ns=j * 10**8, descriptor=query[j]))
             for j in range(len(query))]
    got = [s.hypothesis.best.ref_index for s in steps if s.hypothesis is not None]
    expected = fast.output.matches.ref_indices[fast.output.matches.valid, 0]
    np.testing.assert_array_equal(got, expected)  # the node and evaluate agree


def test_approximate_search_refuses_what_it_cannot_do(tmp_path):
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.errors import MapError
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.runtime.core import NodeCore

    np.save(tmp_path / 'ref.npy', route(100))
    plain = load_map(build_map(tmp_path / 'ref.npy', load_config(overrides={
        'encoder.name': 'npy'}), tmp_path / 'm'))
    with pytest.raises(MapError, match='needs a hnsw index'):
        NodeCore(load_config(overrides={'encoder.name': 'npy', 'matching.index.kind': 'hnsw'}),
                 IdentityEncoder(), plain)
    with pytest.raises(MatchingError, match='identity kernel'):
        build_map(tmp_path / 'ref.npy', load_config(overrides={
            'encoder.name': 'npy', 'matching.index.kind': 'hnsw', 'matching.slopes': [1, 1.5]}),
            tmp_path / 'm2')
