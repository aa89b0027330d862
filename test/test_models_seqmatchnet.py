"""SeqMatchNet transform: official and own checkpoints, and the transformed encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models_fixtures import seqmatchnet_checkpoint
from vpr_seq_ros.config import EncoderConfig, TransformConfig
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.encoders.base import file_sha256
from vpr_seq_ros.errors import ModelError
from vpr_seq_ros.models.checkpoints import save_checkpoint
from vpr_seq_ros.models.seqmatchnet import SeqMatchNetTransform, load_seqmatchnet

D = 64


def _formula(ckpt: dict, x: np.ndarray) -> np.ndarray:
    """L2norm(W x + b) in float64 from the official tensors."""
    sd = {k.replace('module.', ''): v for k, v in ckpt['state_dict'].items()}
    weight = sd['pool.1.conv.weight'][:, :, 0].double().numpy()
    bias = sd['pool.1.conv.bias'].double().numpy()
    y = x.astype(np.float64) @ weight.T + bias
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def _descriptors(n: int = 5, dim: int = D) -> np.ndarray:
    x = np.random.default_rng(0).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize('data_parallel', [False, True])
def test_official_layout_loads_and_matches_formula(tmp_path: Path, data_parallel: bool) -> None:
    ckpt = seqmatchnet_checkpoint(D, data_parallel=data_parallel)
    if data_parallel:
        assert 'pool.module.1.conv.weight' in ckpt['state_dict']
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save(ckpt, path)
    loaded = load_seqmatchnet(path)
    assert loaded.layout == 'seqmatchnet' and loaded.weights_sha256 == file_sha256(path)
    x = _descriptors()
    with torch.no_grad():
        y = loaded.transform(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, _formula(ckpt, x), atol=1e-5)


def test_own_checkpoint_round_trip_and_official_export(tmp_path: Path) -> None:
    transform = SeqMatchNetTransform.seeded(D, 32)
    path = save_checkpoint(tmp_path / 'smn.pth', 'seqmatchnet', transform.state_dict(), epoch=1)
    loaded = load_seqmatchnet(path)
    assert loaded.layout == 'vpr_seq_ros/seqmatchnet'
    assert (loaded.transform.in_dim, loaded.transform.out_dim) == (D, 32)
    torch.testing.assert_close(loaded.transform.linear.weight, transform.linear.weight)
    official = transform.official_state_dict()
    assert official['pool.1.conv.weight'].shape == (32, D, 1)


def test_identity_only_normalises() -> None:
    x = 3.0 * _descriptors()
    with torch.no_grad():
        y = SeqMatchNetTransform.identity(D)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, x / 3.0, atol=1e-6)


@pytest.mark.parametrize('state_dict, message', [
    ({'pool.1.conv.weight': torch.zeros(D, D, 1)}, 'missing keys: pool.1.conv.bias'),
    ({'pool.1.conv.weight': torch.zeros(D, D, 3), 'pool.1.conv.bias': torch.zeros(D)},
     r'pool.1.conv.weight has shape \[64, 64, 3\], expected \[D_out, D_in, 1\]'),
    ({'pool.1.conv.weight': torch.zeros(D, D, 1), 'pool.1.conv.bias': torch.zeros(D + 1)},
     r'pool.1.conv.bias has shape \[65\], expected \[64\]'),
    ({'pool.1.conv.weight': torch.zeros(D, D, 1), 'pool.1.conv.bias': torch.zeros(D),
      'pool.3.x': torch.zeros(1)}, 'unexpected keys: pool.3.x'),
])
def test_bad_official_checkpoints_are_named(tmp_path: Path, state_dict: dict,
                                            message: str) -> None:
    path = tmp_path / 'bad.pth.tar'
    torch.save({'state_dict': state_dict}, path)
    with pytest.raises(ModelError, match=message):
        load_seqmatchnet(path)


NEEDS_WEIGHTS = 'set encoder.transform.weights .vpr-seq: --transform-weights PATH'


def test_loader_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=NEEDS_WEIGHTS):
        load_seqmatchnet(None)
    with pytest.raises(ModelError, match='does not exist'):
        load_seqmatchnet(tmp_path / 'missing.pth.tar')
    jist_like = tmp_path / 'cosplace.pth'
    torch.save({'backbone.0.weight': torch.zeros(64, 3, 7, 7)}, jist_like)
    with pytest.raises(ModelError,
                       match='not a SeqMatchNet transform; give it as encoder.weights'):
        load_seqmatchnet(jist_like)


# --------------------------------------------------------------------- transformed encoder


def _npy_with_transform(**transform) -> object:
    return build_encoder(EncoderConfig(
        name='npy', transform=TransformConfig(name='seqmatchnet', **transform)))


def test_transform_after_npy_encoder(tmp_path: Path) -> None:
    ckpt = seqmatchnet_checkpoint(D)
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save(ckpt, path)
    encoder = _npy_with_transform(weights=str(path))
    x = _descriptors()
    y = encoder.encode(list(x))
    assert y.dtype == np.float32 and y.shape == (5, D)
    np.testing.assert_allclose(y, _formula(ckpt, x), atol=1e-5)
    assert encoder.dim == D and encoder.input_kind == 'descriptor'
    assert encoder.settings() == {
        'name': 'npy+seqmatchnet', 'base': {'name': 'npy'},
        'transform': {'name': 'seqmatchnet', 'weights_sha256': file_sha256(path),
                      'random_init': False, 'dim': D}}
    with pytest.raises(ModelError, match='takes 64-D descriptors, but the npy encoder gives 32-D'):
        encoder.encode(list(_descriptors(2, 32)))


def test_transform_dimension_is_checked_against_a_known_base(tmp_path: Path) -> None:
    path = tmp_path / 'checkpoint.pth.tar'
    torch.save(seqmatchnet_checkpoint(D), path)
    with pytest.raises(ModelError, match='takes 64-D descriptors, but the jist-r18 encoder gives '
                       '512-D'):
        build_encoder(EncoderConfig(name='jist-r18', random_init=True, input_height=64,
                                    input_width=64,
                                    transform=TransformConfig(name='seqmatchnet',
                                                              weights=str(path))))


def test_transform_random_init_is_seeded_and_lazy() -> None:
    a = _npy_with_transform(random_init=True)
    b = _npy_with_transform(random_init=True)
    assert a.dim == -1
    x = list(_descriptors(3, 16))
    np.testing.assert_array_equal(a.encode(x), b.encode(x))
    assert a.dim == 16 and a.settings()['transform']['random_init'] is True
    with pytest.raises(ModelError, match=NEEDS_WEIGHTS):
        _npy_with_transform()
