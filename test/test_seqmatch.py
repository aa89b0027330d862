"""Sequence matching: batch and online forms against a naive double loop on seeded data."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.distances import contrast_enhance, distance_matrix
from vpr_seq_ros.matching.seqmatch import (OnlineSeqMatcher, SeqMatchSettings, build_kernels,
                                           seqmatch_batch, seqmatch_distances, slope_kernel,
                                           slope_offsets)
from vpr_seq_ros.matching.windows import segment_bounds, window_starts


def naive_frame_distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if metric == 'euclidean':
        return float(np.sqrt(((a64 - b64) ** 2).sum()))
    return float(np.abs(a64 - b64).sum())


def naive_enhanced_column(refs, q, metric, window, segments):
    """Contrast enhancement written out per row (no cumulative sums)."""
    col = np.array([naive_frame_distance(r, q, metric) for r in refs])
    if window is None:
        return col
    out = np.empty_like(col)
    for i in range(len(col)):
        same = [k for k in range(max(0, i - window), min(len(col), i + window + 1))
                if all(segments[m] == segments[i] for m in range(min(k, i), max(k, i) + 1))]
        vals = col[same]
        out[i] = (col[i] - vals.mean()) / max(vals.std(), 1e-9)
    return out


def naive_windows(segments, length, window, span):
    """Window frame lists per anchor, written from the definition."""
    n = len(segments)
    out = []
    for j in range(n):
        seg = [k for k in range(n) if segments[k] == segments[j]]
        lo, hi = min(seg), max(seg) + 1
        if window == 'trailing':
            first = j - span + 1
            out.append(first if first >= lo else None)
        else:
            if hi - lo < span:
                out.append(None)
            else:
                out.append(min(max(j - length // 2, lo), hi - span))
    return out


def naive_kernel(slope, length, kernel):
    """[(frames back, rows back, weight)] written from the definition."""
    terms = []
    for k in range(length):
        pos = slope * k
        if kernel == 'rounded':
            terms.append((k, int(round(pos)), 1.0))
            continue
        low = math.floor(pos + 1e-9)
        frac = pos - low
        if abs(frac) < 1e-9:
            terms.append((k, low, 1.0))
        else:
            terms += [(k, low, 1.0 - frac), (k, low + 1, frac)]
    return terms


def naive_combine(per_slope, slopes, mode, penalty=0.0, length=None, kernel='rounded'):
    """Minimum over slopes; 'standardised': of per-column z-scores over the finite rows plus
    penalty * |ln v|, mapped back with the mean/std of the slope nearest 1 (one slope:
    unchanged)."""
    if mode == 'raw' or len(per_slope) == 1:
        return np.min(per_slope, axis=0)
    ref = int(np.argmin([abs(math.log(v)) for v in slopes]))
    out = np.full(per_slope[0].shape, np.inf)
    for j in range(out.shape[1]):
        best, stats = np.inf * np.ones(out.shape[0]), None
        for v, s in enumerate(per_slope):
            col = s[:, j]
            fin = np.isfinite(col)
            if not fin.any():
                continue
            mean, std = col[fin].mean(), max(col[fin].std(), 1e-9)
            if v == ref:
                stats = (mean, std)
            identity = naive_kernel(slopes[v], length, kernel) == \
                [(k, k, 1.0) for k in range(length)]
            cost = 0.0 if identity else penalty * abs(math.log(slopes[v]))
            best = np.minimum(best, (col - mean) / std + cost)
        mean, std = stats if stats is not None else (0.0, 1.0)
        out[:, j] = mean + std * best
    return out


def unique_slopes(settings):
    """Slopes whose kernels differ (a duplicate kernel changes nothing but the warning)."""
    seen, out = [], []
    for v in sorted(settings.slopes, key=lambda v: abs(math.log(v))):
        terms = naive_kernel(v, settings.length, settings.velocity_kernel)
        if terms not in seen:
            seen.append(terms)
            out.append(v)
    return out


def naive_seqmatch(refs, queries, settings, ref_segments, query_segments):
    """(N, M) sequence distances by the definition: a double loop over anchors."""
    n, m, length = len(refs), len(queries), settings.length
    cols = np.stack([naive_enhanced_column(refs, q, settings.metric, settings.contrast_window,
                                           ref_segments) for q in queries], axis=1)
    q_first = naive_windows(query_segments, length, settings.window, length)
    slopes = unique_slopes(settings)
    per_slope = []
    for slope in slopes:
        terms = naive_kernel(slope, length, settings.velocity_kernel)
        span = max(back for _, back, _ in terms) + 1
        r_first = naive_windows(ref_segments, length, settings.window, span)
        scores = np.full((n, m), np.inf)
        for i in range(n):
            for j in range(m):
                if q_first[j] is None or r_first[i] is None:
                    continue
                q_last = q_first[j] + length - 1
                r_last = r_first[i] + span - 1
                scores[i, j] = sum(w * cols[r_last - back, q_last - k]
                                   for k, back, w in terms) / length
        per_slope.append(scores)
    return naive_combine(per_slope, slopes, settings.slope_scores, settings.slope_penalty,
                         length, settings.velocity_kernel)


def seeded_runs(n=40, m=30, d=16, seed=0):
    rng = np.random.default_rng(seed)
    refs = rng.normal(size=(n, d)).astype(np.float32)
    queries = (refs[5:5 + m] + 0.5 * rng.normal(size=(m, d))).astype(np.float32)
    return refs, queries


CASES = [
    SeqMatchSettings(length=1),
    SeqMatchSettings(length=5),
    SeqMatchSettings(length=4, metric='sad'),
    SeqMatchSettings(length=5, window='centred'),
    SeqMatchSettings(length=6, window='centred', metric='sad', contrast_window=3),
    SeqMatchSettings(length=5, contrast_window=4),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25, 1.5)),
    SeqMatchSettings(length=7, metric='sad', slopes=(1.0, 2.0), contrast_window=5),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25, 1.5), slope_scores='raw'),
    SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25), velocity_kernel='rounded'),
    SeqMatchSettings(length=6, slopes=(0.7, 1.1, 1.3), velocity_kernel='rounded',
                     slope_scores='raw', contrast_window=3),
    SeqMatchSettings(length=5, slopes=(0.75, 1.05, 1.0), contrast_window=2),
]


@pytest.mark.parametrize('settings', CASES, ids=lambda s: repr(s))
@pytest.mark.parametrize('segmented', [False, True])
def test_batch_equals_naive(settings, segmented):
    refs, queries = seeded_runs()
    ref_seg = np.repeat([0, 1, 2], [15, 3, 22]) if segmented else np.zeros(len(refs), int)
    q_seg = np.repeat([4, 7], [12, 18]) if segmented else np.zeros(len(queries), int)
    expected = naive_seqmatch(refs, queries, settings, ref_seg, q_seg)
    result = seqmatch_batch(refs, queries, settings, top_k=5, ref_segments=ref_seg,
                            query_segments=q_seg, keep_matrix=True, chunk=7)
    np.testing.assert_allclose(result.matrix, expected, rtol=1e-4, atol=1e-4)
    # top-K is the sorted head of every valid column
    for j in np.flatnonzero(result.matches.valid):
        order = np.argsort(expected[:, j], kind='stable')[:5]
        np.testing.assert_allclose(result.matches.distances[j],
                                   np.where(np.isfinite(expected[order, j]),
                                            expected[order, j], np.inf), rtol=1e-4, atol=1e-4)
    invalid = ~result.matches.valid
    assert np.all(np.isinf(expected[:, invalid]))
    assert np.all(result.matches.ref_indices[invalid] == -1)


@pytest.mark.parametrize('settings', [s for s in CASES if s.window == 'trailing'],
                         ids=lambda s: repr(s))
def test_online_equals_batch(settings):
    refs, queries = seeded_runs(seed=3)
    ref_seg = np.repeat([0, 1], [25, 15])
    q_seg = np.repeat([0, 1], [13, 17])
    batch = seqmatch_batch(refs, queries, settings, top_k=3, ref_segments=ref_seg,
                           query_segments=q_seg, keep_matrix=True)
    online = OnlineSeqMatcher(refs, settings, ref_seg, resync_every=4)
    for j, (q, seg) in enumerate(zip(queries, q_seg)):
        scores = online.push(q, int(seg))
        if not batch.matches.valid[j]:
            assert scores is None
        else:
            np.testing.assert_allclose(scores, batch.matrix[:, j], rtol=1e-5, atol=1e-5)


def test_online_running_sums_stay_exact_over_long_runs():
    rng = np.random.default_rng(1)
    refs = rng.normal(size=(50, 8)).astype(np.float32)
    settings = SeqMatchSettings(length=5)
    online = OnlineSeqMatcher(refs, settings, resync_every=10_000)
    queries = rng.normal(size=(600, 8)).astype(np.float32)
    for q in queries:
        scores = online.push(q)
    expected = seqmatch_batch(refs, queries[-5:], settings, keep_matrix=True).matrix[:, -1]
    np.testing.assert_allclose(scores, expected, rtol=1e-6, atol=1e-6)


def test_online_resets_on_segment_change_and_reset():
    refs, queries = seeded_runs()
    online = OnlineSeqMatcher(refs, SeqMatchSettings(length=3))
    assert online.push(queries[0]) is None
    assert online.push(queries[1]) is None
    assert online.push(queries[2]) is not None
    assert online.push(queries[3], segment=1) is None
    online.reset()
    assert online.num_frames == 0 and not online.ready


def test_online_rejects_centred():
    with pytest.raises(MatchingError, match='trailing'):
        OnlineSeqMatcher(np.zeros((4, 2), np.float32), SeqMatchSettings(window='centred'))


def test_sequence_matching_finds_the_true_place():
    refs, queries = seeded_runs(n=60, m=40, d=32, seed=5)
    result = seqmatch_batch(refs, queries, SeqMatchSettings(length=5), top_k=1)
    truth = np.arange(len(queries)) + 5
    valid = result.matches.valid
    assert np.mean(result.matches.ref_indices[valid, 0] == truth[valid]) > 0.95


def test_slope_offsets():
    np.testing.assert_array_equal(slope_offsets(5, 1.0), [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(slope_offsets(3, 2.0), [0, 2, 4])
    assert slope_offsets(5, 0.5)[-1] == 2


def test_windows_and_segments():
    seg = np.array([0, 0, 0, 1, 1, 1, 1, 1, 2])
    start, end = segment_bounds(seg)
    np.testing.assert_array_equal(start, [0, 0, 0, 3, 3, 3, 3, 3, 8])
    np.testing.assert_array_equal(end, [3, 3, 3, 8, 8, 8, 8, 8, 9])
    starts, valid = window_starts(seg, 3, 'trailing')
    np.testing.assert_array_equal(valid, [0, 0, 1, 0, 0, 1, 1, 1, 0])
    starts, valid = window_starts(seg, 3, 'centred')
    np.testing.assert_array_equal(valid, [1, 1, 1, 1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(starts[:8], [0, 0, 0, 3, 3, 4, 5, 5])


def test_official_centred_boundary_example():
    # methods.md 4.5: n = 10, L = 5: anchors 0, 1, 2 -> frames 0..4; 8, 9 -> 5..9.
    starts, valid = window_starts(np.zeros(10, int), 5, 'centred')
    assert valid.all()
    np.testing.assert_array_equal(starts, [0, 0, 0, 1, 2, 3, 4, 5, 5, 5])


def test_contrast_enhance_matrix_equals_columns():
    rng = np.random.default_rng(2)
    d = rng.random((30, 4)).astype(np.float32)
    seg = np.repeat([0, 1], [12, 18])
    s, e = segment_bounds(seg)
    full = contrast_enhance(d, 3, s, e)
    for j in range(4):
        np.testing.assert_allclose(full[:, j], contrast_enhance(d[:, j], 3, s, e), rtol=1e-6)
        np.testing.assert_allclose(full[:, j], naive_enh(d[:, j], 3, seg), rtol=1e-4,
                                   atol=1e-5)


def naive_enh(col, window, seg):
    out = np.empty(len(col))
    for i in range(len(col)):
        idx = [k for k in range(max(0, i - window), min(len(col), i + window + 1))
               if seg[k] == seg[i]]
        out[i] = (col[i] - col[idx].mean()) / max(col[idx].std(), 1e-9)
    return out


def test_distance_matrix_metrics():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(7, 5)), rng.normal(size=(3, 5))
    for metric in ('euclidean', 'sad'):
        expected = np.array([[naive_frame_distance(x, y, metric) for y in b] for x in a])
        np.testing.assert_allclose(distance_matrix(a, b, metric), expected, rtol=1e-5)
    with pytest.raises(MatchingError, match='unknown frame distance'):
        distance_matrix(a, b, 'cosine')


def naive_causal_scores(frames, segments, settings, j):
    """slam mode by definition: column c is frame c against frames 0..c-1 (as they were then)."""
    length = settings.length
    cols = {c: naive_enhanced_column(frames[:c], frames[c], settings.metric,
                                     settings.contrast_window, segments[:c])
            for c in range(max(0, j - length + 1), j + 1)}
    slopes = unique_slopes(settings)
    per_slope = []
    for slope in slopes:
        terms = naive_kernel(slope, length, settings.velocity_kernel)
        span = max(back for _, back, _ in terms) + 1
        scores = np.full((j, 1), np.inf)
        for i in range(j):
            rows = range(i - span + 1, i + 1)
            if i - span + 1 < 0 or any(segments[r] != segments[i] for r in rows):
                continue
            if any(i - back >= j - k for k, back, _ in terms):  # not yet a reference then
                continue
            scores[i, 0] = sum(w * cols[j - k][i - back] for k, back, w in terms) / length
        per_slope.append(scores)
    return naive_combine(per_slope, slopes, settings.slope_scores, settings.slope_penalty,
                         length, settings.velocity_kernel)[:, 0]


@pytest.mark.parametrize('settings', [SeqMatchSettings(length=4),
                                      SeqMatchSettings(length=3, metric='sad',
                                                       contrast_window=3),
                                      SeqMatchSettings(length=4, slopes=(0.5, 1.0, 1.5)),
                                      SeqMatchSettings(length=4, slopes=(0.5, 1.0, 1.5),
                                                       velocity_kernel='rounded',
                                                       slope_scores='raw'),
                                      SeqMatchSettings(length=5, slopes=(0.8, 1.25),
                                                       contrast_window=2)],
                         ids=lambda s: repr(s))
def test_growing_reference_equals_naive_causal_matching(settings):
    """slam mode: every frame is scored against all earlier frames, then appended."""
    rng = np.random.default_rng(7)
    frames = rng.normal(size=(24, 6)).astype(np.float32)
    segments = np.repeat([0, 1], [14, 10])
    online = OnlineSeqMatcher(np.zeros((0, 6), np.float32), settings, capacity=4,
                              resync_every=5)
    for j in range(len(frames)):
        scores = online.push(frames[j], 0, append=False)
        online.append_reference(frames[j], int(segments[j]))
        if j < settings.length - 1:
            assert scores is None
            continue
        expected = naive_causal_scores(frames, segments, settings, j)
        assert scores.shape == (j,)
        np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert online.num_references == 24


def test_slope_kernels_by_hand():
    ident = slope_kernel(4, 1.0)
    assert ident.is_identity and ident.span == 4
    np.testing.assert_array_equal(ident.rows_back, [0, 1, 2, 3])
    slow = slope_kernel(3, 0.75)
    # k = 0: row 0; k = 1: 0.75 -> rows 0 (0.25), 1 (0.75); k = 2: 1.5 -> rows 1, 2 (0.5 each)
    np.testing.assert_array_equal(slow.frames_back, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(slow.rows_back, [0, 0, 1, 1, 2])
    np.testing.assert_allclose(slow.weights, [1.0, 0.25, 0.75, 0.5, 0.5])
    assert slow.span == 3 and not slow.is_identity
    fast = slope_kernel(3, 2.0)
    np.testing.assert_array_equal(fast.rows_back, [0, 2, 4])
    assert fast.span == 5
    rounded = slope_kernel(10, 0.8, 'rounded')
    assert len(set(rounded.rows_back.tolist())) == 8     # 0.8 revisits rows at L = 10
    assert slope_kernel(10, 1.05, 'rounded').is_identity
    assert not slope_kernel(10, 1.05).is_identity
    with pytest.raises(MatchingError, match='velocity kernel'):
        slope_kernel(3, 1.0, 'cubic')


def test_collapsed_slopes_warn(caplog):
    with caplog.at_level(logging.WARNING, logger='vpr_seq_ros.matching.seqmatch'):
        kernels = build_kernels(SeqMatchSettings(length=10, slopes=(1.0, 1.05),
                                                 velocity_kernel='rounded'))
    assert len(kernels) == 1
    assert 'slope 1.05 is the identity kernel' in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='vpr_seq_ros.matching.seqmatch'):
        assert len(build_kernels(SeqMatchSettings(length=10, slopes=(1.0, 1.05),
                                                  velocity_kernel='interpolated'))) == 2
        assert len(build_kernels(SeqMatchSettings(length=1, slopes=(0.8, 1.0)))) == 1
    assert 'slope 0.8 is the identity kernel' in caplog.text


def test_settings_validation():
    with pytest.raises(MatchingError, match='positive'):
        SeqMatchSettings(slopes=(0.0, 1.0))
    with pytest.raises(MatchingError, match='>= 0'):
        SeqMatchSettings(slope_penalty=-1.0)


def test_single_slope_scores_are_unchanged_by_the_slope_scheme():
    refs, queries = seeded_runs(seed=8)
    base = seqmatch_batch(refs, queries, SeqMatchSettings(length=5, velocity_kernel='rounded',
                                                          slope_scores='raw'), keep_matrix=True)
    new = seqmatch_batch(refs, queries, SeqMatchSettings(length=5, slope_penalty=2.0),
                         keep_matrix=True)
    np.testing.assert_array_equal(base.matrix, new.matrix)


@pytest.mark.parametrize('settings', [SeqMatchSettings(length=5, slopes=(0.8, 1.0, 1.25),
                                                       slope_penalty=2.0),
                                      SeqMatchSettings(length=4, metric='sad', contrast_window=3,
                                                       slopes=(0.75, 1.0, 1.33),
                                                       slope_penalty=0.5),
                                      SeqMatchSettings(length=5, slopes=(1.05, 0.6, 1.5),
                                                       velocity_kernel='rounded',
                                                       slope_penalty=1.0)],
                         ids=lambda s: repr(s))
def test_penalty_batch_online_naive_and_precomputed_distances_agree(settings):
    refs, queries = seeded_runs(seed=9)
    ref_seg = np.repeat([0, 1], [22, 18])
    expected = naive_seqmatch(refs, queries, settings, ref_seg, np.zeros(len(queries), int))
    batch = seqmatch_batch(refs, queries, settings, top_k=4, ref_segments=ref_seg,
                           keep_matrix=True, chunk=6)
    np.testing.assert_allclose(batch.matrix, expected, rtol=1e-4, atol=1e-4)
    frame_dist = distance_matrix(refs, queries, settings.metric)
    pre = seqmatch_distances(frame_dist, settings, top_k=4, ref_segments=ref_seg,
                             keep_matrix=True)
    np.testing.assert_allclose(pre.matrix, batch.matrix, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(pre.matches.valid, batch.matches.valid)
    online = OnlineSeqMatcher(refs, settings, ref_seg)
    for j, q in enumerate(queries):
        scores = online.push(q)
        if batch.matches.valid[j]:
            np.testing.assert_allclose(scores, batch.matrix[:, j], rtol=1e-5, atol=1e-5)


def test_matching_config_velocity_fields():
    from vpr_seq_ros.config import ConfigError, load_config, replace
    cfg = load_config('seqslam')
    m = cfg.matching
    # the configuration's defaults are the scoring's defaults
    s = SeqMatchSettings()
    assert (m.velocity_kernel, m.slope_scores, m.slope_penalty) == \
        (s.velocity_kernel, s.slope_scores, s.slope_penalty)
    assert replace(cfg, **{'matching.slope_penalty': 0.0}).matching.slope_penalty == 0.0
    with pytest.raises(ConfigError, match='velocity_kernel'):
        replace(cfg, **{'matching.velocity_kernel': 'cubic'})
    with pytest.raises(ConfigError, match='slope_scores'):
        replace(cfg, **{'matching.slope_scores': 'ranked'})
    with pytest.raises(ConfigError, match='slope_penalty'):
        replace(cfg, **{'matching.slope_penalty': -1.0})
