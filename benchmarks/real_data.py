"""Recall on the shared real datasets with the training-free SeqSLAM pipeline.

Nordland summer -> winter (64x32 grey, 1200 frames, same file name = same place) and Gardens
Point Walking day -> night (200 frames, same index = same place), through the public pipeline
(``build_map`` + ``evaluate``, exactly what ``vpr-seq build-map`` / ``vpr-seq evaluate`` run).
Prints a markdown table of Recall@1/5 per method, sequence length and tolerance.

Run: ``python benchmarks/real_data.py [--data ../shared/data]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vpr_seq_ros.config import Config, load_config, replace
from vpr_seq_ros.pipeline import build_map, encode_run, evaluate_encoded
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.refmap import load_map
from vpr_seq_ros.sources import open_source

DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared' / 'data'

PAIRS = (
    ('nordland_64x32', 'summer', 'winter', (0, 1)),
    ('gardens_point_walking', 'day_left', 'night_right', (0, 2)),
    ('gardens_point_walking', 'day_right', 'night_right', (0, 2)),
)
SETTINGS = (
    ('single (SAD + contrast)', {'matching.method': 'single'}),
    ('seqslam L=5', {'sequence.length': 5}),
    ('seqslam L=10', {'sequence.length': 10}),
    ('seqslam L=20', {'sequence.length': 20}),
    ('seqmatch euclidean L=10', {'sequence.length': 10, 'matching.distance': 'euclidean',
                                 'matching.contrast.enabled': False}),
    ('seqmatch euclidean + contrast L=10', {'sequence.length': 10,
                                            'matching.distance': 'euclidean'}),
    ('seqmatch euclidean L=10, L2-normalised (the euclidean default)',
     {'sequence.length': 10, 'matching.distance': 'euclidean',
      'matching.contrast.enabled': False, 'encoder.patchnorm.normalize': 'l2'}),
)


def run_pair(data: Path, dataset: str, ref: str, query: str, tolerances: tuple[int, ...],
             base: Config, workdir: Path) -> list[str]:
    runs: dict = {}
    rows = []
    for label, changes in SETTINGS:
        encoder = replace(base, **changes).encoder
        key = repr(encoder)
        if key not in runs:  # one map and query encoding per encoder setting
            cfg = replace(base, **changes)
            map_path = build_map(data / dataset / ref, cfg,
                                 workdir / f'{dataset}_{ref}_{len(runs)}.npz')
            runs[key] = (load_map(map_path),
                         encode_run(open_source(data / dataset / query), build_encoder(encoder)))
        refmap, encoded = runs[key]
        for tol in tolerances:
            cfg = replace(base, **changes, **{'evaluation.tolerance_frames': tol})
            started = time.perf_counter()
            m = evaluate_encoded(refmap, encoded, cfg).metrics
            rows.append(f'| {dataset} {ref} -> {query} | {label} | +-{tol} | '
                        f'{m.recall_at[1]:.3f} | {m.recall_at[5]:.3f} | '
                        f'{m.num_evaluated} | {time.perf_counter() - started:.1f} |')
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA,
                        help='folder holding nordland_64x32/ and gardens_point_walking/')
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f'{args.data} not found; pass --data')
    base = load_config('seqslam')
    pn, m = base.encoder.patchnorm, base.matching
    print(f'preset seqslam (patchnorm {pn.width}x{pn.height}/{pn.patch_size}, '
          f'{m.distance.upper()}, contrast +-{m.contrast.window}, trailing windows); '
          'ground truth: same index +- tolerance frames; the euclidean rows keep the preset\'s '
          'raw patch-normalised descriptors, except the last, which L2-normalises them as '
          'encoder.patchnorm.normalize auto does for euclidean\n')
    print('| pair | method | tolerance | R@1 | R@5 | queries | match s |')
    print('|---|---|---:|---:|---:|---:|---:|')
    with tempfile.TemporaryDirectory() as tmp:
        for dataset, ref, query, tolerances in PAIRS:
            if (args.data / dataset).is_dir():
                run_pair(args.data, dataset, ref, query, tolerances, base, Path(tmp))


if __name__ == '__main__':
    main()
