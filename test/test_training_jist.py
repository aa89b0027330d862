"""JIST training on tiny synthetic image traverses (32 x 32 input, L = 3, starting from seeded
weights in the official layout): the checkpoint loads with the existing loader and exports to
ONNX, frozen stages stay frozen, a resumed run continues identically; place groups, CosFace and
augmentation."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import write_run
from models_fixtures import official_jist_state_dict
from vpr_seq_ros.training.config import (JistImageBranchConfig, JistTrainConfig,
                                         load_train_config, to_dict)

N_FRAMES = 40


@pytest.fixture(scope='module')
def jist_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two image traverses of the same 40 places (1 m apart, poses in frames.csv), a manifest
    with ground truth by position, and an official-layout JIST checkpoint to start from."""
    root = tmp_path_factory.mktemp('jist')
    places = np.arange(N_FRAMES, dtype=np.float64)
    write_run(root / 'ref', places, seed=1)
    write_run(root / 'qry', places, seed=2, noise=25.0)
    manifest = {'traverses': [{'name': 'ref', 'path': 'ref', 'role': 'reference'},
                              {'name': 'qry', 'path': 'qry', 'role': 'query'}],
                'splits': {'train': [0, 28], 'val': [28, 40]},
                'ground_truth': {'by': 'position', 'positive_radius': 1, 'negative_radius': 4,
                                 'eval_radius': 1}}
    (root / 'manifest.yaml').write_text(yaml.safe_dump(manifest))
    torch.save(official_jist_state_dict(seed=3), root / 'JIST_official_layout.pth')
    return root


def _config(root: Path, out: Path, **overrides: object) -> JistTrainConfig:
    base = {'data.manifest': str(root / 'manifest.yaml'), 'data.cache_dir': str(root / 'cache'),
            'init.weights': str(root / 'JIST_official_layout.pth'), 'input_height': 32,
            'input_width': 32, 'sequence.length': 3, 'sequence.batch_size': 2,
            'sequence.num_negatives': 2, 'sequence.cached_queries': 2,
            'sequence.cached_negatives': 8, 'sequence.sub_epochs': 1, 'image.batch_size': 4,
            'image.cell_size': 4, 'image.cells_per_group': 2, 'image.min_images_per_class': 2,
            'image.groups': 2, 'epochs': 2, 'device': 'cpu', 'output_dir': str(out),
            'eval_batch_size': 32}
    base.update(overrides)
    return load_train_config(JistTrainConfig, None, base)


@pytest.fixture(scope='module')
def whole_run(jist_data: Path) -> Path:
    """Two epochs, uninterrupted."""
    from vpr_seq_ros.training.jist import train_jist

    return train_jist(_config(jist_data, jist_data / 'whole'))


def test_checkpoint_loads_with_load_jist_and_serves_the_encoder(jist_data: Path,
                                                                 whole_run: Path) -> None:
    from vpr_seq_ros.config import EncoderConfig
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.models.checkpoints import load_jist, read_checkpoint

    loaded = load_jist(whole_run)  # strict: every one of the 124 official keys
    assert loaded.layout == 'vpr_seq_ros/jist-r18' and not loaded.random_init
    start = official_jist_state_dict(seed=3)
    trained = read_checkpoint(whole_run).state_dict
    assert set(trained) == set(start)
    assert torch.equal(trained['model.backbone.6.0.conv1.weight'],
                       start['model.backbone.6.0.conv1.weight'])      # layer3: frozen
    assert not torch.equal(trained['model.backbone.7.0.conv1.weight'],
                           start['model.backbone.7.0.conv1.weight'])  # layer4: trained
    assert not torch.equal(trained['model.aggregation.3.weight'],
                           start['model.aggregation.3.weight'])      # head: trained
    encoder = build_encoder(EncoderConfig(name='jist-r18', weights=str(whole_run),
                                          input_height=32, input_width=32))
    out = encoder.encode([np.zeros((48, 64, 3), np.uint8)])
    assert out.shape == (1, 512) and np.all(np.isfinite(out))
    from vpr_seq_ros.cli import main

    assert main(['export-onnx', '--weights', str(whole_run), '-o',
                 str(jist_data / 'jist.onnx'), '--input-size', '32', '32']) == 0
    history = yaml.safe_load((whole_run.parent / 'history.json').read_text())
    assert [h['epoch'] for h in history] == [1, 2]
    assert all(np.isfinite(h['losses']['seq_loss']) and 'img_loss' in h['losses']
               for h in history)
    assert '5' in history[0]['recalls']


