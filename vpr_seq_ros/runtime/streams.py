"""Streaming matchers behind one interface: push the newest keyframe descriptor, get the
distances of every reference anchor (or None until a full window is buffered).

Each frame is encoded once; sequence methods work on the buffered frame descriptors.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import numpy as np

from vpr_seq_ros.config import Config
from vpr_seq_ros.matching import seqmatch_settings
from vpr_seq_ros.matching.distances import distance_column, squared_norms
from vpr_seq_ros.matching.seqgem import seqgem, sequence_descriptors
from vpr_seq_ros.matching.seqmatch import OnlineSeqMatcher


class Stream(Protocol):
    """What the node core needs from a streaming matcher."""

    @property
    def num_references(self) -> int: ...

    @property
    def num_frames(self) -> int: ...

    def reset(self) -> None: ...

    def push(self, descriptor: np.ndarray, segment: int = 0,
             append: bool = False) -> np.ndarray | None: ...


class SeqGemStream:
    """SeqGeM over the last L keyframe descriptors; exact L2 distances to every reference
    anchor's SeqGeM descriptor (``(N,)``, inf where the anchor has no full window).

    Args:
        ref_frames: ``(N, D)`` reference frame descriptors (N may be 0 when growing).
        ref_segments: ``(N,)`` reference segment ids.
        length: L.
        p: SeqGeM exponent.
        ref_sequences: precomputed trailing-window SeqGeM descriptors of the references.
    """

    def __init__(self, ref_frames: np.ndarray, ref_segments: np.ndarray, length: int, p: float,
                 ref_sequences: np.ndarray | None = None) -> None:
        self.length, self.p = length, p
        if ref_sequences is None:
            ref_sequences, valid = sequence_descriptors(ref_frames, length, p, ref_segments)
        else:
            valid = _trailing_valid(ref_segments, length)
        self._seq = [np.asarray(ref_sequences, np.float32)]
        self._valid = [np.asarray(valid, bool)]
        self._recent: deque[np.ndarray] = deque(maxlen=length)  # own keyframes (growing mode)
        self._recent_segments: deque[int] = deque(maxlen=length)
        self._buffer: deque[np.ndarray] = deque(maxlen=length)
        self._segment: int | None = None
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def num_references(self) -> int:
        return sum(len(v) for v in self._valid)

    @property
    def num_frames(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        self._buffer.clear()
        self._segment = None

    def _references(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._cache is None or len(self._cache[1]) != self.num_references:
            seq = np.concatenate(self._seq) if len(self._seq) > 1 else self._seq[0]
            valid = np.concatenate(self._valid) if len(self._valid) > 1 else self._valid[0]
            self._seq, self._valid = [seq], [valid]
            self._cache = (seq, valid, squared_norms(seq) if len(seq) else np.zeros(0))
        return self._cache

    def push(self, descriptor: np.ndarray, segment: int = 0,
             append: bool = False) -> np.ndarray | None:
        if self._segment is not None and segment != self._segment:
            self.reset()
        self._segment = segment
        self._buffer.append(np.asarray(descriptor, np.float32))
        out = None
        full = len(self._buffer) == self.length
        current = seqgem(np.stack(self._buffer), self.p) if full else None
        seq, valid, sq = self._references()
        if full and len(seq):
            out = distance_column(seq, current, 'euclidean', sq).astype(np.float64)
            out[~valid] = np.inf
        elif full:
            out = np.zeros(0)
        if append:
            self._append(descriptor, segment, current)
        return out

    def _append(self, descriptor: np.ndarray, segment: int, current: np.ndarray | None) -> None:
        if self._recent_segments and self._recent_segments[-1] != segment:
            self._recent.clear()
            self._recent_segments.clear()
        self._recent.append(np.asarray(descriptor, np.float32))
        self._recent_segments.append(segment)
        has_window = len(self._recent) == self.length
        row = seqgem(np.stack(self._recent), self.p) if has_window else \
            np.zeros(len(descriptor), np.float32)
        self._seq.append(row[None].astype(np.float32))
        self._valid.append(np.array([has_window]))


def _trailing_valid(segments: np.ndarray, length: int) -> np.ndarray:
    from vpr_seq_ros.matching.windows import window_starts

    return window_starts(np.asarray(segments), length, 'trailing')[1]


def build_stream(cfg: Config, ref_frames: np.ndarray, ref_segments: np.ndarray,
                 seqgem_p: float | None = None,
                 ref_sequences: np.ndarray | None = None) -> Stream:
    """The streaming matcher of ``cfg.matching.method`` over a (possibly empty) reference set.

    Args:
        cfg: configuration (matching and sequence sections).
        ref_frames: ``(N, D)`` reference frame descriptors; ``(0, D)`` to grow from nothing.
        ref_segments: ``(N,)`` their segment ids.
        seqgem_p: the encoder's learnt SeqGeM exponent, if any.
        ref_sequences: precomputed SeqGeM descriptors of the references (from the map).
    """
    method = cfg.matching.method
    if method == 'seqgem':
        p = cfg.matching.seqgem_p if seqgem_p is None else seqgem_p
        return SeqGemStream(ref_frames, ref_segments, cfg.sequence.length, p, ref_sequences)
    length = 1 if method == 'single' else cfg.sequence.length
    settings = seqmatch_settings(cfg, length=length)
    if settings.window != 'trailing':
        from dataclasses import replace

        settings = replace(settings, window='trailing')  # a robot only has the past
    return OnlineSeqMatcher(ref_frames, settings, ref_segments)
