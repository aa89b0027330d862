"""``vpr-seq describe``: frame (and sequence) descriptors of a run, to an .npz file."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (add_config_options, add_encoder_options,
                                         add_matching_options, add_overwrite_option,
                                         add_source_options, check_output, config_from_args,
                                         make_progress)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'describe', help='write frame and sequence descriptors of a run to .npz',
        description='Encode every frame of a run once and write frame_descriptors (N x D, '
        'float32, frame order), stamps_ns and names. For sequence aggregators (jist-r18, or '
        '--method seqgem) also sequence_descriptors: one row per trailing window, row i '
        'covering frames i .. i+L-1 (windows that would cross a segment are left out; '
        'sequence_first_frame gives each row\'s first frame).')
    parser.add_argument('source', metavar='SOURCE',
                        help='image folder, .npy descriptor file or bag (with --image-topic)')
    parser.add_argument('-o', '--output', required=True, metavar='OUT.npz', help='output file')
    add_overwrite_option(parser)
    add_config_options(parser)
    add_source_options(parser)
    add_encoder_options(parser)
    add_matching_options(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.matching.methods import sequence_descriptors_of
    from vpr_seq_ros.pipeline import encode_run
    from vpr_seq_ros.sources import open_source
    from vpr_seq_ros.writing import atomic_write

    cfg = config_from_args(args)
    check_output(args.output, args.overwrite, 'descriptor file')
    encoder = build_encoder(cfg.encoder)
    source = open_source(args.source, cfg.source)
    bar = make_progress(len(source), 'encoding', not args.no_progress)
    try:
        run_ = encode_run(source, encoder, cfg.encoder.batch_size, bar.update,
                          decode_workers=cfg.source.decode_workers)
    finally:
        bar.close()
    arrays = {'frame_descriptors': run_.descriptors, 'stamps_ns': run_.stamps_ns,
              'names': np.asarray(run_.names, dtype=np.str_),
              'encoder': np.frombuffer(json.dumps(encoder.settings()).encode(), np.uint8)}
    length = cfg.sequence.length
    pre = sequence_descriptors_of(cfg, encoder.seqgem_p, run_)
    if pre is not None:
        last = np.flatnonzero(pre.valid)
        arrays['sequence_descriptors'] = pre.descriptors[last]
        arrays['sequence_first_frame'] = last - (length - 1)
        if 'p' in pre.info:
            arrays['seqgem_p'] = np.float32(pre.info['p'])
    out = atomic_write(Path(args.output), lambda handle: np.savez(handle, **arrays))
    summary = f'{out}: {run_.descriptors.shape[0]} frames x {run_.descriptors.shape[1]}'
    if 'sequence_descriptors' in arrays:
        summary += f', {len(arrays["sequence_descriptors"])} sequences (L={length})'
    print(summary)
    return 0
