"""Approximate search behind the method plugins: the index a map stores, and the streaming
matcher that asks it instead of scanning the map.

Each method says what its index holds (:meth:`SequenceMethod.index_vectors`) and how a query
window becomes a search (:meth:`SequenceMethod.window_search`); this module trains and stores
the index, and streams windows through it. The streaming distances are a map-sized vector that
is finite only at the candidates found, so the decisions downstream stay the same. For the
published score the matcher also computes the exact distances of each window at the score's
fixed sample of anchors (:mod:`vpr_seq_ros.matching.score`, via
:meth:`SequenceMethod.sample_search`), so the score is the one exact search gives.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from vpr_seq_ros.config import IndexConfig
from vpr_seq_ros.errors import MapError
from vpr_seq_ros.matching.ann import AnnIndex
from vpr_seq_ros.matching.methods.base import (References, SequenceMethod, StreamingMatcher,
                                               WindowBuffer)
from vpr_seq_ros.types import EncodedRun

WindowSearch = Callable[[np.ndarray], 'tuple[np.ndarray, np.ndarray]']
"""``(L, D)`` window -> ``(k,)`` reference anchors (-1: none) and distances (inf). A search
may keep state between consecutive windows (seqmatch keeps each frame's index neighbours);
then it has a ``reset()``, which the stream calls whenever its window restarts."""

SampleSearch = Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""``(k,)`` anchors -> (``(L, D)`` window -> ``(k,)`` exact distances there)."""


class _RunReferences:
    """A run seen as references (for checking a method's approximate search up front)."""

    growing = False
    precomputed = None

    def __init__(self, run: EncodedRun) -> None:
        self.descriptors, self.segments = run.descriptors, run.segments

    def __len__(self) -> int:
        return len(self.descriptors)

    def keep_frames_in(self, rows: Any) -> None:  # pragma: no cover - fixed
        raise NotImplementedError


def build_index(method: SequenceMethod, run: EncodedRun, cfg: IndexConfig,
                precomputed: Any = None) -> tuple[AnnIndex, dict[str, Any]]:
    """Train the approximate index a map stores for ``method``.

    Returns:
        The index and its manifest entry (kind, parameters, what it holds).
    """
    method.window_search(_RunReferences(run), None, 1, 1)  # refuses before any training
    vectors, valid = method.index_vectors(run, precomputed)
    index = AnnIndex.build(vectors, cfg, valid)
    info = {'method': method.name, **dataclasses.asdict(index.params), 'rows': len(index.rows)}
    return index, info


def load_index(refmap: Any, method: SequenceMethod, cfg: IndexConfig) -> AnnIndex:
    """The map's stored index, with the search-time parameters of ``cfg``.

    Raises:
        MapError: the map has no index of that kind for this method.
    """
    info = refmap.manifest.get('index')
    if refmap.index is None or not isinstance(info, dict) or info.get('kind') != cfg.kind or \
            info.get('method') != method.name:
        have = f'a {info.get("kind")} index for {info.get("method")}' \
            if isinstance(info, dict) else 'no index'
        raise MapError(f'matching.index.kind = {cfg.kind} needs a {cfg.kind} index for '
                       f'{method.name} in the map, which has {have}; rebuild the map with '
                       f'matching.index.kind = {cfg.kind}, or use matching.index.kind = exact')
    stored = {k: info[k] for k in IndexConfig.__dataclass_fields__ if k in info}
    params = dataclasses.replace(IndexConfig(**stored), nprobe=cfg.nprobe,
                                 ef_search=cfg.ef_search, candidates=cfg.candidates)
    return AnnIndex.from_bytes(refmap.index, params, refmap.index_rows)


class WindowIndexStream(StreamingMatcher):
    """The last L keyframes of the current segment, searched through an index.

    Args:
        num_refs: N, the length of the distance vector returned.
        length: L.
        search: what the method does with a full window.
        sample_search: builds, for fixed anchors, the exact distances of a window there
            (the score's sample; built once, on first use).
    """

    def __init__(self, num_refs: int, length: int, search: WindowSearch,
                 sample_search: SampleSearch | None = None) -> None:
        self.num_refs, self.search = num_refs, search
        self._buffer = WindowBuffer(length)
        self._sample_search = sample_search
        self._sampled: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]] | None = None
        self._window: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        return len(self._buffer)

    def _forget(self) -> None:
        forget = getattr(self.search, 'reset', None)  # a search that keeps per-frame state
        if forget is not None:
            forget()

    def reset(self) -> None:
        self._buffer.clear()
        self._window = None
        self._forget()

    def push(self, descriptor: np.ndarray, segment: int = 0) -> np.ndarray | None:
        window = self._window = self._buffer.push(descriptor, segment)
        if len(self._buffer) == 1:  # the window restarted (first frame, or a new segment)
            self._forget()
        if window is None:
            return None
        idx, dist = self.search(window)
        out = np.full(self.num_refs, np.inf)
        found = idx >= 0
        out[idx[found]] = dist[found]
        return out

    def distances_at(self, anchors: np.ndarray, distances: np.ndarray,
                     cache: bool = False) -> np.ndarray:
        """Exact distances of the last full window at ``anchors``, computed there (the
        index found only candidates); with ``cache`` the anchors' rows are kept."""
        if self._window is None or self._sample_search is None:
            return super().distances_at(anchors, distances)
        if not cache:
            return self._sample_search(anchors)(self._window)
        if self._sampled is None or not np.array_equal(self._sampled[0], anchors):
            self._sampled = (np.array(anchors, np.int64), self._sample_search(anchors))
        return self._sampled[1](self._window)


def approximate_stream(method: SequenceMethod, references: References, ann: AnnIndex,
                       cfg: IndexConfig, top_k: int) -> StreamingMatcher:
    """The streaming matcher of ``method`` over an approximate index."""
    k = max(cfg.candidates, top_k)
    return WindowIndexStream(len(references), method.window_length,
                             method.window_search(references, ann, cfg.candidates, k),
                             lambda anchors: method.sample_search(references, anchors))


__all__ = ['WindowIndexStream', 'approximate_stream', 'build_index', 'load_index']
