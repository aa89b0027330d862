"""Geometric verification of loop closures on real revisits: cost and precision / recall.

(a) Cost per candidate at 640x480 on this CPU: ORB features of Gardens Point frames resized to
    640x480, then matching + RANSAC (+ covariance) per candidate pair, true and false pairs.
(b) Loop closures on runs with true revisits, played as one run (slam mode: each keyframe is
    matched against its own past, the last ``--exclude`` keyframes excluded):

    * Gardens Point Walking ``day_left`` then ``day_right`` (400 frames; same index = same
      place, +- ``--tolerance`` frames),
    * Nordland ``summer`` then ``winter`` (2400 frames of 64x32 grey, upscaled for features),
    * the demo route (``reference`` then ``query``; ground truth: poses within a radius).

    Appearance candidates come from the project's SeqSLAM matching (the ``seqslam`` preset:
    patch-normalised 64x32 thumbnails, SAD, contrast enhancement, L = 10, trailing windows):
    the best past keyframe of every keyframe with a full window. Each candidate is then verified
    (:class:`vpr_seq_ros.verification.VerificationStage`, synchronous, no budget). Printed:
    closures, precision and recall of revisit keyframes before and after verification, the
    best recall at precision 1 over the appearance score and over the inlier count, and the
    rejection reasons.

Gardens Point has no calibration: runs use the fundamental matrix (no intrinsics) and, as a
second row, an assumed pinhole (fx = fy = 0.8 x width, principal point at the centre; about 64
degrees horizontal field of view), marked "assumed K".

Run: ``python benchmarks/verification.py [--data ../shared/data] [--only gardens,nordland,demo]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.machine import cpu_line
from vpr_seq_ros.matching import seqmatch_settings
from vpr_seq_ros.matching.score import distinctiveness as node_score
from vpr_seq_ros.matching.seqmatch import seqmatch_batch
from vpr_seq_ros.sources import open_source
from vpr_seq_ros.verification import (CameraIntrinsics, FeatureExtractor, VerificationConfig,
                                      VerificationRequest, VerificationStage, Verifier)
from vpr_seq_ros.verification.evaluate import ClosureGroundTruth, closure_metrics, pr_curve

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def assumed_intrinsics(width: int, height: int) -> CameraIntrinsics:
    """A guessed pinhole: fx = fy = 0.8 width (about 64 degrees wide), centred."""
    return CameraIntrinsics(0.8 * width, 0.8 * width, width / 2, height / 2, width, height)


# ------------------------------------------------------------------------------ (a) cost


def bench_cost(gp: Path, cfg: VerificationConfig, pairs: int = 20) -> None:
    """Cost per keyframe (features) and per candidate (verification) at 640x480."""
    print(f'\n## (a) cost at 640x480 ({cfg.feature.upper()} {cfg.max_features}, ratio '
          f'{cfg.ratio}, RANSAC {cfg.ransac_threshold_px} px, OpenCV {cv2.__version__}, '
          f'{cv2.getNumThreads()} OpenCV threads)')
    extractor = FeatureExtractor(cfg)

    def load(folder: str, i: int) -> np.ndarray:
        img = cv2.imread(str(gp / folder / f'Image{i:03d}.jpg'), cv2.IMREAD_COLOR)
        img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    extract_ms = []
    left, right = {}, {}
    for i in range(0, 200, 200 // pairs):
        for store, folder in ((left, 'day_left'), (right, 'day_right')):
            img = load(folder, i)
            started = time.perf_counter()
            store[i] = extractor.extract(img)
            extract_ms.append(1e3 * (time.perf_counter() - started))
    print(f'features per keyframe: median {np.median(extract_ms):.1f} ms, p90 '
          f'{np.percentile(extract_ms, 90):.1f} ms ({len(extract_ms)} frames)')
    print('wall: elapsed time (load from other processes inflates it); CPU: process time of '
          'the verification (all threads), which load inflates less')
    print('| model | pairs | wall median ms | wall p90 ms | wall max ms | CPU median ms | '
          'CPU p90 ms | CPU max ms |')
    print('|---|---|---:|---:|---:|---:|---:|---:|')
    keys = sorted(left)
    for label, cam in (('fundamental (no K)', None),
                       ('essential (assumed K)', assumed_intrinsics(640, 480))):
        verifier = Verifier(cfg, cam)
        for kind, shift in (('same place', 0), ('other place', len(keys) // 2)):
            times, cpu = [], []
            for n, k in enumerate(keys):
                started = time.process_time()
                v = verifier.verify(right[k], left[keys[(n + shift) % len(keys)]])
                cpu.append(1e3 * (time.process_time() - started))
                times.append(v.elapsed_ms)
            print(f'| {label} | {kind} | {np.median(times):.1f} | '
                  f'{np.percentile(times, 90):.1f} | {max(times):.1f} | {np.median(cpu):.1f} | '
                  f'{np.percentile(cpu, 90):.1f} | {max(cpu):.1f} |')


def bench_caller_latency(gp: Path, cfg: VerificationConfig, frames: int = 60) -> None:
    """What the image callback pays with the threaded stage: ``add_keyframe`` + ``submit``
    calls while the worker extracts and verifies, keyframes offered faster than it keeps up."""
    images = []
    for i in range(0, 200, 200 // 20):
        img = cv2.imread(str(gp / 'day_left' / f'Image{i:03d}.jpg'), cv2.IMREAD_COLOR)
        images.append(cv2.cvtColor(cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA),
                                   cv2.COLOR_BGR2RGB))
    stage = VerificationStage(cfg, None, threaded=True)
    call_ms = []
    started = time.perf_counter()
    try:
        for k in range(frames):
            t0 = time.perf_counter()
            stage.add_keyframe(k, images[k % len(images)])
            if k >= 10:
                stage.submit(VerificationRequest(k, k - 10, int(k * 1e8)))  # 10 Hz stamps
            call_ms.append(1e3 * (time.perf_counter() - t0))
            time.sleep(0.02)  # the callback's own work; keyframes at up to 50 Hz
        stage.wait_idle(120.0)
    finally:
        stage.close()
    c = stage.counters
    print(f'\n## caller latency, threaded stage ({frames} keyframes of 640x480 offered in '
          f'{time.perf_counter() - started:.1f} s; budget {cfg.max_per_second:g}/s of data '
          f'time, queue {cfg.queue_depth})')
    print(f'add_keyframe + submit per frame: median {np.median(call_ms):.2f} ms, max '
          f'{max(call_ms):.2f} ms; keyframes stored {c.keyframes_added}, dropped '
          f'{c.keyframes_dropped}; candidates verified {c.verified}, refused by budget '
          f'{c.refused_budget}, dropped from queue {c.dropped_queue}')


# ------------------------------------------------------------------------------ (b) closures


@dataclass
class Run:
    """Frames of one or more folders played as one run."""

    name: str
    descriptors: np.ndarray
    truths: dict[str, ClosureGroundTruth]
    stages: dict[str, VerificationStage]
    extract_ms: float


def load_run(name: str, folders: list[Path], truth_fn, cfgs: dict[str, tuple],
             upscale: int = 1) -> Run:
    """Encode every frame (seqslam preset) and extract its features into each stage."""
    preset = load_config('seqslam')
    encoder = build_encoder(preset.encoder)
    stages = {label: VerificationStage(cfg, cam) for label, (cfg, cam) in cfgs.items()}
    descriptors, poses = [], []
    index = 0
    started = time.perf_counter()
    for folder in folders:
        for frame in open_source(folder):
            image = frame.image
            descriptors.append(encoder.encode([image])[0])
            poses.append(None if frame.pose is None else frame.pose.as_array())
            if upscale > 1:
                image = cv2.resize(image, (image.shape[1] * upscale, image.shape[0] * upscale),
                                   interpolation=cv2.INTER_CUBIC)
            for stage in stages.values():
                stage.add_keyframe(index, image)
            index += 1
    elapsed = time.perf_counter() - started
    return Run(name, np.stack(descriptors), truth_fn(index, poses), stages,
               1e3 * elapsed / index)


def appearance_candidates(run: Run, exclude: int, top_k: int
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``top_k`` best past keyframes (older than ``exclude`` keyframes) of every keyframe
    by the seqslam preset's sequence distance, best first.

    Returns:
        ``(Q,)`` query keyframes, ``(Q, top_k)`` matched keyframes (-1: none), ``(Q,)``
        distinctiveness of the best (the node's appearance score).
    """
    cfg = load_config('seqslam')
    settings = seqmatch_settings(cfg)
    result = seqmatch_batch(run.descriptors, run.descriptors, settings, top_k=1,
                            keep_matrix=True)
    matrix = result.matrix
    query, match, score = [], [], []
    for q in range(matrix.shape[1]):
        column = np.array(matrix[:q + 1, q], np.float64)
        column[max(q - exclude + 1, 0):] = np.inf  # recent keyframes: never candidates
        finite = np.flatnonzero(np.isfinite(column))
        if not len(finite):
            continue
        order = finite[np.argsort(column[finite], kind='stable')][:top_k]
        query.append(q)
        match.append(np.pad(order, (0, top_k - len(order)), constant_values=-1))
        score.append(float(node_score(column, column[order[:1]])[0]))
    return np.array(query), np.array(match).reshape(-1, top_k), np.array(score)


