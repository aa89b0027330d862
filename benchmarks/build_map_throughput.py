"""Map building throughput against the encoder's own: is decoding hidden behind encoding?

Usage::

    python benchmarks/build_map_throughput.py [--data ../shared/data] [--frames 32]
        [--runtime torch|onnx] [--threads 2]

``jist-r18`` with SEEDED RANDOM weights (speed only) at 480x640 on the first ``--frames``
frames of Gardens Point Walking ``day_left`` (960x540 JPEG). Rows:

(a) the encoder alone on frames already decoded (``encoder.encode`` in batches of 16): the
    ceiling;
(b) ``pipeline.encode_run`` on the image folder, frames read one batch ahead in a background
    thread (what ``build-map`` runs);
(c) the same with reading in the encoding thread (no read-ahead), for comparison.

The rows run interleaved for ``--rounds`` rounds and the best of each is kept (the machine is
shared). The issue-12 target is (b) >= 80% of (a). Prints the CPU flags and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_seq_ros import pipeline  # noqa: E402
from vpr_seq_ros.config import EncoderConfig  # noqa: E402
from vpr_seq_ros.encoders import build_encoder  # noqa: E402
from vpr_seq_ros.encoders.precision import detect_capabilities  # noqa: E402
from vpr_seq_ros.models.onnx_export import export_onnx  # noqa: E402
from vpr_seq_ros.sources import open_source  # noqa: E402
from vpr_seq_ros.sources.images import load_rgb  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
BATCH = 16


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--frames', type=int, default=32)
    parser.add_argument('--runtime', choices=('torch', 'onnx'), default='onnx')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--rounds', type=int, default=3,
                        help='interleaved rounds; the best of each row is kept (default 3)')
    args = parser.parse_args()
    images = sorted((args.data / 'gardens_point_walking' / 'day_left').glob('*.jpg'))
    if not images:
        raise SystemExit(f'{args.data}/gardens_point_walking/day_left not found; pass --data')
    print(f'jist-r18 SEEDED RANDOM WEIGHTS (speed only), 480x640, {args.runtime} runtime, '
          f'{args.threads} threads, batch {BATCH}, {args.frames} Gardens Point frames; '
          f'{detect_capabilities().describe()}; load average {os.getloadavg()[0]:.2f} on '
          f'{os.cpu_count()} CPUs')
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / 'run'
        folder.mkdir()
        for path in images[:args.frames]:
            shutil.copy(path, folder / path.name)
        cfg = EncoderConfig(name='jist-r18', random_init=True, batch_size=BATCH)
        if args.runtime == 'onnx':
            card = export_onnx(cfg, Path(tmp) / 'jist.onnx')
            cfg = EncoderConfig(name='jist-r18', weights=str(card), runtime='onnx',
                                batch_size=BATCH)
        encoder = build_encoder(cfg, num_threads=args.threads)
        decoded = [load_rgb(p) for p in sorted(folder.iterdir())]
        encoder.encode(decoded[:2])  # warm-up

        def alone() -> None:
            for i in range(0, len(decoded), BATCH):
                encoder.encode(decoded[i:i + BATCH])

        def run() -> None:
            pipeline.encode_run(open_source(folder), encoder, BATCH)

        def run_inline() -> None:
            real = pipeline.prefetched
            pipeline.prefetched = lambda frames, depth: (f for f in frames)  # type: ignore
            try:
                run()
            finally:
                pipeline.prefetched = real

        modes = (('(a) encoder alone, frames decoded beforehand', alone),
                 ('(b) encode_run, read-ahead thread (build-map)', run),
                 ('(c) encode_run, reading inline', run_inline))
        best = [0.0] * len(modes)
        for _ in range(args.rounds):  # interleaved: the rows share the machine's load
            for i, (_, fn) in enumerate(modes):
                started = time.perf_counter()
                fn()
                best[i] = max(best[i], args.frames / (time.perf_counter() - started))
        rows = [(label, fps) for (label, _), fps in zip(modes, best)]
    ceiling = rows[0][1]
    print()
    print('| mode | frames/s | % of (a) |')
    print('|---|---:|---:|')
    for label, fps in rows:
        print(f'| {label} | {fps:.2f} | {100 * fps / ceiling:.0f} |')
    print()
    print(f'target (b) >= 80% of (a): {"met" if rows[1][1] >= 0.8 * ceiling else "NOT met"}; '
          f'load average now {os.getloadavg()[0]:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
