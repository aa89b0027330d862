"""SeqMatchNet's learnt frame-descriptor transform: ``y = L2norm(W x + b)``.

The official ``WXpB`` is a ``Conv1d(D_in, D_out, kernel_size=1)`` with bias applied to one
descriptor at a time, i.e. a ``Linear`` with ``weight = conv.weight[:, :, 0]``; its output is
L2-normalised per frame (``get_models.py : get_pooling``). Official state_dict keys:
``pool.1.conv.weight`` ``[D_out, D_in, 1]`` and ``pool.1.conv.bias`` ``[D_out]`` (with
``pool.module.1...`` after DataParallel training). This project's checkpoints (kind
``seqmatchnet``) hold :class:`SeqMatchNetTransform`'s own state_dict (``linear.weight``
``[D_out, D_in]``, ``linear.bias``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vpr_seq_ros.errors import ModelError
from vpr_seq_ros.models.checkpoints import (LAYOUT_RANDOM, LAYOUT_SEQMATCHNET, RANDOM_SEED,
                                            key_problems, load_state_dict_strict,
                                            read_checkpoint)

_LOG = logging.getLogger(__name__)

OFFICIAL_WEIGHT = 'pool.1.conv.weight'
OFFICIAL_BIAS = 'pool.1.conv.bias'


class SeqMatchNetTransform(nn.Module):
    """``(B, D_in) -> (B, D_out)``: ``L2norm(W x + b)`` per row."""

    def __init__(self, in_dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, in_dim if out_dim is None else out_dim)

    @property
    def in_dim(self) -> int:
        """Input descriptor dimension D_in."""
        return self.linear.in_features

    @property
    def out_dim(self) -> int:
        """Output descriptor dimension D_out."""
        return self.linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform frame descriptors.

        Args:
            x: ``(B, D_in)`` float frame descriptors.

        Returns:
            ``(B, D_out)`` float, unit L2 norm per row.
        """
        return F.normalize(self.linear(x), p=2.0, dim=-1)

    @classmethod
    def identity(cls, dim: int) -> SeqMatchNetTransform:
        """``W = I``, ``b = 0``: the transform only L2-normalises (a start for training)."""
        transform = cls(dim)
        with torch.no_grad():
            transform.linear.weight.copy_(torch.eye(dim))
            transform.linear.bias.zero_()
        return transform

    @classmethod
    def seeded(cls, in_dim: int, out_dim: int | None = None,
               seed: int = RANDOM_SEED) -> SeqMatchNetTransform:
        """Default ``nn.Linear`` initialisation drawn with a fixed seed (global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return cls(in_dim, out_dim)

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights in the official SeqMatchNet key layout (conv1d kernel 1)."""
        return {OFFICIAL_WEIGHT: self.linear.weight.detach().clone()[:, :, None],
                OFFICIAL_BIAS: self.linear.bias.detach().clone()}


def transform_from_official(state_dict: Mapping[str, torch.Tensor],
                            source: str = 'state_dict') -> SeqMatchNetTransform:
    """Build the transform from official keys (``module.`` segments already removed).

    Raises:
        ModelError: missing or unexpected keys, or shapes that are not ``[D_out, D_in, 1]``
            and ``[D_out]``.
    """
    problems = key_problems((OFFICIAL_WEIGHT, OFFICIAL_BIAS), state_dict)
    if not problems:
        weight, bias = state_dict[OFFICIAL_WEIGHT], state_dict[OFFICIAL_BIAS]
        if weight.ndim != 3 or weight.shape[2] != 1:
            problems.append(f'{OFFICIAL_WEIGHT} has shape {list(weight.shape)}, expected '
                            '[D_out, D_in, 1]')
        elif tuple(bias.shape) != (weight.shape[0],):
            problems.append(f'{OFFICIAL_BIAS} has shape {list(bias.shape)}, expected '
                            f'[{weight.shape[0]}]')
    if problems:
        raise ModelError(f'{source} does not fit the SeqMatchNet layout: ' + '; '.join(problems)
                         + '. Check that the file holds the weights you meant (see '
                         'models/README.md).')
    transform = SeqMatchNetTransform(int(weight.shape[1]), int(weight.shape[0]))
    with torch.no_grad():
        transform.linear.weight.copy_(weight[:, :, 0])
        transform.linear.bias.copy_(bias)
    return transform


@dataclass
class LoadedTransform:
    """A SeqMatchNet transform (eval mode, CPU) and what it was made from.

    Attributes:
        transform: the module.
        weights_sha256: SHA-256 of the checkpoint file, or None for random weights.
        layout: ``seqmatchnet``, ``vpr_seq_ros/seqmatchnet`` or ``random``.
        random_init: the weights are seeded random (seed 0).
        path: the checkpoint file, or None.
    """

    transform: SeqMatchNetTransform
    weights_sha256: str | None
    layout: str
    random_init: bool
    path: Path | None


def load_seqmatchnet(weights: str | Path | None, random_init: bool = False,
                     in_dim: int | None = None) -> LoadedTransform:
    """Load the transform from a checkpoint, or draw seeded random weights on request.

    Args:
        weights: an official SeqMatchNet or a project ``seqmatchnet`` checkpoint, or None.
        random_init: with ``weights`` None, use seeded random weights (seed 0), square
            ``in_dim x in_dim``; tests only. Ignored when ``weights`` is given.
        in_dim: input dimension for ``random_init``.

    Raises:
        ModelError: no weights and no ``random_init`` (or no ``in_dim`` for it); the file is
            missing, unreadable, of another kind, or does not fit (keys and shapes named).
    """
    if weights is None:
        if not random_init:
            raise ModelError('the seqmatchnet transform needs its weights: set '
                             'encoder.transform.weights (vpr-seq: --transform-weights PATH; see '
                             'models/README.md), or encoder.transform.random_init for tests')
        if in_dim is None or in_dim <= 0:
            raise ModelError('a randomly initialised seqmatchnet transform needs the input '
                             'dimension; encode a first batch before building it')
        _LOG.warning('seqmatchnet transform uses seeded RANDOM weights (seed %d): tests only',
                     RANDOM_SEED)
        return LoadedTransform(SeqMatchNetTransform.seeded(in_dim).eval(), None, LAYOUT_RANDOM,
                               True, None)
    ckpt = read_checkpoint(weights)
    if ckpt.kind != 'seqmatchnet':
        raise ModelError(f'{ckpt.path} holds {ckpt.kind} encoder weights, not a SeqMatchNet '
                         f'transform; give it as encoder.weights (vpr-seq: --weights '
                         f'{ckpt.path})')
    if ckpt.layout == LAYOUT_SEQMATCHNET:
        transform = transform_from_official(ckpt.state_dict, str(ckpt.path))
    else:
        weight = ckpt.state_dict.get('linear.weight')
        if weight is None or weight.ndim != 2:
            raise ModelError(f'{ckpt.path} does not fit the vpr_seq_ros seqmatchnet layout: '
                             'missing keys: linear.weight (a [D_out, D_in] tensor)')
        transform = SeqMatchNetTransform(int(weight.shape[1]), int(weight.shape[0]))
        load_state_dict_strict(transform, ckpt.state_dict, str(ckpt.path),
                               'vpr_seq_ros seqmatchnet')
    _LOG.info('loaded seqmatchnet transform %s (%d -> %d, sha256 %s)', ckpt.path,
              transform.in_dim, transform.out_dim, ckpt.sha256[:12])
    return LoadedTransform(transform.eval(), ckpt.sha256, ckpt.layout, False, ckpt.path)
