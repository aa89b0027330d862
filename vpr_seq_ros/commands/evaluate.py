"""``vpr-seq evaluate``: match a query run against a map and score it."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (add_config_options, add_encoder_options,
                                         add_source_options,
                                         LazyProgress, add_matching_options, config_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'evaluate', help='evaluate a query run against a map (Recall@K, precision-recall)',
        description='Encode a query run, match it against a reference map and print Recall@K. '
        'The configuration starts from the one the map was built with; --preset, --config and '
        'the flags below override it. Queries without a full sequence window or without any '
        'positive reference are excluded and counted, as in the papers.')
    parser.add_argument('--map', required=True, metavar='MAP', help='reference map (.npz)')
    parser.add_argument('query', metavar='QUERY_SOURCE',
                        help='query run: image folder or .npy descriptor file')
    add_config_options(parser)
    add_source_options(parser)
    add_encoder_options(parser)
    add_matching_options(parser)
    group = parser.add_argument_group('sequence matching details')
    group.add_argument('--distance', choices=('euclidean', 'sad'),
                       help='frame distance for seqmatch: euclidean (SeqMatchNet) or sad (sum '
                       'of absolute differences, SeqSLAM)')
    group.add_argument('--contrast-window', type=int, metavar='W',
                       help='SeqSLAM local contrast enhancement over +-W reference frames '
                       '(0 disables)')
    group.add_argument('--slopes', type=float, nargs='+', metavar='V',
                       help='velocity search: reference frames per query frame, e.g. 0.8 1 '
                       '1.25 (trailing windows only)')
    gt = parser.add_argument_group('ground truth')
    gt.add_argument('--gt', choices=('same-index', 'radius'),
                    help='same-index: traverses aligned by frame index; radius: metres from '
                    'poses (implied by --radius-m)')
    gt.add_argument('--tolerance-frames', type=int, metavar='N',
                    help='same-index tolerance in frames (default 0)')
    gt.add_argument('--radius-m', type=float, metavar='R',
                    help='positives within R metres (needs poses in map and query)')
    gt.add_argument('--recall-at', type=int, nargs='+', metavar='K',
                    help='the K of Recall@K (default 1 5 10 20)')
    out = parser.add_argument_group('outputs')
    out.add_argument('--report', metavar='OUT.json', help='write the JSON report')
    out.add_argument('--plot', metavar='OUT.png',
                     help='write a plot: precision-recall curve and distance matrix with matches')
    out.add_argument('--save-predictions', metavar='OUT.csv',
                     help='write the top-K predictions: query index, reference indices, '
                     'distances')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vpr_seq_ros.evaluation import plot_results, write_json, write_predictions
    from vpr_seq_ros.pipeline import evaluate, map_config
    from vpr_seq_ros.refmap import load_map

    refmap = load_map(args.map)
    contrast = args.contrast_window
    gt = args.gt or ('radius' if args.radius_m is not None else None)
    cfg = config_from_args(args, {
        'matching.distance': args.distance,
        'matching.contrast.enabled': None if contrast is None else contrast > 0,
        'matching.contrast.window': contrast if contrast else None,
        'matching.slopes': args.slopes,
        'evaluation.gt': gt,
        'evaluation.tolerance_frames': args.tolerance_frames,
        'evaluation.radius_m': args.radius_m,
        'evaluation.recall_at': args.recall_at,
    }, base=map_config(refmap))
    with LazyProgress('encoding query', not args.no_progress) as bar:
        result = evaluate(refmap, args.query, cfg,
                          progress=bar.update, on_start=bar.start)
    report = result.report
    m = result.metrics
    print(f'method {report["method"]}, L = {report["seq_len"]}, window {report["window"]}, '
          f'{m.num_evaluated} of {m.num_queries} queries counted '
          f'({m.num_queries_without_window} without a full window, '
          f'{m.num_queries_without_positive} without a positive)')
    print('  '.join(f'R@{k} {v:.3f}' for k, v in m.recall_at.items()) +
          f'  AP {m.average_precision:.3f}')
    if args.report:
        print(f'report: {write_json(report, args.report)}')
    if args.save_predictions:
        print(f'predictions: {write_predictions(result.output.matches, args.save_predictions)}')
    if args.plot:
        title = f'{report["method"]} L={report["seq_len"]}: {args.query}'
        path = plot_results(args.plot, m, result.output.matches, result.output.matrix,
                            result.positives, title)
        print(f'plot: {path}')
    return 0
