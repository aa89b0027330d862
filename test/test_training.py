"""Offline training: manifest and configuration, mining, losses, SeqMatchNet runs, CLI, boundary.

Tiny seeded data sets are written into ``tmp_path``: two frame-aligned ``.npy`` traverses whose
query side carries a strong condition-specific nuisance in a few dimensions, which a learnt
transform can remove.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.training.config import (JistTrainConfig, SeqMatchNetTrainConfig,
                                         load_train_config, to_dict)
from vpr_seq_ros.training.data import full_windows
from vpr_seq_ros.training.losses import sequence_distance, triplet_hinge
from vpr_seq_ros.training.manifest import load_manifest, manifest_from_dict
from vpr_seq_ros.training.mining import mine_triplets, mining_columns

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'config' / 'training'
N_FRAMES = 120
DIM = 24


def _traverses(folder: Path, n: int = N_FRAMES, dim: int = DIM) -> tuple[Path, Path]:
    """A reference and a query ``.npy`` traverse of the same n places (same index)."""
    rng = np.random.default_rng(7)
    places = np.cumsum(rng.normal(size=(n, dim)), axis=0) * 0.35
    places += rng.normal(size=(n, dim))
    ref = places + 0.1 * rng.normal(size=(n, dim))
    nuisance = np.zeros((n, dim))
    nuisance[:, :6] = 8.0 * rng.normal(size=(n, 6))
    query = places + nuisance + 0.1 * rng.normal(size=(n, dim))
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / 'ref.npy', ref.astype(np.float32))
    np.save(folder / 'query.npy', query.astype(np.float32))
    return folder / 'ref.npy', folder / 'query.npy'


def _manifest_dict(**changes: object) -> dict:
    data = {'traverses': [{'name': 'ref', 'path': 'ref.npy', 'role': 'reference'},
                          {'name': 'query', 'path': 'query.npy', 'role': 'query'}],
            'splits': {'train': [0, 80], 'val': [80, 100], 'test': [100, 120]},
            'ground_truth': {'by': 'index', 'positive_radius': 1, 'negative_radius': 4,
                             'eval_radius': 0}}
    data.update(changes)
    return data


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """Folder with ref.npy, query.npy and manifest.yaml."""
    _traverses(tmp_path / 'data')
    (tmp_path / 'data' / 'manifest.yaml').write_text(yaml.safe_dump(_manifest_dict()))
    return tmp_path / 'data' / 'manifest.yaml'


def _config(manifest: Path, out: Path, **overrides: object) -> SeqMatchNetTrainConfig:
    base = {'data.manifest': str(manifest), 'encoder.name': 'npy', 'sequence.length': 3,
            'batch_size': 8, 'epochs': 2, 'optimizer.lr': 0.2, 'device': 'cpu',
            'output_dir': str(out), 'mining.refresh_every': 40}
    base.update(overrides)
    return load_train_config(SeqMatchNetTrainConfig, None, base)


# --------------------------------------------------------------------------- manifest, config


def test_manifest_reads_ranges_and_resolves_paths(dataset: Path) -> None:
    manifest = load_manifest(dataset)
    assert manifest.splits.ranges('train') == ((0, 80),)
    assert Path(manifest.traverses[0].path) == dataset.parent / 'ref.npy'
    assert [t.name for t in manifest.by_role('query')] == ['query']


@pytest.mark.parametrize('splits, message', [
    ({'train': [0, 80], 'val': [70, 100]}, 'overlapping splits'),
    ({'train': [[0, 50], [40, 80]]}, 'overlapping splits'),
    ({'train': [10, 5]}, 'start < end'),
])
def test_manifest_rejects_overlapping_or_empty_ranges(splits: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        manifest_from_dict(_manifest_dict(splits=splits))


def test_manifest_rejects_overlap_across_traverses_by_index() -> None:
    data = _manifest_dict()
    data['traverses'][1]['splits'] = {'train': [0, 70], 'val': [85, 100]}  # ref val: 80..100
    manifest_from_dict(data)  # no overlap of different splits
    data['traverses'][1]['splits'] = {'train': [0, 90]}  # query train meets ref val 80..100
    with pytest.raises(ConfigError, match='overlapping splits in ref and query'):
        manifest_from_dict(data)


@pytest.mark.parametrize('change, key', [
    ({'spilts': {}}, 'spilts'),
    ({'ground_truth': {'by': 'index', 'positive_radius': 1, 'radius': 3}}, 'radius'),
])
def test_manifest_rejects_unknown_keys(change: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=f'unknown configuration key .*{key}'):
        manifest_from_dict(_manifest_dict(**change))
    data = _manifest_dict()
    data['traverses'][0]['colour'] = 'red'
    with pytest.raises(ConfigError, match='colour'):
        manifest_from_dict(data)


def test_manifest_needs_both_roles_and_sane_radii() -> None:
    data = _manifest_dict()
    data['traverses'][1]['role'] = 'reference'
    with pytest.raises(ConfigError, match='role: query'):
        manifest_from_dict(data)
    with pytest.raises(ConfigError, match='negative_radius'):
        manifest_from_dict(_manifest_dict(ground_truth={'positive_radius': 5,
                                                        'negative_radius': 2}))


def test_config_rejects_unknown_keys_and_silent_random_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='optimizer.lrr'):
        load_train_config(SeqMatchNetTrainConfig, None, {'data.manifest': 'm.yaml',
                                                         'optimizer.lrr': 1})
    with pytest.raises(ConfigError, match='init.random_init'):
        load_train_config(JistTrainConfig, None, {'data.manifest': 'm.yaml'})
    with pytest.raises(ConfigError, match='transform must be none'):
        load_train_config(SeqMatchNetTrainConfig, None, {'data.manifest': 'm.yaml',
                                                         'encoder.transform.name':
                                                         'seqmatchnet'})
    file = tmp_path / 'cfg' / 'train.yaml'
    file.parent.mkdir()
    file.write_text(yaml.safe_dump({'data': {'manifest': 'm.yaml'}, 'output_dir': 'runs/x'}))
    cfg = load_train_config(SeqMatchNetTrainConfig, file, {'epochs': 3})
    assert cfg.data.manifest == str(file.parent / 'm.yaml')
    assert cfg.output_dir == str(file.parent / 'runs/x') and cfg.epochs == 3


@pytest.mark.parametrize('path', sorted(CONFIG_DIR.glob('*.yaml')), ids=lambda p: p.name)
def test_shipped_training_files_follow_the_schema(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    if 'traverses' in data:
        manifest = manifest_from_dict(data, path.parent)
        assert all(Path(t.path).is_absolute() for t in manifest.traverses)
    else:
        cls = JistTrainConfig if 'jist' in path.name else SeqMatchNetTrainConfig
        cfg = load_train_config(cls, path)
        assert (CONFIG_DIR / Path(cfg.data.manifest).name).is_file()


# --------------------------------------------------------------------------- mining and losses


def _naive_sequence_distance(ref: np.ndarray, query: np.ndarray, r_start: int, q_start: int,
                             length: int) -> float:
    return float(np.mean([np.linalg.norm(ref[r_start + t].astype(np.float64) - query[q_start + t])
                          for t in range(length)]))


@pytest.mark.parametrize('window', ['trailing', 'centred'])
@pytest.mark.parametrize('length', [1, 4, 5])
def test_mining_matrix_equals_naive_computation(window: str, length: int) -> None:
    rng = np.random.default_rng(length)
    ref = rng.normal(size=(30, 6)).astype(np.float32)
    query = rng.normal(size=(25, 6)).astype(np.float32)
    ref_segments = np.repeat([0, 1], [18, 12])
    query_segments = np.zeros(25, np.int64)
    starts, valid = full_windows(ref_segments, length, window)
    q_starts, q_valid = full_windows(query_segments, length, window)
    anchors = np.flatnonzero(q_valid)[::3]
    windows = np.stack([query[q_starts[a]:q_starts[a] + length] for a in anchors])
    columns = mining_columns(ref, ref_segments, windows, window)
    assert columns.shape == (30, len(anchors))
    for col, a in enumerate(anchors):
        for i in range(30):
            if valid[i]:
                naive = _naive_sequence_distance(ref, query, starts[i], q_starts[a], length)
                assert columns[i, col] == pytest.approx(naive, rel=1e-4, abs=1e-4)
            elif window == 'trailing':
                assert np.isinf(columns[i, col])


def test_mining_keeps_only_margin_violating_negatives_never_positives() -> None:
    rng = np.random.default_rng(3)
    n, margin = 60, 0.5
    places = np.arange(n, dtype=np.float64)
    ref_valid = np.ones(n, bool)
    ref_valid[:2] = False
    queries = np.arange(5, 55, 5)
    columns = rng.uniform(0.0, 2.0, size=(n, len(queries))).astype(np.float32)
    positives, masks = [], []
    for j in queries:
        dist = np.abs(places - j)
        positives.append(np.flatnonzero((dist <= 1) & ref_valid))
        masks.append((dist > 4) & ref_valid)
    triplets = mine_triplets(columns, queries, positives, masks, margin, num_negatives=10)
    assert triplets
    for t in triplets:
        col = list(queries).index(t.query)
        d = columns[:, col].astype(np.float64)
        assert t.positive in positives[col]
        assert d[t.positive] == d[positives[col]].min()
        assert 1 <= len(t.negatives) <= 10
        assert np.all(np.abs(places[t.negatives] - t.query) > 4)  # never a positive or near
        assert np.all(d[t.negatives] < d[t.positive] + margin)    # all violate the margin
        assert np.all(np.diff(d[t.negatives]) >= 0)               # hardest first
        violating = np.flatnonzero(masks[col] & (d < d[t.positive] + margin))
        assert len(t.negatives) == min(10, len(violating))


def test_query_without_violating_negative_is_skipped() -> None:
    columns = np.array([[0.1], [5.0], [6.0]], dtype=np.float32)
    mask = np.array([False, True, True])
    assert mine_triplets(columns, np.array([0]), [np.array([0])], [mask], 0.3, 10) == []


def test_sequence_distance_and_hinge() -> None:
    q = torch.tensor([[[0.0, 0.0], [1.0, 0.0]]])
    r = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    assert float(sequence_distance(q, r)) == pytest.approx(2.5)
    loss = triplet_hinge(torch.tensor([1.0, 1.0]), torch.tensor([1.2, 3.0]), 0.5)
    assert float(loss) == pytest.approx(0.15)
    q.requires_grad_(True)
    sequence_distance(q, q.detach()).backward()  # identical frames: finite gradient
    assert torch.isfinite(q.grad).all()


# --------------------------------------------------------------------------- SeqMatchNet runs


def test_a_few_steps_reduce_the_loss(dataset: Path, tmp_path: Path) -> None:
    from vpr_seq_ros.training.data import descriptor_loader, load_splits
    from vpr_seq_ros.training.seqmatchnet import _Trainer

    from vpr_seq_ros.encoders import build_encoder

    cfg = _config(dataset, tmp_path / 'run')
    manifest = load_manifest(dataset)
    splits = load_splits(manifest, ('train',), descriptor_loader(build_encoder(cfg.encoder)))
    trainer = _Trainer(cfg, splits['train'], manifest.ground_truth, torch.device('cpu'))
    triplets = trainer.mine(trainer.data.queries[:16])
    assert triplets
    losses = [trainer.step(triplets) for _ in range(15)]
    assert losses[-1] < 0.7 * losses[0]


def test_training_improves_recall_and_records_the_run(dataset: Path, tmp_path: Path) -> None:
    from vpr_seq_ros.models.seqmatchnet import load_seqmatchnet
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    out = tmp_path / 'run'
    summaries = []
    from vpr_seq_ros.training.common import TrainCallbacks

    best = train_seqmatchnet(_config(dataset, out, epochs=3),
                             callbacks=TrainCallbacks(on_epoch_end=summaries.append),
                             command_line='vpr-seq train seqmatchnet --config x.yaml')
    assert best == out / 'best.pt'
    assert [s.epoch for s in summaries] == [1, 2, 3]
    assert all(5 in s.recalls and s.steps > 0 for s in summaries)
    identity = _identity_recall(dataset)
    assert identity < 0.7 <= 0.9 <= max(s.recalls[1] for s in summaries)
    loaded = load_seqmatchnet(best)  # the existing loader, strict
    assert loaded.transform.in_dim == DIM and not loaded.random_init
    lines = (out / 'command.txt').read_text().splitlines()
    assert lines[1:] == ['vpr-seq train seqmatchnet --config x.yaml']
    assert lines[0].startswith('# epochs 1-3; started ') and lines[0].endswith(f'in {Path.cwd()}')
    saved = load_train_config(SeqMatchNetTrainConfig, out / 'config.yaml')
    assert to_dict(saved) == to_dict(_config(dataset, out, epochs=3))
    assert yaml.safe_load((out / 'manifest.yaml').read_text())['splits']['train'] == [[0, 80]]
    history = yaml.safe_load((out / 'history.json').read_text())
    assert [h['epoch'] for h in history] == [1, 2, 3]


def _identity_recall(manifest_path: Path) -> float:
    """Validation Recall@1 of the untrained (identity) transform."""
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.models.seqmatchnet import SeqMatchNetTransform
    from vpr_seq_ros.training.data import descriptor_loader, load_splits
    from vpr_seq_ros.training.seqmatchnet import _evaluate

    cfg = _config(manifest_path, Path('unused'))
    manifest = load_manifest(manifest_path)
    val = load_splits(manifest, ('val',), descriptor_loader(build_encoder(cfg.encoder)))['val']
    return _evaluate(SeqMatchNetTransform.identity(DIM), val, cfg, 0.0, torch.device('cpu'))[1]


def test_resumed_run_continues_identically(dataset: Path, tmp_path: Path) -> None:
    from vpr_seq_ros.models.checkpoints import read_checkpoint
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    whole = tmp_path / 'whole'
    part = tmp_path / 'part'
    train_seqmatchnet(_config(dataset, whole, epochs=3))
    train_seqmatchnet(_config(dataset, part, epochs=1))
    train_seqmatchnet(_config(dataset, part, epochs=3), resume=part / 'last.pt')
    a = read_checkpoint(whole / 'last.pt').state_dict
    b = read_checkpoint(part / 'last.pt').state_dict
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ConfigError, match='another configuration'):
        train_seqmatchnet(_config(dataset, part, epochs=4, batch_size=4), resume=part)
    with pytest.raises(ConfigError, match='already holds a training run'):
        train_seqmatchnet(_config(dataset, part, epochs=4))


def test_manifest_paths_are_relative_to_the_manifest_not_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The data, the manifest, the training config and the current folder all differ; only
    relative paths are used, and the run is started from the command line."""
    data = tmp_path / 'datasets' / 'route'
    _traverses(data)
    (data / 'tables').mkdir()
    (data / 'tables' / 'ref.csv').write_text(
        'name,x,y\n' + ''.join(f'{i},{i},0\n' for i in range(N_FRAMES)))
    manifest = _manifest_dict()
    manifest['traverses'][0]['source'] = {'poses': 'tables/ref.csv'}
    (data / 'manifest.yaml').write_text(yaml.safe_dump(manifest))
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'train.yaml').write_text(yaml.safe_dump({
        'data': {'manifest': '../datasets/route/manifest.yaml'}, 'encoder': {'name': 'npy'},
        'sequence': {'length': 3}, 'batch_size': 8, 'epochs': 1, 'device': 'cpu',
        'output_dir': 'runs/a'}))
    elsewhere = tmp_path / 'somewhere' / 'else'
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    loaded = load_manifest(Path('../../datasets/route/manifest.yaml'))
    assert loaded.traverses[0].path == str(data / 'ref.npy')
    assert loaded.traverses[0].source.poses == str(data / 'tables' / 'ref.csv')
    args = _parser().parse_args(['train', 'seqmatchnet', '--config', '../../configs/train.yaml',
                                 '--no-progress'])
    assert args.func(args) == 0
    run = tmp_path / 'configs' / 'runs' / 'a'
    assert f'checkpoint: {run / "best.pt"}' in capsys.readouterr().out
    saved = yaml.safe_load((run / 'manifest.yaml').read_text())
    assert [t['path'] for t in saved['traverses']] == [str(data / 'ref.npy'),
                                                       str(data / 'query.npy')]
    assert not list(elsewhere.iterdir())  # nothing written to the current folder


