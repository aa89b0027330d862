"""SeqSLAM's training-free frame descriptor: a patch-normalised greyscale thumbnail.

The image is converted to grey, resized to ``width x height`` with area averaging, and every
non-overlapping ``patch_size x patch_size`` patch is normalised to zero mean and unit standard
deviation (a flat patch becomes zeros). The descriptor is the flattened thumbnail,
``D = width * height``, scaled to unit length when ``normalize`` is ``l2`` (what Euclidean
distance needs, and what the official SeqMatchNet baseline does) and left as it is with
``none`` (SeqSLAM: SAD with contrast enhancement). The configuration's default, ``auto``,
picks by the matching distance (:class:`~vpr_seq_ros.config.PatchNormConfig`); an unresolved
``auto`` here means ``l2``.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any, Sequence

import numpy as np
from PIL import Image

from vpr_seq_ros.config import EncoderConfig, PatchNormConfig
from vpr_seq_ros.encoders.base import EncoderPlugin, FrameEncoder
from vpr_seq_ros.errors import SourceError

_EPS = 1e-6


def grey_thumbnail(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(H, W, 3)`` or ``(H, W)`` uint8 -> ``(height, width)`` float32 grey in [0, 255]."""
    if image.ndim == 3:
        pil = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert('L')
    elif image.ndim == 2:
        pil = Image.fromarray(np.ascontiguousarray(image))
    else:
        raise SourceError(f'expected an (H, W, 3) or (H, W) image, got shape {image.shape}')
    if pil.size != (width, height):
        pil = pil.resize((width, height), Image.Resampling.BOX)
    return np.asarray(pil, dtype=np.float32)


def patch_normalise(thumb: np.ndarray, patch_size: int) -> np.ndarray:
    """Normalise every ``patch_size`` square patch of a 2-D array to zero mean, unit std."""
    h, w = thumb.shape
    p = patch_size
    blocks = thumb.reshape(h // p, p, w // p, p).astype(np.float64)
    mean = blocks.mean(axis=(1, 3), keepdims=True)
    std = blocks.std(axis=(1, 3), keepdims=True)
    normed = (blocks - mean) / np.maximum(std, _EPS)
    normed[np.broadcast_to(std < _EPS, normed.shape)] = 0.0
    return normed.reshape(h, w).astype(np.float32)


class PatchNormEncoder(FrameEncoder):
    """Patch-normalised thumbnails, ``(B, width*height)`` float32."""

    name = 'patchnorm'
    input_kind = 'image'

    def __init__(self, cfg: PatchNormConfig | None = None) -> None:
        cfg = cfg or PatchNormConfig()
        if cfg.normalize == 'auto':  # not resolved by a Config: the Euclidean default
            cfg = replace(cfg, normalize='l2')
        self.cfg = cfg

    @property
    def dim(self) -> int:
        return self.cfg.width * self.cfg.height

    def settings(self) -> dict[str, Any]:
        return {'name': self.name, **asdict(self.cfg)}

    def encode(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(inputs), self.dim), dtype=np.float32)
        for row, image in enumerate(inputs):
            thumb = grey_thumbnail(image, self.cfg.width, self.cfg.height)
            out[row] = patch_normalise(thumb, self.cfg.patch_size).ravel()
        if self.cfg.normalize == 'l2':
            # A flat image (all patches flat) stays all zeros.
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.maximum(norms, _EPS)
        return out


class PatchNormPlugin(EncoderPlugin):
    """``patchnorm``: no weights, fp32 only, not exported (it is not a network)."""

    name = 'patchnorm'

    def build(self, cfg: EncoderConfig, precision: str = 'fp32',
              num_threads: int | None = None) -> FrameEncoder:
        return PatchNormEncoder(cfg.patchnorm)
