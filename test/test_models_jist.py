"""JIST network, encoder and preprocessing against formula-level references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models_fixtures import (cosine_rows, official_jist_state_dict, reference_frame_descriptors,
                             reference_seqgem, seeded_images)
from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.encoders.base import file_sha256
from vpr_seq_ros.errors import ConfigError, ModelError, SourceError
from vpr_seq_ros.models.jist import JistNet, SeqGeM
from vpr_seq_ros.preprocess import as_rgb, preprocess_batch, resize_rgb

H, W = 96, 128


@pytest.fixture(scope='module')
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    sd = official_jist_state_dict(seed=0)
    path = tmp_path_factory.mktemp('jist') / 'JIST_r18_512_seqgem.pth'
    torch.save(sd, path)
    return path, sd


def _cfg(**kw) -> EncoderConfig:
    return EncoderConfig(**{'name': 'jist-r18', 'input_height': H, 'input_width': W, **kw})


def test_state_dict_has_the_124_official_keys_and_shapes() -> None:
    expected = official_jist_state_dict()
    actual = JistNet().state_dict()
    assert len(expected) == 124
    assert list(actual) == list(expected)
    for key, value in expected.items():
        assert tuple(actual[key].shape) == tuple(value.shape), key


def test_descriptors_match_formula_reference(official: tuple[Path, dict]) -> None:
    path, sd = official
    encoder = build_encoder(_cfg(weights=str(path), batch_size=2))
    images = seeded_images(3, 120, 150) + seeded_images(1, H, W, seed=5)
    actual = encoder.encode(images)
    expected = reference_frame_descriptors(sd, preprocess_batch(images, H, W))
    assert actual.shape == (4, 512) and actual.dtype == np.float32
    assert cosine_rows(actual, expected).min() >= 0.9999
    assert np.abs(actual - expected).max() < 1e-4
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, atol=1e-5)
    assert encoder.seqgem_p == pytest.approx(3.7)
    assert encoder.dim == 512 and encoder.input_kind == 'image'
    assert encoder.settings() == {
        'name': 'jist-r18', 'input_height': H, 'input_width': W,
        'weights_sha256': file_sha256(path), 'random_init': False, 'untrained_head': False,
        'precision': 'fp32'}


def test_channels_last_and_nchw_agree_and_batching_is_invisible(
        official: tuple[Path, dict]) -> None:
    from vpr_seq_ros.encoders.jist import JistTorchEncoder
    from vpr_seq_ros.models.checkpoints import load_jist

    images = seeded_images(3, H, W, seed=1)
    nchw = JistTorchEncoder(load_jist(official[0]), H, W, channels_last=False, batch_size=3)
    last = JistTorchEncoder(load_jist(official[0]), H, W, channels_last=True, batch_size=2)
    np.testing.assert_allclose(last.encode(images), nchw.encode(images), atol=1e-5)
    assert last.encode([]).shape == (0, 512)


def test_float_input_in_unit_range_equals_uint8_input() -> None:
    net = JistNet().eval()
    images = np.stack(seeded_images(2, 64, 64)).transpose(0, 3, 1, 2)
    with torch.inference_mode():
        a = net(torch.from_numpy(images))
        b = net(torch.from_numpy(images).float() / 255)
    torch.testing.assert_close(a, b)


def test_no_weights_and_no_random_init_is_an_error() -> None:
    with pytest.raises(ModelError, match=r'jist-r18 needs --weights PATH \(see models/README'):
        build_encoder(_cfg())


def test_random_init_is_seeded_reported_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_encoder(_cfg(random_init=True))
    after = torch.rand(1)
    b = build_encoder(_cfg(random_init=True))
    assert torch.equal(before, after)
    images = seeded_images(1, H, W)
    np.testing.assert_array_equal(a.encode(images), b.encode(images))
    assert a.settings()['random_init'] is True and a.settings()['weights_sha256'] is None


def test_fp16_and_cuda_need_a_cuda_device(official: tuple[Path, dict]) -> None:
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    with pytest.raises(ConfigError, match='fp16 needs a CUDA device'):
        build_encoder(_cfg(weights=str(official[0]), precision='fp16'))
    with pytest.raises(ConfigError, match='no CUDA device'):
        build_encoder(_cfg(weights=str(official[0]), device='cuda'))
    assert build_encoder(_cfg(weights=str(official[0]), device='auto')).net.model.aggregation[
        3].weight.device.type == 'cpu'


# ------------------------------------------------------------------------------------ SeqGeM


@pytest.mark.parametrize('length', range(1, 11))
def test_seqgem_matches_formula_for_every_length(length: int) -> None:
    gen = torch.Generator().manual_seed(length)
    frames = torch.randn(4, length, 512, generator=gen)
    layer = SeqGeM()
    with torch.no_grad():
        layer.p.fill_(3.7)
        out = layer(frames).numpy()
    np.testing.assert_allclose(out, reference_seqgem(frames.numpy(), 3.7), rtol=1e-5, atol=1e-7)
    if length == 1:
        np.testing.assert_allclose(out, frames[:, 0].clamp(min=1e-6).numpy(), rtol=1e-5)


def test_seqgem_ignores_frame_order_and_is_not_normalised() -> None:
    gen = torch.Generator().manual_seed(0)
    frames = torch.nn.functional.normalize(torch.randn(2, 5, 512, generator=gen), dim=-1)
    net = JistNet()
    with torch.no_grad():
        forward = net.aggregate(frames)
        backward = net.aggregate(frames.flip(1))
        shuffled = net.aggregate(frames[:, torch.tensor([3, 0, 4, 1, 2])])
    torch.testing.assert_close(forward, backward)
    torch.testing.assert_close(forward, shuffled)
    assert forward.shape == (2, 512)
    assert not torch.allclose(forward.norm(dim=1), torch.ones(2))


# ----------------------------------------------------------------------------- preprocessing


def test_resize_equals_pil_bilinear_and_same_size_is_a_no_op() -> None:
    image = seeded_images(1, 77, 203, seed=3)[0]
    expected = np.asarray(Image.fromarray(image).resize((W, H), Image.BILINEAR))
    np.testing.assert_array_equal(resize_rgb(image, H, W), expected)
    same = seeded_images(1, H, W, seed=4)[0]
    assert resize_rgb(same, H, W) is same
    np.testing.assert_array_equal(
        np.asarray(Image.fromarray(same).resize((W, H), Image.BILINEAR)), same)


def test_batch_layout_grey_and_rgba() -> None:
    rgb = seeded_images(1, 50, 60)[0]
    grey = rgb[:, :, 0]
    rgba = np.concatenate([rgb, np.full((50, 60, 1), 7, np.uint8)], axis=2)
    batch = preprocess_batch([rgb, grey, rgba], 50, 60)
    assert batch.shape == (3, 3, 50, 60) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[0], rgb.transpose(2, 0, 1))
    np.testing.assert_array_equal(batch[1], np.stack([grey] * 3))
    np.testing.assert_array_equal(batch[2], batch[0])
    assert as_rgb(rgb) is rgb


@pytest.mark.parametrize('bad, message', [
    (np.zeros((4, 4, 3), np.float32), 'must be uint8'),
    (np.zeros((4, 4, 2), np.uint8), r'got shape \(4, 4, 2\)'),
    (np.zeros((2, 4, 4, 3), np.uint8), 'got shape'),
    (np.zeros((0, 4, 3), np.uint8), 'must not be empty'),
    ([[1, 2], [3, 4]], 'numpy array'),
])
def test_bad_images_raise_source_error(bad: object, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        preprocess_batch([np.zeros((4, 4, 3), np.uint8), bad], 8, 8)  # type: ignore[list-item]
    with pytest.raises(SourceError, match='empty batch'):
        preprocess_batch([], 8, 8)


def test_imagenet_statistics_are_written_once_in_the_package() -> None:
    package = Path(__file__).resolve().parents[1] / 'vpr_seq_ros'
    holders = [p for p in package.rglob('*.py') if '0.485' in p.read_text()]
    assert [p.name for p in holders] == ['resnet.py']