def test_manifest_names_a_missing_traverse_as_written_and_resolved(tmp_path: Path) -> None:
    _traverses(tmp_path / 'data')
    manifest = _manifest_dict()
    manifest['traverses'][1]['path'] = 'winter/query.npy'
    (tmp_path / 'data' / 'manifest.yaml').write_text(yaml.safe_dump(manifest))
    with pytest.raises(ConfigError, match=r"traverse query: path 'winter/query.npy' does not "
                       r"exist \(relative paths are taken from the folder of the manifest, "
                       f"{tmp_path / 'data'}\\): {tmp_path / 'data' / 'winter' / 'query.npy'}"):
        load_manifest(tmp_path / 'data' / 'manifest.yaml')


def _attempts(folder: Path) -> list[str]:
    """The command lines of ``command.txt``, without the comment lines."""
    return [line for line in (folder / 'command.txt').read_text().splitlines()
            if not line.startswith('#')]


def test_command_txt_records_the_attempts_that_trained_the_checkpoint(dataset: Path,
                                                                      tmp_path: Path) -> None:
    from vpr_seq_ros.errors import SourceError
    from vpr_seq_ros.models.checkpoints import read_checkpoint
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    out = tmp_path / 'run'
    broken = dataset.parent / 'broken.yaml'
    broken.write_text(yaml.safe_dump(_manifest_dict(splits={'train': [0, 500]})))
    with pytest.raises((ConfigError, SourceError), match='reach frame 499'):
        train_seqmatchnet(_config(broken, out, epochs=2), command_line='attempt 1 (fails)')
    assert list(out.iterdir()) == []  # a failed attempt leaves nothing behind
    train_seqmatchnet(_config(dataset, out, epochs=2), command_line='attempt 2')
    assert _attempts(out) == ['attempt 2']
    with pytest.raises(ConfigError, match='another configuration'):
        train_seqmatchnet(_config(dataset, out, epochs=3, batch_size=4), resume=out,
                          command_line='attempt 3 (refused)')
    train_seqmatchnet(_config(dataset, out, epochs=3), resume=out, command_line='attempt 4')
    text = (out / 'command.txt').read_text().splitlines()
    assert _attempts(out) == ['attempt 2', 'attempt 4']
    assert text[0].startswith('# epochs 1-2; started ')
    assert text[2].startswith(f'# epoch 3, resumed from {out / "train_state.pt"}; started ')
    last = read_checkpoint(out / 'last.pt')
    assert [(c['command'], c['epochs']) for c in last.meta['commands']] == \
        [('attempt 2', [1, 2]), ('attempt 4', [3, 3])]
    best = read_checkpoint(out / 'best.pt')
    trained = [c['command'] for c in best.meta['commands']]
    assert trained == (['attempt 2', 'attempt 4'] if best.meta['epoch'] == 3 else ['attempt 2'])
    # continued in a new folder: the earlier attempts come along, from the training state
    moved = tmp_path / 'moved'
    train_seqmatchnet(_config(dataset, moved, epochs=4), resume=out, command_line='attempt 5')
    assert _attempts(moved) == ['attempt 2', 'attempt 4', 'attempt 5']


