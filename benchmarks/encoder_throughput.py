"""Frame-encoder throughput: the official evaluation's way versus this project's streaming encoder.

Usage::

    python benchmarks/encoder_throughput.py [--frames 12] [--threads 2] [--seq-len 5]

All rows use the same **seeded random** JIST ResNet-18 weights (no weights are downloaded; speed
does not depend on the values) on seeded 480x640 RGB frames, and their descriptors are checked
to agree. Rows:

(a) the official JIST evaluation: eager NCHW fp32 torch; the test set is made of overlapping
    windows of L frames and every window is encoded in full, so each new frame costs L frame
    encodings (one new window; here one window per forward pass, where the official loader
    stacks several windows per batch, which barely changes the per-frame cost on a CPU);
(b) this project's torch encoder (channels-last, inference mode), each frame encoded once as it
    arrives (batch 1, as the ROS node does);
(c) the same through onnxruntime (the exported graph, product session settings).

Frames per second count new frames (a robot's camera frames), so (a) is windows per second.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_seq_ros.config import EncoderConfig  # noqa: E402
from vpr_seq_ros.encoders.jist import build_jist_encoder  # noqa: E402
from vpr_seq_ros.models.onnx_export import export_onnx  # noqa: E402

HEIGHT, WIDTH = 480, 640
SETTLE_S = 0.3


def _frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    frames = []
    for i in range(count):
        base = 127 + 90 * np.sin(xx / (20 + i) + yy / 31 + i)
        img = base[:, :, None] + rng.normal(0, 20, size=(HEIGHT, WIDTH, 3))
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


class Official:
    """The official evaluation's way: eager NCHW fp32, ToTensor + Normalize per frame, and
    every window of L frames encoded in full."""

    def __init__(self) -> None:
        import torch

        from vpr_seq_ros.models.jist import new_jist_net
        from vpr_seq_ros.models.resnet import IMAGENET_MEAN, IMAGENET_STD

        self.torch = torch
        self.net = new_jist_net(seed=0).eval()  # the same seeded weights as random_init
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def window(self, batch: list[np.ndarray]) -> np.ndarray:
        """``(L, 512)`` descriptors of one window (frames already 480x640: no resize)."""
        torch = self.torch
        x = torch.stack([(torch.from_numpy(f).permute(2, 0, 1).float().div(255) - self.mean)
                         / self.std for f in batch])
        with torch.no_grad():
            return self.net.model(x).numpy()


def _timed(fn, *args):  # noqa: ANN001, ANN202 - benchmark helper
    # Let the other runtime's idle worker threads stop spin-waiting first: torch's OpenMP pool
    # and onnxruntime's pool both spin for a while after a call, which would steal the cores
    # from the next row and measure the interleaving rather than the encoder.
    time.sleep(SETTLE_S)
    tic = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - tic, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=15,
                        help='frames in the run (default 15; frames - L + 1 of them are timed)')
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op threads of torch and onnxruntime (default 2)')
    parser.add_argument('--seq-len', type=int, default=5, help='sequence length L (default 5)')
    args = parser.parse_args()
    if args.frames < args.seq_len:
        parser.error('--frames must be at least --seq-len')

    import torch

    torch.set_num_threads(args.threads)
    frames = _frames(args.frames)
    print(f'JIST ResNet-18/512 frame encoder, SEEDED RANDOM WEIGHTS (speed only), '
          f'{HEIGHT}x{WIDTH} frames, {args.frames} frames, L = {args.seq_len}, '
          f'{args.threads} threads, torch {torch.__version__}, load average before start '
          f'{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')

    official = Official()
    torch_cfg = EncoderConfig(name='jist-r18', random_init=True, batch_size=1)
    torch_encoder = build_jist_encoder(torch_cfg, args.threads)
    tmp = tempfile.TemporaryDirectory()
    card = export_onnx(torch_cfg, Path(tmp.name) / 'jist.onnx', HEIGHT, WIDTH)
    onnx_encoder = build_jist_encoder(
        EncoderConfig(name='jist-r18', weights=str(card), runtime='onnx', batch_size=1),
        args.threads)

    # The first L - 1 frames fill the first window (untimed, also warm-up). Then every new
    # frame is one round: (a) encodes the new window, (b) and (c) the new frame. The rows are
    # interleaved so that they share whatever else the machine is doing.
    seq_len = args.seq_len
    reference = np.empty((args.frames, 512), dtype=np.float32)
    out_b = np.empty_like(reference)
    out_c = np.empty_like(reference)
    reference[:seq_len] = official.window(frames[:seq_len])
    out_b[:seq_len - 1] = torch_encoder.encode(frames[:seq_len - 1])
    out_c[:seq_len - 1] = onnx_encoder.encode(frames[:seq_len - 1])
    times: dict[str, list[float]] = {'a': [], 'b': [], 'c': []}
    for i in range(seq_len - 1, args.frames):
        t, window = _timed(official.window, frames[i - seq_len + 1:i + 1])
        times['a'].append(t)
        reference[i] = window[-1]
        t, out = _timed(torch_encoder.encode, [frames[i]])
        times['b'].append(t)
        out_b[i] = out[0]
        t, out = _timed(onnx_encoder.encode, [frames[i]])
        times['c'].append(t)
        out_c[i] = out[0]
    tmp.cleanup()

    diff_b = float(np.abs(out_b - reference).max())
    diff_c = float(np.abs(out_c - reference).max())
    median = {k: float(np.median(v)) for k, v in times.items()}
    rows = [
        ('(a) official evaluation: eager NCHW fp32, every window re-encoded', 'torch',
         seq_len, 'a', None),
        ('(b) this project, streaming, channels-last', 'torch', 1, 'b', diff_b),
        ('(c) this project, streaming, exported graph', 'onnxruntime', 1, 'c', diff_c),
    ]
    print()
    print(f'median over {len(times["a"])} new frames (rows interleaved):')
    print()
    print('| mode | runtime | encodings per new frame | ms per new frame | new frames/s '
          '| x (a) | max abs diff vs (a) |')
    print('|---|---|---:|---:|---:|---:|---:|')
    for mode, runtime, per_frame, key, diff in rows:
        diff_text = '-' if diff is None else f'{diff:.1e}'
        print(f'| {mode} | {runtime} | {per_frame} | {1000 * median[key]:.0f} '
              f'| {1 / median[key]:.2f} | {median["a"] / median[key]:.1f} | {diff_text} |')
    ok = max(diff_b, diff_c) <= 1e-4
    print()
    print(f'descriptors agree across rows (max abs diff <= 1e-4): {"yes" if ok else "NO"}')
    speedup = median['a'] / median['c']
    print(f'target (c) >= 10x (a): {"met" if speedup >= 10 else "NOT met"} ({speedup:.1f}x); '
          f'load average now {os.getloadavg()[0]:.2f}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
