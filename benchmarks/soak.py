"""Floods and a day of data: latency, drops, queue depth and memory of the node.

1. **Flood.** Camera frames (640x480 ``rgb8`` ``sensor_msgs/Image``, rosbags' classes) arrive
   at 1x, 2x and 10x the camera rate (``--camera-hz``) for ``--flood-s`` seconds of bag time.
   They enter the node's :class:`DroppingQueue` (depth ``node.queue_depth``) at their arrival
   times; one worker takes the oldest and runs the node's callback path (:class:`Intake`:
   decode, stamp, node core) as the live node's worker does. Arrival times are simulated (no
   sleeping), processing times are real. Reported: latency from arrival to the core's result
   (p50, p99), frames dropped by the queue, the largest queue depth. With ROS 2 sourced the
   same flood also goes through the real rclpy node over DDS (in-process, its own domain),
   with latency from publishing to the matched pose (wall clock).
2. **24 hours, localization.** 24 h of bag time replayed as fast as the CPU goes: one keyframe
   every ``--keyframe-s`` seconds of stamps (default 20 s: a robot at ~1 m/s keeping a
   keyframe every 20 m; the frames between keyframes are gated out by the core before
   encoding, so they are left out of the stream here), as
   ``npy`` descriptors (D = ``--dim``) driving around a mapped loop of ``--map-size`` places.
   Resident memory (RSS) is printed every 2 h of bag time: it must stay flat.
3. **24 hours, slam.** The same stream in slam mode: every keyframe is kept, so memory grows;
   reported as bytes per keyframe against the descriptor's own size (D x 4 bytes).

Run: ``python benchmarks/soak.py`` (about 3 to 5 minutes of CPU); ``--hours 1`` for a quick look.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.messages.intake import Intake
from vpr_seq_ros.refmap import ReferenceMap, save_map
from vpr_seq_ros.runtime.core import NodeCore
from vpr_seq_ros.runtime.queue import DroppingQueue
from vpr_seq_ros.machine import cpu_line, rss_mib
from vpr_seq_ros.types import Frame, Pose

NS = 1_000_000_000
TS = get_typestore(Stores.ROS2_JAZZY)


def place_image(place: float, rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """A smooth seeded texture whose content is a function of the place (as the tests use)."""
    xs = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    phase = np.array([1.0, 2.0, 3.0], np.float32)[None, None, :]
    base = 127 + 60 * np.sin(7 * xs + 0.9 * place * phase) * np.cos(5 * ys + 0.37 * place)
    img = base + 40 * np.sin(13 * ys * xs + place) + rng.normal(0, 8, (h, w, 1))
    return np.clip(img, 0, 255).astype(np.uint8)


def image_msg(rgb: np.ndarray, stamp_ns: int) -> Any:
    h, w, _ = rgb.shape
    header = TS.types['std_msgs/msg/Header'](
        stamp=TS.types['builtin_interfaces/msg/Time'](sec=stamp_ns // NS, nanosec=stamp_ns % NS),
        frame_id='camera')
    return TS.types['sensor_msgs/msg/Image'](header=header, height=h, width=w, encoding='rgb8',
                                             is_bigendian=0, step=w * 3,
                                             data=rgb.reshape(-1).copy())


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float('nan'), float('nan')
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


# ---------------------------------------------------------------------------- 1. flood
def image_map(places: int) -> tuple[ReferenceMap, list[np.ndarray]]:
    """A patchnorm map of ``places`` reference images, and query images of the same places."""
    slam = NodeCore.from_config(load_config(overrides={'node.mode': 'slam'}))
    rng = np.random.default_rng(0)
    for i in range(places):
        slam.on_odometry((i + 1) * NS, Pose(float(i), 0.0))  # poses: the map gives poses
        slam.on_frame(Frame(index=i, stamp_ns=(i + 1) * NS, image=place_image(i, rng)))
    queries = [place_image(i, rng) for i in range(places)]
    return slam.keyframe_map(), queries


def flood_core(rate_hz: float, seconds: float, refmap: ReferenceMap,
               queries: list[np.ndarray], depth: int) -> dict[str, float]:
    """Simulated arrivals at ``rate_hz`` into the queue; real processing by one worker."""
    cfg = load_config(overrides={'node.mode': 'localization', 'node.queue_depth': depth})
    core = NodeCore(cfg, build_encoder(cfg.encoder), refmap)
    intake = Intake(core, lambda: 0)
    queue: DroppingQueue[tuple[float, Any]] = DroppingQueue(depth)
    messages = [image_msg(q, NS) for q in queries]
    n = int(seconds * rate_hz)
    arrivals = [k / rate_hz for k in range(n)]
    latencies: list[float] = []
    max_depth = 0
    clock = 0.0  # simulated time at which the worker is free
    k = 0
    while k < n or len(queue):
        # every frame that arrived before the worker is free enters the queue first
        while k < n and (arrivals[k] <= clock or not len(queue)):
            msg = messages[k % len(messages)]
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(
                int(1e9 * (100 + arrivals[k])), NS)
            queue.put((arrivals[k], msg))
            max_depth = max(max_depth, len(queue))
            k += 1
        item = queue.get(timeout=0)
        if item is None:
            continue
        arrived, msg = item
        clock = max(clock, arrived)
        started = time.perf_counter()
        intake.image(msg)
        clock += time.perf_counter() - started
        latencies.append(clock - arrived)
    p50, p99 = percentiles(latencies)
    return {'frames': n, 'processed': len(latencies), 'dropped': queue.dropped,
            'max_depth': max_depth, 'p50_ms': 1e3 * p50, 'p99_ms': 1e3 * p99,
            'failed': core.diagnostics.extra['frames_failed']}


def flood_node(rate_hz: float, seconds: float, map_path: Path, queries: list[np.ndarray],
               depth: int) -> dict[str, float] | None:
    """The same flood through the real rclpy node over DDS (wall clock); None without ROS."""
    try:
        import rclpy
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from rclpy.context import Context
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from vpr_seq_ros.ros.node import VprSeqNode
    except ImportError:
        return None
    context = Context()
    rclpy.init(context=context, domain_id=int(os.environ.get('ROS_DOMAIN_ID', '0') or 0))
    node = VprSeqNode(context=context, parameter_overrides=[
        Parameter('node.mode', value='localization'),
        Parameter('node.map_path', value=str(map_path)),
        Parameter('node.queue_depth', value=depth), Parameter('matching.top_k', value=1)])
    probe = rclpy.create_node('vpr_soak_probe', context=context)
    sent: dict[int, float] = {}
    latencies: list[float] = []

    def on_pose(msg: Any) -> None:
        stamp = msg.header.stamp.sec * NS + msg.header.stamp.nanosec
        if stamp in sent:
            latencies.append(time.perf_counter() - sent[stamp])

    probe.create_subscription(PoseWithCovarianceStamped, '/vpr_seq_node/matched_pose', on_pose,
                              100)
    publisher = probe.create_publisher(Image, '/image', qos_profile_sensor_data)
    executor = MultiThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 10
        while not publisher.get_subscription_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        msgs = []
        for rgb in queries:
            msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                        step=rgb.shape[1] * 3, data=rgb.tobytes())
            msgs.append(msg)
        n = int(seconds * rate_hz)
        start = time.perf_counter()
        max_depth = 0
        for k in range(n):
            target = start + k / rate_hz
            while time.perf_counter() < target:
                time.sleep(max(0.0, min(target - time.perf_counter(), 0.002)))
            msg = msgs[k % len(msgs)]
            stamp = 10**18 + k * 1_000_000
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, NS)
            sent[stamp] = time.perf_counter()
            publisher.publish(msg)
            max_depth = max(max_depth, len(node.queue))
        time.sleep(1.0)
        with node.lock:
            diag = node.core.diagnostics
            received = diag.frames_received + diag.frames_dropped_queue
            dropped = diag.frames_dropped_queue
        p50, p99 = percentiles(latencies)
        return {'frames': n, 'processed': len(latencies), 'dropped': dropped,
                'lost_in_transport': n - received, 'max_depth': max_depth,
                'p50_ms': 1e3 * p50, 'p99_ms': 1e3 * p99}
    finally:
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)


# ---------------------------------------------------------------------------- 2, 3. a day
def route(places: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``(places, dim)`` unit descriptors along a route: neighbouring places alike (AR(1),
    correlation 0.7 per place), places ten apart nearly independent."""
    out = np.empty((places, dim), np.float32)
    out[0] = rng.normal(size=dim)
    for i in range(1, places):
        out[i] = 0.7 * out[i - 1] + np.sqrt(1 - 0.49) * rng.normal(size=dim)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def day(mode: str, hours: float, keyframe_s: float, dim: int, map_size: int,
        tmp: Path) -> dict[str, Any]:
    """Replay ``hours`` of keyframes in ``mode``; RSS samples and matching sanity."""
    rng = np.random.default_rng(1)
    places = route(map_size, dim, rng)
    overrides = {'node.mode': mode, 'encoder.name': 'npy', 'sequence.length': 5,
                 'node.keyframe.min_interval_s': keyframe_s * 0.5}
    if mode == 'localization':
        ref = tmp / 'ref.npy'
        np.save(ref, places)
        from vpr_seq_ros.pipeline import build_map

        map_path = build_map(ref, load_config(overrides={'encoder.name': 'npy',
                                                         'sequence.length': 5}),
                             tmp / 'day_map.npz', overwrite=True)
        overrides['node.map_path'] = str(map_path)
    core = NodeCore.from_config(load_config(overrides=overrides))
    total = int(hours * 3600 / keyframe_s)
    every = max(int(2 * 3600 / keyframe_s), 1)
    noise = rng.normal(scale=0.02, size=(4096, dim)).astype(np.float32)
    samples: list[tuple[float, float, float, int]] = []
    correct = matched = 0
    gc.collect()
    tracemalloc.start()
    base_rss, base_heap = rss_mib(), tracemalloc.get_traced_memory()[0] / 2**20
    started = time.perf_counter()
    for i in range(total):
        place = i % map_size
        descriptor = places[place] + noise[i % len(noise)]
        step = core.on_frame(Frame(index=i, stamp_ns=(i + 1) * int(keyframe_s * NS),
                                   descriptor=descriptor))
        best = step.hypothesis.best if step.hypothesis is not None else None
        if mode == 'localization' and best is not None:
            matched += 1
            correct += abs(best.ref_index - place) <= 2
        if (i + 1) % every == 0 or i + 1 == total:
            gc.collect()
            samples.append(((i + 1) * keyframe_s / 3600, rss_mib(),
                            tracemalloc.get_traced_memory()[0] / 2**20, core.num_keyframes))
    elapsed = time.perf_counter() - started
    tracemalloc.stop()
    return {'mode': mode, 'keyframes': total, 'elapsed_s': elapsed, 'base_rss': base_rss,
            'base_heap': base_heap,
            'samples': samples, 'matched': matched, 'correct': correct,
            'loop_closures': core.diagnostics.loop_closures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--camera-hz', type=float, default=30.0)
    parser.add_argument('--flood-s', type=float, default=10.0,
                        help='bag seconds of each flood (simulated arrivals)')
    parser.add_argument('--node-flood-s', type=float, default=4.0,
                        help='wall seconds of each flood through the real node (ROS only)')
    parser.add_argument('--queue-depth', type=int, default=2)
    parser.add_argument('--hours', type=float, default=24.0)
    parser.add_argument('--keyframe-s', type=float, default=20.0,
                        help='bag seconds between keyframes in the day-long runs (20 m at '
                        '1 m/s; slam matching costs O(keyframes) per keyframe, so 5 s would '
                        'be 17,280 keyframes and about 15 min of CPU on 2 cores)')
    parser.add_argument('--dim', type=int, default=256, help='descriptor dimension D')
    parser.add_argument('--map-size', type=int, default=1000,
                        help='places on the mapped loop (localization)')
    parser.add_argument('--skip-node', action='store_true', help='no real-node flood')
    args = parser.parse_args()

    print(cpu_line())
    refmap, queries = image_map(60)
    print(f'\n1. Flood: 640x480 rgb8 frames, patchnorm, localization against {len(refmap.run)} '
          f'places, queue depth {args.queue_depth}, camera {args.camera_hz:g} Hz')
    header = f'{"path":>10} {"rate":>7} {"frames":>7} {"done":>6} {"dropped":>8} ' \
             f'{"max depth":>9} {"p50 ms":>8} {"p99 ms":>8}'
    print(header)
    rows = []
    for factor in (1, 2, 10):
        rate = factor * args.camera_hz
        r = flood_core(rate, args.flood_s, refmap, queries, args.queue_depth)
        rows.append(('core', factor, r))
        print(f'{"core":>10} {factor:>6}x {r["frames"]:>7} {r["processed"]:>6} '
              f'{r["dropped"]:>8} {r["max_depth"]:>9} {r["p50_ms"]:>8.1f} {r["p99_ms"]:>8.1f}')
    if not args.skip_node:
        with tempfile.TemporaryDirectory() as tmp:
            map_path = save_map(refmap, Path(tmp) / 'flood_map.npz')
            for factor in (1, 2, 10):
                rate = factor * args.camera_hz
                r = flood_node(rate, args.node_flood_s, map_path, queries, args.queue_depth)
                if r is None:
                    print(f'{"rclpy node":>10}: ROS 2 not sourced, skipped')
                    break
                print(f'{"rclpy node":>10} {factor:>6}x {r["frames"]:>7} {r["processed"]:>6} '
                      f'{r["dropped"]:>8} {r["max_depth"]:>9} {r["p50_ms"]:>8.1f} '
                      f'{r["p99_ms"]:>8.1f}   (lost in transport: {r["lost_in_transport"]})')

    with tempfile.TemporaryDirectory() as tmp:
        for mode in ('localization', 'slam'):
            r = day(mode, args.hours, args.keyframe_s, args.dim, args.map_size, Path(tmp))
            rate = args.hours * 3600 / r['elapsed_s']
            print(f'\n{2 if mode == "localization" else 3}. {args.hours:g} h of bag time, '
                  f'{mode}: {r["keyframes"]} keyframes (one per {args.keyframe_s:g} s), '
                  f'npy D={args.dim}, in {r["elapsed_s"]:.0f} s ({rate:.0f}x real time)')
            print(f'{"bag h":>6} {"RSS MiB":>8} {"heap MiB":>9} {"keyframes kept":>14} '
                  f'{"heap B/keyframe":>15}')
            for hours, rss, heap, kept in r['samples']:
                per = (heap - r['base_heap']) * 2**20 / max(kept, 1)
                print(f'{hours:>6.1f} {rss:>8.1f} {heap:>9.2f} {kept:>14} {per:>15.0f}')
            first, last = r['samples'][0], r['samples'][-1]
            if mode == 'localization':
                print(f'after the first {first[0]:g} h: RSS {last[1] - first[1]:+.1f} MiB, '
                      f'Python heap {last[2] - first[2]:+.2f} MiB; matches within 2 places: '
                      f'{r["correct"]}/{r["matched"]}')
            else:
                heap = (last[2] - r['base_heap']) * 2**20
                rss = (last[1] - r['base_rss']) * 2**20
                print(f'growth over {last[3]} keyframes: heap {heap / 2**20:.1f} MiB = '
                      f'{heap / max(last[3], 1):.0f} B per keyframe, RSS {rss / 2**20:.1f} MiB '
                      f'= {rss / max(last[3], 1):.0f} B per keyframe (the descriptor alone: '
                      f'{4 * args.dim} B; the store grows its buffer by doubling, so the '
                      f'figure lies between 1x and 2x the descriptor); loop closures '
                      f'{r["loop_closures"]}')


if __name__ == '__main__':
    main()