def test_resumed_run_continues_identically(jist_data: Path, whole_run: Path) -> None:
    from vpr_seq_ros.models.checkpoints import read_checkpoint
    from vpr_seq_ros.training.jist import train_jist

    part = jist_data / 'part'
    # The first epoch through the command line, the second resumed from Python.
    file = jist_data / 'jist.yaml'
    file.write_text(yaml.safe_dump(to_dict(_config(jist_data, part))))
    args = _parser().parse_args(['train', 'jist', '--config', str(file), '--out', str(part),
                                 '--epochs', '1', '--no-progress'])
    assert args.func(args) == 0
    train_jist(_config(jist_data, part, epochs=2), resume=part)
    a = read_checkpoint(whole_run.parent / 'last.pt').state_dict
    b = read_checkpoint(part / 'last.pt').state_dict
    assert all(torch.equal(a[k], b[k]) for k in a)


def _parser() -> argparse.ArgumentParser:
    from vpr_seq_ros.commands import train

    parser = argparse.ArgumentParser(prog='vpr-seq')
    train.register(parser.add_subparsers(dest='command'))
    return parser


def test_random_init_needs_the_explicit_flag(jist_data: Path) -> None:
    from vpr_seq_ros.errors import ConfigError

    with pytest.raises(ConfigError, match='random_init'):
        _config(jist_data, jist_data / 'x', **{'init.weights': None})
    cfg = _config(jist_data, jist_data / 'x', **{'init.weights': None, 'init.random_init': True})
    assert cfg.init.random_init


def test_place_groups_separate_neighbouring_classes() -> None:
    from vpr_seq_ros.training.groups import place_groups

    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, size=(2000, 2))
    places = np.concatenate([xy, np.zeros((2000, 1))], axis=1)
    yaw = rng.uniform(-np.pi, np.pi, size=2000)
    cfg = JistImageBranchConfig(cell_size=10, heading_bin_deg=90, cells_per_group=5,
                                headings_per_group=2, groups=8, min_images_per_class=5)
    groups = place_groups(places, yaw, 'position', cfg)
    assert 1 <= len(groups) <= 8
    for group in groups:
        cells = set()
        for rows in group.classes:
            assert len(rows) >= 5
            cell = np.floor(xy[rows] / 10).astype(int)
            assert (cell == cell[0]).all()  # one class = one cell
            cells.add(tuple(cell[0]))
        for a in cells:
            for b in cells:
                if a != b:  # classes of one group are N = 5 cells apart along some axis
                    assert max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= 5
        rows, labels = group.sample(np.random.default_rng(1), 16)
        assert all(r in group.classes[c] for r, c in zip(rows, labels))
    by_index = place_groups(np.arange(100, dtype=float)[:, None], np.full(100, np.nan), 'index',
                            JistImageBranchConfig(cell_size=5, cells_per_group=2,
                                                  min_images_per_class=5))
    assert [g.num_classes for g in by_index] == [10, 10]


def test_cosface_subtracts_the_margin_at_the_true_class() -> None:
    from vpr_seq_ros.training.losses import CosFace

    head = CosFace(4, 3, scale=30.0, margin=0.4)
    with torch.no_grad():
        head.weight.copy_(torch.eye(3, 4))
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0]])
    logits = head(x, torch.tensor([0, 2]))
    assert torch.allclose(logits, torch.tensor([[30 * 0.6, 0.0, 0.0], [0.0, 30.0, -12.0]]))


def test_augmentation_is_seeded_and_in_range() -> None:
    from vpr_seq_ros.training.jist import augment

    images = torch.randint(0, 256, (3, 3, 24, 32), dtype=torch.uint8)
    a = augment(images, torch.Generator().manual_seed(4))
    b = augment(images, torch.Generator().manual_seed(4))
    assert a.shape == (3, 3, 24, 32) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
