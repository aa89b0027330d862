"""``vpr-seq evaluate``: match a query run against a map and score it."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (ENCODER_FLAGS, GT_FLAGS, MATCHING_FLAGS, SEQMATCH_FLAGS,
                                         SOURCE_FLAGS, SOURCE_HELP, LazyProgress,
                                         add_config_options, add_fit_calibration_option,
                                         add_flags, add_overwrite_option,
                                         fit_and_write_calibration,
                                         check_output, check_plot_output, overrides_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'evaluate', help='evaluate a query run against a map (Recall@K, precision-recall)',
        description='Encode a query run, match it against a reference map and print Recall@K. '
        'The configuration starts from the one the map was built with; --preset, --config and '
        'the flags below override it (the defaults shown are the schema\'s, used when neither '
        'the map nor a file sets them). Queries without a full sequence window or without any '
        'positive reference are excluded and counted, as in the papers.')
    parser.add_argument('--map', required=True, metavar='MAP',
                        help='reference map (.npz; the name given to build-map -o works too)')
    parser.add_argument('query', metavar='QUERY_SOURCE', help='query ' + SOURCE_HELP[2:])
    add_config_options(parser)
    add_flags(parser, SOURCE_FLAGS, 'source')
    add_flags(parser, ENCODER_FLAGS, 'frame encoder')
    add_flags(parser, MATCHING_FLAGS, 'matching')
    add_flags(parser, SEQMATCH_FLAGS, 'sequence matching details')
    add_flags(parser, GT_FLAGS, 'ground truth')
    out = parser.add_argument_group('outputs (checked before any work)')
    out.add_argument('--report', metavar='OUT.json',
                     help='write the JSON report (figures, the resolved configuration, the '
                     "map's manifest digest, the software version)")
    out.add_argument('--plot', metavar='OUT.png',
                     help='write a plot: precision-recall curve and distance matrix with matches '
                     '(.png appended when there is no suffix); with poses in map and query also '
                     'NAME_trajectory.png: both paths and each match')
    out.add_argument('--save-predictions', metavar='OUT.csv',
                     help='write the top-K predictions: query index, reference indices, '
                     'distances')
    add_fit_calibration_option(out)
    add_overwrite_option(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vpr_seq_ros.evaluation import write_json, write_predictions
    from vpr_seq_ros.plots import plot_evaluation, plot_trajectory
    from vpr_seq_ros.pipeline import evaluate, ground_truth_text, resolve_for_map
    from vpr_seq_ros.refmap import load_map

    refmap = load_map(args.map)
    resolved = resolve_for_map(refmap, args.preset, args.config,
                               overrides_from_args(args))
    cfg = resolved.config
    report_path = check_output(args.report, args.overwrite, 'report')
    predictions_path = check_output(args.save_predictions, args.overwrite, 'predictions file')
    calibration_path = check_output(args.fit_calibration, args.overwrite, 'calibration')
    plot_path = check_plot_output(args.plot, args.overwrite)
    print(ground_truth_text(cfg, resolved.origin_of('evaluation')))
    notes: list[str] = []
    with LazyProgress('encoding query', not args.no_progress) as bar:
        # the (N, M) distance matrix only for a plot, and only where affordable
        result = evaluate(refmap, args.query, cfg, progress=bar.update, on_start=bar.start,
                          inherited=resolved.from_map_only('source.'), notes=notes,
                          keep_matrix=None if plot_path else False)
    for note in notes:
        print(f'note: {note}')
    if result.dropped:
        print(f'query frames left out: {result.dropped_line}')
    report = result.report
    m = result.metrics
    print(f'method {report["method"]}, L = {report["seq_len"]}, window {report["window"]}, '
          f'{m.num_evaluated} of {m.num_queries} queries counted '
          f'({m.num_queries_without_window} without a full window, '
          f'{m.num_queries_without_positive} without a positive)')
    print('  '.join(f'R@{k} {v:.3f}' for k, v in m.recall_at.items()) +
          f'  AP {m.average_precision:.3f}')
    counted = m.counted
    top1 = result.output.matches.distances[counted, 0]
    if cfg.node.calibration:
        from vpr_seq_ros.calibration import calibration_report, load_calibration

        report['calibration'] = calibration_report(load_calibration(cfg.node.calibration),
                                                   top1, None, m.top1_correct[counted])
        print(f'calibration {cfg.node.calibration}: expected calibration error '
              f'{report["calibration"]["ece"]:.3f} on this run')
    if calibration_path:
        print(fit_and_write_calibration(top1, m.top1_correct[counted], calibration_path))
    if report_path:
        print(f'report: {write_json(report, report_path)}')
    if predictions_path:
        top = result.output.matches.top(cfg.matching.top_k)
        print(f'predictions: {write_predictions(top, predictions_path)}')
    if plot_path:
        title = f'{report["method"]} L={report["seq_len"]}: {args.query}'
        path = plot_evaluation(plot_path, m, result.output.matches, result.output.matrix,
                               result.positives, title)
        print(f'plot: {path}')
        if refmap.run.poses is not None and result.query.poses is not None:
            trajectory = plot_trajectory(
                path.with_name(f'{path.stem}_trajectory{path.suffix}'), refmap.run.poses,
                result.query.poses, result.output.matches.top(1), m, title=title,
                ref_segments=refmap.run.segments, query_segments=result.query.segments)
            print(f'trajectory plot: {trajectory}')
    return 0

