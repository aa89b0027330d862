"""Velocity search on Nordland summer -> winter under resampled query speeds.

The winter run is resampled into query runs of other speeds, each frame keeping its original place
(the rounded position) as ground truth: ``constant 1x``; ``drop every 4th`` (1.33x); ``smooth
0.8x-1.25x`` (speed ``exp(log(1.25) * sin(2 pi t / 120))``); ``constant 0.8x``. Fractional
positions are either repeated (nearest frame) or blended (the two frames around it mixed before
encoding). Every scheme of velocity search (slopes rounded to rows or interpolated between them;
slope scores raw or standardised per query over the reference anchors; a prior penalty for
slopes away from 1) runs with patchnorm 64x32 thumbnails (patch size of the ``seqslam`` preset
or ``--patch-size``), SAD, contrast window 10, trailing windows; R@1 counts a top-1 within
+-1 frame of the true place.

Run: ``python benchmarks/velocity.py [--data ../shared/data] [--length 10] [--patch-size 8]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from PIL import Image

from vpr_seq_ros.config import load_config
from vpr_seq_ros.encoders.patchnorm import patch_normalise
from vpr_seq_ros.evaluation import compute_metrics
from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_distances

_HERE = Path(__file__).resolve()
# ../shared/data from the repository (or from a worktree one level further down)
DEFAULT_DATA = next((p / 'shared' / 'data' for p in _HERE.parents[2:4]
                     if (p / 'shared' / 'data').is_dir()), _HERE.parents[2] / 'shared' / 'data')
FIVE = (0.8, 0.9, 1.0, 1.1, 1.25)
SEVEN = (0.75, 0.8, 0.9, 1.0, 1.1, 1.25, 1.33)
# (label, slopes, velocity_kernel, slope_scores, slope_penalty)
SCHEMES = (
    ('identity kernel (slope 1)', (1.0,), 'rounded', 'raw', 0.0),
    ('before: rounded, raw', (0.9, 1.0, 1.1), 'rounded', 'raw', 0.0),
    ('before: rounded, raw', FIVE, 'rounded', 'raw', 0.0),
    ('before: rounded, raw', SEVEN, 'rounded', 'raw', 0.0),
    ('rounded, standardised', FIVE, 'rounded', 'standardised', 0.0),
    ('rounded, standardised', SEVEN, 'rounded', 'standardised', 0.0),
    ('interpolated, raw', SEVEN, 'interpolated', 'raw', 0.0),
    ('interpolated, standardised', SEVEN, 'interpolated', 'standardised', 0.0),
    ('rounded, standardised, penalty 2', SEVEN, 'rounded', 'standardised', 2.0),
    ('rounded, standardised, penalty 3', FIVE, 'rounded', 'standardised', 3.0),
    ('rounded, standardised, penalty 3', SEVEN, 'rounded', 'standardised', 3.0),
    ('interpolated, standardised, penalty 2', FIVE, 'interpolated', 'standardised', 2.0),
    ('interpolated, standardised, penalty 2', SEVEN, 'interpolated', 'standardised', 2.0),
    ('interpolated, standardised, penalty 3', SEVEN, 'interpolated', 'standardised', 3.0),
)


def speed_profiles(m: int) -> dict[str, np.ndarray]:
    """Position (in original frames) of every resampled query frame, per profile.

    Integer positions pick a frame; fractional ones are repeated (``... repeat``: the frame at
    the rounded position) or blended (``... blend``: the two frames around it, mixed linearly
    before encoding). Each profile is ``(M',)`` float64, within ``[0, m - 1]``.
    """
    t = np.arange(4 * m, dtype=np.float64)
    smooth_speed = np.exp(np.log(1.25) * np.sin(2.0 * np.pi * t / 120.0))
    smooth = np.concatenate([[0.0], np.cumsum(smooth_speed)[:-1]])
    slow = 0.8 * t
    smooth, slow = smooth[smooth <= m - 1], slow[slow <= m - 1]
    return {
        'constant 1x': np.arange(m, dtype=np.float64),
        'drop every 4th (1.33x)': np.flatnonzero(np.arange(m) % 4 != 3).astype(np.float64),
        'smooth 0.8x-1.25x repeat': np.round(smooth),
        'constant 0.8x repeat': np.round(slow),
        'smooth 0.8x-1.25x blend': smooth,
        'constant 0.8x blend': slow,
    }


def resample(images: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Query images at fractional positions: ``(M, H, W)``, ``(M',) -> (M', H, W)`` float32,
    linear blends of the two frames around each position (a copy at integer positions)."""
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, len(images) - 1)
    frac = (positions - low)[:, None, None].astype(np.float32)
    return (1.0 - frac) * images[low] + frac * images[high]


def recall_at_1(matches, truth: np.ndarray, ref_valid: np.ndarray, tolerance: int) -> float:
    """R@1 of matches whose ground truth is ``truth`` (original place index per query)."""
    n = len(ref_valid)
    positives = []
    for g in truth:
        cand = np.arange(max(0, g - tolerance), min(n, g + tolerance + 1))
        positives.append(cand[ref_valid[cand]])
    return compute_metrics(matches, positives, (1,)).recall_at[1]


def load_grey(folder: Path) -> np.ndarray:
    """``(M, H, W)`` float32 grey images of a folder of PNGs, in name order."""
    return np.stack([np.asarray(Image.open(f).convert('L'), dtype=np.float32)
                     for f in sorted(folder.glob('*.png'))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    parser.add_argument('--length', type=int, default=10)
    parser.add_argument('--tolerance', type=int, default=1)
    parser.add_argument('--patch-size', type=int,
                        help='patch-normalisation patch size (default: the seqslam preset)')
    args = parser.parse_args()
    folder = args.data / 'nordland_64x32'
    if not folder.is_dir():
        raise SystemExit(f'{folder} not found; pass --data')
    patch = args.patch_size or load_config('seqslam').encoder.patchnorm.patch_size

    def encode(images: np.ndarray) -> np.ndarray:
        return np.stack([patch_normalise(im, patch).ravel() for im in images])

    ref = encode(load_grey(folder / 'summer'))
    winter = load_grey(folder / 'winter')
    profiles = speed_profiles(len(winter))
    frame_dists = {name: distance_matrix(ref, encode(resample(winter, pos)), 'sad')
                   for name, pos in profiles.items()}
    print(f'Nordland summer -> winter, patchnorm 64x32/{patch}, SAD, contrast +-10, '
          f'L={args.length}, trailing windows, R@1 within +-{args.tolerance} frame(s) of the '
          'original place (rounded position)\n')
    print('| scheme | slopes | ' + ' | '.join(profiles) + ' | mean | s |')
    print('|---|---|' + '---:|' * (len(profiles) + 2))
    for label, slopes, kernel, scores, penalty in SCHEMES:
        settings = SeqMatchSettings(length=args.length, metric='sad', slopes=slopes,
                                    contrast_window=10, velocity_kernel=kernel,
                                    slope_scores=scores, slope_penalty=penalty)
        started = time.perf_counter()
        cells = []
        for name, pos in profiles.items():
            result = seqmatch_distances(frame_dists[name], settings, top_k=1)
            truth = np.round(pos).astype(np.int64)
            cells.append(recall_at_1(result.matches, truth, result.ref_valid, args.tolerance))
        slope_txt = ' '.join(f'{v:g}' for v in slopes)
        print(f'| {label} | {slope_txt} | ' + ' | '.join(f'{c:.3f}' for c in cells) +
              f' | {np.mean(cells):.3f} | {time.perf_counter() - started:.1f} |', flush=True)


if __name__ == '__main__':
    main()