@pytest.mark.parametrize('loss, mining', [('single', 'single'), ('seqmatch', 'single'),
                                          ('single', 'seqmatch')])
def test_ablation_switches_train(dataset: Path, tmp_path: Path, loss: str, mining: str) -> None:
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    path = train_seqmatchnet(_config(dataset, tmp_path / 'run', epochs=1,
                                     **{'loss.distance': loss, 'mining.distance': mining}))
    assert path.is_file()


def test_descriptor_cache_is_keyed_by_what_made_it(dataset: Path, tmp_path: Path) -> None:
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.training.data import descriptor_loader, load_splits

    cache = tmp_path / 'cache'
    manifest = load_manifest(dataset)
    cfg = _config(dataset, tmp_path / 'run')
    first = load_splits(manifest, ('train',), descriptor_loader(build_encoder(cfg.encoder),
                                                                cache))
    files = sorted(cache.iterdir())
    assert len(files) == 2
    again = load_splits(manifest, ('train',), descriptor_loader(build_encoder(cfg.encoder),
                                                                cache))
    assert np.array_equal(first['train'].query.data, again['train'].query.data)
    np.save(dataset.parent / 'query.npy', np.zeros((N_FRAMES, DIM), np.float32))
    load_splits(manifest, ('train',), descriptor_loader(build_encoder(cfg.encoder), cache))
    assert len(list(cache.iterdir())) == 3  # the changed file made a new entry


