"""Corrupt or mismatched files are a fatal error at start-up that says what and how to fix.

Each broken file (a map cut short, empty, not a map, another format version, made by another
encoder; weights cut short or of another layout; an ONNX model card whose model is missing) is
refused by :meth:`NodeCore.from_config`, the node's start-up step, with a
:class:`~vpr_seq_ros.errors.VprSeqError` naming the file and the fix, never later while frames
arrive. Where ROS 2 is sourced, the rclpy node refuses the same files when it is constructed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import write_run

from vpr_seq_ros.config import Config, load_config
from vpr_seq_ros.errors import ConfigError, MapError, ModelError, VprSeqError
from vpr_seq_ros.pipeline import build_map
from vpr_seq_ros.runtime.core import NodeCore


@pytest.fixture(scope='module')
def good_map(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp('startup')
    write_run(folder / 'ref', np.arange(12.0), seed=1)
    return build_map(folder / 'ref', load_config(), folder / 'good.npz')


def rewritten_manifest(good: Path, out: Path, **changes: object) -> Path:
    with np.load(good) as data:
        arrays = {k: data[k] for k in data.files}
    manifest = json.loads(arrays['manifest'].tobytes())
    manifest.update(changes)
    arrays['manifest'] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(out, **arrays)
    return out


def localization(path: Path, **overrides: object) -> Config:
    return load_config(overrides={'node.mode': 'localization', 'node.map_path': str(path),
                                  **overrides})


def truncated(good: Path, d: Path) -> Config:
    data = good.read_bytes()
    (d / 'cut.npz').write_bytes(data[:len(data) // 2])
    return localization(d / 'cut.npz')


def empty(good: Path, d: Path) -> Config:
    (d / 'empty.npz').write_bytes(b'')
    return localization(d / 'empty.npz')


def text_file(good: Path, d: Path) -> Config:
    (d / 'notes.npz').write_text('not a map\n')
    return localization(d / 'notes.npz')


def other_npz(good: Path, d: Path) -> Config:
    np.savez(d / 'other.npz', descriptors=np.zeros((3, 4), np.float32))
    return localization(d / 'other.npz')


def other_format(good: Path, d: Path) -> Config:
    return localization(rewritten_manifest(good, d / 'other_format.npz', format='something'))


def other_version(good: Path, d: Path) -> Config:
    return localization(rewritten_manifest(good, d / 'v99.npz', format_version=99))


def other_encoder_settings(good: Path, d: Path) -> Config:
    return localization(good, **{'encoder.patchnorm.width': 32})


def other_encoder(good: Path, d: Path) -> Config:
    return localization(good, **{'encoder.name': 'npy'})


CASES: dict[str, tuple[Callable[[Path, Path], Config], type, tuple[str, ...]]] = {
    # case: (broken configuration, error type, what the message must say)
    'map cut short': (truncated, MapError, ('cut.npz', 'corrupt', 'rebuild')),
    'map empty': (empty, MapError, ('empty.npz', 'corrupt', 'rebuild')),
    'map a text file': (text_file, MapError, ('notes.npz', 'not a map', 'rebuild')),
    'npz without manifest': (other_npz, MapError, ('other.npz', 'manifest', 'rebuild')),
    'another format': (other_format, MapError, ('other_format.npz', 'not a vpr_seq_ros map')),
    'another format version': (other_version, MapError, ('version 99', 'reads version 1',
                                                         'Rebuild')),
    'another encoder setting': (other_encoder_settings, MapError,
                                ('width', 'map has 64', 'query has 32', 'rebuild the map')),
    'another encoder': (other_encoder, MapError, ('npy', 'patchnorm', 'rebuild the map')),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_broken_map_is_fatal_at_start_up(case, good_map, tmp_path):
    make, error, words = CASES[case]
    cfg = make(good_map, tmp_path)
    with pytest.raises(error) as info:
        NodeCore.from_config(cfg)
    message = str(info.value)
    for word in words:
        assert word.lower() in message.lower(), message


# ---------------------------------------------------------------------------- models
torch = pytest.importorskip('torch')


def slam_with_weights(path: Path, name: str = 'jist-r18') -> Config:
    return load_config(overrides={'node.mode': 'slam', 'encoder.name': name,
                                  'encoder.weights': str(path)})


def test_weights_cut_short(tmp_path):
    from models_fixtures import official_jist_state_dict

    torch.save(official_jist_state_dict(), tmp_path / 'jist.pth')
    data = (tmp_path / 'jist.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 3])
    with pytest.raises(ModelError, match=r'cut\.pth.*torch checkpoint'):
        NodeCore.from_config(slam_with_weights(tmp_path / 'cut.pth'))


def test_weights_of_another_layout(tmp_path):
    torch.save({'head.fc.weight': torch.zeros(3, 3)}, tmp_path / 'other.pth')
    with pytest.raises(ModelError, match=r'other\.pth has no layout.*head\.fc\.weight.*expected'):
        NodeCore.from_config(slam_with_weights(tmp_path / 'other.pth'))


def test_transform_weights_given_as_encoder_weights(tmp_path):
    from models_fixtures import seqmatchnet_checkpoint

    torch.save(seqmatchnet_checkpoint(), tmp_path / 'smn.pth')
    with pytest.raises(ModelError, match='seqmatchnet transform, not jist-r18'):
        NodeCore.from_config(slam_with_weights(tmp_path / 'smn.pth'))


def test_missing_weights(tmp_path):
    with pytest.raises(VprSeqError, match='missing.pth'):
        NodeCore.from_config(slam_with_weights(tmp_path / 'missing.pth'))


def onnx_card(folder: Path, onnx_file: str) -> Path:
    from vpr_seq_ros.models.onnx_export import CARD_FORMAT, CARD_VERSION, ModelCard

    fields: dict[str, object] = {name: None for name in ModelCard.__dataclass_fields__
                                 if name != 'path'}
    fields.update(onnx_file=onnx_file, onnx_sha256='0' * 64, encoder='jist-r18',
                  input_height=224, input_width=224, descriptor_dim=512, weights_sha256=None,
                  weights_layout='jist', random_init=False, untrained_head=False, seqgem_p=3.0,
                  opset=17, parity_max_abs_diff=0.0)
    card = folder / 'jist.yaml'
    card.write_text(yaml.safe_dump({'format': CARD_FORMAT, 'version': CARD_VERSION, **fields}))
    return card


def test_onnx_card_naming_a_missing_model(tmp_path):
    pytest.importorskip('onnxruntime')
    card = onnx_card(tmp_path, 'jist.onnx')
    cfg = load_config(overrides={'node.mode': 'slam', 'encoder.name': 'jist-r18',
                                 'encoder.runtime': 'onnx', 'encoder.weights': str(card)})
    with pytest.raises(ModelError, match=r'jist\.yaml names jist\.onnx, which is not next to it'):
        NodeCore.from_config(cfg)


def test_onnx_card_with_a_modified_model(tmp_path):
    pytest.importorskip('onnxruntime')
    card = onnx_card(tmp_path, 'jist.onnx')
    (tmp_path / 'jist.onnx').write_bytes(b'not the exported graph')
    cfg = load_config(overrides={'node.mode': 'slam', 'encoder.name': 'jist-r18',
                                 'encoder.runtime': 'onnx', 'encoder.weights': str(card)})
    with pytest.raises(ModelError, match='does not match its model card.*re-export'):
        NodeCore.from_config(cfg)


# ---------------------------------------------------------------------------- the rclpy node
@pytest.mark.parametrize('case', ['map cut short', 'another format version', 'another encoder'])
def test_the_rclpy_node_refuses_them_when_constructed(case, good_map, tmp_path):
    rclpy = pytest.importorskip('rclpy')
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from vpr_seq_ros.config import flatten
    from vpr_seq_ros.ros.node import VprSeqNode

    make, error, words = CASES[case]
    cfg = make(good_map, tmp_path)
    wanted = flatten(cfg)
    given = {k: v for k, v in wanted.items() if v != flatten(Config()).get(k) and v is not None}
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises((error, ConfigError)) as info:
            VprSeqNode(context=context, parameter_overrides=[
                Parameter(k, value=v) for k, v in given.items()])
        assert words[0].lower() in str(info.value).lower()
    finally:
        rclpy.try_shutdown(context=context)
