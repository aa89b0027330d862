"""Batch evaluation (``vpr-seq evaluate``'s matching) of a large float16 map in bounded memory.

A structured synthetic route of 512-D unit descriptors (the generator of
``benchmarks/scale.py``) is written once as a float16 map under ``--dir`` (reused when it is
there), with a query run: a stretch of the route with noise. Each method then evaluates the
queries in its own child process, through ``pipeline.evaluate_encoded`` without the distance
matrix (what ``evaluate`` does without ``--plot``), exact search and, when the map directory has
a map with an index for the method (``--approximate`` builds them: slow), approximate search.
Per row: wall time of the evaluation, the child's peak resident memory (VmHWM: the map's pages
it read count), and R@1 (same index +-2 frames).

Usage: ``python benchmarks/batch_eval.py [--size 1000000] [--queries 2000]`` (building the 1M
map takes ~3.5 GiB of memory).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vpr_seq_ros.machine import cpu_line, peak_rss_mib

HERE = Path(__file__).resolve().parent
LENGTH = 5
NOISE = 1.5


def scale_module():
    """benchmarks/scale.py (its route generator), imported from its file."""
    spec = importlib.util.spec_from_file_location('scale_bench', HERE / 'scale.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_data(size: int, queries: int, out: Path) -> None:
    """The float16 map and the query run (child process: the route is built in float32)."""
    from vpr_seq_ros.refmap import ReferenceMap, make_manifest, save_map
    from vpr_seq_ros.types import EncodedRun

    scale = scale_module()
    refs = scale.route(size)
    dim = refs.shape[1]
    rng = np.random.default_rng(1)
    start = int(rng.integers(0, size - queries))
    q = refs[start:start + queries] + rng.normal(size=(queries, dim)).astype(np.float32) * (
        NOISE / np.sqrt(dim))
    np.save(out / 'query.npy', (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(
        np.float32))
    half = refs.astype(np.float16)
    del refs
    run = EncodedRun(half, np.arange(size, dtype=np.int64) * 10**8, None,
                     np.zeros(size, np.int64))
    manifest = make_manifest({'name': 'npy'}, LENGTH, 'benchmarks/batch_eval.py', 'float16',
                             size, dim)
    save_map(ReferenceMap(run, manifest), out / 'map.npz')
    (out / 'meta.json').write_text(json.dumps({'size': size, 'queries': queries,
                                               'start': start}))


def evaluate_one(out: Path, method: str, index: str) -> dict:
    """One evaluation (child process)."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.pipeline import evaluate_encoded
    from vpr_seq_ros.refmap import load_map
    from vpr_seq_ros.types import EncodedRun

    meta = json.loads((out / 'meta.json').read_text())
    path = out / ('map.npz' if index == 'exact' else f'map_{method}_{index}.npz')
    started = time.perf_counter()
    refmap = load_map(path)
    q = np.load(out / 'query.npy')
    m = len(q)
    query = EncodedRun(q, np.arange(m, dtype=np.int64) * 10**8, None, np.zeros(m, np.int64))
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                 'sequence.length': LENGTH, 'matching.index.kind': index,
                                 'evaluation.tolerance_frames': 2})
    result = evaluate_encoded(refmap, query, cfg, keep_matrix=False)
    wall = time.perf_counter() - started
    # query j is route frame start + j: R@1 from the top-1 against that, not the evaluation's
    # same-index ground truth
    top1 = result.output.matches.ref_indices[:, 0] - meta['start']
    counted = result.output.matches.valid
    r1 = float(np.mean(np.abs(top1[counted] - np.flatnonzero(counted)) <= 2))
    return {'method': method, 'index': index, 'wall_s': wall,
            'match_s': result.report['match_seconds'], 'peak_mib': peak_rss_mib(), 'r1': r1,
            'map_mib': path.stat().st_size / 2**20}


def build_index_map(out: Path, method: str, index: str) -> None:
    """A copy of the map with an approximate index for ``method`` (child process)."""
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.matching.methods import build_method
    from vpr_seq_ros.matching.methods.approximate import build_index
    from vpr_seq_ros.refmap import Manifest, ReferenceMap, load_map, save_map

    refmap = load_map(out / 'map.npz')
    cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': method,
                                 'sequence.length': LENGTH, 'matching.index.kind': index})
    ann, info = build_index(build_method(cfg), refmap.run, cfg.matching.index)
    manifest = refmap.manifest.to_dict()
    manifest['index'] = info
    save_map(ReferenceMap(refmap.run, Manifest.from_dict(manifest), None, None,
                          ann.to_bytes(), ann.rows),
             out / f'map_{method}_{index}.npz')


def child(args: list[str]) -> dict | None:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith('ROW ')]
    if done.returncode:
        print(f'failed: {" ".join(args)}: {done.stderr.strip().splitlines()[-3:]}')
        return None
    return json.loads(lines[0][4:]) if lines else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, default=1_000_000)
    parser.add_argument('--queries', type=int, default=2000)
    parser.add_argument('--methods', default='single,seqgem,seqmatch')
    parser.add_argument('--dir', type=Path, default=Path('/tmp/vpr_batch_eval'),
                        help='where the map is written (reused when it is there)')
    parser.add_argument('--approximate', default='',
                        help='also build and evaluate maps with this index kind (ivf-flat, '
                        'hnsw, ...): slow at 1M')
    parser.add_argument('--child', nargs='+', help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = args.dir / f'n{args.size}_q{args.queries}'
    if args.child:
        what = args.child[0]
        if what == 'data':
            make_data(args.size, args.queries, out)
            print('ROW {}')
        elif what == 'index':
            build_index_map(out, args.child[1], args.child[2])
            print('ROW {}')
        else:
            print('ROW ' + json.dumps(evaluate_one(out, args.child[1], args.child[2])))
        return 0
    print(cpu_line())
    out.mkdir(parents=True, exist_ok=True)
    common = ['--size', str(args.size), '--queries', str(args.queries), '--dir', str(args.dir)]
    if not (out / 'meta.json').exists():
        started = time.perf_counter()
        if child([*common, '--child', 'data']) is None:
            return 1
        print(f'made the map in {time.perf_counter() - started:.0f} s: {out}')
    print(f'{args.size:,} x 512 float16 map, {args.queries} queries (route + noise {NOISE}), '
          f'L = {LENGTH}; evaluate without the distance matrix, one child process per row\n')
    print('| N | method | search | wall s | matching s | peak RSS MiB | map MiB | R@1 |')
    print('|---:|---|---|---:|---:|---:|---:|---:|')
    for method in args.methods.split(','):
        kinds = ['exact']
        if args.approximate:
            if not (out / f'map_{method}_{args.approximate}.npz').exists():
                child([*common, '--child', 'index', method, args.approximate])
            kinds.append(args.approximate)
        for kind in kinds:
            r = child([*common, '--child', 'eval', method, kind])
            if r:
                print(f'| {args.size:,} | {method} | {kind} | {r["wall_s"]:.1f} | '
                      f'{r["match_s"]:.1f} | {r["peak_mib"]:.0f} | {r["map_mib"]:.0f} | '
                      f'{r["r1"]:.3f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
