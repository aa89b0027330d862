"""The validation sweep: recall arithmetic, candidate bookkeeping, choice by validation only."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.config import load_config, replace
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings
from vpr_seq_ros.tuning import (Candidate, TuneGrid, TunePair, encode_thumbnails, recall_at_1,
                                tune)


def test_recall_at_1_by_hand():
    # 6 map frames x 6 queries, L = 1: queries 0..3 match their own index, 4 -> 2 (wrong at
    # tolerance 1, right at 2), 5 -> 0 (wrong): R@1 = 4/6 at +-1, 5/6 at +-2
    best = [0, 1, 2, 3, 2, 0]
    dist = np.ones((6, 6), np.float32)
    for j, i in enumerate(best):
        dist[i, j] = 0.0
    settings = SeqMatchSettings(length=1, metric='sad')
    assert recall_at_1(dist, settings, 1) == pytest.approx(4 / 6)
    assert recall_at_1(dist, settings, 2) == pytest.approx(5 / 6)
    assert recall_at_1(dist, settings, 0) == pytest.approx(4 / 6)


def test_grid_encoders_skip_patches_that_do_not_tile():
    grid = TuneGrid(sizes=((64, 32), (48, 24)), patch_sizes=(8, 16))
    assert grid.encoders() == [((64, 32), 8), ((64, 32), 16), ((48, 24), 8)]
    with pytest.raises(ConfigError, match='unknown frame distance'):
        TuneGrid(metrics=('cosine',))


def test_candidate_preset_keys_are_valid_configuration():
    cand = Candidate((32, 16), 16, 'sad', 5)
    cfg = replace(load_config('seqslam'), **cand.preset())
    assert cfg.encoder.patchnorm.width == 32 and cfg.encoder.patchnorm.patch_size == 16
    assert cfg.matching.contrast.window == 5 and cfg.matching.contrast.enabled
    off = replace(load_config('seqslam'), **Candidate((64, 32), 8, 'euclidean', None).preset())
    assert not off.matching.contrast.enabled


def synthetic_pair(seed=0, n=60):
    rng = np.random.default_rng(seed)
    ref = rng.random((n, 16, 32)).astype(np.float32) * 255
    query = np.clip(ref + rng.normal(scale=60, size=ref.shape), 0, 255).astype(np.float32)
    small = ref.reshape(n, 8, 2, 16, 2).mean(axis=(2, 4))
    small_q = query.reshape(n, 8, 2, 16, 2).mean(axis=(2, 4))
    return TunePair('synthetic', {(32, 16): ref, (16, 8): small},
                    {(32, 16): query, (16, 8): small_q}, (0, 30), (30, 60), 1)


def test_tune_chooses_by_validation_and_scores_held_out():
    pair = synthetic_pair()
    grid = TuneGrid(sizes=((32, 16), (16, 8)), patch_sizes=(4, 8), metrics=('sad',),
                    contrast_windows=(None, 3), lengths=(1, 3))
    base = Candidate((16, 8), 8, 'sad', 3)
    report = tune([pair], grid, baselines=[base])
    assert len(report.validation) == 8
    best = max(report.validation.values(), key=np.mean).mean()
    assert report.validation[report.chosen].mean() == best
    assert set(report.heldout) == {report.chosen, base}
    # one figure recomputed directly from its definition
    c = report.chosen
    ref = encode_thumbnails(pair.ref[c.size][30:60], c.patch_size)
    query = encode_thumbnails(pair.query[c.size][30:60], c.patch_size)
    expected = recall_at_1(distance_matrix(ref, query, 'sad'),
                           SeqMatchSettings(length=3, metric='sad',
                                            contrast_window=c.contrast_window), 1)
    assert report.heldout[c][0, 1] == pytest.approx(expected)
    assert report.ranking()[0][1] == pytest.approx(best)


def test_tune_rejects_missing_sizes_and_short_ranges():
    pair = synthetic_pair()
    with pytest.raises(ConfigError, match='no 64x32 thumbnails'):
        tune([pair], TuneGrid(sizes=((64, 32),), lengths=(3,)))
    with pytest.raises(ConfigError, match='shorter than the sequence length'):
        tune([pair], TuneGrid(sizes=((32, 16),), lengths=(40,)))


def test_objective_pools_pairs_by_queries_and_choose_averages_folds():
    from vpr_seq_ros.tuning import TuneReport, choose, objective
    recalls = np.array([[0.5, 1.0], [0.0, 0.5]])
    # L1: (3 * 0.5 + 1 * 0.0) / 4 = 0.375; L2: (3 * 1.0 + 0.5) / 4 = 0.875; mean 0.625
    assert objective(recalls, np.array([3, 1])) == pytest.approx(0.625)
    a, b = Candidate((8, 8), 4, 'sad', None), Candidate((8, 8), 4, 'sad', 3)
    fold1 = TuneReport((1,), ('p',), {a: np.array([[0.9]]), b: np.array([[0.7]])}, a,
                       weights=np.array([1.0]))
    fold2 = TuneReport((1,), ('p',), {a: np.array([[0.4]]), b: np.array([[0.8]])}, b,
                       weights=np.array([1.0]))
    best, score = choose([fold1, fold2])
    assert best == b and score == pytest.approx(0.75)
