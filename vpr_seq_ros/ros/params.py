"""ROS parameters as the dotted projection of the configuration schema (no rclpy import).

Every field of :class:`vpr_seq_ros.config.Config` is a parameter named by its dotted path
(``matching.top_k``, ``node.loop_closure.min_streak``, ...). Structural ones (what the model,
map and buffers are built from) are read-only; thresholds and gating can change at run time
and are validated through the schema before they are accepted.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from vpr_seq_ros.config import Config, config_from_dict, flatten, merge, to_dict, unflatten

DYNAMIC_PREFIXES = (
    'matching.top_k',
    'node.max_distance',
    'node.publish_markers',
    'node.keyframe.',
    'node.loop_closure.',
)
"""Parameters that may change while the node runs; all others are read-only."""


def is_dynamic(name: str) -> bool:
    """Whether a parameter may change at run time."""
    return any(name == p or (p.endswith('.') and name.startswith(p)) for p in DYNAMIC_PREFIXES)


def _field_type(name: str) -> Any:
    cls: Any = Config
    tp: Any = None
    for part in name.split('.'):
        hints = typing.get_type_hints(cls)
        tp = hints[part]
        cls = tp
    return tp


def parameter_kind(name: str) -> str:
    """``bool``, ``int``, ``float``, ``str``, ``float[]`` or ``int[]`` of a dotted name."""
    tp = _field_type(name)
    origin = typing.get_origin(tp)
    if origin is tuple:
        return f'{typing.get_args(tp)[0].__name__}[]'
    if origin is not None:  # Optional[str]
        return 'str'
    return tp.__name__


def parameter_description(name: str) -> str:
    """The schema's docstring line for a parameter (its section's Attributes entry)."""
    section: Any = Config
    parts = name.split('.')
    for part in parts[:-1]:
        section = typing.get_type_hints(section)[part]
    doc = section.__doc__ or ''
    leaf = parts[-1]
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        if line.strip().startswith(f'{leaf}:'):
            text = [line.strip()[len(leaf) + 1:].strip()]
            for follow in lines[i + 1:]:
                if not follow.startswith(' ' * 12):
                    break
                text.append(follow.strip())
            return ' '.join(text)
    return name


def default_parameters(cfg: Config) -> dict[str, Any]:
    """Parameter name -> ROS-compatible default value (None becomes '')."""
    return {k: ('' if v is None else v) for k, v in flatten(cfg).items()}


def config_from_parameters(values: dict[str, Any], base: Config | None = None) -> Config:
    """Build a Config from parameter values ('' is None for optional strings).

    Raises:
        ConfigError: an invalid value (the message names the parameter).
    """
    cleaned = {}
    for name, value in values.items():
        if value == '' and typing.get_origin(_field_type(name)) is not None:
            value = None
        if isinstance(value, list) or type(value).__name__ == 'array':
            value = list(value)
        cleaned[name] = value
    data = merge(to_dict(base or Config()), unflatten(cleaned))
    return config_from_dict(data)


__all__ = ['DYNAMIC_PREFIXES', 'config_from_parameters', 'default_parameters', 'is_dynamic',
           'parameter_description', 'parameter_kind', 'dataclasses']