def test_trains_from_bags_with_poses(tmp_path: Path) -> None:
    """Two ROS 2 bags (images + odometry) of one route, ground truth by position in metres."""
    from conftest import write_run
    from vpr_seq_ros.bagwrite import images_to_bag
    from vpr_seq_ros.models.seqmatchnet import load_seqmatchnet
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    places = np.arange(40, dtype=np.float64)
    for name, seed, noise in (('day', 1, 10.0), ('dusk', 2, 25.0)):
        write_run(tmp_path / name, places, seed=seed, noise=noise)
        images_to_bag(tmp_path / name, tmp_path / f'{name}_bag')
    source = {'image_topic': '/camera/image_raw', 'pose_topic': '/odom'}
    manifest = {'traverses': [{'name': 'day', 'path': 'day_bag', 'role': 'reference',
                               'source': source},
                              {'name': 'dusk', 'path': 'dusk_bag', 'role': 'query',
                               'source': source}],
                'splits': {'train': [0, 28], 'val': [30, 40]},
                'ground_truth': {'by': 'position', 'positive_radius': 1.0,
                                 'negative_radius': 4.0, 'eval_radius': 1.0}}
    (tmp_path / 'manifest.yaml').write_text(yaml.safe_dump(manifest))
    cfg = _config(tmp_path / 'manifest.yaml', tmp_path / 'run', epochs=1,
                  **{'encoder.name': 'patchnorm', 'optimizer.lr': 0.01})
    best = train_seqmatchnet(cfg)
    assert load_seqmatchnet(best).transform.in_dim == 64 * 32


