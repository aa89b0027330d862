"""Identity encoder for precomputed descriptors (``.npy``, the seqNet/SeqMatchNet format)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders.base import EncoderPlugin, FrameEncoder
from vpr_seq_ros.errors import SourceError


class IdentityEncoder(FrameEncoder):
    """Passes precomputed frame descriptors through unchanged (as float32)."""

    name = 'npy'
    input_kind = 'descriptor'

    def __init__(self) -> None:
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        return -1 if self._dim is None else self._dim

    def settings(self) -> dict[str, Any]:
        return {'name': self.name}

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.asarray(np.stack([np.asarray(x) for x in inputs]), dtype=np.float32)
        if batch.ndim != 2:
            raise SourceError(f'descriptors must be 1-D vectors, got a batch of shape '
                              f'{batch.shape}')
        if not np.all(np.isfinite(batch)):
            raise SourceError('descriptor input holds NaN or infinite values')
        self._dim = int(batch.shape[1])
        return batch


class IdentityPlugin(EncoderPlugin):
    """``npy``: precomputed descriptors in, the same out (fp32 only, nothing to export)."""

    name = 'npy'
    input_kind = 'descriptor'

    def build(self, cfg: EncoderConfig, precision: str = 'fp32',
              num_threads: int | None = None) -> FrameEncoder:
        return IdentityEncoder()
