"""Plots: real image files, a colour bar, the ground-truth band, matches coloured by outcome,
and output paths checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet

from vpr_seq_ros.errors import ConfigError
from vpr_seq_ros.evaluation import compute_metrics
from vpr_seq_ros.plots import (CORRECT, UNKNOWN, WRONG, check_plot_path, closure_tuples,
                               figure_evaluation, figure_slam, figure_trajectory,
                               matrix_from_columns, plot_evaluation, plot_slam,
                               plot_trajectory, supported_suffixes)
from vpr_seq_ros.types import Matches

PNG_MAGIC = b'\x89PNG\r\n\x1a\n'


def _case(seed: int = 0, n: int = 30, m: int = 20):
    """A distance matrix whose minimum lies on the diagonal for even queries and far off it for
    odd ones; query 3 has no positive; queries 0 and 1 have no window."""
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(1.0, 2.0, size=(n, m))
    for j in range(m):
        matrix[j if j % 2 == 0 else (j + 15) % n, j] = 0.1
    matrix[:, :2] = np.inf
    order = np.argsort(matrix, axis=0).T[:, :5]
    distances = np.take_along_axis(matrix.T, order, axis=1)
    valid = np.isfinite(distances[:, 0])
    matches = Matches(np.where(valid[:, None], order, -1), distances, valid)
    positives = [np.arange(max(0, j - 1), min(n, j + 2)) for j in range(m)]
    positives[3] = np.zeros(0, np.int64)
    positives[6] = np.array([5, 6, 7, 20, 21])  # two places: two runs
    metrics = compute_metrics(matches, positives, (1, 5))
    return matrix, matches, positives, metrics


def _offsets(ax, label: str) -> np.ndarray:
    for coll in ax.collections:
        if isinstance(coll, PathCollection) and coll.get_label().startswith(label):
            return np.asarray(coll.get_offsets())
    raise AssertionError(f'no scatter labelled {label!r}')


def test_evaluation_figure_shows_matrix_band_and_matches() -> None:
    matrix, matches, positives, metrics = _case()
    fig = figure_evaluation(metrics, matches, matrix, positives, 'seqmatch L=5')
    ax_pr, ax, ax_bar = fig.axes
    assert 'distance' in ax_bar.get_ylabel()  # the colour bar
    assert ax.images and ax.images[0].get_array().shape == (30, 20)
    assert ax.yaxis_inverted() and ax.get_ylim() == (29.5, -0.5)  # reference row 0 at the top
    assert 'reference frame (row)' in ax.get_ylabel() and 'query frame' in ax.get_xlabel()
    assert 'distance matrix' in ax.get_title()
    # by hand: queries 2..19 have a window; 3 has no positive; even ones are right, odd wrong
    correct = _offsets(ax, 'top-1 correct')
    wrong = _offsets(ax, 'top-1 wrong')
    unscored = _offsets(ax, 'top-1, query has no positive')
    assert correct[:, 0].tolist() == [2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert correct[:, 1].tolist() == correct[:, 0].tolist()
    assert wrong[:, 0].tolist() == [5, 7, 9, 11, 13, 15, 17, 19]
    assert wrong[:, 1].tolist() == [(j + 15) % 30 for j in range(5, 20, 2)]
    assert unscored.tolist() == [[3, 18]]
    # the band: one bar per run of positives (query 6 has two, query 3 none), and an outline
    bars = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = bars[0].get_segments()
    assert len(segments) == 20 - 1 + 1
    assert [tuple(s[:, 1]) for s in segments if s[0, 0] == 6] == [(4.5, 7.5), (19.5, 21.5)]
    outline = [c for c in ax.collections if isinstance(c, ContourSet)]
    assert len(outline) == 1 and outline[0].levels.tolist() == [0.5]


def test_evaluation_figure_without_matrix_is_not_called_a_distance_matrix() -> None:
    _, matches, positives, metrics = _case()
    fig = figure_evaluation(metrics, matches, None, positives, 'replay',
                            query_label='query keyframe')
    assert len(fig.axes) == 2  # no colour bar without distances
    ax = fig.axes[1]
    assert 'distance matrix' not in ax.get_title() and not ax.images
    assert ax.yaxis_inverted() and 'query keyframe' in ax.get_xlabel()
    assert len(_offsets(ax, 'top-1 correct')) == 9


@pytest.mark.parametrize('suffix, magic', [('png', PNG_MAGIC), ('pdf', b'%PDF'),
                                           ('svg', b'<?xml')])
def test_plots_write_real_files(tmp_path: Path, suffix: str, magic: bytes) -> None:
    matrix, matches, positives, metrics = _case()
    out = plot_evaluation(tmp_path / f'eval.{suffix}', metrics, matches, matrix, positives, 't')
    assert out == tmp_path / f'eval.{suffix}' and out.read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


def test_evaluation_plot_appends_png_and_subsamples_big_matrices(tmp_path: Path) -> None:
    n, m = 3100, 40
    matrix = np.random.default_rng(1).uniform(size=(n, m))
    matches = Matches(np.argsort(matrix, axis=0).T[:, :1], np.sort(matrix, axis=0).T[:, :1],
                      np.ones(m, bool))
    positives = [np.array([j]) for j in range(m)]
    metrics = compute_metrics(matches, positives, (1,))
    out = plot_evaluation(tmp_path / 'big', metrics, matches, matrix, positives, 'big')
    assert out == tmp_path / 'big.png' and out.read_bytes().startswith(PNG_MAGIC)
    fig = figure_evaluation(metrics, matches, matrix, positives, 'big')
    assert fig.axes[1].images[0].get_array().shape == (1034, 14)  # every 3rd row and column
    assert '1/3 resolution' in fig.axes[1].get_title()
    assert fig.axes[1].get_ylim() == (n - 0.5, -0.5)


def _line_colours(ax) -> list[str]:
    links = [c for c in ax.collections if isinstance(c, LineCollection)]
    return [to_hex(c) for c in links[0].get_colors()]


def test_trajectory_draws_each_match_from_query_to_reference(tmp_path: Path) -> None:
    ref = np.array([[0, 0, 0, 0], [10, 0, 0, 0], [20, 0, 0, 0], [30, 0, 0, 0]], float)
    query = np.array([[0, 1, 0, 0], [10, 1, 0, 0], [20, 1, 0, 0]], float)
    matches = Matches(np.array([[0], [3], [2]]), np.zeros((3, 1)), np.array([True, True, True]))
    positives = [np.array([0]), np.array([1]), np.zeros(0, np.int64)]
    metrics = compute_metrics(matches, positives, (1,))
    fig = figure_trajectory(ref, query, matches, metrics, title='t')
    ax = fig.axes[0]
    links = [c for c in ax.collections if isinstance(c, LineCollection)][0]
    assert [s.tolist() for s in links.get_segments()] == [[[0, 1], [0, 0]], [[10, 1], [30, 0]],
                                                           [[20, 1], [20, 0]]]
    assert _line_colours(ax) == [CORRECT, WRONG, UNKNOWN]
    labels = ax.get_legend_handles_labels()[1]
    assert 'map (4 frames)' in labels and 'query (3 frames)' in labels
    assert any('wrong (1)' in s for s in labels)
    out = plot_trajectory(tmp_path / 'traj.png', ref, query, matches, metrics,
                          closures=[(2, 0, None)])
    assert out.read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ConfigError, match='2 matches for 3 query poses'):
        figure_trajectory(ref, query, Matches(np.zeros((2, 1), int), np.zeros((2, 1)),
                                              np.ones(2, bool)))
    with pytest.raises(ConfigError, match='needs poses'):
        figure_trajectory(None, None)


def test_closures_from_stamps_and_the_slam_plot(tmp_path: Path) -> None:
    class Closure:
        def __init__(self, q: int, m: int) -> None:
            self.query_stamp_ns, self.match_stamp_ns = q, m

    stamps = np.array([100, 200, 300, 400, 500])
    poses = np.array([[0, 0, 0, 0], [50, 0, 0, 0], [0, 50, 0, 0], [1, 0, 0, 0],
                      [np.nan, np.nan, 0, 0]])
    found = [Closure(400, 100), Closure(500, 200), Closure(300, 100), Closure(450, 100)]
    closures = closure_tuples(found, stamps, poses, radius_m=5.0)
    assert closures == [(3, 0, True), (4, 1, None), (2, 0, False)]  # 450 ns is no keyframe
    assert closure_tuples(found, stamps) == [(3, 0, None), (4, 1, None), (2, 0, None)]
    fig = figure_slam(poses, closures, 5, stamps)
    assert len(fig.axes) == 3
    assert _line_colours(fig.axes[0]) == [CORRECT, UNKNOWN, WRONG]
    pairs = fig.axes[1]
    assert _offsets(pairs, 'correct').tolist() == [[300e-9, 0.0]]
    assert '3 loop closures over 5 keyframes' in fig.axes[2].get_title()
    assert len(figure_slam(None, closures, 5).axes) == 2  # no poses: no trajectory panel
    out = plot_slam(tmp_path / 'slam', poses, closures, 5, stamps, 'slam')
    assert out == tmp_path / 'slam.png' and out.read_bytes().startswith(PNG_MAGIC)


def test_check_plot_path(tmp_path: Path) -> None:
    assert check_plot_path(tmp_path / 'outplot') == tmp_path / 'outplot.png'
    assert check_plot_path(tmp_path / 'new' / 'deeper' / 'p.svg') == \
        tmp_path / 'new' / 'deeper' / 'p.svg'
    assert not (tmp_path / 'new').exists()  # nothing created before the work
    assert {'png', 'pdf', 'svg', 'jpg'} <= set(supported_suffixes())
    with pytest.raises(ConfigError, match=r'cannot write a plot as \.jpgx .*use one of .*\.png'):
        check_plot_path(tmp_path / 'out.jpgx')
    (tmp_path / 'file').write_text('x')
    with pytest.raises(ConfigError, match='is a file, not a folder'):
        check_plot_path(tmp_path / 'file' / 'plot.png')
    (tmp_path / 'dir.png').mkdir()
    with pytest.raises(ConfigError, match='is a folder'):
        check_plot_path(tmp_path / 'dir.png')
    locked = tmp_path / 'locked'
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip('running with permissions that ignore folder modes (root)')
        with pytest.raises(ConfigError, match='no permission to write in'):
            check_plot_path(locked / 'sub' / 'plot.png')
    finally:
        locked.chmod(0o700)


def test_replay_columns_make_the_matrix_evaluate_draws() -> None:
    matrix, matches, positives, metrics = _case()
    columns = [None if not np.isfinite(matrix[:, j]).any() else matrix[:, j]
               for j in range(matrix.shape[1])]
    stacked = matrix_from_columns(columns, matrix.shape[0])
    np.testing.assert_array_equal(stacked, matrix)
    a = figure_evaluation(metrics, matches, stacked, positives, 'replay').axes[1]
    b = figure_evaluation(metrics, matches, matrix, positives, 'evaluate').axes[1]
    np.testing.assert_array_equal(a.images[0].get_array(), b.images[0].get_array())
    with pytest.raises(ConfigError, match='distance column 1 has 3 entries; the map has 30'):
        matrix_from_columns([None, np.zeros(3)], 30)


def test_empty_runs_still_make_plots(tmp_path: Path) -> None:
    poses = np.column_stack([np.arange(5.0), np.zeros((5, 3))])
    assert figure_slam(poses, [], 5).axes[2].get_title() == '0 loop closures over 5 keyframes'
    assert figure_slam(None, [(0, 0, None)], 1).axes[1].get_title() == \
        '1 loop closure over 1 keyframe'
    assert len(figure_trajectory(poses, None).axes) == 1  # the map alone
    matches = Matches(np.full((3, 2), -1), np.full((3, 2), np.inf), np.zeros(3, bool))
    positives = [np.zeros(0, np.int64)] * 3
    out = plot_evaluation(tmp_path / 'none.png', compute_metrics(matches, positives, (1,)),
                          matches, None, positives, 'no query matched')
    assert out.read_bytes().startswith(PNG_MAGIC)
