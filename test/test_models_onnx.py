"""ONNX export, model cards and the onnx runtime against torch."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from models_fixtures import official_jist_state_dict, seeded_images
from vpr_seq_ros.commands import export_onnx as export_command
from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.encoders.base import file_sha256
from vpr_seq_ros.errors import ConfigError, ModelError
from vpr_seq_ros.models.onnx_export import export_onnx, read_model_card

H, W = 64, 96


@pytest.fixture(scope='module')
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, model card) of a seeded official-layout JIST exported at 64x96."""
    folder = tmp_path_factory.mktemp('onnx')
    weights = folder / 'JIST_r18_512_seqgem.pth'
    torch.save(official_jist_state_dict(seed=3), weights)
    cfg = EncoderConfig(name='jist-r18', weights=str(weights))
    card = export_onnx(cfg, folder / 'jist.onnx', H, W)
    return weights, card


def _cfg(weights: Path, runtime: str, **kw) -> EncoderConfig:
    return EncoderConfig(name='jist-r18', weights=str(weights), runtime=runtime,
                         input_height=H, input_width=W, **kw)


def test_card_records_what_made_the_graph(exported: tuple[Path, Path]) -> None:
    weights, card_path = exported
    assert card_path.name == 'jist.yaml'
    card = read_model_card(card_path)
    assert card.onnx_path == card_path.parent / 'jist.onnx'
    assert card.weights_sha256 == file_sha256(weights)
    assert (card.input_height, card.input_width, card.descriptor_dim) == (H, W, 512)
    assert card.seqgem_p == pytest.approx(3.7) and card.opset == 17
    assert not card.random_init and not card.untrained_head and card.weights_layout == 'jist'
    assert card.parity_max_abs_diff <= 1e-4
    raw = yaml.safe_load(card_path.read_text())
    assert raw['input_dtype'] == 'uint8' and raw['input_range'] == [0, 255]


def test_onnx_runtime_matches_torch_and_reports_the_same_settings(
        exported: tuple[Path, Path]) -> None:
    weights, card = exported
    torch_encoder = build_encoder(_cfg(weights, 'torch'))
    onnx_encoder = build_encoder(_cfg(card, 'onnx', batch_size=2))
    images = seeded_images(3, 100, 80, seed=7)  # resized inside; batches of 2 and 1
    np.testing.assert_allclose(onnx_encoder.encode(images), torch_encoder.encode(images),
                               atol=1e-4)
    assert onnx_encoder.settings() == torch_encoder.settings()
    assert onnx_encoder.seqgem_p == pytest.approx(torch_encoder.seqgem_p)
    assert onnx_encoder.dim == 512 and onnx_encoder.encode([]).shape == (0, 512)


def test_card_and_runtime_mismatches_are_errors(exported: tuple[Path, Path],
                                                tmp_path: Path) -> None:
    weights, card = exported
    with pytest.raises(ModelError, match='exported for 64x96 input, the configuration asks for '
                       '480x640'):
        build_encoder(EncoderConfig(name='jist-r18', weights=str(card), runtime='onnx'))
    with pytest.raises(ModelError, match='takes the model card .yaml'):
        build_encoder(_cfg(weights, 'onnx'))
    with pytest.raises(ModelError, match='is an ONNX model card; use it with the onnx runtime'):
        build_encoder(_cfg(card, 'torch'))
    with pytest.raises(ModelError, match='needs the model card .yaml written by vpr-seq'):
        build_encoder(EncoderConfig(name='jist-r18', runtime='onnx', random_init=True))
    with pytest.raises(ConfigError, match='fp16 runs on the torch runtime'):
        build_encoder(_cfg(card, 'onnx', precision='fp16'))
    with pytest.raises(ModelError, match='does not exist; write one with vpr-seq export-onnx'):
        read_model_card(tmp_path / 'none.yaml')
    # a card whose .onnx was replaced
    copy = tmp_path / 'copy'
    copy.mkdir()
    shutil.copy(card, copy / card.name)
    (copy / 'jist.onnx').write_bytes(b'not the exported graph')
    with pytest.raises(ModelError, match='does not match its model card'):
        read_model_card(copy / card.name)
    with pytest.raises(ConfigError, match='must end in .onnx'):
        export_onnx(_cfg(weights, 'torch'), tmp_path / 'model.bin')


def test_onnx_runtime_does_not_import_torch(exported: tuple[Path, Path]) -> None:
    code = (
        'import sys\n'
        'import numpy as np\n'
        'from vpr_seq_ros.config import EncoderConfig\n'
        'from vpr_seq_ros.encoders import build_encoder\n'
        f'cfg = EncoderConfig(name="jist-r18", weights={str(exported[1])!r}, runtime="onnx", '
        f'input_height={H}, input_width={W})\n'
        'out = build_encoder(cfg).encode([np.zeros((10, 10, 3), np.uint8)])\n'
        'assert out.shape == (1, 512), out.shape\n'
        'import dataclasses\n'
        'auto = build_encoder(dataclasses.replace(cfg, precision="auto"))\n'
        'assert auto.precision == "fp32", auto.precision\n'
        'assert "torch" not in sys.modules, "torch was imported"\n')
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, '-c', code], cwd=root, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cli_exports_at_full_size_and_prints_card_and_parity(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog='vpr-seq')
    export_command.register(parser.add_subparsers())
    out = tmp_path / 'full.onnx'
    args = parser.parse_args(['export-onnx', '--random-init', '-o', str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f'model card: {tmp_path / "full.yaml"}' in printed
    assert 'parity with torch: max abs descriptor difference' in printed
    assert 'RANDOM weights' in printed
    card = read_model_card(tmp_path / 'full.yaml')
    assert (card.input_height, card.input_width) == (480, 640) and card.random_init
    onnx_encoder = build_encoder(EncoderConfig(name='jist-r18', weights=str(card.path),
                                               runtime='onnx'))
    torch_encoder = build_encoder(EncoderConfig(name='jist-r18', random_init=True))
    image = seeded_images(1, 480, 640, seed=9)
    np.testing.assert_allclose(onnx_encoder.encode(image), torch_encoder.encode(image),
                               atol=1e-4)
    assert onnx_encoder.settings() == torch_encoder.settings()
