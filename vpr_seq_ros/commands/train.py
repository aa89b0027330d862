"""``vpr-seq train``: offline training of SeqMatchNet and JIST from a config and a manifest."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

_DESCRIPTION = {
    'seqmatchnet': 'Train the SeqMatchNet transform y = L2norm(Wx + b) on frozen frame '
    'descriptors (npy, patchnorm or jist-r18) with the sequence-distance triplet loss and '
    'hard negatives mined over the whole training map. The selected checkpoint (best '
    'validation Recall@5) is written to OUT/best.pt; use it with --transform seqmatchnet '
    '--transform-weights OUT/best.pt and the same base encoder.',
    'jist': 'Train JIST (ResNet-18 / 512 / SeqGeM): the SeqGeM triplet branch jointly with the '
    'CosFace image branch on CosPlace place groups. The selected checkpoint (best validation '
    'Recall@5) is written to OUT/best.pt; use it with --encoder jist-r18 --weights OUT/best.pt.',
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` with its ``seqmatchnet`` and ``jist`` sub-commands."""
    parser = sub.add_parser(
        'train', help='train SeqMatchNet or JIST on your own traverses',
        description='Offline training from image folders, .npy descriptor files or bags listed '
        'in a manifest (see config/training/). Every run folder holds the resolved config, the '
        'manifest, the command line, history.json, best.pt, last.pt and train_state.pt (for '
        '--resume).')
    models = parser.add_subparsers(dest='model', metavar='MODEL')
    for name in ('seqmatchnet', 'jist'):
        p = models.add_parser(name, help=_DESCRIPTION[name].split('. ')[0],
                              description=_DESCRIPTION[name])
        p.add_argument('--config', required=True, metavar='FILE',
                       help='training configuration YAML (its relative paths are relative to '
                       'the file)')
        p.add_argument('--out', metavar='DIR', help='run folder (overrides output_dir)')
        p.add_argument('--epochs', type=int, metavar='N',
                       help='epochs in total (a resumed run continues up to N)')
        p.add_argument('--device', choices=('cpu', 'cuda', 'auto'), help='torch device')
        p.add_argument('--seed', type=int, help='random seed')
        p.add_argument('--resume', metavar='CKPT',
                       help='continue a run: its folder, train_state.pt or last.pt')
        p.add_argument('--no-progress', action='store_true', help='no progress bar')
        p.set_defaults(func=run)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run(args: argparse.Namespace) -> int:
    """Resolve the configuration, train, print one line per epoch and the checkpoint path."""
    from vpr_seq_ros.commands.common import make_progress
    from vpr_seq_ros.training.common import EpochSummary, TrainCallbacks
    from vpr_seq_ros.training.config import (JistTrainConfig, SeqMatchNetTrainConfig,
                                             load_train_config)

    overrides = {'output_dir': args.out, 'epochs': args.epochs, 'device': args.device,
                 'seed': args.seed}
    if args.model == 'jist':
        from vpr_seq_ros.training.jist import train_jist as train

        cfg: Any = load_train_config(JistTrainConfig, args.config, overrides)
        hint = '--encoder jist-r18 --weights {path}'
    else:
        from vpr_seq_ros.training.seqmatchnet import train_seqmatchnet as train

        cfg = load_train_config(SeqMatchNetTrainConfig, args.config, overrides)
        hint = (f'--encoder {cfg.encoder.name} --transform seqmatchnet '
                '--transform-weights {path}')
    bar: Any = None

    def epoch_start(epoch: int, total: int, unit: str) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
        bar = make_progress(total, f'epoch {epoch}/{cfg.epochs}', not args.no_progress)
        bar.unit = unit

    def epoch_end(summary: EpochSummary) -> None:
        nonlocal bar
        if bar is not None:
            bar.close()
            bar = None
        print(summary.line(), flush=True)

    callbacks = TrainCallbacks(epoch_start, lambda n: bar.update(n) if bar else None,
                               epoch_end)
    command = shlex.join(['vpr-seq'] + sys.argv[1:]) if sys.argv else None
    try:
        path = train(cfg, resume=args.resume, callbacks=callbacks, command_line=command)
    finally:
        if bar is not None:
            bar.close()
    print(f'checkpoint: {path}')
    print(f'use it with: {hint.format(path=path)}')
    return 0
