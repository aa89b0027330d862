"""Exact search on a float16 map kept float16: the streaming matchers read it in float32 row
blocks, never whole, and give the float32 path's distances to float32 rounding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vpr_seq_ros.config import load_config
from vpr_seq_ros.matching.distances import (RowBlocks, distance_column, sad_column,
                                            squared_norms)
from vpr_seq_ros.matching.methods import build_method
from vpr_seq_ros.matching.seqmatch import OnlineSeqMatcher, SeqMatchSettings
from vpr_seq_ros.refmap import ReferenceMap, load_map, make_manifest, save_map
from vpr_seq_ros.runtime.store import FixedStore
from vpr_seq_ros.types import EncodedRun


def route(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.abs(np.cumsum(rng.normal(size=(n, d)), axis=0) / 3.0) + rng.random((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def half_map(tmp_path: Path, descs: np.ndarray, method: str = 'seqmatch') -> ReferenceMap:
    """A float16 map written and read back (memory-mapped), seqgem descriptors stored."""
    n = len(descs)
    run = EncodedRun(descs.astype(np.float16), np.arange(n, dtype=np.int64) * 10**8, None,
                     (np.arange(n) >= n // 2).astype(np.int64))
    refmap = ReferenceMap(run, make_manifest({'name': 'npy'}, 4, 'test', 'float16', n,
                                             descs.shape[1]))
    return load_map(save_map(refmap, tmp_path / f'{method}.npz'))


@pytest.mark.parametrize('block', [7, 256, 100_000])
def test_row_blocks_give_the_float32_numbers(block):
    x = route(1000, 24)
    h = x.astype(np.float16)
    exact = h.astype(np.float32)
    blocks = RowBlocks(h, block)
    q = x[3]
    np.testing.assert_array_equal(blocks.squared_norms(), squared_norms(exact))
    np.testing.assert_allclose(blocks.matvec(q), exact @ q, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(distance_column(blocks, q, 'euclidean'),
                               distance_column(exact, q, 'euclidean'), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sad_column(blocks, q), sad_column(exact, q), rtol=1e-6)
    seen = np.concatenate([chunk.copy() for _, chunk in blocks])
    np.testing.assert_array_equal(seen, exact)  # the conversion itself is exact


@pytest.mark.parametrize('settings', [
    SeqMatchSettings(length=4),
    SeqMatchSettings(length=4, metric='sad', contrast_window=5),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25), velocity_kernel='interpolated'),
])
def test_online_matcher_on_float16_equals_its_float32_copy(settings):
    refs16 = route(700, 32).astype(np.float16)
    segments = (np.arange(700) >= 400).astype(np.int64)
    queries = route(40, 32, seed=1)
    half = OnlineSeqMatcher(refs16, settings, segments)
    half._blocks.block = 64  # many blocks
    full = OnlineSeqMatcher(refs16.astype(np.float32), settings, segments)
    assert half.references.dtype == np.float16
    compared = 0
    for q in queries:
        a, b = half.push(q), full.push(q)
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b))
            fin = np.isfinite(b)
            np.testing.assert_allclose(a[fin], b[fin], rtol=1e-5, atol=1e-5)
            assert np.argmin(a) == np.argmin(b)
            compared += 1
    assert compared == 40 - settings.length + 1


@pytest.mark.parametrize('method', ['single', 'seqmatch', 'seqgem'])
def test_every_method_streams_a_float16_map_without_a_float32_copy(tmp_path, method):
    descs = route(600, 32)
    refmap = half_map(tmp_path, descs, method)
    assert isinstance(refmap.run.descriptors, np.memmap)
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                 'sequence.length': 4})
    m = build_method(cfg)
    store = FixedStore(refmap)
    if method == 'seqgem':  # as a map built for seqgem stores them (float16)
        pre = m.precompute(refmap.run)
        store._precomputed = type(pre)(pre.descriptors.astype(np.float16), None, pre.info)
    stream = m.stream(store)
    exact_store = FixedStore(refmap)
    exact_store._descriptors = np.asarray(refmap.run.descriptors, np.float32)
    if method == 'seqgem':
        exact_store._precomputed = type(pre)(pre.descriptors.astype(np.float16)
                                             .astype(np.float32), None, pre.info)
    reference = m.stream(exact_store)
    held = [v for v in vars(stream).values() if isinstance(v, np.ndarray)]
    held += [v for inner in vars(stream).values() if hasattr(inner, '__dict__')
             for v in vars(inner).values() if isinstance(v, np.ndarray)]
    assert not any(v.dtype == np.float32 and v.size >= descs.size for v in held)
    queries = route(30, 32, seed=2)
    for q in queries:
        a, b = stream.push(q, 0), reference.push(q, 0)
        if b is None:
            assert a is None
            continue
        fin = np.isfinite(b)
        np.testing.assert_array_equal(np.isfinite(a), fin)
        np.testing.assert_allclose(a[fin], b[fin], rtol=1e-5, atol=1e-5)
        assert np.argmin(a) == np.argmin(b)
