"""Per-frame time of the online seqmatch update against map size, next to recomputing.

For every map size N, descriptor dimension D and sequence length L this times, per new query
frame:

* online: :class:`OnlineSeqMatcher.push`: one column of N frame distances, then the running
  diagonal sums updated in O(N);
* recompute: the query's whole window from scratch: L columns of N distances (the last L
  query frames against every reference, one matrix product), then the L shifted adds;
* official: what SeqMatchNet's test-time retrieval does per query
  (``aggregateMatchScores_pt_fromDesc``): the L x L distance matrix between every reference
  window and the query window (``cdist`` of [N, L, D] with [L, D]), keeping its trace. Run for
  D = 512 only (at D = 4096 its window tensor is large and it is slower still).

Both must give the same sequence distances (checked). Descriptors are seeded random unit
vectors; timings are medians over the timed frames. Run: ``python benchmarks/seqmatch_online.py``
(``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from vpr_seq_ros.matching.distances import distance_matrix, squared_norms
from vpr_seq_ros.matching.seqmatch import OnlineSeqMatcher, SeqMatchSettings


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def recompute(refs: np.ndarray, ref_sq: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Sequence distances of the newest trailing window, from scratch."""
    n, length = refs.shape[0], window.shape[0]
    d = distance_matrix(refs, window, 'euclidean', ref_sq)
    sums = np.full(n, np.inf)
    acc = np.zeros(n - length + 1)
    for t in range(length):
        acc += d[t:t + n - length + 1, t]
    sums[length - 1:] = acc / length
    return sums


def recompute_official(refs: np.ndarray, window: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """SeqMatchNet's way: cdist of each reference window with the query window, trace / L."""
    n, length = refs.shape[0], window.shape[0]
    sums = np.full(n, np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(refs, length, axis=0)  # (n-L+1, D, L)
    for lo in range(0, n - length + 1, chunk):
        block = windows[lo:lo + chunk].transpose(0, 2, 1).reshape(-1, refs.shape[1])
        d = distance_matrix(block, window, 'euclidean').reshape(-1, length, length)
        sums[lo + length - 1:lo + length - 1 + len(d)] = np.trace(d, axis1=1, axis2=2) / length
    return sums


def bench(n: int, d: int, length: int, frames: int, rng: np.random.Generator) -> dict:
    refs = unit_rows(rng, n, d)
    queries = unit_rows(rng, frames + length, d)
    online = OnlineSeqMatcher(refs, SeqMatchSettings(length=length))
    ref_sq = squared_norms(refs)
    online_ms, recompute_ms, official_ms = [], [], []
    max_diff = 0.0
    for j, q in enumerate(queries):
        t0 = time.perf_counter()
        scores = online.push(q)
        t1 = time.perf_counter()
        if scores is None:
            continue
        online_ms.append(1e3 * (t1 - t0))
        t2 = time.perf_counter()
        expected = recompute(refs, ref_sq, queries[j - length + 1:j + 1])
        recompute_ms.append(1e3 * (time.perf_counter() - t2))
        finite = np.isfinite(expected)
        max_diff = max(max_diff, float(np.abs(scores[finite] - expected[finite]).max()))
        if d <= 512 and len(official_ms) < 10:
            t3 = time.perf_counter()
            official = recompute_official(refs, queries[j - length + 1:j + 1])
            official_ms.append(1e3 * (time.perf_counter() - t3))
            max_diff = max(max_diff, float(np.abs(scores[finite] - official[finite]).max()))
    return {'online': float(np.median(online_ms)), 'recompute': float(np.median(recompute_ms)),
            'official': float(np.median(official_ms)) if official_ms else float('nan'),
            'max_diff': max_diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1_000, 10_000, 100_000])
    parser.add_argument('--dims', type=int, nargs='+', default=[512, 4096])
    parser.add_argument('--lengths', type=int, nargs='+', default=[5, 10])
    parser.add_argument('--quick', action='store_true', help='1k and 10k frames, D=512 only')
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dims = [1_000, 10_000], [512]
    rng = np.random.default_rng(0)
    print(f'# online seqmatch, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} cores, numpy {np.__version__}')
    print('seeded random unit descriptors; median ms per new query frame\n')
    print('| map frames | D | L | online ms | recompute ms | speed-up | official ms | '
          'speed-up | max abs diff |')
    print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for d in args.dims:
        for n in args.sizes:
            frames = max(10, min(200, int(2e8 / (n * d))))
            for length in args.lengths:
                r = bench(n, d, length, frames, rng)
                official = (f'{r["official"]:.2f} | {r["official"] / r["online"]:.1f}x'
                            if np.isfinite(r['official']) else '- | -')
                print(f'| {n:,} | {d} | {length} | {r["online"]:.2f} | {r["recompute"]:.2f} | '
                      f'{r["recompute"] / r["online"]:.1f}x | {official} | '
                      f'{r["max_diff"]:.1e} |', flush=True)


if __name__ == '__main__':
    main()
