"""Large maps: exact against approximate search, through the node core and the map files.

For each map size N and method, a structured synthetic route of 512-D unit descriptors (a
smooth random walk: neighbours along the route look alike, as in real runs) is written as a
map with ``vpr-seq build-map``'s code (float16 storage), with and without an approximate index;
queries are the same route with noise at two levels. Reported per row:

* node per-frame latency p50/p99 (matching only, the encoder excluded), from ``NodeCore``;
* top-1 agreement of the approximate search with the exact one, and R@1 (same index +-2) of
  each, at both noise levels;
* build time, index training time, map size on disk, stored index size, load time, resident
  memory (RSS) after the queries and its peak;
* for IVF indexes holding frames (``single``, ``seqmatch``), single-frame search through the
  stored index against an exact scan of the map (what ``single`` does with the index).

Each map size runs in a child process so that memory figures do not mix.

``--index`` picks the approximate index: ``auto`` is HNSW up to 200k frames and IVF-Flat
beyond; ``ivf-pq`` (``--pq-m`` sub-quantisers of 8 bits) is the compact one for maps that
would not fit in memory as float32 inverted lists.

``--nordland DATA`` adds the real-data row instead of the synthetic sizes: Nordland summer
(the first 1200 frames of the 64x32 release, encoded by the project's ``patchnorm`` encoder at
32x16 with 8x8 patches and L2 normalisation: 512-D) embedded as one stretch among
``--distractors`` synthetic frames, winter (same file name = same place) as the query run
through the node core, ``L`` = 10. The distractors are a route drawn from the real
descriptors' own statistics (:func:`matched_route`): a Gaussian with the mean and covariance of
the 2400 real descriptors, moving as an AR(1) process whose frame-to-frame step is calibrated
to the median step of the summer run, then patch-normalised and L2-normalised exactly as the
encoder does. The row prints how often a distractor is nearer a winter query than its true
summer frame, i.e. how hard the distractors are.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vpr_seq_ros.machine import cpu_line, peak_rss_mib, rss_mib

ROOT = Path(__file__).resolve().parents[1]
DIM = 512
LENGTH = 5
DEFAULT_DATA = ROOT.parent / 'shared' / 'data'

NORDLAND_ENCODER = {'encoder.name': 'patchnorm', 'encoder.patchnorm.width': 32,
                    'encoder.patchnorm.height': 16, 'encoder.patchnorm.patch_size': 8,
                    'encoder.patchnorm.normalize': 'l2'}
"""The real-data row's descriptor: 32x16 patch-normalised thumbnails, L2-normalised, 512-D."""
THUMB = (16, 32, 8)
"""(height, width, patch) of that descriptor."""
NORDLAND_LENGTH = 10
NORDLAND_FRAMES = 1200


