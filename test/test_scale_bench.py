"""The distractor generator of benchmarks/scale.py (the Nordland-among-distractors row)."""

from __future__ import annotations

import numpy as np

from conftest import load_benchmark
from vpr_seq_ros.encoders.patchnorm import patch_normalise


def thumbnails(m: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """A route of smooth random grey thumbnails (a bright top half, as sky; each frame 0.8 of
    the previous one plus new detail), ``(m, height, width)``."""
    rng = np.random.default_rng(seed)
    detail = rng.normal(size=(m, height, width)).cumsum(axis=2).cumsum(axis=1)
    base = np.empty_like(detail)
    base[0] = detail[0]
    for i in range(1, m):
        base[i] = 0.8 * base[i - 1] + 0.6 * detail[i]
    base[:, :height // 2] += 40.0
    return base.astype(np.float32)


def test_patchnorm_rows_is_the_encoder_normalisation():
    scale = load_benchmark('scale')
    thumbs = thumbnails(6, 8, 16)
    thumbs[2, :4, :4] = 7.0  # one flat patch: zeros, as the encoder makes it
    thumbs[3] = 5.0  # a flat image: an all-zero row
    want = np.stack([patch_normalise(t, 4).ravel() for t in thumbs]).astype(np.float64)
    norms = np.linalg.norm(want, axis=1, keepdims=True)
    want = want / np.maximum(norms, 1e-6)
    got = scale.patchnorm_rows(thumbs.reshape(6, -1), 8, 16, 4)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.all(got[2].reshape(8, 16)[:4, :4] == 0)
    assert np.all(got[3] == 0)


def test_matched_route_keeps_the_real_statistics():
    scale = load_benchmark('scale')
    shape = (8, 16, 4)
    real = scale.patchnorm_rows(thumbnails(600, 8, 16, seed=1).reshape(600, -1), *shape)
    model = scale.MatchedRoute(real, shape)
    target = scale.median_step(real)
    rho = model.calibrate(target, frames=1000)
    assert 0.0 < rho < 0.999
    route = model.generate(4000, seed=5)
    assert abs(scale.median_step(route) - target) < 0.05 * target
    # Same constraints as the encoder's output: unit rows of zero-mean, equal-energy patches.
    np.testing.assert_allclose(np.linalg.norm(route, axis=1), 1.0, atol=1e-5)
    patches = route.reshape(4000, 2, 4, 4, 4)
    np.testing.assert_allclose(patches.mean(axis=(2, 4)), 0.0, atol=1e-6)
    energy = (patches ** 2).sum(axis=(2, 4))
    np.testing.assert_allclose(energy, 1.0 / energy[0].size, rtol=1e-4)
    # The layout (bright top half) carries over: per-dimension means follow the real ones.
    corr = np.corrcoef(route.mean(axis=0), real.mean(axis=0))[0, 1]
    assert corr > 0.7  # about 0 for a route that ignored the real layout
    # Consecutive frames are nearer than frames far apart along the route (a route, not noise).
    far = np.median(np.linalg.norm(route[1000:2000] - route[3000:], axis=1))
    assert scale.median_step(route) < far
    # Block-wise writing into a given array is the same route.
    out = np.zeros((4000, 128), np.float32)
    model.generate(4000, seed=5, out=out, block=700)
    np.testing.assert_array_equal(out, route)


def test_synthetic_route_writes_into_a_given_array():
    scale = load_benchmark('scale')
    out = np.zeros((300, scale.DIM), np.float32)
    scale.route(300, seed=3, out=out)
    np.testing.assert_array_equal(out, scale.route(300, seed=3))
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
