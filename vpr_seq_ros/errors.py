"""Exceptions of vpr_seq_ros.

Every error the package raises on bad input derives from :class:`VprSeqError`, so an entry point
can catch one type, print the message (which says what to do next) and exit non-zero.
"""

from __future__ import annotations


class VprSeqError(Exception):
    """Base class of all vpr_seq_ros errors."""


class ConfigError(VprSeqError, ValueError):
    """A configuration value, key or preset is invalid."""


class SourceError(VprSeqError):
    """A frame source cannot be read (missing path, unreadable image, bad descriptor file)."""


class MapError(VprSeqError):
    """A reference map is missing, corrupt, of another format version, or does not fit a query."""


class ModelError(VprSeqError):
    """A model or checkpoint is missing, malformed or does not fit the encoder."""


class MatchingError(VprSeqError):
    """A matching request cannot be served (e.g. a sequence longer than the run)."""


class DecodeError(VprSeqError):
    """An image message cannot be decoded (bad encoding, step or data size)."""
