"""Calibrated confidence: fit on validation frames, expected calibration error on held-out ones.

For each pair the ``seqslam`` preset matches a validation range and a held-out range of the query
run against the map run's frames of the same range (trailing windows). Every query's top-1 gives
a feature (``score``: standard deviations of its distance below its column's mean, as the node
publishes; or the ``distance``) and whether it is right (within the tolerance). A calibration
(``vpr_seq_ros.calibration``: isotonic or logistic) is fitted on validation and applied to the
held-out matches; the table gives the held-out expected calibration error (10 equal-width bins)
and the reliability curve of the isotonic map on the score.

Run: ``python benchmarks/calibration.py [--data ../shared/data] [--lengths 10 20] [--swap]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vpr_seq_ros.calibration import distinctiveness, fit_calibration, reliability
from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders import build_encoder
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.pipeline import encode_run
from vpr_seq_ros.sources import open_source

_HERE = Path(__file__).resolve()
DEFAULT_DATA = next((p / 'shared' / 'data' for p in _HERE.parents[2:4]
                     if (p / 'shared' / 'data').is_dir()), _HERE.parents[2] / 'shared' / 'data')
PAIRS = (
    ('nordland summer->winter', 'nordland_64x32', 'summer', 'winter', (0, 600), (600, 1200), 1),
    ('gardens point day_right->night_right', 'gardens_point_walking', 'day_right',
     'night_right', (0, 100), (100, 200), 2),
)


def top1_features(ref: np.ndarray, query: np.ndarray, settings: SeqMatchSettings,
                  tolerance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score, distance and correctness of every query's top-1 (queries with a window).

    Frames correspond by index; a top-1 within ``tolerance`` frames of the query is right.
    """
    result = seqmatch_batch(ref, query, settings, top_k=1, keep_matrix=True)
    valid = result.matches.valid
    top = result.matches.ref_indices[:, 0]
    score = distinctiveness(result.matrix, np.where(valid, top, -1))
    distance = result.matches.distances[:, 0]
    correct = np.abs(top - np.arange(len(top))) <= tolerance
    return score[valid], distance[valid], correct[valid]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--lengths', type=int, nargs='+', default=[10, 20])
    parser.add_argument('--bins', type=int, default=10)
    parser.add_argument('--swap', action='store_true',
                        help='the other fold: fit on the second halves, test on the first')
    args = parser.parse_args()
    cfg = load_config('seqslam')
    encoder = build_encoder(cfg.encoder)
    contrast = cfg.matching.contrast
    halves = 'second halves, held out: first' if args.swap else 'first halves, held out: second'
    print('seqslam preset, trailing windows; calibration fitted on validation frames, ECE '
          f'({args.bins} equal-width bins) on held-out frames (validation: {halves}; '
          '"constant" predicts the validation accuracy for every match)\n')
    print('| pair | L | feature | model | val n | val acc | held-out n | held-out acc | '
          'held-out mean P | held-out ECE |')
    print('|---|---:|---|---|---:|---:|---:|---:|---:|---:|')
    curves = []
    fitted: dict[tuple[str, int], dict[str, tuple]] = {}
    for name, folder, ref_name, query_name, val, held, tol in PAIRS:
        if args.swap:
            val, held = held, val
        if not (args.data / folder).is_dir():
            continue
        ref = encode_run(open_source(args.data / folder / ref_name), encoder).descriptors
        query = encode_run(open_source(args.data / folder / query_name), encoder).descriptors
        for length in args.lengths:
            settings = SeqMatchSettings(length=length, metric=cfg.matching.distance,
                                        slopes=tuple(cfg.matching.slopes),
                                        contrast_window=contrast.window if contrast.enabled
                                        else None)
            splits = {}
            for split, (lo, hi) in (('val', val), ('held', held)):
                splits[split] = top1_features(ref[lo:hi], query[lo:hi], settings, tol)
            fitted[(name, length)] = splits
            for f, feature in enumerate(('score', 'distance')):
                for model in ('isotonic', 'logistic'):
                    cal = fit_calibration(splits['val'][f], splits['val'][2], feature, model)
                    prob = cal(splits['held'][f])
                    rel = reliability(prob, splits['held'][2], args.bins)
                    print(f'| {name} | {length} | {feature} | {model} | {cal.num_samples} | '
                          f'{cal.accuracy:.3f} | {len(prob)} | {splits["held"][2].mean():.3f} | '
                          f'{prob.mean():.3f} | {rel.ece:.3f} |', flush=True)
                    if feature == 'score' and model == 'isotonic':
                        curves.append((f'{name} L={length}', rel))
            constant = np.full(len(splits['held'][2]), splits['val'][2].mean())
            print(f'| {name} | {length} | - | constant | {len(splits["val"][2])} | '
                  f'{splits["val"][2].mean():.3f} | {len(constant)} | '
                  f'{splits["held"][2].mean():.3f} | {constant.mean():.3f} | '
                  f'{reliability(constant, splits["held"][2], args.bins).ece:.3f} |', flush=True)
    names = [p[0] for p in PAIRS]
    if all((n, length) in fitted for n in names for length in args.lengths):
        print('\nAcross datasets (fitted on one pair\'s validation frames, ECE on the other\'s '
              'held-out frames):')
        for src, dst in (names, names[::-1]):
            for length in args.lengths:
                for f, feature in enumerate(('score', 'distance')):
                    val_split = fitted[(src, length)]['val']
                    held = fitted[(dst, length)]['held']
                    cal = fit_calibration(val_split[f], val_split[2], feature, 'isotonic')
                    ece = reliability(cal(held[f]), held[2], args.bins).ece
                    print(f'- fit {src}, apply {dst}, L={length}, {feature}, isotonic: '
                          f'ECE {ece:.3f}')
    print('\nReliability curves (isotonic on score, held-out): bin: count, mean P, accuracy')
    for label, rel in curves:
        cells = [f'{rel.edges[b]:.1f}-{rel.edges[b + 1]:.1f}: {rel.counts[b]}, '
                 f'{rel.confidence[b]:.2f}, {rel.accuracy[b]:.2f}'
                 for b in range(len(rel.counts)) if rel.counts[b]]
        print(f'- {label}: ' + '; '.join(cells))


if __name__ == '__main__':
    main()
