"""SeqMatchNet training on Nordland summer -> winter: the paper's Table 1 ablation, on our data.

Data: ``nordland_64x32`` (1200 frames per season, every 10th original frame, 64x32 grey; the
same file name is the same place). Base frame descriptors: ``patchnorm`` (64x32, 8x8 patches,
D = 2048). Splits by frame index: 0-799 train, 800-999 validation, 1000-1199 test; summer is the
reference, winter the query. Training radii: positives within 2 frames, negatives beyond 10
(the official code: 10 and 40 original frames; ours are 10 original frames apart). Test ground
truth: the same index (the paper's +-1 frame at full frame rate is less than one of ours).

Variants: the untrained transform (identity: L2-normalised patchnorm) and the four
``(loss, mining)`` combinations of ``single`` (anchor frame only) and ``seqmatch`` (the sequence
distance over L = 5). Each is trained with ``train_seqmatchnet`` (what ``vpr-seq train
seqmatchnet --config FILE`` runs; the files are written and the command lines printed), then the
selected checkpoint (best validation Recall@5) and the last epoch's are evaluated on the test
split through the public pipeline (``build_encoder`` with ``--transform seqmatchnet
--transform-weights``, ``evaluate_encoded``) with sequence matching at L = 5 and L = 10
(Euclidean, trailing windows, no contrast enhancement).

Defaults differ from the paper so that all variants finish in minutes on two CPU cores: 4 epochs
(the paper: 50) at learning rate 0.01 (the paper: 0.001 over ~940 steps per epoch; 800 training
queries give 50 steps per epoch here); everything else is the paper's (SGD momentum 0.9, weight
decay 0.001, StepLR(5, 0.5), batch 16, margin sqrt(0.1), up to 10 negatives, seed 123).

Run: ``python benchmarks/train_nordland.py [--data ../shared/data] [--epochs 4] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from vpr_seq_ros.config import Config, EncoderConfig, TransformConfig, replace
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.pipeline import encode_run, evaluate_encoded
from vpr_seq_ros.models.checkpoints import save_checkpoint
from vpr_seq_ros.models.seqmatchnet import SeqMatchNetTransform
from vpr_seq_ros.refmap import ReferenceMap
from vpr_seq_ros.sources import open_source
from vpr_seq_ros.training.common import TrainCallbacks
from vpr_seq_ros.training.config import SeqMatchNetTrainConfig, load_train_config
from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet
from vpr_seq_ros.types import EncodedRun

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
TEST = (1000, 1200)
LENGTHS = (5, 10)
VARIANTS = (('single', 'single'), ('seqmatch', 'single'), ('single', 'seqmatch'),
            ('seqmatch', 'seqmatch'))


def write_inputs(data: Path, out: Path, epochs: int, lr: float) -> dict[tuple[str, str], Path]:
    """The manifest and one training config per variant; returns the config files."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = {
        'traverses': [{'name': 'summer', 'path': str(data / 'summer'), 'role': 'reference'},
                      {'name': 'winter', 'path': str(data / 'winter'), 'role': 'query'}],
        'splits': {'train': [0, 800], 'val': [800, 1000], 'test': list(TEST)},
        'ground_truth': {'by': 'index', 'positive_radius': 2, 'negative_radius': 10,
                         'eval_radius': 0}}
    (out / 'manifest.yaml').write_text(yaml.safe_dump(manifest, sort_keys=False))
    files = {}
    for loss, mining in VARIANTS:
        name = f'loss-{loss}_mining-{mining}'
        cfg = {'data': {'manifest': 'manifest.yaml', 'cache_dir': 'cache'},
               'encoder': {'name': 'patchnorm'},
               'sequence': {'length': 5, 'window': 'trailing'},
               'loss': {'distance': loss, 'margin': math.sqrt(0.1)},
               'mining': {'distance': mining, 'num_negatives': 10, 'refresh_every': 1000},
               'optimizer': {'lr': lr, 'momentum': 0.9, 'weight_decay': 0.001, 'step_size': 5,
                             'gamma': 0.5},
               'batch_size': 16, 'epochs': epochs, 'seed': 123, 'device': 'cpu',
               'output_dir': f'runs/{name}'}
        files[(loss, mining)] = out / f'seqmatchnet_{name}.yaml'
        files[(loss, mining)].write_text(yaml.safe_dump(cfg, sort_keys=False))
    return files


def test_slice(run: EncodedRun) -> EncodedRun:
    """The test frames of a run, as their own run."""
    a, b = TEST
    return EncodedRun(run.descriptors[a:b], run.stamps_ns[a:b], None, run.segments[a:b],
                      run.names[a:b])


