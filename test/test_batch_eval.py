"""Batch evaluation in bounded memory: the tiled matchers (reference blocks with the windows'
overlap, a running top-K per query) give the results of the whole-matrix path."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch, seqmatch_distances


def route(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.abs(np.cumsum(rng.normal(size=(n, d)), axis=0) / 3.0) + rng.random((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def assert_same_matches(got, want, tol: float = 1e-5) -> None:
    """Same valid queries, distances to float rounding, the same anchors except where two
    candidates' distances tie to that rounding."""
    rtol = tol
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_array_equal(np.isfinite(got.distances), np.isfinite(want.distances))
    fin = np.isfinite(want.distances)
    np.testing.assert_allclose(got.distances[fin], want.distances[fin], rtol=rtol, atol=tol)
    differ = got.ref_indices != want.ref_indices
    for j, r in zip(*np.nonzero(differ)):
        row = want.distances[j]
        near = np.isclose(row, row[r], rtol=rtol, atol=tol)
        assert near.sum() >= 2, f'query {j} rank {r}: {got.ref_indices[j]} vs ' \
            f'{want.ref_indices[j]}'


CASES = [
    SeqMatchSettings(length=5),
    SeqMatchSettings(length=1),
    SeqMatchSettings(length=4, window='centred'),
    SeqMatchSettings(length=5, metric='sad'),
    SeqMatchSettings(length=5, contrast_window=6),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25)),
    SeqMatchSettings(length=6, slopes=(0.75, 1.0, 1.33), velocity_kernel='interpolated'),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25), slope_scores='raw'),
]


@pytest.mark.parametrize('settings', CASES, ids=lambda s: f'{s.length}-{s.metric}-{s.window}-'
                         f'{len(s.slopes)}-{s.contrast_window}-{s.slope_scores}')
@pytest.mark.parametrize('ref_block,chunk', [(37, 11), (64, 256), (10_000, 256)])
def test_tiled_batch_equals_the_whole_matrix(settings, ref_block, chunk):
    refs = route(400, 24)
    queries = route(90, 24, seed=3)[:, :]
    queries[:60] = refs[100:160] + 0.05 * queries[:60]  # a stretch of the route, noisy
    ref_seg = (np.arange(400) >= 250).astype(np.int64) + (np.arange(400) >= 390)
    q_seg = (np.arange(90) >= 45).astype(np.int64)
    frame = distance_matrix(refs, queries, settings.metric)
    want = seqmatch_distances(frame, settings, 12, ref_seg, q_seg, keep_matrix=True)
    got = seqmatch_batch(refs, queries, settings, 12, ref_seg, q_seg, keep_matrix=True,
                         chunk=chunk, ref_block=ref_block)
    # contrast enhancement divides by a local std: float32 rounding of the frame distances
    # grows to ~1e-5 there
    tol = 1e-4 if settings.contrast_window else 1e-5
    assert_same_matches(got.matches, want.matches, tol)
    np.testing.assert_array_equal(got.ref_valid, want.ref_valid)
    np.testing.assert_array_equal(np.isfinite(got.matrix), np.isfinite(want.matrix))
    fin = np.isfinite(want.matrix)
    np.testing.assert_allclose(got.matrix[fin], want.matrix[fin], rtol=tol, atol=tol)
    np.testing.assert_allclose(got.column_mean, want.column_mean, rtol=tol, atol=tol * 1e-2,
                               equal_nan=True)
    np.testing.assert_allclose(got.column_std, want.column_std, rtol=tol, equal_nan=True)
    lean = seqmatch_batch(refs, queries, settings, 12, ref_seg, q_seg, chunk=chunk,
                          ref_block=ref_block)
    assert lean.matrix is None
    bare = seqmatch_batch(refs, queries, settings, 12, ref_seg, q_seg, chunk=chunk,
                          ref_block=ref_block, statistics=False)
    assert bare.column_mean is None
    np.testing.assert_array_equal(bare.matches.ref_indices, got.matches.ref_indices)
    np.testing.assert_array_equal(lean.matches.ref_indices, got.matches.ref_indices)
    np.testing.assert_array_equal(lean.matches.distances, got.matches.distances)


def test_a_float16_map_is_matched_from_its_float16_rows():
    refs = route(300, 16)
    half = refs.astype(np.float16)
    queries = route(40, 16, seed=5)
    settings = SeqMatchSettings(length=4)
    want = seqmatch_batch(half.astype(np.float32), queries, settings, 5)
    got = seqmatch_batch(half, queries, settings, 5, ref_block=50)
    assert_same_matches(got.matches, want.matches)


