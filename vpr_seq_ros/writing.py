"""Atomic file writing: write to a temporary file beside the target, then rename over it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from vpr_seq_ros.errors import VprSeqError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it, and rename it to ``path``.

    A failure at any point leaves no file (and no partial file) at ``path``.

    Raises:
        VprSeqError: the folder cannot be created or written.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path('.')
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=folder)
    except OSError as err:
        raise VprSeqError(f'cannot write {path}: {err}') from err
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, 'wb') as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
