"""SeqGeM on frame descriptors, against the formula and a naive loop."""

from __future__ import annotations

import numpy as np
import pytest

from vpr_seq_ros.matching.seqgem import seqgem, sequence_descriptors


def formula(frames: np.ndarray, p: float) -> np.ndarray:
    out = np.zeros(frames.shape[1])
    for k in range(frames.shape[1]):
        vals = [max(float(v), 1e-6) ** p for v in frames[:, k]]
        out[k] = (sum(vals) / len(vals)) ** (1 / p)
    return out


@pytest.mark.parametrize('length', range(1, 11))
def test_seqgem_formula_and_order_invariance(length):
    rng = np.random.default_rng(length)
    frames = rng.normal(size=(length, 12)).astype(np.float32)
    got = seqgem(frames, 3.0)
    np.testing.assert_allclose(got, formula(frames, 3.0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(seqgem(frames[rng.permutation(length)], 3.0), got, rtol=1e-6)
    if length == 1:
        np.testing.assert_allclose(got, np.maximum(frames[0], 1e-6), rtol=1e-6)


def test_sequence_descriptors_match_windows_and_segments():
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(20, 6)).astype(np.float32)
    segments = np.repeat([0, 1], [8, 12])
    seq, valid = sequence_descriptors(frames, 4, 2.5, segments)
    for i in range(20):
        start = 0 if i < 8 else 8
        if i - 3 >= start:
            assert valid[i]
            np.testing.assert_allclose(seq[i], seqgem(frames[i - 3:i + 1], 2.5), rtol=1e-5)
        else:
            assert not valid[i]
    seq_c, valid_c = sequence_descriptors(frames, 4, 3.0, segments, 'centred')
    assert valid_c.all()
    np.testing.assert_allclose(seq_c[0], seqgem(frames[0:4], 3.0), rtol=1e-5)
    np.testing.assert_allclose(seq_c[19], seqgem(frames[16:20], 3.0), rtol=1e-5)
