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
(c) the same through onnxruntime (the exported graph, product session settings);
(d) (b) under bf16 autocast (``encoder.precision: bf16``): fast only where the CPU has
    avx512_bf16/amx_bf16 and oneDNN uses them, emulated (and slower) elsewhere: the table says
    which;
(e) (c) with the statically quantised int8 graph (``encoder.precision: int8``), calibrated on
    the run's own frames; if the parity gate refuses it, the row is timed anyway and says so.

Each reduced-precision row reports its max abs difference and minimum cosine to (a) and the
parity gate's verdict. Frames per second count new frames (a robot's camera frames), so (a) is
windows per second.
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
from vpr_seq_ros.encoders import precision as precision_module  # noqa: E402
from vpr_seq_ros.encoders.jist import build_jist_encoder  # noqa: E402
from vpr_seq_ros.errors import ModelError  # noqa: E402
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


def _export_int8(frames: list[np.ndarray], folder: Path) -> tuple[Path, str]:
    """Export seeded random weights with an int8 graph calibrated on ``frames``; if the parity
    gate refuses it, export again with the gate disabled (speed only) and say why."""
    from PIL import Image

    calibration = folder / 'calibration'
    calibration.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(calibration / f'{i:03d}.png')
    cfg = EncoderConfig(name='jist-r18', random_init=True, precision='int8',
                        calibration_run=str(calibration), calibration_frames=len(frames))
    try:
        return export_onnx(cfg, folder / 'jist.onnx', HEIGHT, WIDTH), 'passed'
    except ModelError as err:
        verdict = 'REFUSED (' + '; '.join(str(err).split(': ', 1)[1].split(' (min')[:1]) + \
            '); timed for speed only'
    gate = precision_module.ParityReport.raise_if_failed
    precision_module.ParityReport.raise_if_failed = lambda self: None  # type: ignore[method-assign]
    try:
        return export_onnx(cfg, folder / 'jist.onnx', HEIGHT, WIDTH), verdict
    finally:
        precision_module.ParityReport.raise_if_failed = gate  # type: ignore[method-assign]


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--frames', type=int, default=15,
                        help='frames in the run (default 15; frames - L + 1 of them are timed)')
    parser.add_argument('--threads', type=int, default=2,
                        help='intra-op threads of torch and onnxruntime (default 2)')
    parser.add_argument('--seq-len', type=int, default=5, help='sequence length L (default 5)')
    parser.add_argument('--no-reduced', action='store_true',
                        help='skip the bf16 and int8 rows')
    args = parser.parse_args()
    if args.frames < args.seq_len:
        parser.error('--frames must be at least --seq-len')

    import torch

    torch.set_num_threads(args.threads)
    caps = precision_module.detect_capabilities()
    frames = _frames(args.frames)
    print(f'JIST ResNet-18/512 frame encoder, SEEDED RANDOM WEIGHTS (speed only), '
          f'{HEIGHT}x{WIDTH} frames, {args.frames} frames, L = {args.seq_len}, '
          f'{args.threads} threads, torch {torch.__version__}, load average before start '
          f'{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
    print(caps.describe())
    bf16_note = ('native (avx512_bf16/amx_bf16 + oneDNN)' if caps.cpu_bf16 else
                 'UNSUPPORTED on this CPU (no avx512_bf16/amx_bf16): emulated')
    int8_note = ('VNNI/AMX int8 kernels' if caps.cpu_vnni else
                 'no VNNI/AMX on this CPU: AVX2 int8 kernels')
    print(f'bf16: {bf16_note}; int8: {int8_note}')

    official = Official()
    torch_cfg = EncoderConfig(name='jist-r18', random_init=True, batch_size=1)
    encoders = {'b': build_jist_encoder(torch_cfg, args.threads)}
    tmp = tempfile.TemporaryDirectory()
    card = export_onnx(torch_cfg, Path(tmp.name) / 'fp32' / 'jist.onnx', HEIGHT, WIDTH)
    onnx_cfg = EncoderConfig(name='jist-r18', weights=str(card), runtime='onnx', batch_size=1)
    encoders['c'] = build_jist_encoder(onnx_cfg, args.threads)
    verdicts: dict[str, str] = {}
    if not args.no_reduced:
        encoders['d'] = build_jist_encoder(torch_cfg, args.threads, 'bf16')
        int8_folder = Path(tmp.name) / 'int8'
        int8_folder.mkdir()
        int8_card, verdicts['e'] = _export_int8(frames, int8_folder)
        encoders['e'] = build_jist_encoder(
            EncoderConfig(name='jist-r18', weights=str(int8_card), runtime='onnx',
                          batch_size=1), args.threads, 'int8')

    # The first L - 1 frames fill the first window (untimed, also warm-up). Then every new
    # frame is one round: (a) encodes the new window, the others the new frame. The rows are
    # interleaved so that they share whatever else the machine is doing.
    seq_len = args.seq_len
    reference = np.empty((args.frames, 512), dtype=np.float32)
    outputs = {k: np.empty_like(reference) for k in encoders}
    reference[:seq_len] = official.window(frames[:seq_len])
    for key, encoder in encoders.items():
        outputs[key][:seq_len - 1] = encoder.encode(frames[:seq_len - 1])
    times: dict[str, list[float]] = {k: [] for k in ('a', *encoders)}
    for i in range(seq_len - 1, args.frames):
        t, window = _timed(official.window, frames[i - seq_len + 1:i + 1])
        times['a'].append(t)
        reference[i] = window[-1]
        for key, encoder in encoders.items():
            t, out = _timed(encoder.encode, [frames[i]])
            times[key].append(t)
            outputs[key][i] = out[0]
    tmp.cleanup()

    if 'd' in encoders:
        report = precision_module.check_parity(outputs['b'], outputs['d'], 'bf16')
        verdicts['d'] = 'passed' if report.passed else 'REFUSED (' + '; '.join(
            report.failures()) + ')'
    median = {k: float(np.median(v)) for k, v in times.items()}
    labels = {
        'a': ('(a) official evaluation: eager NCHW fp32, every window re-encoded', 'torch',
              seq_len),
        'b': ('(b) this project, streaming, channels-last, fp32', 'torch', 1),
        'c': ('(c) this project, streaming, exported graph, fp32', 'onnxruntime', 1),
        'd': (f'(d) (b) with bf16 autocast, {bf16_note}', 'torch', 1),
        'e': (f'(e) (c) with the int8 graph, {int8_note}', 'onnxruntime', 1),
    }
    print()
    print(f'median over {len(times["a"])} new frames (rows interleaved):')
    print()
    print('| mode | runtime | encodings per new frame | ms per new frame | new frames/s '
          '| x (a) | max abs diff vs (a) | min cosine vs (a) | parity gate |')
    print('|---|---|---:|---:|---:|---:|---:|---:|---|')
    for key in times:
        mode, runtime, per_frame = labels[key]
        if key == 'a':
            diff_text = cos_text = '-'
        else:
            diff_text = f'{float(np.abs(outputs[key] - reference).max()):.1e}'
            cos_text = f'{_min_cosine(outputs[key], reference):.6f}'
        print(f'| {mode} | {runtime} | {per_frame} | {1000 * median[key]:.0f} '
              f'| {1 / median[key]:.2f} | {median["a"] / median[key]:.1f} | {diff_text} '
              f'| {cos_text} | {verdicts.get(key, "-")} |')
    ok = max(float(np.abs(outputs[k] - reference).max()) for k in ('b', 'c')) <= 1e-4
    print()
    print(f'fp32 descriptors agree across rows (max abs diff <= 1e-4): {"yes" if ok else "NO"}')
    speedup = median['a'] / median['c']
    print(f'target (c) >= 10x (a): {"met" if speedup >= 10 else "NOT met"} ({speedup:.1f}x); '
          f'load average now {os.getloadavg()[0]:.2f}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