def test_recalls(data: Path, transform: Path | None) -> dict[int, tuple[float, float]]:
    """Test R@1, R@5 at every L, encoding both seasons through the public encoder."""
    if transform is not None:
        tcfg = TransformConfig(name='seqmatchnet', weights=str(transform))
    else:
        tcfg = TransformConfig()
    encoder = build_encoder(EncoderConfig(name='patchnorm', transform=tcfg))
    ref = test_slice(encode_run(open_source(data / 'summer'), encoder, 64))
    query = test_slice(encode_run(open_source(data / 'winter'), encoder, 64))
    refmap = ReferenceMap(ref, {'encoder': encoder.settings()})
    out = {}
    for length in LENGTHS:
        cfg = replace(Config(), **{'sequence.length': length, 'sequence.window': 'trailing',
                                   'matching.method': 'seqmatch',
                                   'matching.distance': 'euclidean',
                                   'matching.contrast.enabled': False,
                                   'evaluation.gt': 'same-index',
                                   'evaluation.tolerance_frames': 0,
                                   'evaluation.recall_at': [1, 5]})
        metrics = evaluate_encoded(refmap, query, cfg).metrics
        out[length] = (metrics.recall_at[1], metrics.recall_at[5])
    return out


def row(label: str, recalls: dict[int, tuple[float, float]], extra: str) -> str:
    cells = ' | '.join(f'{recalls[n][0]:.3f} | {recalls[n][1]:.3f}' for n in LENGTHS)
    return f'| {label} | {cells} | {extra} |'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='folder holding nordland_64x32/')
    parser.add_argument('--epochs', type=int, default=4, help='epochs per variant (default 4)')
    parser.add_argument('--lr', type=float, default=0.01, help='SGD learning rate (default 0.01)')
    parser.add_argument('--out', type=Path, help='folder for configs and runs (default: a '
                        'temporary folder)')
    parser.add_argument('-v', '--verbose', action='store_true', help='log every epoch')
    args = parser.parse_args()
    data = args.data / 'nordland_64x32'
    if not data.is_dir():
        raise SystemExit(f'{data} not found; pass --data')
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format='%(levelname)s %(name)s: %(message)s')
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        files = write_inputs(data, out, args.epochs, args.lr)
        started = time.perf_counter()
        header = ' | '.join(f'L={n} R@1 | L={n} R@5' for n in LENGTHS)
        lines = [f'| model | {header} | notes |',
                 '|---|' + '---:|' * (2 * len(LENGTHS)) + '---|']
        lines.append(row('patchnorm, no transform', test_recalls(data, None), ''))
        identity = save_checkpoint(out / 'identity.pt', 'seqmatchnet',
                                   SeqMatchNetTransform.identity(2048).state_dict())
        lines.append(row('untrained seqmatch (identity transform)',
                         test_recalls(data, identity), 'W = I, b = 0: the start of training'))
        print('\n'.join(lines), flush=True)
        commands = []
        for (loss, mining), file in files.items():
            t0 = time.perf_counter()
            cfg = load_train_config(SeqMatchNetTrainConfig, file)
            history: list[Any] = []
            best = train_seqmatchnet(cfg, callbacks=TrainCallbacks(on_epoch_end=history.append),
                                     command_line=f'vpr-seq train seqmatchnet --config {file}')
            seconds = time.perf_counter() - t0
            chosen = next(s for s in reversed(history) if s.best)
            label = f'trained, loss {loss}, mining {mining}'
            for path, tag in ((best, f'selected: epoch {chosen.epoch} (val R@5 '
                               f'{chosen.recalls[5]:.3f})'),
                              (best.with_name('last.pt'), f'last: epoch {len(history)}')):
                lines.append(row(label, test_recalls(data, path), f'{tag}; train {seconds:.0f} s'))
                print(lines[-1], flush=True)
            commands.append(f'vpr-seq train seqmatchnet --config {file}')
        total = time.perf_counter() - started
        print(f'\nepochs {args.epochs}, lr {args.lr}; total {total / 60:.1f} min\n')
        print('\n'.join(lines))
        print('\nequivalent command lines:')
        print('\n'.join(commands))
        if args.out is None:
            print('(the files are in a temporary folder, deleted on exit: pass --out DIR to keep '
                  'the configs, runs and checkpoints; config/training/seqmatchnet_nordland.yaml '
                  'is the loss seqmatch / mining seqmatch variant)')


if __name__ == '__main__':
    main()
