"""The sampled score: what it costs per keyframe and how far it is from the full-scan score.

Three tables, on a structured synthetic route (512-D unit descriptors, a stationary AR(1)
process, so about ten neighbouring frames look alike):

* **approximate search**: time per keyframe to compute the exact distances at the S sampled
  anchors from their cached float32 rows (:class:`vpr_seq_ros.matching.ann.AnchorDistances`,
  what an approximate matcher adds for the score), for L = 1 (single, seqgem) and L = 5, 10
  (seqmatch); it does not depend on the map size once the map has more than S anchors;
* **exact search**: time per keyframe of the score's statistics, over every anchor (before)
  and over the sample (now), from the ``(N,)`` distances the exact scan computed and the top
  candidates the node finds anyway;
* **accuracy**: for the top-1 match of each query keyframe of an exact seqmatch run over the
  route (the node's ``OnlineSeqMatcher``), the sampled score against the full-scan one.

* **real data** (``--data ../shared/data``): Nordland summer as the map, winter as the query,
  the seqslam preset; the map has 1200 frames, so small S stand in for a large map.

Run: ``python benchmarks/score_sample.py [--data ../shared/data]`` (``--quick``: a smaller
route).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vpr_seq_ros.config import SCORE_SAMPLE
from vpr_seq_ros.machine import cpu_line
from vpr_seq_ros.matching.ann import AnchorDistances, trailing_offsets
from vpr_seq_ros.matching.score import (ScoreSample, best_anchors, distinctiveness,
                                        sample_anchors, sample_statistics, scores_from_stats)
from vpr_seq_ros.matching.seqmatch import OnlineSeqMatcher, SeqMatchSettings


def ar_route(n: int, dim: int, rng: np.random.Generator, a: float = 0.9) -> np.ndarray:
    """A stationary AR(1) route of unit descriptors (float32)."""
    out = np.empty((n, dim), np.float32)
    x = rng.standard_normal(dim).astype(np.float32)
    noise = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(np.sqrt(1 - a * a))
    for i in range(n):
        x = np.float32(a) * x + noise[i]
        out[i] = x
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def median_ms(fn, args: tuple, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def old_full_scan(distances: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """The score before sampling: statistics over every finite anchor."""
    finite = distances[np.isfinite(distances)]
    return np.maximum((finite.mean() - chosen) / finite.std(), 0.0)


def sampled_scores(distances: np.ndarray, chosen: np.ndarray, best: int) -> np.ndarray:
    """The score now, as the node computes it once it has its top candidates."""
    return ScoreSample.of(distances, SCORE_SAMPLE).scores(chosen, best)


def plain_sample_score(distances: np.ndarray, chosen: float, size: int) -> float:
    """The sample alone (no dip counted exactly), for comparison."""
    mean, std = sample_statistics(distances[sample_anchors(len(distances), size)])
    return float(scores_from_stats(np.array([chosen]), mean, std)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true', help='a smaller route, fewer queries')
    parser.add_argument('--data', help='the shared data folder (../shared/data): adds the '
                        'Nordland real-data table')
    parser.add_argument('--node', action='store_true', help='adds the node table: approximate '
                        'seqmatch per keyframe, search and score')
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n = 20_000 if args.quick else 100_000
    dim = 512
    print(cpu_line())
    refs = ar_route(n, dim, rng).astype(np.float16)
    segments = np.zeros(n, np.int64)

    print(f'\napproximate search: ms per keyframe for the sample distances (map {n:,} x {dim}, '
          'float16; cached rows float32)')
    print('| S | L | cached MiB | build s | ms per keyframe |')
    print('|---:|---:|---:|---:|---:|')
    for size in (1024, 4096):
        anchors = sample_anchors(n, size)
        for length in (1, 5, 10):
            started = time.perf_counter()
            sample = AnchorDistances(refs, segments, anchors, trailing_offsets(length))
            build = time.perf_counter() - started
            window = refs[1000:1000 + length].astype(np.float32)
            ms = median_ms(sample, (window,), 30)
            print(f'| {len(anchors)} | {length} | {sample.nbytes / 2**20:.1f} | {build:.2f} | '
                  f'{ms:.2f} |')

    print('\nexact search: ms per keyframe for the score statistics')
    print(f'| N | full scan (before) | sample of {SCORE_SAMPLE} (now) |')
    print('|---:|---:|---:|')
    for size_n in (100_000, 1_000_000):
        d = rng.random(size_n) + 1.0
        d[:9] = np.inf
        best = best_anchors(d, 5)  # the node's top candidates, found before scoring
        chosen = d[best]
        before = median_ms(old_full_scan, (d, chosen), 20)
        now = median_ms(sampled_scores, (d, chosen, int(best[0])), 20)
        print(f'| {size_n:,} | {before:.2f} | {now:.3f} |')

    queries = 100 if args.quick else 200
    length = 10
    start = n // 3
    matcher = OnlineSeqMatcher(refs.astype(np.float32), SeqMatchSettings(length=length),
                               segments)
    print(f'\naccuracy: top-1 scores of the query keyframes of an exact seqmatch run (L = '
          f'{length}, map {n:,}), sampled against the full scan; queries are a stretch of the '
          'route with noise of the given norm')
    print('| noise | full-scan score median (range) | S (anchors sampled) | mean abs error | '
          'max abs error | max relative error | sample alone: mean / max abs error |')
    print('|---:|---|---:|---:|---:|---:|---:|')
    for noise in (0.6, 1.2, 2.0):
        query = refs[start:start + queries].astype(np.float32) + noise / np.sqrt(dim) * \
            rng.standard_normal((queries, dim), dtype=np.float32)
        query /= np.linalg.norm(query, axis=1, keepdims=True)
        matcher.reset()
        report_accuracy(matcher, query, noise, n)

    if args.data:
        real_data(args.data)
    if args.node:
        node_latency(refs, query, length)


def report_accuracy(matcher: OnlineSeqMatcher, query: np.ndarray, noise: float,
                    n: int) -> None:
    """Sampled against full-scan scores of each keyframe's top-1 (one table row per S)."""
    full, sampled, plain = [], {1024: [], 4096: []}, {1024: [], 4096: []}
    for q in query:
        distances = matcher.push(q)
        if distances is None:
            continue
        best = np.array([distances[np.argmin(distances)]])
        full.append(old_full_scan(distances, best)[0])
        for size in sampled:
            sampled[size].append(distinctiveness(distances, best, size)[0])
            plain[size].append(plain_sample_score(distances, best[0], size))
    full_arr = np.array(full)
    for size, values in sampled.items():
        err = np.abs(np.array(values) - full_arr)
        alone = np.abs(np.array(plain[size]) - full_arr)
        print(f'| {noise} | {np.median(full_arr):.2f} ({full_arr.min():.2f} - '
              f'{full_arr.max():.2f}) | {size} ({len(sample_anchors(n, size))}) | '
              f'{err.mean():.4f} | {err.max():.4f} | '
              f'{np.max(err / np.maximum(full_arr, 1e-9)):.4f} | '
              f'{alone.mean():.4f} / {alone.max():.4f} |')


