"""The frame-encoder contract.

A frame encoder maps a batch of frames to descriptors: images ``list of (H, W, 3) uint8 RGB``
-> ``(B, D) float32``, or, for descriptor inputs, ``(B, D_in) float32 -> (B, D) float32``.
It owns its preprocessing and normalisation. ``settings()`` says what made the descriptors; a
map stores it and refuses queries encoded with different settings.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np


class FrameEncoder(ABC):
    """Base class of frame encoders.

    Attributes:
        name: registry name (``patchnorm``, ``npy``, ``jist-r18``, ...).
        input_kind: ``'image'`` or ``'descriptor'``: what :meth:`encode` takes.
        seqgem_p: learnt SeqGeM exponent carried by the model, or None.
    """

    name: str = ''
    input_kind: str = 'image'
    seqgem_p: float | None = None

    @property
    @abstractmethod
    def dim(self) -> int:
        """Descriptor dimension D (may be known only after the first call for ``npy``)."""

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that determines the output."""

    @abstractmethod
    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Encode a batch.

        Args:
            inputs: images ``(H, W, 3)`` uint8 RGB, or descriptors ``(D_in,)`` float32.

        Returns:
            ``(B, D)`` float32 descriptors.
        """


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (weights checksum recorded in maps and model cards)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()
