"""Plots of evaluation, replay and loop-closure runs, for people to look at.

* :func:`plot_evaluation`: the precision-recall curve(s) beside the distance matrix (reference
  frames as rows, downwards; query frames as columns, across) with a colour bar, the
  ground-truth band and the top-1 match of every query coloured correct / wrong. The same plot
  serves ``evaluate`` and ``replay``; without a matrix it shows the band and the matches only,
  and says so.
* :func:`plot_trajectory`: the map's path and the query's path (metres), every top-1 match as a
  line from the query pose to its reference pose, coloured correct / wrong, and loop closures.
* :func:`plot_slam`: a run's trajectory with its loop closures as lines, the matched keyframe
  against the query keyframe, and the closures accumulated over the run.

Every ``plot_*`` writes atomically and returns the path written; :func:`check_plot_path`
validates (and completes) an output path before any work is done. The ``figure_*`` functions
build the same figures without writing them. Figures are made without ``pyplot`` (no global
state, no backend switch).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.types import Matches
from vpr_seq_ros.writing import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from vpr_seq_ros.evaluation import Metrics

log = logging.getLogger(__name__)

Closure = tuple[int, int, 'bool | None']
"""A loop closure: (query keyframe index, matched keyframe index, correct or None)."""

CORRECT = '#2ca02c'
WRONG = '#d62728'
UNKNOWN = '#7f7f7f'
MAP_PATH = '#1f77b4'
QUERY_PATH = '#ff7f0e'
MAX_MATRIX_SIDE = 1500
"""Larger matrices are shown subsampled (every k-th row and column)."""
UNSUPPORTED_SUFFIXES = ('pgf',)
"""Formats matplotlib lists but cannot write without extra tools (pgf needs LaTeX)."""
DEFAULT_SUFFIX = '.png'


# --- output paths ------------------------------------------------------------------------------

def supported_suffixes() -> tuple[str, ...]:
    """The file suffixes (without the dot) a plot can be written as, from matplotlib's canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    types = FigureCanvasAgg(Figure()).get_supported_filetypes()
    return tuple(sorted(k for k in types if k not in UNSUPPORTED_SUFFIXES))


def check_plot_path(path: str | Path) -> Path:
    """Validate a plot's output path before any work is done; returns the path that will be
    written (``.png`` appended when the name has no suffix).

    Raises:
        ConfigError: the suffix is not an image format matplotlib writes (the message lists
            them), the path is a folder, or its folder cannot be created or written.
    """
    path = Path(path).expanduser()
    if not path.name or path.name in ('.', '..'):
        raise ConfigError(f'plot path {str(path)!r} names no file; give a file name such as '
                          'plot.png')
    if not path.suffix:
        path = path.with_name(path.name + DEFAULT_SUFFIX)
    suffix = path.suffix[1:].lower()
    supported = supported_suffixes()
    if suffix not in supported:
        raise ConfigError(f'cannot write a plot as .{suffix} ({path}); use one of '
                          f'{", ".join("." + s for s in supported)}')
    if path.is_dir():
        raise ConfigError(f'plot path {path} is a folder; give a file name such as '
                          f'{path / "plot.png"}')
    ancestor = path.parent if str(path.parent) else Path('.')
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f'cannot write the plot {path}: {ancestor} is a file, not a folder')
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f'cannot write the plot {path}: no permission to write in {ancestor}; '
                          'choose another folder')
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write a figure atomically in the format of its suffix; returns the path written.

    Raises:
        ConfigError: see :func:`check_plot_path`.
    """
    path = check_plot_path(path)
    atomic_write(path, lambda handle: fig.savefig(handle, format=path.suffix[1:].lower(),
                                                  dpi=dpi))
    log.info('wrote plot %s', path)
    return path


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout='constrained')
    FigureCanvasAgg(fig)
    return fig


# --- evaluation: precision-recall and the distance matrix --------------------------------------

def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs ``(first, last)`` of sorted integer indices."""
    if len(indices) == 0:
        return []
    idx = np.asarray(indices, np.int64)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(idx) - 1]])
    return [(int(idx[a]), int(idx[b])) for a, b in zip(starts, ends)]


