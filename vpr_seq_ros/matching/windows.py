"""Segments and sequence windows.

A *segment* is a maximal run of consecutive frames with the same segment id; sequences never
cross one. A window of L frames is placed around an *anchor* frame:

* ``trailing``: the anchor and the L-1 frames before it (what a robot has seen so far); anchors
  with fewer than L-1 earlier frames in their segment have no window.
* ``centred``: the official SeqMatchNet test protocol: ``[j - L//2, j - L//2 + L)``, shifted
  inward at the ends of the segment so it keeps length L; segments shorter than L have none.
"""

from __future__ import annotations

import numpy as np

from vpr_seq_ros.errors import MatchingError


def segment_bounds(segments: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) index of every frame's segment.

    Args:
        segments: ``(N,)`` segment ids.

    Returns:
        ``(start, end)``, each ``(N,)`` int64.
    """
    segments = np.asarray(segments)
    n = segments.shape[0]
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    change = np.flatnonzero(segments[1:] != segments[:-1]) + 1
    run_starts = np.concatenate([[0], change])
    run_ends = np.concatenate([change, [n]])
    lengths = run_ends - run_starts
    return (np.repeat(run_starts, lengths).astype(np.int64),
            np.repeat(run_ends, lengths).astype(np.int64))


def window_starts(segments: np.ndarray, length: int, window: str,
                  span: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """First frame of every anchor's window, and whether the anchor has a window.

    Args:
        segments: ``(N,)`` segment ids.
        length: L, frames in a window (query side).
        window: ``'trailing'`` or ``'centred'``.
        span: frames covered by the window (``>= length`` under velocity search); defaults to
            ``length``.

    Returns:
        ``(starts, valid)``: ``(N,)`` int64 (undefined where invalid) and ``(N,)`` bool.
    """
    span = length if span is None else span
    start, end = segment_bounds(segments)
    anchors = np.arange(len(start), dtype=np.int64)
    if window == 'trailing':
        starts = anchors - (span - 1)
        valid = starts >= start
    elif window == 'centred':
        starts = np.clip(anchors - length // 2, start, np.maximum(end - span, start))
        valid = (end - start) >= span
    else:
        raise MatchingError(f'unknown window {window!r}; use trailing or centred')
    return starts, valid


def check_length(n_frames: int, length: int, what: str) -> None:
    """Raise a clear error when a run is shorter than one window."""
    if length > n_frames:
        raise MatchingError(
            f'sequence length {length} is longer than the {what} ({n_frames} frames); set '
            f'sequence.length to at most {n_frames}, or use a longer run')
