"""``vpr-seq build-map``: encode a mapping run into a reference map."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (add_config_options, add_encoder_options,
                                         add_source_options,
                                         LazyProgress, add_matching_options, config_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'build-map', help='build a reference map from a mapping run',
        description='Encode every frame of a mapping run once and write a reference map (.npz): '
        'frame descriptors, stamps, poses, segment ids and a manifest of what made them. The '
        'file is written atomically; on any error no map file is left behind.')
    parser.add_argument('source', metavar='SOURCE',
                        help='image folder (frames sorted by file name; optional frames.csv '
                        'with name,stamp_ns,x,y,z,yaw,segment) or an (N, D) .npy descriptor file')
    parser.add_argument('-o', '--output', required=True, metavar='MAP',
                        help='map file to write (.npz is appended if missing)')
    add_config_options(parser)
    add_source_options(parser)
    add_encoder_options(parser)
    add_matching_options(parser)
    parser.add_argument('--map-dtype', choices=('float32', 'float16'),
                        help='storage type of the descriptors (float16 halves the size)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vpr_seq_ros.pipeline import build_map

    cfg = config_from_args(args, {'map.dtype': args.map_dtype})
    with LazyProgress('encoding', not args.no_progress) as bar:
        path = build_map(args.source, cfg, args.output,
                         progress=bar.update, on_start=bar.start)
    print(f'map written: {path} (encoder {cfg.encoder.name}, L={cfg.sequence.length})')
    return 0
