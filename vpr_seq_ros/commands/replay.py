"""``vpr-seq replay``: a run through the node's code path, in its own time, with evaluation."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (ENCODER_FLAGS, GT_FLAGS, MATCHING_FLAGS, NODE_FLAGS,
                                         SEQMATCH_FLAGS, SOURCE_HELP, LazyProgress,
                                         add_config_options, add_fit_calibration_option,
                                         add_flags, add_overwrite_option,
                                         fit_and_write_calibration, overrides_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'replay', help='replay a run through the node core; report, plot and result bag',
        description='Feed a run through exactly the code the ROS node runs (decoder, keyframe '
        'gating, node core, message builders), in the run\'s own time and faster than real '
        'time. Writes OUT/report.json (Recall@K in localization mode, loop-closure precision in '
        'slam mode, latency percentiles, peak memory, the resolved configuration), '
        'OUT/plot.png, OUT/predictions.csv and OUT/result_bag (MCAP) with the messages the node '
        'would publish, for Foxglove or RViz. OUT is written as a whole at the end: a failed '
        'or interrupted replay leaves no OUT behind. No ROS installation is needed. --config '
        'takes the node\'s own parameter file (e.g. config/localization.yaml), so thresholds '
        'tuned here are exactly the node\'s.')
    parser.add_argument('run', metavar='RUN', help='query ' + SOURCE_HELP[2:])
    parser.add_argument('--map', metavar='MAP',
                        help='reference map (.npz); required unless --mode slam')
    parser.add_argument('--out', required=True, metavar='DIR', help='output folder')
    add_overwrite_option(parser)
    add_config_options(parser)
    add_flags(parser, ('image-topic', 'pose-topic', 'rate-hz', 'poses'), 'source (keyframes '
              'are gated by the node: see the node flags)')
    add_flags(parser, ENCODER_FLAGS, 'frame encoder')
    add_flags(parser, MATCHING_FLAGS, 'matching')
    add_flags(parser, SEQMATCH_FLAGS, 'sequence matching details')
    add_flags(parser, GT_FLAGS, 'ground truth')
    add_flags(parser, ('mode',) + NODE_FLAGS, 'the node (keyframes, localization, loop closure)')
    add_fit_calibration_option(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vpr_seq_ros.errors import ConfigError
    import numpy as np

    from vpr_seq_ros.evaluation import write_predictions
    from vpr_seq_ros.plots import (closure_tuples, matrix_from_columns, plot_evaluation,
                                   plot_slam, plot_trajectory)
    from vpr_seq_ros.pipeline import ground_truth_text, resolve_for_map
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.replay import closures_of, replay, write_report
    from vpr_seq_ros.writing import OutputFolder

    if args.mode == 'slam' and args.map:
        raise ConfigError('slam mode matches the run against its own past: leave out --map '
                          '(or use --mode localization)')
    refmap = load_map(args.map) if args.map else None
    resolved = resolve_for_map(refmap, args.preset, args.config, overrides_from_args(args))
    cfg = resolved.config
    if cfg.node.mode == 'localization' and refmap is None:
        raise ConfigError('localization mode needs --map; for loop closures against the run '
                          'itself give --mode slam')
    out = OutputFolder(Path(args.out), args.overwrite)  # refuses an existing OUT up front
    if cfg.node.mode == 'localization':
        print(ground_truth_text(cfg, resolved.origin_of('evaluation')))
        if cfg.source.keyframe_distance_m > 0 and cfg.node.keyframe.min_distance_m == 0:
            print(f'note: the map keeps a frame every {cfg.source.keyframe_distance_m:g} m; the '
                  'node keeps every frame (node.keyframe.min_distance_m 0): give '
                  '--keyframe-min-distance-m to gate the query the same way')
    with out as folder, LazyProgress('replaying', not args.no_progress) as bar:
        result = replay(args.run, cfg, refmap, folder, progress=bar.update, on_start=bar.start,
                        inherited=resolved.from_map_only('source.'))
        report = result.report
        for note in result.notes:
            print(f'note: {note}')
        print(f'{report["mode"]}: {report["keyframes"]} keyframes, latency p50 '
              f'{report["latency_ms"]["p50"]:.1f} ms, p99 {report["latency_ms"]["p99"]:.1f} ms, '
              f'{report["diagnostics"]["frames_dropped_malformed"]} malformed frames dropped, '
              f'peak memory {report["peak_rss_mib"]:.0f} MiB')
        if result.matches is not None:
            write_predictions(result.matches.top(cfg.matching.top_k),
                              folder / 'predictions.csv')
        title = f'replay {args.run}: {report["method"]} L={report["seq_len"]}'
        if result.metrics is not None:
            m = result.metrics
            print('  '.join(f'R@{k} {v:.3f}' for k, v in m.recall_at.items()) +
                  f'  AP {m.average_precision:.3f}  ({m.num_evaluated} of {m.num_queries} '
                  'keyframes counted)')
            matrix = matrix_from_columns(result.columns, len(refmap)) \
                if result.columns else None
            plot_evaluation(folder / 'plot.png', m, result.matches, matrix, result.positives,
                            title, query_label='query keyframe')
            if refmap.run.poses is not None and result.keyframe_poses is not None:
                plot_trajectory(folder / 'trajectory.png', refmap.run.poses,
                                result.keyframe_poses, result.matches.top(1), m, title=title,
                                ref_segments=refmap.run.segments)
            counted = m.counted
            top1 = result.matches.distances[counted, 0]
            if cfg.node.calibration:
                from vpr_seq_ros.calibration import calibration_report, load_calibration

                scores = np.array([s.hypothesis.best.score if s.hypothesis and
                                   s.hypothesis.best else np.nan for s in result.steps])
                report['calibration'] = calibration_report(
                    load_calibration(cfg.node.calibration), top1, scores[counted],
                    m.top1_correct[counted])
                print(f'calibration {cfg.node.calibration}: expected calibration error '
                      f'{report["calibration"]["ece"]:.3f} on this run')
            if args.fit_calibration:
                print(fit_and_write_calibration(top1, m.top1_correct[counted],
                                                args.fit_calibration))
        elif cfg.node.mode == 'localization':
            print(f'not scored: {report["note"]}')
        checks = report.get('hypothesis_verification')
        if checks:
            right = (f' (accepted: {checks["accepted_right"]} right, '
                     f'{checks["accepted_wrong"]} wrong)' if 'accepted_right' in checks else '')
            print(f'verified hypotheses: {checks["verified"]} of {checks["hypotheses"]}, '
                  f'{checks["accepted"]} accepted{right}, {checks["rejected"]} rejected')
        if cfg.node.mode == 'slam':
            precision = report.get('loop_closure_precision')
            print(f'loop closures: {report["loop_closures"]}' +
                  (f', precision {precision:.3f} within {report["ground_truth"]["radius_m"]} m'
                   if precision is not None else ''))
            stamps = np.asarray(result.keyframes, np.int64)
            closures = closure_tuples(closures_of(result), stamps, result.keyframe_poses,
                                      cfg.evaluation.radius_m)
            plot_slam(folder / 'plot.png', result.keyframe_poses, closures,
                      len(result.keyframes), stamps, title)
        if result.result_bag is not None:
            report['result_bag'] = str(out.path / 'result_bag')  # where it is once renamed
        write_report(result, folder)
    print(f'written: {out.path} (' + ', '.join(sorted(p.name for p in out.path.iterdir())) + ')')
    return 0
