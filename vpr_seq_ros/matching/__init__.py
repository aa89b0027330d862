"""Sequence-matching methods, picked by name from ONE registry.

Each method is a plugin (a :class:`~vpr_seq_ros.matching.methods.base.SequenceMethod` subclass
in its own module) that owns its window length, its map-side precomputation, its batch matching,
its streaming matcher and its parameters. This module only names them: it imports nothing heavy,
so :mod:`vpr_seq_ros.config` can validate ``matching.method`` against :func:`method_names`
cheaply; a method's module is imported when the method is first used.

Adding a method is one module under ``vpr_seq_ros/matching/methods/`` and one line in
:data:`_REGISTRY` (or :func:`register_method` at run time, e.g. from a test or another package).

The batch entry points (:func:`match_runs`, :class:`MatchOutput`, :func:`build_method`, ...)
live in :mod:`vpr_seq_ros.matching.methods` and are re-exported here on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vpr_seq_ros.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from vpr_seq_ros.matching.methods.base import SequenceMethod

_REGISTRY: dict[str, Any] = {
    'single': 'vpr_seq_ros.matching.methods.single:SingleFrame',
    'seqmatch': 'vpr_seq_ros.matching.methods.seqmatch:SeqMatch',
    'seqgem': 'vpr_seq_ros.matching.methods.seqgem:SeqGem',
}
"""Method name -> ``'module:Class'`` (imported on first use) or the class itself."""


def method_names() -> tuple[str, ...]:
    """Names of every registered method, in registration order."""
    return tuple(_REGISTRY)


def register_method(name: str, method: type[SequenceMethod] | str) -> None:
    """Register a method under ``name``.

    Args:
        name: the value of ``matching.method`` that selects it.
        method: a :class:`SequenceMethod` subclass, or ``'package.module:Class'`` to import it
            on first use.

    Raises:
        ConfigError: the name is taken.
    """
    if name in _REGISTRY:
        raise ConfigError(f'a matching method named {name!r} is already registered')
    _REGISTRY[name] = method


def unregister_method(name: str) -> None:
    """Remove a method registered with :func:`register_method` (a no-op when absent)."""
    _REGISTRY.pop(name, None)


def method_class(name: str) -> type[SequenceMethod]:
    """The class registered under ``name``.

    Raises:
        ConfigError: no method has that name.
    """
    try:
        target = _REGISTRY[name]
    except KeyError as err:
        raise ConfigError(f'unknown matching method {name!r} (matching.method); valid: '
                          f'{", ".join(_REGISTRY)}') from err
    if isinstance(target, str):
        module, _, attr = target.partition(':')
        target = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = target
    return target


_LAZY = ('MatchOutput', 'Precomputed', 'SequenceMethod', 'StreamingMatcher', 'build_method',
         'match_runs', 'seqmatch_settings')


def __getattr__(name: str) -> Any:
    """Re-export the batch entry points of :mod:`vpr_seq_ros.matching.methods` lazily."""
    if name in _LAZY:
        return getattr(importlib.import_module('vpr_seq_ros.matching.methods'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


__all__ = ['method_class', 'method_names', 'register_method', 'unregister_method', *_LAZY]
