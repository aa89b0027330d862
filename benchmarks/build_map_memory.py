"""Peak resident memory of ``build-map`` per stage, against the size of the map it writes.

Usage::

    python benchmarks/build_map_memory.py [--frames 100000] [--dim 512]
        [--methods seqmatch seqgem] [--index ivf-flat] [--dtype float16]

Each (method) runs in a fresh child process: a synthetic ``(N, D)`` float32 ``.npy`` (a
smooth random walk, unit rows) is written to a temporary folder, then ``pipeline.build_map``
builds a map from it with the ``npy`` encoder. The stages (encode, sequence descriptors,
index, write) are timed by wrapping the pipeline's functions; at the start of each the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``) and at its end ``VmHWM`` is read,
so the figure is the stage's true peak, numpy and faiss C allocations included (tracemalloc
sees neither). A 5 ms sampler splits it into anonymous memory and file-backed pages (the
memory-mapped input and output, which the kernel may drop under pressure). Prints the peaks,
the map size on disk, their ratio (issue 10 target: <= ~1.5x) and the CPU line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vpr_seq_ros.machine import proc_status  # noqa: E402 - this checkout's, not an installed one

GIB = 2**30


def _reset_peak() -> None:
    try:
        Path('/proc/self/clear_refs').write_text('5')
    except OSError:
        pass


def make_route(path: Path, frames: int, dim: int, seed: int = 0) -> None:
    """A smooth unit-norm random walk, written block by block into a float32 ``.npy``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = np.lib.format.open_memmap(path, mode='w+', dtype=np.float32, shape=(frames, dim))
    state = rng.standard_normal(dim).astype(np.float32)
    for lo in range(0, frames, 65_536):
        steps = rng.standard_normal((min(65_536, frames - lo), dim)).astype(np.float32) * 0.2
        walk = np.cumsum(steps, axis=0) + state
        state = walk[-1]
        out[lo:lo + len(walk)] = walk / np.linalg.norm(walk, axis=1, keepdims=True)
    out.flush()
    del out


def child(args: argparse.Namespace) -> None:
    """Build one map in this process and print its figures as one JSON line."""
    from vpr_seq_ros import pipeline
    from vpr_seq_ros.config import load_config
    from vpr_seq_ros.matching.methods import approximate

    stages: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            st = proc_status()
            if current:
                current['anon'] = max(current.get('anon', 0), st['RssAnon'])
                current['file'] = max(current.get('file', 0), st['RssFile'])
            time.sleep(0.005)

    def staged(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            nonlocal current
            _reset_peak()
            current = {'stage': name}
            started = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                current['seconds'] = time.perf_counter() - started
                current['peak'] = proc_status()['VmHWM']
                stages.append(current)
                current = {}
        return wrapped

    pipeline.encode_run = staged('encode', pipeline.encode_run)
    pipeline.save_map = staged('write', pipeline.save_map)
    approximate.build_index = staged('index', approximate.build_index)
    build_method = pipeline.build_method

    def build_method_staged(*a: Any, **k: Any) -> Any:
        method = build_method(*a, **k)
        method.precompute = staged('sequence descriptors', method.precompute)
        return method

    pipeline.build_method = build_method_staged
    if args.tmp:
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        route = Path(tmp) / 'route.npy'
        make_route(route, args.frames, args.dim)
        cfg = load_config(overrides={'encoder.name': 'npy', 'matching.method': args.method,
                                     'matching.index.kind': args.index,
                                     'map.dtype': args.dtype})
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        _reset_peak()
        base = proc_status()['VmRSS']
        started = time.perf_counter()
        out = pipeline.build_map(route, cfg, Path(tmp) / 'map.npz')
        seconds = time.perf_counter() - started
        stop.set()
        thread.join()
        print(json.dumps({'method': args.method, 'stages': stages, 'base': base,
                          'peak': max(s['peak'] for s in stages), 'seconds': seconds,
                          'map_bytes': out.stat().st_size,
                          'input_bytes': route.stat().st_size}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=100_000)
    parser.add_argument('--dim', type=int, default=512)
    parser.add_argument('--methods', nargs='+', default=['seqmatch', 'seqgem'])
    parser.add_argument('--index', default='ivf-flat')
    parser.add_argument('--dtype', default='float16')
    parser.add_argument('--tmp', default=None, help='folder for the input and the map')
    parser.add_argument('--method', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        child(args)
        return
    from vpr_seq_ros.machine import cpu_line

    print(cpu_line())
    print(f'build-map from a {args.frames} x {args.dim} float32 .npy, {args.index} index, '
          f'{args.dtype} map; peaks are VmHWM per stage (anon / file-backed from sampling)')
    for method in args.methods:
        cmd = [sys.executable, __file__, '--method', method, '--frames', str(args.frames),
               '--dim', str(args.dim), '--index', args.index, '--dtype', args.dtype]
        if args.tmp:
            cmd += ['--tmp', args.tmp]
        line = subprocess.run(cmd, check=True, capture_output=True, text=True,
                              env={**os.environ, 'OMP_NUM_THREADS': '2'}).stdout
        res = json.loads(line.strip().splitlines()[-1])
        print(f'\n{method}: map {res["map_bytes"] / GIB:.3f} GiB on disk, input '
              f'{res["input_bytes"] / GIB:.3f} GiB, {res["seconds"]:.1f} s, process before '
              f'{res["base"] / GIB:.3f} GiB')
        print(f'  {"stage":<22}{"peak GiB":>9}{"anon":>8}{"file":>8}{"s":>7}')
        for st in res['stages']:
            print(f'  {st["stage"]:<22}{st["peak"] / GIB:>9.3f}{st.get("anon", 0) / GIB:>8.3f}'
                  f'{st.get("file", 0) / GIB:>8.3f}{st["seconds"]:>7.1f}')
        ratio = res['peak'] / res['map_bytes']
        print(f'  total peak {res["peak"] / GIB:.3f} GiB = {ratio:.2f}x the map '
              f'(target <= 1.5x: {"met" if ratio <= 1.5 else "MISSED"})')


if __name__ == '__main__':
    main()
