"""``vpr-seq inspect``: what a reference map holds, for people (text) or programs (JSON)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'inspect', help='show what a reference map holds',
        description='Show what a reference map holds: frames, descriptor size and type, the '
        'encoder and its weights checksum, sequence length, segments, pose extent and '
        'geodetic origin, stored sequence descriptors, creation time, file size, format '
        'version, the configuration it was built with and the frames left out while building '
        'it. Reads the map only; nothing is encoded.')
    parser.add_argument('map', metavar='MAP', help='reference map (the .npz suffix may be left '
                        'out)')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of text (default: text)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vpr_seq_ros.mapinfo import format_summary, map_summary
    from vpr_seq_ros.refmap import load_map

    refmap = load_map(args.map)
    summary = map_summary(refmap, refmap.path)
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json
          else format_summary(summary))
    return 0
