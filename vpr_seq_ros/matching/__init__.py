"""Matching methods, picked by name from a closed registry.

Every method takes the reference and query runs as frame descriptors (each frame encoded once)
and returns the top-K reference anchors of every query anchor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from vpr_seq_ros.config import Config
from vpr_seq_ros.errors import ConfigError, MatchingError
from vpr_seq_ros.matching.distances import distance_matrix
from vpr_seq_ros.matching.index import FlatL2Index, search_matches
from vpr_seq_ros.matching.seqgem import sequence_descriptors
from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.matching.windows import check_length
from vpr_seq_ros.types import EncodedRun, Matches


@dataclass(frozen=True, eq=False)
class MatchOutput:
    """Top-K matches, the reference anchors that could be matched (have a window), and the
    full ``(N, M)`` distance matrix when it was asked for."""

    matches: Matches
    ref_valid: np.ndarray
    matrix: np.ndarray | None


def seqmatch_settings(cfg: Config, length: int | None = None) -> SeqMatchSettings:
    """The :class:`SeqMatchSettings` of a configuration."""
    contrast = cfg.matching.contrast
    return SeqMatchSettings(length=cfg.sequence.length if length is None else length,
                            metric=cfg.matching.distance, window=cfg.sequence.window,
                            slopes=tuple(cfg.matching.slopes),
                            contrast_window=contrast.window if contrast.enabled else None)


def _seqmatch(ref: EncodedRun, query: EncodedRun, cfg: Config, seqgem_p: float | None,
              keep_matrix: bool) -> MatchOutput:
    check_length(len(ref), cfg.sequence.length, 'reference map')
    check_length(len(query), cfg.sequence.length, 'query run')
    result = seqmatch_batch(ref.descriptors, query.descriptors, seqmatch_settings(cfg),
                            cfg.matching.top_k, ref.segments, query.segments, keep_matrix)
    return MatchOutput(result.matches, result.ref_valid, result.matrix)


def _single(ref: EncodedRun, query: EncodedRun, cfg: Config, seqgem_p: float | None,
            keep_matrix: bool) -> MatchOutput:
    """Nearest reference frame: faiss for plain Euclidean, else the L = 1 sequence match
    (which applies SAD and contrast enhancement exactly as the sequence methods do)."""
    if cfg.matching.distance != 'euclidean' or cfg.matching.contrast.enabled:
        result = seqmatch_batch(ref.descriptors, query.descriptors,
                                seqmatch_settings(cfg, length=1), cfg.matching.top_k,
                                ref.segments, query.segments, keep_matrix)
        return MatchOutput(result.matches, result.ref_valid, result.matrix)
    index = FlatL2Index(ref.descriptors)
    valid = np.ones(len(query), dtype=bool)
    matches = search_matches(index, query.descriptors, valid, cfg.matching.top_k)
    matrix = distance_matrix(ref.descriptors, query.descriptors, 'euclidean') \
        if keep_matrix else None
    return MatchOutput(matches, np.ones(len(ref), dtype=bool), matrix)


def _seqgem(ref: EncodedRun, query: EncodedRun, cfg: Config, seqgem_p: float | None,
            keep_matrix: bool) -> MatchOutput:
    length, window = cfg.sequence.length, cfg.sequence.window
    check_length(len(ref), length, 'reference map')
    check_length(len(query), length, 'query run')
    p = cfg.matching.seqgem_p if seqgem_p is None else seqgem_p
    ref_seq, ref_valid = sequence_descriptors(ref.descriptors, length, p, ref.segments, window)
    q_seq, q_valid = sequence_descriptors(query.descriptors, length, p, query.segments, window)
    if not ref_valid.any():
        raise MatchingError(f'no reference segment is at least {length} frames long')
    index = FlatL2Index(ref_seq, ref_valid)
    matches = search_matches(index, q_seq, q_valid, cfg.matching.top_k)
    matrix = None
    if keep_matrix:
        matrix = distance_matrix(ref_seq, q_seq, 'euclidean')
        matrix[~ref_valid] = np.inf
        matrix[:, ~q_valid] = np.inf
    return MatchOutput(matches, ref_valid, matrix)


MatchFn = Callable[[EncodedRun, EncodedRun, Config, 'float | None', bool], MatchOutput]

METHODS: dict[str, MatchFn] = {
    'single': _single,
    'seqmatch': _seqmatch,
    'seqgem': _seqgem,
}


def match_runs(ref: EncodedRun, query: EncodedRun, cfg: Config, seqgem_p: float | None = None,
               keep_matrix: bool = False) -> MatchOutput:
    """Match a query run against a reference run with ``cfg.matching.method``.

    Args:
        ref: reference frame descriptors (a map's run).
        query: query frame descriptors.
        cfg: configuration (method, sequence, matching sections).
        seqgem_p: learnt SeqGeM exponent of the encoder, overriding ``matching.seqgem_p``.
        keep_matrix: also return the ``(N, M)`` distance matrix (for plots).

    Raises:
        ConfigError: unknown method.
        MatchingError: a run shorter than one window, or descriptor dimensions that differ.
    """
    if ref.descriptors.shape[1] != query.descriptors.shape[1]:
        raise MatchingError(f'reference descriptors have D = {ref.descriptors.shape[1]}, query '
                            f'descriptors D = {query.descriptors.shape[1]}')
    try:
        method = METHODS[cfg.matching.method]
    except KeyError as err:
        raise ConfigError(f'unknown method {cfg.matching.method!r}; valid: '
                          f'{", ".join(METHODS)}') from err
    return method(ref, query, cfg, seqgem_p, keep_matrix)


__all__ = ['METHODS', 'MatchOutput', 'match_runs', 'seqmatch_settings']
