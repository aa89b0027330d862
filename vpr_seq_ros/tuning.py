"""Choose training-free SeqSLAM settings on validation data: a grid sweep.

The sweep covers the thumbnail size and patch size of the patch-normalised descriptor, the frame
distance, the contrast-enhancement window and the sequence length. Each pair of runs (a map run and
a query run whose frames correspond by index, e.g. two traverses of a route) is cut into a
validation range and a held-out range; each range is matched on its own (its map is the map run's
frames of that range), with causal (trailing) windows. A setting is chosen by its validation
Recall@1 pooled over the pairs (each validation query counts once) and averaged over the
sequence lengths; the chosen setting, and any baselines, are then scored on the held-out ranges,
which the choice never saw. :func:`choose` combines the validation tables of several folds.

Frame distances are computed once per (size, patch size, distance) and range and reused for
every contrast window and length, so a 600 x 600 grid of a few hundred settings takes minutes.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from vpr_seq_ros.encoders.patchnorm import grey_thumbnail, patch_normalise
from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.evaluation import compute_metrics
from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_distances
from vpr_seq_ros.sources import open_source

log = logging.getLogger(__name__)

Size = tuple[int, int]


@dataclass(frozen=True)
class TuneGrid:
    """Values to sweep.

    Attributes:
        sizes: thumbnail ``(width, height)`` in pixels.
        patch_sizes: patch-normalisation patch side in pixels (combinations where it does not
            divide both sides are skipped).
        metrics: frame distances, ``'sad'`` / ``'euclidean'``.
        contrast_windows: contrast-enhancement half-widths in reference frames (None: off).
        lengths: sequence lengths L.
    """

    sizes: tuple[Size, ...] = ((64, 32), (48, 24), (32, 16))
    patch_sizes: tuple[int, ...] = (4, 8, 16)
    metrics: tuple[str, ...] = ('sad', 'euclidean')
    contrast_windows: tuple[int | None, ...] = (None, 3, 5, 10, 20)
    lengths: tuple[int, ...] = (10, 20)

    def __post_init__(self) -> None:
        if not (self.sizes and self.patch_sizes and self.metrics and self.contrast_windows
                and self.lengths):
            raise ConfigError('every tuning grid axis needs at least one value')
        for w, h in self.sizes:
            if w < 1 or h < 1:
                raise ConfigError(f'thumbnail size {w}x{h} must be positive')
        for metric in self.metrics:
            if metric not in ('sad', 'euclidean'):
                raise ConfigError(f'unknown frame distance {metric!r}; use sad or euclidean')
        if any(p < 1 for p in self.patch_sizes) or any(n < 1 for n in self.lengths):
            raise ConfigError('patch sizes and sequence lengths must be >= 1')

    def encoders(self) -> list[tuple[Size, int]]:
        """(size, patch size) combinations where the patch tiles the thumbnail."""
        return [(s, p) for s, p in itertools.product(self.sizes, self.patch_sizes)
                if s[0] % p == 0 and s[1] % p == 0]


@dataclass(frozen=True)
class Candidate:
    """One training-free setting (without the sequence length)."""

    size: Size
    patch_size: int
    metric: str
    contrast_window: int | None

    def label(self) -> str:
        """Short text, e.g. ``64x32/8 sad cw=10``."""
        cw = 'off' if self.contrast_window is None else str(self.contrast_window)
        return f'{self.size[0]}x{self.size[1]}/{self.patch_size} {self.metric} cw={cw}'

    def preset(self) -> dict[str, object]:
        """The preset keys this setting fills (``encoder``/``matching`` sections)."""
        return {'encoder.patchnorm.width': self.size[0],
                'encoder.patchnorm.height': self.size[1],
                'encoder.patchnorm.patch_size': self.patch_size,
                'matching.distance': self.metric,
                'matching.contrast.enabled': self.contrast_window is not None,
                'matching.contrast.window': self.contrast_window or 10}


@dataclass(frozen=True, eq=False)
class TunePair:
    """A map run and a query run whose frames correspond by index, as grey thumbnails.

    Attributes:
        name: label for reports.
        ref: size -> ``(N, h, w)`` float32 grey thumbnails of the map run.
        query: size -> ``(M, h, w)`` float32 grey thumbnails of the query run.
        validation: ``(start, stop)`` frame range used to choose.
        heldout: ``(start, stop)`` frame range only reported.
        tolerance: a top-1 within this many frames of the query's index is right.
    """

    name: str
    ref: dict[Size, np.ndarray]
    query: dict[Size, np.ndarray]
    validation: tuple[int, int]
    heldout: tuple[int, int]
    tolerance: int = 1


@dataclass(frozen=True, eq=False)
class TuneReport:
    """Result of :func:`tune`.

    Attributes:
        lengths: the swept sequence lengths.
        pairs: pair names.
        validation: candidate -> ``(pairs, lengths)`` validation Recall@1.
        chosen: the candidate with the best objective (:func:`objective`).
        heldout: candidate -> ``(pairs, lengths)`` held-out Recall@1 (chosen and baselines).
        weights: ``(pairs,)`` validation queries per pair (the pooling weights).
    """

    lengths: tuple[int, ...]
    pairs: tuple[str, ...]
    validation: dict[Candidate, np.ndarray]
    chosen: Candidate
    heldout: dict[Candidate, np.ndarray] = field(default_factory=dict)
    weights: np.ndarray = field(default_factory=lambda: np.ones(1))

    def ranking(self) -> list[tuple[Candidate, float]]:
        """Candidates by objective on validation, best first."""
        scores = [(c, objective(v, self.weights)) for c, v in self.validation.items()]
        return sorted(scores, key=lambda cv: -cv[1])


def objective(recalls: np.ndarray, weights: np.ndarray) -> float:
    """Recall@1 pooled over pairs (weighted by their queries), averaged over lengths.

    Args:
        recalls: ``(pairs, lengths)`` Recall@1.
        weights: ``(pairs,)`` queries per pair.
    """
    w = np.asarray(weights, dtype=np.float64)
    return float((w[:, None] * recalls).sum(axis=0).mean() / w.sum())


def choose(reports: Sequence[TuneReport]) -> tuple[Candidate, float]:
    """The candidate with the best mean objective over several folds' validation tables
    (e.g. two folds with validation and held-out ranges exchanged: all frames count once)."""
    common = set(reports[0].validation)
    for r in reports[1:]:
        common &= set(r.validation)
    scores = {c: float(np.mean([objective(r.validation[c], r.weights) for r in reports]))
              for c in common}
    best = max(sorted(scores, key=lambda c: c.label()), key=lambda c: scores[c])
    return best, scores[best]


def load_thumbnails(path: str | Path, sizes: Sequence[Size]) -> dict[Size, np.ndarray]:
    """Grey thumbnails of every frame of an image source, for each size.

    Args:
        path: an image folder, video or bag (anything ``open_source`` reads).
        sizes: ``(width, height)`` values.

    Returns:
        size -> ``(M, height, width)`` float32 in [0, 255] (area-averaged, as the encoder).
    """
    out: dict[Size, list[np.ndarray]] = {tuple(s): [] for s in sizes}
    for frame in open_source(path):
        if frame.image is None:
            raise ConfigError(f'{path} holds descriptors; tuning needs images')
        for (w, h), thumbs in out.items():
            thumbs.append(grey_thumbnail(frame.image, w, h))
    return {s: np.stack(t) for s, t in out.items()}


def encode_thumbnails(thumbs: np.ndarray, patch_size: int) -> np.ndarray:
    """Patch-normalised descriptors: ``(M, h, w) -> (M, h * w)`` float32."""
    return np.stack([patch_normalise(t, patch_size).ravel() for t in thumbs])


def recall_at_1(frame_dist: np.ndarray, settings: SeqMatchSettings, tolerance: int) -> float:
    """Recall@1 of a run against a map whose frames correspond by index.

    Args:
        frame_dist: ``(N, M)`` frame distances (map frames x query frames).
        settings: sequence matching settings.
        tolerance: a top-1 within this many frames of the query index is right.
    """
    result = seqmatch_distances(frame_dist, settings, top_k=1)
    n = frame_dist.shape[0]
    positives = []
    for j in range(frame_dist.shape[1]):
        cand = np.arange(max(0, j - tolerance), min(n, j + tolerance + 1))
        positives.append(cand[result.ref_valid[cand]])
    return compute_metrics(result.matches, positives, (1,)).recall_at[1]


def _score(pairs: Sequence[TunePair], which: str, grid: TuneGrid,
           candidates: Sequence[Candidate]) -> dict[Candidate, np.ndarray]:
    out = {c: np.zeros((len(pairs), len(grid.lengths))) for c in candidates}
    keyed: dict[tuple[Size, int, str], list[Candidate]] = {}
    for c in candidates:
        keyed.setdefault((c.size, c.patch_size, c.metric), []).append(c)
    for p, pair in enumerate(pairs):
        lo, hi = getattr(pair, which)
        for (size, patch, metric), group in keyed.items():
            ref = encode_thumbnails(pair.ref[size][lo:hi], patch)
            query = encode_thumbnails(pair.query[size][lo:hi], patch)
            dist = distance_matrix(ref, query, metric)
            for c in group:
                for li, length in enumerate(grid.lengths):
                    settings = SeqMatchSettings(length=length, metric=metric,
                                                contrast_window=c.contrast_window)
                    out[c][p, li] = recall_at_1(dist, settings, pair.tolerance)
    return out


def tune(pairs: Sequence[TunePair], grid: TuneGrid | None = None,
         baselines: Sequence[Candidate] = (),
         progress: Callable[[str], None] | None = None) -> TuneReport:
    """Sweep the grid on the validation ranges, choose, and score on the held-out ranges.

    Args:
        pairs: runs to tune on (each with its validation and held-out frame ranges); the
            thumbnails must hold every size of the grid.
        grid: values to sweep (default :class:`TuneGrid`).
        baselines: settings also scored on the held-out ranges (e.g. the current preset).
        progress: called with a line of text after each (size, patch) block.

    Returns:
        A :class:`TuneReport`.

    Raises:
        ConfigError: a pair lacks thumbnails of a grid size, or a range is shorter than the
            longest sequence.
    """
    grid = grid or TuneGrid()
    for pair in pairs:
        for size in grid.sizes:
            if size not in pair.ref or size not in pair.query:
                raise ConfigError(f'pair {pair.name} has no {size[0]}x{size[1]} thumbnails; '
                                  'load them with every size of the grid')
        for lo, hi in (pair.validation, pair.heldout):
            if hi - lo < max(grid.lengths):
                raise ConfigError(f'pair {pair.name}: range {lo}..{hi} is shorter than '
                                  f'the sequence length {max(grid.lengths)}')
    validation: dict[Candidate, np.ndarray] = {}
    for size, patch in grid.encoders():
        block = [Candidate(size, patch, metric, cw) for metric in grid.metrics
                 for cw in grid.contrast_windows]
        validation.update(_score(pairs, 'validation', grid, block))
        if progress:
            weights = np.array([p.validation[1] - p.validation[0] for p in pairs], float)
            best = max(block, key=lambda c: objective(validation[c], weights))
            progress(f'{size[0]}x{size[1]}/{patch}: best {best.label()} '
                     f'{objective(validation[best], weights):.3f}')
    if not validation:
        raise ConfigError('no patch size divides a thumbnail size of the grid')
    weights = np.array([p.validation[1] - p.validation[0] for p in pairs], dtype=np.float64)
    chosen = max(validation, key=lambda c: objective(validation[c], weights))
    log.info('tuning chose %s (validation R@1 %.3f)', chosen.label(),
             objective(validation[chosen], weights))
    scored = [chosen] + [b for b in baselines if b != chosen]
    heldout = _score(pairs, 'heldout', grid, scored)
    for base in baselines:
        if base not in validation:
            validation.update(_score(pairs, 'validation', grid, [base]))
    return TuneReport(tuple(grid.lengths), tuple(p.name for p in pairs), validation, chosen,
                      heldout, weights)


__all__ = ['Candidate', 'TuneGrid', 'TunePair', 'TuneReport', 'choose', 'encode_thumbnails',
           'load_thumbnails', 'objective', 'recall_at_1', 'tune']
