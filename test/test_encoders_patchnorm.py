"""patchnorm's L2 normalisation (Euclidean matching) and the unchanged SeqSLAM path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models_fixtures import seeded_images
from vpr_seq_ros.config import PatchNormConfig, load_config
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.encoders.patchnorm import PatchNormEncoder, grey_thumbnail, patch_normalise
from vpr_seq_ros.errors import ConfigError, MapError
from vpr_seq_ros.pipeline import build_map, encode_run, evaluate_encoded
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.sources import open_source


def test_l2_is_the_raw_descriptor_scaled_to_unit_length() -> None:
    images = seeded_images(4, 48, 80, seed=3) + [np.full((32, 64, 3), 90, np.uint8)]
    raw = PatchNormEncoder(PatchNormConfig(normalize='none')).encode(images)
    unit = PatchNormEncoder(PatchNormConfig()).encode(images)
    # hand reference for the first image: grey thumbnail, patch-normalised, divided by its norm
    thumb = patch_normalise(grey_thumbnail(images[0], 64, 32), 8).ravel()
    np.testing.assert_allclose(raw[0], thumb, atol=1e-6)
    np.testing.assert_allclose(unit[0], thumb / np.linalg.norm(thumb), atol=1e-6)
    np.testing.assert_allclose(unit[:4], raw[:4] / np.linalg.norm(raw[:4], axis=1,
                                                                  keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(unit[:4], axis=1), 1.0, atol=1e-6)
    assert np.all(unit[4] == 0) and np.all(raw[4] == 0)  # a flat frame stays zero, no NaN


def test_defaults_and_presets() -> None:
    # auto: normalise where the distance needs it, resolved by the whole configuration
    assert PatchNormConfig().normalize == 'auto'
    assert load_config().encoder.patchnorm.normalize == 'l2'
    assert load_config(overrides={'matching.distance': 'sad'}).encoder.patchnorm.normalize \
        == 'none'
    assert load_config(overrides={'matching.distance': 'sad',
                                  'encoder.patchnorm.normalize': 'l2'}
                       ).encoder.patchnorm.normalize == 'l2'
    assert PatchNormEncoder(PatchNormConfig()).settings()['normalize'] == 'l2'
    seqslam = load_config('seqslam')
    assert seqslam.encoder.patchnorm.normalize == 'none'
    assert seqslam.matching.distance == 'sad' and seqslam.matching.contrast.enabled
    assert build_encoder(seqslam.encoder).settings()['normalize'] == 'none'
    with pytest.raises(ConfigError, match="normalize = 'l1' is not one of auto, l2, none"):
        PatchNormConfig(normalize='l1')


def test_a_map_refuses_a_query_normalised_differently(tmp_path: Path) -> None:
    folder = tmp_path / 'run'
    folder.mkdir()
    from PIL import Image

    for i, image in enumerate(seeded_images(6, 32, 64, seed=1)):
        Image.fromarray(image).save(folder / f'{i}.png')
    cfg = load_config(overrides={'encoder.patchnorm.normalize': 'none', 'sequence.length': 2})
    refmap = load_map(build_map(folder, cfg, tmp_path / 'm.npz'))
    with pytest.raises(MapError, match='normalize: map has none, query has l2'):
        refmap.check_query(build_encoder(load_config().encoder).settings())


def test_nordland_euclidean_needs_l2_and_seqslam_is_unchanged(shared_data: Path,
                                                             tmp_path: Path) -> None:
    """Issue 8 item 2: seqmatch + Euclidean on raw patchnorm collapses; L2 fixes it. The
    seqslam preset (SAD + contrast) gives exactly what the raw descriptors give."""
    root = shared_data / 'nordland_64x32'
    recall = {}
    for normalize in ('none', 'l2'):
        cfg = load_config(overrides={'encoder.patchnorm.normalize': normalize,
                                     'sequence.length': 5, 'evaluation.tolerance_frames': 0})
        refmap = load_map(build_map(root / 'summer', cfg, tmp_path / f'{normalize}.npz'))
        query = encode_run(open_source(root / 'winter'), build_encoder(cfg.encoder))
        recall[normalize] = evaluate_encoded(refmap, query, cfg,
                                             keep_matrix=False).metrics.recall_at[1]
    assert recall['l2'] > 10 * max(recall['none'], 0.01)
    seqslam = load_config('seqslam', overrides={'sequence.length': 5})
    raw = load_config(overrides={'encoder.patchnorm.normalize': 'none', 'sequence.length': 5,
                                 'matching.distance': 'sad', 'matching.contrast.enabled': True})
    out = {}
    for name, cfg in (('seqslam', seqslam), ('raw', raw)):
        refmap = load_map(build_map(root / 'summer', cfg, tmp_path / f'{name}.npz'))
        query = encode_run(open_source(root / 'winter'), build_encoder(cfg.encoder))
        out[name] = evaluate_encoded(refmap, query, cfg, keep_matrix=False).metrics.recall_at
    assert out['seqslam'] == out['raw']
