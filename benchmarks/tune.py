"""Choose the ``seqslam`` preset on validation frames and report it on held-out frames.

Pairs (``../shared/data``): Nordland summer -> winter (validation frames 0-599, held out
600-1199, R@1 within +-1 frame) and Gardens Point Walking day_right -> night_right (validation
0-99, held out 100-199, within +-2 frames). Each range is matched against the map run's frames of
the same range, trailing (causal) windows, slope 1. The sweep (``vpr_seq_ros.tuning.tune``) covers
thumbnail size, patch size, frame distance, contrast window and sequence length; a setting is
chosen by its mean validation R@1 over the pairs and lengths given by ``--choose-on``; ``--swap``
runs the other fold (validation and held-out ranges exchanged).

Run: ``python benchmarks/tune.py [--data ../shared/data] [--choose-on nordland]``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

from vpr_seq_ros.config import load_config
from vpr_seq_ros.tuning import Candidate, TuneGrid, TunePair, load_thumbnails, tune

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


def cpu_flags() -> str:
    """SIMD flags of this CPU (avx2 / avx512* / amx*), for the record."""
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('flags'):
                flags = line.split(':', 1)[1].split()
                return ' '.join(f for f in flags if f == 'avx2' or f.startswith(('avx512',
                                                                                 'amx'))) or '-'
    except OSError:
        pass
    return platform.processor() or '?'


def swap(first: tuple[int, int], second: tuple[int, int],
         swapped: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """(validation, held-out) ranges of a fold."""
    return (second, first) if swapped else (first, second)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--choose-on', choices=('nordland', 'both'), default='nordland',
                        help='pairs whose validation frames choose the setting')
    parser.add_argument('--quick', action='store_true', help='a small grid (a smoke test)')
    parser.add_argument('--swap', action='store_true',
                        help='the other fold: validation and held-out ranges swapped')
    args = parser.parse_args()
    grid = TuneGrid(sizes=((64, 32), (32, 16)), patch_sizes=(8, 16), contrast_windows=(5, 10),
                    lengths=(10,)) if args.quick else TuneGrid()
    started = time.perf_counter()
    pairs = []
    nordland = args.data / 'nordland_64x32'
    gardens = args.data / 'gardens_point_walking'
    if nordland.is_dir():
        pairs.append(TunePair('nordland summer->winter',
                              load_thumbnails(nordland / 'summer', grid.sizes),
                              load_thumbnails(nordland / 'winter', grid.sizes),
                              *swap((0, 600), (600, 1200), args.swap), 1))
    gp = None
    if gardens.is_dir():
        gp = TunePair('gardens point day_right->night_right',
                      load_thumbnails(gardens / 'day_right', grid.sizes),
                      load_thumbnails(gardens / 'night_right', grid.sizes),
                      *swap((0, 100), (100, 200), args.swap), 2)
        if args.choose_on == 'both' or not pairs:
            pairs.append(gp)
    if not pairs:
        raise SystemExit(f'no dataset under {args.data}; pass --data')
    print(f'CPU flags: {cpu_flags()}; images loaded in {time.perf_counter() - started:.1f} s')
    baseline = preset_candidate()
    report = tune(pairs, grid, baselines=[baseline], progress=lambda s: print('  ' + s,
                                                                                flush=True))
    print(f'\nchosen on validation frames of: {", ".join(report.pairs)}; '
          f'sweep took {time.perf_counter() - started:.0f} s\n')
    lengths = ' | '.join(f'L={n}' for n in report.lengths)
    print(f'| setting | split | pair | {lengths} |')
    print('|---|---|---|' + '---:|' * len(report.lengths))
    for cand in [report.chosen] + [baseline] * (baseline != report.chosen):
        tag = 'chosen ' if cand == report.chosen else 'preset '
        for split, table in (('validation', report.validation), ('held-out', report.heldout)):
            for p, name in enumerate(report.pairs):
                cells = ' | '.join(f'{v:.3f}' for v in table[cand][p])
                print(f'| {tag}{cand.label()} | {split} | {name} | {cells} |')
    if gp is not None and gp not in pairs:
        print('\nGardens Point day_right -> night_right (not used to choose):')
        check = tune([gp], TuneGrid(sizes=(report.chosen.size, baseline.size),
                                    patch_sizes=tuple({report.chosen.patch_size,
                                                       baseline.patch_size}),
                                    metrics=tuple({report.chosen.metric, baseline.metric}),
                                    contrast_windows=tuple({report.chosen.contrast_window,
                                                            baseline.contrast_window}),
                                    lengths=grid.lengths), baselines=[report.chosen, baseline])
        for cand in (report.chosen, baseline):
            for split, table in (('validation', check.validation), ('held-out', check.heldout)):
                cells = ' | '.join(f'{v:.3f}' for v in table[cand][0])
                print(f'| {cand.label()} | {split} | {gp.name} | {cells} |')
    print('\ntop 10 on validation (mean R@1 over pairs and lengths):')
    for cand, score in report.ranking()[:10]:
        print(f'  {score:.3f}  {cand.label()}')
    print('\npreset keys of the chosen setting:', report.chosen.preset())


if __name__ == '__main__':
    main()
