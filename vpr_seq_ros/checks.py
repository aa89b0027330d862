"""Checks of configuration values, one wording for every section's errors.

Kept free of other project imports so that every configuration module (the schema in
:mod:`vpr_seq_ros.config` and the sections it is built from) can use them.
"""

from __future__ import annotations

from typing import Any

from vpr_seq_ros.errors import ConfigError


def check_choice(section: str, name: str, value: Any, choices: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``.

    Raises:
        ConfigError: ``<section>.<name> = <value> is not one of <choices>``.
    """
    if value not in choices:
        raise ConfigError(f'{section}.{name} = {value!r} is not one of {", ".join(choices)}')


def check_bound(section: str, name: str, value: Any, ok: bool, bound: str) -> None:
    """Raise unless ``ok`` (``value`` within ``bound``, e.g. ``'>= 0'``).

    Raises:
        ConfigError: ``<section>.<name> = <value> must be <bound>``.
    """
    if not ok:
        raise ConfigError(f'{section}.{name} = {value!r} must be {bound}')


def check_positive(section: str, name: str, value: float, allow_zero: bool = False) -> None:
    """Raise unless ``value`` > 0 (>= 0 with ``allow_zero``)."""
    check_bound(section, name, value, not (value < 0 or (value == 0 and not allow_zero)),
                '>= 0' if allow_zero else '> 0')


__all__ = ['check_bound', 'check_choice', 'check_positive']
