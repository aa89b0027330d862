"""The bounded feature store: eviction policies, sizes, the .npz round trip."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.verification import (FeatureStore, Features, VerificationConfig,
                                      VerificationError, build_feature_store, load_features,
                                      save_features)


def _features(seed: int, n: int = 50, depth: bool = False) -> Features:
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, [640, 480], (n, 2)).astype(np.float32)
    desc = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    d = rng.uniform(0.5, 20, n).astype(np.float32) if depth else None
    if d is not None:
        d[:5] = np.nan
    return Features('orb', points, desc, (640, 480), d)


def _thin_reference(indices: list[int], keep_recent: int) -> int:
    """Slow reference of the thin policy: smallest neighbour gap, oldest on ties."""
    n = len(indices)
    best = None
    for p in range(1, n - 1):
        if p >= n - keep_recent:
            break
        gap = indices[p + 1] - indices[p - 1]
        if best is None or gap < best[0]:
            best = (gap, indices[p])
    return indices[0] if best is None else best[1]


def test_oldest_policy_keeps_the_newest():
    store = FeatureStore('orb', max_keyframes=5, eviction='oldest', keep_recent=2)
    evicted = []
    for i in range(9):
        evicted += store.add(i, _features(i))
    assert evicted == [0, 1, 2, 3]
    assert store.indices.tolist() == [4, 5, 6, 7, 8]
    assert store.evicted == 4 and len(store) == 5
    assert store.get(2) is None and 2 not in store


def test_thin_policy_matches_reference_and_spans_the_run():
    store = FeatureStore('orb', max_keyframes=8, eviction='thin', keep_recent=3)
    kept = []
    for i in range(40):
        before = sorted(kept + [i])
        expected = _thin_reference(before, 3) if len(before) > 8 else None
        evicted = store.add(i, _features(i, n=4))
        kept = before if expected is None else [k for k in before if k != expected]
        assert evicted == ([] if expected is None else [expected])
        assert store.indices.tolist() == kept
    assert store.indices[0] == 0 and store.indices[-3:].tolist() == [37, 38, 39]
    gaps = np.diff(store.indices[:-3])
    assert gaps.max() <= 2 * gaps.min() + 1  # uniform density over the old part


def test_nearest_stored_keyframe():
    store = FeatureStore('orb', max_keyframes=10)
    for i in (0, 4, 10, 11):
        store.add(i, _features(i, n=3))
    assert store.nearest(4, 2) == 4
    assert store.nearest(6, 2) == 4
    assert store.nearest(7, 2) is None
    assert store.nearest(8, 2) == 10
    assert store.nearest(2, 2) == 0  # tie 0 / 4: the lower


def test_sizes_and_quantisation():
    store = FeatureStore('orb', max_keyframes=4)
    f = _features(1, n=100, depth=True)
    store.add(7, f)
    assert store.nbytes == 100 * (4 + 32 + 2)
    assert store.bytes_per_keyframe == 100 * 38
    g = store.get(7)
    assert np.abs(g.keypoints - f.keypoints).max() <= 1 / 16 + 1e-6
    assert np.array_equal(g.descriptors, f.descriptors)
    assert np.allclose(g.depth_m, f.depth_m, rtol=1e-3, equal_nan=True)
    store.add(7, _features(2, n=10))  # replace: size follows
    assert store.nbytes == 10 * 36 and len(store) == 1


def test_npz_round_trip(tmp_path):
    store = FeatureStore('orb', max_keyframes=10)
    for i in range(6):
        store.add(3 * i, _features(i, n=20 + i, depth=i % 2 == 0))
    path = save_features(store, tmp_path / 'map_features.npz')
    back = load_features(path)
    assert back.indices.tolist() == store.indices.tolist()
    assert back.nbytes == store.nbytes
    for i in store.indices:
        a, b = store.get(int(i)), back.get(int(i))
        assert np.array_equal(a.keypoints, b.keypoints)
        assert np.array_equal(a.descriptors, b.descriptors)
        assert (a.depth_m is None) == (b.depth_m is None)
        if a.depth_m is not None:
            assert np.array_equal(a.depth_m, b.depth_m, equal_nan=True)
    small = load_features(path, max_keyframes=3)
    assert len(small) == 3


def test_bad_inputs():
    store = FeatureStore('orb', max_keyframes=4)
    sift = Features('sift', np.zeros((1, 2), np.float32), np.zeros((1, 128), np.uint8),
                    (10, 10))
    with pytest.raises(VerificationError, match='orb'):
        store.add(0, sift)
    with pytest.raises(VerificationError, match='too large'):
        store.add(0, Features('orb', np.zeros((1, 2), np.float32),
                              np.zeros((1, 32), np.uint8), (9000, 10)))
    with pytest.raises(VerificationError, match='eviction'):
        FeatureStore('orb', 4, eviction='random')
    with pytest.raises(VerificationError, match='not found'):
        load_features('/nonexistent/features.npz')
    arrays = store.to_arrays()
    arrays['format_version'] = np.asarray(99)
    with pytest.raises(VerificationError, match='version'):
        FeatureStore.from_arrays(arrays)


def test_build_feature_store_for_a_map(tmp_path):
    rng = np.random.default_rng(5)
    frames = [(i, (rng.random((96, 128)) * 255).astype(np.uint8)) for i in range(4)]
    store = build_feature_store(frames, VerificationConfig(max_features=60, max_image_width=0))
    assert store.indices.tolist() == [0, 1, 2, 3] and store.evicted == 0
    info = store.summary()
    assert info['feature'] == 'orb' and info['keyframes'] == 4
    assert 0 < info['keypoints_per_keyframe'] <= 60
    assert info['bytes_per_keyframe'] == pytest.approx(info['keypoints_per_keyframe'] * 36)
    back = load_features(save_features(store, tmp_path / 'f.npz'))
    assert back.summary()['bytes'] == info['bytes']
