"""Frame encoders, picked by name from one registry (:mod:`vpr_seq_ros.encoders.registry`).

The contract (frames in, ``(B, D)`` float32 descriptors out, settings naming what made them) is
written down in :mod:`vpr_seq_ros.encoders.base`. :func:`build_encoder` is the one way to build
an encoder: the named plugin at the configured precision (through the parity gate of
:mod:`vpr_seq_ros.encoders.precision`), followed by the configured transform, if any.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vpr_seq_ros.encoders.base import (EncoderPlugin, FrameEncoder, TransformPlugin,
                                       comparable_settings)
from vpr_seq_ros.encoders.registry import (encoder_names, get_encoder_plugin,
                                           get_transform_plugin, register_encoder,
                                           transform_names, unregister_encoder)

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.config import EncoderConfig


def build_encoder(cfg: EncoderConfig, num_threads: int | None = None) -> FrameEncoder:
    """Build the frame encoder named by ``cfg.name``, with its transform if one is configured.

    Args:
        cfg: the encoder section of the configuration.
        num_threads: intra-op threads of a learnt encoder's runtime; None leaves its default.

    Raises:
        ConfigError: unknown encoder or transform, or a precision not available here.
        ModelError: weights missing or not fitting; a reduced precision failing its parity
            check against fp32.
    """
    from vpr_seq_ros.encoders.precision import build_at_precision

    encoder = build_at_precision(get_encoder_plugin(cfg.name), cfg, num_threads=num_threads)
    if cfg.transform.name != 'none':
        encoder = get_transform_plugin(cfg.transform.name).wrap(encoder, cfg.transform)
    return encoder


__all__ = ['EncoderPlugin', 'FrameEncoder', 'TransformPlugin', 'build_encoder',
           'comparable_settings', 'encoder_names', 'get_encoder_plugin', 'get_transform_plugin',
           'register_encoder', 'transform_names', 'unregister_encoder']
