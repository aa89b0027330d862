"""Exceptions of geometric verification (part of :class:`vpr_seq_ros.errors.VprSeqError`)."""

from __future__ import annotations

from vpr_seq_ros.errors import VprSeqError


class VerificationError(VprSeqError):
    """Verification input is unusable (image or depth of the wrong shape, a bad feature file)."""
