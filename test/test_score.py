"""The published score (sampled distinctiveness): one definition, the same for exact and
approximate search, for the node, replay and calibrations on recorded matrices."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vpr_seq_ros.calibration import distinctiveness as recorded_scores
from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders.identity import IdentityEncoder
from vpr_seq_ros.matching.ann import AnchorDistances, sequence_distances_at, trailing_offsets
from vpr_seq_ros.matching.score import (ScoreSample, column_distinctiveness, distinctiveness,
                                        sample_anchors, sample_statistics, sample_stride)
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.types import Frame


def full_scan_score(distances: np.ndarray, chosen: float) -> float:
    """The score as the node published it before sampling (every finite anchor)."""
    finite = distances[np.isfinite(distances)]
    if finite.size < 2 or finite.std() <= 0:
        return 0.0
    return max((float(finite.mean()) - chosen) / float(finite.std()), 0.0)


def reference_score(distances: np.ndarray, chosen: float, size: int, radius: int = 16) -> float:
    """The sampled score written out slowly: every s-th anchor (s the smallest power of two
    leaving at most ``size``) stands for s anchors; the anchors within ``radius`` of the best
    finite one stand for themselves."""
    n = len(distances)
    stride = 1
    while len(range(0, n, stride)) > size:
        stride *= 2
    finite = [i for i in range(n) if np.isfinite(distances[i])]
    best = min(finite, key=lambda i: (distances[i], i))
    weights = {}
    if stride > 1:
        weights = {i: 1.0 for i in finite if abs(i - best) <= radius}
    for i in range(0, n, stride):
        if np.isfinite(distances[i]) and i not in weights and \
                (stride == 1 or abs(i - best) > radius):
            weights[i] = float(stride)
    if len(weights) < 2:
        return 0.0
    w = np.array(list(weights.values()))
    v = np.array([distances[i] for i in weights])
    mean = float((w * v).sum() / w.sum())
    std = math.sqrt(float((w * (v - mean) ** 2).sum() / w.sum()))
    return 0.0 if std <= 0 else max((mean - chosen) / std, 0.0)


def route(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    """A smooth random walk of positive unit descriptors (neighbours look alike)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(n, dim)), axis=0) * 0.2 + rng.normal(size=(n, dim))
    walk = np.abs(walk)
    return (walk / np.linalg.norm(walk, axis=1, keepdims=True)).astype(np.float32)


def frames(descs: np.ndarray, step_ns: int = 10**8) -> list[Frame]:
    return [Frame(index=i, stamp_ns=10**10 + i * step_ns, descriptor=d)
            for i, d in enumerate(descs)]


def config(method: str, **dotted: Any):
    return load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                  'sequence.length': 4, 'matching.top_k': 5, **dotted})


# ------------------------------------------------------------------------- the definition
def test_sample_by_hand():
    assert sample_stride(10, 4) == 4 and sample_stride(4, 4) == 1 and sample_stride(5, 4) == 2
    np.testing.assert_array_equal(sample_anchors(10, 4), [0, 4, 8])
    np.testing.assert_array_equal(sample_anchors(4, 4), [0, 1, 2, 3])
    assert len(sample_anchors(0, 4)) == 0
    # distances 1, 2, 3, inf, 5, 9 with S = 3: stride 2, but the dip (16 anchors each side of
    # the best) covers the map, so every finite distance counts once: mean 4, std sqrt(8)
    d = np.array([1.0, 2.0, 3.0, np.inf, 5.0, 9.0])
    np.testing.assert_allclose(distinctiveness(d, np.array([1.0, 2.5, 4.0]), 3),
                               [3 / math.sqrt(8), 1.5 / math.sqrt(8), 0.0])
    # 64 anchors at distance 10 except 1 at anchor 0 and 20 at anchor 40; S = 16: stride 4,
    # anchors 0, 4, ..., 60. The dip 0..16 counts once each (1 and sixteen 10s); the sampled
    # anchors 20, 24, ..., 60 stand for four each (ten 10s and the 20)
    d = np.full(64, 10.0)
    d[0], d[40] = 1.0, 20.0
    sample = ScoreSample.of(d, 16)
    assert sample.stride == 4 and len(sample.anchors) == 16
    values = np.array([1.0] + [10.0] * 16 + [10.0] * 10 + [20.0])
    weights = np.array([1.0] * 17 + [4.0] * 11)
    mean = (weights * values).sum() / weights.sum()
    std = math.sqrt((weights * (values - mean) ** 2).sum() / weights.sum())
    assert mean == pytest.approx(641 / 61)
    np.testing.assert_allclose(sample.scores(np.array([1.0, 9.0]), 0),
                               [(mean - 1) / std, (mean - 9) / std], rtol=1e-12)
    assert distinctiveness(d, np.array([1.0]), 16)[0] == pytest.approx(
        reference_score(d, 1.0, 16), rel=1e-12)
    # anchor 40 and anchors 3..5 excluded (recent keyframes): neither in the sample nor the dip
    excluded = np.zeros(64, bool)
    excluded[[3, 4, 5, 40]] = True
    values = np.array([1.0] + [10.0] * 13 + [10.0] * 10)
    weights = np.array([1.0] * 14 + [4.0] * 10)
    mean = (weights * values).sum() / weights.sum()
    std = math.sqrt((weights * (values - mean) ** 2).sum() / weights.sum())
    assert sample.without(excluded).scores(np.array([1.0]), 0)[0] == \
        pytest.approx((mean - 1) / std, rel=1e-12)
    # one counted distance left: no statistics, score 0
    alone = ScoreSample.of(np.array([1.0] + [np.inf] * 63), 16)
    assert alone.scores(np.array([1.0]), 0)[0] == 0.0
    mean, std = sample_statistics(np.array([[1.0, 2.0], [3.0, np.inf], [5.0, np.inf]]))
    np.testing.assert_allclose(mean, [3.0, np.nan])
    np.testing.assert_allclose(std, [math.sqrt(8 / 3), np.nan])


