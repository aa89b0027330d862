"""Atomic file writing: write to a temporary file beside the target, then rename over it.

What a crash or a full disk leaves behind:

* killed at any moment (``kill -9``, power cut after the rename's journal commit): ``path`` is
  the previous file or the complete new one, never a mix (``os.replace`` is atomic);
* an error while writing (no space left, quota, I/O error, unwritable folder): the previous
  file is untouched, the temporary file is removed, and the error says so;
* the temporary file of a killed writer (``.<name>.<pid>.<random>.tmp``) stays until the next
  write to the same path, which removes those whose process no longer exists.

The folder is synced after the rename, so the new name survives a power cut too.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from vpr_seq_ros.errors import VprSeqError

_HINTS = {
    errno.ENOSPC: 'free some disk space or write elsewhere',
    errno.EDQUOT: 'free some space within the disk quota or write elsewhere',
    errno.EACCES: 'choose a folder you may write to',
    errno.EPERM: 'choose a folder you may write to',
    errno.EROFS: 'the file system is read-only: choose another folder',
    errno.ENOTDIR: 'a parent of the path is a file: choose another path',
}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of writers to ``path`` that were killed; returns them."""
    removed = []
    folder = path.parent if str(path.parent) else Path('.')
    for tmp in folder.glob(f'.{path.name}.*.tmp'):
        pid = tmp.name[len(path.name) + 2:].split('.', 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def _error(path: Path, err: OSError, exists: bool) -> VprSeqError:
    reason = err.strerror or str(err)
    hint = _HINTS.get(err.errno or 0, 'check the folder and the disk')
    kept = f'the previous {path.name} is unchanged' if exists else f'no {path.name} was written'
    return VprSeqError(f'cannot write {path}: {reason}; {kept}; {hint}')


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(handle)`` on a temporary file, fsync it, and rename it to ``path``.

    A failure at any point leaves the previous file at ``path`` (or none), and no partial
    file.

    Raises:
        VprSeqError: the folder cannot be created or written, or the disk is full; the message
            says the previous file is unchanged and what to do.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path('.')
    exists = path.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.{os.getpid()}.', suffix='.tmp',
                                   dir=folder)
    except OSError as err:
        raise _error(path, err, exists) from err
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, 'wb') as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise _error(path, err, exists) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(folder)
    return path


def _sync_folder(folder: Path) -> None:
    """fsync a folder so a rename in it is durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)



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


__all__ = ['OutputFolder', 'atomic_write', 'remove_stale_temporaries']
