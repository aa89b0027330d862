"""``vpr-seq demo``: generate a two-condition route, build a map, compare methods."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'demo', help='generate a small two-condition route and show sequence vs single-frame '
        'matching',
        description='Deterministically generate a small route seen twice (the second time at '
        'dusk, with noise, blur, occlusions, a lateral shift and a different speed), write both '
        'runs as image folders with frames.csv, build a map from the first, evaluate the second '
        'with single-frame and sequence matching, print Recall@K and write a plot and a JSON '
        'report. Uses only this project\'s code; nothing is downloaded.')
    parser.add_argument('--out', default='demo_out', metavar='DIR',
                        help='output folder (default demo_out)')
    parser.add_argument('--seed', type=int, default=0, help='route seed (default 0)')
    parser.add_argument('--length-m', type=float, default=400.0,
                        help='route length in metres (default 400)')
    parser.add_argument('--radius-m', type=float, default=3.0,
                        help='ground-truth radius in metres (default 3)')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from vpr_seq_ros.demo import run_demo

    started = time.perf_counter()
    result = run_demo(Path(args.out), seed=args.seed, length_m=args.length_m,
                      radius_m=args.radius_m, log=print)
    print()
    print(result.table)
    print()
    print(f'plot:   {result.plot}')
    print(f'report: {result.report}')
    print(f'done in {time.perf_counter() - started:.1f} s')
    return 0
