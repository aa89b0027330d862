"""A message factory over the generated ROS 2 Python classes (what rclpy publishes).

``generated_factory()`` returns ``make(typename, **fields)`` as
:mod:`vpr_seq_ros.messages.outputs` expects. The classes are imported by name on first use
(``geometry_msgs/msg/Pose`` -> ``geometry_msgs.msg.Pose``), so importing this module needs no
ROS; calling the factory does.

Values are converted to the Python type of each field's IDL type: Jazzy's generated setters no
longer check types by default (``ROS_PYTHON_CHECK_FIELDS``), and the C conversion then reads an
``int`` in a ``double`` or ``octet`` field, or a ``numpy.float32``, as garbage.
"""

from __future__ import annotations

import array
import importlib
from typing import Any

import numpy as np

from vpr_seq_ros.messages.outputs import Factory

_FLOAT_TYPES = {'float': ('f', np.float32), 'double': ('d', np.float64)}
_INT_TYPES = {
    'int8': ('b', np.int8), 'uint8': ('B', np.uint8), 'int16': ('h', np.int16),
    'uint16': ('H', np.uint16), 'int32': ('i', np.int32), 'uint32': ('I', np.uint32),
    'int64': ('q', np.int64), 'uint64': ('Q', np.uint64),
}
_NUMERIC_TYPES = {**_FLOAT_TYPES, **_INT_TYPES}


def coerce_field(idl_type: str, value: Any) -> Any:
    """``value`` in the Python type rclpy's C conversion expects for an IDL field type.

    Args:
        idl_type: the field type as ``get_fields_and_field_types()`` spells it (``double``,
            ``octet``, ``sequence<double>``, ``double[36]``, ``string``, ``std_msgs/Header``).
        value: any Python or numpy value of a compatible kind.

    Returns:
        ``float``/``int``/``bool``/``bytes`` for scalars, ``array.array`` for numeric sequences
        (as rclpy stores them), a flat numpy array for numeric fixed-size arrays, a list for
        other sequences; strings and nested messages unchanged.
    """
    if idl_type in ('octet', 'byte'):
        return value if isinstance(value, bytes) else bytes([int(value)])
    if idl_type in _FLOAT_TYPES:
        return float(value)
    if idl_type in _INT_TYPES:
        return int(value)
    if idl_type == 'boolean':
        return bool(value)
    if idl_type.startswith('sequence<'):
        inner = idl_type[len('sequence<'):-1].split(',')[0].strip()
        if inner in _NUMERIC_TYPES:
            code, dtype = _NUMERIC_TYPES[inner]
            return array.array(code, np.ascontiguousarray(value, dtype=dtype).ravel().tobytes())
        return list(value)
    if idl_type.endswith(']') and '[' in idl_type:  # fixed-size array: a numpy array
        inner = idl_type[:idl_type.index('[')]
        if inner in _NUMERIC_TYPES:
            return np.array(value, dtype=_NUMERIC_TYPES[inner][1]).ravel()
        return list(value)
    return value


def generated_factory() -> Factory:
    """``make(typename, **fields)`` over the generated classes, fields coerced to their types.

    Raises (when called):
        ImportError: the message package is not installed (ROS 2 not sourced).
        TypeError: a field the message type does not have.
    """
    cache: dict[str, tuple[Any, dict[str, str]]] = {}

    def make(typename: str, **fields: Any) -> Any:
        entry = cache.get(typename)
        if entry is None:
            package, _, name = typename.split('/')
            cls = getattr(importlib.import_module(f'{package}.msg'), name)
            entry = cache[typename] = (cls, cls.get_fields_and_field_types())
        cls, types = entry
        msg = cls()
        for key, value in fields.items():
            if key not in types:
                raise TypeError(f'{typename} has no field {key!r}')
            setattr(msg, key, coerce_field(types[key], value))
        return msg

    return make


__all__ = ['coerce_field', 'generated_factory']
