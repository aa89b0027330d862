"""Large maps: exact against approximate search, through the node core and the map files.

For each map size N and method, a structured synthetic route of 512-D unit descriptors (a
smooth random walk: neighbours along the route look alike, as in real runs) is written as a
map with ``vpr-seq build-map``'s code (float16 storage), with and without an approximate index;
queries are the same route with noise at two levels. Reported per row:

* node per-frame latency p50/p99 (matching only, the encoder excluded), from ``NodeCore``;
* top-1 agreement of the approximate search with the exact one, and R@1 (same index +-2) of
  each, at both noise levels;
* build time, index training time, map size on disk, load time, resident memory (RSS) after
  loading and after the queries.

Each map size runs in a child process so that memory figures do not mix. A real-data row puts
Nordland summer (64x32 patchnorm, L2-normalised) among synthetic distractors and matches
winter against it.

Usage: ``python benchmarks/scale.py [--sizes 10000,100000,1000000] [--queries 300]``.
This machine: see the CPU line printed first. Descriptors are synthetic; no model is involved.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_seq_ros.machine import cpu_line, rss_mib

ROOT = Path(__file__).resolve().parents[1]
DIM = 512
LENGTH = 5


def route(n: int, seed: int = 0) -> np.ndarray:
    """A structured route of unit vectors: a stationary AR(1) process (correlation 0.9 from
    one frame to the next, so about ten neighbouring frames look alike, as along a real
    route) plus independent per-frame detail; built in blocks (bounded memory)."""
    rng = np.random.default_rng(seed)
    rho = 0.9
    out = np.empty((n, DIM), np.float32)
    state = rng.normal(size=DIM)
    for lo in range(0, n, 65536):
        m = min(65536, n - lo)
        innovations = rng.normal(size=(m, DIM)) * np.sqrt(1 - rho ** 2)
        walk = np.empty((m, DIM))
        for i in range(m):
            state = rho * state + innovations[i]
            walk[i] = state
        block = (walk + 0.5 * rng.normal(size=(m, DIM))).astype(np.float32)
        out[lo:lo + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def one_size(n: int, queries: int, out_dir: Path, methods: list[str], nprobe: int = 16,
             candidates: int = 16) -> list[dict]:
    """All rows of one map size (runs in a child process)."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.runtime.core import NodeCore
    from vpr_seq_ros.types import Frame

    refs = route(n)
    np.save(out_dir / 'ref.npy', refs)
    rng = np.random.default_rng(1)
    start = int(rng.integers(0, n - queries))
    clean = refs[start:start + queries].copy()
    del refs
    noisy = {}
    for level in (1.5, 3.0):
        q = clean + rng.normal(size=clean.shape).astype(np.float32) * (level / np.sqrt(DIM))
        noisy[level] = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    kind = 'ivf-flat' if n > 200_000 else 'hnsw'
    rows = []
    for method in methods:
        base = {'encoder.name': 'npy', 'matching.method': method,
                'sequence.length': LENGTH, 'matching.top_k': 5, 'map.dtype': 'float16',
                'encoder.batch_size': 4096}
        approx = {**base, 'matching.index.kind': kind, 'matching.index.nprobe': nprobe,
                  'matching.index.candidates': candidates}
        started = time.perf_counter()
        path = build_map(out_dir / 'ref.npy', load_config(overrides=approx),
                         out_dir / f'{method}.npz', overwrite=True)
        build_s = time.perf_counter() - started
        size_mib = path.stat().st_size / 2**20
        started = time.perf_counter()
        refmap = load_map(path)
        load_s = time.perf_counter() - started
        info = refmap.manifest.get('index') or {}
        results: dict[str, dict] = {}
        for label, overrides in (('exact', base), (kind, approx)):
            cfg = load_config(overrides=overrides)
            per_level = {}
            for level, q in noisy.items():
                core = NodeCore(cfg, IdentityEncoder(), refmap)
                lat, top1 = [], []
                for j in range(len(q)):
                    step = core.on_frame(Frame(index=j, stamp_ns=(j + 1) * 10**8,
                                               descriptor=q[j]))
                    lat.append(step.match_ms)
                    h = step.hypothesis
                    top1.append(h.best.ref_index if h is not None and h.best else -1)
                top1 = np.asarray(top1)
                truth = start + np.arange(len(q))
                counted = np.arange(len(q)) >= LENGTH - 1
                per_level[level] = {
                    'p50': float(np.percentile(lat[LENGTH:], 50)),
                    'p99': float(np.percentile(lat[LENGTH:], 99)),
                    'top1': top1, 'r1': float(np.mean(np.abs(top1 - truth)[counted] <= 2))}
            results[label] = per_level
        for level in noisy:
            ex, ap = results['exact'][level], results[kind][level]
            counted = slice(LENGTH - 1, None)
            rows.append({
                'N': n, 'method': method, 'noise': level, 'index': kind,
                'exact_p50_ms': ex['p50'], 'exact_p99_ms': ex['p99'],
                'approx_p50_ms': ap['p50'], 'approx_p99_ms': ap['p99'],
                'agreement': float(np.mean(ex['top1'][counted] == ap['top1'][counted])),
                'exact_r1': ex['r1'], 'approx_r1': ap['r1'],
                'build_s': build_s, 'train_s': info.get('train_seconds', float('nan')),
                'map_mib': size_mib, 'load_s': load_s, 'rss_mib': rss_mib()})
        del refmap
    (out_dir / 'ref.npy').unlink()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='10000,100000,1000000')
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--methods', default='single,seqgem,seqmatch')
    parser.add_argument('--nprobe', type=int, default=16, help='IVF cells visited per search')
    parser.add_argument('--candidates', type=int, default=16,
                        help='seqmatch: index candidates per window frame')
    parser.add_argument('--child', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--out', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = args.methods.split(',')
    if args.child:
        rows = one_size(args.child, args.queries, args.out, methods, args.nprobe,
                        args.candidates)
        print('ROWS ' + json.dumps(rows))
        return 0
    print(cpu_line())
    print('Synthetic 512-D route, float16 maps, L = 5, queries: the route with noise; the '
          f'approximate index is HNSW up to 200k frames and IVF-Flat (nprobe {args.nprobe}) '
          f'beyond; seqmatch asks {args.candidates} candidates per window frame.')
    print('| N | method | noise | index | exact p50/p99 ms | approx p50/p99 ms | top-1 agreement '
          '| R@1 exact | R@1 approx | build s | index train s | map MiB | load s | RSS MiB |')
    print('|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for n in (int(s) for s in args.sizes.split(',')):
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run([sys.executable, __file__, '--child', str(n), '--queries',
                                   str(args.queries), '--methods', args.methods, '--out', tmp,
                                   '--nprobe', str(args.nprobe), '--candidates',
                                   str(args.candidates)],
                                  capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith('ROWS ')]
        if done.returncode or not lines:
            print(f'| {n} | failed: {done.stderr.strip().splitlines()[-1:]} |')
            continue
        for r in json.loads(lines[0][5:]):
            print(f'| {r["N"]:,} | {r["method"]} | {r["noise"]} | {r["index"]} | '
                  f'{r["exact_p50_ms"]:.1f} / {r["exact_p99_ms"]:.1f} | '
                  f'{r["approx_p50_ms"]:.2f} / {r["approx_p99_ms"]:.2f} | {r["agreement"]:.3f} | '
                  f'{r["exact_r1"]:.3f} | {r["approx_r1"]:.3f} | {r["build_s"]:.1f} | '
                  f'{r["train_s"]:.1f} | {r["map_mib"]:.0f} | {r["load_s"]:.3f} | '
                  f'{r["rss_mib"]:.0f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