def report(run: Run, exclude: int, top_k: int) -> None:
    """Closures before and after verification, for each verification setting and truth."""
    query, matches, app_score = appearance_candidates(run, exclude, top_k)
    first = next(iter(run.truths.values()))
    print(f'\n## {run.name}: {len(run.descriptors)} keyframes, '
          f'{int(first.revisits(exclude).sum())} revisit keyframes, {len(query)} keyframes with '
          f'appearance candidates (top-{top_k}); features {run.extract_ms:.1f} ms / keyframe '
          '(with encoding and decoding)')
    print('| truth | stage | closures | true | false | precision | recall | '
          'recall @ P=1 over score (threshold) |')
    print('|---|---|---:|---:|---:|---:|---:|---|')
    verified = {}
    for label, stage in run.stages.items():
        rows = [(i, j) for i in range(len(query)) for j in range(top_k) if matches[i, j] >= 0]
        for i, j in rows:
            stage.submit(VerificationRequest(int(query[i]), int(matches[i, j]), 0))
        results = stage.poll()
        inliers = np.zeros((len(query), top_k))
        accepted = np.zeros((len(query), top_k), bool)
        compared = matches.copy()  # the keyframe verified (the nearest stored one)
        for (i, j), r in zip(rows, results):
            inliers[i, j] = r.verification.num_inliers
            accepted[i, j] = r.accepted
            if r.verified_match_index >= 0:
                compared[i, j] = r.verified_match_index
        verified[label] = (inliers, accepted, compared, results)
    for truth_label, truth in run.truths.items():
        revisits = truth.revisits(exclude)
        before = closure_metrics(query, matches[:, 0], truth, revisits)
        curve = pr_curve(query, matches[:, 0], app_score, truth, revisits)
        thr = curve.threshold_at_precision(1.0)
        print(f'| {truth_label} | appearance only (seqslam L=10, top-1) | '
              f'{before.num_closures} | {before.num_true} | {before.num_false} | '
              f'{before.precision:.3f} | {before.recall:.3f} | '
              f'{curve.max_recall_at_precision(1.0):.3f} (distinctiveness >= '
              f'{"-" if thr is None else f"{thr:.2f}"}) |')
        for label, (inliers, accepted, compared, _) in verified.items():
            for k in sorted({1, top_k}):
                acc, inl = accepted[:, :k], inliers[:, :k]
                # per query keyframe: the verified candidate with the most inliers
                pick = np.argmax(np.where(acc, inl, -1), axis=1)
                best = compared[np.arange(len(query)), pick]
                ok = acc.any(axis=1)
                after = closure_metrics(query[ok], best[ok], truth, revisits)
                best_any = compared[np.arange(len(query)), np.argmax(inl, axis=1)]
                curve = pr_curve(query, best_any, inl.max(axis=1), truth, revisits)
                thr = curve.threshold_at_precision(1.0)
                print(f'| {truth_label} | verified top-{k}: {label} | {after.num_closures} | '
                      f'{after.num_true} | {after.num_false} | {after.precision:.3f} | '
                      f'{after.recall:.3f} | {curve.max_recall_at_precision(1.0):.3f} '
                      f'(inliers >= {"-" if thr is None else f"{thr:.0f}"}) |')
    for label, (_, accepted, compared, results) in verified.items():
        times = np.array([r.verification.elapsed_ms for r in results])
        reasons: dict[str, int] = {}
        for r in results:
            reasons[r.verification.reason.value] = \
                reasons.get(r.verification.reason.value, 0) + 1
        print(f'{label}: {len(results)} candidates verified, {np.median(times):.1f} ms median, '
              f'{np.percentile(times, 90):.1f} ms p90; reasons: '
              f'{", ".join(f"{n} {v}" for n, v in sorted(reasons.items()))}')
        if first.places is not None and accepted.any():
            rows, cols = np.nonzero(accepted)
            off = np.abs(first.places[query[rows]] - first.places[compared[rows, cols]])
            values, counts = np.unique(np.minimum(off, 99), return_counts=True)
            print('  accepted candidates by place offset |q - m|: ' +
                  ', '.join(f'{int(v)}: {c}' for v, c in zip(values, counts)))


