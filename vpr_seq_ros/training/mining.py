"""SeqMatchNet hard-negative mining over the whole training map.

The mining matrix is the sequence distance of every (reference anchor, query anchor) pair,
computed with the project's convolution-based sequence matcher
(:func:`vpr_seq_ros.matching.seqmatch.seqmatch_batch`, identity kernel): the mean over the L
aligned frames of the Euclidean frame distance (SeqMatchNet Eq. 3 and 4). With the ``single``
ablation L = 1: the distance of the anchor frames.

For a query (official ``QueryDatasetFromStruct.__getitem__``, over the whole map instead of a
random sample of 1000):

* the best positive is the reference anchor of smallest mining distance within the positive
  radius;
* the negatives are the reference anchors beyond the negative radius whose mining distance
  violates the margin, ``d(q, n) < d(q, p) + margin``, hardest (smallest) first, at most
  ``num_negatives``; a query without one is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_seq_ros.matching.seqmatch import SeqMatchSettings, seqmatch_batch
from vpr_seq_ros.training.data import window_offset


@dataclass(frozen=True, eq=False)
class Triplet:
    """A training query with its best positive and its margin-violating negatives.

    Attributes:
        query: query anchor row.
        positive: reference anchor row.
        negatives: ``(k,)`` int64 reference anchor rows, hardest first, ``1 <= k``.
        positive_distance: mining distance of the positive.
    """

    query: int
    positive: int
    negatives: np.ndarray
    positive_distance: float


def mining_columns(ref: np.ndarray, ref_segments: np.ndarray, query_windows: np.ndarray,
                   window: str) -> np.ndarray:
    """Sequence distances of every reference anchor to a batch of query windows.

    Each query window becomes its own segment of a small query run, so the convolution-based
    matcher scores exactly one anchor per window; the cost is ``N * B * L`` frame distances
    whatever the size of the query traverse.

    Args:
        ref: ``(N, D)`` reference frame descriptors (transformed).
        ref_segments: ``(N,)`` segment ids of the reference frames.
        query_windows: ``(B, L, D)`` the frames of B query windows, oldest first (L = 1 for
            the ``single`` ablation).
        window: ``trailing`` or ``centred``: how reference anchors relate to their windows.

    Returns:
        ``(N, B)`` float32: mean aligned Euclidean distance; inf where a reference anchor has no
        window.
    """
    b, length, dim = query_windows.shape
    flat = np.ascontiguousarray(query_windows.reshape(b * length, dim))
    segments = np.repeat(np.arange(b, dtype=np.int64), length)
    result = seqmatch_batch(ref, flat, SeqMatchSettings(length=length, metric='euclidean',
                                                        window=window),
                            top_k=1, ref_segments=ref_segments, query_segments=segments,
                            keep_matrix=True)
    assert result.matrix is not None
    anchors = np.arange(b, dtype=np.int64) * length + window_offset(length, window)
    return result.matrix[:, anchors]


def mine_triplets(columns: np.ndarray, queries: np.ndarray, positives: list[np.ndarray],
                  negative_mask: list[np.ndarray], margin: float,
                  num_negatives: int) -> list[Triplet]:
    """Best positive and margin-violating hard negatives of every query.

    Args:
        columns: ``(N, B)`` mining distances of the B queries (columns in ``queries`` order).
        queries: ``(B,)`` query anchor rows.
        positives: per query, the candidate positive reference anchors (within the positive
            radius, with a full window).
        negative_mask: per query, ``(N,)`` bool: reference anchors that may be negatives
            (beyond the negative radius, with a full window).
        margin: the hinge margin.
        num_negatives: at most this many negatives per query.

    Returns:
        The triplets of the queries that have a positive and at least one violating negative,
        in query order.
    """
    triplets = []
    for col, j in enumerate(queries):
        pos = positives[col]
        dist = columns[:, col].astype(np.float64)
        if len(pos) == 0:
            continue
        pos_dist = dist[pos]
        if not np.isfinite(pos_dist).any():
            continue
        best = int(pos[int(np.argmin(pos_dist))])
        d_pos = float(dist[best])
        cand = np.flatnonzero(negative_mask[col] & (dist < d_pos + margin))
        if len(cand) == 0:
            continue
        order = np.argsort(dist[cand], kind='stable')[:num_negatives]
        triplets.append(Triplet(int(j), best, cand[order].astype(np.int64), d_pos))
    return triplets


__all__ = ['Triplet', 'mine_triplets', 'mining_columns']