def route(n: int, seed: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """A structured route of unit vectors: a stationary AR(1) process (correlation 0.9 from
    one frame to the next, so about ten neighbouring frames look alike, as along a real
    route) plus independent per-frame detail; built in blocks (bounded memory).

    Args:
        n: frames.
        seed: random seed.
        out: ``(n, 512)`` float32 array to fill (e.g. a memory-mapped ``.npy``); default new.

    Returns:
        ``(n, 512)`` float32 unit rows.
    """
    rng = np.random.default_rng(seed)
    rho = 0.9
    out = np.empty((n, DIM), np.float32) if out is None else out
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


def patchnorm_rows(x: np.ndarray, height: int, width: int, patch: int) -> np.ndarray:
    """The ``patchnorm`` encoder's normalisation applied to flattened thumbnails: every
    ``patch`` square patch to zero mean and unit std (flat patches to zeros), then the row to
    unit length (an all-flat row stays zeros).

    Args:
        x: ``(B, height * width)`` rows, row-major thumbnails.
        height, width, patch: thumbnail and patch size (pixels).

    Returns:
        ``(B, height * width)`` float32.
    """
    eps = 1e-6
    b = np.asarray(x, np.float64).reshape(len(x), height // patch, patch, width // patch, patch)
    mean = b.mean(axis=(2, 4), keepdims=True)
    std = b.std(axis=(2, 4), keepdims=True)
    normed = np.where(std < eps, 0.0, (b - mean) / np.maximum(std, eps)).reshape(len(x), -1)
    norms = np.linalg.norm(normed, axis=1, keepdims=True)
    return (normed / np.maximum(norms, eps)).astype(np.float32)


class MatchedRoute:
    """Distractor routes with the statistics of real descriptors.

    A Gaussian with the mean and covariance of ``real`` (rows of patch-normalised thumbnails)
    moves as a stationary AR(1) process in its whitened coordinates; each sample is then
    patch-normalised and L2-normalised as the encoder does, so distractors satisfy the same
    constraints as real descriptors (zero-mean, equal-energy patches; unit length).

    Args:
        real: ``(M, D)`` real descriptors (M > D for a full-rank covariance).
        shape: ``(height, width, patch)`` of the thumbnail behind a descriptor.
    """

    def __init__(self, real: np.ndarray, shape: tuple[int, int, int]) -> None:
        real = np.asarray(real, np.float64)
        self.shape = shape
        self.mean = real.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(real, rowvar=False))
        self.factor = vectors * np.sqrt(np.maximum(values, 0.0))  # cov = factor @ factor.T
        self.rho = 0.9

    def generate(self, n: int, seed: int = 0, out: np.ndarray | None = None,
                 block: int = 65536) -> np.ndarray:
        """``(n, D)`` float32 distractor route, written into ``out`` (bounded memory) if given.
        """
        dim = len(self.mean)
        rng = np.random.default_rng(seed)
        out = np.empty((n, dim), np.float32) if out is None else out
        state = rng.normal(size=dim)
        scale = np.sqrt(1 - self.rho ** 2)
        for lo in range(0, n, block):
            m = min(block, n - lo)
            innovations = rng.normal(size=(m, dim)) * scale
            walk = np.empty((m, dim))
            for i in range(m):
                state = self.rho * state + innovations[i]
                walk[i] = state
            out[lo:lo + m] = patchnorm_rows(self.mean + walk @ self.factor.T, *self.shape)
        return out

    def calibrate(self, step: float, frames: int = 2000, seed: int = 0) -> float:
        """Set the AR(1) correlation so that the median distance between consecutive frames
        is ``step`` (bisection; the step shrinks as the correlation grows).

        Returns:
            The correlation chosen.
        """
        lo, hi = 0.0, 0.999
        for _ in range(20):
            self.rho = (lo + hi) / 2
            if median_step(self.generate(frames, seed)) > step:
                lo = self.rho
            else:
                hi = self.rho
        return self.rho


def median_step(run: np.ndarray) -> float:
    """Median Euclidean distance between consecutive rows of ``(N, D)``."""
    run = np.asarray(run, np.float32)
    return float(np.median(np.linalg.norm(np.diff(run, axis=0), axis=1)))


def node_run(cfg: object, refmap: object, queries: np.ndarray) -> tuple[np.ndarray, list]:
    """Queries through a fresh node core: ``(M,)`` top-1 reference rows (-1: none yet) and
    the per-frame matching times in ms."""
    from vpr_seq_ros.encoders.identity import IdentityEncoder
    from vpr_seq_ros.runtime.core import NodeCore
    from vpr_seq_ros.types import Frame

    core = NodeCore(cfg, IdentityEncoder(), refmap)
    lat, top1 = [], []
    for j in range(len(queries)):
        step = core.on_frame(Frame(index=j, stamp_ns=(j + 1) * 10**8, descriptor=queries[j]))
        lat.append(step.match_ms)
        h = step.hypothesis
        top1.append(h.best.ref_index if h is not None and h.best else -1)
    del core
    gc.collect()
    return np.asarray(top1), lat


def frame_search(refmap: object, queries: np.ndarray, truth: np.ndarray,
                 nprobe: int) -> dict[str, float]:
    """Single-frame nearest neighbour through a map's stored frame index (what ``single``'s
    approximate search does: one search, its first hit) against an exact scan of the map.

    Args:
        refmap: a map whose index holds its frame descriptors (``single`` or ``seqmatch``).
        queries: ``(M, D)`` float32.
        truth: ``(M,)`` true reference rows (R@1 within +-2).
        nprobe: IVF cells visited.

    Returns:
        Agreement of the top-1, R@1 of each, search latency p50/p99 (ms, one query at a time).
    """
    import dataclasses

    from vpr_seq_ros.config import IndexConfig
    from vpr_seq_ros.matching.ann import AnnIndex

    info = refmap.manifest.get('index')
    stored = {k: info[k] for k in IndexConfig.__dataclass_fields__ if k in info}
    ann = AnnIndex.from_bytes(refmap.index, dataclasses.replace(IndexConfig(**stored),
                                                                nprobe=nprobe),
                              refmap.index_rows)
    lat, approx = [], []
    for q in queries:
        started = time.perf_counter()
        idx, _ = ann.search(q[None], 1)
        lat.append((time.perf_counter() - started) * 1e3)
        approx.append(idx[0, 0])
    del ann
    refs = refmap.run.descriptors
    best = np.full(len(queries), np.inf)
    exact = np.full(len(queries), -1)
    for lo in range(0, len(refs), 65536):
        block = np.asarray(refs[lo:lo + 65536], np.float32)
        d = (block ** 2).sum(axis=1)[None] - 2 * queries @ block.T
        j = np.argmin(d, axis=1)
        better = d[np.arange(len(queries)), j] < best
        best[better], exact[better] = d[np.arange(len(queries)), j][better], lo + j[better]
    approx = np.asarray(approx)
    return {'agreement': float(np.mean(approx == exact)),
            'exact_r1': float(np.mean(np.abs(exact - truth) <= 2)),
            'approx_r1': float(np.mean(np.abs(approx - truth) <= 2)),
            'p50': float(np.percentile(lat, 50)), 'p99': float(np.percentile(lat, 99))}


def one_size(n: int, queries: int, out_dir: Path, methods: list[str], nprobe: int = 16,
             candidates: int = 16, kind: str = 'auto', pq_m: int = 64) -> list[dict]:
    """All rows of one map size (runs in a child process)."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map

    ref_path = out_dir / 'ref.npy'
    refs = route(n, out=np.lib.format.open_memmap(ref_path, 'w+', np.float32, (n, DIM)))
    rng = np.random.default_rng(1)
    start = int(rng.integers(0, n - queries))
    clean = np.array(refs[start:start + queries])
    refs.flush()
    del refs
    noisy = {}
    for level in (1.5, 3.0):
        q = clean + rng.normal(size=clean.shape).astype(np.float32) * (level / np.sqrt(DIM))
        noisy[level] = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    if kind == 'auto':
        kind = 'ivf-flat' if n > 200_000 else 'hnsw'
    rows = []
    for method in methods:
        base = {'encoder.name': 'npy', 'matching.method': method,
                'sequence.length': LENGTH, 'matching.top_k': 5, 'map.dtype': 'float16',
                'encoder.batch_size': 4096}
        approx = {**base, 'matching.index.kind': kind, 'matching.index.nprobe': nprobe,
                  'matching.index.candidates': candidates, 'matching.index.pq_m': pq_m}
        started = time.perf_counter()
        path = build_map(ref_path, load_config(overrides=approx),
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
                top1, lat = node_run(cfg, refmap, q)
                truth = start + np.arange(len(q))
                counted = np.arange(len(q)) >= LENGTH - 1
                per_level[level] = {
                    'p50': float(np.percentile(lat[LENGTH:], 50)),
                    'p99': float(np.percentile(lat[LENGTH:], 99)),
                    'top1': top1, 'r1': float(np.mean(np.abs(top1 - truth)[counted] <= 2))}
            results[label] = per_level
        frames = {level: frame_search(refmap, q, start + np.arange(len(q)), nprobe)
                  for level, q in noisy.items()} if kind.startswith('ivf') and \
            method in ('single', 'seqmatch') else {}
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
                'map_mib': size_mib, 'index_mib': (refmap.index.nbytes / 2**20
                                                   if refmap.index is not None else 0.0),
                'load_s': load_s, 'rss_mib': rss_mib(), 'peak_mib': peak_rss_mib(),
                'frames': frames.get(level)})
        del refmap
        gc.collect()
        path.unlink()
    ref_path.unlink()
    return rows


def encode_nordland(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Summer and winter through the project's ``patchnorm`` encoder (:data:`NORDLAND_ENCODER`):
    two ``(1200, 512)`` float32 arrays, row ``i`` of both the same place."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.encoders import build_encoder
    from vpr_seq_ros.pipeline import encode_run
    from vpr_seq_ros.sources import open_source

    names = [sorted(p.name for p in (root / s).glob('*.png')) for s in ('summer', 'winter')]
    if names[0] != names[1]:
        raise SystemExit(f'{root}: summer and winter do not hold the same file names')
    encoder = build_encoder(load_config(overrides=NORDLAND_ENCODER).encoder)
    runs = [np.asarray(encode_run(open_source(root / s), encoder).descriptors, np.float32)
            [:NORDLAND_FRAMES] for s in ('summer', 'winter')]
    return runs[0], runs[1]


def nordland_rows(root: Path, distractors: int, out_dir: Path, methods: list[str],
                  nprobes: list[int], candidates: list[int], kind: str = 'ivf-flat',
                  pq_m: int = 64, seed: int = 0) -> dict:
    """The real-data row (runs in a child process): Nordland summer among distractors."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map

    summer, winter = encode_nordland(root)
    model = MatchedRoute(np.concatenate([summer, winter]), THUMB)
    rho = model.calibrate(median_step(summer))
    n = distractors + len(summer)
    offset = int(np.random.default_rng(seed).integers(0, distractors))
    ref_path = out_dir / 'ref.npy'
    refs = np.lib.format.open_memmap(ref_path, 'w+', np.float32, (n, summer.shape[1]))
    started = time.perf_counter()
    model.generate(offset, seed + 1, refs[:offset])
    refs[offset:offset + len(summer)] = summer
    model.generate(distractors - offset, seed + 2, refs[offset + len(summer):])
    generate_s = time.perf_counter() - started
    stats = {'rho': rho, 'summer_step': median_step(summer),
             'distractor_step': median_step(model.generate(20000, seed + 3)),
             'true_distance': float(np.median(np.linalg.norm(summer - winter, axis=1))),
             'generate_s': generate_s, 'offset': offset, 'n': n}
    refs.flush()
    del refs
    truth = offset + np.arange(len(winter))
    counted = np.arange(len(winter)) >= NORDLAND_LENGTH - 1
    rows = []
    for method in methods:
        base = {'encoder.name': 'npy', 'matching.method': method,
                'sequence.length': NORDLAND_LENGTH, 'matching.distance': 'euclidean',
                'matching.top_k': 5, 'map.dtype': 'float16', 'encoder.batch_size': 4096}
        build = {**base, 'matching.index.kind': kind, 'matching.index.pq_m': pq_m}
        started = time.perf_counter()
        path = build_map(ref_path, load_config(overrides=build), out_dir / f'{method}.npz',
                         overwrite=True)
        build_s = time.perf_counter() - started
        refmap = load_map(path)
        info = refmap.manifest.get('index') or {}
        exact_top1, exact_lat = node_run(load_config(overrides=base), refmap, winter)
        if method == 'single':  # how hard the distractors are, from the exact scan itself
            first = exact_top1[counted]
            inside = (first >= offset) & (first < offset + len(summer))
            stats['single_top1_distractor'] = float(np.mean(~inside))
        exact_r1 = float(np.mean(exact_top1[counted] == truth[counted]))
        for nprobe in nprobes:
            for cands in candidates if method == 'seqmatch' else candidates[:1]:
                cfg = load_config(overrides={**build, 'matching.index.nprobe': nprobe,
                                             'matching.index.candidates': cands})
                top1, lat = node_run(cfg, refmap, winter)
                rows.append({
                    'method': method, 'index': kind, 'nprobe': nprobe, 'candidates': cands,
                    'exact_p50_ms': float(np.percentile(exact_lat[NORDLAND_LENGTH:], 50)),
                    'exact_p99_ms': float(np.percentile(exact_lat[NORDLAND_LENGTH:], 99)),
                    'approx_p50_ms': float(np.percentile(lat[NORDLAND_LENGTH:], 50)),
                    'approx_p99_ms': float(np.percentile(lat[NORDLAND_LENGTH:], 99)),
                    'agreement': float(np.mean(exact_top1[counted] == top1[counted])),
                    'exact_r1': exact_r1,
                    'approx_r1': float(np.mean(top1[counted] == truth[counted])),
                    'build_s': build_s, 'train_s': info.get('train_seconds', float('nan')),
                    'map_mib': path.stat().st_size / 2**20, 'rss_mib': rss_mib(),
                    'peak_mib': peak_rss_mib()})
        del refmap
        gc.collect()
        path.unlink()
    ref_path.unlink()
    stats['baseline_r1'] = nordland_baseline(summer, winter, methods)
    return {'stats': stats, 'rows': rows}


def nordland_baseline(summer: np.ndarray, winter: np.ndarray,
                      methods: list[str]) -> dict[str, float]:
    """Exact R@1 of each method with the summer run alone as the map (no distractors)."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import build_map
    from vpr_seq_ros.refmap import load_map

    out = {}
    counted = np.arange(len(winter)) >= NORDLAND_LENGTH - 1
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / 'summer.npy', summer)
        for method in methods:
            cfg = load_config(overrides={
                'encoder.name': 'npy', 'matching.method': method,
                'sequence.length': NORDLAND_LENGTH, 'matching.distance': 'euclidean',
                'matching.top_k': 5, 'map.dtype': 'float16'})
            refmap = load_map(build_map(Path(tmp) / 'summer.npy', cfg, Path(tmp) / 'm.npz',
                                        overwrite=True))
            top1, _ = node_run(cfg, refmap, winter)
            out[method] = float(np.mean(top1[counted] == np.arange(len(winter))[counted]))
    return out


def child(args: argparse.Namespace) -> object:
    """What a child process computes (one map size, or the Nordland row)."""
    methods = args.methods.split(',')
    if args.nordland:
        return nordland_rows(args.nordland / 'nordland_64x32', args.distractors, args.out,
                             methods, [int(v) for v in args.nprobe.split(',')],
                             [int(v) for v in args.candidates.split(',')],
                             'ivf-flat' if args.index == 'auto' else args.index, args.pq_m)
    return one_size(args.child, args.queries, args.out, methods,
                    int(args.nprobe.split(',')[0]), int(args.candidates.split(',')[0]),
                    args.index, args.pq_m)


def spawn(args: argparse.Namespace, extra: list[str]) -> tuple[object | None, str]:
    """Run :func:`child` in a fresh process: its result, or the last line of its errors."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        cmd = [sys.executable, __file__, '--out', tmp, '--methods', args.methods,
               '--nprobe', args.nprobe, '--candidates', args.candidates, '--index', args.index,
               '--pq-m', str(args.pq_m), '--queries', str(args.queries), '--distractors',
               str(args.distractors), *extra]
        env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get('PYTHONPATH')])])}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith('ROWS ')]
    if done.returncode or not lines:
        return None, (done.stderr.strip().splitlines() or ['no output'])[-1]
    return json.loads(lines[0][5:]), ''


