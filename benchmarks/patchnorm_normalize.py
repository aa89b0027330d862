"""Euclidean sequence matching on patchnorm, with and without L2-normalised descriptors.

Nordland summer -> winter (64x32 grey, 1200 frames, same file name = same place), through the
public pipeline (``build_map`` + ``encode_run`` + ``evaluate_encoded``): ``seqmatch`` with
Euclidean distance, no contrast enhancement, trailing windows, same-index ground truth +-0.
``encoder.patchnorm.normalize: none`` is the raw patch-normalised thumbnail (every patch has
unit variance, so only flat patches, sky and borders, make the norms vary: up to 5x here);
the default ``auto`` is ``l2`` for Euclidean distance. The SeqSLAM preset (SAD + contrast,
``normalize: none``) is printed alongside to show it is unchanged.

Run: ``python benchmarks/patchnorm_normalize.py [--data ../shared/data] [--seq-len 5]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vpr_seq_ros.config import load_config  # noqa: E402
from vpr_seq_ros.encoders import build_encoder  # noqa: E402
from vpr_seq_ros.pipeline import build_map, encode_run, evaluate_encoded  # noqa: E402
from vpr_seq_ros.refmap import load_map  # noqa: E402
from vpr_seq_ros.sources import open_source  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--seq-len', type=int, default=5)
    args = parser.parse_args()
    root = args.data / 'nordland_64x32'
    if not root.is_dir():
        raise SystemExit(f'{root} not found; pass --data')
    rows = (
        ('seqmatch euclidean, normalize none', None,
         {'encoder.patchnorm.normalize': 'none'}),
        ('seqmatch euclidean, normalize auto (default: l2 for euclidean)', None, {}),
        ('seqslam preset (SAD + contrast, normalize none)', 'seqslam', {}),
    )
    print(f'Nordland summer -> winter, L = {args.seq_len}, same-index ground truth +-0')
    print()
    print('| setting | encoder settings | descriptor norms (min..max) | R@1 | R@5 |')
    print('|---|---|---|---:|---:|')
    with tempfile.TemporaryDirectory() as tmp:
        for row, (label, preset, changes) in enumerate(rows):
            cfg = load_config(preset, overrides={
                'sequence.length': args.seq_len, 'evaluation.tolerance_frames': 0,
                'evaluation.recall_at': [1, 5], **changes})
            refmap = load_map(build_map(root / 'summer', cfg, Path(tmp) / f'map{row}.npz'))
            query = encode_run(open_source(root / 'winter'), build_encoder(cfg.encoder))
            norms = np.linalg.norm(refmap.run.descriptors, axis=1)
            metrics = evaluate_encoded(refmap, query, cfg).metrics
            patch = cfg.encoder.patchnorm
            print(f'| {label} | {patch.width}x{patch.height}/{patch.patch_size}, '
                  f'{cfg.matching.distance}, normalize {patch.normalize} '
                  f'| {norms.min():.1f}..{norms.max():.1f} | {metrics.recall_at[1]:.3f} '
                  f'| {metrics.recall_at[5]:.3f} |', flush=True)


if __name__ == '__main__':
    main()
