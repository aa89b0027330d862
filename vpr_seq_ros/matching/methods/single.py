"""``single``: the nearest reference frame (a window of one frame).

Batch: faiss ``IndexFlatL2`` for plain Euclidean distances; with ``sad`` or contrast
enhancement, the L = 1 sequence match (which applies them exactly as ``seqmatch`` does).
Streaming: the online sequence matcher with L = 1.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.index import FlatL2Index, search_matches
from vpr_seq_ros.matching.methods.base import (MatchOutput, References, SequenceMethod,
                                               StreamingMatcher)
from vpr_seq_ros.matching.methods.seqmatch import OnlineStream, seqmatch_settings
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.types import EncodedRun

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import Config


class SingleFrame(SequenceMethod):
    """Nearest reference frame.

    Args:
        settings: frame distance and contrast enhancement (length 1).
    """

    name = 'single'

    def __init__(self, settings: SeqMatchSettings) -> None:
        self.settings = replace(settings, length=1)

    @classmethod
    def from_config(cls, cfg: Config, learnt_seqgem_p: float | None = None) -> SingleFrame:
        return cls(seqmatch_settings(cfg, length=1))

    @property
    def window_length(self) -> int:
        return 1

    def parameters(self) -> dict[str, object]:
        return {**super().parameters(), 'distance': self.settings.metric,
                'contrast_window': self.settings.contrast_window}

    def batch(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool) -> MatchOutput:
        if self.settings.metric != 'euclidean' or self.settings.contrast_window:
            result = seqmatch_batch(ref.descriptors, query.descriptors, self.settings, top_k,
                                    ref.segments, query.segments, keep_matrix)
            return MatchOutput(result.matches, result.ref_valid, result.matrix)
        index = FlatL2Index(ref.descriptors)
        valid = np.ones(len(query), dtype=bool)
        matches = search_matches(index, query.descriptors, valid, top_k)
        matrix = distance_matrix(ref.descriptors, query.descriptors, 'euclidean') \
            if keep_matrix else None
        return MatchOutput(matches, np.ones(len(ref), dtype=bool), matrix)

    def stream(self, references: References) -> StreamingMatcher:
        return OnlineStream(references, self.settings)

    def _check_approximate(self) -> None:
        if self.settings.metric != 'euclidean' or self.settings.contrast_window:
            raise MatchingError('approximate search of single frames is Euclidean without '
                                'contrast enhancement: use matching.distance = euclidean and '
                                'no matching.contrast, or matching.index.kind = exact')

    def window_search(self, references: References, ann: Any, candidates: int,
                      k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """The index's top ``max(candidates, k)`` frames, re-scored exactly from the map's
        rows and re-ranked (:func:`vpr_seq_ros.matching.ann.rerank`): the distances are
        exact whatever the index (PQ codes only approximate them)."""
        from vpr_seq_ros.matching.ann import frame_distances, rerank

        self._check_approximate()

        def search(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            query = window[-1]
            found, _ = ann.search(query[None], max(candidates, k))
            return rerank(found[0], lambda rows: frame_distances(references.descriptors, rows,
                                                                 query), k)

        return search

    def sample_search(self, references: References, anchors: np.ndarray
                      ) -> Callable[[np.ndarray], np.ndarray]:
        """Euclidean distances of the window's frame to the anchors' frames (cached)."""
        from vpr_seq_ros.matching.ann import AnchorDistances, trailing_offsets

        self._check_approximate()
        return AnchorDistances(references.descriptors, np.asarray(references.segments),
                               anchors, trailing_offsets(1))


__all__ = ['SingleFrame']