def _draw_band(ax: Axes, positives: Sequence[np.ndarray], num_ref: int, colour: str,
               alpha: float) -> None:
    """The ground truth: a translucent fill of every query column's positives (one vertical
    bar per run of positives; a run of one row stays visible) and the band's outline."""
    from matplotlib.collections import LineCollection
    from matplotlib.patches import Rectangle

    segments = [((j, a - 0.5), (j, b + 0.5)) for j, pos in enumerate(positives)
                for a, b in _runs(pos)]
    if not segments:
        return
    num_queries = len(positives)
    fig = ax.get_figure()
    width_pt = ax.get_position().width * fig.get_figwidth() * 72  # type: ignore[union-attr]
    lw = float(np.clip(width_pt / max(num_queries, 1), 1.5, 6.0))
    ax.add_collection(LineCollection(segments, colors=colour, alpha=alpha, linewidths=lw,
                                     capstyle='projecting', zorder=2))
    # The outline: the 0.5 contour of the (max-pooled) positive mask.
    step = max(1, int(np.ceil(max(num_ref, num_queries) / MAX_MATRIX_SIDE)))
    rows, cols = -(-num_ref // step), -(-num_queries // step)
    mask = np.zeros((rows + 2, cols + 2))
    for j, pos in enumerate(positives):
        if len(pos):
            mask[np.asarray(pos) // step + 1, j // step + 1] = 1.0
    ys = (np.arange(rows + 2) - 1) * step + (step - 1) / 2
    xs = (np.arange(cols + 2) - 1) * step + (step - 1) / 2
    ax.contour(xs, ys, mask, levels=[0.5], colors=[colour], linewidths=1.0, alpha=0.9,
               zorder=2)
    ax.add_patch(Rectangle((0, 0), 0, 0, facecolor=colour, alpha=alpha, edgecolor='black',
                           linewidth=0.5, label='ground truth (positives)'))


def _match_status(matches: Matches, metrics: Metrics | None) -> dict[str, np.ndarray]:
    """Queries with a top-1 match by status: correct, wrong, no positive (not scored)."""
    valid = np.asarray(matches.valid, bool) & (matches.ref_indices[:, 0] >= 0) \
        if matches.ref_indices.shape[1] else np.zeros(len(matches.valid), bool)
    if metrics is None:
        return {'correct': np.zeros_like(valid), 'wrong': np.zeros_like(valid),
                'unscored': valid}
    counted = np.asarray(metrics.counted, bool) & valid
    correct = np.asarray(metrics.top1_correct, bool) & counted
    return {'correct': correct, 'wrong': counted & ~correct, 'unscored': valid & ~counted}


def _draw_pr(ax: Axes, metrics: Metrics, title: str,
             curves: dict[str, Metrics] | None) -> None:
    for label, met in (curves or {title or 'this run': metrics}).items():
        r1 = met.recall_at.get(1, float('nan'))
        ax.plot(met.recall, met.precision,
                label=f'{label} (R@1 {r1:.3f}, AP {met.average_precision:.3f})')
    ax.set_xlabel('recall')
    ax.set_ylabel('precision')
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower left', fontsize=8)
    ax.set_title('precision-recall (threshold on the top-1 distance)', fontsize=10)
    recalls = '  '.join(f'R@{k} {v:.3f}' for k, v in metrics.recall_at.items())
    which = f' ({title})' if curves and title else ''
    ax.text(0.5, -0.1, f'{recalls}; {metrics.num_evaluated} of {metrics.num_queries} queries '
            f'scored{which}', transform=ax.transAxes, ha='center', va='top', fontsize=8)


def matrix_from_columns(columns: Sequence[np.ndarray | None], num_ref: int) -> np.ndarray:
    """Stack per-query distance columns (e.g. the node core's, one per keyframe) into the
    ``(N, M)`` matrix :func:`plot_evaluation` draws.

    Args:
        columns: ``M`` arrays of ``N`` distances to the reference anchors, or None for a query
            without distances (no full window yet).
        num_ref: N.

    Returns:
        ``(N, M)`` float64, inf where a query has no distances.

    Raises:
        ConfigError: a column of another length.
    """
    out = np.full((num_ref, len(columns)), np.inf)
    for j, column in enumerate(columns):
        if column is None:
            continue
        column = np.asarray(column, np.float64).reshape(-1)
        if column.shape[0] != num_ref:
            raise ConfigError(f'distance column {j} has {column.shape[0]} entries; the map has '
                              f'{num_ref} frames')
        out[:, j] = column
    return out


def figure_evaluation(metrics: Metrics, matches: Matches, matrix: np.ndarray | None,
                      positives: Sequence[np.ndarray], title: str,
                      curves: dict[str, Metrics] | None = None,
                      query_label: str = 'query frame') -> Figure:
    """The evaluation figure: precision-recall beside the distance matrix with the ground truth
    and the top-1 matches (see :func:`plot_evaluation`).

    Returns:
        The figure; its axes are ``[precision-recall, matrix]`` plus the colour bar's when a
        matrix is given.
    """
    n_query = len(positives)
    fig = _figure(14, 6)
    ax_pr, ax = fig.subplots(1, 2, width_ratios=[1, 1.35])
    _draw_pr(ax_pr, metrics, title, curves)
    n_ref = int(matrix.shape[0]) if matrix is not None else 0
    if matrix is not None:
        if matrix.ndim != 2 or matrix.shape[1] != n_query:
            raise ConfigError(f'the distance matrix has shape {matrix.shape}; expected '
                              f'(reference frames, {n_query} queries)')
        step = max(1, int(np.ceil(max(matrix.shape) / MAX_MATRIX_SIDE)))
        shown = np.asarray(matrix[::step, ::step], np.float64)
        shown = np.where(np.isfinite(shown), shown, np.nan)
        finite = shown[np.isfinite(shown)]
        lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        image = ax.imshow(shown, aspect='auto', cmap='viridis', interpolation='nearest',
                          vmin=lo, vmax=hi if hi > lo else lo + 1,
                          extent=(-0.5, matrix.shape[1] - 0.5, matrix.shape[0] - 0.5, -0.5))
        bar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
        bar.set_label('distance (lower = more alike)')
        band_colour, band_alpha = 'white', 0.45
        panel = 'distance matrix, ground truth and top-1 matches'
        if step > 1:
            panel += f' (shown at 1/{step} resolution)'
    else:
        ax.set_facecolor('#f4f4f4')
        band_colour, band_alpha = MAP_PATH, 0.35
        panel = 'ground truth and top-1 matches (distances not recorded)'
    top1 = matches.ref_indices[:, 0] if matches.ref_indices.shape[1] else \
        np.full(n_query, -1, np.int64)
    pos_max = max((int(p.max()) for p in positives if len(p)), default=-1)
    n_ref = max(n_ref, pos_max + 1, int(top1.max()) + 1 if len(top1) else 0, 1)
    _draw_band(ax, positives, n_ref, band_colour, band_alpha)
    ax.set_xlim(-0.5, max(n_query, 1) - 0.5)
    ax.set_ylim(n_ref - 0.5, -0.5)  # reference frame 0 at the top, rows downwards
    status = _match_status(matches, metrics)
    size = float(np.clip(3000 / max(n_query, 1), 6, 30))
    edge = 'white' if matrix is not None else 'black'
    for key, colour, label in (('correct', CORRECT, 'top-1 correct'),
                               ('wrong', WRONG, 'top-1 wrong'),
                               ('unscored', UNKNOWN, 'top-1, query has no positive')):
        js = np.flatnonzero(status[key])
        if len(js) or key != 'unscored':
            ax.scatter(js, top1[js], s=size, c=colour, edgecolors=edge, linewidths=0.4,
                       label=f'{label} ({len(js)})', zorder=3)
    ax.set_xlabel(f'{query_label} (column) \u2192')
    ax.set_ylabel('reference frame (row) \u2193')
    ax.set_title(panel, fontsize=10)
    ax.legend(loc='upper center', bbox_to_anchor=(0.5, -0.09), ncol=4, fontsize=8,
              markerscale=1.5, frameon=False)
    fig.suptitle(title)
    return fig


def plot_evaluation(path: str | Path, metrics: Metrics, matches: Matches,
                    matrix: np.ndarray | None, positives: Sequence[np.ndarray], title: str,
                    curves: dict[str, Metrics] | None = None,
                    query_label: str = 'query frame') -> Path:
    """Write the evaluation plot: precision-recall curve(s) and the distance matrix.

    The matrix is drawn with reference frames as rows (frame 0 at the top, downwards) and query
    frames as columns (across), with a colour bar; the ground truth is a translucent band;
    each query's top-1 match is a dot, green when correct, red when wrong, grey when the query
    has no positive in the map.

    Args:
        path: output file; the suffix picks the format (see :func:`check_plot_path`).
        metrics: the run's metrics (its ``top1_correct`` and ``counted`` colour the matches).
        matches: its matches, ``(M, K)``.
        matrix: ``(N, M)`` distances (reference rows, query columns; inf where none), or None
            (replay without recorded distances: the band and the matches on a blank canvas).
        positives: ``M`` sorted arrays of positive reference indices.
        title: figure title.
        curves: labelled precision-recall curves drawn together (e.g. single frame vs
            sequence); default the run's own.
        query_label: what a column is (``'query frame'``, ``'query keyframe'``).

    Returns:
        The path written.
    """
    path = check_plot_path(path)
    return save_figure(figure_evaluation(metrics, matches, matrix, positives, title, curves,
                                         query_label), path)


# --- trajectories ------------------------------------------------------------------------------

def _xy_with_breaks(poses: np.ndarray, segments: np.ndarray | None) -> np.ndarray:
    """``(N, 2)`` positions with NaN rows inserted between segments (no line across them)."""
    xy = np.asarray(poses, np.float64)[:, :2]
    if segments is None or len(xy) < 2:
        return xy
    cut = np.flatnonzero(np.diff(np.asarray(segments)) != 0) + 1
    return np.insert(xy, cut, np.nan, axis=0)


def _status_colours(correct: Sequence[bool | None]) -> list[str]:
    return [UNKNOWN if c is None else CORRECT if c else WRONG for c in correct]


def _draw_links(ax: Axes, a: np.ndarray, b: np.ndarray, correct: Sequence[bool | None],
                label: str, linewidth: float = 0.8) -> None:
    """Lines from points ``a`` to points ``b`` (both ``(K, 2)``) and a dot at each ``a`` (so
    that short, correct links show too), coloured by status; one legend entry per status."""
    from matplotlib.collections import LineCollection

    if len(a) == 0:
        return
    colours = _status_colours(correct)
    alpha = float(np.clip(30 / len(a), 0.25, 0.9))
    ax.add_collection(LineCollection(np.stack([a, b], axis=1), colors=colours,
                                     linewidths=linewidth, alpha=alpha, zorder=2))
    ax.scatter(a[:, 0], a[:, 1], s=10, c=colours, zorder=3, linewidths=0)
    for colour, what in ((CORRECT, 'correct'), (WRONG, 'wrong'), (UNKNOWN, 'not scored')):
        n = sum(c == colour for c in colours)
        if n:
            ax.plot([], [], color=colour, lw=1.5, label=f'{label}, {what} ({n})')


def _closure_arrays(closures: Sequence[Closure], num: int
                    ) -> tuple[np.ndarray, np.ndarray, list[bool | None]]:
    rows = [(int(q), int(m), c) for q, m, c in closures if 0 <= q < num and 0 <= m < num]
    if len(rows) < len(closures):
        log.warning('%d loop closure(s) refer to keyframes outside 0..%d and are not drawn',
                    len(closures) - len(rows), num - 1)
    q = np.array([r[0] for r in rows], np.int64)
    m = np.array([r[1] for r in rows], np.int64)
    return q, m, [r[2] for r in rows]


def figure_trajectory(ref_poses: np.ndarray | None, query_poses: np.ndarray | None,
                      matches: Matches | None = None, metrics: Metrics | None = None,
                      closures: Sequence[Closure] = (), title: str = '',
                      ref_segments: np.ndarray | None = None,
                      query_segments: np.ndarray | None = None) -> Figure:
    """The trajectory figure (see :func:`plot_trajectory`)."""
    if ref_poses is None and query_poses is None:
        raise ConfigError('a trajectory plot needs poses of the map or of the query run')
    fig = _figure(9, 8)
    ax = fig.subplots()
    if ref_poses is not None:
        xy = _xy_with_breaks(ref_poses, ref_segments)
        ax.plot(xy[:, 0], xy[:, 1], color=MAP_PATH, lw=2.5, alpha=0.6,
                label=f'map ({len(ref_poses)} frames)', zorder=1)
        ax.plot(*ref_poses[0, :2], 'o', color=MAP_PATH, ms=7, zorder=4)
    if query_poses is not None:
        xy = _xy_with_breaks(query_poses, query_segments)
        ax.plot(xy[:, 0], xy[:, 1], color=QUERY_PATH, lw=1.2, ls='--',
                label=f'query ({len(query_poses)} frames)', zorder=1)
        ax.plot(*query_poses[0, :2], 'o', color=QUERY_PATH, ms=6, zorder=4)
    if matches is not None and ref_poses is not None and query_poses is not None:
        if len(matches.valid) != len(query_poses):
            raise ConfigError(f'{len(matches.valid)} matches for {len(query_poses)} query poses;'
                              ' give one row of matches per query frame')
        status = _match_status(matches, metrics)
        js = np.flatnonzero(status['correct'] | status['wrong'] | status['unscored'])
        refs = matches.ref_indices[js, 0]
        correct = [True if status['correct'][j] else False if status['wrong'][j] else None
                   for j in js]
        _draw_links(ax, query_poses[js, :2], ref_poses[refs, :2], correct,
                    'top-1 match (query \u2192 reference)')
    if closures:
        poses = query_poses if query_poses is not None else ref_poses
        q, m, correct = _closure_arrays(closures, len(poses))  # type: ignore[arg-type]
        _draw_links(ax, poses[q, :2], poses[m, :2], correct,  # type: ignore[index]
                    'loop closure', linewidth=1.5)
    ax.set_aspect('equal', adjustable='datalim')
    ax.autoscale_view()
    ax.set_xlabel('x (m)')
    ax.set_ylabel('y (m)')
    ax.grid(alpha=0.3)
    ax.legend(loc='best', fontsize=8, framealpha=0.85)
    ax.set_title(title or 'trajectories and matches (dots: start)', fontsize=11)
    return fig


def plot_trajectory(path: str | Path, ref_poses: np.ndarray | None,
                    query_poses: np.ndarray | None, matches: Matches | None = None,
                    metrics: Metrics | None = None, closures: Sequence[Closure] = (),
                    title: str = '', ref_segments: np.ndarray | None = None,
                    query_segments: np.ndarray | None = None) -> Path:
    """Write the trajectory plot: the map's path, the query's path and what matched what.

    Args:
        path: output file (see :func:`check_plot_path`).
        ref_poses: ``(N, 4)`` ``[x, y, z, yaw]`` of the map's frames (metres), or None.
        query_poses: ``(M, 4)`` poses of the query frames, or None.
        matches: ``(M, K)`` matches; each query's top-1 is drawn as a line from its pose to
            the reference pose (both pose arrays needed).
        metrics: colours the lines: green correct, red wrong, grey not scored (no positive,
            or no metrics given).
        closures: loop closures ``(query_index, match_index, correct or None)`` between frames
            of the query run (of the map when there is no query run), drawn as thicker lines.
        title: figure title.
        ref_segments: ``(N,)`` segment ids: the path is not joined across segments.
        query_segments: ``(M,)`` the same for the query.

    Returns:
        The path written.

    Raises:
        ConfigError: a bad output path, no poses at all, or matches that do not fit the poses.
    """
    path = check_plot_path(path)
    return save_figure(figure_trajectory(ref_poses, query_poses, matches, metrics, closures,
                                         title, ref_segments, query_segments), path)


# --- slam mode ---------------------------------------------------------------------------------

def closure_tuples(closures: Iterable[Any], keyframe_stamps_ns: np.ndarray,
                   poses: np.ndarray | None = None,
                   radius_m: float | None = None) -> list[Closure]:
    """Loop closures (objects with ``query_stamp_ns`` and ``match_stamp_ns``, such as the node
    core's) as ``(query_index, match_index, correct)`` keyframe indices.

    Args:
        closures: the closures, in order.
        keyframe_stamps_ns: ``(K,)`` stamps of the keyframes.
        poses: ``(K, 4)`` keyframe poses (NaN rows where unknown), or None.
        radius_m: a closure is correct when its two poses lie within this distance.

    Returns:
        One tuple per closure whose stamps are keyframes; ``correct`` is None without poses,
        radius or a finite pose at either end.
    """
    index = {int(s): i for i, s in enumerate(np.asarray(keyframe_stamps_ns).tolist())}
    out: list[Closure] = []
    for c in closures:
        a, b = index.get(int(c.query_stamp_ns)), index.get(int(c.match_stamp_ns))
        if a is None or b is None:
            continue
        correct: bool | None = None
        if poses is not None and radius_m is not None:
            pa, pb = poses[a, :3], poses[b, :3]
            if np.all(np.isfinite(pa)) and np.all(np.isfinite(pb)):
                correct = bool(np.linalg.norm(pa - pb) <= radius_m)
        out.append((a, b, correct))
    return out


def figure_slam(poses: np.ndarray | None, closures: Sequence[Closure],
                num_keyframes: int, stamps_ns: np.ndarray | None = None, title: str = '',
                segments: np.ndarray | None = None) -> Figure:
    """The loop-closure figure (see :func:`plot_slam`)."""
    fig = _figure(15 if poses is not None else 10, 6)
    if poses is not None:
        ax_map, ax_pairs, ax_count = fig.subplots(1, 3, width_ratios=[1.3, 1, 1])
    else:
        ax_pairs, ax_count = fig.subplots(1, 2)
        ax_map = None
    q, m, correct = _closure_arrays(closures, max(num_keyframes, 1))
    colours = _status_colours(correct)
    if ax_map is not None and poses is not None:
        xy = _xy_with_breaks(poses, segments)
        ax_map.plot(xy[:, 0], xy[:, 1], color=MAP_PATH, lw=1.5,
                    label=f'trajectory ({len(poses)} keyframes)', zorder=1)
        ax_map.plot(*poses[0, :2], 'o', color=MAP_PATH, ms=7)
        _draw_links(ax_map, poses[q, :2], poses[m, :2], correct, 'loop closure', 1.5)
        ax_map.set_aspect('equal', adjustable='datalim')
        ax_map.autoscale_view()
        ax_map.set_xlabel('x (m)')
        ax_map.set_ylabel('y (m)')
        ax_map.grid(alpha=0.3)
        ax_map.legend(loc='best', fontsize=8, framealpha=0.85)
        ax_map.set_title('trajectory and loop closures (dot: start)', fontsize=10)
    if stamps_ns is not None and len(stamps_ns):
        t = (np.asarray(stamps_ns, np.int64) - int(stamps_ns[0])) / 1e9
        unit = 'time since the first keyframe (s)'
    else:
        t = np.arange(max(num_keyframes, 1), dtype=np.float64)
        unit = 'keyframe'
    ax_pairs.plot([t[0], t[-1]], [t[0], t[-1]], color='black', lw=0.8, alpha=0.4,
                  label='same time')
    for colour, what in ((CORRECT, 'correct'), (WRONG, 'wrong'), (UNKNOWN, 'not scored')):
        sel = np.array([c == colour for c in colours], bool)
        if sel.any():
            ax_pairs.scatter(t[q[sel]], t[m[sel]], s=14, c=colour, edgecolors='black',
                             linewidths=0.3, label=f'{what} ({int(sel.sum())})', zorder=3)
    pad = 0.02 * (t[-1] - t[0]) if t[-1] > t[0] else 0.5
    ax_pairs.set_xlim(t[0] - pad, t[-1] + pad)
    ax_pairs.set_ylim(t[0] - pad, t[-1] + pad)
    ax_pairs.set_xlabel(f'query: {unit}')
    ax_pairs.set_ylabel(f'matched: {unit}')
    ax_pairs.grid(alpha=0.3)
    ax_pairs.legend(loc='upper left', fontsize=8)
    ax_pairs.set_title('which past place each closure matched', fontsize=10)
    order = np.argsort(q, kind='stable')
    for colour, what in ((CORRECT, 'correct'), (WRONG, 'wrong'), (UNKNOWN, 'not scored')):
        sel = np.array([c == colour for c in colours], bool)[order]
        if sel.any() or what == 'correct':
            times = np.concatenate([[t[0]], t[q[order][sel]], [t[-1]]])
            counts = np.concatenate([[0], np.arange(1, int(sel.sum()) + 1),
                                     [int(sel.sum())]])
            ax_count.step(times, counts, where='post', color=colour, label=what)
    ax_count.set_xlabel(unit)
    ax_count.set_ylabel('loop closures so far')
    ax_count.grid(alpha=0.3)
    ax_count.legend(loc='upper left', fontsize=8)
    ax_count.set_title(f'{len(q)} loop closure{"" if len(q) == 1 else "s"} over '
                       f'{num_keyframes} keyframe{"" if num_keyframes == 1 else "s"}',
                       fontsize=10)
    fig.suptitle(title or 'loop closures')
    return fig


def plot_slam(path: str | Path, poses: np.ndarray | None, closures: Sequence[Closure],
              num_keyframes: int, stamps_ns: np.ndarray | None = None, title: str = '',
              segments: np.ndarray | None = None) -> Path:
    """Write the loop-closure plot of a slam-mode run.

    Panels: the trajectory with every closure as a line between its two poses (when poses
    exist); the matched keyframe against the query keyframe (structure of revisits); the
    closures accumulated over the run. Closures are green when correct, red when wrong, grey
    when not scored (no ground truth).

    Args:
        path: output file (see :func:`check_plot_path`).
        poses: ``(K, 4)`` keyframe poses (metres), or None.
        closures: ``(query_index, match_index, correct or None)`` keyframe indices
            (:func:`closure_tuples` makes them from the node core's closures).
        num_keyframes: K.
        stamps_ns: ``(K,)`` keyframe stamps (time axes in seconds), or None (keyframe axes).
        title: figure title.
        segments: ``(K,)`` segment ids: the path is not joined across segments.

    Returns:
        The path written.
    """
    path = check_plot_path(path)
    return save_figure(figure_slam(poses, closures, num_keyframes, stamps_ns, title, segments),
                       path)


__all__ = ['Closure', 'check_plot_path', 'closure_tuples', 'figure_evaluation', 'figure_slam',
           'figure_trajectory', 'matrix_from_columns', 'plot_evaluation', 'plot_slam',
           'plot_trajectory', 'save_figure', 'supported_suffixes']
