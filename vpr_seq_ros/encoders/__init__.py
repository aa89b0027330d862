"""Frame encoders, picked by name from a closed registry."""

from __future__ import annotations

from typing import Callable

from vpr_seq_ros.config import EncoderConfig
from vpr_seq_ros.encoders.base import FrameEncoder
from vpr_seq_ros.errors import ConfigError


def _patchnorm(cfg: EncoderConfig) -> FrameEncoder:
    from vpr_seq_ros.encoders.patchnorm import PatchNormEncoder

    return PatchNormEncoder(cfg.patchnorm)


def _npy(cfg: EncoderConfig) -> FrameEncoder:
    from vpr_seq_ros.encoders.identity import IdentityEncoder

    return IdentityEncoder()


def _jist(cfg: EncoderConfig) -> FrameEncoder:
    from vpr_seq_ros.encoders.jist import build_jist_encoder

    return build_jist_encoder(cfg)


ENCODER_BUILDERS: dict[str, Callable[[EncoderConfig], FrameEncoder]] = {
    'patchnorm': _patchnorm,
    'npy': _npy,
    'jist-r18': _jist,
}


def build_encoder(cfg: EncoderConfig) -> FrameEncoder:
    """Build the frame encoder named by ``cfg.name``, with its transform if one is configured.

    Raises:
        ConfigError: unknown encoder name.
        ModelError: weights missing or not fitting.
    """
    try:
        builder = ENCODER_BUILDERS[cfg.name]
    except KeyError as err:
        raise ConfigError(
            f'unknown encoder {cfg.name!r}; valid: {", ".join(ENCODER_BUILDERS)}') from err
    encoder = builder(cfg)
    if cfg.transform.name != 'none':
        from vpr_seq_ros.encoders.transform import build_transformed_encoder

        encoder = build_transformed_encoder(encoder, cfg.transform)
    return encoder


__all__ = ['FrameEncoder', 'build_encoder', 'ENCODER_BUILDERS']
