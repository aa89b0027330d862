"""``vpr-seq replay``: a bag through the node's code path, in bag time, with evaluation."""

from __future__ import annotations

import argparse

from vpr_seq_ros.commands.common import (add_config_options, add_encoder_options,
                                         LazyProgress, add_matching_options, config_from_args)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        'replay', help='replay a bag through the node core; report, plot and result bag',
        description='Feed the image (and pose) messages of a bag through exactly the code the '
        'ROS node runs (decoder, keyframe gating, node core, message builders), in bag time and '
        'faster than real time. Writes OUT/report.json (Recall@K against the bag\'s poses in '
        'localization mode, loop-closure precision in slam mode, latency), OUT/plot.png and '
        'OUT/result_bag (MCAP) with the messages the node would publish, for Foxglove or RViz. '
        'No ROS installation is needed.')
    parser.add_argument('bag', metavar='BAG', help='ROS 1 .bag, ROS 2 bag folder, .db3 or .mcap')
    parser.add_argument('--map', metavar='MAP',
                        help='reference map (.npz); required in localization mode')
    parser.add_argument('--image-topic', required=True, metavar='TOPIC',
                        help='sensor_msgs/Image or CompressedImage topic')
    parser.add_argument('--pose-topic', metavar='TOPIC',
                        help='Odometry, PoseStamped, PoseWithCovarianceStamped or NavSatFix: '
                        'keyframe gating and ground truth (NavSatFix in metres about the map\'s '
                        'origin)')
    parser.add_argument('--mode', choices=('localization', 'slam'), default=None,
                        help='localization (default with --map) or slam (loop closures)')
    parser.add_argument('--out', required=True, metavar='DIR', help='output folder')
    parser.add_argument('--radius-m', type=float, metavar='R',
                        help='ground-truth radius in metres (default 25)')
    parser.add_argument('--keyframe-distance-m', type=float, metavar='M',
                        help='keep a frame once the robot moved M metres (node.keyframe.'
                        'min_distance_m)')
    parser.add_argument('--keyframe-interval-s', type=float, metavar='S',
                        help='without odometry: keep a frame every S seconds')
    parser.add_argument('--exclude-recent-s', type=float, metavar='S',
                        help='slam: never match keyframes of the last S seconds')
    parser.add_argument('--min-streak', type=int, metavar='K',
                        help='slam: publish after K consistent consecutive matches')
    parser.add_argument('--max-distance', type=float, metavar='D',
                        help='slam: reject loop closures farther than D (sequence distance)')
    add_config_options(parser)
    add_encoder_options(parser)
    add_matching_options(parser)
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vpr_seq_ros.errors import ConfigError
    from vpr_seq_ros.evaluation import plot_results, write_predictions
    from vpr_seq_ros.pipeline import map_config
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.replay import replay, write_report

    mode = args.mode or ('localization' if args.map else 'slam')
    if mode == 'localization' and not args.map:
        raise ConfigError('localization mode needs --map (or use --mode slam)')
    refmap = load_map(args.map) if args.map else None
    cfg = config_from_args(args, {
        'node.mode': mode,
        'source.image_topic': args.image_topic,
        'source.pose_topic': args.pose_topic,
        'evaluation.radius_m': args.radius_m,
        'node.keyframe.min_distance_m': args.keyframe_distance_m,
        'node.keyframe.min_interval_s': args.keyframe_interval_s,
        'node.loop_closure.exclude_recent_s': args.exclude_recent_s,
        'node.loop_closure.min_streak': args.min_streak,
        'node.loop_closure.max_distance': args.max_distance,
    }, base=map_config(refmap) if refmap else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with LazyProgress('replaying', not args.no_progress) as bar:
        result = replay(args.bag, cfg, refmap, out, progress=bar.update, on_start=bar.start)
    report = result.report
    print(f'{report["mode"]}: {report["keyframes"]} keyframes, latency p50 '
          f'{report["latency_ms"]["p50"]:.1f} ms, p99 {report["latency_ms"]["p99"]:.1f} ms, '
          f'{report["diagnostics"]["frames_dropped_malformed"]} malformed frames dropped')
    if result.metrics is not None:
        m = result.metrics
        print('  '.join(f'R@{k} {v:.3f}' for k, v in m.recall_at.items()) +
              f'  ({m.num_evaluated} of {m.num_queries} keyframes counted)')
        plot = plot_results(out / 'plot.png', m, result.matches, None, result.positives,
                            f'replay {args.bag}: {report["method"]} L={report["seq_len"]}')
        print(f'plot: {plot}')
        print(f'predictions: {write_predictions(result.matches, out / "predictions.csv")}')
    if mode == 'slam':
        precision = report.get('loop_closure_precision')
        print(f'loop closures: {report["loop_closures"]}' +
              (f', precision {precision:.3f} within {report["ground_truth"]["radius_m"]} m'
               if precision is not None else ''))
    print(f'report: {write_report(result, out)}')
    print(f'result bag: {result.result_bag}')
    return 0
