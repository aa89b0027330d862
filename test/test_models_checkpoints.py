"""Checkpoint layouts, strict loading and its error messages, and the project's own format."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from models_fixtures import (cosplace_state_dict, official_jist_state_dict,
                             reference_frame_descriptors, seeded_images, seqmatchnet_checkpoint,
                             torchvision_state_dict)
from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.errors import ModelError
from vpr_seq_ros.models.checkpoints import (CHECKPOINT_FORMAT, load_jist, read_checkpoint,
                                            save_checkpoint)
from vpr_seq_ros.preprocess import preprocess_batch

H, W = 64, 96


@pytest.fixture(scope='module')
def jist_sd() -> dict[str, torch.Tensor]:
    return official_jist_state_dict(seed=1)


@pytest.fixture(scope='module')
def images() -> np.ndarray:
    return preprocess_batch(seeded_images(2, H, W, seed=2), H, W)


@pytest.fixture(scope='module')
def expected(jist_sd: dict, images: np.ndarray) -> np.ndarray:
    return reference_frame_descriptors(jist_sd, images)


def _save(obj: object, path: Path) -> Path:
    torch.save(obj, path)
    return path


def _encode(loaded, images: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return loaded.net(torch.from_numpy(np.ascontiguousarray(images))).numpy()


def test_official_layout_loads_strictly(tmp_path: Path, jist_sd: dict, images: np.ndarray,
                                        expected: np.ndarray) -> None:
    loaded = load_jist(_save(jist_sd, tmp_path / 'jist.pth'))
    assert loaded.layout == 'jist' and not loaded.untrained_head and not loaded.random_init
    assert not loaded.net.training
    np.testing.assert_allclose(_encode(loaded, images), expected, atol=1e-4)


def test_jist_training_dict_and_data_parallel_prefix_load(
        tmp_path: Path, jist_sd: dict, images: np.ndarray, expected: np.ndarray) -> None:
    wrapped = {'epoch_num': 3, 'best_seq_val_recall5': 0.9,
               'model_state_dict': {f'module.{k}': v for k, v in jist_sd.items()}}
    loaded = load_jist(_save(wrapped, tmp_path / 'last_checkpoint.pth'))
    assert loaded.layout == 'jist'
    np.testing.assert_allclose(_encode(loaded, images), expected, atol=1e-4)


def test_cosplace_layout_loads_with_seqgem_p_3(
        tmp_path: Path, jist_sd: dict, images: np.ndarray, expected: np.ndarray) -> None:
    loaded = load_jist(_save(cosplace_state_dict(jist_sd), tmp_path / 'ResNet18_512.pth'))
    assert loaded.layout == 'cosplace' and not loaded.untrained_head
    assert loaded.net.seq_gem.p.item() == 3.0
    np.testing.assert_allclose(_encode(loaded, images), expected, atol=1e-4)


def test_torchvision_layout_loads_trunk_and_reports_untrained_head(
        tmp_path: Path, jist_sd: dict, images: np.ndarray,
        caplog: pytest.LogCaptureFixture) -> None:
    path = _save(torchvision_state_dict(jist_sd), tmp_path / 'resnet18-f37072fd.pth')
    with caplog.at_level(logging.WARNING):
        encoder = build_encoder(EncoderConfig(name='jist-r18', weights=str(path),
                                              input_height=H, input_width=W))
    assert 'UNTRAINED' in caplog.text
    assert encoder.settings()['untrained_head'] is True
    assert encoder.seqgem_p == 3.0
    # identity head, GeM p = 3: the reference with those head values
    head = dict(jist_sd)
    head['model.aggregation.1.p'] = torch.tensor([3.0])
    head['model.aggregation.3.weight'] = torch.eye(512)
    head['model.aggregation.3.bias'] = torch.zeros(512)
    np.testing.assert_allclose(encoder.encode(list(images.transpose(0, 2, 3, 1))),
                               reference_frame_descriptors(head, images), atol=1e-4)


def test_old_torchvision_file_without_batch_counters_loads(tmp_path: Path,
                                                           jist_sd: dict) -> None:
    sd = {k: v for k, v in torchvision_state_dict(jist_sd).items()
          if not k.endswith('num_batches_tracked')}
    assert load_jist(_save(sd, tmp_path / 'resnet18-5c106cde.pth')).untrained_head


def test_missing_and_unexpected_keys_are_named(tmp_path: Path, jist_sd: dict) -> None:
    sd = dict(jist_sd)
    del sd['model.aggregation.3.bias']
    sd['model.aggregation.9.weight'] = torch.zeros(3)
    with pytest.raises(ModelError) as err:
        load_jist(_save(sd, tmp_path / 'bad.pth'))
    message = str(err.value)
    assert 'missing keys: model.aggregation.3.bias' in message
    assert 'unexpected keys: model.aggregation.9.weight' in message
    assert 'models/README.md' in message


def test_wrong_shapes_are_named(tmp_path: Path, jist_sd: dict) -> None:
    sd = dict(jist_sd)
    sd['model.backbone.0.weight'] = torch.zeros(64, 3, 5, 5)
    with pytest.raises(ModelError, match=r'model\.backbone\.0\.weight has shape \[64,3,5,5\], '
                       r'expected \[64,3,7,7\]'):
        load_jist(_save(sd, tmp_path / 'bad.pth'))


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match='does not exist; download the weights'):
        load_jist(tmp_path / 'nope.pth')
    with pytest.raises(ModelError, match='is not a file'):
        load_jist(tmp_path)
    garbage = tmp_path / 'garbage.pth'
    garbage.write_bytes(b'not a checkpoint at all')
    with pytest.raises(ModelError, match='cannot read .* as a torch checkpoint'):
        load_jist(garbage)
    with pytest.raises(ModelError, match='holds a list, not a state_dict'):
        load_jist(_save([torch.zeros(1)], tmp_path / 'list.pth'))
    with pytest.raises(ModelError, match='no layout this tool knows'):
        load_jist(_save({'foo.weight': torch.zeros(1)}, tmp_path / 'foo.pth'))


def test_non_finite_weights_are_refused(tmp_path: Path, jist_sd: dict) -> None:
    sd = dict(jist_sd)
    sd['model.aggregation.3.bias'] = torch.full((512,), float('nan'))
    with pytest.raises(ModelError, match='model.aggregation.3.bias holds NaN'):
        load_jist(_save(sd, tmp_path / 'nan.pth'))


def test_seqmatchnet_file_given_as_encoder_weights(tmp_path: Path) -> None:
    path = _save(seqmatchnet_checkpoint(), tmp_path / 'checkpoint.pth.tar')
    with pytest.raises(ModelError, match='--transform-weights'):
        load_jist(path)


def test_own_checkpoint_round_trip(tmp_path: Path, jist_sd: dict, images: np.ndarray) -> None:
    source = load_jist(_save(jist_sd, tmp_path / 'jist.pth'))
    path = save_checkpoint(tmp_path / 'runs' / 'best.pth', 'jist-r18', source.net.state_dict(),
                           epoch=4, recall_at={'1': 0.5}, untrained_head=False)
    assert [p.name for p in path.parent.iterdir()] == ['best.pth']  # no temporary left
    ckpt = read_checkpoint(path)
    assert ckpt.layout == 'vpr_seq_ros/jist-r18' and ckpt.kind == 'jist-r18'
    assert ckpt.meta == {'epoch': 4, 'recall_at': {'1': 0.5}, 'untrained_head': False}
    raw = torch.load(path, weights_only=True)
    assert raw['format'] == CHECKPOINT_FORMAT and raw['version'] == 1
    again = load_jist(path)
    np.testing.assert_array_equal(_encode(again, images), _encode(source, images))


def test_save_checkpoint_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="kind 'resnet'"):
        save_checkpoint(tmp_path / 'x.pth', 'resnet', {})
    with pytest.raises(ModelError, match='metadata meta.when is a object'):
        save_checkpoint(tmp_path / 'x.pth', 'seqmatchnet', {}, when=object())
    with pytest.raises(ModelError, match='may not be named format'):
        save_checkpoint(tmp_path / 'x.pth', 'seqmatchnet', {}, format='x')
    assert not list(tmp_path.iterdir())


def test_other_versions_and_formats_are_refused(tmp_path: Path) -> None:
    future = {'format': CHECKPOINT_FORMAT, 'version': 2, 'kind': 'jist-r18', 'state_dict': {}}
    with pytest.raises(ModelError, match='version 2'):
        read_checkpoint(_save(future, tmp_path / 'future.pth'))
    other = {'format': 'something.else', 'state_dict': {}}
    with pytest.raises(ModelError, match="unknown format 'something.else'"):
        read_checkpoint(_save(other, tmp_path / 'other.pth'))
