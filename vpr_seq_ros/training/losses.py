"""Training losses: SeqMatchNet's sequence-distance triplet hinge, JIST's SeqGeM triplet loss and
CosPlace's CosFace classifier.

Shapes: ``B`` queries, ``K`` negatives, ``L`` frames, ``D`` dimensions, ``C`` classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_DIST_EPS = 1e-12


def sequence_distance(query: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """Mean aligned Euclidean distance between sequences (SeqMatchNet Eq. 3).

    ``d(Q, R) = (1/L) sum_t ||q_t - r_t||_2`` (not squared). The square root is taken of the
    squared distance floored at 1e-12, so identical frames give a finite gradient.

    Args:
        query: ``(..., L, D)`` frames of the query sequences.
        refs: ``(..., L, D)`` frames of the reference sequences (broadcast against ``query``).

    Returns:
        ``(...)`` distances.
    """
    squared = (query - refs).pow(2).sum(dim=-1)
    return squared.clamp_min(_DIST_EPS).sqrt().mean(dim=-1)


def triplet_hinge(d_pos: torch.Tensor, d_neg: torch.Tensor, margin: float) -> torch.Tensor:
    """SeqMatchNet's hinge ``mean(max(d(q, p) - d(q, n) + margin, 0))`` over (query, negative)
    pairs.

    Args:
        d_pos: ``(P,)`` query-positive distance of every pair.
        d_neg: ``(P,)`` query-negative distance of every pair.
        margin: the margin.

    Returns:
        Scalar loss.
    """
    return F.relu(d_pos - d_neg + margin).mean()


def seqgem_triplet_loss(query: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor,
                        margin: float) -> torch.Tensor:
    """JIST's sequence loss: ``TripletMarginLoss(margin, p=2, reduction='sum')`` of every
    (query, positive, negative) triple, divided by ``B * K``.

    Args:
        query: ``(B, D)`` SeqGeM descriptors of the queries (not normalised).
        positive: ``(B, D)`` of their best positives.
        negatives: ``(B, K, D)`` of their hard negatives.
        margin: the margin.

    Returns:
        Scalar loss.
    """
    b, k, d = negatives.shape
    loss = F.triplet_margin_loss(query[:, None].expand(b, k, d).reshape(b * k, d),
                                 positive[:, None].expand(b, k, d).reshape(b * k, d),
                                 negatives.reshape(b * k, d), margin=margin, p=2,
                                 reduction='sum')
    return loss / (b * k)


class CosFace(nn.Module):
    """Large-margin cosine classifier (CosFace / LMCL, as CosPlace's ``MarginCosineProduct``).

    ``(B, D)`` descriptors and ``(B,)`` labels -> ``(B, C)`` logits
    ``s * (cos(x, w_c) - m * [c == label])``; train with cross-entropy.
    """

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0,
                 margin: float = 0.4) -> None:
        super().__init__()
        self.scale = scale
        self.margin = margin
        self.weight = nn.Parameter(torch.empty(num_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Logits with the margin subtracted at the true class.

        Args:
            x: ``(B, D)`` descriptors.
            labels: ``(B,)`` int64 class ids in ``[0, C)``.

        Returns:
            ``(B, C)`` logits.
        """
        cosine = F.linear(F.normalize(x.float(), dim=1), F.normalize(self.weight, dim=1))
        one_hot = F.one_hot(labels, self.num_classes).to(cosine.dtype)
        return self.scale * (cosine - self.margin * one_hot)


__all__ = ['CosFace', 'seqgem_triplet_loss', 'sequence_distance', 'triplet_hinge']
