"""``vpr-seq build-map``: encode a mapping run into a reference map."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (ENCODER_FLAGS, MATCHING_FLAGS, SOURCE_FLAGS,
                                         SOURCE_HELP, LazyProgress, add_config_options,
                                         add_flags, add_overwrite_option, config_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'build-map', help='build a reference map from a mapping run',
        description='Encode every frame of a mapping run once and write a reference map (.npz): '
        'frame descriptors, stamps, poses, segment ids and a manifest of what made them. The '
        'file is written atomically; on any error no map file is left behind, and an existing '
        'map is never replaced without --overwrite.')
    parser.add_argument('source', metavar='SOURCE', help=SOURCE_HELP)
    parser.add_argument('-o', '--output', required=True, metavar='MAP',
                        help='map file to write (.npz is appended if missing; later commands '
                        'accept the name with or without it)')
    add_config_options(parser)
    add_flags(parser, SOURCE_FLAGS, 'source')
    add_flags(parser, ENCODER_FLAGS, 'frame encoder')
    add_flags(parser, MATCHING_FLAGS + ('map-dtype', 'map-features'), 'matching and storage')
    add_overwrite_option(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vpr_seq_ros.pipeline import build_map

    cfg = config_from_args(args)
    with LazyProgress('encoding', not args.no_progress) as bar:
        path = build_map(args.source, cfg, args.output, progress=bar.update,
                         on_start=bar.start, overwrite=args.overwrite)
    from vpr_seq_ros.refmap import load_map

    manifest = load_map(path).manifest
    print(f'map written: {path} ({manifest.num_frames} frames, encoder {cfg.encoder.name}, '
          f'L={cfg.sequence.length})')
    features = manifest.get('features')
    if features:
        print(f'local features: {features["feature"]}, {features["bytes_per_frame"] / 1e3:.1f} '
              f'kB per frame ({features["keypoints"] / max(features["frames"], 1):.0f} '
              'keypoints)')
    dropped = manifest.get('dropped_frames') or {}
    if dropped:
        from vpr_seq_ros.sources.base import format_dropped

        print('frames left out: ' + format_dropped(
            dropped, pose_topic=cfg.source.pose_topic,
            keyframe_distance_m=cfg.source.keyframe_distance_m))
    return 0
