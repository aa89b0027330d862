"""The one registry of frame encoders and of the transforms that may follow them.

Each entry maps a name to ``'module:Class'`` of an :class:`~vpr_seq_ros.encoders.base.
EncoderPlugin`; the module is imported only when the plugin is first asked for, so this module
(and :mod:`vpr_seq_ros.config`, which validates names against it) stays importable without torch.

Adding an encoder: write one module with an ``EncoderPlugin`` subclass and add one line to
``_ENCODERS`` (or call :func:`register_encoder` at run time, e.g. in a test).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from vpr_seq_ros.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.encoders.base import EncoderPlugin

_ENCODERS: dict[str, str | type] = {
    'patchnorm': 'vpr_seq_ros.encoders.patchnorm:PatchNormPlugin',
    'npy': 'vpr_seq_ros.encoders.identity:IdentityPlugin',
    'jist-r18': 'vpr_seq_ros.encoders.jist:JistPlugin',
}
"""Frame encoders: name -> ``'module:Class'`` (or the class itself, for run-time additions)."""

_TRANSFORMS: dict[str, str | type] = {
    'seqmatchnet': 'vpr_seq_ros.encoders.transform:SeqMatchNetPlugin',
}
"""Stages after any frame encoder, ``(B, D_in) -> (B, D_out)``; ``none`` means no stage."""

_LOADED: dict[str | type, EncoderPlugin] = {}


def encoder_names() -> tuple[str, ...]:
    """Names of the registered frame encoders, in registration order."""
    return tuple(_ENCODERS)


def transform_names() -> tuple[str, ...]:
    """Names of the registered transforms (``none`` is not one: it means no transform)."""
    return tuple(_TRANSFORMS)


def _load(target: str | type) -> EncoderPlugin:
    if target not in _LOADED:
        if isinstance(target, str):
            module_name, _, class_name = target.partition(':')
            cls = getattr(importlib.import_module(module_name), class_name)
        else:
            cls = target
        _LOADED[target] = cls()
    return _LOADED[target]


def get_encoder_plugin(name: str) -> EncoderPlugin:
    """The plugin of a registered encoder.

    Raises:
        ConfigError: an unknown name (the valid ones are listed).
    """
    if name not in _ENCODERS:
        raise ConfigError(f'unknown encoder {name!r}; valid: {", ".join(_ENCODERS)}')
    return _load(_ENCODERS[name])


def get_transform_plugin(name: str) -> EncoderPlugin:
    """The plugin of a registered transform.

    Raises:
        ConfigError: an unknown name (the valid ones are listed).
    """
    if name not in _TRANSFORMS:
        raise ConfigError(f'unknown transform {name!r}; valid: none, {", ".join(_TRANSFORMS)}')
    return _load(_TRANSFORMS[name])


def all_plugins() -> list[EncoderPlugin]:
    """Every registered plugin, encoders first, then transforms (imports them all)."""
    return [_load(t) for t in (*_ENCODERS.values(), *_TRANSFORMS.values())]


def register_encoder(name: str, target: str | type) -> None:
    """Register an encoder plugin at run time (``'module:Class'`` or the class).

    Raises:
        ConfigError: the name is taken.
    """
    if name in _ENCODERS or name in _TRANSFORMS or name == 'none':
        raise ConfigError(f'encoder name {name!r} is already registered')
    _ENCODERS[name] = target


def unregister_encoder(name: str) -> None:
    """Remove an encoder registered with :func:`register_encoder` (tests)."""
    target = _ENCODERS.pop(name, None)
    _LOADED.pop(target, None)  # type: ignore[arg-type]


__all__ = ['all_plugins', 'encoder_names', 'get_encoder_plugin', 'get_transform_plugin',
           'register_encoder', 'transform_names', 'unregister_encoder']