def test_growing_map_keeps_a_nested_sample():
    """In slam mode the sample is over the anchors now in the store: it only gains anchors
    until the stride doubles, and then keeps every other one."""
    size = 8
    previous = sample_anchors(1, size)
    for n in range(2, 300):
        anchors = sample_anchors(n, size)
        assert size // 2 < len(anchors) <= size or n <= size
        stride = sample_stride(n, size)
        if stride == sample_stride(n - 1, size):
            assert set(previous) <= set(anchors)
        else:
            assert stride == 2 * sample_stride(n - 1, size)
            np.testing.assert_array_equal(anchors[anchors < n - 1], previous[::2])
        previous = anchors


def test_equals_the_full_scan_score_when_the_map_fits_the_sample():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 50, 4096):
        d = rng.random(n) * 3
        d[rng.random(n) < 0.2] = np.inf
        chosen = np.sort(d[np.isfinite(d)])[:3]
        got = distinctiveness(d, chosen, 4096)
        assert list(got) == [full_scan_score(d, c) for c in chosen]  # bit for bit
    matrix = rng.random((300, 7))
    matrix[:5, 3] = np.inf
    chosen = np.argmin(matrix, axis=0)
    chosen[2] = -1
    got = column_distinctiveness(matrix, chosen, 300)
    expected = [full_scan_score(matrix[:, j], matrix[chosen[j], j]) for j in range(7)]
    assert np.isnan(got[2]) and got[[0, 1, 3, 4, 5, 6]].tolist() == \
        [expected[j] for j in (0, 1, 3, 4, 5, 6)]


def test_a_large_map_is_close_to_the_full_scan_score():
    """N = 200k distances along a structured route, S = 4096: within three times the error
    of a random sample of S/2 from a normal population, ``sqrt(1 + z^2 / 2) / sqrt(S / 2)``."""
    rng = np.random.default_rng(1)
    n = 200_000
    smooth = np.convolve(rng.normal(size=n + 99), np.ones(100) / 10, mode='valid')
    d = 5.0 + smooth + 0.3 * rng.normal(size=n)
    d[rng.random(n) < 0.05] = np.inf
    finite = d[np.isfinite(d)]
    for z in (0.0, 2.0, 5.0, 8.0):
        chosen = finite.mean() - z * finite.std()
        expected = full_scan_score(d, chosen)
        got = distinctiveness(d, np.array([chosen]), 4096)[0]
        assert abs(got - expected) <= 3 * math.sqrt(1 + z * z / 2) / math.sqrt(2048), z
    # and a recorded matrix's columns by the same function
    matrix = np.stack([d, d[::-1]], axis=1)
    top = np.nanargmin(np.where(np.isfinite(matrix), matrix, np.nan), axis=0)
    np.testing.assert_allclose(
        column_distinctiveness(matrix, top, 4096),
        [distinctiveness(matrix[:, j], np.array([matrix[top[j], j]]), 4096)[0]
         for j in range(2)], rtol=1e-12)


