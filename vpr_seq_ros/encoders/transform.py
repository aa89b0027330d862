"""A learnt transform after any frame encoder: SeqMatchNet's ``y = L2norm(W x + b)``.

The wrapped encoder's descriptors ``(B, D_in)`` become ``(B, D_out)`` unit-norm descriptors.
The transform runs in numpy (float32), so after loading it needs no torch. The input dimension
is checked against the base encoder when it is known, else (the ``npy`` encoder) at the first
:meth:`TransformedEncoder.encode`.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from vpr_seq_ros.config import TransformConfig
from vpr_seq_ros.encoders.base import FrameEncoder, TransformPlugin
from vpr_seq_ros.errors import ModelError

_LOG = logging.getLogger(__name__)

_NORM_EPS = 1e-12  # as F.normalize


class TransformedEncoder(FrameEncoder):
    """``base`` followed by ``y = L2norm(W x + b)``.

    ``name`` is ``<base>+seqmatchnet``; ``input_kind`` is the base's; :attr:`seqgem_p` is None
    (a learnt SeqGeM exponent of the base does not apply to the transformed space).
    """

    def __init__(self, base: FrameEncoder, tcfg: TransformConfig) -> None:
        """Wrap ``base``; the weights load now, or (random init, unknown base dim) at first use.

        Raises:
            ModelError: no weights and no random_init; weights missing, unreadable, not fitting,
                or of an input dimension other than the base's.
        """
        self.base = base
        self.name = f'{base.name}+{tcfg.name}'
        self.input_kind = base.input_kind
        self.seqgem_p = None
        self.precision = base.precision
        self.parity = base.parity
        self._tcfg = tcfg
        self._weight: np.ndarray | None = None  # (D_out, D_in) float32
        self._bias: np.ndarray | None = None  # (D_out,) float32
        self._sha256: str | None = None
        self._random_init = False
        if tcfg.weights is None and not tcfg.random_init:
            raise ModelError('the seqmatchnet transform needs its weights: set '
                             'encoder.transform.weights (vpr-seq: --transform-weights PATH; see '
                             'models/README.md), or encoder.transform.random_init for tests')
        if tcfg.weights is not None or base.dim > 0:
            self._load(base.dim if base.dim > 0 else None)

    def _load(self, in_dim: int | None) -> None:
        from vpr_seq_ros.models.seqmatchnet import load_seqmatchnet

        loaded = load_seqmatchnet(self._tcfg.weights, self._tcfg.random_init, in_dim)
        linear = loaded.transform.linear
        self._weight = linear.weight.detach().cpu().numpy().astype(np.float32)
        self._bias = linear.bias.detach().cpu().numpy().astype(np.float32)
        self._sha256 = loaded.weights_sha256
        self._random_init = loaded.random_init
        if in_dim is not None:
            self._check_dim(in_dim)

    def _check_dim(self, in_dim: int) -> None:
        assert self._weight is not None
        if self._weight.shape[1] != in_dim:
            raise ModelError(
                f'the seqmatchnet transform takes {self._weight.shape[1]}-D descriptors, but '
                f'the {self.base.name} encoder gives {in_dim}-D ones; use transform weights '
                'trained on this encoder')

    @property
    def dim(self) -> int:
        return -1 if self._weight is None else int(self._weight.shape[0])

    def settings(self) -> dict[str, Any]:
        return {'name': self.name, 'base': self.base.settings(),
                'transform': {'name': self._tcfg.name, 'weights_sha256': self._sha256,
                              'random_init': self._random_init, 'dim': self.dim}}

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode with the base, then transform.

        Returns:
            ``(B, D_out)`` float32 unit-norm descriptors.

        Raises:
            ModelError: the base's descriptor dimension differs from the transform's input.
        """
        x = self.base.encode(inputs)
        if self._weight is None:
            self._load(int(x.shape[1]))
        else:
            self._check_dim(int(x.shape[1]))
        assert self._weight is not None and self._bias is not None
        y = x.astype(np.float32, copy=False) @ self._weight.T + self._bias
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        return (y / np.maximum(norms, _NORM_EPS)).astype(np.float32, copy=False)


class SeqMatchNetPlugin(TransformPlugin):
    """``seqmatchnet``: SeqMatchNet's learnt ``y = L2norm(W x + b)`` after any frame encoder.

    Loads SeqMatchNet's training checkpoints (``pool.1.conv.weight``/``bias``, DataParallel
    ``module.`` segments dropped) and this project's ``seqmatchnet`` checkpoints.
    """

    name = 'seqmatchnet'
    checkpoint_kind = 'seqmatchnet'
    checkpoint_layouts = ('seqmatchnet',)

    def detect_layout(self, keys: Sequence[str]) -> str | None:
        return 'seqmatchnet' if any(k.startswith('pool.') for k in keys) else None

    def wrap(self, base: FrameEncoder, tcfg: TransformConfig) -> FrameEncoder:
        wrapped = TransformedEncoder(base, tcfg)
        _LOG.info('frame descriptors go through the %s transform (D = %d)', tcfg.name,
                  wrapped.dim)
        return wrapped
