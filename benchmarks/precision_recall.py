"""Recall@1/5 of jist-r18 at fp32, bf16 and int8 on real data, and how often the top-1 matches
agree with fp32.

Usage::

    python benchmarks/precision_recall.py [--data ../shared/data] [--size 240 320]
        [--frames 200] [--threads 2]

jist-r18 has SEEDED RANDOM WEIGHTS here (no pretrained weights on this machine): absolute
recall is meaningless; what matters is whether the reduced precisions change the rankings.
For each pair (Gardens Point Walking day_left -> night_right, Nordland summer -> winter, the
first ``--frames`` frames of each run), the reference and query runs are encoded at

- fp32 (torch, channels-last),
- bf16 (torch autocast; emulated, and so slow, on a CPU without avx512_bf16/amx_bf16),
- int8 (the statically quantised ONNX graph, calibrated on 16 frames of the reference run),

and matched with ``single`` and ``seqgem`` L = 5 (same-index ground truth +-2 for Gardens
Point, +-0 for Nordland). The parity gate's verdict is printed for each reduced precision; a
refused path is still measured (and says so), to show what the gate protects against.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_seq_ros.config import load_config, replace  # noqa: E402
from vpr_seq_ros.encoders import precision as precision_module  # noqa: E402
from vpr_seq_ros.encoders.jist import build_jist_encoder  # noqa: E402
from vpr_seq_ros.errors import ModelError  # noqa: E402
from vpr_seq_ros.models.onnx_export import export_onnx  # noqa: E402
from vpr_seq_ros.pipeline import encode_run, evaluate_encoded  # noqa: E402
from vpr_seq_ros.refmap import ReferenceMap, make_manifest  # noqa: E402
from vpr_seq_ros.sources import open_source  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'
PAIRS = (('gardens_point_walking', 'day_left', 'night_right', 2),
         ('nordland_64x32', 'summer', 'winter', 0))


def _subset(src: Path, dst: Path, count: int) -> Path:
    dst.mkdir(parents=True)
    for path in sorted(p for p in src.iterdir() if p.suffix in ('.png', '.jpg'))[:count]:
        (dst / path.name).symlink_to(path)
    return dst


def _int8_card(cfg_dict: dict, calibration: Path, out: Path) -> tuple[Path, str]:
    cfg = load_config(overrides={**cfg_dict, 'encoder.precision': 'int8',
                                 'encoder.calibration_run': str(calibration)}).encoder
    try:
        return export_onnx(cfg, out), 'passed'
    except ModelError as err:
        verdict = 'REFUSED: ' + str(err).split(': ', 1)[1].split(' (min')[0]
    gate = precision_module.ParityReport.raise_if_failed
    precision_module.ParityReport.raise_if_failed = lambda self: None  # type: ignore
    try:
        return export_onnx(cfg, out), verdict + ' (measured anyway)'
    finally:
        precision_module.ParityReport.raise_if_failed = gate  # type: ignore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--size', type=int, nargs=2, default=(240, 320), metavar=('H', 'W'))
    parser.add_argument('--frames', type=int, default=200)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    height, width = args.size
    caps = precision_module.detect_capabilities()
    print(f'jist-r18 SEEDED RANDOM WEIGHTS at {height}x{width}; {caps.describe()}; load '
          f'average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs')
    print()
    print('| pair | precision | gate | method | R@1 | R@5 | top-1 same as fp32 | '
          'min cosine to fp32 |')
    print('|---|---|---|---|---:|---:|---:|---:|')
    base = {'encoder.name': 'jist-r18', 'encoder.random_init': True,
            'encoder.input_height': height, 'encoder.input_width': width,
            'sequence.length': 5}
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, ref_name, query_name, tolerance in PAIRS:
            root = args.data / dataset
            if not root.is_dir():
                continue
            ref = _subset(root / ref_name, Path(tmp) / dataset / ref_name, args.frames)
            query = _subset(root / query_name, Path(tmp) / dataset / query_name, args.frames)
            cfg = load_config(overrides={**base,
                                         'evaluation.tolerance_frames': tolerance})
            card, int8_verdict = _int8_card(base, ref, Path(tmp) / dataset / 'jist.onnx')
            onnx_cfg = load_config(overrides={**base, 'encoder.weights': str(card),
                                              'encoder.random_init': False,
                                              'encoder.runtime': 'onnx'}).encoder
            encoders = {
                'fp32': (build_jist_encoder(cfg.encoder, args.threads, 'fp32'), '-'),
                'bf16': (build_jist_encoder(cfg.encoder, args.threads, 'bf16'), None),
                'int8': (build_jist_encoder(onnx_cfg, args.threads, 'int8'), int8_verdict),
            }
            runs = {p: (encode_run(open_source(ref), e, 16), encode_run(open_source(query),
                                                                         e, 16))
                    for p, (e, _) in encoders.items()}
            top1: dict[str, np.ndarray] = {}
            for precision, (encoder, verdict) in encoders.items():
                ref_run, query_run = runs[precision]
                if verdict is None:  # bf16: the start-up gate, on 16 reference frames
                    frames = [f.image for _, f in zip(range(16), open_source(ref))]
                    report = precision_module.check_parity(
                        encoders['fp32'][0].encode(frames), encoder.encode(frames), 'bf16')
                    verdict = 'passed' if report.passed else 'REFUSED: ' + '; '.join(
                        report.failures()) + ' (measured anyway)'
                both = np.concatenate([ref_run.descriptors, query_run.descriptors])
                fp32 = np.concatenate([runs['fp32'][0].descriptors,
                                       runs['fp32'][1].descriptors])
                cosine = float(((both * fp32).sum(1) / (np.linalg.norm(both, axis=1)
                                                        * np.linalg.norm(fp32, axis=1))).min())
                refmap = ReferenceMap(ref_run, make_manifest(
                    encoder.settings(), 5, str(ref), 'float32', len(ref_run),
                    ref_run.descriptors.shape[1]))
                for method in ('single', 'seqgem'):
                    run_cfg = replace(cfg, **{'matching.method': method})
                    result = evaluate_encoded(refmap, query_run, run_cfg, encoder.seqgem_p,
                                              keep_matrix=False)
                    best = result.output.matches.ref_indices[:, 0]
                    if precision == 'fp32':
                        top1[method] = best
                    same = float((best == top1[method]).mean())
                    m = result.metrics
                    print(f'| {dataset} {ref_name} -> {query_name} ({args.frames} frames) '
                          f'| {precision} | {verdict} | {method} | {m.recall_at[1]:.3f} '
                          f'| {m.recall_at[5]:.3f} | {same:.3f} | {cosine:.6f} |', flush=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