def test_anchor_distances_equal_the_gathered_sequence_distances():
    refs = route(120, 16)
    segments = np.repeat([0, 1], [70, 50])
    window = route(4, 16, seed=3)
    anchors = sample_anchors(120, 16)
    for metric in ('euclidean', 'sad'):
        cached = AnchorDistances(refs.astype(np.float16), segments, anchors,
                                 trailing_offsets(4), metric)
        assert cached.nbytes > 0
        reference = sequence_distances_at(refs.astype(np.float16), segments, window, anchors,
                                          trailing_offsets(4), metric)
        np.testing.assert_allclose(cached(window), reference, rtol=1e-5)
        assert np.isinf(reference[anchors % 70 < 3]).all()  # no window / crosses a segment


# ------------------------------------------------------------------------- the node
def approximate_map(tmp_path: Path, method: str, kind: str, refs: np.ndarray,
                    **dotted: Any):
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map

    np.save(tmp_path / f'ref_{method}.npy', refs)
    cfg = config(method, **{'matching.index.kind': kind, 'matching.index.nlist': 4,
                            'matching.index.nprobe': 4, **dotted})
    return load_map(build_map(tmp_path / f'ref_{method}.npy', cfg, tmp_path / f'm_{method}'))


@pytest.mark.parametrize('method', ['single', 'seqgem', 'seqmatch'])
def test_exact_and_approximate_search_publish_the_same_scores(tmp_path, method):
    """Whenever the approximate candidates contain the exact best, the scores are the exact
    ones, whether the map fits the sample (S >= N) or is sampled (S = 40 < N = 300)."""
    refs = route(300)
    rng = np.random.default_rng(5)
    query = (refs[40:120] + 0.05 * rng.normal(size=(80, 32))).astype(np.float32)
    refmap = approximate_map(tmp_path, method, 'hnsw', refs)
    for sample in (4096, 40):
        common = {'matching.score_sample': sample}
        exact = NodeCore(config(method, **common), IdentityEncoder(), refmap)
        approx = NodeCore(config(method, **common, **{
            'matching.index.kind': 'hnsw', 'matching.index.candidates': 4,
            'matching.index.ef_search': 16}), IdentityEncoder(), refmap)
        approx.record_distances = True
        compared = 0
        for frame in frames(query):
            step = approx.on_frame(frame)
            e, a = exact.on_frame(frame).hypothesis, step.hypothesis
            assert (e is None) == (a is None)
            if a is not None:  # the approximate matcher found only a few anchors
                assert np.isfinite(step.distances).sum() <= 5
            if e is None or a.best.ref_index != e.best.ref_index:
                continue
            compared += 1
            assert a.best.score == pytest.approx(e.best.score, rel=1e-5, abs=1e-6)
            assert e.best.score > 1.0
            for c in a.candidates:  # every candidate's score, from the same statistics
                other = [x for x in e.candidates if x.ref_index == c.ref_index]
                if other:
                    assert c.score == pytest.approx(other[0].score, rel=1e-5, abs=1e-6)
        assert compared >= 60, compared


def test_the_node_score_is_the_sampled_one_and_not_a_scan(tmp_path):
    """N = 300 > S = 40: the node's score is the sampled statistic of its distances, which
    differs from the full scan, and the approximate matcher computes it at the sampled
    anchors only."""
    refs = route(300)
    query = refs[100:130] + 0.02
    refmap = approximate_map(tmp_path, 'seqmatch', 'ivf-flat', refs)
    exact = NodeCore(config('seqmatch', **{'matching.score_sample': 40}), IdentityEncoder(),
                     refmap)
    exact.record_distances = True
    approx = NodeCore(config('seqmatch', **{'matching.score_sample': 40,
                                            'matching.index.kind': 'ivf-flat',
                                            'matching.index.candidates': 8}),
                      IdentityEncoder(), refmap)
    differs = 0
    for frame in frames(query):
        step = exact.on_frame(frame)
        approx.on_frame(frame)
        if step.hypothesis is None:
            continue
        best = step.hypothesis.best
        assert best.score == pytest.approx(reference_score(step.distances, best.distance, 40),
                                           rel=1e-12, abs=1e-12)
        differs += abs(best.score - full_scan_score(step.distances, best.distance)) > 1e-6
    assert differs > 0
    sampled = approx.matcher._sampled  # the L rows of the 38 sampled anchors, cached once
    np.testing.assert_array_equal(sampled[0], sample_anchors(300, 40))
    assert sampled[1].nbytes == 38 * 4 * (32 * 4 + 8)  # float32 rows and float64 norms