def node_latency(refs: np.ndarray, query: np.ndarray, length: int) -> None:
    """The node core's matching per keyframe with an IVF-Flat index (seqmatch), split into
    the candidate search and the score (sample and dip), for two sample sizes."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.matching.methods import build_method
    from vpr_seq_ros.matching.methods.approximate import build_index
    from vpr_seq_ros.refmap import ReferenceMap, make_manifest
    from vpr_seq_ros.runtime.core import NodeCore
    from vpr_seq_ros.types import EncodedRun, Frame

    n, dim = refs.shape
    index = {'matching.index.kind': 'ivf-flat', 'matching.index.nprobe': 16,
             'matching.index.candidates': 16}
    base = {'encoder.name': 'npy', 'matching.method': 'seqmatch', 'sequence.length': length,
            'matching.top_k': 5, **index}
    run = EncodedRun(refs, np.arange(n, dtype=np.int64) * 10**8, None, np.zeros(n, np.int64))
    started = time.perf_counter()
    ann, info = build_index(build_method(load_config(overrides=base)), run,
                            load_config(overrides=base).matching.index)
    train = time.perf_counter() - started
    refmap = ReferenceMap(run, make_manifest({'name': 'npy'}, length, 'bench', 'float16', n,
                                             dim, index=info),
                          index=ann.to_bytes(), index_rows=ann.rows)
    print(f'\nnode: approximate seqmatch (IVF-Flat, nprobe 16, 16 candidates; trained in '
          f'{train:.0f} s), ms per keyframe over {len(query)} keyframes, map {n:,} x {dim}')
    print('| matching.score_sample | anchors sampled | p50 matching | p50 of it for the score |')
    print('|---:|---:|---:|---:|')
    for size in (1024, 4096):
        core = NodeCore(load_config(overrides={**base, 'matching.score_sample': size}),
                        IdentityEncoder(), refmap)
        total, score = [], []
        original = core._score_sample

        def timed(distances: np.ndarray, spent: list = score, inner=original):
            started = time.perf_counter()
            out = inner(distances)
            spent.append(time.perf_counter() - started)
            return out

        core._score_sample = timed  # type: ignore[method-assign]
        for j, q in enumerate(query):
            step = core.on_frame(Frame(index=j, stamp_ns=10**10 + j * 10**8, descriptor=q))
            if step.hypothesis is not None:
                total.append(step.match_ms)
        # the sample's rows are cached at the first full window: leave it out
        print(f'| {size} | {len(sample_anchors(n, size))} | {np.median(total[1:]):.2f} | '
              f'{1e3 * np.median(score[1:]):.2f} |')


def real_data(data: str) -> None:
    """Nordland summer (map, 1200 frames) against winter, seqslam preset: the sampled score of
    each query's top-1 from the recorded matrix against the full-scan one, for small S."""
    from pathlib import Path

    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.matching.score import column_distinctiveness
    from vpr_seq_ros.pipeline import encode_run, evaluate_encoded
    from vpr_seq_ros.refmap import ReferenceMap, make_manifest
    from vpr_seq_ros.sources import open_source

    root = Path(data) / 'nordland_64x32'
    cfg = load_config('seqslam')
    encoder = build_encoder(cfg.encoder)
    ref = encode_run(open_source(root / 'summer'), encoder)
    query = encode_run(open_source(root / 'winter'), encoder)
    refmap = ReferenceMap(ref, make_manifest(encoder.settings(), cfg.sequence.length, 'bench',
                                             'float32', len(ref), ref.descriptors.shape[1]))
    out = evaluate_encoded(refmap, query, cfg, keep_matrix=True).output
    top = np.where(out.matches.valid, out.matches.ref_indices[:, 0], -1)
    full = column_distinctiveness(out.matrix, top, len(ref))
    counted = top >= 0
    print(f'\nreal data: Nordland summer map ({len(ref)} frames) against winter, seqslam '
          f'preset (L = {cfg.sequence.length}); full-scan top-1 score median '
          f'{np.median(full[counted]):.2f} (range {full[counted].min():.2f} - '
          f'{full[counted].max():.2f})')
    print('| S (anchors sampled) | mean abs error | max abs error | max relative error | '
          'sample alone: mean / max abs error |')
    print('|---:|---:|---:|---:|---:|')
    for size in (64, 128, 256, 512):
        err = np.abs(column_distinctiveness(out.matrix, top, size) - full)[counted]
        alone = np.abs([plain_sample_score(out.matrix[:, j], out.matrix[top[j], j], size)
                        for j in np.flatnonzero(counted)] - full[counted])
        print(f'| {size} ({len(sample_anchors(len(ref), size))}) | {err.mean():.4f} | '
              f'{err.max():.4f} | {np.max(err / np.maximum(full[counted], 1e-9)):.4f} | '
              f'{alone.mean():.4f} / {alone.max():.4f} |')


if __name__ == '__main__':
    main()
