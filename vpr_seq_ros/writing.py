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


class OutputFolder:
    """A folder of outputs written as a whole: into a temporary folder beside it, renamed into
    place when the ``with`` block ends without error. A failed or interrupted run leaves no
    partial folder at ``path`` (only a hidden ``.NAME.partial-*`` folder after a hard kill,
    which never blocks a rerun).

    Args:
        path: the output folder.
        overwrite: replace an existing ``path``; otherwise it is refused at construction,
            before any work.

    Raises:
        VprSeqError: ``path`` exists and ``overwrite`` is false, or cannot be written.
    """

    def __init__(self, path: Path, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise VprSeqError(f'{self.path} already exists; give --overwrite to replace it, or '
                              'choose another output folder')
        self._tmp: Path | None = None

    def __enter__(self) -> Path:
        parent = self.path.parent if str(self.path.parent) else Path('.')
        try:
            parent.mkdir(parents=True, exist_ok=True)
            self._tmp = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.partial-',
                                              dir=parent))
            os.chmod(self._tmp, 0o777 & ~_umask())
        except OSError as err:
            raise VprSeqError(f'cannot write {self.path}: {err}') from err
        return self._tmp

    def __exit__(self, exc_type: object, *exc: object) -> None:
        import shutil

        assert self._tmp is not None
        if exc_type is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            return
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f'.{self.path.name}.old-', dir=self._tmp.parent))
            os.replace(self.path, old / self.path.name)
        os.replace(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