def test_slam_scores_use_the_sample_of_the_growing_store():
    """slam: each keyframe's score comes from the sample of the keyframes stored so far,
    with the recent ones (excluded from loop closure) left out of the statistics."""
    lap = route(60, 16, seed=2)
    rng = np.random.default_rng(4)
    laps = np.concatenate([lap, lap + 0.03 * rng.normal(size=lap.shape).astype(np.float32)])
    size = 16
    cfg = config('seqmatch', **{'node.mode': 'slam', 'matching.score_sample': size,
                                'node.loop_closure.exclude_recent_s': 2.0,
                                'node.loop_closure.min_score': 1.5})
    core = NodeCore(cfg, IdentityEncoder())
    core.record_distances = True
    checked, strides, closures = 0, set(), 0
    for frame in frames(laps):
        step = core.on_frame(frame)
        closures += len(step.loop_closures)
        if step.hypothesis is None or step.hypothesis.best is None:
            continue
        n = len(step.distances)
        excluded = core.store.stamps_ns[:n] > frame.stamp_ns - 2 * 10**9
        masked = np.where(excluded, np.inf, step.distances)
        strides.add(sample_stride(n, size))
        best = step.hypothesis.best
        assert best.score == pytest.approx(reference_score(masked, best.distance, size),
                                           rel=1e-12, abs=1e-12)
        checked += 1
    assert checked > 50 and {2, 4, 8} <= strides and closures > 0


def test_replay_equals_evaluate_and_the_recorded_matrix_scores(tmp_path):
    """replay (the node core) and evaluate (batch) find the same matches, and the scores
    replay publishes are those calibration computes from evaluate's matrix, sampled or not."""
    from vpr_seq_ros.pipeline import build_map, evaluate
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.replay import replay

    refs = route(200)
    rng = np.random.default_rng(6)
    query = (refs[30:90] + 0.05 * rng.normal(size=(60, 32))).astype(np.float32)
    np.save(tmp_path / 'ref.npy', refs)
    np.save(tmp_path / 'q.npy', query)
    refmap = load_map(build_map(tmp_path / 'ref.npy', config('seqmatch'), tmp_path / 'map'))
    for sample in (4096, 24):
        cfg = config('seqmatch', **{'matching.score_sample': sample,
                                    'node.keyframe.min_interval_s': 0.0})
        batch = evaluate(refmap, tmp_path / 'q.npy', cfg, keep_matrix=True).output
        result = replay(tmp_path / 'q.npy', cfg, refmap)
        best = [s.hypothesis.best for s in result.steps if s.hypothesis is not None]
        assert len(best) == int(batch.matches.valid.sum()) == 57
        top = np.where(batch.matches.valid, batch.matches.ref_indices[:, 0], -1)
        np.testing.assert_array_equal([b.ref_index for b in best], top[top >= 0])
        expected = recorded_scores(batch.matrix, top, sample)
        np.testing.assert_allclose([b.score for b in best], expected[top >= 0], rtol=1e-5)


@pytest.mark.parametrize('method', ['single', 'seqgem', 'seqmatch'])
def test_every_method_computes_exact_distances_at_any_anchors(method):
    """What an approximate matcher uses for the sample and the dip: a method's distances at
    chosen anchors equal its exact streaming distances there (segments respected, SeqGeM
    pooled from the frames when the map stores no sequence descriptors)."""
    from vpr_seq_ros.matching.methods import build_method
    from vpr_seq_ros.runtime.store import FixedStore
    from vpr_seq_ros.refmap import ReferenceMap, make_manifest
    from vpr_seq_ros.types import EncodedRun

    refs = route(90, 16, seed=7)
    segments = np.repeat([0, 1, 2], [40, 2, 48])
    run = EncodedRun(refs, np.arange(90, dtype=np.int64) * 10**8, None, segments)
    store = FixedStore(ReferenceMap(run, make_manifest({'name': 'npy'}, 4, 'test', 'float32',
                                                       90, 16)))
    method_ = build_method(config(method))
    stream = method_.stream(store)
    query = route(6, 16, seed=8)
    for q in query:
        exact = stream.push(q)
    window = query[-method_.window_length:]
    anchors = np.array([0, 2, 3, 5, 39, 40, 41, 42, 44, 45, 60, 89])
    got = method_.sample_search(store, anchors)(window)
    np.testing.assert_allclose(got, exact[anchors], rtol=1e-5)
    assert np.isinf(got).any() == (method != 'single')
