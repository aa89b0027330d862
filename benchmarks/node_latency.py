"""Latency, drops and memory of the node core under a 2x replay, with the bounded queue.

A generated query bag (the demo route, looped with continuing stamps) arrives at twice its
recorded rate for ``--minutes`` of bag time. Frames enter the node's :class:`DroppingQueue`
(depth ``node.queue_depth``) at their arrival times; one worker takes the oldest, decodes it,
runs the node core and builds the messages, exactly as the live node's worker thread does.
Arrival times are simulated (no sleeping), processing times are real, so a 30-minute replay
takes as long as the processing itself. Prints p50/p99 latency from frame arrival to published
hypothesis, frames dropped, and resident memory over the run (it must stay flat).

Run: ``python benchmarks/node_latency.py [--minutes 30] [--encoder patchnorm|jist-r18]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np
from rosbags.typesys import Stores, get_typestore

from vpr_seq_ros.bagwrite import images_to_bag
from vpr_seq_ros.config import load_config
from vpr_seq_ros.demo_data import RouteSpec, generate_route
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.messages.images import decode_any
from vpr_seq_ros.messages.outputs import rosbags_factory, step_messages
from vpr_seq_ros.pipeline import build_map
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.sources.bag import open_bag, stamp_ns_of
from vpr_seq_ros.machine import rss_mib
from vpr_seq_ros.types import Frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=30.0, help='bag time to replay')
    parser.add_argument('--speed', type=float, default=2.0, help='replay rate factor')
    parser.add_argument('--encoder', default='patchnorm', choices=('patchnorm', 'jist-r18'))
    parser.add_argument('--queue-depth', type=int, default=2)
    args = parser.parse_args()

    overrides = {'encoder.name': args.encoder, 'sequence.length': 10,
                 'node.queue_depth': args.queue_depth, 'source.image_topic': '/camera/image_raw',
                 'source.pose_topic': '/odom'}
    if args.encoder == 'jist-r18':
        overrides.update({'encoder.random_init': True, 'matching.method': 'seqgem',
                          'sequence.length': 5})
    cfg = load_config(overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        ref_dir, query_dir = generate_route(Path(tmp) / 'route', RouteSpec())
        ref_bag = images_to_bag(ref_dir, Path(tmp) / 'ref_bag')
        query_bag = images_to_bag(query_dir, Path(tmp) / 'query_bag')
        refmap = load_map(build_map(ref_bag, cfg, Path(tmp) / 'map.npz'))
        reader = open_bag(query_bag)
        msgs = []
        for conn, t, raw in reader.messages():
            if conn.topic == '/camera/image_raw':
                msg = reader.deserialize(raw, conn.msgtype)
                msgs.append((stamp_ns_of(msg, t), msg))
        reader.close()
    core = NodeCore(cfg, build_encoder(cfg.encoder), refmap)
    make = rosbags_factory(get_typestore(Stores.ROS2_HUMBLE))

    period_ns = int(np.median(np.diff([s for s, _ in msgs])))
    lap_ns = msgs[-1][0] - msgs[0][0] + period_ns
    total = int(args.minutes * 60e9 / period_ns)
    arrival_s = np.arange(total) * (period_ns / 1e9) / args.speed
    queue: deque[int] = deque()
    latencies, memory = [], [(0, rss_mib())]
    dropped = processed = 0
    free_at, i = 0.0, 0
    started = time.perf_counter()
    while i < total or queue:
        while i < total and arrival_s[i] <= free_at:
            if len(queue) >= cfg.node.queue_depth:
                queue.popleft()
                dropped += 1
            queue.append(i)
            i += 1
        if not queue:
            free_at = arrival_s[i]
            continue
        j = queue.popleft()
        lap, k = divmod(j, len(msgs))
        stamp, msg = msgs[k]
        t0 = time.perf_counter()
        image = decode_any(msg)
        step = core.on_frame(Frame(index=j, stamp_ns=stamp + lap * lap_ns, image=image))
        step_messages(make, step, 'map')
        busy = time.perf_counter() - t0
        free_at = max(free_at, arrival_s[j]) + busy
        if step.hypothesis is not None:
            latencies.append(1e3 * (free_at - arrival_s[j]))
        processed += 1
        if processed % 2000 == 0:
            memory.append((processed, rss_mib()))
    memory.append((processed, rss_mib()))
    wall = time.perf_counter() - started
    lat = np.asarray(latencies)
    print(f'# node latency: {args.encoder}'
          f'{" (seeded RANDOM weights)" if args.encoder == "jist-r18" else ""}, '
          f'{cfg.matching.method} L={cfg.sequence.length}, map {len(refmap)} frames, '
          f'queue depth {cfg.node.queue_depth}, {os.cpu_count()} cores')
    print(f'{args.minutes:g} min of bag time at {args.speed:g}x '
          f'({1e9 / period_ns * args.speed:.0f} frames/s offered, {total} frames), '
          f'{wall:.0f} s of processing\n')
    print('| frames offered | processed | dropped | latency p50 ms | p99 ms | max ms |')
    print('|---:|---:|---:|---:|---:|---:|')
    print(f'| {total} | {processed} | {dropped} | {np.percentile(lat, 50):.1f} | '
          f'{np.percentile(lat, 99):.1f} | {lat.max():.1f} |')
    print('\nresident memory (MiB) after N processed frames: ' +
          ', '.join(f'{n}: {m:.0f}' for n, m in memory))
    if len(memory) > 2:
        print(f'growth after the first 2000 frames: {memory[-1][1] - memory[1][1]:+.1f} MiB')


if __name__ == '__main__':
    main()
