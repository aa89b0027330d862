"""Choose the ``seqslam`` preset on validation frames and report it on held-out frames.

Pairs (``../shared/data``): Nordland summer -> winter (R@1 within +-1 frame) and Gardens Point
Walking day_right -> night_right (within +-2 frames), each cut in halves (Nordland 0-599 /
600-1199, Gardens Point 0-99 / 100-199). Each half is matched against the map run's frames of the
same half, trailing (causal) windows, slope 1. Fold 1 chooses on the first halves and reports the
second; fold 2 the reverse (``vpr_seq_ros.tuning.tune``: thumbnail size, patch size, frame
distance, contrast window, sequence length; a setting's objective is R@1 pooled over the pairs,
each validation query once, averaged over the lengths). The final choice (for the preset) is the
best mean objective over both folds' validation tables, i.e. on all frames here; the two folds'
held-out figures say how well such a choice carries over to frames it did not see.

Run: ``python benchmarks/tune.py [--data ../shared/data] [--choose-on both|nordland] [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vpr_seq_ros.config import load_config
from vpr_seq_ros.machine import cpu_line
from vpr_seq_ros.tuning import (Candidate, TuneGrid, TunePair, TuneReport, choose, load_thumbnails,
                                objective, tune)

_HERE = Path(__file__).resolve()
DEFAULT_DATA = next((p / 'shared' / 'data' for p in _HERE.parents[2:4]
                     if (p / 'shared' / 'data').is_dir()), _HERE.parents[2] / 'shared' / 'data')


def preset_candidate() -> Candidate:
    """The current ``seqslam`` preset as a candidate."""
    cfg = load_config('seqslam')
    pn = cfg.encoder.patchnorm
    contrast = cfg.matching.contrast
    return Candidate((pn.width, pn.height), pn.patch_size, cfg.matching.distance,
                     contrast.window if contrast.enabled else None)


def print_rows(label: str, cand: Candidate, report: TuneReport, split: str) -> None:
    table = report.validation if split == 'validation' else report.heldout
    for p, name in enumerate(report.pairs):
        lo, hi = getattr(report_pairs[name], split if split == 'validation' else 'heldout')
        cells = ' | '.join(f'{v:.3f}' for v in table[cand][p])
        print(f'| {label} {cand.label()} | {name} {lo}-{hi - 1} | {split} | {cells} |')


report_pairs: dict[str, TunePair] = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--choose-on', choices=('nordland', 'both'), default='both',
                        help='pairs whose validation frames choose the setting')
    parser.add_argument('--quick', action='store_true', help='a small grid (a smoke test)')
    args = parser.parse_args()
    grid = TuneGrid(sizes=((64, 32), (32, 16)), patch_sizes=(8, 16), contrast_windows=(5, 10),
                    lengths=(10,)) if args.quick else TuneGrid()
    started = time.perf_counter()
    runs = []
    nordland = args.data / 'nordland_64x32'
    gardens = args.data / 'gardens_point_walking'
    if nordland.is_dir():
        runs.append(('nordland summer->winter', load_thumbnails(nordland / 'summer', grid.sizes),
                     load_thumbnails(nordland / 'winter', grid.sizes), 1200, 1))
    if gardens.is_dir() and (args.choose_on == 'both' or not runs):
        runs.append(('gardens point day_right->night_right',
                     load_thumbnails(gardens / 'day_right', grid.sizes),
                     load_thumbnails(gardens / 'night_right', grid.sizes), 200, 2))
    if not runs:
        raise SystemExit(f'no dataset under {args.data}; pass --data')
    print(f'{cpu_line()}; images loaded in {time.perf_counter() - started:.1f} s')
    baseline = preset_candidate()
    reports = []
    for fold in (0, 1):
        pairs = []
        for name, ref, query, n, tol in runs:
            halves = ((0, n // 2), (n // 2, n))
            val, held = halves if fold == 0 else halves[::-1]
            pairs.append(TunePair(name, ref, query, val, held, tol))
        report_pairs.clear()
        report_pairs.update({p.name: p for p in pairs})
        print(f'\nfold {fold + 1}: validation ' +
              ', '.join(f'{p.name} {p.validation[0]}-{p.validation[1] - 1}' for p in pairs))
        report = tune(pairs, grid, baselines=[baseline],
                      progress=lambda s: print('  ' + s, flush=True))
        reports.append(report)
        lengths = ' | '.join(f'L={n}' for n in report.lengths)
        print(f'\n| fold {fold + 1} setting | frames | split | {lengths} |')
        print('|---|---|---|' + '---:|' * len(report.lengths))
        for tag, cand in (('chosen', report.chosen), ('preset', baseline)):
            print_rows(tag, cand, report, 'validation')
            print_rows(tag, cand, report, 'held-out')
        print('top 5 on validation: ' + '; '.join(f'{c.label()} {v:.3f}'
                                                  for c, v in report.ranking()[:5]))
    best, score = choose(reports)
    print(f'\nfinal choice on all frames (validation of both folds, each query once, mean over '
          f'lengths): {best.label()} ({score:.3f}; preset {baseline.label()}: '
          f'{choose_score(reports, baseline):.3f})')
    print('| setting | pair | first half L=' + ' | first half L='.join(
        str(n) for n in reports[0].lengths) + ' | second half L=' + ' | second half L='.join(
        str(n) for n in reports[0].lengths) + ' |')
    print('|---|---|' + '---:|' * (2 * len(reports[0].lengths)))
    for cand in (best, baseline):
        for p, name in enumerate(reports[0].pairs):
            first = reports[0].validation[cand][p]
            second = reports[1].validation[cand][p]
            cells = ' | '.join(f'{v:.3f}' for v in (*first, *second))
            print(f'| {cand.label()} | {name} | {cells} |')
    print('\npreset keys of the final choice:', best.preset())
    print(f'sweep took {time.perf_counter() - started:.0f} s')


def choose_score(reports: list[TuneReport], cand: Candidate) -> float:
    """Mean objective of one candidate over the folds' validation tables."""
    return float(sum(objective(r.validation[cand], r.weights) for r in reports) / len(reports))


if __name__ == '__main__':
    main()
