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

The ``online f16`` column is the same matcher on the map stored as float16 and kept float16
(read in float32 row blocks, :class:`~vpr_seq_ros.matching.distances.RowBlocks`), with its
largest difference from the float32 matcher on the same (float16-rounded) map; with
``--f16-only`` also the resident memory (map plus what the matcher adds, RSS) over the map's
bytes.
``--f16-only`` times only that (``--sizes 100000 --dims 512 --lengths 5 --f16-only`` for the
target row), and ``--conversion`` first times the ways of reading a float16 map as float32:
numpy's cast, torch's, onnxruntime's (what the matcher uses), each in blocks, against one
float32 matrix-vector product.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

from vpr_seq_ros.machine import cpu_line, rss_mib
from vpr_seq_ros.matching.distances import RowBlocks, block_rows, distance_matrix, squared_norms
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


def f16_flag() -> str:
    """Whether the CPU converts float16 in hardware (F16C)."""
    try:
        flags = open('/proc/cpuinfo').read().split()
    except OSError:
        return 'unknown'
    return 'f16c' if 'f16c' in flags else 'no f16c'


def median_ms(fn, repeats: int = 15) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def conversion(n: int, d: int, rng: np.random.Generator) -> None:
    """Time the ways of reading an (n, d) float16 map as float32 against a float32 product."""
    refs = unit_rows(rng, n, d)
    half = refs.astype(np.float16)
    q = refs[0]
    out = np.empty(n, np.float32)
    rows = block_rows(d)
    buf = np.empty((rows, d), np.float32)

    def numpy_blocks() -> None:
        for lo in range(0, n, rows):
            chunk = buf[:min(rows, n - lo)]
            np.copyto(chunk, half[lo:lo + rows])
            np.matmul(chunk, q, out=out[lo:lo + len(chunk)])

    print(f'reading a {n:,} x {d} map per query (median ms; {rows}-row blocks):')
    print(f'- float32 map, one matrix-vector product: {median_ms(lambda: refs @ q):.2f}')
    blocks = RowBlocks(half)
    print(f'- float16, onnxruntime cast + product per block, one thread (RowBlocks.matvec, '
          f'what the matcher uses): {median_ms(lambda: blocks.matvec(q, out)):.2f}')
    print(f'- float16, numpy cast per block + product: {median_ms(numpy_blocks, 5):.2f}')
    print(f'- float16, numpy cast of the whole map + product: '
          f'{median_ms(lambda: half.astype(np.float32) @ q, 5):.2f}')
    try:
        import torch
    except ImportError:
        print('- torch: not installed')
    else:
        src, dst = torch.from_numpy(half), torch.from_numpy(buf)

        def torch_blocks() -> None:
            for lo in range(0, n, rows):
                m = min(rows, n - lo)
                dst[:m].copy_(src[lo:lo + m])
                np.matmul(buf[:m], q, out=out[lo:lo + m])

        print(f'- float16, torch cast per block + product: {median_ms(torch_blocks):.2f}')
        print(f'- float16, torch half matrix-vector product (result rounded to float16, '
              f'not used): {median_ms(lambda: torch.mv(src, torch.from_numpy(q).half())):.2f}')
    print()


def bench_f16(n: int, d: int, length: int, frames: int, rng: np.random.Generator) -> dict:
    """Online matcher on a float16 map kept float16, against float32 on the same values (run
    first, in its own loop: BLAS threads left spinning by a float32 product would slow the
    next float16 push)."""
    half = unit_rows(rng, n, d).astype(np.float16)
    queries = unit_rows(rng, frames + length, d)
    single = OnlineSeqMatcher(half.astype(np.float32), SeqMatchSettings(length=length))
    expected = [single.push(q) for q in queries]
    del single
    before = rss_mib()
    online = OnlineSeqMatcher(half, SeqMatchSettings(length=length))
    times, max_diff = [], 0.0
    for q, want in zip(queries, expected):
        t0 = time.perf_counter()
        scores = online.push(q)
        t1 = time.perf_counter()
        if scores is None:
            continue
        times.append(1e3 * (t1 - t0))
        finite = np.isfinite(want)
        max_diff = max(max_diff, float(np.abs(scores[finite] - want[finite]).max()))
    grown = rss_mib() - before  # the matcher's own memory (the map was resident before)
    return {'online_f16': float(np.median(times)), 'f16_diff': max_diff,
            'resident_x': (half.nbytes / 2**20 + max(grown, 0.0)) / (half.nbytes / 2**20)}


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
    parser.add_argument('--f16-only', action='store_true',
                        help='time only the float16 matcher (and its difference from float32)')
    parser.add_argument('--conversion', action='store_true',
                        help='first time the ways of reading a float16 map (largest size, '
                        'first D)')
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dims = [1_000, 10_000], [512]
    rng = np.random.default_rng(0)
    print(f'# online seqmatch, {platform.processor() or platform.machine()}, '
          f'{os.cpu_count()} cores, numpy {np.__version__}')
    print(f'{cpu_line()}; {f16_flag()}')
    print('seeded random unit descriptors; median ms per new query frame\n')
    if args.conversion:
        conversion(max(args.sizes), args.dims[0], rng)
    if args.f16_only:
        print('| map frames | D | L | online f16 ms | max abs diff to f32 | resident / map '
              'bytes |')
        print('|---:|---:|---:|---:|---:|---:|')
    else:
        print('| map frames | D | L | online ms | online f16 ms | recompute ms | speed-up | '
              'official ms | speed-up | max abs diff | f16 max abs diff |')
        print('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for d in args.dims:
        for n in args.sizes:
            frames = max(10, min(200, int(2e8 / (n * d))))
            for length in args.lengths:
                h = bench_f16(n, d, length, max(frames, 60) if args.f16_only else frames,
                              rng)
                if args.f16_only:
                    print(f'| {n:,} | {d} | {length} | {h["online_f16"]:.2f} | '
                          f'{h["f16_diff"]:.1e} | {h["resident_x"]:.3f} |', flush=True)
                    continue
                r = bench(n, d, length, frames, rng)
                official = (f'{r["official"]:.2f} | {r["official"] / r["online"]:.1f}x'
                            if np.isfinite(r['official']) else '- | -')
                print(f'| {n:,} | {d} | {length} | {r["online"]:.2f} | '
                      f'{h["online_f16"]:.2f} | {r["recompute"]:.2f} | '
                      f'{r["recompute"] / r["online"]:.1f}x | {official} | '
                      f'{r["max_diff"]:.1e} | {h["f16_diff"]:.1e} |', flush=True)


if __name__ == '__main__':
    main()