def test_more_candidates_than_anchors_pad_with_minus_one():
    refs = route(30, 8)
    got = seqmatch_batch(refs, route(12, 8, seed=1), SeqMatchSettings(length=5), 40,
                         ref_block=7)
    row = got.matches.ref_indices[-1]
    assert sorted(row[row >= 0]) == list(range(4, 30))  # every anchor with a window, once
    assert (row[26:] == -1).all() and np.isinf(got.matches.distances[-1, 26:]).all()


def test_blocked_flat_search_equals_one_faiss_index_over_the_valid_rows():
    import faiss

    from vpr_seq_ros.matching.index import FlatL2Index

    rng = np.random.default_rng(4)
    refs = rng.random((3000, 16), dtype=np.float32)
    valid = rng.random(3000) > 0.3
    queries = rng.random((45, 16), dtype=np.float32)  # faiss's BLAS path (>= 20 queries)
    rows = np.flatnonzero(valid)
    whole = faiss.IndexFlatL2(16)
    whole.add(refs[rows])
    sq, found = whole.search(queries, 9)
    idx, dist = FlatL2Index(refs, valid, block=700).search(queries, 9)
    np.testing.assert_array_equal(idx, rows[found])
    np.testing.assert_array_equal(dist, np.sqrt(np.maximum(sq, 0.0)).astype(np.float64))
    idx, dist = FlatL2Index(refs[:5], None, block=2).search(queries[:2], 9)
    assert (idx[:, 5:] == -1).all() and np.isinf(dist[:, 5:]).all()


@pytest.mark.parametrize('window', ['trailing', 'centred'])
def test_seqgem_search_in_blocks_equals_all_sequence_descriptors_at_once(window):
    from vpr_seq_ros.matching.index import FlatL2Index, search_matches
    from vpr_seq_ros.matching.seqgem import sequence_descriptors, sequence_search

    refs = np.abs(route(500, 16))
    ref_seg = (np.arange(500) >= 300).astype(np.int64)
    queries = np.abs(route(60, 16, seed=7))
    q_seq, q_valid = sequence_descriptors(queries, 5, 3.0, None, window)
    ref_seq, ref_valid = sequence_descriptors(refs, 5, 3.0, ref_seg, window)
    want = search_matches(FlatL2Index(ref_seq, ref_valid), q_seq, q_valid, 10)
    got, got_valid = sequence_search(refs.astype(np.float16).astype(np.float32), 5, 3.0,
                                     ref_seg, window, q_seq, q_valid, 10, block=37)
    np.testing.assert_array_equal(got_valid, ref_valid)
    got_f32, _ = sequence_search(refs, 5, 3.0, ref_seg, window, q_seq, q_valid, 10, block=37)
    np.testing.assert_array_equal(got_f32.ref_indices, want.ref_indices)
    np.testing.assert_array_equal(got_f32.distances, want.distances)
    assert got.valid.sum() == want.valid.sum()


@pytest.mark.parametrize('method', ['single', 'seqgem', 'seqmatch'])
def test_evaluate_keeps_no_matrix_unless_asked_and_matches_the_same(method):
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import evaluate_encoded
    from vpr_seq_ros.refmap import ReferenceMap, make_manifest
    from vpr_seq_ros.types import EncodedRun

    refs = np.abs(route(300, 16))
    queries = np.abs(refs[50:110] + 0.02 * route(60, 16, seed=9))
    run = EncodedRun(refs, np.arange(300, dtype=np.int64) * 10**8, None,
                     np.zeros(300, np.int64))
    refmap = ReferenceMap(run, make_manifest({'name': 'npy'}, 4, 'test', 'float32', 300, 16))
    query = EncodedRun(queries, np.arange(60, dtype=np.int64) * 10**8, None,
                       np.zeros(60, np.int64))
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                 'sequence.length': 4, 'evaluation.tolerance_frames': 50})
    lean = evaluate_encoded(refmap, query, cfg, keep_matrix=False)
    full = evaluate_encoded(refmap, query, cfg, keep_matrix=True)
    assert lean.output.matrix is None and full.output.matrix.shape == (300, 60)
    assert_same_matches(lean.output.matches, full.output.matches)
    assert lean.metrics.recall_at == full.metrics.recall_at
