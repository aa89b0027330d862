"""ROS parameters as the dotted projection of the configuration schema (no rclpy import).

Every field of :class:`vpr_seq_ros.config.Config` is a parameter named by its dotted path
(``matching.top_k``, ``node.loop_closure.min_streak``, ...). Structural ones (what the model,
map and buffers are built from) are read-only; thresholds and gating can change at run time
and are validated through the schema before they are accepted.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any

from vpr_seq_ros.config import Config, config_from_dict, flatten, merge, to_dict, unflatten
from vpr_seq_ros.pipeline import resolve_for_map
from vpr_seq_ros.refmap import ReferenceMap, load_map

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


def clean_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter values as schema values: '' is None for optional strings, arrays are lists."""
    cleaned = {}
    for name, value in values.items():
        if value == '' and typing.get_origin(_field_type(name)) is not None:
            value = None
        if isinstance(value, list) or type(value).__name__ == 'array':
            value = list(value)
        cleaned[name] = value
    return cleaned


def config_from_parameters(values: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a Config from parameter values ('' is None for optional strings).

    Raises:
        ConfigError: an invalid value (the message names the parameter).
    """
    data = merge(to_dict(base or Config()), unflatten(clean_parameters(values)))
    return config_from_dict(data)


def resolve_node_config(parameters: Mapping[str, Any], preset: str = '',
                        config_file: str = '') -> tuple[Config, ReferenceMap | None]:
    """The node's configuration at start-up, and its map (localization mode).

    One resolution, the same as ``vpr-seq evaluate`` and ``replay``
    (:func:`vpr_seq_ros.pipeline.resolve_for_map`): schema defaults < the map's own
    configuration (localization mode) < ``preset`` < ``config_file`` < ``parameters``.

    Args:
        parameters: schema parameters given to the node (overrides, launch arguments), dotted
            names; '' for an optional string means unset (the lower layers' value holds).
        preset: the node's ``preset`` parameter ('' for none).
        config_file: the node's ``config_file`` parameter ('' for none).

    Raises:
        ConfigError: an invalid setting. MapError: the map cannot be read.
    """
    overrides = clean_parameters(parameters)
    first = config_from_dict(merge(to_dict(Config()), unflatten(
        {k: v for k, v in overrides.items() if k in ('node.mode', 'node.map_path')
         and v is not None})))
    refmap = None
    if first.node.mode == 'localization' and first.node.map_path:
        refmap = load_map(first.node.map_path)
    # the mode and map chosen above hold, whatever the map's own configuration says (a map
    # saved in slam mode records node.mode: slam)
    overrides.update({'node.mode': first.node.mode, 'node.map_path': first.node.map_path})
    resolved = resolve_for_map(refmap, preset or None, config_file or None, overrides)
    return resolved.config, refmap


__all__ = ['DYNAMIC_PREFIXES', 'clean_parameters', 'config_from_parameters',
           'default_parameters', 'is_dynamic', 'parameter_description', 'parameter_kind',
           'resolve_node_config', 'dataclasses']