def print_nordland(args: argparse.Namespace) -> int:
    """The real-data table."""
    root = args.nordland / 'nordland_64x32'
    if not (root / 'summer').is_dir() or not (root / 'winter').is_dir():
        print(f'Nordland row skipped: {root} not found (pass --nordland DATA)')
        return 0
    kind = 'ivf-flat' if args.index == 'auto' else args.index
    print(f'Nordland summer (1200 frames, patchnorm 32x16/8, L2, 512-D) among '
          f'{args.distractors:,} matched distractors, float16 map; winter queries through the '
          f'node core, seqmatch/seqgem L = {NORDLAND_LENGTH}, Euclidean; R@1 at the same index '
          f'(+-0); approximate index {kind}'
          + (f' (pq_m {args.pq_m})' if kind == 'ivf-pq' else '') + '.')
    result, error = spawn(args, ['--nordland', str(args.nordland)])
    if result is None:
        print(f'failed: {error}')
        return 1
    st = result['stats']
    print(f'Distractors: AR(1) correlation {st["rho"]:.3f}; median consecutive step '
          f'{st["distractor_step"]:.3f} (summer run {st["summer_step"]:.3f}); summer inserted at '
          f'row {st["offset"]:,} of {st["n"]:,}; generated in {st["generate_s"]:.0f} s. '
          f'Median summer-winter distance of a place {st["true_distance"]:.3f}.')
    if 'single_top1_distractor' in st:
        print(f'Exact single-frame top-1 is a distractor for '
              f'{st["single_top1_distractor"]:.3f} of winter queries.')
    print('Exact R@1 with the summer run alone as the map: ' + ', '.join(
        f'{m} {v:.3f}' for m, v in st['baseline_r1'].items()) + '.')
    print()
    print('| method | index | nprobe | candidates | exact p50/p99 ms | approx p50/p99 ms '
          '| top-1 agreement | R@1 exact | R@1 approx | approx/exact | build s | index train s '
          '| map MiB | peak RSS MiB |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for r in result['rows']:
        ratio = r['approx_r1'] / r['exact_r1'] if r['exact_r1'] else float('nan')
        print(f'| {r["method"]} | {r["index"]} | {r["nprobe"]} | {r["candidates"]} | '
              f'{r["exact_p50_ms"]:.1f} / {r["exact_p99_ms"]:.1f} | '
              f'{r["approx_p50_ms"]:.2f} / {r["approx_p99_ms"]:.2f} | {r["agreement"]:.3f} | '
              f'{r["exact_r1"]:.3f} | {r["approx_r1"]:.3f} | {ratio:.2f} | {r["build_s"]:.1f} | '
              f'{r["train_s"]:.1f} | {r["map_mib"]:.0f} | {r["peak_mib"]:.0f} |', flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', default='10000,100000,1000000')
    parser.add_argument('--queries', type=int, default=300)
    parser.add_argument('--methods', default='single,seqgem,seqmatch')
    parser.add_argument('--index', default='auto',
                        choices=('auto', 'ivf-flat', 'ivf-pq', 'hnsw'),
                        help='approximate index (auto: hnsw up to 200k frames, ivf-flat beyond)')
    parser.add_argument('--pq-m', type=int, default=64, help='ivf-pq sub-quantisers')
    parser.add_argument('--nprobe', default='16',
                        help='IVF cells visited per search (Nordland: a comma list)')
    parser.add_argument('--candidates', default='16',
                        help='seqmatch: index candidates per window frame (Nordland: a list)')
    parser.add_argument('--nordland', type=Path, nargs='?', const=DEFAULT_DATA,
                        help='data folder holding nordland_64x32: the real-data row')
    parser.add_argument('--distractors', type=int, default=1_000_000)
    parser.add_argument('--tmp', type=Path, help='folder for the temporary maps')
    parser.add_argument('--child', type=int, help=argparse.SUPPRESS)
    parser.add_argument('--out', type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out is not None:
        print('ROWS ' + json.dumps(child(args)))
        return 0
    print(cpu_line())
    if args.nordland:
        return print_nordland(args)
    nprobe, candidates = args.nprobe.split(',')[0], args.candidates.split(',')[0]
    index = {'auto': f'HNSW up to 200k frames and IVF-Flat (nprobe {nprobe}) beyond',
             'ivf-pq': f'IVF-PQ ({args.pq_m} x 8-bit codes, nprobe {nprobe})'}.get(
        args.index, f'{args.index} (nprobe {nprobe})')
    print(f'Synthetic 512-D route, float16 maps, L = 5, queries: the route with noise; the '
          f'approximate index is {index}; seqmatch asks {candidates} candidates per window '
          'frame.')
    print('| N | method | noise | index | exact p50/p99 ms | approx p50/p99 ms | top-1 agreement '
          '| R@1 exact | R@1 approx | build s | index train s | map MiB | index MiB | load s '
          '| RSS MiB | peak RSS MiB |')
    print('|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    frames = []
    for n in (int(s) for s in args.sizes.split(',')):
        rows, error = spawn(args, ['--child', str(n)])
        if rows is None:
            print(f'| {n} | failed: {error} |')
            continue
        for r in rows:
            print(f'| {r["N"]:,} | {r["method"]} | {r["noise"]} | {r["index"]} | '
                  f'{r["exact_p50_ms"]:.1f} / {r["exact_p99_ms"]:.1f} | '
                  f'{r["approx_p50_ms"]:.2f} / {r["approx_p99_ms"]:.2f} | {r["agreement"]:.3f} | '
                  f'{r["exact_r1"]:.3f} | {r["approx_r1"]:.3f} | {r["build_s"]:.1f} | '
                  f'{r["train_s"]:.1f} | {r["map_mib"]:.0f} | {r["index_mib"]:.0f} | '
                  f'{r["load_s"]:.3f} | {r["rss_mib"]:.0f} | {r["peak_mib"]:.0f} |', flush=True)
            if r.get('frames'):
                frames.append(r)
    if frames:
        print()
        print('Single-frame search through the same stored index (what `single` does with it: '
              'one query, first hit) against an exact scan of the map:')
        print('| N | map of | noise | index | search p50/p99 ms | top-1 agreement | R@1 exact '
              '| R@1 approx |')
        print('|---:|---|---:|---|---:|---:|---:|---:|')
        for r in frames:
            f = r['frames']
            print(f'| {r["N"]:,} | {r["method"]} | {r["noise"]} | {r["index"]} | '
                  f'{f["p50"]:.2f} / {f["p99"]:.2f} | {f["agreement"]:.3f} | '
                  f'{f["exact_r1"]:.3f} | {f["approx_r1"]:.3f} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