# --------------------------------------------------------------------------- CLI and boundary


def _parser() -> argparse.ArgumentParser:
    from vpr_seq_ros.commands import train

    parser = argparse.ArgumentParser(prog='vpr-seq')
    train.register(parser.add_subparsers(dest='command'))
    return parser


def test_cli_trains_and_the_checkpoint_serves_build_map_and_evaluate(
        dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vpr_seq_ros.cli import main

    cfg_file = tmp_path / 'train.yaml'
    cfg_file.write_text(yaml.safe_dump({
        'data': {'manifest': str(dataset)}, 'encoder': {'name': 'npy'},
        'sequence': {'length': 3}, 'optimizer': {'lr': 0.05}, 'batch_size': 8}))
    out = tmp_path / 'cli_run'
    args = _parser().parse_args(['train', 'seqmatchnet', '--config', str(cfg_file), '--out',
                                 str(out), '--epochs', '1', '--device', 'cpu', '--seed', '5',
                                 '--no-progress'])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert 'epoch 1/1' in printed and f'checkpoint: {out / "best.pt"}' in printed
    assert yaml.safe_load((out / 'config.yaml').read_text())['seed'] == 5
    data = dataset.parent
    assert main(['build-map', str(data / 'ref.npy'), '-o', str(tmp_path / 'map.npz'),
                 '--encoder', 'npy', '--transform', 'seqmatchnet', '--transform-weights',
                 str(out / 'best.pt'), '--seq-len', '3', '--no-progress']) == 0
    assert main(['evaluate', '--map', str(tmp_path / 'map.npz'), str(data / 'query.npy'),
                 '--no-progress']) == 0
    assert 'R@1' in capsys.readouterr().out


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet

    cfg = load_train_config(SeqMatchNetTrainConfig, None,
                            {'data.manifest': str(tmp_path / 'missing.yaml'),
                             'output_dir': str(tmp_path / 'r')})
    with pytest.raises(ConfigError, match='manifest .* does not exist'):
        train_seqmatchnet(cfg)
    args = _parser().parse_args(['train', 'jist', '--config', str(tmp_path / 'none.yaml')])
    with pytest.raises(ConfigError, match='cannot read'):
        args.func(args)


def test_training_is_never_imported_by_the_runtime_or_the_node() -> None:
    code = ('import sys, importlib, vpr_seq_ros.runtime, vpr_seq_ros.runtime.core, '
            'vpr_seq_ros.runtime.outputs, vpr_seq_ros.runtime.queue, '
            'vpr_seq_ros.runtime.store, vpr_seq_ros.runtime.decisions, '
            'vpr_seq_ros.ros, vpr_seq_ros.ros.params, '
            'vpr_seq_ros.pipeline, vpr_seq_ros.cli\n'
            'try:\n    importlib.import_module("vpr_seq_ros.ros.node")\n'
            'except ImportError:\n    pass\n'
            'bad = [m for m in sys.modules if m.startswith("vpr_seq_ros.training")]\n'
            'print(bad); sys.exit(1 if bad else 0)')
    done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    package = Path(__file__).resolve().parents[1] / 'vpr_seq_ros'
    for path in package.rglob('*.py'):
        if 'training' in path.parts or path.name == 'train.py':
            continue
        assert 'vpr_seq_ros.training' not in path.read_text(), path
