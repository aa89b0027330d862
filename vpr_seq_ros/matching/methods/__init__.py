"""Building a configured method, and the batch entry point.

One module per method (``single``, ``seqmatch``, ``seqgem``), each a
:class:`~vpr_seq_ros.matching.methods.base.SequenceMethod` registered by name in
:mod:`vpr_seq_ros.matching`. Everything outside this package gets its method from
:func:`build_method` and never compares method names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpr_seq_ros.matching import method_class
from vpr_seq_ros.matching.methods.base import (MatchOutput, Precomputed, SequenceMethod,
                                               StreamingMatcher)
from vpr_seq_ros.matching.methods.seqmatch import seqmatch_settings
from vpr_seq_ros.types import EncodedRun

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import Config


def build_method(cfg: Config, learnt_seqgem_p: float | None = None) -> SequenceMethod:
    """The method of ``cfg.matching.method`` with its parameters resolved.

    Args:
        cfg: configuration (``sequence`` and ``matching`` sections).
        learnt_seqgem_p: the encoder's learnt SeqGeM exponent (``encoder.seqgem_p``), if any.

    Raises:
        ConfigError: unknown method.
    """
    return method_class(cfg.matching.method).from_config(cfg, learnt_seqgem_p)


def match_runs(ref: EncodedRun, query: EncodedRun, cfg: Config,
               seqgem_p: float | None = None, keep_matrix: bool = False) -> MatchOutput:
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
    return build_method(cfg, seqgem_p).match(ref, query, cfg.matching.top_k, keep_matrix)


def sequence_descriptors_of(cfg: Config, learnt_seqgem_p: float | None,
                            run: EncodedRun) -> Precomputed | None:
    """The sequence descriptors to export for a run (``vpr-seq describe``).

    The configured method's map-side descriptors when it has any; otherwise, for an encoder
    that carries a learnt SeqGeM exponent (it was trained as a SeqGeM sequence aggregator),
    SeqGeM's; otherwise None.
    """
    from vpr_seq_ros.matching.methods.seqgem import SeqGem

    pre = build_method(cfg, learnt_seqgem_p).precompute(run)
    if pre is None and learnt_seqgem_p is not None:
        pre = SeqGem.from_config(cfg, learnt_seqgem_p).precompute(run)
    return pre


__all__ = ['MatchOutput', 'Precomputed', 'SequenceMethod', 'StreamingMatcher', 'build_method',
           'match_runs', 'seqmatch_settings', 'sequence_descriptors_of']