def same_index_truth(period: int, tolerances: tuple[int, ...]):
    """Ground truth of a route played twice: place = index mod period, +- tolerance."""
    def make(n: int, poses: list) -> dict[str, ClosureGroundTruth]:
        return {f'+-{t}': ClosureGroundTruth.from_places(np.arange(n) % period, t)
                for t in tolerances}
    return make


def pose_truth(radii_m: tuple[float, ...]):
    """Ground truth by pose radius (frames.csv poses)."""
    def make(n: int, poses: list) -> dict[str, ClosureGroundTruth]:
        return {f'{r:g} m': ClosureGroundTruth.from_positions(np.stack(poses)[:, :2], r)
                for r in radii_m}
    return make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='folder holding gardens_point_walking/ and nordland_64x32/')
    parser.add_argument('--only', default='cost,gardens,nordland,demo',
                        help='comma-separated parts: cost, gardens, nordland, demo')
    parser.add_argument('--exclude', type=int, default=30,
                        help='keyframes just before the query that are never candidates')
    parser.add_argument('--tolerance', type=int, nargs='+', default=[2, 4],
                        help='same place: index difference up to this (Gardens Point)')
    parser.add_argument('--assumed-k', action='store_true',
                        help='Gardens Point: also verify with an assumed pinhole (essential '
                        'matrix)')
    parser.add_argument('--top-k', type=int, default=5,
                        help='appearance candidates verified per keyframe')
    parser.add_argument('--feature', default='orb', help='orb, sift or akaze')
    parser.add_argument('--max-features', type=int, default=1000)
    parser.add_argument('--min-inliers', type=int, default=VerificationConfig.min_inliers)
    args = parser.parse_args()
    parts = set(args.only.split(','))
    if parts - {'demo'} and not args.data.is_dir():
        raise SystemExit(f'{args.data} not found; pass --data')
    print(f'{cpu_line()}; {cv2.getNumThreads()} OpenCV threads')
    cfg = VerificationConfig(enabled=True, feature=args.feature, max_features=args.max_features,
                             min_inliers=args.min_inliers, max_per_second=0.0,
                             max_keyframes=5000, queue_depth=8)
    print(f'verification: {cfg}')
    gp = args.data / 'gardens_point_walking'
    if 'cost' in parts and gp.is_dir():
        bench_cost(gp, cfg)
        bench_caller_latency(gp, VerificationConfig(**{**vars(cfg), 'max_per_second': 5.0}))
    if 'gardens' in parts and gp.is_dir():
        settings = {'fundamental (no K)': (cfg, None)}
        if args.assumed_k:
            settings['essential (assumed K)'] = (cfg, assumed_intrinsics(960, 540))
        run = load_run('Gardens Point day_left then day_right',
                       [gp / 'day_left', gp / 'day_right'],
                       same_index_truth(200, tuple(args.tolerance)), settings)
        report(run, args.exclude, args.top_k)
    nordland = args.data / 'nordland_64x32'
    if 'nordland' in parts and nordland.is_dir():
        small = VerificationConfig(**{**vars(cfg), 'max_image_width': 0})
        run = load_run('Nordland summer then winter (64x32 upscaled x8 to 512x256)',
                       [nordland / 'summer', nordland / 'winter'],
                       same_index_truth(1200, (1, 3)), {'fundamental (no K)': (small, None)},
                       upscale=8)
        report(run, args.exclude, args.top_k)
        print('note: 64x32 thumbnails hold too little detail for local features, even '
              'upscaled: verification cannot confirm these closures')
    if 'demo' in parts:
        from vpr_seq_ros.demo_data import RouteSpec, generate_route
        with tempfile.TemporaryDirectory() as tmp:
            spec = RouteSpec()
            started = time.perf_counter()
            ref, query = generate_route(Path(tmp), spec)
            print(f'\n(demo route generated in {time.perf_counter() - started:.0f} s: '
                  f'{spec.length_m:.0f} m, {spec.image_width}x{spec.image_height})')
            small = VerificationConfig(**{**vars(cfg), 'max_image_width': 0})
            run = load_run('demo route reference then query (160x120 upscaled x4)',
                           [ref, query], pose_truth((3.0, 6.0)),
                           {'fundamental (no K)': (small, None)}, upscale=4)
            report(run, args.exclude, args.top_k)
            print('note: the procedural demo world repeats identical building modules and a '
                  'periodic pavement texture, which are geometrically consistent between '
                  'different places')


if __name__ == '__main__':
    main()
