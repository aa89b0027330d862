"""``vpr-seq``: the offline command-line tool (no ROS needed)."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vpr_seq_ros import __version__
from vpr_seq_ros.commands import COMMAND_MODULES
from vpr_seq_ros.errors import VprSeqError


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog='vpr-seq',
        description='Sequential visual place recognition (JIST / SeqGeM, SeqMatchNet, SeqSLAM): '
        'build reference maps, evaluate query runs, encode and export models.')
    parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    parser.add_argument('-v', '--verbose', action='count', default=0,
                        help='more log output (-v info, -vv debug)')
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    for name in COMMAND_MODULES:
        importlib.import_module(f'vpr_seq_ros.commands.{name}').register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, configure logging, run the command; errors print and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format='%(levelname)s %(name)s: %(message)s')
    if not getattr(args, 'func', None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VprSeqError as err:
        print(f'vpr-seq {args.command}: error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
