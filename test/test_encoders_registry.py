"""One registry of encoders: a toy encoder added inside the test runs through every path.

The toy plugin (``encoders_toy.py``) is what a user writes to add an encoder; registering it is
the one registry line. It is then built from the configuration, loads its own checkpoint layout
and this project's checkpoints, encodes a run through ``pipeline.encode_run``, builds a map,
is exported to ONNX (fp32 and int8) through ``export-onnx`` and runs on onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from encoders_toy import DIM, NAME, ToyNet, registered_toy, save_toy_weights
from models_fixtures import seeded_images
from vpr_seq_ros.cli import main as cli_main
from vpr_seq_ros.config import EncoderConfig, load_config
from vpr_seq_ros.encoders import build_encoder, encoder_names, get_encoder_plugin
from vpr_seq_ros.encoders.precision import nearest_other
from vpr_seq_ros.encoders.registry import all_plugins, register_encoder
from vpr_seq_ros.errors import ConfigError, MapError
from vpr_seq_ros.models.checkpoints import checkpoint_kinds, read_checkpoint, save_checkpoint
from vpr_seq_ros.models.onnx_export import read_model_card
from vpr_seq_ros.pipeline import build_map, encode_run, evaluate
from vpr_seq_ros.preprocess import preprocess_batch
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.sources import open_source

H, W = 40, 48


@pytest.fixture()
def toy() -> object:
    with registered_toy():
        yield


@pytest.fixture()
def run_folder(tmp_path: Path) -> Path:
    folder = tmp_path / 'run'
    folder.mkdir()
    for i, image in enumerate(seeded_images(8, 60, 80, seed=11)):
        Image.fromarray(image).save(folder / f'{i:03d}.png')
    return folder


def _reference(seed: int, images: list[np.ndarray]) -> np.ndarray:
    """The toy network's forward pass, called directly on the resized batch."""
    with torch.inference_mode():
        return ToyNet(seed).eval()(torch.from_numpy(
            np.ascontiguousarray(preprocess_batch(images, H, W)))).numpy()


def test_builtin_registry_and_config_validation() -> None:
    assert encoder_names()[:3] == ('patchnorm', 'npy', 'jist-r18')
    assert checkpoint_kinds() == ('jist-r18', 'seqmatchnet')
    assert [p.name for p in all_plugins() if getattr(p, 'exportable', False)] == ['jist-r18']
    with pytest.raises(ConfigError, match="encoder.name = 'toy-cnn' is not one of patchnorm"):
        EncoderConfig(name=NAME)
    with pytest.raises(ConfigError, match='already registered'):
        register_encoder('jist-r18', 'vpr_seq_ros.encoders.jist:JistPlugin')


def test_toy_encoder_through_config_checkpoints_and_encode_run(
        toy: object, tmp_path: Path, run_folder: Path) -> None:
    assert NAME in encoder_names() and NAME in checkpoint_kinds()
    weights = save_toy_weights(tmp_path / 'toy.pth', seed=5)
    cfg = load_config(overrides={'encoder.name': NAME, 'encoder.weights': str(weights),
                                 'encoder.input_height': H, 'encoder.input_width': W})
    encoder = build_encoder(cfg.encoder)
    images = seeded_images(3, 70, 50, seed=2)
    out = encoder.encode(images)
    assert out.shape == (3, DIM) and out.dtype == np.float32
    np.testing.assert_allclose(out, _reference(5, images), atol=1e-6)
    assert read_checkpoint(weights).layout == 'toy'

    # this project's checkpoint format, with the toy's kind
    own = save_checkpoint(tmp_path / 'own.pt', NAME, ToyNet(5).state_dict(), epoch=1)
    assert read_checkpoint(own).layout == f'vpr_seq_ros/{NAME}'
    again = build_encoder(EncoderConfig(name=NAME, weights=str(own), input_height=H,
                                        input_width=W))
    np.testing.assert_allclose(again.encode(images), out, atol=1e-6)

    # encode_run and build_map go through the contract only
    source = open_source(run_folder)
    run = encode_run(source, encoder, batch_size=3)
    frames = [np.asarray(Image.open(p).convert('RGB')) for p in sorted(run_folder.iterdir())]
    np.testing.assert_allclose(run.descriptors, _reference(5, frames), atol=1e-6)
    map_cfg = load_config(overrides={**{'encoder.name': NAME, 'encoder.weights': str(weights),
                                        'encoder.input_height': H, 'encoder.input_width': W},
                                     'sequence.length': 3})
    refmap = load_map(build_map(run_folder, map_cfg, tmp_path / 'toy_map.npz'))
    np.testing.assert_allclose(refmap.run.descriptors, run.descriptors, atol=1e-6)
    refmap.check_query(encoder.settings())
    # evaluate: the run against its own map finds every frame (distinct toy descriptors)
    assert len(set(map(tuple, np.round(run.descriptors, 4)))) == len(run)
    result = evaluate(refmap, run_folder, map_cfg)
    assert result.metrics.recall_at[1] == 1.0 and result.metrics.num_evaluated == len(run) - 2
    # the node core, frame by frame, with the same encoder
    from vpr_seq_ros.runtime.core import NodeCore

    core = NodeCore(map_cfg, encoder, refmap)
    best = [core.on_frame(frame).hypothesis for frame in open_source(run_folder)]
    assert [h.best.ref_index for h in best[2:]] == list(range(2, len(run)))
    other = build_encoder(EncoderConfig(name=NAME, weights=str(save_toy_weights(
        tmp_path / 'other.pth', seed=6)), input_height=H, input_width=W))
    with pytest.raises(MapError, match='weights_sha256'):
        refmap.check_query(other.settings())


