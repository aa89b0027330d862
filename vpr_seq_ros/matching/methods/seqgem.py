"""``seqgem``: JIST's generalized mean over the L frame descriptors, nearest neighbour in L2.

The exponent p is resolved once, in :meth:`SeqGem.from_config`: the encoder's learnt p when it
carries one, else ``matching.seqgem_p``. A map built for ``seqgem`` stores the trailing-window
sequence descriptors with ``{method, length, p, window}``; the streaming matcher uses them when
they fit (same L and p), else recomputes them from the frames.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.distances import distance_column, distance_matrix, squared_norms
from vpr_seq_ros.matching.index import FlatL2Index, search_matches
from vpr_seq_ros.matching.methods.base import (GrowingArray, MatchOutput, Precomputed,
                                               References, SequenceMethod, StreamingMatcher,
                                               WindowBuffer)
from vpr_seq_ros.matching.seqgem import seqgem, sequence_descriptors, sequence_search
from vpr_seq_ros.matching.windows import window_starts
from vpr_seq_ros.types import EncodedRun

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import Config


class SeqGem(SequenceMethod):
    """SeqGeM sequence descriptors, exact L2 nearest neighbours.

    Args:
        length: L, frames per window.
        p: SeqGeM exponent.
        window: ``trailing`` or ``centred`` (batch only; streaming is always trailing).
    """

    name = 'seqgem'

    def __init__(self, length: int, p: float, window: str = 'trailing') -> None:
        self.length, self.p, self.window = length, float(p), window

    @classmethod
    def from_config(cls, cfg: Config, learnt_seqgem_p: float | None = None) -> SeqGem:
        p = cfg.matching.seqgem_p if learnt_seqgem_p is None else learnt_seqgem_p
        return cls(cfg.sequence.length, p, cfg.sequence.window)

    @property
    def window_length(self) -> int:
        return self.length

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), 'p': self.p, 'window': self.window}

    def batch(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool) -> MatchOutput:
        length, p, window = self.length, self.p, self.window
        q_seq, q_valid = sequence_descriptors(query.descriptors, length, p, query.segments,
                                              window)
        if not keep_matrix:  # bounded memory: reference descriptors made block by block
            matches, ref_valid = sequence_search(ref.descriptors, length, p, ref.segments,
                                                 window, q_seq, q_valid, top_k)
            if not ref_valid.any():
                raise MatchingError(f'no reference segment is at least {length} frames long '
                                    f'(sequence.length)')
            return MatchOutput(matches, ref_valid, None)
        ref_seq, ref_valid = sequence_descriptors(ref.descriptors, length, p, ref.segments,
                                                  window)
        if not ref_valid.any():
            raise MatchingError(f'no reference segment is at least {length} frames long '
                                f'(sequence.length)')
        index = FlatL2Index(ref_seq, ref_valid)
        matches = search_matches(index, q_seq, q_valid, top_k)
        matrix = None
        if keep_matrix:
            matrix = distance_matrix(ref_seq, q_seq, 'euclidean')
            matrix[~ref_valid] = np.inf
            matrix[:, ~q_valid] = np.inf
        return MatchOutput(matches, ref_valid, matrix)

    def _info(self) -> dict[str, Any]:
        return {'method': self.name, 'length': self.length, 'p': self.p, 'window': 'trailing'}

    def precompute(self, run: EncodedRun) -> Precomputed:
        seq, valid = sequence_descriptors(  # float16 runs (maps) keep float16: no f32 copy
            run.descriptors, self.length, self.p, run.segments, 'trailing',
            np.float16 if run.descriptors.dtype == np.float16 else np.float32)
        return Precomputed(seq, valid, self._info())

    def fits(self, stored: Precomputed) -> bool:
        info = stored.info
        return info.get('method', self.name) == self.name and \
            info.get('length') == self.length and info.get('window', 'trailing') == 'trailing' \
            and math.isclose(float(info.get('p', -1)), self.p, rel_tol=1e-6)

    def index_vectors(self, run: EncodedRun, precomputed: Precomputed | None = None
                      ) -> tuple[np.ndarray, np.ndarray | None]:
        """The trailing-window sequence descriptors, valid anchors only."""
        if precomputed is None or not self.fits(precomputed) or precomputed.valid is None:
            precomputed = self.precompute(run)
        return precomputed.descriptors, precomputed.valid

    def window_search(self, references: References, ann: Any, candidates: int,
                      k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The index's top ``max(candidates, k)`` anchors, re-scored exactly against the
        anchors' sequence descriptors (the map's stored ones when they fit, else pooled from
        their frames) and re-ranked (:func:`vpr_seq_ros.matching.ann.rerank`)."""
        from vpr_seq_ros.matching.ann import frame_distances, rerank, trailing_offsets

        offsets = trailing_offsets(self.length)[0]

        def exact(rows: np.ndarray, current: np.ndarray) -> np.ndarray:
            pre = self.stored(references)
            if pre is not None:
                return frame_distances(pre.descriptors, rows, current)
            frames = references.descriptors  # the index holds only anchors with a window
            taken = (rows[:, None] + offsets).reshape(-1)
            pooled = seqgem(np.asarray(frames[taken], np.float32).reshape(
                len(rows), self.length, -1), self.p)
            return frame_distances(pooled, np.arange(len(rows)), current)

        def search(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            current = seqgem(window, self.p)
            found, _ = ann.search(current[None], max(candidates, k))
            return rerank(found[0], lambda rows: exact(rows, current), k)

        return search

    def sample_search(self, references: References, anchors: np.ndarray
                      ) -> Callable[[np.ndarray], np.ndarray]:
        """L2 distances of the window's SeqGeM descriptor to the anchors' (the map's stored
        ones when they fit, else pooled from the anchors' frames; inf without a window)."""
        from vpr_seq_ros.matching.ann import AnchorDistances, trailing_offsets

        anchors = np.asarray(anchors, np.int64)
        segments, frames = np.asarray(references.segments), references.descriptors
        taken = anchors[:, None] + trailing_offsets(self.length)  # (A, L), only these read
        safe = np.clip(taken, 0, max(len(frames) - 1, 0))
        valid = np.all((taken >= 0) & (segments[safe] == segments[anchors][:, None]), axis=1)
        pre = self.stored(references)
        if pre is not None:
            rows = np.asarray(pre.descriptors[anchors], np.float32)
        else:
            rows = seqgem(np.asarray(frames[safe.reshape(-1)]).reshape(
                safe.shape + frames.shape[1:]), self.p)
        sample = AnchorDistances(rows, np.zeros(len(anchors), np.int64),
                                 np.arange(len(anchors)), trailing_offsets(1), valid=valid)
        return lambda window: sample(seqgem(window, self.p)[None])

    def stream(self, references: References) -> StreamingMatcher:
        return SeqGemStream(references, self.length, self.p, self.stored(references))


class SeqGemStream(StreamingMatcher):
    """SeqGeM over the last L query keyframes; exact L2 distances to every reference anchor's
    SeqGeM descriptor (``(N,)``, inf where the anchor has no full window).

    Per reference it keeps the sequence descriptor (``4 D`` bytes), its squared norm (4) and
    whether it has a window (1); the frame descriptors stay in the store, from which the
    sequence descriptor of a newly appended keyframe is derived.

    Args:
        references: the store.
        length: L.
        p: SeqGeM exponent.
        stored: precomputed descriptors of a fixed map that fit (L, p), if any.
    """

    def __init__(self, references: References, length: int, p: float,
                 stored: Precomputed | None = None) -> None:
        self._refs = references
        self.length, self.p = length, p
        segments = np.asarray(references.segments)
        if stored is not None:
            seq = stored.descriptors
            valid = window_starts(segments, length, 'trailing')[1]
        else:
            seq, valid = sequence_descriptors(references.descriptors, length, p, segments)
        # stored float16 descriptors stay float16 (a fixed map: nothing is appended to them)
        seq = seq if seq.dtype == np.float16 and not references.growing else \
            np.asarray(seq, np.float32)
        sq = squared_norms(seq) if len(seq) else np.zeros(0, np.float32)
        self._seq = GrowingArray(seq.shape[1:], seq.dtype, initial=seq)
        self._sq = GrowingArray((), np.float32, initial=sq)
        self._valid = GrowingArray((), bool, initial=np.asarray(valid, bool))
        self._buffer = WindowBuffer(length)

    def _extend(self, seq: np.ndarray, valid: np.ndarray) -> None:
        self._seq.extend(seq)
        self._sq.extend(squared_norms(seq) if len(seq) else np.zeros(0, np.float32))
        self._valid.extend(np.asarray(valid, bool))

    @property
    def num_frames(self) -> int:
        return len(self._buffer)

    def reset(self) -> None:
        self._buffer.clear()

    def push(self, descriptor: np.ndarray, segment: int = 0) -> np.ndarray | None:
        window = self._buffer.push(descriptor, segment)
        if window is None:
            return None
        current = seqgem(window, self.p)
        seq = self._seq.view
        if not len(seq):
            return np.zeros(0)
        out = distance_column(seq, current, 'euclidean', self._sq.view).astype(np.float64)
        out[~self._valid.view] = np.inf
        return out

    def appended(self) -> None:
        """Derive the newest stored keyframe's sequence descriptor from the last L in the
        store (a window only when they share its segment)."""
        n, length = len(self._refs), self.length
        segments = self._refs.segments
        frames = self._refs.descriptors
        has_window = n >= length and bool(np.all(segments[n - length:n] == segments[n - 1]))
        row = seqgem(frames[n - length:n], self.p) if has_window else \
            np.zeros(frames.shape[1], np.float32)
        self._extend(row[None].astype(np.float32), np.array([has_window]))


__all__ = ['SeqGem', 'SeqGemStream']
