"""jist-r18 on a CUDA GPU at fp32, fp16 and bf16: batch-1 latency, batch throughput, parity.

Usage::

    python benchmarks/gpu_precision.py [--batch 32] [--repeats 50]

SEEDED RANDOM WEIGHTS (speed only) at 480x640, through the product's encoder
(``build_encoder`` with ``encoder.device: cuda`` and ``encoder.precision``), so each reduced
precision passes the same parity gate as in the node (cosine >= 0.999 and the same top-1 among
the calibration frames) before it is timed. Latency is per ``encode`` call of one frame
(preprocessing, host-to-device copy and synchronisation included); throughput is frames per
second at ``--batch``. Exits with a message, and status 0, on a machine without CUDA.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_seq_ros.config import EncoderConfig  # noqa: E402
from vpr_seq_ros.encoders import build_encoder  # noqa: E402
from vpr_seq_ros.encoders.precision import synthetic_frames  # noqa: E402
from vpr_seq_ros.errors import VprSeqError  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch', type=int, default=32)
    parser.add_argument('--repeats', type=int, default=50)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print('no CUDA device: nothing to measure (this benchmark is for a GPU machine)')
        return 0
    name = torch.cuda.get_device_name(0)
    print(f'{dt.date.today()} {name}, torch {torch.__version__}, jist-r18 SEEDED RANDOM '
          f'WEIGHTS, 480x640')
    frames = synthetic_frames(args.batch, 480, 640, seed=3)
    print()
    print('| precision | parity (min cosine, top-1 mismatches) | batch-1 ms (median) '
          f'| frames/s at batch {args.batch} |')
    print('|---|---|---:|---:|')
    for precision in ('fp32', 'fp16', 'bf16'):
        cfg = EncoderConfig(name='jist-r18', random_init=True, device='cuda',
                            precision=precision, batch_size=args.batch)
        try:
            encoder = build_encoder(cfg)
        except VprSeqError as err:
            print(f'| {precision} | refused: {err} | - | - |')
            continue
        parity = encoder.parity
        gate = ('-' if parity is None else
                f'{parity.min_cosine:.6f}, {parity.top1_mismatches}')
        for _ in range(5):  # warm-up: cuDNN autotuning, allocations
            encoder.encode(frames[:1])
        latencies = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            encoder.encode(frames[:1])
            latencies.append(time.perf_counter() - started)
        encoder.encode(frames)
        started = time.perf_counter()
        for _ in range(3):
            encoder.encode(frames)
        fps = 3 * len(frames) / (time.perf_counter() - started)
        print(f'| {precision} | {gate} | {1000 * float(np.median(latencies)):.2f} '
              f'| {fps:.0f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