def test_toy_encoder_exports_to_onnx_fp32_and_int8(toy: object, tmp_path: Path,
                                                  run_folder: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    weights = save_toy_weights(tmp_path / 'toy.pth', seed=5)
    out = tmp_path / 'toy.onnx'
    assert cli_main(['export-onnx', '--encoder', NAME, '--weights', str(weights), '-o', str(out),
                     '--input-size', str(H), str(W), '--precision', 'int8', '--calibration-run',
                     str(run_folder), '--calibration-frames', '8']) == 0
    printed = capsys.readouterr().out
    assert 'int8 graph:' in printed and 'min cosine' in printed
    card = read_model_card(tmp_path / 'toy.yaml')
    assert card.encoder == NAME and card.descriptor_dim == DIM and card.seqgem_p is None
    assert card.int8_parity is not None and card.int8_parity['frames'] == 8

    base = {'name': NAME, 'weights': str(card.path), 'runtime': 'onnx', 'input_height': H,
            'input_width': W}
    images = seeded_images(5, 64, 64, seed=4)
    torch_encoder = build_encoder(EncoderConfig(name=NAME, weights=str(weights),
                                                input_height=H, input_width=W))
    fp32 = build_encoder(EncoderConfig(**base))
    np.testing.assert_allclose(fp32.encode(images), torch_encoder.encode(images), atol=1e-5)
    assert fp32.settings() == torch_encoder.settings()

    int8 = build_encoder(EncoderConfig(**base, precision='int8'))
    reference, quantised = torch_encoder.encode(images), int8.encode(images)
    cosine = (reference * quantised).sum(1) / np.linalg.norm(quantised, axis=1)
    assert cosine.min() >= 0.999
    np.testing.assert_array_equal(nearest_other(quantised), nearest_other(reference))
    settings = int8.settings()
    assert settings['precision'] == 'int8' and settings['parity'] == {
        k: v for k, v in card.int8_parity.items() if k not in ('calibration', 'per_channel')}
    # a map made at fp32 takes the int8 query (the precision rule), not another encoder's
    refmap = load_map(build_map(run_folder, load_config(overrides={
        **{f'encoder.{k}': v for k, v in base.items()}, 'sequence.length': 3}),
        tmp_path / 'm.npz'))
    refmap.check_query(settings)
    assert json.loads(json.dumps(refmap.encoder_settings))['precision'] == 'fp32'


def test_not_exportable_encoder_is_refused(tmp_path: Path) -> None:
    from vpr_seq_ros.models.onnx_export import export_onnx

    with pytest.raises(ConfigError, match="'patchnorm' cannot be exported to ONNX; exportable: "
                       'jist-r18'):
        export_onnx(EncoderConfig(name='patchnorm'), tmp_path / 'p.onnx')
    assert not get_encoder_plugin('npy').exportable


def test_describe_runs_any_registered_encoder(toy: object, tmp_path: Path,
                                              run_folder: Path) -> None:
    weights = save_toy_weights(tmp_path / 'toy.pth', seed=5)
    out = tmp_path / 'd.npz'
    assert cli_main(['describe', str(run_folder), '-o', str(out), '--encoder', NAME,
                     '--weights', str(weights), '--no-progress']) == 0
    with np.load(out) as data:
        frames = [np.asarray(Image.open(p).convert('RGB'))
                  for p in sorted(run_folder.iterdir())]
        expected = ToyNet(5).eval()(torch.from_numpy(np.ascontiguousarray(
            preprocess_batch(frames, 480, 640)))).detach().numpy()
        np.testing.assert_allclose(data['frame_descriptors'], expected, atol=1e-6)
