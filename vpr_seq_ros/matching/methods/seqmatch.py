"""``seqmatch``: SeqMatchNet / SeqSLAM sequence matching (the mean aligned frame distance).

Batch: :func:`~vpr_seq_ros.matching.seqmatch.seqmatch_batch` with the configured window
(``trailing`` or the official ``centred`` protocol). Streaming:
:class:`~vpr_seq_ros.matching.seqmatch.OnlineSeqMatcher` with trailing windows, which in a
growing store also holds the keyframe descriptors (its running sums need them in its own buffer).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from vpr_seq_ros.errors import MatchingError
from vpr_seq_ros.matching.methods.base import (MatchOutput, References, SequenceMethod,
                                               StreamingMatcher)
from vpr_seq_ros.matching.seqmatch import OnlineSeqMatcher, SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.types import EncodedRun

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import Config


def seqmatch_settings(cfg: Config, length: int | None = None) -> SeqMatchSettings:
    """The :class:`SeqMatchSettings` of a configuration (``length`` overrides L)."""
    contrast = cfg.matching.contrast
    m = cfg.matching
    return SeqMatchSettings(length=cfg.sequence.length if length is None else length,
                            metric=m.distance, window=cfg.sequence.window,
                            slopes=tuple(m.slopes),
                            contrast_window=contrast.window if contrast.enabled else None,
                            velocity_kernel=m.velocity_kernel, slope_scores=m.slope_scores,
                            slope_penalty=m.slope_penalty)


class OnlineStream(StreamingMatcher):
    """:class:`OnlineSeqMatcher` over a reference store.

    In a growing store the matcher's own reference buffer is where the store keeps its keyframe
    descriptors (:meth:`References.keep_frames_in`), so each keyframe is stored once.

    Args:
        references: the store.
        settings: sequence settings; the window is forced to ``trailing``.
    """

    def __init__(self, references: References, settings: SeqMatchSettings) -> None:
        settings = replace(settings, window='trailing')  # a robot only has the past
        refs = references.descriptors  # a float16 map stays float16 (read in blocks)
        if references.growing:
            refs = np.array(refs, np.float32)  # the matcher's buffer replaces the store's
        elif refs.dtype != np.float16:
            refs = np.asarray(refs, np.float32)
        self._online = OnlineSeqMatcher(refs, settings, references.segments)
        if references.growing:
            references.keep_frames_in(self)

    @property
    def num_frames(self) -> int:
        return self._online.num_frames

    def reset(self) -> None:
        self._online.reset()

    def push(self, descriptor: np.ndarray, segment: int = 0) -> np.ndarray | None:
        return self._online.push(descriptor, segment)

    @property
    def rows(self) -> np.ndarray:
        """``(N, D)`` reference descriptors held by the matcher (a view)."""
        return self._online.references

    def append_row(self, descriptor: np.ndarray, segment: int) -> None:
        """Append a reference frame (called by the store)."""
        self._online.append_reference(descriptor, segment)


class SeqMatch(SequenceMethod):
    """Mean over the L aligned frames of the frame distance (identity or velocity kernels).

    Args:
        settings: window length, placement, frame distance, slopes, contrast enhancement.
    """

    name = 'seqmatch'

    def __init__(self, settings: SeqMatchSettings) -> None:
        self.settings = settings

    @classmethod
    def from_config(cls, cfg: Config, learnt_seqgem_p: float | None = None) -> SeqMatch:
        return cls(seqmatch_settings(cfg))

    @property
    def window_length(self) -> int:
        return self.settings.length

    def parameters(self) -> dict[str, object]:
        s = self.settings
        return {**super().parameters(), 'distance': s.metric, 'window': s.window,
                'slopes': list(s.slopes), 'contrast_window': s.contrast_window}

    def batch(self, ref: EncodedRun, query: EncodedRun, top_k: int,
              keep_matrix: bool) -> MatchOutput:
        result = seqmatch_batch(ref.descriptors, query.descriptors, self.settings, top_k,
                                ref.segments, query.segments, keep_matrix, statistics=False)
        return MatchOutput(result.matches, result.ref_valid, result.matrix)

    def stream(self, references: References) -> StreamingMatcher:
        return OnlineStream(references, self.settings)

    def _check_approximate(self) -> SeqMatchSettings:
        s = self.settings
        if tuple(s.slopes) != (1.0,) or s.contrast_window:
            raise MatchingError('approximate seqmatch uses the identity kernel without '
                                'contrast enhancement: set matching.slopes = [1.0] and no '
                                'matching.contrast, or matching.index.kind = exact')
        return s

    def window_search(self, references: References, ann: Any, candidates: int,
                      k: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """Candidate anchors from the index, exact sequence distances along their diagonals
        (:class:`vpr_seq_ros.matching.ann.WindowCandidates`: one index search per new frame,
        the same anchors as :func:`~vpr_seq_ros.matching.ann.candidate_search`)."""
        from vpr_seq_ros.matching.ann import WindowCandidates, trailing_offsets

        s = self._check_approximate()
        return WindowCandidates(ann, references.descriptors, np.asarray(references.segments),
                                trailing_offsets(s.length), candidates, k, s.metric)

    def sample_search(self, references: References, anchors: np.ndarray
                      ) -> Callable[[np.ndarray], np.ndarray]:
        """Exact sequence distances along the anchors' diagonals, from their rows cached as
        float32 (:class:`vpr_seq_ros.matching.ann.AnchorDistances`)."""
        from vpr_seq_ros.matching.ann import AnchorDistances, trailing_offsets

        s = self._check_approximate()
        return AnchorDistances(references.descriptors, np.asarray(references.segments),
                               anchors, trailing_offsets(s.length), s.metric)


__all__ = ['OnlineStream', 'SeqMatch', 'seqmatch_settings']
